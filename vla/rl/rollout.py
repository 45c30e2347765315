"""Collect whole episodes for RL on crash-tolerant env workers, one decision per action chunk.

Each worker runs one planned episode at a time; whenever some workers need a new chunk, the policy
samples for all of them in one batched call (`Policy.act_rl`), and each worker then executes its
whole chunk (the head's log-probability covers every action in it). Only the last step of a chunk
is rendered: that frame is the next decision's observation. A worker that crashes or hangs is
restarted and its episode re-run from the start; the partial episode is dropped, so a simulator
crash never becomes a reward signal.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from sim.base import check_reward_mode
from sim.worker import CAMERAS, EnvError, EnvSpec, EnvWorker, WorkerCrashed
from vla.heads.noise import EpisodeNoise, stream_seed

MAX_ATTEMPTS = 3
# fresh rollout reset seeds: above the small seeds evaluations use (7, 8, ...) and below 42,949, since
# ManiSkill seeds episode i of seed s with s * 100000 + i, which must stay under 2**32
ROLLOUT_SEEDS = (1_000, 40_000)


def draw_seed(rng: np.random.Generator, seeds: list[int] | None) -> int:
    """One rollout reset seed: from `seeds` when given, else a fresh one."""
    return int(seeds[rng.integers(len(seeds))]) if seeds else int(rng.integers(*ROLLOUT_SEEDS))


@dataclass(frozen=True)
class PlannedEpisode:
    suite: str
    task: int
    init_state: int
    group: int  # GRPO: episodes with the same group share an init state; PPO: the episode's index
    # the reset seed (LIBERO: fixture placement and other per-reset randomness); None = the pool's seed
    seed: int | None = None


@dataclass
class Decision:
    """One sampled chunk: what the policy saw, what it drew, and the reward that followed."""

    images: np.ndarray  # (policy cameras, H, W, 3) uint8
    state: np.ndarray  # (state_dim,) raw proprio
    record: dict[str, torch.Tensor]  # the head's record of this sample (one row, CPU)
    log_prob: float  # under the policy that sampled it
    value: float  # critic estimate at sampling time (0 without a critic)
    reward: float = 0.0


@dataclass
class EpisodeRollout:
    plan: PlannedEpisode
    instruction: str
    decisions: list[Decision] = field(default_factory=list)
    success: bool = False
    steps: int = 0

    @property
    def ret(self) -> float:
        return float(sum(d.reward for d in self.decisions))


@dataclass
class RolloutStats:
    env_steps: int
    seconds: float
    policy_seconds: float
    restarts: int
    dropped: int  # episodes given up after MAX_ATTEMPTS crashes


class _Slot:
    def __init__(self, worker: EnvWorker):
        self.worker = worker
        self.episode: EpisodeRollout | None = None
        self.queue: deque[np.ndarray] = deque()
        self.max_steps = 0


class EnvPool:
    """Env workers kept alive across RL iterations (building a LIBERO scene takes seconds)."""

    def __init__(self, workers: int, image_size: int, sim: str = "libero", max_steps: int | None = None,
                 seed: int = 7, timeout_s: float = 120.0, reward: str = "sparse"):
        if workers < 1:
            raise ValueError(f"rl.workers must be >= 1, got {workers}")
        check_reward_mode(reward)
        self.sim, self.image_size, self.max_steps, self.seed = sim, image_size, max_steps, seed
        self.reward = reward  # sparse: 1 on success; dense: the env's own per-step reward (success included)
        self.slots = [_Slot(EnvWorker(image_size, timeout_s)) for _ in range(workers)]

    def close(self) -> None:
        for slot in self.slots:
            slot.worker.close()

    def collect(self, policy, plan: list[PlannedEpisode],
                generator: torch.Generator) -> tuple[list[EpisodeRollout], RolloutStats]:
        """Run every planned episode once (crashed ones again); returns them in plan order."""
        cameras = [CAMERAS.index(c) for c in policy.cfg.data.cameras]
        chunk = policy.cfg.head.chunk_size
        todo = deque(enumerate(plan))
        attempts: dict[int, int] = {}
        index_of: dict[int, int] = {}
        finished: dict[int, EpisodeRollout] = {}
        env_steps = restarts = dropped = 0
        policy_s, tic = 0.0, time.perf_counter()
        base_seed = generator.initial_seed()  # episode k's noise at decision d: stream_seed(base_seed, k, d)
        while todo or any(s.episode for s in self.slots):
            for slot in self.slots:
                while slot.episode is None and todo:
                    k, planned = todo.popleft()
                    try:
                        self._start(slot, planned)
                        index_of[id(slot)] = k
                    except (WorkerCrashed, EnvError):
                        restarts += 1
                        slot.worker.restart()
                        dropped += self._retry(todo, k, planned, attempts)
            active = [s for s in self.slots if s.episode is not None]
            if not active:
                break
            need = [s for s in active if not s.queue]
            if need:
                t0 = time.perf_counter()
                self._decide(policy, need, [index_of[id(s)] for s in need], base_seed, cameras, chunk)
                policy_s += time.perf_counter() - t0
            for slot in active:
                action = slot.queue.popleft()
                try:
                    slot.worker.send({"cmd": "step", "action": action.tolist(), "observe": not slot.queue})
                except WorkerCrashed:
                    pass  # noticed on receive
            for slot in active:
                episode, k = slot.episode, index_of[id(slot)]
                try:
                    reply = slot.worker.receive()
                except (WorkerCrashed, EnvError):
                    restarts += 1
                    slot.worker.restart()
                    slot.episode = None
                    slot.queue.clear()
                    dropped += self._retry(todo, k, episode.plan, attempts)
                    continue
                env_steps += 1
                episode.steps += 1
                if self.reward == "dense":
                    episode.decisions[-1].reward += float(reply["reward"])
                if reply["done"]:
                    episode.success = True
                    if self.reward == "sparse":
                        episode.decisions[-1].reward += 1.0
                if reply["done"] or episode.steps >= slot.max_steps:
                    finished[k] = episode
                    slot.episode = None
                    slot.queue.clear()
        stats = RolloutStats(env_steps, time.perf_counter() - tic, policy_s, restarts, dropped)
        return [finished[k] for k in sorted(finished)], stats

    def _start(self, slot: _Slot, planned: PlannedEpisode) -> None:
        spec = EnvSpec(self.sim, planned.suite, planned.task, self.image_size, self.max_steps, self.seed, self.reward)
        reply = slot.worker.reset(spec, planned.init_state, seed=planned.seed)  # same env, this episode's seed
        slot.episode = EpisodeRollout(planned, reply["instruction"])
        slot.max_steps = int(reply["max_steps"])
        slot.queue.clear()

    @staticmethod
    def _retry(todo: deque, k: int, planned: PlannedEpisode, attempts: dict[int, int]) -> int:
        attempts[k] = attempts.get(k, 0) + 1
        if attempts[k] < MAX_ATTEMPTS:
            todo.appendleft((k, planned))
            return 0
        print(f"[rl] dropping episode {planned} after {attempts[k]} worker crashes", flush=True)
        return 1

    def _decide(self, policy, slots: list[_Slot], plan_index: list[int], base_seed: int, cameras: list[int],
                chunk: int) -> None:
        images, states = [], []
        for slot in slots:
            img, state = slot.worker.observation()
            images.append(img[cameras])
            states.append(state)
        # a stream per episode and decision: the draws do not depend on which episodes share the batch
        noise = EpisodeNoise([stream_seed(base_seed, k, len(s.episode.decisions)) for k, s in zip(plan_index, slots)])
        images_np, states_np = np.stack(images), np.stack(states)
        raw, sample, value = policy.act_rl(torch.from_numpy(images_np), torch.from_numpy(states_np),
                                           [s.episode.instruction for s in slots], noise)
        record = {k: v.detach().cpu() for k, v in sample.record.items()}
        values = value.float().cpu() if value is not None else torch.zeros(len(slots))
        log_probs = sample.log_prob.float().cpu()  # one device-to-host copy, not one sync per env
        for j, slot in enumerate(slots):
            slot.episode.decisions.append(Decision(
                images_np[j], states_np[j], {k: v[j] for k, v in record.items()},
                float(log_probs[j]), float(values[j]), reward=0.0,
            ))
            slot.queue.extend(np.clip(raw[j, :chunk], -1.0, 1.0))


def apply_step_penalty(episodes: list[EpisodeRollout], penalty: float) -> None:
    """Optional shaping: every decision costs `penalty`, so faster successes score higher."""
    if penalty:
        for episode in episodes:
            for decision in episode.decisions:
                decision.reward -= penalty
