"""ManiSkill's PushCube solution, executed in the toolkit's delta end-effector action space.

ManiSkill's own solution (`mani_skill.examples.motionplanning.panda.solutions.push_cube`) closes the gripper,
moves the closed fingers 5 cm behind the cube (the -x side; the target is always +x of the cube) and pushes
straight towards the target. The same legs are tracked here closed-loop with `pd_ee_delta_pose` steps, as for
PickCube (`maniskill_moves`), with one leg added: the fingers come down behind
the cube from above instead of along the straight line from the start pose, which can clip the cube.
"""
from __future__ import annotations

import numpy as np

from sim.experts.maniskill_moves import CLOSE, Legs, Step, tcp_pose
from sim.maniskill import ManiSkillEnv

SUPPORTED = ("PushCube-v1",)
BEHIND = 0.05  # fingers' distance behind the cube centre before the push, as in the solution
ABOVE = 0.08  # height of the approach above the push point
PUSH_PAST_CENTRE = 0.03  # push until the cube centre is this far short of the target centre (target radius 0.1)
PUSH_SPEED = 0.015  # slower than the free moves so the cube stays in contact and upright


def push_points(env: ManiSkillEnv) -> tuple[np.ndarray, np.ndarray]:
    """(behind the cube at finger height, where the fingers stop) from the privileged state."""
    base = env.raw_env()
    cube = np.asarray(base.obj.pose.sp.p, dtype=np.float64)
    target = np.asarray(base.goal_region.pose.sp.p, dtype=np.float64)
    start = cube + np.array([-BEHIND, 0.0, 0.0])
    # the fingers touch the cube's back face when they are half a cube behind its centre
    end = np.array([target[0] - PUSH_PAST_CENTRE - base.cube_half_size - 0.005, cube[1], cube[2]])
    return start, end


def solve(env: ManiSkillEnv, step: Step, max_steps: int) -> bool:
    """Run the solution from the env's current (just reset) state through `step`; True once it succeeds."""
    if env.task_name not in SUPPORTED:
        raise ValueError(f"the PushCube expert solves {SUPPORTED}, not {env.task_name}")
    start, end = push_points(env)
    _, orientation = tcp_pose(env)  # keep the start orientation (fingers down), as the solution does
    legs = Legs(env, step, max_steps)
    if legs.move(start + np.array([0.0, 0.0, ABOVE]), orientation, CLOSE, 40) or \
            legs.move(start, orientation, CLOSE, 20):
        return True
    if legs.move(end, orientation, CLOSE, 40, speed=PUSH_SPEED):
        return True
    return legs.hold(CLOSE)  # hold still; success is checked every step
