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
         # this test is about recording and shutdown; the watchdog's one-period default is unit-tested
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
        # ~160 ticks at 20 Hz; the checks below need 30 ticks run and 25 commands sent, so a loop that skips
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
    # the handler only sets the stop flag (logging from it could deadlock on the log's lock): logged after the episode
    assert kinds.index("episode_end") < kinds.index("signal") < kinds.index("episode_saved") < kinds.index("stopped")
    end = next(e for e in events if e["event"] == "episode_end")
    # a numba compile inside the loop stalled it 13 s on a fresh install; a loaded machine alone stalled it
    # up to 1.3 s (CI's RL tests beside this one), so only a stall beyond 3 s is the compile
    stalls = [e for e in events if e["event"] == "overrun" and e["late_ms"] > 3000]
    assert end["stopped"] and end["sent"] >= 25 and end["ticks"] >= 30 and not stalls, \
        json.dumps([e for e in events if e["event"] != "safety"])[-3000:]
    # no --rate: the daemon acts at the rate the served policy's data was recorded at (20 fps) and records at it
    start = next(e for e in events if e["event"] == "start")
    assert start["rate_hz"] == 20 and "rate" not in kinds
    saved = next(e for e in events if e["event"] == "episode_saved")
    ds = open_dataset(str(record), chunk_size=8)
    assert ds.meta.fps == 20
    validate_dataset(ds, ["agentview", "wrist"], 7, True)
    # every tick from the first command on (earlier ticks have no gripper target to record)
    assert ds.meta.total_episodes == 1 and len(ds) == saved["frames"] == end["recorded"] >= end["sent"]
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


def _run(robot, port, on_tick, ticks, cameras=None, policy_timeout_s=1.0):
    """One episode of the loop, ended once `ticks` ticks have run or `on_tick` returns True.

    Scenarios count ticks run, never tick numbers: a loaded machine makes the loop skip numbers to stay
    on the wall clock (`overrun`) and the simulated arm moves only on ticks that ran, so a window in tick
    numbers can end before the arm settles (CI saw it). `on_tick(k, obs, command)` gets k, the ticks run
    before this one; the returned `ran` maps the log's tick numbers to the same count.

    The policy timeout is each scenario's own, not the one-period default (66 ms at 15 Hz, which
    tests/test_deploy_units.py checks against a fake link): over real sockets on a loaded 2-core machine
    round trips of 70-130 ms were measured with CI running beside the tests, each a genuine
    one-period fault that held the arm inside the windows where these scenarios expect it to move.
    The camera timeout stays the one-period default (the frozen-camera scenario tests it).
    """
    robot.reset()  # every scenario from the home pose (an earlier one may have left the wrist at a limit)
    link = PolicyLink(lambda: PolicyClient(port=port, timeout_s=2.0))
    link.start(wait_s=30)
    cams = cameras or {n: SimCamera(robot, n, SIZE, SIZE) for n in ("agentview", "wrist")}
    log, ran, stop = Events(), {}, threading.Event()

    def counted(tick, obs, command):
        k = ran[tick] = len(ran)
        if on_tick(k, obs, command) or k + 1 >= ticks:
            stop.set()

    # max_steps bounds tick numbers, which run ahead of ticks run under load; the stop event ends the episode
    cfg = LoopConfig(rate_hz=RATE, replan_every=4, max_steps=4 * ticks, task="t", image_size=SIZE,
                     policy_timeout_s=policy_timeout_s)
    loop = ControlLoop(robot, cams, link, cfg, log, on_tick=counted)
    loop.warm_up(30)
    try:
        stats = loop.run_episode(stop)
    finally:
        link.stop()
    return stats, log, ran


def _holds(held, ticks):
    return [held[k] for k in ticks]  # every window lies within the ticks run (k counts them, no gaps)


def _assert_moving_again(holds):
    """After a fault clears the arm moves again, on most ticks. A loop that failed to recover holds
    throughout; one that recovered still rightly holds on a tick whose action or observation a stall of
    the whole machine made too old (0.2 s, 0.5 s; stalls of 0.5-1.3 s and 7 holds in 15 ticks were
    seen with CI's RL tests running beside these)."""
    assert holds, "no ticks ran after the fault"
    assert 2 * sum(holds) <= len(holds), f"the arm held on {sum(holds)} of {len(holds)} ticks after the fault cleared"


