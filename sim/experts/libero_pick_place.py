"""Privileged-state scripted expert for LIBERO pick-and-place goals `['on', obj, target]` / `['in', obj, region]`.

It plans in a camera-free ControlEnv (~50-80 steps/s instead of 5-10 with two cameras) and returns the
action list; replaying it in `sim.libero.LiberoEnv` after reset(init_state_index) reproduces the episode
exactly (both go through `sim.libero.reset_to_init_state`), so only successful plans are ever rendered.

Control: OSC_POSE delta actions driven closed-loop towards waypoints (one action unit is a 0.05 m / 0.5 rad
setpoint offset, not a distance moved), gripper pointing down, yaw chosen so the fingers close across the
object's narrowest horizontal extent. Objects too wide for the 8 cm gripper (bowls) are grasped by the rim.
Phases: approach above the grasp, descend, close, lift slowly (a failed lift re-grasps), carry at the
height the path needs, align the object over the target, lower until contact, release, retreat.
`logging` at DEBUG level traces every phase.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from sim.libero import SETTLE_ACTION, check_init_state_index, reset_to_init_state, task_bddl_file
from sim.libero_setup import ensure_libero_ready

POS_UNIT = 0.05  # metres of OSC setpoint offset per action unit
ROT_UNIT = 0.5  # radians per action unit
DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down; at yaw 0 the fingers close along world y (measured)
MAX_OPENING = 0.075  # widest object (m) the open fingers (~7.7 cm) can straddle with margin
RIM_OFFSET = 0.048  # grip site offset from a bowl's centre for a rim grasp
RIM_DEPTH = 0.03  # grip site below the rim top
PALM_CLEARANCE = 0.03  # deepest grip below an object's top before the palm touches it
RIM_YAWS = np.deg2rad([0, 30, -30, 60, -60, 90])  # finger directions tried for a rim grasp
RIM_CLEARANCE = 0.02  # free space the outer finger needs beside a rim-grasped container
LIFT_SPEED = 0.3  # faster lifts let rim-grasped bowls slip out (libero_spatial 0: 0/20 at 1.0, 20/20 at 0.3)
CARRY_SPEED = 0.8
MAX_GRASP_TRIES = 3
OPEN, CLOSE = -1.0, 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Goal:
    predicate: str  # "on" | "in"
    obj: str  # object to move
    target: str  # object or site (region) name


class _Success(Exception):
    """The env reported done: the recorded actions solve the task."""


class _OutOfSteps(Exception):
    pass


class _Failed(Exception):
    pass


def task_goal(suite: str, task_id: int) -> Goal | None:
    """The task's single pick-and-place goal, or None when the goal is anything else."""
    parsed = _parsed_problem(suite, task_id)
    goals = parsed["goal_state"]
    if len(goals) != 1 or len(goals[0]) != 3 or goals[0][0] not in ("on", "in"):
        return None
    predicate, obj, target = goals[0]
    movable = {name for names in parsed["objects"].values() for name in names}
    if obj not in movable:
        return None
    if predicate == "in":
        # 'in' a region of a movable container (basket, bowl); regions of fixtures (drawers, microwave)
        # need opening first, which this expert does not do.
        if not any(target.startswith(name + "_") for name in movable):
            return None
    return Goal(predicate, obj, target)


@lru_cache(maxsize=None)
def _parsed_problem(suite: str, task_id: int) -> dict[str, Any]:
    ensure_libero_ready()
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    return robosuite_parse_problem(task_bddl_file(suite, task_id))


def supported(suite: str, task_id: int) -> bool:
    return task_goal(suite, task_id) is not None


@lru_cache(maxsize=2)
def _planning_env(suite: str, task_id: int) -> Any:
    ensure_libero_ready()
    from libero.libero.envs.env_wrapper import ControlEnv

    return ControlEnv(bddl_file_name=task_bddl_file(suite, task_id), use_camera_obs=False, has_offscreen_renderer=False)


