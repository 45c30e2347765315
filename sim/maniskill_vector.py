"""N ManiSkill envs as one gymnasium VectorEnv, the same call on a GPU machine and on a CPU one.

    env = make_vector_env("PickCube-v1", num_envs=512, image_size=128)   # backend="auto"

- CUDA present: `ManiSkillVectorEnv`, ManiSkill's GPU-parallel simulation and rendering in this process; the
  observations are torch tensors that stay on the GPU.
- otherwise: `sim.vector.WorkerVectorEnv` over `ManiSkillEnv` worker processes (ManiSkill's CPU simulation holds
  one env per process); the observations are numpy arrays read from shared memory.

Both give the same dict, `images` (N, 2, H, W, 3) uint8 (agentview, wrist) and `state` (N, 8) float32, take
(N, 7) actions in the toolkit's convention, end an episode on success (terminated) or after `max_steps`
(truncated), and auto-reset in gymnasium's SAME_STEP mode with the final observation in `infos["final_obs"]`.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from sim.maniskill import CAMERAS, STATE_DIM, SUITE, TASKS, ManiSkillBatch, episode_seed, resolve_backend, resolve_task


class ManiSkillVectorEnv(gym.vector.VectorEnv):
    """N envs of one task in one ManiSkillBatch (GPU simulation; also the CPU one with N = 1)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task: int | str, num_envs: int, image_size: int = 128, max_steps: int | None = None,
                 seed: int = 7, backend: str = "gpu", cameras: bool = True) -> None:
        self.task_id = resolve_task(SUITE, task)
        self._batch = ManiSkillBatch(self.task_id, num_envs, image_size, backend, cameras)
        self.num_envs, self.seed, self.cameras = num_envs, seed, cameras
        self.max_steps = TASKS[self.task_id].max_steps if max_steps is None else int(max_steps)
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        self.instruction = TASKS[self.task_id].instruction
        self.device = self._batch.device
        spaces: dict[str, gym.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)}
        if cameras:
            spaces["images"] = gym.spaces.Box(0, 255, (len(CAMERAS), image_size, image_size, 3), np.uint8)
        self.single_observation_space = gym.spaces.Dict(spaces)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._images: torch.Tensor | None = None

    def _obs(self, render: bool = True) -> dict[str, torch.Tensor]:
        obs = {"state": self._batch.state()}
        if self.cameras:
            if render or self._images is None:
                self._images = self._batch.images()
            obs["images"] = self._images
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every env; env i starts from init state `options["init_states"][i]` (default i), seeded from
        `seed` (default: the env's seed) as `ManiSkillEnv` seeds it."""
        base = self.seed if seed is None else seed
        states = list((options or {}).get("init_states", range(self.num_envs)))
        if len(states) != self.num_envs:
            raise ValueError(f"need {self.num_envs} init_states, got {len(states)}")
        self._batch.reset([episode_seed(base, int(s)) for s in states])
        self._steps.zero_()
        return self._obs(), {"instruction": [self.instruction] * self.num_envs}

    def step(self, actions: torch.Tensor | np.ndarray, observe: bool = True):
        """(N, 7) actions; observe=False skips rendering (the images are the last rendered ones)."""
        reward, success = self._batch.step(actions)
        self._steps += 1
        terminated = success
        truncated = ~success & (self._steps >= self.max_steps)
        ended = terminated | truncated
        final = self._obs(render=observe)
        obs = final
        if bool(ended.any()):
            idx = torch.nonzero(ended).flatten()
            self._batch.reset(env_idx=idx.tolist())
            self._steps[idx] = 0
            obs = self._obs(render=True)
        infos = {"final_obs": final, "ended": ended, "instruction": [self.instruction] * self.num_envs}
        return obs, reward, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        self._batch.close()


def make_vector_env(task: int | str, num_envs: int, image_size: int = 128, backend: str = "auto",
                    max_steps: int | None = None, seed: int = 7) -> gym.vector.VectorEnv:
    """GPU: one process, N envs, tensors on the GPU. CPU: N worker processes, env i playing init states
    i, i + N, i + 2N, ..."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    task_id = resolve_task(SUITE, task)
    if resolve_backend(backend) == "gpu":
        return ManiSkillVectorEnv(task_id, num_envs, image_size, max_steps, seed, backend="gpu")
    from sim.vector import WorkerVectorEnv
    from sim.worker import EnvSpec

    spec = EnvSpec("maniskill", SUITE, task_id, image_size, max_steps, seed)
    cycles = [list(range(i, 100_000, num_envs)) for i in range(num_envs)]
    return WorkerVectorEnv([spec] * num_envs, init_states=cycles)
