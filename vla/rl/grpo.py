"""GRPO for VLAs (as in SimpleVLA-RL / RLinf): groups of episodes from the same task and init
state, each episode's advantage is its return normalized within the group, shared by every
decision of the episode. No critic. Groups where every episode succeeded or every one failed
carry no signal (all advantages zero) and are filtered out; the asymmetric "clip-higher" range
(0.2 below, 0.28 above) keeps exploration alive. The update itself is `vla.rl.objective`.
"""
from __future__ import annotations

import numpy as np

from vla.config import RLConfig
from vla.rl.rollout import EpisodeRollout, PlannedEpisode, draw_seed


def plan_groups(tasks: list[tuple[str, int]], init_states: list[int], groups: int, group_size: int,
                rng: np.random.Generator, seeds: list[int] | None = None) -> list[PlannedEpisode]:
    """`groups` (task, init state, reset seed) draws, each repeated group_size times: a group's members
    start from the very same scene. seeds: the reset seeds to draw from; None = a fresh one per group."""
    plan = []
    for g in range(groups):
        suite, task = tasks[rng.integers(len(tasks))]
        init = int(init_states[rng.integers(len(init_states))])
        plan += [PlannedEpisode(suite, task, init, g, draw_seed(rng, seeds))] * group_size
    return plan


def group_advantages(groups: np.ndarray, returns: np.ndarray, filter_groups: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per episode (episode i is in group groups[i] and returned returns[i]): its return normalized within
    its group, and whether its group is kept (groups of one, and with filter_groups those whose members all
    returned the same, carry no signal and get advantage 0)."""
    adv, kept = np.zeros(len(returns)), np.zeros(len(returns), dtype=bool)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        r = returns[members]
        if len(members) < 2 or (filter_groups and np.all(r == r[0])):
            continue
        adv[members], kept[members] = (r - r.mean()) / (r.std() + 1e-6), True
    return adv, kept


def advantages(episodes: list[EpisodeRollout], cfg: RLConfig) -> tuple[list[EpisodeRollout], list[np.ndarray], list[np.ndarray], dict]:
    """(kept episodes, per-decision advantages, returns (unused: no critic), logs)."""
    groups = np.array([e.plan.group for e in episodes], dtype=np.int64)
    adv, keep = group_advantages(groups, np.array([e.ret for e in episodes], dtype=np.float64), cfg.filter_groups)
    kept = [e for e, k in zip(episodes, keep) if k]
    advs = [np.full(len(e.decisions), a) for e, a, k in zip(episodes, adv, keep) if k]
    rets = [np.zeros(len(e.decisions)) for e in kept]
    groups_kept = len(np.unique(groups[keep]))
    return kept, advs, rets, {"groups_filtered": len(np.unique(groups)) - groups_kept, "groups_kept": groups_kept}
