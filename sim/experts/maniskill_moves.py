"""Straight Cartesian legs for ManiSkill's scripted solutions, tracked closed-loop in the toolkit's action space.

ManiSkill's motion-planning solutions are sequences of straight end-effector moves (screw motions). Each is
tracked here by repeated `pd_ee_delta_pose` steps towards the leg's target pose, so the recorded actions are
exactly the ones a policy is trained to emit (see `maniskill_pick_cube` for why mplib is not used).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from sim.maniskill import POS_SCALE, ROT_SCALE, ManiSkillEnv

OPEN, CLOSE = -1.0, 1.0
SPEED = 0.02  # metres of commanded motion per step (20 Hz: 0.4 m/s)
POS_TOL = 0.004
ROT_TOL = 0.03

Step = Callable[[np.ndarray], bool]  # executes one action, returns success


def tcp_pose(env: ManiSkillEnv) -> tuple[np.ndarray, Rotation]:
    pose = env.raw_env().agent.tcp.pose
    p = pose.p[0].cpu().numpy().astype(np.float64)
    w, x, y, z = pose.q[0].cpu().numpy().astype(np.float64)
    return p, Rotation.from_quat([x, y, z, w])


def move_action(env: ManiSkillEnv, target_p: np.ndarray, target_r: Rotation, gripper: float,
                speed: float = SPEED) -> tuple[np.ndarray, float, float]:
    """One toolkit action towards the target pose: (action, position error m, rotation error rad)."""
    p, r = tcp_pose(env)
    dp = target_p - p
    dist = float(np.linalg.norm(dp))
    move = dp * min(1.0, speed / max(dist, 1e-9))
    rotvec = (target_r * r.inv()).as_rotvec()  # world-frame rotation still to go
    angle = float(np.linalg.norm(rotvec))
    turn = rotvec * min(1.0, 2.0 * speed / max(angle, 1e-9))  # ~0.04 rad per step at most
    action = np.concatenate([move / POS_SCALE, turn / ROT_SCALE, [gripper]])
    return np.clip(action, -1.0, 1.0), dist, angle


class Legs:
    """Runs one solution's actions through `step` within the episode's step budget.

    Every method returns True as soon as the env reports success (the caller then stops), False otherwise.
    """

    def __init__(self, env: ManiSkillEnv, step: Step, max_steps: int):
        self.env, self.step, self.max_steps = env, step, max_steps
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.max_steps

    def act(self, action: np.ndarray) -> bool:
        self.used += 1
        return self.step(action)

    def move(self, target_p: np.ndarray, target_r: Rotation, gripper: float, limit: int,
             speed: float = SPEED) -> bool:
        """Towards the target pose for at most `limit` steps, stopping early within tolerance."""
        for _ in range(limit):
            if self.exhausted:
                return False
            action, dist, angle = move_action(self.env, target_p, target_r, gripper, speed)
            if self.act(action):
                return True
            if dist < POS_TOL and angle < ROT_TOL:
                break
        return False

    def hold(self, gripper: float, steps: int | None = None) -> bool:
        """Zero motion with the gripper command for `steps` (default: the rest of the budget)."""
        for _ in range(self.max_steps - self.used if steps is None else steps):
            if self.exhausted:
                return False
            if self.act(np.concatenate([np.zeros(6), [gripper]])):
                return True
        return False
