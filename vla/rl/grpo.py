"""GRPO for VLAs (as in SimpleVLA-RL / RLinf): groups of episodes from the same task and init
state, each episode's advantage is its return normalized within the group, shared by every
decision of the episode. No critic. Groups where every episode succeeded or every one failed
carry no signal (all advantages zero) and are filtered out; the asymmetric "clip-higher" range
(0.2 below, 0.28 above) keeps exploration alive. The update itself is `vla.rl.objective`.
"""
from __future__ import annotations

from collections import defaultdict

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


def advantages(episodes: list[EpisodeRollout], cfg: RLConfig) -> tuple[list[EpisodeRollout], list[np.ndarray], list[np.ndarray], dict]:
    """(kept episodes, per-decision advantages, returns (unused: no critic), logs)."""
    groups: dict[int, list[EpisodeRollout]] = defaultdict(list)
    for e in episodes:
        groups[e.plan.group].append(e)
    kept, advs, filtered = [], [], 0
    for members in groups.values():
        returns = np.array([e.ret for e in members])
        if len(members) < 2 or (cfg.filter_groups and np.all(returns == returns[0])):
            filtered += 1
            continue
        normalized = (returns - returns.mean()) / (returns.std() + 1e-6)
        for e, a in zip(members, normalized):
            kept.append(e)
            advs.append(np.full(len(e.decisions), a))
    rets = [np.zeros(len(e.decisions)) for e in kept]
    return kept, advs, rets, {"groups_filtered": filtered, "groups_kept": len(groups) - filtered}
