"""The wave bookkeeping of `vla.rl.batched_rollout.BatchedEnvPool` (N envs in one simulation, one batched
policy call per decision) on a small deterministic stand-in for `ManiSkillBatch` whose env i evolves from its
own reset seed alone: N episodes played together must come out exactly as each played alone, including the
idle envs after an episode ends and the spare envs of a last, partial wave. The real ManiSkill simulation is
compared with the worker pool in tests/integration/test_maniskill_pipeline.py."""
import numpy as np
import pytest
import torch

from sim.maniskill import episode_seed
from vla.random_policy import random_policy
from vla.rl.batched_rollout import BatchedEnvPool
from vla.rl.rollout import PlannedEpisode

IMAGE = 16


class SeededBatch:
    """Env i: state and images drift with its step count and seed; succeeds at step 2 + seed % 9 (some never
    within the limit); dense reward 0.1 per step."""

    def __init__(self, task: int, num_envs: int):
        self.task_id, self.num_envs, self.device = task, num_envs, torch.device("cpu")
        self.seeds = np.zeros(num_envs, dtype=np.int64)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.moved = np.zeros(num_envs, dtype=np.float32)
        self.resets = 0

    def reset(self, seeds: list[int]) -> None:
        assert len(seeds) == self.num_envs
        self.seeds[:], self.t[:], self.moved[:] = seeds, 0, 0.0
        self.resets += 1

    def step(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        assert actions.shape == (self.num_envs, 7)
        self.t += 1
        self.moved += np.abs(actions).sum(axis=1)
        success = self.t == 2 + self.seeds % 9
        return torch.full((self.num_envs,), 0.1), torch.from_numpy(success)

    def state(self) -> torch.Tensor:
        s = np.stack([self.seeds % 13, self.t, self.moved] + [np.zeros(self.num_envs)] * 5, axis=1)
        return torch.from_numpy(s.astype(np.float32))

    def images(self) -> torch.Tensor:
        level = (self.seeds * 7 + self.t * 11) % 256
        return torch.from_numpy(np.broadcast_to(level[:, None, None, None, None], (self.num_envs, 2, IMAGE, IMAGE, 3))
                                .astype(np.uint8).copy())

    def close(self) -> None:
        pass


def _collect(num_envs: int, plan: list[PlannedEpisode], reward: str):
    pool = BatchedEnvPool(num_envs, IMAGE, max_steps=10, reward=reward)
    sim = SeededBatch(0, num_envs)
    pool._sim = lambda task: sim
    torch.manual_seed(0)
    policy = random_policy({"head": {"type": "flow", "chunk_size": 4}, "demos": {"image_size": IMAGE}})
    episodes, stats = pool.collect(policy, plan, torch.Generator().manual_seed(5))
    return episodes, stats, sim


@pytest.mark.parametrize("reward", ["sparse", "dense"])
def test_a_wave_of_envs_gives_each_episode_as_if_played_alone(reward):
    plan = [PlannedEpisode("maniskill", 0, init, k, seed=1000 + 3 * k) for k, init in enumerate([0, 4, 2, 7, 1])]
    together, stats, sim = _collect(3, plan, reward)  # waves of 3 and 2 (+1 spare env)
    alone, _, sim_alone = _collect(1, plan, reward)  # one env: every episode played on its own
    assert (sim.resets, sim_alone.resets) == (2, 5) and [e.plan for e in together] == plan
    assert stats.env_steps == sum(e.steps for e in together) and stats.restarts == stats.dropped == 0
    for ep, single in zip(together, alone):
        assert (ep.steps, ep.success, len(ep.decisions)) == (single.steps, single.success, len(single.decisions))
        for a, b in zip(ep.decisions, single.decisions):
            assert np.array_equal(a.images, b.images) and np.allclose(a.state, b.state, rtol=1e-5)
            assert a.log_prob == pytest.approx(b.log_prob, rel=1e-5) and a.reward == pytest.approx(b.reward)
            assert all(torch.allclose(a.record[k], b.record[k], rtol=1e-4, atol=1e-4) for k in a.record)
    outcomes = set()
    for ep in together:  # success at step 2 + seed % 9 unless the 10-step limit comes first
        first = 2 + episode_seed(ep.plan.seed, ep.plan.init_state) % 9
        assert ep.steps == min(first, 10) and ep.success == (first <= 10)
        # dense: 0.1 per step, a success credited 1 for each of the 10 steps it did not need, all / 10 steps
        held = (10 - ep.steps) * float(ep.success)
        assert ep.ret == pytest.approx(float(ep.success) if reward == "sparse" else (0.1 * ep.steps + held) / 10)
        assert len(ep.decisions) == -(-ep.steps // 4)  # one per started chunk of 4
        outcomes.add((ep.success, ep.steps))
    assert len(outcomes) >= 3  # episodes of different lengths shared a wave
