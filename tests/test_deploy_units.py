"""The deployment daemon's pieces with fakes (no sim, no server): chunk schedule and temporal
ensembling, watchdog transitions, the threaded camera under a stalling source, the control loop's
holds and recoveries, the daemon's flags and stops (the Franka backend: test_franka.py)."""
import threading
import time

import numpy as np
import pytest

from real_robot.base import CameraFrame, Command, RobotObservation, RobotState
from real_robot.cameras import ThreadedCamera, parse_camera_spec
from real_robot.chunking import Chunk, ChunkSchedule
from real_robot.control_loop import ControlLoop, LoopConfig
from real_robot.policy_link import Reply
from real_robot.recorder import executed_action, libero_state
from real_robot.safety import SafetyLimits
from real_robot.watchdog import Watchdog

P = 1 / 15


def test_schedule_uses_the_action_planned_for_the_current_tick_and_replans_every_h():
    s = ChunkSchedule(replan_every=4)
    s.validate_chunk_size(8)
    with pytest.raises(ValueError, match="below the chunk size"):
        s.validate_chunk_size(4)
    assert s.needs_request(0)
    s.requested(0)
    s.add(Chunk(0, 100.0, np.arange(8)[:, None] * np.ones((8, 7))))
    assert s.action(2, P)[0][0] == 2 and s.action(2, P)[1] == pytest.approx(100.0 + 2 * P)  # elapsed steps skipped
    assert not s.needs_request(3) and s.needs_request(4)
    s.requested(4)
    s.add(Chunk(4, 100.0 + 4 * P, 10 + np.arange(8)[:, None] * np.ones((8, 7))))
    assert s.action(5, P)[0][0] == 11  # the newest chunk wins without ensembling
    assert s.action(12, P) is None and s.needs_request(12)  # ran out: ask now, hold meanwhile


def test_temporal_ensembling_weights_older_predictions_more():
    s = ChunkSchedule(replan_every=1, ensemble_k=0.5)
    s.add(Chunk(0, 0.0, np.zeros((4, 7))))
    s.add(Chunk(1, P, np.ones((4, 7))))
    w = np.exp(-0.5 * np.arange(2))
    assert s.action(1, P)[0][0] == pytest.approx(w[1] / w.sum())
    assert s.action(4, P)[0][0] == pytest.approx(1.0)  # only the second chunk still covers tick 4
    with pytest.raises(ValueError):
        ChunkSchedule(0)
    with pytest.raises(ValueError):
        ChunkSchedule(1, ensemble_k=-1)


def test_watchdog_raises_and_clears_policy_and_camera_faults_once():
    w = Watchdog(policy_timeout_s=P, frame_timeout_s=P)
    fresh = {"agentview": CameraFrame(np.zeros((2, 2, 3), np.uint8), 10.0)}
    assert w.check(10.0, fresh)[0] == {}
    w.request_sent(10.0)
    assert w.check(10.0 + P / 2, fresh)[0] == {}  # in flight, within one period
    faults, raised, _ = w.check(10.0 + 2 * P, {"agentview": CameraFrame(fresh["agentview"].image, 10.0)})
    assert set(faults) == {"policy", "camera:agentview"} and set(raised) == set(faults)
    assert w.check(10.0 + 3 * P, {"agentview": None})[1] == []  # still active: not raised again
    w.reply_received("server error: boom")
    assert "boom" in w.check(10.0 + 3 * P, fresh)[0]["policy"]
    w.reply_received(None)
    faults, raised, cleared = w.check(11.0, {"agentview": CameraFrame(fresh["agentview"].image, 11.0)})
    assert faults == {} and set(cleared) == {"policy", "camera:agentview"}


def test_threaded_camera_never_blocks_on_a_stalled_source_and_resumes():
    release, stalled, count = threading.Event(), threading.Event(), [0]

    def grab():
        count[0] += 1
        if count[0] == 3:  # the third read hangs in the "driver" until released
            stalled.set()
            release.wait(10)
        time.sleep(0.01)
        return np.full((4, 4, 3), count[0], np.uint8)

    cam = ThreadedCamera("fake", grab)
    assert cam.latest() is None
    cam.start()
    assert stalled.wait(5)
    first = cam.latest()
    time.sleep(0.2)
    # the source is stuck until released: a blocking read would wait for it and return a newer frame
    frame = cam.latest()
    assert frame is first and time.monotonic() - frame.timestamp >= 0.2  # the old frame, with its old timestamp
    release.set()
    deadline = time.time() + 5
    while cam.latest() is first and time.time() < deadline:
        time.sleep(0.01)
    assert cam.latest() is not first and cam.latest().timestamp > first.timestamp
    cam.stop()


