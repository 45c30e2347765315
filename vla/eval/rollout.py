"""Roll a policy out in an env: action chunks executed open-loop for `replan_steps`, then replan."""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sim.base import Env, Observation
from vla.eval.stats import wilson_interval


@dataclass
class EpisodeResult:
    init_state: int
    success: bool
    steps: int
    seconds: float


def observation_batch(obs: Observation, cameras: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [c for c in cameras if c not in obs.images]
    if missing:
        raise KeyError(f"policy needs cameras {missing}; the env gives {sorted(obs.images)}")
    images = torch.from_numpy(np.stack([obs.images[c] for c in cameras]))[None]
    return images, torch.from_numpy(np.asarray(obs.state, dtype=np.float32))[None]


def run_episode(policy, env: Env, init_state: int, replan_steps: int, seed: int = 7) -> EpisodeResult:
    cameras = policy.cfg.data.cameras
    # heads that sample from noise (flow, diffusion) draw it from here: an episode replays exactly
    noise = torch.Generator().manual_seed(seed * 1_000_003 + init_state)
    tic = time.perf_counter()
    obs = env.reset(init_state)
    queue: deque[np.ndarray] = deque()
    for step in range(env.max_steps):
        if not queue:
            images, state = observation_batch(obs, cameras)
            chunk = policy.act(images, state, [obs.instruction], noise)[0]
            queue.extend(np.clip(chunk[:replan_steps], -1.0, 1.0))
        action = queue.popleft()
        result = env.step(action, observe=not queue)  # only the frame the next chunk is planned from
        obs = result.observation
        if result.done:
            return EpisodeResult(init_state, True, step + 1, time.perf_counter() - tic)
    return EpisodeResult(init_state, False, env.max_steps, time.perf_counter() - tic)


def summarize(results: list[EpisodeResult]) -> dict:
    n = len(results)
    wins = sum(r.success for r in results)
    low, high = wilson_interval(wins, n)
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "ci95": [low, high],
        "mean_steps": float(np.mean([r.steps for r in results])) if n else 0.0,
        "seconds": float(sum(r.seconds for r in results)),
    }


def evaluate(policy, env: Env, episodes: int, replan_steps: int, first_init_state: int = 0,
             out_json: Path | None = None, log=print, seed: int = 7) -> dict:
    """Episodes from init states first_init_state, +1, ...; the summary (and every episode) is
    written as JSON."""
    if replan_steps < 1 or replan_steps > policy.cfg.head.chunk_size:
        raise ValueError(f"eval.replan_steps must be in 1..{policy.cfg.head.chunk_size}, got {replan_steps}")
    results = []
    for i in range(episodes):
        results.append(run_episode(policy, env, first_init_state + i, replan_steps, seed))
        r = results[-1]
        wins = sum(x.success for x in results)
        log(f"[eval] episode {i + 1}/{episodes} init_state={r.init_state} success={r.success} steps={r.steps} "
            f"({r.seconds:.1f}s) running success {wins}/{len(results)}")
    summary = {"task": env.task_name, "instruction": env.instruction, **summarize(results),
               "episodes_detail": [asdict(r) for r in results]}
    if out_json is not None:
        out_json.write_text(json.dumps(summary, indent=2))
    return summary
