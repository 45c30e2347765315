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
    ee_rotvec: np.ndarray  # (3,) axis-angle, base frame
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


class Robot(Protocol):
    def connect(self) -> None: ...

    def observe(self) -> RobotObservation: ...

    def send(self, command: Command) -> Command:
        """Execute one control step; returns the command actually sent (after backend limits)."""

    def hold(self) -> None:
        """Stop moving and keep the current pose (the watchdog calls this)."""

    def disconnect(self) -> None: ...