def test_threaded_camera_survives_device_errors():
    calls = [0]

    def grab():
        calls[0] += 1
        if calls[0] < 3:
            raise OSError("usb hiccup")
        return np.zeros((2, 2, 3), np.uint8)

    cam = ThreadedCamera("flaky", grab, retry_s=0.01)
    cam.start()
    deadline = time.time() + 5
    while cam.latest() is None and time.time() < deadline:
        time.sleep(0.01)
    cam.stop()
    assert cam.latest() is not None and cam.errors == 2


def test_camera_specs_are_checked():
    for bad in ("agentview", "agentview=usb:0", "wrist=opencv:"):
        with pytest.raises(ValueError, match="camera spec"):
            parse_camera_spec(bad, 64, 64)


# -- the control loop against fakes ------------------------------------------------------------

class FakeRobot:
    def __init__(self):
        self.pos = np.array([0.5, 0.0, 0.3])
        self.sent: list[Command] = []
        self.holds = 0
        self.fault = None

    def observe(self):
        return RobotObservation(RobotState(np.zeros(7), np.zeros(7), self.pos.copy(), np.zeros(3), 0.08, time.monotonic()))

    def send(self, command):
        if command.hold:
            self.hold()
            return command
        self.pos = np.asarray(command.target_position, dtype=float).copy()
        self.sent.append(command)
        return command

    def hold(self):
        self.holds += 1


class FakeCamera:
    def __init__(self, name):
        self.name, self.frozen = name, None

    def latest(self):
        return self.frozen or CameraFrame(np.zeros((8, 8, 3), np.uint8), time.monotonic())


class FakeLink:
    """Answers every request at once with `make(tick)`, unless `silent` (a server that stopped answering)."""

    def __init__(self, make):
        self.make, self.silent, self.pending = make, False, None
        self.metadata = {"chunk_size": 8, "cameras": ["agentview"]}
        self.fatal = None

    @property
    def in_flight(self):
        return self.pending is not None

    def submit(self, tick, obs_time, obs):
        assert obs["observation/state"].shape == (8,) and obs["prompt"] == "task"
        self.pending = (tick, obs_time)
        return True

    def poll(self):
        if self.pending is None or self.silent:
            return []
        tick, t = self.pending
        self.pending = None
        return [Reply(tick, t, self.make(tick), None, 0.001)]


class Events(list):
    def __call__(self, event, **fields):
        self.append((event, fields))


EVENTS: list = []  # every _loop's log, the newest last (a loop that raised returns none)


def _loop(link, robot, cam, on_tick, steps=60, limits=None):
    log = Events()
    EVENTS.append(log)
    cfg = LoopConfig(rate_hz=100.0, replan_every=4, max_steps=steps, task="task", image_size=8)
    loop = ControlLoop(robot, {"agentview": cam}, link, cfg, log, limits=limits, on_tick=on_tick)
    stats = loop.run_episode(threading.Event())
    return stats, log


def test_loop_holds_while_the_server_is_silent_or_a_camera_stalls_and_resumes():
    robot, cam = FakeRobot(), FakeCamera("agentview")
    link = FakeLink(lambda tick: np.tile([0.1, 0, 0, 0, 0, 0, -1.0], (8, 1)))
    kinds = {}

    def on_tick(tick, obs, command):
        kinds[tick] = command.hold
        link.silent = 10 <= tick < 20
        cam.frozen = CameraFrame(np.zeros((8, 8, 3), np.uint8), time.monotonic() - 1) if 30 <= tick < 40 else None

    stats, log = _loop(link, robot, cam, on_tick)
    events = [e for e, _ in log]
    faults = [f["fault"] for e, f in log if e == "fault"]
    assert faults == ["policy", "camera:agentview"] and events.count("recovered") == 2
    # silent from tick 10: the chunk in hand still plays until the request is one period overdue, then holds
    assert all(kinds[t] for t in range(16, 21)) and all(kinds[t] for t in range(31, 40))
    assert not any(kinds[t] for t in range(45, 60))  # resumed
    assert stats.faults == {"policy": 1, "camera:agentview": 1}


