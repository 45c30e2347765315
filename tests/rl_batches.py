"""Rollouts without a simulator for the RL unit tests: random observations, and one-decision episodes whose
chunks a policy sampled on them (its own log-probs and values recorded, as a real rollout records them)."""
from __future__ import annotations

import numpy as np
import torch

from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode


def observations(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(rows, 2 cameras, 32, 32, 3) uint8 images, (rows, 8) states, one instruction each."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 255, (rows, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(rows, 8)).astype(np.float32))
    return images, states, ["pick up the bowl"] * rows


def one_decision_episodes(policy, rewards: list[float], seed: int, successes: list[bool] | None = None):
    """`policy` samples one chunk per row of `observations(len(rewards), seed)`; each becomes an episode of one
    decision with that reward. Returns (images, states, instructions), the sample and the episodes."""
    images, states, instructions = observations(len(rewards), seed)
    _, sample, value = policy.act_rl(images, states, instructions, torch.Generator().manual_seed(0))
    episodes = []
    for j, reward in enumerate(rewards):
        decision = Decision(images[j].numpy(), states[j].numpy(), {k: v[j] for k, v in sample.record.items()},
                            float(sample.log_prob[j]), float(value[j]) if value is not None else 0.0, float(reward))
        episodes.append(EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, 0), instructions[j], [decision],
                                       success=bool(successes[j]) if successes is not None else False))
    return (images, states, instructions), sample, episodes