def _assert_held(held, pos, ticks, tail=5):
    """The arm held on every tick of the window, and from its first tick coasted to a stop (robosuite's
    OSC gains are soft: ~2 cm from 0.3 m/s), at rest by the end of the window."""
    holds = _holds(held, ticks)
    assert len(holds) > tail and all(holds), f"the arm held on {sum(holds)} of {len(holds)} ticks of {ticks}"
    positions = [pos[k] for k in ticks]
    coast = np.ptp(np.stack(positions), axis=0).max()
    assert coast < 0.03, f"the arm travelled {coast * 1000:.1f} mm after the hold began"
    spread = np.ptp(np.stack(positions[-tail:]), axis=0).max()
    assert spread < 0.002, f"the arm still moves {spread * 1000:.1f} mm per {tail} ticks at the end of the hold"


def test_nan_and_out_of_workspace_answers_hold_or_stay_in_the_box_then_recover(robot, fake_policy):
    limits = SafetyLimits()
    held, pos, targets = {}, {}, []

    def on_tick(k, obs, command):
        fake_policy.mode = "nan" if 15 <= k < 45 else "out" if 45 <= k < 85 else "normal"
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()
        if not command.hold:  # a hold's target is where the arm is (it may have coasted a few mm past the box)
            targets.append(command.target_position)

    stats, log, ran = _run(robot, fake_policy.port, on_tick, 105)
    # NaN answers start with the first request made from tick 15 (one replan period, 4 ticks) and arrive
    # while the finite chunk in hand plays on; on a loaded machine the answer itself can take another
    # period (CI saw the first hold at 21), and a late tick can hold for a stale action before that, so
    # the window starts at the first NaN action. A NaN target is never sent: every moving target is checked below.
    first = ran[next(f["tick"] for e, f in log if e == "safety" and "non-finite" in " ".join(f["events"]))]
    assert first <= 15 + 2 * 4 + 1, f"NaN answers held the arm only from tick {first}"
    _assert_held(held, pos, range(first, 46))  # NaN chunks hold
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    assert targets and all(np.all(t >= lo - 1e-9) and np.all(t <= hi + 1e-9) for t in targets)
    out_pos = np.stack([pos[t] for t in range(49, 86)])
    assert out_pos[:, 2].min() > lo[2] - 0.005, "pushed into the table, the arm stops at the box floor"
    assert out_pos[-1, 2] < out_pos[0, 2] - 0.02  # it did move down (clipped), it did not just stop
    assert any("workspace" in " ".join(f["events"]) for e, f in log if e == "safety")
    _assert_moving_again(_holds(held, range(90, 105)))  # finite, in-box answers again


def test_latency_spikes_hold_the_arm_until_answers_are_on_time_again(robot, fake_policy):
    fake_policy.mode = "normal"
    proxy = DelayProxy(fake_policy.port)
    held, pos = {}, {}

    def on_tick(k, obs, command):
        proxy.delay_s = 0.3 if 15 <= k < 45 else 0.0
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()

    # 0.25 s: above a loaded machine's round trips, below the spike's (>= 0.6 s: 0.3 s each way)
    stats, log, ran = _run(robot, proxy.port, on_tick, 75, policy_timeout_s=0.25)
    # the spike's first fault: the request sent at tick 16 at the latest, unanswered 0.25 s (~4 ticks) later
    # (a stall of the machine before tick 15 can raise a fault of its own, outside this window)
    spike = [f for e, f in log if e == "fault" and f["fault"] == "policy" and ran[f["tick"]] >= 15]
    assert spike and "no answer" in spike[0]["why"]
    first = ran[spike[0]["tick"]]
    assert first <= 16 + 4 + 4, f"the spike held the arm only from tick {first}"
    _assert_held(held, pos, range(first, 45))
    assert any(e == "recovered" and f["fault"] == "policy" for e, f in log)
    _assert_moving_again(_holds(held, range(55, 75)))