def test_loop_holds_on_nan_and_keeps_out_of_workspace_targets_in_the_box():
    robot, cam = FakeRobot(), FakeCamera("agentview")
    limits = SafetyLimits(max_speed_m_s=1.7)  # 0.017 m per tick at the fake loop's 100 Hz: reaches the box's corner
    mode = {"nan": False}

    def make(tick):
        if mode["nan"]:
            return np.full((8, 7), np.nan)
        return np.tile([1.0, 1.0, 1.0, 0, 0, 0, 1.0], (8, 1)) * 50  # far outside the box

    link = FakeLink(make)
    held = {}

    def on_tick(tick, obs, command):
        mode["nan"] = 20 <= tick < 40
        held[tick] = command.hold
        assert np.all(command.target_position >= np.array(limits.workspace_min) - 1e-9)
        assert np.all(command.target_position <= np.array(limits.workspace_max) + 1e-9)

    stats, log = _loop(link, robot, cam, on_tick, steps=70, limits=limits)
    assert np.allclose(robot.pos, limits.workspace_max)  # pushed to the corner of the box, never past it
    assert all(held[t] for t in range(26, 41))  # NaN chunks: hold
    assert not any(held[t] for t in range(50, 70))  # finite again: moves (clipped) again
    assert any("non-finite" in " ".join(f["events"]) for e, f in log if e == "safety")


def test_executed_action_and_state_in_the_libero_convention():
    obs = FakeRobot().observe()
    cmd = Command(obs.state.ee_position + [0.01, 0, -0.02], np.array([0, 0, 0.1]), 0.5)
    assert np.allclose(executed_action(cmd, obs, __import__("real_robot.base").base.ActionScale()),
                       [0.2, 0, -0.4, 0, 0, 0.2, 0.5], atol=1e-6)
    assert np.allclose(libero_state(obs), [0.5, 0, 0.3, 0, 0, 0, 0.04, -0.04])


def test_robot_orientation_state_is_libero_s_and_continuous_across_gripper_down():
    """LIBERO's state holds 2 acos(w) * axis of a continuous quaternion; around gripper-down (a half turn about
    x) the angle passes pi smoothly. scipy's as_rotvec keeps the angle <= pi, so the vector flips sign as the
    gripper tilts 0.01 rad either way: recorded datasets and served states would jump by ~2 pi there."""
    from scipy.spatial.transform import Rotation

    from real_robot.base import libero_rotvec
    from sim.libero import quat_to_axis_angle

    down = Rotation.from_rotvec([np.pi, 0, 0])
    tilts = [Rotation.from_rotvec([np.pi + a, 0, 0]) for a in (-0.01, 0.01)]  # rolled 0.01 rad either way
    ours = [libero_rotvec(r.as_quat()) for r in tilts]
    assert np.allclose(ours, [[np.pi - 0.01, 0, 0], [np.pi + 0.01, 0, 0]])
    scipy_vecs = [r.as_rotvec() for r in tilts]  # what the backends used to report: (pi - 0.01) x, then -(pi - 0.01) x
    assert np.linalg.norm(scipy_vecs[1] - scipy_vecs[0]) > 6.0
    rng = np.random.default_rng(0)
    for _ in range(200):  # any sign the backend's quaternion comes with; LIBERO's own (gripper-down hemisphere)
        q = (Rotation.from_rotvec(rng.normal(size=3) * 0.5) * down).as_quat()
        libero_q = q if q[0] >= 0 else -q
        assert np.allclose(libero_rotvec(q), quat_to_axis_angle(libero_q)) and np.allclose(libero_rotvec(-q), libero_rotvec(q))
    # the LIBERO demos' home pose (angle ~3.142 about x; 59% of their frames are beyond pi)
    home = np.array([0.9996, -0.0002, -0.0283, -0.0001])
    assert np.allclose(libero_rotvec(home / np.linalg.norm(home)), quat_to_axis_angle(home / np.linalg.norm(home)))


def test_frames_are_centre_cropped_to_squares():
    from real_robot.control_loop import _resize

    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 80:560] = 255  # the centre square is white, the side bands black
    out = _resize(image, 64)
    assert out.shape == (64, 64, 3) and out.min() == 255


