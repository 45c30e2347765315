"""A dense progress signal for LIBERO pick-and-place goals (`reward="dense"`), for RL only.

LIBERO's own reward is sparse (1 on the success step). For a single `['on', obj, target]` or
`['in', obj, region]` goal the potential is

    phi(s) = -(|gripper - obj| + |obj - target|)        (metres, privileged sim state)

and the dense reward of a step is `success + phi(s') - phi(s)`: potential-based shaping (Ng, Harada
& Russell 1999), so over an episode it adds only phi(end) - phi(start), a bounded term that cannot
make any behaviour better than success, while every step says whether the gripper got closer to the
object and the object closer to its target. Evaluation always counts success only.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def pick_place_goal(suite: str, task_id: int):
    """The task's single on/in goal (`sim.experts.libero_pick_place.Goal`); ValueError for other goals."""
    from sim.experts.libero_pick_place import task_goal

    goal = task_goal(suite, task_id)
    if goal is None:
        raise ValueError(f"reward='dense' needs a single pick-and-place goal ('on'/'in' a movable object); "
                         f"{suite} task {task_id} has another goal: use reward='sparse'")
    return goal


class PickPlaceProgress:
    """phi(s) for one task's single on/in goal, read from the live robosuite env."""

    def __init__(self, raw_env: Any, goal: Any) -> None:
        self.goal = goal
        self._env = raw_env.env  # OffScreenRenderEnv -> the robosuite task env

    def _target_pos(self) -> np.ndarray:
        e, t = self._env, self.goal.target
        if t in e.obj_body_id:
            return e.sim.data.body_xpos[e.obj_body_id[t]]
        if t in e.object_sites_dict:
            return e.sim.data.get_site_xpos(t)
        raise ValueError(f"goal target {t!r} is neither an object nor a site of this scene")

    def potential(self) -> float:
        e = self._env
        obj = e.sim.data.body_xpos[e.obj_body_id[self.goal.obj]]
        grip = e.sim.data.site_xpos[e.robots[0].eef_site_id]
        return -float(np.linalg.norm(grip - obj) + np.linalg.norm(obj - self._target_pos()))
