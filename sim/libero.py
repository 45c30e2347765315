"""LIBERO behind `sim.base.Env`, on hf-libero's OffScreenRenderEnv.

Conventions follow the published LIBERO pipelines (openpi, OpenVLA-OFT, LeRobot): 7-dim OSC_POSE delta
actions in [-1, 1], 8-dim state (eef pos + axis-angle + gripper finger qpos), images rotated 180 degrees,
fixed init states per task, 10 settling no-op steps, per-suite step budgets, success = the env's done.
LIBERO is imported lazily, after `ensure_libero_ready()` (its import prompts without a config yaml).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from functools import lru_cache
from typing import Any

import numpy as np

from sim.base import Observation, StepResult, check_reward_mode
from sim.libero_progress import PickPlaceProgress, pick_place_goal
from sim.libero_setup import ensure_libero_ready

# Standard evaluation budgets (steps after settling) per suite, as in openpi / OpenVLA-OFT.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
ACTION_DIM = 7
STATE_DIM = 8
# our camera name -> LIBERO observation key
CAMERAS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}


@lru_cache(maxsize=None)
def _benchmark(suite: str) -> Any:
    ensure_libero_ready()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if suite not in MAX_STEPS or suite not in suites:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid suites: {list_suites()}")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "[info] using task orders ..."
        return suites[suite]()


def list_suites() -> list[str]:
    """The five standard suites (LIBERO's `libero_100` is libero_90 + libero_10 and left out)."""
    return list(MAX_STEPS)


def list_tasks(suite: str) -> list[str]:
    """Task names in LIBERO's own order (task_order_index 0), as its benchmark defines them."""
    return list(_benchmark(suite).get_task_names())


def resolve_task(suite: str, task: int | str) -> int:
    """Task index from an index, a task name or a task's language instruction."""
    names = list_tasks(suite)
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= task < len(names):
            return int(task)
        raise ValueError(f"task index {task} out of range for {suite} (0..{len(names) - 1}); tasks: {names}")
    if isinstance(task, str):
        if task in names:
            return names.index(task)
        languages = [_benchmark(suite).get_task(i).language for i in range(len(names))]
        if task in languages:
            return languages.index(task)
        valid = "\n  ".join(f"{i}: {n}" for i, n in enumerate(names))
        raise ValueError(f"unknown task {task!r} in {suite}; valid tasks (index: name):\n  {valid}")
    raise TypeError(f"task must be an int index or a str name, got {type(task).__name__}")


def task_instruction(suite: str, task_id: int) -> str:
    return str(_benchmark(suite).get_task(resolve_task(suite, task_id)).language)


def task_bddl_file(suite: str, task_id: int) -> str:
    ensure_libero_ready()
    from libero.libero import get_libero_path

    task = _benchmark(suite).get_task(resolve_task(suite, task_id))
    return os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)


@lru_cache(maxsize=16)
def task_init_states(suite: str, task_id: int) -> np.ndarray:
    """The task's fixed init states (flattened MuJoCo states), shape (N, state_size)."""
    states = _benchmark(suite).get_task_init_states(resolve_task(suite, task_id))
    return np.asarray(states)


def num_init_states(suite: str, task_id: int) -> int:
    return len(task_init_states(suite, task_id))


def check_init_state_index(suite: str, task_id: int, index: int) -> np.ndarray:
    states = task_init_states(suite, task_id)
    if not 0 <= index < len(states):
        raise ValueError(f"init_state_index {index} out of range for {suite} task {task_id} (0..{len(states) - 1})")
    return states[index]


def seeded_reset(control_env: Any, *seed_words: int) -> dict[str, np.ndarray]:
    """control_env.reset() with LIBERO's placement sampling driven by `seed_words`.

    reset() samples object *and fixture* poses (cabinet, stove, ...: model body_pos, which no init state
    restores) from the global np.random stream; we seed that stream for the call, then restore it.
    """
    saved = np.random.get_state()
    np.random.seed(list(seed_words))
    try:
        return control_env.reset()
    finally:
        np.random.set_state(saved)  # leave the caller's global RNG as it was


def reset_to_init_state(control_env: Any, init_state: np.ndarray, seed: int, init_state_index: int) -> dict[str, np.ndarray]:
    """reset() + set_init_state, made a function of (seed, init_state_index) alone.

    reset() first, every episode: set_init_state alone would carry the previous horizon over. The seeded
    reset fixes the fixtures' poses, and zeroing MuJoCo's solver warm start (not part of the state either)
    removes the last trace of earlier episodes, so plans made in a camera-free env replay exactly in a
    rendering one.
    """
    seeded_reset(control_env, seed, init_state_index)
    raw = control_env.set_init_state(init_state)
    control_env.env.sim.data.qacc_warmstart[:] = 0.0
    return raw


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) from a robosuite (x, y, z, w) quaternion, as openpi/OpenVLA-OFT compute it."""
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat_xyzw[:3]) * 2.0 * math.acos(w) / den


def libero_state(raw_obs: dict[str, np.ndarray]) -> np.ndarray:
    """8-dim proprio: eef pos (3) + eef axis-angle (3) + gripper finger qpos (2)."""
    return np.concatenate(
        [raw_obs["robot0_eef_pos"], quat_to_axis_angle(raw_obs["robot0_eef_quat"]), raw_obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


def validate_action(action: Any) -> np.ndarray:
    """(7,) finite float64 clipped to [-1, 1]; ValueError naming the problem otherwise."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"LIBERO action must have shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"LIBERO action has non-finite values: {a.tolist()}")
    return np.clip(a, -1.0, 1.0)