def test_deploy_flags_are_checked_before_anything_connects(capsys, monkeypatch):
    from vla.cli import main

    def connect(*_, **__):
        raise AssertionError("deploy connected to the server before checking its flags")

    monkeypatch.setattr("real_robot.daemon.PolicyLink", connect)
    assert main(["deploy", "--robot", "franka", "--task", "x"]) == 2
    assert "--robot-ip" in capsys.readouterr().err
    assert main(["deploy", "--task", "x", "--workspace", "0,0,0,1,1"]) == 2
    assert "6 numbers" in capsys.readouterr().err
    assert main(["deploy", "--task", "x", "--workspace", "1,0,0,0,1,1"]) == 2
    assert "workspace_min" in capsys.readouterr().err
    assert main(["deploy", "--task", "x", "--max-speed", "inf"]) == 2
    assert "finite" in capsys.readouterr().err


def test_a_single_step_policy_is_refused_with_what_to_serve_instead():
    with pytest.raises(ValueError, match=r"one action per call \(chunk_size 1.*serve a chunked policy"):
        ChunkSchedule(1).validate_chunk_size(1)


def test_a_signal_only_sets_the_stop_event_and_is_logged_after(tmp_path):
    """The handler runs on the main thread between two bytecodes, maybe inside the log's lock: it must not log."""
    import signal

    from real_robot.daemon import SignalStop
    from real_robot.jsonlog import JsonLog

    log = JsonLog(tmp_path / "log.jsonl")
    stop = threading.Event()
    handler = SignalStop(stop)
    with log._lock:  # as if the signal arrived while the main thread was writing a log line
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
    assert stop.is_set() and handler.received == ["SIGTERM", "SIGTERM"]
    handler.log_received(log)
    handler.log_received(log)  # the main loop and the shutdown both ask: one line
    log.close()
    assert (tmp_path / "log.jsonl").read_text().count('"signal": "SIGTERM"') == 1


def test_an_empty_action_chunk_is_a_policy_error_not_a_crash():
    """A server answering (0, 7) actions: the loop logs a policy error and holds, then resumes."""
    robot, cam = FakeRobot(), FakeCamera("agentview")
    empty = {"on": False}
    link = FakeLink(lambda tick: np.zeros((0, 7)) if empty["on"] else np.tile([0.1, 0, 0, 0, 0, 0, -1.0], (8, 1)))
    held = {}

    def on_tick(tick, obs, command):
        empty["on"] = 10 <= tick < 30
        held[tick] = command.hold

    stats, log = _loop(link, robot, cam, on_tick)
    errors = [f["error"] for e, f in log if e == "policy_error"]
    assert errors and "C >= 1" in errors[0]
    assert all(held[t] for t in range(20, 30)) and not any(held[t] for t in range(40, 60))


@pytest.mark.parametrize("cause", ["robot", "server"])
def test_a_latched_robot_fault_or_another_served_policy_ends_the_run_holding(cause):
    """Not ridden through: a reflex the arm latched (the next command would push into the same obstacle) or a
    server restarted with another checkpoint (the loop's scale, rate and cameras were set up for the first)."""
    from real_robot.base import OperatorNeeded

    robot, cam = FakeRobot(), FakeCamera("agentview")
    link = FakeLink(lambda tick: np.tile([0.1, 0, 0, 0, 0, 0, -1.0], (8, 1)))
    ticks = []

    def on_tick(tick, obs, command):
        ticks.append(tick)
        if tick == 15:
            if cause == "robot":
                robot.fault = "ControlException: cartesian_reflex"
            else:
                link.fatal = "the policy server came back serving another policy (checkpoint changed)"

    with pytest.raises(OperatorNeeded, match="cartesian_reflex" if cause == "robot" else "another policy"):
        _loop(link, robot, cam, on_tick)
    assert ticks[-1] == 15 and robot.holds >= 2  # stopped on the tick it happened, holding
    faults = [f for e, f in EVENTS[-1] if e == "fault"]
    assert faults[-1]["fault"] == "operator_needed" and "exit" in faults[-1]["action"]
    end = [f for e, f in EVENTS[-1] if e == "episode_end"][-1]
    assert end["operator_needed"] and end["ticks"] == 15


def test_a_server_restarted_with_another_policy_fails_every_request_without_reconnecting():
    from real_robot.policy_link import PolicyLink

    class Client:
        def __init__(self, metadata):
            self.metadata, self.closed = metadata, False

        def infer(self, obs):
            raise ConnectionError("connection reset")  # the server was killed

        def close(self):
            self.closed = True

    served = [{"checkpoint": "a", "control_hz": 20}, {"checkpoint": "b", "control_hz": 10}]
    made = []

    def connect():
        made.append(Client(served[min(len(made), 1)]))
        return made[-1]

    link = PolicyLink(connect, backoff_s=(0.01, 0.01))
    link.start(wait_s=2.0)
    replies = []
    for tick in range(3):
        assert link.submit(tick, time.monotonic(), {})
        deadline = time.monotonic() + 2.0
        while not (got := link.poll()) and time.monotonic() < deadline:
            time.sleep(0.01)
        replies += got
    link.stop()
    assert "connection reset" in replies[0].error  # the first server died mid-request
    assert all("another policy" in r.error and "checkpoint" in r.error for r in replies[1:])
    assert link.fatal and "control_hz" in link.fatal and link.metadata["checkpoint"] == "a"
    assert len(made) == 2 and made[1].closed  # the other policy's connection is closed, and not retried


