"""RL rollouts on N ManiSkill envs simulated in one process: its GPU backend, or its CPU one with N = 1.

`rl.batched_envs=N` replaces the env worker processes with one `ManiSkillBatch` of N envs. The plan is
played in waves of N episodes: every env resets together, each from its own episode's seed, and since all
start at step 0 they all need a new chunk at the same steps, so each decision is one batched policy call
over the envs still running. An env whose episode has ended (success or its step limit) idles until the
wave ends, stepped with zeros, and nothing it does is recorded; the last wave's spare envs replay the
wave's first episode, unrecorded. Episodes, decisions and their noise streams are those of
`vla.rl.rollout.EnvPool` (the same `collect` contract, so every algorithm and the overlap work unchanged;
torchrun is refused, since ManiSkill places its GPU simulation itself), and with N = 1 on the CPU the two
give the same episodes.

Unlike the worker pool this is not crash tolerant: the GPU simulation is this process, so a simulator
failure ends the run, and the per-iteration checkpoint is what a restart resumes from. ManiSkill 3.0.1
draws a GPU batch's placements from one stream seeded by the first env's seed, so there an episode is
reproducible as part of its wave, not alone.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from sim.base import check_reward_mode
from sim.maniskill import CAMERAS, SUITE, TASKS, ManiSkillBatch, dense_step_reward, episode_seed, resolve_task
from vla.heads.noise import EpisodeNoise, stream_seed
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode, RolloutStats


class BatchedEnvPool:
    """One ManiSkill task's N-env simulation, kept across RL iterations (building it takes seconds)."""

    def __init__(self, num_envs: int, image_size: int, max_steps: int | None = None, seed: int = 7,
                 reward: str = "sparse", backend: str = "auto"):
        if num_envs < 1:
            raise ValueError(f"rl.batched_envs must be >= 1, got {num_envs}")
        check_reward_mode(reward)
        self.num_envs, self.image_size, self.max_steps, self.seed = num_envs, image_size, max_steps, seed
        self.reward, self.backend = reward, backend
        self._batch: ManiSkillBatch | None = None

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    def _sim(self, task: int) -> ManiSkillBatch:
        if self._batch is not None and self._batch.task_id != task:
            # one GPU simulation per process: a second task cannot be built beside the first
            raise ValueError(f"rl.batched_envs simulates one task per run; this run already holds task "
                             f"{self._batch.task_id} ({TASKS[self._batch.task_id].env_id}), the plan asks for {task}")
        if self._batch is None:
            self._batch = ManiSkillBatch(task, self.num_envs, self.image_size, self.backend, reward=self.reward)
        return self._batch

    def collect(self, policy, plan: list[PlannedEpisode],
                generator: torch.Generator) -> tuple[list[EpisodeRollout], RolloutStats]:
        """Run every planned episode once, in waves of N; returns them in plan order."""
        for planned in plan:
            if planned.suite != SUITE:
                raise ValueError(f"rl.batched_envs runs ManiSkill's suite {SUITE!r}; the plan holds {planned.suite!r}")
        tasks = {resolve_task(SUITE, p.task) for p in plan}
        if len(tasks) > 1:
            raise ValueError(f"rl.batched_envs simulates one task per run; the plan holds tasks {sorted(tasks)}")
        cameras = [list(CAMERAS).index(c) for c in policy.cfg.data.cameras]
        base_seed = generator.initial_seed()  # episode k's noise at decision d: stream_seed(base_seed, k, d)
        episodes: list[EpisodeRollout] = []
        env_steps, policy_s, tic = 0, 0.0, time.perf_counter()
        for start in range(0, len(plan), self.num_envs):
            wave = plan[start:start + self.num_envs]
            done, steps, seconds = self._wave(policy, wave, range(start, start + len(wave)), base_seed, cameras)
            episodes += done
            env_steps += steps
            policy_s += seconds
        return episodes, RolloutStats(env_steps, time.perf_counter() - tic, policy_s, restarts=0, dropped=0)

    def _wave(self, policy, wave: list[PlannedEpisode], keys: range, base_seed: int,
              cameras: list[int]) -> tuple[list[EpisodeRollout], int, float]:
        task = resolve_task(SUITE, wave[0].task)
        sim = self._sim(task)
        max_steps = TASKS[task].max_steps if self.max_steps is None else int(self.max_steps)
        chunk = policy.cfg.head.chunk_size
        seeds = [episode_seed(self.seed if p.seed is None else p.seed, p.init_state) for p in wave]
        sim.reset(seeds + [seeds[0]] * (self.num_envs - len(wave)))
        episodes = [EpisodeRollout(p, TASKS[task].instruction) for p in wave]
        running = np.ones(len(wave), dtype=bool)
        steps = np.zeros(len(wave), dtype=np.int64)
        policy_s = 0.0
        while running.any():
            live = np.flatnonzero(running)
            # rendered, and copied to the host once: the learner's batch keeps the observations there
            index = torch.as_tensor(live, device=sim.device)
            images = sim.images()[index][:, cameras].cpu().numpy()
            states = sim.state()[index].cpu().numpy().astype(np.float32)
            t0 = time.perf_counter()
            actions = self._decide(policy, images, states, [episodes[i] for i in live], [keys[i] for i in live],
                                   live, base_seed, chunk)
            policy_s += time.perf_counter() - t0
            # per-env bookkeeping as array operations: with hundreds of envs a Python loop per env and step
            # would cost more than the GPU simulation's step
            chunk_reward = np.zeros(len(wave))
            for t in range(chunk):
                reward, success = sim.step(actions[:, t])
                reward, success = reward.cpu().numpy()[:len(wave)], success.cpu().numpy()[:len(wave)]
                steps += running
                succeeded = running & success
                if self.reward == "dense":  # the CPU env's step gives the same (ManiSkillEnv.step)
                    chunk_reward += np.where(running, dense_step_reward(reward, succeeded, steps, max_steps), 0.0)
                else:
                    chunk_reward += succeeded
                for i in np.flatnonzero(succeeded):
                    episodes[i].success = True
                running &= ~(succeeded | (steps >= max_steps))
                if not running.any():
                    break
            for i in live:  # the envs that decided this chunk earn its reward
                episodes[i].decisions[-1].reward += float(chunk_reward[i])
        for episode, n in zip(episodes, steps):
            episode.steps = int(n)
        return episodes, int(steps.sum()), policy_s

    def _decide(self, policy, images: np.ndarray, states: np.ndarray, episodes: list[EpisodeRollout],
                keys: list[int], live: np.ndarray, base_seed: int, chunk: int) -> np.ndarray:
        """One batched policy call for the running envs -> (N, chunk, 7) actions for every env (zeros for
        the idle ones)."""
        noise = EpisodeNoise([stream_seed(base_seed, k, len(e.decisions)) for k, e in zip(keys, episodes)])
        raw, sample, value = policy.act_rl(torch.from_numpy(images), torch.from_numpy(states),
                                           [e.instruction for e in episodes], noise)
        record = {k: v.detach().cpu() for k, v in sample.record.items()}
        values = value.float().cpu() if value is not None else torch.zeros(len(episodes))
        log_probs = sample.log_prob.float().cpu()  # one device-to-host copy, not one sync per env
        actions = np.zeros((self.num_envs, chunk, raw.shape[-1]), dtype=np.float32)
        for j, (i, episode) in enumerate(zip(live, episodes)):
            episode.decisions.append(Decision(images[j], states[j], {k: v[j] for k, v in record.items()},
                                              float(log_probs[j]), float(values[j]), reward=0.0))
            actions[i] = np.clip(raw[j, :chunk], -1.0, 1.0)
        return actions
