"""RL throughput for `make bench`, env frames/s with a tiny flow policy.

LIBERO: rollout alone and end to end (rollout + update) on two workers, with torch's threads set as
`vla rl` sets them, rollout and learning alternating (sequential) and overlapped (`rl.overlap`: the
update trains in a thread while the next rollout acts with a copy of the weights). Both end-to-end rows
time the same rollout (same plan and noise) and the same update, after an untimed warm-up update.

ManiSkill PickCube: one env worker process against `rl.batched_envs=1` (one env in this process) on the
CPU, always; with CUDA, `rl.batched_envs=N` GPU-parallel rollouts (N = 64, 256, 512 as memory allows),
alone and end to end with one update on the policy's GPU."""
from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vla.rl import grpo
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.rl.rollout import EnvPool, PlannedEpisode, RolloutStats
from vla.random_policy import random_policy


def _fake_batch(episodes):
    """The episodes' decisions with alternating +1 / -1 advantages per episode and zero returns: the update
    does its full work whatever the episodes' outcomes."""
    advantages = [np.full(len(e.decisions), 1.0 if k % 2 else -1.0) for k, e in enumerate(episodes)]
    return flatten(episodes, advantages, [np.zeros(len(e.decisions)) for e in episodes])


def bench_rl(episodes: int = 8, max_steps: int = 64, workers: int = 2) -> list[dict]:
    from dataclasses import replace

    from vla.rl.prepare import set_rollout_threads

    policy = random_policy({"head": {"type": "flow"}, "rl": {"algo": "grpo", "group_size": 2, "workers": workers}})
    cfg = policy.cfg
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    set_rollout_threads(replace(cfg.rl, torch_threads=0))  # as `vla rl` runs it beside its env workers
    rl_threads = torch.get_num_threads()
    pool = EnvPool(workers, cfg.demos.image_size, max_steps=max_steps)
    try:
        plan = grpo.plan_groups([("libero_spatial", 0)], [0, 1, 2, 3], episodes // 2, 2, rng)
        pool.collect(policy, plan[:workers], torch.Generator().manual_seed(0))  # build the scenes once
        episodes_, stats_ = pool.collect(policy, plan, torch.Generator().manual_seed(1))
        # every episode is a failure here, so give the update fake group-relative advantages
        batch = _fake_batch(episodes_)

        def train_once() -> float:
            tic = time.perf_counter()
            learner = copy.deepcopy(policy)
            update(learner, batch, make_optimizer(learner, cfg.rl), cfg.rl, torch.Generator().manual_seed(0))
            return time.perf_counter() - tic

        train_once()  # untimed: the first backward pass and optimizer set-up are one-off costs
        # the same rollout (seed 2) and the same update, alternating and then overlapped
        _, stats_b = pool.collect(policy, plan, torch.Generator().manual_seed(2))
        update_s = train_once()
        tic = time.perf_counter()
        with ThreadPoolExecutor(1) as learner_thread:
            job = learner_thread.submit(train_once)
            _, stats_c = pool.collect(policy, plan, torch.Generator().manual_seed(2))
            overlapped_update_s = job.result()
        overlapped_s = time.perf_counter() - tic
    finally:
        pool.close()
        torch.set_num_threads(threads)
    frames = stats_.env_steps
    return [
        {"what": f"rollout only: {episodes} episodes x {max_steps} steps on {workers} workers (flow head, chunk 8), "
                 f"{rl_threads} torch thread(s) as `vla rl` sets them",
         "env_frames_per_s": frames / stats_.seconds, "seconds": stats_.seconds, "policy_seconds": stats_.policy_seconds},
        {"what": f"end to end, sequential (the next rollout, then {cfg.rl.epochs} update epochs on {len(batch)} "
                 "decisions; warm)",
         "env_frames_per_s": stats_b.env_steps / (stats_b.seconds + update_s), "seconds": stats_b.seconds + update_s,
         "update_seconds": update_s},
        {"what": "end to end, overlapped (the same rollout, the same update in a thread during it)",
         "env_frames_per_s": stats_c.env_steps / overlapped_s, "seconds": overlapped_s,
         "update_seconds": overlapped_update_s},
    ]


def _maniskill_rollout(pool, policy, episodes: int) -> tuple[list, RolloutStats]:
    plan = [PlannedEpisode("maniskill", 0, k % 50, k, seed=1000 + k) for k in range(episodes)]
    pool.collect(policy, plan[:1], torch.Generator().manual_seed(0))  # build the simulation once
    return pool.collect(policy, plan, torch.Generator().manual_seed(1))


def bench_rl_maniskill(max_steps: int = 48, cpu_episodes: int = 2,
                       gpu_counts: tuple[int, ...] = (64, 256, 512)) -> list[dict]:
    from vla.rl.batched_rollout import BatchedEnvPool

    policy = random_policy({"head": {"type": "flow"}, "sim": "maniskill"})
    size = policy.cfg.demos.image_size
    rows = []
    for what, pool in ((f"1 env worker process (CPU sim), {cpu_episodes} episodes",
                        EnvPool(1, size, "maniskill", max_steps=max_steps)),
                       (f"rl.batched_envs=1 (CPU sim in this process), {cpu_episodes} episodes",
                        BatchedEnvPool(1, size, max_steps=max_steps, backend="cpu"))):
        row = {"what": f"ManiSkill PickCube rollout, {what} x {max_steps} steps (flow head, chunk 8)"}
        try:
            _, stats = _maniskill_rollout(pool, policy, cpu_episodes)
            row.update({"env_frames_per_s": stats.env_steps / stats.seconds, "seconds": stats.seconds,
                        "policy_seconds": stats.policy_seconds})
        except (RuntimeError, ValueError) as err:  # e.g. no Vulkan device: said in the row, the section goes on
            row["note"] = f"failed: {type(err).__name__}: {str(err)[:160]}"
        finally:
            pool.close()
        rows.append(row)
    if not torch.cuda.is_available():
        rows.append({"what": f"GPU rows (rl.batched_envs = {', '.join(map(str, gpu_counts))}) skipped: no CUDA "
                             "device on this machine"})
        return rows
    policy.to("cuda")
    for n in gpu_counts:
        row = {"what": f"ManiSkill PickCube rollout, rl.batched_envs={n} (GPU sim, policy on the GPU), "
                       f"{n} episodes x {max_steps} steps"}
        pool = BatchedEnvPool(n, size, max_steps=max_steps, backend="gpu")
        try:
            episodes, stats = _maniskill_rollout(pool, policy, n)
            batch = _fake_batch(episodes)

            def train_once() -> float:
                torch.cuda.synchronize()
                tic = time.perf_counter()
                learner = copy.deepcopy(policy)
                update(learner, batch, make_optimizer(learner, policy.cfg.rl), policy.cfg.rl,
                       torch.Generator().manual_seed(0))
                torch.cuda.synchronize()
                return time.perf_counter() - tic

            train_once()  # untimed: CUDA kernels and the optimizer are set up on the first update
            update_s = train_once()
            row.update({"env_frames_per_s": stats.env_steps / stats.seconds, "seconds": stats.seconds,
                        "policy_seconds": stats.policy_seconds, "update_seconds": update_s,
                        "end_to_end_frames_per_s": stats.env_steps / (stats.seconds + update_s)})
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # as far as memory allows, said so
            row["note"] = f"failed: {type(err).__name__}: {str(err)[:120]}"
        finally:
            pool.close()
            torch.cuda.empty_cache()
        rows.append(row)
    return rows