def test_a_frozen_camera_holds_the_arm_until_frames_flow_again(robot, fake_policy):
    fake_policy.mode = "normal"
    cams = {n: FreezableCamera(SimCamera(robot, n, SIZE, SIZE)) for n in ("agentview", "wrist")}
    held, pos = {}, {}

    def on_tick(k, obs, command):
        cams["wrist"].freeze = 15 <= k < 45
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()

    stats, log, ran = _run(robot, fake_policy.port, on_tick, 65, cameras=cams)
    camera_faults = [f for e, f in log if e == "fault" and f["fault"].startswith("camera:")]
    assert [f["fault"] for f in camera_faults] == ["camera:wrist"]  # raised once, not flapping
    first = ran[camera_faults[0]["tick"]]
    # the first frozen frame is the one captured at tick 16 (the freeze starts after tick 15's capture); on an
    # on-time loop it is more than one period old at tick 18, at tick 19 when tick 16 itself ran most of a
    # period late (CI once saw 19), so allow one more tick of jitter on top
    assert first <= 20, f"the frozen camera faulted only at tick {first}"
    _assert_held(held, pos, range(first, 46))
    assert any(e == "recovered" and f["fault"] == "camera:wrist" for e, f in log)
    _assert_moving_again(_holds(held, range(52, 65)))


def test_killed_server_holds_the_arm_and_the_loop_resumes_when_it_is_back(robot, tiny_ckpt):
    server, port = _serve(tiny_ckpt)
    held, pos, state = {}, {}, {"killed": None, "held_from": None, "back": None, "restarted": None}
    restarter = threading.Thread(target=lambda: state.update(restarted=_serve(tiny_ckpt, port)[0]), daemon=True)

    def on_tick(k, obs, command):
        held[k], pos[k] = command.hold, obs.state.ee_position.copy()
        if k == 10:
            _stop(server)
            state["killed"] = k
            restarter.start()
        if state["killed"] is not None and command.hold and state["held_from"] is None:
            state["held_from"] = k  # the chunk in hand may play on until the first request fails
        if state["held_from"] is not None and not command.hold and state["back"] is None:
            state["back"] = k
        return state["back"] is not None and k >= state["back"] + 15

    try:
        # up to 1,800 ticks (120 s at 15 Hz), ended 15 ticks after the arm moves again: a fresh `vla serve`
        # (torch import, checkpoint load) took over 40 s to come back in CI while RL ran beside it
        stats, log, ran = _run(robot, port, on_tick, 1800)
    finally:
        if restarter.is_alive():
            restarter.join(timeout=150)  # never leave a late-starting server running after the test
        if state["restarted"] is not None:
            _stop(state["restarted"])
    assert state["back"] is not None, "the loop never resumed after the server came back"
    assert any(e == "policy_error" for e, _ in log) and any(e == "fault" and f["fault"] == "policy" for e, f in log)
    assert state["held_from"] - state["killed"] < 5  # within one replan period and a tick of the kill
    assert state["back"] - state["held_from"] > 10
    _assert_held(held, pos, range(state["held_from"], state["back"]))
    _assert_moving_again(_holds(held, range(state["back"], state["back"] + 15)))


def test_the_stand_in_starts_each_new_episode_home_with_a_new_cube():
    """`vla deploy --episodes N` on the stand-in: episode 2 does not start where episode 1 ended."""
    from real_robot.base import Command
    from real_robot.sim_panda import SimPanda

    sim = SimPanda(control_hz=RATE, seed=3)
    sim.connect()
    try:
        home, cube = sim.observe().state.ee_position.copy(), sim.object_position().copy()
        for _ in range(40):  # 40 steps of 0.02 m up (the soft OSC lags behind its targets)
            pos = sim.observe().state.ee_position
            sim.send(Command(pos + np.array([0.0, 0.0, 0.02]), np.zeros(3), -1.0))
        assert np.linalg.norm(sim.observe().state.ee_position - home) > 0.2
        sim.new_episode(1)
        assert np.linalg.norm(sim.observe().state.ee_position - home) < 0.06  # home, up to its joint init noise
        assert np.linalg.norm(sim.object_position() - cube) > 1e-3 and sim.fault is None  # placed anew
    finally:
        sim.disconnect()
