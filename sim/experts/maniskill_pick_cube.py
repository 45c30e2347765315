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

import numpy as np
from scipy.spatial.transform import Rotation

from sim.experts.maniskill_moves import CLOSE, OPEN, Legs, Step, move_action
from sim.maniskill import ManiSkillEnv

FINGER_LENGTH = 0.025  # as in ManiSkill's solution
CLOSE_STEPS = 8
SUPPORTED = ("PickCube-v1",)


def supported(env: ManiSkillEnv) -> bool:
    return env.task_name in SUPPORTED


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


def solve(env: ManiSkillEnv, step: Step, max_steps: int) -> bool:
    """Run the solution from the env's current (just reset) state through `step`; True once it succeeds."""
    if not supported(env):
        raise ValueError(f"the ManiSkill expert solves {SUPPORTED}, not {env.task_name}")
    grasp_p, grasp_r, goal_p = grasp_pose(env)
    reach_p = grasp_p + grasp_r.apply([0.0, 0.0, -0.05])  # grasp * Pose([0, 0, -0.05]), as in the solution
    legs = Legs(env, step, max_steps)
    if legs.move(reach_p, grasp_r, OPEN, 60) or legs.move(grasp_p, grasp_r, OPEN, 30):
        return True
    if legs.hold(CLOSE, CLOSE_STEPS):
        return True
    if legs.move(goal_p, grasp_r, CLOSE, 80):
        return True
    while not legs.exhausted:  # hold at the goal until the robot is static (part of PickCube's success)
        if legs.act(move_action(env, goal_p, grasp_r, CLOSE)[0]):
            return True
    return False
