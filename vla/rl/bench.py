"""RL throughput for `make bench`: env frames/s of rollout alone and end to end (rollout + update)
with a tiny flow policy on two LIBERO workers, with rollout and learning alternating (sequential)
and overlapped (`rl.overlap`: the update trains in a thread while the next rollout acts with a
copy of the weights). Both end-to-end rows time the same second rollout and the same update."""
from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vla.rl import grpo
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.rl.rollout import EnvPool
from vla.random_policy import random_policy


def bench_rl(episodes: int = 8, max_steps: int = 64, workers: int = 2) -> list[dict]:
    policy = random_policy({"head": {"type": "flow"}, "rl": {"algo": "grpo", "group_size": 2}})
    cfg = policy.cfg
    rng = np.random.default_rng(0)
    pool = EnvPool(workers, cfg.demos.image_size, max_steps=max_steps)
    try:
        plan = grpo.plan_groups([("libero_spatial", 0)], [0, 1, 2, 3], episodes // 2, 2, rng)
        pool.collect(policy, plan[:workers], torch.Generator().manual_seed(0))  # build the scenes once
        episodes_, stats_ = pool.collect(policy, plan, torch.Generator().manual_seed(1))
        # every episode is a failure here, so give the update fake group-relative advantages
        advs = [np.full(len(e.decisions), 1.0 if k % 2 else -1.0) for k, e in enumerate(episodes_)]
        batch = flatten(episodes_, advs, [np.zeros(len(e.decisions)) for e in episodes_])

        def train_once() -> float:
            tic = time.perf_counter()
            learner = copy.deepcopy(policy)
            update(learner, batch, make_optimizer(learner, cfg.rl), cfg.rl, torch.Generator().manual_seed(0))
            return time.perf_counter() - tic

        update_s = train_once()
        tic = time.perf_counter()
        with ThreadPoolExecutor(1) as learner_thread:
            job = learner_thread.submit(train_once)
            _, stats_b = pool.collect(policy, plan, torch.Generator().manual_seed(2))
            overlapped_update_s = job.result()
        overlapped_s = time.perf_counter() - tic
    finally:
        pool.close()
    frames = stats_.env_steps
    return [
        {"what": f"rollout only: {episodes} episodes x {max_steps} steps on {workers} workers (flow head, chunk 8)",
         "env_frames_per_s": frames / stats_.seconds, "seconds": stats_.seconds, "policy_seconds": stats_.policy_seconds},
        {"what": f"end to end, sequential (rollout, then {cfg.rl.epochs} update epochs on {len(batch)} decisions)",
         "env_frames_per_s": frames / (stats_.seconds + update_s), "seconds": stats_.seconds + update_s,
         "update_seconds": update_s},
        {"what": "end to end, overlapped (the same update in a thread during the next rollout)",
         "env_frames_per_s": stats_b.env_steps / overlapped_s, "seconds": overlapped_s,
         "update_seconds": overlapped_update_s},
    ]