class LiberoEnv:
    """One LIBERO task with two cameras; implements `sim.base.Env`."""

    action_dim = ACTION_DIM
    camera_names = tuple(CAMERAS)

    def __init__(
        self,
        suite: str,
        task_id: int | str,
        image_size: int = 128,
        settle_steps: int = 10,
        max_steps: int | None = None,
        seed: int = 7,
        reward: str = "sparse",
    ) -> None:
        check_reward_mode(reward)
        if image_size <= 0 or settle_steps < 0:
            raise ValueError(f"need image_size > 0 and settle_steps >= 0, got {image_size}, {settle_steps}")
        self.suite = suite
        self.task_id = resolve_task(suite, task_id)
        goal = pick_place_goal(suite, self.task_id) if reward == "dense" else None  # refused before the build
        self.task_name = list_tasks(suite)[self.task_id]
        self.instruction = task_instruction(suite, self.task_id)
        self.image_size = image_size
        self.settle_steps = settle_steps
        self.max_steps = MAX_STEPS[suite] if max_steps is None else int(max_steps)
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        self.seed = seed
        from libero.libero.envs import OffScreenRenderEnv

        # horizon covers settling + the budget, so robosuite itself never ends an episode early.
        self._env = OffScreenRenderEnv(
            bddl_file_name=task_bddl_file(suite, self.task_id),
            camera_heights=image_size,
            camera_widths=image_size,
            horizon=settle_steps + self.max_steps,
        )
        self._steps = 0
        self._random_resets = 0
        self._needs_reset = True
        self._render = True  # read by the gated camera sensors (see _gate_cameras)
        self._last_frames: dict[str, np.ndarray] = {}
        # dense reward (goal given): success + the change of a progress potential (sim/libero_progress.py)
        self._progress = PickPlaceProgress(self._env, goal) if goal is not None else None
        self._potential = 0.0

    def _gate_cameras(self) -> None:
        """Make the camera observables render only while `self._render` is set.

        Rendering is ~85% of a LIBERO step on CPU, and a chunked policy looks at one frame in
        `replan_steps`. The gate wraps robosuite's own camera sensor, so a frame that is rendered is
        rendered at exactly the moment (and with the pixels) robosuite would; skipped steps keep the
        last frame. A hard reset replaces the sensors, so this runs after every reset.
        """
        observables = self._env.env._observables
        for key in CAMERAS.values():
            observable = observables[key]
            render = observable._sensor
            if getattr(render, "vla_gated", False):
                continue

            def gated(obs_cache, render=render, key=key):
                if self._render or key not in self._last_frames:
                    self._last_frames[key] = render(obs_cache)
                return self._last_frames[key]

            gated.__modality__ = render.__modality__
            gated.vla_gated = True
            self._last_frames.pop(key, None)
            observable.set_sensor(gated)

    def _observation(self, raw: dict[str, np.ndarray]) -> Observation:
        # LIBERO renders upside down; rotate 180 degrees (flip H and W) like every published pipeline.
        images = {name: np.ascontiguousarray(raw[key][::-1, ::-1]) for name, key in CAMERAS.items()}
        return Observation(images=images, state=libero_state(raw), instruction=self.instruction)

    def reset(self, init_state_index: int | None = None) -> Observation:
        if init_state_index is None:  # LIBERO's own random placement, reproducible from the seed
            raw = seeded_reset(self._env, self.seed, 1 << 30, self._random_resets)
            self._random_resets += 1
        else:
            state = check_init_state_index(self.suite, self.task_id, init_state_index)
            raw = reset_to_init_state(self._env, state, self.seed, init_state_index)
        self._gate_cameras()
        for k in range(self.settle_steps):  # objects start a few cm in the air; only the last frame is seen
            self._render = k == self.settle_steps - 1
            raw, _, _, _ = self._env.step(SETTLE_ACTION)
        self._render = True
        self._steps = 0
        self._needs_reset = False
        if self._progress is not None:
            self._potential = self._progress.potential()
        return self._observation(raw)

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        """observe=False skips rendering: physics, state, reward and done are exact, the images are
        the last rendered ones (for steps whose frame no policy will look at)."""
        a = validate_action(action)
        if self._needs_reset:
            raise RuntimeError("LiberoEnv.step called before reset()")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"episode already used its max_steps={self.max_steps}; call reset()")
        self._render = observe
        try:
            raw, reward, done, _ = self._env.step(a)
        finally:
            self._render = True
        self._steps += 1
        info = {"success": bool(done), "steps": self._steps, "truncated": self._steps >= self.max_steps}
        if self._progress is not None:
            potential = self._progress.potential()
            reward, self._potential = float(done) + potential - self._potential, potential
        return StepResult(observation=self._observation(raw), reward=float(reward), done=bool(done), info=info)

    def raw_env(self) -> Any:
        """The underlying OffScreenRenderEnv (privileged state: experts, debugging)."""
        return self._env

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None
