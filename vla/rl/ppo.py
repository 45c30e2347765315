"""PPO (Schulman et al. 2017) on chunk-level decisions: a critic on the backbone features, GAE
advantages, the clipped surrogate of `vla.rl.objective`.

Episodes are collected whole, so every trajectory ends either in success (terminal, reward 1) or
at the time limit. The time limit is treated as terminal too (no bootstrap): success within
max_steps is the task, and the critic sees no clock, so bootstrapping past it would credit
states with reward the episode could never have collected.
"""
from __future__ import annotations

import numpy as np

from vla.config import RLConfig
from vla.rl.rollout import EpisodeRollout


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) of one finished episode; the value after its last decision is 0."""
    adv = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, adv + values


def advantages(episodes: list[EpisodeRollout], cfg: RLConfig) -> tuple[list[EpisodeRollout], list[np.ndarray], list[np.ndarray], dict]:
    """Per-episode GAE advantages (normalized over the batch) and critic targets."""
    advs, rets = [], []
    for e in episodes:
        r = np.array([d.reward for d in e.decisions], dtype=np.float64)
        v = np.array([d.value for d in e.decisions], dtype=np.float64)
        a, g = gae(r, v, cfg.gamma, cfg.gae_lambda)
        advs.append(a)
        rets.append(g)
    flat = np.concatenate(advs)
    mean, std = flat.mean(), flat.std() + 1e-8
    advs = [(a - mean) / std for a in advs]
    return episodes, advs, rets, {}