def test_served_policy_without_state_accepts_a_clients_state_and_refuses_empty_images():
    """A policy trained with data.use_state=false serves openpi LIBERO clients, which always send 8 numbers."""
    import torch

    from real_robot.server import policy_infer
    from vla.random_policy import random_policy

    torch.set_num_threads(1)
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4}, "data": {"use_state": False}},
                           state_dim=0)
    infer = policy_infer(policy)
    img = np.zeros((32, 32, 3), np.uint8)
    obs = {"observation/image": img, "observation/wrist_image": img, "prompt": "task"}
    with_state = infer({**obs, "observation/state": np.ones(8, np.float32)})["actions"]
    assert with_state.shape == (4, 7) and np.array_equal(with_state, infer(obs)["actions"])
    empty = np.zeros((0, 0, 3), np.uint8)
    with pytest.raises(ValueError, match="H, W >= 1"):
        infer({**obs, "observation/image": empty, "observation/wrist_image": empty})


def test_the_daemon_executes_actions_at_the_served_checkpoints_scale():
    """A ManiSkill checkpoint's unit is 0.1 m / 0.1 rad, LIBERO's 0.05 m / 0.5 rad: run at the wrong one, the arm
    moves half as far and turns 5x as much. `vla serve` sends its simulator's; an older server gets LIBERO's."""
    from real_robot.base import ActionScale
    from real_robot.daemon import served_action_scale
    from sim.base import ACTION_SCALES

    assert served_action_scale({"action_scale": {"meters": 0.1, "radians": 0.1}}) == ActionScale(0.1, 0.1)
    assert served_action_scale({}) == ActionScale() == ActionScale(*ACTION_SCALES["libero"])
    for bad in ({"meters": 5.0, "radians": 0.1}, {"meters": 0.1}, "0.1"):
        with pytest.raises(ValueError, match="action_scale"):
            served_action_scale({"action_scale": bad})


def test_the_daemon_acts_at_the_rate_the_policys_data_was_recorded_at():
    """A delta action is a displacement per recorded step: at 15 Hz a policy trained on 20 fps data moves the arm
    at 0.75x its demonstrations' speed. No --rate: the served rate; another one, or none served, is logged."""
    import argparse

    from real_robot.daemon import DEFAULT_RATE_HZ, control_rate

    def rate(given, meta):
        return control_rate(argparse.Namespace(rate=given), meta)

    assert rate(None, {"control_hz": 20}) == (20.0, None)
    assert rate(20.0, {"control_hz": 20}) == (20.0, None)
    slower, note = rate(15.0, {"control_hz": 20})
    assert slower == 15.0 and "0.75x as fast" in note and "recorded at 20 Hz" in note
    assert rate(None, {})[0] == rate(None, {"control_hz": None})[0] == DEFAULT_RATE_HZ
    assert "does not say" in rate(None, {})[1]
    for bad in ("fast", "20", True, -5, 0, 5000):
        with pytest.raises(ValueError, match="control_hz"):
            rate(None, {"control_hz": bad})
    with pytest.raises(ValueError, match="--rate"):
        rate(0.0, {"control_hz": 20})


def test_frames_are_sent_at_the_size_the_policys_training_images_were_stored_at():
    import argparse

    from real_robot.daemon import DEFAULT_IMAGE_SIZE, frame_size

    def size(given, meta):
        return frame_size(argparse.Namespace(image_size=given), meta)

    assert size(None, {"image_size": 256}) == 256 and size(64, {"image_size": 256}) == 64
    assert size(None, {}) == size(None, {"image_size": None}) == DEFAULT_IMAGE_SIZE
    for bad in ("256", 2.5, True):
        with pytest.raises(ValueError, match="image_size"):
            size(None, {"image_size": bad})
    with pytest.raises(ValueError, match="outside 8..2048"):
        size(4, {})
