"""The deployment daemon against the MuJoCo stand-in, with real policy servers.

End to end: `vla serve` with a tiny fine-tuned checkpoint in one process, `vla deploy` in another;
SIGTERM mid-episode; the recorded episode loads as a LeRobot dataset through the repo's loader.
Fault injection (the loop in this process, servers real): the server is killed and restarted, a
camera freezes, the policy returns NaN or out-of-workspace targets, the network adds latency
spikes. Each time the arm holds or stays inside the limits, and the loop recovers by itself.
"""
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from real_robot.cameras import SimCamera
from real_robot.client import PolicyClient
from real_robot.control_loop import ControlLoop, LoopConfig
from real_robot.policy_link import PolicyLink
from real_robot.safety import SafetyLimits
from real_robot.server import PolicyServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
RATE, SIZE = 15.0, 32


@pytest.fixture(scope="module")
def tiny_ckpt(synthetic_dataset, tmp_path_factory):
    """A tiny policy fine-tuned for a few steps on the synthetic LIBERO-layout dataset."""
    from vla.experiment import resolve_config
    from vla.train.trainer import train

    out = tmp_path_factory.mktemp("run")
    cfg = resolve_config("openvla_oft", "libero", None, [
        f"data.dataset={synthetic_dataset}", f"output_dir={out}", "backbone.image_size=32", "train.steps=3",
        "train.batch_size=4", "train.warmup_steps=1", "train.torch_threads=1"])
    return train(cfg, str(synthetic_dataset))


