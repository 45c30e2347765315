"""The Franka backend: its franky calls against a stand-in module, and its gripper process (a real child
process running a stand-in franky)."""
import sys
import time
import types

import numpy as np
import pytest

from real_robot.base import Command


def test_franka_backend_without_franky_says_how_to_install_it(monkeypatch):
    from real_robot.franka import FrankaRobot

    monkeypatch.setitem(sys.modules, "franky", None)
    with pytest.raises(ImportError, match="franky-control"):
        FrankaRobot("172.16.0.2").connect()


# (x, y, z, w) of a roll of pi + 0.01 about x, in the hemisphere opposite LIBERO's (w > 0)
ROLLED_PAST_DOWN = [-np.sin((np.pi + 0.01) / 2), 0.0, 0.0, -np.cos((np.pi + 0.01) / 2)]


def test_franka_backend_sends_absolute_targets_and_recovers_from_control_errors(monkeypatch):
    from real_robot.franka import FrankaRobot

    calls = []

    class ControlException(Exception):
        pass

    class Affine:
        def __init__(self, translation=(0, 0, 0), quaternion=(0, 0, 0, 1)):
            self.translation, self.quaternion = list(translation), list(quaternion)

    class Robot:
        fail = False

        def __init__(self, ip):
            self.relative_dynamics_factor = 1.0
            self.current_cartesian_state = types.SimpleNamespace(
                pose=types.SimpleNamespace(end_effector_pose=Affine([0.4, 0, 0.3], ROLLED_PAST_DOWN)))
            self.current_joint_state = types.SimpleNamespace(position=[0] * 7, velocity=[0] * 7)

        def recover_from_errors(self):
            calls.append("recover")

        def move(self, motion, asynchronous=False):
            if Robot.fail:
                raise ControlException("cartesian_reflex")
            calls.append((type(motion).__name__, asynchronous, getattr(motion, "target", None)))

        def join_motion(self):
            calls.append("join")

    class Gripper:
        width = 0.08

        def __init__(self, ip):
            pass

        def grasp_async(self, *a, **k):
            calls.append("grasp")

        def move_async(self, *a, **k):
            calls.append("open")

    class GripperProcess:  # the child process that owns franky's Gripper, here in this process
        error_message = None

        def __init__(self, ip, speed, force, open_width):
            pass

        def latest(self):
            return Gripper.width

        def command(self, close):
            calls.append("grasp" if close else "open")

        def error(self):
            return GripperProcess.error_message

        def stop(self):
            calls.append("gripper stopped")

    monkeypatch.setattr("real_robot.franka.GripperProcess", GripperProcess)
    fake = types.SimpleNamespace(
        Robot=Robot, Gripper=Gripper, Affine=Affine, ControlException=ControlException,
        ReferenceType=types.SimpleNamespace(Absolute="abs"),
        CartesianMotion=type("CartesianMotion", (), {"__init__": lambda self, target, ref: setattr(self, "target", target)}),
        CartesianStopMotion=type("CartesianStopMotion", (), {}))
    monkeypatch.setitem(sys.modules, "franky", fake)
    robot = FrankaRobot("172.16.0.2")
    robot.connect()
    obs = robot.observe()
    assert np.allclose(obs.state.ee_position, [0.4, 0, 0.3]) and obs.state.gripper_width == 0.08
    # gripper-down rolled 0.01 rad past pi, with the quaternion's sign as the backend gives it: LIBERO's numbers,
    # where scipy's as_rotvec gives -(pi - 0.01) x
    assert np.allclose(obs.state.ee_rotvec, [np.pi + 0.01, 0, 0])
    done = robot.send(Command(np.array([0.41, 0, 0.3]), np.zeros(3), 1.0))
    assert not done.hold and calls[1][0] == "CartesianMotion" and calls[1][1] is True
    assert np.allclose(calls[1][2].translation, [0.41, 0, 0.3]) and calls[2] == "grasp"
    robot.send(Command(np.array([0.41, 0, 0.3]), np.zeros(3), 1.0))
    assert calls.count("grasp") == 1  # one gripper command per switch
    Robot.fail = True
    done = robot.send(Command(np.array([0.42, 0, 0.3]), np.zeros(3), 1.0))
    assert done.hold and "reflex" in done.events[-1] and calls[-1] == "recover"
    assert "cartesian_reflex" in robot.fault  # latched: the policy's next command is not sent into it again
    Robot.fail = False
    moves = sum(isinstance(c, tuple) and c[0] == "CartesianMotion" for c in calls)
    done = robot.send(Command(np.array([0.42, 0, 0.3]), np.zeros(3), 1.0))
    assert done.hold and "faulted" in done.events[-1] and calls[-1][0] == "CartesianStopMotion"
    assert sum(isinstance(c, tuple) and c[0] == "CartesianMotion" for c in calls) == moves
    robot.disconnect()
    assert calls[-1] == "gripper stopped"
    robot.connect()  # an operator restarts the daemon: a new connection starts clean
    assert robot.fault is None and not robot.send(Command(np.array([0.42, 0, 0.3]), np.zeros(3), 1.0)).hold
    GripperProcess.error_message = "the gripper process exited (code 1)"
    robot.observe()
    assert "gripper process exited" in robot.fault  # a dead gripper is a latched fault too
    robot.disconnect()


