"""A gymnasium VectorEnv over crash-tolerant worker processes (one LIBERO env per process).

Observations are a dict of batched arrays read from each worker's shared memory:
`images` (N, cams, H, W, 3) uint8, `state` (N, 8) float32. Auto-reset is gymnasium's SAME_STEP mode:
when an episode ends (success or max steps), the worker is reset to the next init state at once,
the returned observation is the new episode's first one, and the final observation is in
`infos["final_obs"]`. A worker that crashes or hangs is restarted and reset; its step is reported
as truncated with `infos["restarted"]` set, so RL never learns from a crash.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from sim.worker import CAMERAS, STATE_DIM, EnvError, EnvSpec, EnvWorker, WorkerCrashed


class WorkerVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, specs: list[EnvSpec], init_states: list[list[int]] | None = None, timeout_s: float = 120.0):
        """One worker per spec; env i cycles through `init_states[i]` (default: 0, 1, 2, ...)."""
        if not specs:
            raise ValueError("WorkerVectorEnv needs at least one EnvSpec")
        sizes = {s.image_size for s in specs}
        if len(sizes) != 1:
            raise ValueError(f"all envs must render at one image size to batch, got {sorted(sizes)}")
        self.specs = list(specs)
        self.num_envs = len(specs)
        size = sizes.pop()
        self.single_observation_space = gym.spaces.Dict({
            "images": gym.spaces.Box(0, 255, (len(CAMERAS), size, size, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._init_states = init_states or [[] for _ in specs]
        self._cursor = [0] * self.num_envs
        self._workers = [EnvWorker(size, timeout_s) for _ in specs]
        self.instructions = [""] * self.num_envs
        self.max_steps = [0] * self.num_envs
        self.current_init_state = [0] * self.num_envs
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self.restarts = 0

    def _next_init_state(self, i: int) -> int:
        cycle = self._init_states[i]
        k = self._cursor[i]
        self._cursor[i] += 1
        return cycle[k % len(cycle)] if cycle else k

    def _reset_one(self, i: int) -> None:
        init = self._next_init_state(i)
        for attempt in range(3):
            try:
                reply = self._workers[i].reset(self.specs[i], init)
                break
            except WorkerCrashed:
                self.restarts += 1
                self._workers[i].restart()
        else:
            raise WorkerCrashed(f"env {i} ({self.specs[i]}) crashed on reset 3 times")
        self.instructions[i], self.max_steps[i] = reply["instruction"], int(reply["max_steps"])
        self.current_init_state[i] = init
        self._steps[i] = 0

    def _obs(self) -> dict[str, np.ndarray]:
        pairs = [w.observation() for w in self._workers]
        return {"images": np.stack([p[0] for p in pairs]), "state": np.stack([p[1] for p in pairs])}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every env. `options={"init_states": [...]}` sets each env's next init state."""
        if options and "init_states" in options:
            self._init_states = [[int(s)] for s in options["init_states"]]
            self._cursor = [0] * self.num_envs
        for i in range(self.num_envs):
            self._reset_one(i)
        return self._obs(), {"instruction": list(self.instructions), "init_state": list(self.current_init_state)}

    def step(self, actions: np.ndarray, observe: np.ndarray | None = None):
        """`observe[i]=False` lets env i skip rendering this step (its images stay the last rendered
        ones); a chunked policy observes only the step before it replans. Default: all observed."""
        actions = np.asarray(actions, dtype=np.float32)
        observe = np.ones(self.num_envs, dtype=bool) if observe is None else np.asarray(observe, dtype=bool)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {actions.shape}")
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        restarted = np.zeros(self.num_envs, dtype=bool)
        for w, a, look in zip(self._workers, actions, observe):
            try:
                w.send({"cmd": "step", "action": a.tolist(), "observe": bool(look)})
            except WorkerCrashed:
                pass  # noticed in receive
        for i, w in enumerate(self._workers):
            try:
                reply = w.receive()
                rewards[i], terminated[i] = reply["reward"], reply["done"]
                self._steps[i] += 1
                truncated[i] = not terminated[i] and self._steps[i] >= self.max_steps[i]
            except (WorkerCrashed, EnvError):
                self.restarts += 1
                w.restart()
                truncated[i] = restarted[i] = True
        final = self._obs()
        ended = terminated | truncated
        for i in np.flatnonzero(ended):
            self._reset_one(int(i))
        obs = self._obs() if ended.any() else final
        infos = {"restarted": restarted, "final_obs": final, "ended": ended,
                 "instruction": list(self.instructions), "init_state": list(self.current_init_state)}
        return obs, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs) -> None:
        for w in self._workers:
            w.close()
