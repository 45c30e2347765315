"""Success-filtered self-imitation (rejection-sampling fine-tuning, expert iteration; the "supervised
learning on successful rollouts" step of iRe-VLA): roll out the stochastic policy, keep the episodes
that succeeded, and raise the likelihood of every chunk they executed. It is the policy gradient of
a 0/1 episode reward with no baseline and failures dropped, so it never pushes an action down, needs
no critic, and its update is the head's own maximum-likelihood objective on its own samples (the
loss branch lives in `vla.rl.objective`). A sampling policy that succeeds half the time gets
sharper exactly where it succeeds; one that never succeeds learns nothing (use PPO/GRPO there).
"""
from __future__ import annotations

import numpy as np

from vla.config import RLConfig
from vla.rl.rollout import EpisodeRollout


def advantages(episodes: list[EpisodeRollout], cfg: RLConfig) -> tuple[list[EpisodeRollout], list[np.ndarray], list[np.ndarray], dict]:
    """(the successful episodes, advantage 1 for each of their decisions, zero returns, logs)."""
    kept = [e for e in episodes if e.success]
    advs = [np.ones(len(e.decisions)) for e in kept]
    rets = [np.zeros(len(e.decisions)) for e in kept]
    return kept, advs, rets, {"episodes_kept": len(kept)}
