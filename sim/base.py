"""The env protocol every simulator implements, and the observation it returns.

Images are uint8 HxWx3. LIBERO's are rotated 180 degrees from robosuite's OpenGL frame, the convention of
its hub datasets, openpi and LeRobot: upright, but mirrored left to right (robosuite's frame is only flipped
vertically), so a LIBERO-trained policy sees its scenes mirrored; real cameras and ManiSkill are not.
Actions follow the LIBERO convention: 7-dim delta end-effector position (3) + delta axis-angle
rotation (3) + gripper (-1 open, +1 close), each in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


# sparse: 1 on the success step (what evaluation counts); dense: the simulator's shaped reward
# (LIBERO: success + a potential-based progress term; ManiSkill: its normalized dense reward), for RL
REWARD_MODES = ("sparse", "dense")


# metres and radians one action unit moves the end effector in each simulator's controller: what a checkpoint's
# actions mean, so that a deployment executes them at the scale it was trained on (LIBERO: robosuite OSC_POSE's
# output range; ManiSkill: pd_ee_delta_pose's bounds)
ACTION_SCALES: dict[str, tuple[float, float]] = {"libero": (0.05, 0.5), "maniskill": (0.1, 0.1)}


def check_reward_mode(mode: str) -> None:
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")


@dataclass(frozen=True)
class Observation:
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8, upright
    state: np.ndarray  # (state_dim,) float32 proprio
    instruction: str


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    reward: float
    done: bool  # task success (LIBERO: the env's done signal)
    info: dict[str, Any] = field(default_factory=dict)


class Env(Protocol):
    task_name: str
    instruction: str
    max_steps: int
    action_dim: int
    camera_names: tuple[str, ...]

    def reset(self, init_state_index: int | None = None) -> Observation:
        """Reset to a fixed init state (if given), run the settling no-op steps, return the first obs."""

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        """One control step. observe=False may skip rendering (the images are then the last
        rendered ones); physics, state, reward and done are the same either way."""

    def close(self) -> None: ...