def _serve(ckpt, port=0):
    proc = subprocess.Popen([sys.executable, "-m", "vla.cli", "serve", "--ckpt", str(ckpt), "--port", str(port)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "vla serve did not start"
        line = proc.stdout.readline()
        assert line, "vla serve exited"
        if line.startswith("[serve]"):
            return proc, int(line.split(":")[-1].split()[0])


def _stop(proc):
    proc.kill()
    proc.wait()


def test_deploy_records_an_episode_that_loads_and_stops_cleanly_on_sigterm(tiny_ckpt, tmp_path):
    from vla.data.dataset import open_dataset, validate_dataset

    server, port = _serve(tiny_ckpt)
    log_path, record = tmp_path / "deploy.jsonl", tmp_path / "rollouts"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vla.cli", "deploy", "--robot", "sim", "--port", str(port), "--task", "pick up the bowl",
         "--steps", "2000", "--image-size", str(SIZE), "--record", str(record), "--log", str(log_path),
         # this test is about recording and shutdown; the watchdog's one-period default is tested below
         # and would hold the arm throughout on a loaded 2-core machine
         "--policy-timeout", "1.0", "--frame-timeout", "1.0"],
        # an empty numba cache: robosuite's controllers compile as on a fresh install, which must
        # happen while connecting, never inside the control loop
        cwd=ROOT, env={**ENV, "NUMBA_CACHE_DIR": str(tmp_path / "numba_cache")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (log_path.exists() and '"episode_start"' in log_path.read_text()):
            assert daemon.poll() is None and time.time() < deadline, daemon.stderr.read()[-3000:] if daemon.poll() else "slow"
            time.sleep(0.1)
        # ~120 ticks at 15 Hz; the checks below need 30 ticks run and 25 commands sent, so a loop that skips
        # ticks on a loaded machine or a slow first answer still leaves room (4 s once failed in CI)
        time.sleep(8.0)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        _stop(server)
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.index("signal") < kinds.index("episode_end") < kinds.index("episode_saved") < kinds.index("stopped")
    end = next(e for e in events if e["event"] == "episode_end")
    stalls = [e for e in events if e["event"] == "overrun" and e["late_ms"] > 1000]
    assert end["stopped"] and end["sent"] >= 25 and end["ticks"] >= 30 and not stalls, \
        json.dumps([e for e in events if e["event"] != "safety"])[-3000:]
    saved = next(e for e in events if e["event"] == "episode_saved")
    ds = open_dataset(str(record), chunk_size=8)
    validate_dataset(ds, ["agentview", "wrist"], 7, True)
    assert ds.meta.total_episodes == 1 and len(ds) == saved["frames"] == end["ticks"]
    item = ds[len(ds) // 2]
    assert item["observation.images.image"].shape == (3, SIZE, SIZE) and item["action"].shape == (8, 7)
    assert item["task"] == "pick up the bowl" and bool(np.isfinite(item["observation.state"].numpy()).all())


# -- fault injection: the loop in this process --------------------------------------------------

class Events(list):
    def __call__(self, event, **fields):
        self.append((event, fields))


@pytest.fixture(scope="module")
def robot():
    from real_robot.sim_panda import SimPanda

    r = SimPanda(control_hz=RATE)
    r.connect()
    yield r
    r.disconnect()


class FakePolicy:
    """A policy server (in a thread) whose answers the test switches: normal, NaN, out of the box."""

    def __init__(self):
        self.mode = "normal"
        ready = threading.Event()
        ports = []
        server = PolicyServer(self._infer, port=0, metadata={"chunk_size": 8, "cameras": ["agentview", "wrist"]})
        threading.Thread(target=lambda: asyncio.run(server.serve(lambda p: (ports.append(p), ready.set()))),
                         daemon=True).start()
        assert ready.wait(30)
        self.port = ports[0]

    def _infer(self, obs):
        pos = np.asarray(obs["observation/state"][:3], dtype=np.float64)
        if self.mode == "nan":
            return {"actions": np.full((8, 7), np.nan, np.float32)}
        if self.mode == "out":  # straight down into the table, far beyond any limit
            return {"actions": np.tile(np.array([0, 0, -40.0, 0, 0, 0, 1], np.float32), (8, 1))}
        step = np.clip((np.array([0.5, 0.05, 0.2]) - pos) / 0.05, -0.3, 0.3)  # a slow move to a point in the box
        return {"actions": np.tile(np.concatenate([step, [0, 0, 0, -1]]).astype(np.float32), (8, 1))}


@pytest.fixture(scope="module")
def fake_policy():
    return FakePolicy()


class DelayProxy:
    """A TCP relay that can add latency to every chunk of bytes (a congested network)."""

    def __init__(self, upstream_port: int):
        self.delay_s, self.upstream = 0.0, upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.sock.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(1 << 16):
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()


class FreezableCamera:
    def __init__(self, inner):
        self.inner, self.name, self.frozen_frame, self.freeze = inner, inner.name, None, False

    def latest(self):
        if not self.freeze:
            self.frozen_frame = None
            return self.inner.latest()
        if self.frozen_frame is None:
            self.frozen_frame = self.inner.latest()
        return self.frozen_frame  # the same frame again: its timestamp ages


def _run(robot, port, on_tick, steps, cameras=None, stop=None):
    robot.reset()  # every scenario from the home pose (an earlier one may have left the wrist at a limit)
    link = PolicyLink(lambda: PolicyClient(port=port, timeout_s=2.0))
    link.start(wait_s=30)
    cams = cameras or {n: SimCamera(robot, n, SIZE, SIZE) for n in ("agentview", "wrist")}
    log = Events()
    loop = ControlLoop(robot, cams, link, LoopConfig(rate_hz=RATE, replan_every=4, max_steps=steps, task="t",
                                                     image_size=SIZE), log, on_tick=on_tick)
    loop.warm_up(30)
    try:
        stats = loop.run_episode(stop or threading.Event())
    finally:
        link.stop()
    return stats, log


def _trace(kinds_by_tick, positions, ticks):
    return [kinds_by_tick[t] for t in ticks if t in kinds_by_tick], [positions[t] for t in ticks if t in positions]


def _executed_from(ticks, start: int) -> list[int]:
    """The ticks the loop ran from `start` on: a loaded machine makes it skip ticks to stay on the wall clock
    (`overrun`), so latencies are counted in executed ticks, not tick numbers."""
    return sorted(t for t in ticks if t >= start)


def _assert_held_still(positions, tail=5):
    """From the first hold tick: the arm coasts to a stop (robosuite's OSC gains are soft: ~2 cm from
    0.3 m/s) and is at rest by the end of the window."""
    coast = np.ptp(np.stack(positions), axis=0).max()
    assert coast < 0.03, f"the arm travelled {coast * 1000:.1f} mm after the hold began"
    spread = np.ptp(np.stack(positions[-tail:]), axis=0).max()
    assert spread < 0.002, f"the arm still moves {spread * 1000:.1f} mm per {tail} ticks at the end of the hold"


def test_nan_and_out_of_workspace_answers_hold_or_stay_in_the_box_then_recover(robot, fake_policy):
    limits = SafetyLimits()
    held, pos, targets, ran = {}, {}, [], {}
    stop = threading.Event()

    def on_tick(tick, obs, command):
        k = ran[tick] = len(ran)  # ticks run, not tick numbers (see the frozen-camera test)
        fake_policy.mode = "nan" if 15 <= k < 45 else "out" if 45 <= k < 85 else "normal"
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()
        if not command.hold:  # a hold's target is where the arm is (it may have coasted a few mm past the box)
            targets.append(command.target_position)
        if k >= 104:
            stop.set()

    stats, log = _run(robot, fake_policy.port, on_tick, 1000, stop=stop)
    # NaN answers start with the first request made from tick 15 (one replan period, 4 ticks) and arrive
    # while the finite chunk in hand plays on; on a loaded machine the answer itself can take another
    # period (CI saw the first hold at 21), and a late tick can hold for a stale action before that, so
    # the window starts at the first NaN action. A NaN target is never sent: every moving target is checked below.
    first = ran[next(f["tick"] for e, f in log if e == "safety" and "non-finite" in " ".join(f["events"]))]
    assert first <= 15 + 2 * 4 + 1, f"NaN answers held the arm only from tick {first}"
    nan_holds, nan_pos = _trace(held, pos, range(first, 46))
    assert all(nan_holds), "NaN chunks must hold"
    _assert_held_still(nan_pos)
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    assert targets and all(np.all(t >= lo - 1e-9) and np.all(t <= hi + 1e-9) for t in targets)
    out_pos = np.stack([pos[t] for t in range(49, 86) if t in pos])
    assert out_pos[:, 2].min() > lo[2] - 0.005, "pushed into the table, the arm stops at the box floor"
    assert out_pos[-1, 2] < out_pos[0, 2] - 0.02  # it did move down (clipped), it did not just stop
    assert any("workspace" in " ".join(f["events"]) for e, f in log if e == "safety")
    after, _ = _trace(held, pos, range(90, 105))
    assert after and not any(after), "finite, in-box answers again: the arm moves again"


def test_latency_spikes_hold_the_arm_until_answers_are_on_time_again(robot, fake_policy):
    fake_policy.mode = "normal"
    proxy = DelayProxy(fake_policy.port)
    held, pos, ran = {}, {}, {}
    stop = threading.Event()

    def on_tick(tick, obs, command):
        k = ran[tick] = len(ran)  # ticks run, not tick numbers (see the frozen-camera test)
        proxy.delay_s = 0.3 if 15 <= k < 45 else 0.0
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()
        if k >= 74:
            stop.set()

    stats, log = _run(robot, proxy.port, on_tick, 1000, stop=stop)
    faults = [f for e, f in log if e == "fault"]
    assert faults and faults[0]["fault"] == "policy" and "no answer" in faults[0]["why"]
    first = ran[faults[0]["tick"]]
    spike_holds, spike_pos = _trace(held, pos, range(first, 45))
    assert all(spike_holds)
    _assert_held_still(spike_pos)
    assert any(e == "recovered" and f["fault"] == "policy" for e, f in log)
    after, _ = _trace(held, pos, range(55, 75))
    assert after and not any(after)


def test_a_frozen_camera_holds_the_arm_until_frames_flow_again(robot, fake_policy):
    fake_policy.mode = "normal"
    cams = {n: FreezableCamera(SimCamera(robot, n, SIZE, SIZE)) for n in ("agentview", "wrist")}
    held, pos, ran = {}, {}, {}
    stop = threading.Event()

    def on_tick(tick, obs, command):
        # the scenario counts ticks run, not tick numbers: a loaded machine skips numbers (overrun) and the
        # simulated arm moves only on ticks that ran, so a window in tick numbers could end before it settles
        k = ran[tick] = len(ran)
        cams["wrist"].freeze = 15 <= k < 45
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()
        if k >= 64:
            stop.set()

    stats, log = _run(robot, fake_policy.port, on_tick, 1000, cameras=cams, stop=stop)
    assert [f["fault"] for e, f in log if e == "fault"] == ["camera:wrist"]
    first = ran[next(f["tick"] for e, f in log if e == "fault")]
    # the first frozen frame is the one captured at tick 16 (the freeze starts after tick 15's capture); on an
    # on-time loop it is more than one period old at tick 18, at tick 19 when tick 16 itself ran most of a
    # period late (CI once saw 19), so allow one more tick of jitter on top
    assert first <= 20, f"the frozen camera faulted only at tick {first}"
    stall_holds, stall_pos = _trace(held, pos, range(first, 46))
    assert all(stall_holds)
    _assert_held_still(stall_pos)
    assert any(e == "recovered" for e, _ in log)
    after, _ = _trace(held, pos, range(52, 65))
    assert after and not any(after)


def test_killed_server_holds_the_arm_and_the_loop_resumes_when_it_is_back(robot, tiny_ckpt):
    server, port = _serve(tiny_ckpt)
    held, pos, state = {}, {}, {"killed": None, "held_from": None, "back": None, "restarted": None}
    stop = threading.Event()
    restarter = threading.Thread(target=lambda: state.update(restarted=_serve(tiny_ckpt, port)[0]), daemon=True)

    def on_tick(tick, obs, command):
        held[tick], pos[tick] = command.hold, obs.state.ee_position.copy()
        if tick >= 10 and state["killed"] is None:  # tick 10 itself may be skipped on a loaded machine
            _stop(server)
            state["killed"] = tick
            restarter.start()
        if state["killed"] is not None and command.hold and state["held_from"] is None:
            state["held_from"] = tick  # the chunk in hand may play on until the first request fails
        if state["held_from"] is not None and not command.hold and state["back"] is None:
            state["back"] = tick
        if state["back"] is not None and tick >= state["back"] + 15:
            stop.set()

    try:
        # up to 120 s at 15 Hz, ended 15 ticks after the arm moves again: a fresh `vla serve` (torch import,
        # checkpoint load) took over 40 s to come back in CI while RL ran beside it
        stats, log = _run(robot, port, on_tick, 1800, stop=stop)
    finally:
        if restarter.is_alive():
            restarter.join(timeout=150)  # never leave a late-starting server running after the test
        if state["restarted"] is not None:
            _stop(state["restarted"])
    assert state["back"] is not None, "the loop never resumed after the server came back"
    assert any(e == "policy_error" for e, _ in log) and any(e == "fault" and f["fault"] == "policy" for e, f in log)
    assert state["held_from"] in _executed_from(held, state["killed"])[:5]
    down_holds, down_pos = _trace(held, pos, range(state["held_from"], state["back"]))
    assert len(down_holds) > 10 and all(down_holds)
    _assert_held_still(down_pos)
    after, _ = _trace(held, pos, range(state["back"], state["back"] + 15))
    assert sum(after) <= 2  # moving again (a late reply may still cost a tick)
