"""An untrained policy with synthetic normalization statistics: what tests, benchmarks and smoke
runs act with when no trained checkpoint is needed (the weights are random, the shapes real)."""
from __future__ import annotations

import numpy as np
import torch

from vla.checkpoint import norm_specs
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats


def random_policy(overrides: dict, action_std: float = 0.3, state_dim: int = 8, seed: int = 0) -> Policy:
    """The default config merged with `overrides` (a nested dict), random weights seeded by `seed`,
    action/state stats of N(0, action_std) / N(0, 1) samples. Returned in eval mode."""
    torch.manual_seed(seed)
    cfg = merge(ExperimentConfig(), overrides)
    rng = np.random.default_rng(seed)
    stats = {"action": compute_stats(rng.normal(size=(100, cfg.head.action_dim)) * action_std, "action"),
             "state": compute_stats(rng.normal(size=(100, state_dim)), "state")}
    return Policy(cfg, Normalizer(stats, norm_specs(cfg)), state_dim).eval()
