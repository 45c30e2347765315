"""ManiSkill env throughput for `make bench`: env frames/s (N envs x steps / s) on PickCube-v1.

CPU rows always: N = 1 in this process and N = 2 worker processes (how eval and RL run ManiSkill on a CPU),
each with state-only observations (no rendering) and with both 128x128 RGB cameras rendered every step.
GPU rows when CUDA is present: ManiSkill's GPU-parallel simulation in one process, N = 1, 64, 512 (as far as
memory allows), state and RGB; without CUDA they are skipped with a note saying so.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

TASK = "PickCube-v1"
GPU_COUNTS = (1, 64, 512)
IMAGE = 128


def _frames_per_s(step: Callable[[], None], n: int, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - tic)


def _actions(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    a = torch.zeros(n, 7, device=device)
    a[:, 0] = 0.05  # a slow drift, gripper open: physics does real work, nothing blows up
    a[:, 6] = -1.0
    return a


def _in_process(n: int, backend: str, rgb: bool, steps: int) -> float:
    from sim.maniskill_vector import ManiSkillVectorEnv

    env = ManiSkillVectorEnv(TASK, n, IMAGE, max_steps=10**6, backend=backend, cameras=rgb)
    try:
        env.reset()
        actions = _actions(n, env.device)
        return _frames_per_s(lambda: env.step(actions, observe=rgb), n, steps)
    finally:
        env.close()


def _workers(n: int, steps: int) -> tuple[float, float]:
    """(state-only, rgb) frames/s through n worker processes stepping in lockstep."""
    from sim.maniskill_vector import make_vector_env

    env = make_vector_env(TASK, n, IMAGE, backend="cpu", max_steps=10**6)
    try:
        env.reset()
        actions = _actions(n).numpy()
        blind, look = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        state = _frames_per_s(lambda: env.step(actions, observe=blind), n, steps)
        rgb = _frames_per_s(lambda: env.step(actions, observe=look), n, max(steps // 10, 3))
        return state, rgb
    finally:
        env.close()


def _measured(row: dict, measure: Callable[[], float | tuple[float, float]], key: str = "frames_per_s") -> dict:
    """One row; a failure (a missing driver, memory) is written into it instead of ending the section."""
    try:
        row[key] = measure()
    except (torch.cuda.OutOfMemoryError, RuntimeError, ValueError) as err:
        row["note"] = f"failed: {type(err).__name__}: {str(err)[:160]}"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def bench_maniskill(steps: int = 100, gpu_counts: tuple[int, ...] = GPU_COUNTS) -> list[dict]:
    rows: list[dict] = []
    for rgb in (False, True):
        obs = f"rgb 2x{IMAGE}px" if rgb else "state"
        n_steps = steps if not rgb else max(steps // 10, 3)
        rows.append(_measured({"what": f"{TASK} CPU sim, N=1 (this process), {obs}", "backend": "cpu",
                               "num_envs": 1, "obs": obs}, lambda: _in_process(1, "cpu", rgb, n_steps)))
    pair = _measured({}, lambda: _workers(2, steps), "rates")
    for k, obs in enumerate(("state", f"rgb 2x{IMAGE}px")):
        row = {"what": f"{TASK} CPU sim, N=2 worker processes, {obs}", "backend": "cpu", "num_envs": 2, "obs": obs}
        row.update({"frames_per_s": pair["rates"][k]} if "rates" in pair else {"note": pair["note"]})
        rows.append(row)
    if not torch.cuda.is_available():
        rows.append({"what": f"GPU rows (N={', '.join(map(str, gpu_counts))}) skipped: no CUDA device on this "
                             "machine", "backend": "gpu"})
        return rows
    for n in gpu_counts:
        for rgb in (False, True):
            obs = f"rgb 2x{IMAGE}px" if rgb else "state"
            rows.append(_measured({"what": f"{TASK} GPU sim, N={n} (one process), {obs}", "backend": "gpu",
                                   "num_envs": n, "obs": obs}, lambda: _in_process(n, "gpu", rgb, steps)))
    return rows