FAKE_FRANKY = """
import time


class Gripper:
    def __init__(self, ip):
        if ip == "broken":
            raise ConnectionError("no gripper at broken")
        self._width = 0.08

    @property
    def width(self):
        time.sleep(0.05)  # franky waits for the gripper's next status message
        return self._width

    def grasp_async(self, width, speed, force, epsilon_outer=0.0):
        self._width = 0.0

    def move_async(self, width, speed):
        self._width = width
"""


def test_the_franka_gripper_runs_in_a_process_of_its_own(tmp_path, monkeypatch):
    """franky's Gripper.width blocks ~0.1 s holding the GIL: read in a child process, never by the control loop."""
    from real_robot.franka_gripper import GripperProcess

    (tmp_path / "franky.py").write_text(FAKE_FRANKY)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned child imports this stand-in as franky

    def becomes(value):
        deadline = time.monotonic() + 10
        while abs(gripper.latest() - value) > 1e-9 and time.monotonic() < deadline:
            time.sleep(0.01)
        return gripper.latest()

    gripper = GripperProcess("172.16.0.2", 0.05, 20.0, 0.07)
    try:
        assert gripper.latest() == 0.08 and gripper.error() is None
        import os
        import signal

        os.kill(gripper._process.pid, signal.SIGINT)  # Ctrl-C reaches the process group: the daemon stops it itself
        time.sleep(0.3)
        assert gripper.error() is None
        gripper.command(close=True)
        assert becomes(0.0) == 0.0
        gripper.command(close=False)
        assert becomes(0.07) == 0.07  # the open width it was given
    finally:
        gripper.stop()
    assert gripper.error() is not None  # stopped: no longer a live gripper
    with pytest.raises(ConnectionError, match="no gripper at broken"):
        GripperProcess("broken", 0.05, 20.0, 0.07)


def test_the_gripper_process_ends_with_a_daemon_killed_hard(tmp_path):
    """SIGKILL or a crash runs no cleanup: the child must not live on holding the gripper connection."""
    import os
    import subprocess
    import sys

    (tmp_path / "franky.py").write_text(FAKE_FRANKY)
    script = ("import time; from real_robot.franka_gripper import GripperProcess; "
              "g = GripperProcess('172.16.0.2', 0.05, 20.0, 0.07); print(g._process.pid, flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)  # still there?
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as stat:  # a zombie waiting for init to reap it counts as gone
            if stat.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the gripper process outlived its daemon")
