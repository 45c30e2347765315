"""The robot protocol every backend implements (Franka via franky, the MuJoCo stand-in).

Actions use the simulator convention (sim/base.py): 7 numbers in [-1, 1], delta end-effector
position (3) and axis-angle rotation (3) scaled by `ActionScale`, plus the gripper (-1 open,
+1 close). A backend never receives a raw policy action: the daemon passes it through
`real_robot.safety.SafetyFilter` first, and `send` returns the command actually executed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sim.libero import quat_to_axis_angle

# (x, y, z, w): a half turn about x, the gripper pointing straight down (LIBERO's home orientation)
GRIPPER_DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])


def libero_rotvec(quat_xyzw: np.ndarray) -> np.ndarray:
    """The end-effector orientation as LIBERO's 8-dim state holds it: 2 acos(w) times the axis (an angle in
    [0, 2 pi)) of the quaternion taken in the gripper-down hemisphere. LIBERO's quaternion comes from MuJoCo's
    kinematic chain and is continuous, so its angle passes pi smoothly as the gripper tilts across straight down;
    a backend's quaternion has an arbitrary sign, and scipy's as_rotvec (angle <= pi) flips the vector's sign at
    that very tilt. Both signs of `quat_xyzw` give the same result: LIBERO's for poses within a half turn of
    gripper-down, i.e. every manipulation pose."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    return quat_to_axis_angle(q if q @ GRIPPER_DOWN_XYZW >= 0 else -q)


@dataclass(frozen=True)
class ActionScale:
    """Normalized action -> metric delta per control step (robosuite OSC_POSE's output range)."""

    meters: float = 0.05
    radians: float = 0.5


@dataclass(frozen=True)
class CameraFrame:
    image: np.ndarray  # (H, W, 3) uint8, upright
    timestamp: float  # time.monotonic() when captured


@dataclass(frozen=True)
class RobotState:
    joint_positions: np.ndarray  # (7,) rad
    joint_velocities: np.ndarray  # (7,) rad/s
    ee_position: np.ndarray  # (3,) m, base frame
    ee_rotvec: np.ndarray  # (3,) axis-angle as LIBERO computes it (libero_rotvec), base frame
    gripper_width: float  # m
    timestamp: float  # time.monotonic()


@dataclass(frozen=True)
class RobotObservation:
    state: RobotState
    frames: dict[str, CameraFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """What the arm is asked to do this control step, after the safety layer."""

    target_position: np.ndarray  # (3,) m, absolute, inside the workspace
    delta_rotvec: np.ndarray  # (3,) rad, relative to the current orientation
    gripper: float  # -1 open .. +1 close
    hold: bool = False  # True: keep the current pose, ignore the rest
    events: tuple[str, ...] = ()  # what the safety layer clipped or rejected, for the log


class OperatorNeeded(RuntimeError):
    """A condition the daemon must not ride through (the arm stopped on a reflex, the server now serves another
    policy): the loop holds, the episode is saved and `vla deploy` exits (code 3) for an operator to look."""


class Robot(Protocol):
    # a fault the backend stopped on (a reflex, a limit violation), latched until the backend is reconnected;
    # None while fine. The loop ends the run when it is set: riding through would repeat whatever caused it.
    fault: str | None

    def connect(self) -> None: ...

    def observe(self) -> RobotObservation: ...

    def send(self, command: Command) -> Command:
        """Execute one control step; returns the command actually sent (after backend limits)."""

    def hold(self) -> None:
        """Stop moving and keep the current pose (the watchdog calls this)."""

    def new_episode(self, episode: int) -> None:
        """Between episodes, once the scene was reset: the stand-in goes home with a new cube; a real arm holds
        where it is (an operator resets the scene; nothing moves it home unattended)."""

    def disconnect(self) -> None: ...