def plan_episode(
    suite: str, task_id: int, init_state_index: int, max_steps: int, seed: int = 7
) -> list[np.ndarray] | None:
    """Actions (after the 10 settling steps) of a successful episode, or None if the expert failed.

    `seed` must be the replaying LiberoEnv's seed: with the init state it fixes the fixtures' poses.
    """
    goal = task_goal(suite, task_id)
    if goal is None:
        raise ValueError(f"{suite} task {task_id} has no single on/in goal; supported() is False for it")
    init_state = check_init_state_index(suite, task_id, init_state_index)
    env = _planning_env(suite, task_id)
    reset_to_init_state(env, init_state, seed, init_state_index)  # exactly what LiberoEnv.reset does
    for _ in range(10):  # the same settling LiberoEnv.reset does
        obs, _, _, _ = env.step(SETTLE_ACTION)
    planner = _Planner(env, obs, goal, max_steps)
    try:
        planner.run()
    except _Success:
        return planner.actions
    except (_OutOfSteps, _Failed):
        return None
    return None


class _Planner:
    def __init__(self, env: Any, obs: dict, goal: Goal, max_steps: int) -> None:
        self.env, self.obs, self.goal, self.max_steps = env, obs, goal, max_steps
        self.e = env.env
        self.m, self.d = self.e.sim.model, self.e.sim.data
        self.actions: list[np.ndarray] = []
        names = [self.m.body_id2name(i) for i in range(self.m.nbody)]
        self.robot_bodies = {i for i, n in enumerate(names) if n.startswith(("robot0_", "gripper0_"))}
        self.obj_id = self.e.obj_body_id[goal.obj]
        self.obj_bodies = self._subtree(self.obj_id)
        self.rot = DOWN
        self.base_xy = self.d.body_xpos[self.m.body_name2id("robot0_base")][:2].copy()

    # ---------------- geometry from the privileged sim state ----------------
    def _subtree(self, body_id: int) -> set[int]:
        return {b for b in range(self.m.nbody) if self.m.body_rootid[b] == body_id}

    def _points(self, body_id: int) -> np.ndarray:
        """World-frame corners of the collision geoms' bounding boxes of a body and its children."""
        bodies = self._subtree(body_id)
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
        pts = []
        for g in range(self.m.ngeom):
            if self.m.geom_bodyid[g] in bodies and (self.m.geom_contype[g] or self.m.geom_conaffinity[g]):
                local = signs * self.m.geom_aabb[g][3:] + self.m.geom_aabb[g][:3]
                pts.append(local @ self.d.geom_xmat[g].reshape(3, 3).T + self.d.geom_xpos[g])
        if not pts:
            raise _Failed(f"body {body_id} has no collision geoms")
        return np.concatenate(pts)

    def _obj_pos(self) -> np.ndarray:
        return self.d.body_xpos[self.obj_id].copy()

    def _eef(self) -> np.ndarray:
        return np.asarray(self.obs["robot0_eef_pos"], dtype=float)

    def _held_contact(self) -> bool:
        """The held object touches something other than the robot."""
        for c in self.d.contact[: self.d.ncon]:
            b1, b2 = self.m.geom_bodyid[c.geom1], self.m.geom_bodyid[c.geom2]
            for mine, other in ((b1, b2), (b2, b1)):
                if mine in self.obj_bodies and other not in self.obj_bodies and other not in self.robot_bodies:
                    return True
        return False

    def _target(self) -> tuple[np.ndarray, float]:
        """Target centre xy and the height the object's bottom should be released at."""
        t = self.goal.target
        if t in self.e.obj_body_id:
            pts = self._points(self.e.obj_body_id[t])
            centre = self.d.body_xpos[self.e.obj_body_id[t]][:2].copy()
            return centre, float(pts[:, 2].max()) + 0.01
        if t in self.e.object_sites_dict:
            size = np.abs(self.d.get_site_xmat(t) @ np.asarray(self.e.object_sites_dict[t].size))
            pos = self.d.get_site_xpos(t).copy()
            if self.goal.predicate == "in":  # drop from a few cm above the container's floor
                return pos[:2], float(pos[2] - size[2]) + 0.04
            return pos[:2], float(pos[2] + size[2]) + 0.01
        raise _Failed(f"goal target {t!r} is neither an object nor a site")

    # ---------------- low-level control ----------------
    def act(self, pos_cmd: np.ndarray, gripper: float) -> None:
        if len(self.actions) >= self.max_steps:
            raise _OutOfSteps
        cur = Rotation.from_quat(self.obs["robot0_eef_quat"]).as_matrix()  # robosuite quats are xyzw
        rot_err = Rotation.from_matrix(self.rot @ cur.T).as_rotvec()  # world-frame, as OSC applies it
        a = np.concatenate([pos_cmd, np.clip(rot_err / ROT_UNIT, -1, 1), [gripper]])
        a = np.clip(a, -1.0, 1.0)
        self.actions.append(a)
        self.obs, _, done, _ = self.env.step(a)
        if done:
            raise _Success

    def move(self, target: np.ndarray, gripper: float, tol: float = 0.01, speed: float = 1.0, limit: int = 60,
             stop_on_contact: bool = False) -> bool:
        """Drive the grip site to `target`; False if it did not get within `tol` in `limit` steps."""
        reached = False
        for _ in range(limit):
            err = target - self._eef()
            if np.linalg.norm(err) < tol or (stop_on_contact and self._held_contact()):
                reached = True
                break
            self.act(np.clip(err / POS_UNIT, -speed, speed), gripper)
        if log.isEnabledFor(logging.DEBUG):
            cur = Rotation.from_quat(self.obs["robot0_eef_quat"]).as_matrix()
            log.debug("step %d move to %s: reached=%s eef=%s obj=%s fingers=%s rot_err=%.3f joints=%s", len(self.actions),
                      np.round(target, 3), reached, np.round(self._eef(), 3), np.round(self._obj_pos(), 3),
                      np.round(self.obs["robot0_gripper_qpos"], 3),
                      np.linalg.norm(Rotation.from_matrix(self.rot @ cur.T).as_rotvec()),
                      np.round(self.obs["robot0_joint_pos"], 2))
        return reached

    def hold(self, gripper: float, steps: int) -> None:
        for _ in range(steps):
            self.act(np.zeros(3), gripper)

    def close_gripper(self, limit: int = 20) -> None:
        """Close until the fingers stop moving: lifting while they still close grabs the object unevenly."""
        prev = float(self.obs["robot0_gripper_qpos"][0])
        for k in range(limit):
            self.act(np.zeros(3), CLOSE)
            q = float(self.obs["robot0_gripper_qpos"][0])
            if k >= 4 and abs(q - prev) < 3e-4:
                return
            prev = q

    # ---------------- grasp planning ----------------
    def _grasp_pose(self) -> tuple[np.ndarray, float]:
        """Grip-site position and gripper yaw for the object where it lies now."""
        pts = self._points(self.obj_id)
        lo, hi = pts.min(0), pts.max(0)
        height = hi[2] - lo[2]
        yaws = np.deg2rad(np.arange(-75, 91, 15))
        widths = np.array([np.ptp(pts[:, :2] @ _finger_axis(y)) for y in yaws])
        if widths.min() <= MAX_OPENING:
            # fingers across the narrowest extent; among near-ties the smallest rotation
            ok = np.flatnonzero(widths <= widths.min() + 0.005)
            yaw = float(yaws[ok[np.argmin(np.abs(yaws[ok]))]])
            u = _finger_axis(yaw)
            v = np.array([u[1], -u[0]])
            cu = 0.5 * ((pts[:, :2] @ u).min() + (pts[:, :2] @ u).max())
            cv = 0.5 * ((pts[:, :2] @ v).min() + (pts[:, :2] @ v).max())
            # low enough for the pads, high enough that the palm (~3.3 cm above the grip site) clears the top
            z = max(lo[2] + max(0.012, min(0.5 * height, 0.05)), hi[2] - PALM_CLEARANCE)
            return np.array([*(cu * u + cv * v), z]), yaw
        return self._rim_grasp(pts, lo, hi)

    def _rim_grasp(self, pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, float]:
        """Grasp a wide container's wall on the side nearest the robot whose outer finger has room to
        descend beside it (drawer walls, neighbouring objects)."""
        centre = self._obj_pos()[:2]
        z = hi[2] - RIM_DEPTH
        boxes = self._geom_boxes()
        candidates = []  # (clearance, reach, grip, yaw)
        for yaw in RIM_YAWS:
            u = _finger_axis(yaw)
            for side in (1.0, -1.0):
                grip = centre + side * RIM_OFFSET * u
                outer = centre + side * (RIM_OFFSET + 0.05) * u  # middle of the outer finger
                clear = _column_clearance(boxes, outer, z - 0.015, z + 0.05)
                candidates.append((clear, float(np.linalg.norm(grip - self.base_xy)), grip, yaw))
        # far sides can be out of the arm's reach: among the sides with enough clearance take the nearest
        clear_enough = [c for c in candidates if c[0] >= RIM_CLEARANCE] or [max(candidates, key=lambda c: c[0])]
        _, _, grip, yaw = min(clear_enough, key=lambda c: c[1])
        return np.array([*grip, z]), float(yaw)

    def _geom_boxes(self, include_obj: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Oriented bounding boxes (centres, rotations, half sizes) of the collision geoms of everything
        but the robot (and the object to move, unless `include_obj`): finer than per-body boxes (a
        drawer is five walls, a cabinet's box would cover the open drawer)."""
        skip = self.robot_bodies if include_obj else self.robot_bodies | self.obj_bodies
        geoms = [g for g in range(self.m.ngeom)
                 if (self.m.geom_contype[g] or self.m.geom_conaffinity[g]) and self.m.geom_bodyid[g] not in skip]
        rot = self.d.geom_xmat[geoms].reshape(-1, 3, 3)
        centres = self.d.geom_xpos[geoms] + np.einsum("nij,nj->ni", rot, self.m.geom_aabb[geoms, :3])
        return centres, rot, self.m.geom_aabb[geoms, 3:]

    def _transit(self, goal_xy: np.ndarray, min_z: float, gripper: float, footprint: float, below: float,
                 include_obj: bool, speed: float, offset_xy: np.ndarray | None = None, limit: int = 120) -> bool:
        """Move the grip site over `goal_xy` at `min_z` or higher: climb just enough that what hangs `below`
        the grip site clears everything near the rest of the path by 3 cm, and sink as obstacles fall
        behind. The swept footprint is a disc of radius `footprint` centred at grip site - `offset_xy`."""
        offset_xy = np.zeros(2) if offset_xy is None else offset_xy
        centres, rot, half = self._geom_boxes(include_obj)
        extent = np.einsum("nij,nj->ni", np.abs(rot), half)  # world-axis half extents
        lo, hi, tops = centres[:, :2] - extent[:, :2], centres[:, :2] + extent[:, :2], centres[:, 2] + extent[:, 2]
        target_xy = goal_xy - offset_xy
        for _ in range(limit):
            xy = self._eef()[:2] - offset_xy
            path = xy + np.linspace(0, 1, 20)[:, None] * (target_xy - xy)  # (S, 2)
            gap = np.maximum(0, np.maximum(lo[None] - path[:, None], path[:, None] - hi[None]))  # (S, N, 2)
            near = np.linalg.norm(gap, axis=-1).min(0) < footprint
            goal = np.array([*goal_xy, max(float(tops[near].max(initial=0.0)) + 0.03 + below, min_z)])
            err = goal - self._eef()
            if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.015:
                return True
            if err[2] > 0.01:  # climb before moving sideways
                err[:2] *= 0.0
            self.act(np.clip(err / POS_UNIT, -speed, speed), gripper)
        return False

    def _carry(self, target_xy: np.ndarray, release_z: float) -> bool:
        """Carry the held object until its centre is over the target, ending just above the release height."""
        offset = self._eef() - self._obj_pos()
        pts = self._points(self.obj_id)
        footprint = float(np.max(np.linalg.norm(pts[:, :2] - self._obj_pos()[:2], axis=1))) + 0.04
        below = float(self._eef()[2] - pts[:, 2].min())
        return self._transit(target_xy + offset[:2], release_z + 0.03, CLOSE, footprint, below, False,
                             CARRY_SPEED, offset_xy=offset[:2])

    # ---------------- the state machine ----------------
    def run(self) -> None:
        for _ in range(MAX_GRASP_TRIES):
            if self._pick():
                self._place()  # returns only when the goal did not hold (success raises)
                self.hold(OPEN, 4)
        raise _Failed(f"no success after {MAX_GRASP_TRIES} grasp attempts")

    def _pick(self) -> bool:
        grasp, yaw = self._grasp_pose()
        self.rot = Rotation.from_euler("z", yaw).as_matrix() @ DOWN
        top = float(self._points(self.obj_id)[:, 2].max())
        # open fingers reach ~1.5 cm below the grip site and span ~5 cm around it
        self._transit(grasp[:2], max(grasp[2] + 0.08, top + 0.05), OPEN, 0.05, 0.015, True, 1.0, limit=80)
        above = np.array([*grasp[:2], self._eef()[2]])
        self.move(above, OPEN, tol=0.005, speed=0.5, limit=20)
        self.move(grasp, OPEN, tol=0.006, speed=0.6, limit=30)
        self.close_gripper()
        z0 = self._obj_pos()[2]
        self.move(self._eef() + [0, 0, 0.05], CLOSE, tol=0.01, speed=LIFT_SPEED, limit=20)
        if self._obj_pos()[2] - z0 > 0.025:
            return True
        self.hold(OPEN, 5)
        self.move(self._eef() + [0, 0, 0.06], OPEN, tol=0.01, limit=15)
        return False

    def _place(self) -> None:
        target_xy, release_bottom = self._target()
        below = float(self._eef()[2] - self._points(self.obj_id)[:, 2].min())
        arrived = self._carry(target_xy, release_bottom + below)
        log.debug("step %d carried: arrived=%s eef=%s obj=%s", len(self.actions), arrived, np.round(self._eef(), 3),
                  np.round(self._obj_pos(), 3))
        if not self._holding():
            log.debug("dropped the object while carrying")
            return
        self._align(target_xy)
        down = np.array([*self._eef()[:2], release_bottom + below])
        if not self.move(down + [0, 0, 0.03], CLOSE, tol=0.01, speed=CARRY_SPEED, limit=40, stop_on_contact=True):
            log.debug("descent blocked at %s", np.round(self._eef(), 3))
        self.move(down, CLOSE, tol=0.006, speed=0.3, limit=20, stop_on_contact=True)
        self.hold(OPEN, 6)
        self.move(self._eef() + [0, 0, 0.08], OPEN, tol=0.01, speed=0.5, limit=25)
        self.hold(OPEN, 10)

    def _align(self, target_xy: np.ndarray, tol: float = 0.008, limit: int = 12) -> None:
        """Put the object's own centre over the target: a swinging or rotated grasp shifts it from the plan."""
        z = self._eef()[2]
        for _ in range(limit):
            err = target_xy - self._obj_pos()[:2]
            if np.linalg.norm(err) < tol:
                return
            goal = np.array([*(self._eef()[:2] + err), z])
            self.act(np.clip((goal - self._eef()) / POS_UNIT, -0.5, 0.5), CLOSE)

    def _holding(self) -> bool:
        """The object still hangs from the gripper: near the grip site, fingers not closed on nothing."""
        return bool(np.linalg.norm(self._eef() - self._obj_pos()) < 0.15 and self.obs["robot0_gripper_qpos"][0] > 0.001)


def _column_clearance(boxes: tuple[np.ndarray, np.ndarray, np.ndarray], xy: np.ndarray, z_lo: float,
                      z_hi: float) -> float:
    """Horizontal room around the vertical segment at `xy` from `z_lo` to `z_hi`: the distance to the
    nearest box reaching into that height range (a support surface below it does not count)."""
    centres, rot, half = boxes
    z_extent = np.einsum("nj,nj->n", np.abs(rot[:, 2, :]), half)
    beside = (centres[:, 2] + z_extent > z_lo) & (centres[:, 2] - z_extent < z_hi)
    if not beside.any():
        return 1.0
    c, r, h = centres[beside], rot[beside], half[beside]
    points = np.column_stack([np.tile(xy, (len(c), 1)), np.clip(c[:, 2], z_lo, z_hi)])  # nearest column point
    local = np.einsum("nji,nj->ni", r, points - c)  # into each box's frame
    return float(np.linalg.norm(np.maximum(np.abs(local) - h, 0.0), axis=-1).min())


def _finger_axis(yaw: float) -> np.ndarray:
    """Horizontal direction the fingers close along for a gripper yawed by `yaw` from DOWN."""
    return np.array([-np.sin(yaw), np.cos(yaw)])
