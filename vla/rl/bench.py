"""RL throughput for `make bench`: env frames/s of rollout alone and end to end (rollout + update)
with a tiny flow policy on two LIBERO workers. Rollout and learning alternate (no overlap yet)."""
from __future__ import annotations

import time

import numpy as np
import torch

from vla.checkpoint import norm_specs
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats
from vla.rl import grpo
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.rl.rollout import EnvPool


def bench_rl(episodes: int = 8, max_steps: int = 64, workers: int = 2) -> list[dict]:
    torch.manual_seed(0)
    cfg = merge(ExperimentConfig(), {"head": {"type": "flow"}, "rl": {"algo": "grpo", "group_size": 2}})
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(100, 7)) * 0.3, "action"),
             "state": compute_stats(rng.normal(size=(100, 8)), "state")}
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()
    pool = EnvPool(workers, cfg.demos.image_size, max_steps=max_steps)
    try:
        plan = grpo.plan_groups([("libero_spatial", 0)], [0, 1, 2, 3], episodes // 2, 2, rng)
        pool.collect(policy, plan[:workers], torch.Generator().manual_seed(0))  # build the scenes once
        episodes_, stats_ = pool.collect(policy, plan, torch.Generator().manual_seed(1))
    finally:
        pool.close()
    # every episode is a failure here, so give the update fake group-relative advantages
    advs = [np.full(len(e.decisions), 1.0 if k % 2 else -1.0) for k, e in enumerate(episodes_)]
    batch = flatten(episodes_, advs, [np.zeros(len(e.decisions)) for e in episodes_])
    tic = time.perf_counter()
    update(policy, batch, make_optimizer(policy, cfg.rl), cfg.rl, torch.Generator().manual_seed(0))
    update_s = time.perf_counter() - tic
    frames = stats_.env_steps
    return [
        {"what": f"rollout only: {episodes} episodes x {max_steps} steps on {workers} workers (flow head, chunk 8)",
         "env_frames_per_s": frames / stats_.seconds, "seconds": stats_.seconds, "policy_seconds": stats_.policy_seconds},
        {"what": f"end to end, sequential (rollout, then {cfg.rl.epochs} update epochs on {len(batch)} decisions)",
         "env_frames_per_s": frames / (stats_.seconds + update_s), "seconds": stats_.seconds + update_s,
         "update_seconds": update_s},
    ]
