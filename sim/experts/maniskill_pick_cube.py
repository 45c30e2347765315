"""ManiSkill's PickCube motion-planning solution, executed in the toolkit's delta end-effector action space.

ManiSkill's own solution (`mani_skill.examples.motionplanning.panda.solutions.pick_cube`) computes a grasp
from the cube's oriented bounding box (`compute_grasp_info_by_obb`, `Panda.build_grasp_pose`) and moves through
reach (5 cm above the grasp) -> grasp -> close the gripper -> the goal, each leg a screw motion (a straight
Cartesian path; no sampling-based planning). Its executor, mplib 0.1.1 (the version ManiSkill 3.0.1 pins),
segfaults under numpy 2 as soon as a planner is built (its pybind11 extension was compiled against the numpy 1
C API), and mplib 0.2 has another API; the toolkit's venv has numpy 2 (lerobot, torch). So the same grasp and
the same waypoints are used here, and each straight leg is tracked closed-loop with `pd_ee_delta_pose` steps:
the recorded actions are then exactly the ones the policy will be trained to emit (no joint-space ->
end-effector conversion and no replay mismatch), on the CPU or GPU simulation alike.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from sim.maniskill import POS_SCALE, ROT_SCALE, ManiSkillEnv

OPEN, CLOSE = -1.0, 1.0
FINGER_LENGTH = 0.025  # as in ManiSkill's solution
SPEED = 0.02  # metres of commanded motion per step (20 Hz: 0.4 m/s)
POS_TOL = 0.004
ROT_TOL = 0.03
CLOSE_STEPS = 8
SUPPORTED = ("PickCube-v1",)

Step = Callable[[np.ndarray], bool]  # executes one action, returns success


def supported(env: ManiSkillEnv) -> bool:
    return env.task_name in SUPPORTED


def _tcp(env: ManiSkillEnv) -> tuple[np.ndarray, Rotation]:
    pose = env.raw_env().agent.tcp.pose
    p = pose.p[0].cpu().numpy().astype(np.float64)
    w, x, y, z = pose.q[0].cpu().numpy().astype(np.float64)
    return p, Rotation.from_quat([x, y, z, w])


def grasp_pose(env: ManiSkillEnv) -> tuple[np.ndarray, Rotation, np.ndarray]:
    """(grasp position, grasp orientation, goal position) as ManiSkill's PickCube solution computes them."""
    from mani_skill.examples.motionplanning.base_motionplanner.utils import compute_grasp_info_by_obb, get_actor_obb

    base = env.raw_env()
    approaching = np.array([0.0, 0.0, -1.0])
    target_closing = base.agent.tcp.pose.to_transformation_matrix()[0, :3, 1].cpu().numpy()
    info = compute_grasp_info_by_obb(get_actor_obb(base.cube), approaching=approaching,
                                     target_closing=target_closing, depth=FINGER_LENGTH)
    pose = base.agent.build_grasp_pose(approaching, info["closing"], base.cube.pose.sp.p)
    w, x, y, z = pose.q
    goal = base.goal_site.pose.sp.p
    return np.asarray(pose.p, dtype=np.float64), Rotation.from_quat([x, y, z, w]), np.asarray(goal, dtype=np.float64)


def move_action(env: ManiSkillEnv, target_p: np.ndarray, target_r: Rotation, gripper: float,
                speed: float = SPEED) -> tuple[np.ndarray, float, float]:
    """One toolkit action towards the target pose: (action, position error m, rotation error rad)."""
    p, r = _tcp(env)
    dp = target_p - p
    dist = float(np.linalg.norm(dp))
    move = dp * min(1.0, speed / max(dist, 1e-9))
    rotvec = (target_r * r.inv()).as_rotvec()  # world-frame rotation still to go
    angle = float(np.linalg.norm(rotvec))
    turn = rotvec * min(1.0, 2.0 * speed / max(angle, 1e-9))  # ~0.04 rad per step at most
    action = np.concatenate([move / POS_SCALE, turn / ROT_SCALE, [gripper]])
    return np.clip(action, -1.0, 1.0), dist, angle


def solve(env: ManiSkillEnv, step: Step, max_steps: int) -> bool:
    """Run the solution from the env's current (just reset) state through `step`; True once it succeeds."""
    if not supported(env):
        raise ValueError(f"the ManiSkill expert solves {SUPPORTED}, not {env.task_name}")
    grasp_p, grasp_r, goal_p = grasp_pose(env)
    reach_p = grasp_p + grasp_r.apply([0.0, 0.0, -0.05])  # grasp * Pose([0, 0, -0.05]), as in the solution
    used = 0

    def run(action: np.ndarray) -> bool:
        nonlocal used
        used += 1
        return step(action)

    def leg(target_p: np.ndarray, gripper: float, limit: int) -> bool:
        for _ in range(limit):
            action, dist, angle = move_action(env, target_p, grasp_r, gripper)
            if run(action):
                return True
            if (dist < POS_TOL and angle < ROT_TOL) or used >= max_steps:
                break
        return False

    if leg(reach_p, OPEN, 60) or leg(grasp_p, OPEN, 30):
        return True
    for _ in range(CLOSE_STEPS):
        if used >= max_steps:
            return False
        if run(np.concatenate([np.zeros(6), [CLOSE]])):
            return True
    if leg(goal_p, CLOSE, 80):
        return True
    while used < max_steps:  # hold at the goal until the robot is static (part of PickCube's success)
        action, _, _ = move_action(env, goal_p, grasp_r, CLOSE)
        if run(action):
            return True
    return False
