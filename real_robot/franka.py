"""Franka Panda / FR3 backend through franky (`pip install franky-control`, libfranka, no ROS).

Not exercised here (no robot, no real-time kernel): it is written against franky's documented
Python API (Robot, Gripper, Affine, CartesianMotion, CartesianStopMotion, ReferenceType,
recover_from_errors, relative_dynamics_factor, current_cartesian_state, current_joint_state) and
kept small. Each command becomes an absolute Cartesian pose target sent asynchronously, which
preempts the previous one; franky's Ruckig planner keeps the motion jerk-limited between targets,
and `relative_dynamics_factor` caps speed on top of the safety layer's per-step limits.

Errors: a libfranka control exception (reflex, limit violation) is caught, `recover_from_errors()`
is called and the fault is latched in `fault`: `send` returns hold commands from then on, and the
daemon ends the run for an operator (re-sending the policy's command a tick later would push into
whatever stopped the arm again, reflex after reflex). A new connection clears it.

The gripper lives in a child process (`real_robot.franka_gripper`): franky's `Gripper.width` waits for the
gripper's next status message (~0.1 s, franky issue #35) holding the GIL, longer than a control period; a
gripper process that dies is a latched fault like a reflex.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from scipy.spatial.transform import Rotation

from real_robot.base import Command, RobotObservation, RobotState, libero_rotvec
from real_robot.franka_gripper import GripperProcess


def _import_franky():
    try:
        import franky
    except ImportError as err:
        raise ImportError("the Franka backend needs franky: pip install franky-control (a wheel matching your "
                          "robot's libfranka version, see franky's README), on a real-time kernel") from err
    return franky


class FrankaRobot:
    def __init__(self, ip: str, dynamics_factor: float = 0.1, gripper_speed: float = 0.05,
                 gripper_force: float = 20.0, open_width: float = 0.08):
        if not 0 < dynamics_factor <= 1:
            raise ValueError(f"dynamics_factor must be in (0, 1], got {dynamics_factor}")
        self.ip, self.dynamics_factor = ip, dynamics_factor
        self.gripper_speed, self.gripper_force, self.open_width = gripper_speed, gripper_force, open_width
        self._franky = None
        self._robot = None
        self._gripper: GripperProcess | None = None
        self._closed: bool | None = None  # last gripper command sent (None: none yet)
        self.fault: str | None = None

    def connect(self) -> None:
        if self._gripper is not None:  # connected before: one gripper connection at a time
            self._gripper.stop()
            self._gripper = None
        franky = self._franky = _import_franky()
        self._robot = franky.Robot(self.ip)
        self._robot.recover_from_errors()
        self._robot.relative_dynamics_factor = self.dynamics_factor
        try:
            self._gripper = GripperProcess(self.ip, self.gripper_speed, self.gripper_force, self.open_width)
        except Exception:
            self._robot = None  # nothing was moved yet; the caller sees the gripper's error
            raise
        self._closed, self.fault = None, None

    def observe(self) -> RobotObservation:
        robot = self._require()
        pose = robot.current_cartesian_state.pose.end_effector_pose
        joints = robot.current_joint_state
        state = RobotState(
            joint_positions=np.asarray(joints.position, dtype=float),
            joint_velocities=np.asarray(joints.velocity, dtype=float),
            ee_position=np.asarray(pose.translation, dtype=float),
            ee_rotvec=libero_rotvec(np.asarray(pose.quaternion, dtype=float)),  # franky: x, y, z, w
            gripper_width=self._gripper.latest(),
            timestamp=time.monotonic())
        self._check_gripper()
        return RobotObservation(state)

    def _check_gripper(self) -> None:
        gripper_error = self._gripper.error() if self._gripper is not None else None
        if gripper_error is not None and self.fault is None:
            self.fault = f"gripper: {gripper_error}"

    def send(self, command: Command) -> Command:
        if command.hold or self.fault is not None:
            self.hold()
            if self.fault is not None and not command.hold:
                return replace(command, hold=True, events=command.events + (f"franka: faulted ({self.fault}), holding",))
            return command
        franky = self._franky
        robot = self._require()
        current = robot.current_cartesian_state.pose.end_effector_pose
        # base-frame delta rotation applied on the left, as OSC_POSE does in the simulators
        rotation = Rotation.from_rotvec(command.delta_rotvec) * Rotation.from_quat(np.asarray(current.quaternion))
        target = franky.Affine(np.asarray(command.target_position, dtype=float).tolist(), rotation.as_quat().tolist())
        try:
            robot.move(franky.CartesianMotion(target, franky.ReferenceType.Absolute), asynchronous=True)
            self._command_gripper(command.gripper > 0)
        except franky.ControlException as err:
            robot.recover_from_errors()
            self.fault = f"{type(err).__name__}: {err}"
            return replace(command, hold=True, events=command.events + (f"franka: {err}; recovered, holding",))
        return command

    def _command_gripper(self, close: bool) -> None:
        if close == self._closed:
            return  # one gripper command per open/close switch, not one per tick
        self._gripper.command(close)  # grasp (closing on whatever is there) or move to the open width
        self._closed = close

    def hold(self) -> None:
        franky = self._franky
        robot = self._require()
        try:
            robot.move(franky.CartesianStopMotion(), asynchronous=True)
        except franky.ControlException as err:  # an error the previous motion stored: a fault all the same
            robot.recover_from_errors()
            self.fault = self.fault or f"{type(err).__name__}: {err}"
        self._check_gripper()  # also while holding between episodes

    def new_episode(self, episode: int) -> None:
        self.hold()  # the operator resets the scene; the arm is not moved home unattended

    def disconnect(self) -> None:
        if self._robot is not None:
            self.hold()
            try:
                self._robot.join_motion()  # surfaces an error stored by the motion thread
            except self._franky.ControlException:
                self._robot.recover_from_errors()
        if self._gripper is not None:
            self._gripper.stop()
        self._robot = self._gripper = None

    def _require(self):
        if self._robot is None:
            raise RuntimeError(f"FrankaRobot({self.ip}) is not connected; call connect() first")
        return self._robot

