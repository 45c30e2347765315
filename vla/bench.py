"""`make bench`: measurements written as a markdown table (bench_results/results.md) + JSON.

Everything in one table is measured in the same run, side by side, so ratios are meaningful on a
noisy machine. Torch uses a fixed thread count (2) so results do not depend on the default.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _rate(fn, count: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    tic = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - tic)


def bench_env_steps(steps: int) -> list[dict]:
    """One LIBERO env with two 128x128 cameras vs bare robosuite Lift (Panda, OSC_POSE)."""
    from sim import make_env

    rows = []
    env = make_env("libero", "libero_spatial", 0, image_size=128, max_steps=10_000)  # both rows in one episode
    env.reset(0)
    noop = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
    rows.append({"what": "LIBERO libero_spatial/0, 2 cameras 128x128", "steps_per_s": _rate(lambda: env.step(noop), steps)})
    count = iter(range(10**9))  # a chunked policy (8 actions per chunk) looks at one frame in eight
    rows.append({"what": "same, rendering 1 step in 8 (what eval/RL do with 8-action chunks)",
                 "steps_per_s": _rate(lambda: env.step(noop, observe=next(count) % 8 == 7), steps)})
    rows[1]["speedup"] = rows[1]["steps_per_s"] / rows[0]["steps_per_s"]
    env.close()

    import robosuite
    from robosuite import load_controller_config

    for cams in (("agentview", "robot0_eye_in_hand"), ()):
        rs = robosuite.make("Lift", robots="Panda", controller_configs=load_controller_config(default_controller="OSC_POSE"),
                            has_renderer=False, has_offscreen_renderer=bool(cams), use_camera_obs=bool(cams),
                            camera_names=list(cams) or "agentview", camera_heights=128, camera_widths=128,
                            horizon=100_000)
        rs.reset()
        label = f"robosuite Lift, {len(cams)} cameras" + (" 128x128" if cams else "")
        rows.append({"what": label, "steps_per_s": _rate(lambda: rs.step(noop), steps)})
        rs.close()
    return rows


def bench_workers(steps: int, counts: tuple[int, ...] = (1, 2)) -> list[dict]:
    """LIBERO env steps/s through sweep worker processes (shared-memory observations), 1..N workers
    stepping in lockstep as the sweep does; the one-process row above is the no-IPC baseline."""
    from sim.worker import EnvSpec, EnvWorker

    spec = EnvSpec("libero", "libero_spatial", 0, 128, 10_000)
    noop = [0, 0, 0, 0, 0, 0, -1]
    rows = []
    for n, every in [(n, 1) for n in counts] + [(n, 8) for n in counts]:
        workers = [EnvWorker(128) for _ in range(n)]
        tick = iter(range(10**9))
        try:
            for w in workers:
                w.reset(spec, 0)

            def lockstep():
                look = next(tick) % every == every - 1
                for w in workers:
                    w.send({"cmd": "step", "action": noop, "observe": look})
                for w in workers:
                    w.receive()
                    w.observation()

            what = f"{n} worker process(es), 2 cameras 128x128" + (f", rendering 1 step in {every}" if every > 1 else "")
            rows.append({"what": what, "steps_per_s": n * _rate(lockstep, steps)})
        finally:
            for w in workers:
                w.close()
    for row in rows:  # against one worker with the same rendering
        base = next(r for r in rows if r["what"].startswith("1 ") and ("1 step in" in r["what"]) == ("1 step in" in row["what"]))
        row["scaling_vs_1"] = row["steps_per_s"] / base["steps_per_s"]
    return rows


def bench_sweep(episodes: int, max_steps: int, workers: int = 2) -> list[dict]:
    """A real sweep (tiny random OFT policy, libero_spatial tasks 0-1, `workers` env processes): where its
    wall time goes, and what the sweep itself costs beyond env construction/reset, simulation and policy."""
    import tempfile

    from vla.eval.sweep import Protocol, run_sweep
    from vla.random_policy import random_policy

    policy = random_policy({"backbone": {"image_size": 64}})
    protocol = Protocol(episodes_per_task=episodes, max_steps=max_steps, videos_per_outcome=0)
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        stats = run_sweep(policy, {"libero_spatial": [0, 1]}, Path(tmp) / "sweep", protocol, workers, progress=False)
        wall = time.perf_counter() - tic
    return [{"what": f"sweep: 2 tasks x {episodes} episodes x {max_steps} steps, {workers} workers", "wall_s": wall,
             "reset_s": stats["reset_seconds"], "sim_s": stats["sim_seconds"], "policy_s": stats["policy_seconds"],
             "sweep_overhead_s": stats["overhead_seconds"], "overhead_pct": 100 * stats["overhead_seconds"] / wall}]


def _timed_ms(fn) -> float:
    tic = time.perf_counter()
    fn()
    return (time.perf_counter() - tic) * 1000


def _median_ms(fn, count: int, warmup: int = 2) -> float:
    return float(np.median([_timed_ms(fn) for _ in range(warmup + count)][warmup:]))


def _main_vs_worker_thread_ms(fn, repeats: int) -> tuple[float, float]:
    """Median ms of `fn` on this thread and on one long-lived worker thread, alternating call by
    call so both see the same machine load."""
    from concurrent.futures import ThreadPoolExecutor

    main, worker = [], []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for i in range(repeats + 2):
            here, there = _timed_ms(fn), pool.submit(_timed_ms, fn).result()
            if i >= 2:  # warm-up: the worker thread's first calls build its own OpenMP team
                main.append(here)
                worker.append(there)
    return float(np.median(main)), float(np.median(worker))


def bench_server(repeats: int) -> list[dict]:
    """Policy server round trip on loopback vs the same inference called directly: two 224x224
    cameras, the tiny OFT policy. The server is its own process (`vla serve`), as in deployment;
    in-process it would share the GIL with the client and measure that instead."""
    import subprocess
    import sys
    import tempfile

    from real_robot.client import PolicyClient
    from real_robot.server import policy_infer
    from vla.checkpoint import norm_specs, save_policy
    from vla.config import ExperimentConfig
    from vla.model import Policy
    from vla.normalize import Normalizer, compute_stats

    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(64, 7)), "action"), "state": compute_stats(rng.normal(size=(64, 8)), "state")}
    cfg = ExperimentConfig()
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()
    infer = policy_infer(policy)
    obs = {"observation/image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           "observation/wrist_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
           "observation/state": np.zeros(8, np.float32), "prompt": "put the bowl on the plate"}
    direct_ms, thread_ms = _main_vs_worker_thread_ms(lambda: infer(obs), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        save_policy(policy, Path(tmp) / "ckpt")
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        proc = subprocess.Popen([sys.executable, "-m", "vla.cli", "serve", "--ckpt", str(Path(tmp) / "ckpt"), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            line = ""
            while not line.startswith("[serve]"):
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("vla serve exited before it was ready")
            client = PolicyClient(port=int(line.split(":")[-1].split()[0]))
            # call by call, alternating: the same inference here and through the server, so both see the same load
            here, served, inside = [], [], []
            for i in range(repeats + 2):
                d = _timed_ms(lambda: infer(obs))
                tic = time.perf_counter()
                reply = client.infer(obs)
                s_ms = (time.perf_counter() - tic) * 1000
                if i >= 2:  # warm-up
                    here.append(d)
                    served.append(s_ms)
                    inside.append(reply["server_timing"]["infer_ms"])
            client.close()
        finally:
            proc.kill()
            proc.wait()
    here_a, served_a, inside_a = np.array(here), np.array(served), np.array(inside)
    return [{"what": "inference called directly", "ms": direct_ms},
            {"what": "the same on one worker thread (as the server runs it), interleaved with the row above",
             "ms": thread_ms, "vs_direct": thread_ms / direct_ms},
            {"what": "called directly / through `vla serve` (own process, loopback, msgpack, 2 x 224x224 images), "
                     "interleaved call by call (medians)",
             "ms": float(np.median(here_a)), "served_ms": float(np.median(served_a)),
             "served_minus_direct_ms": float(np.median(served_a - here_a)),
             "server_side_infer_ms": float(np.median(inside_a)),
             "wire_ms": float(np.median(served_a - inside_a))}]


HEAD_VARIANTS = {  # label -> head overrides; all on the same tiny backbone, same 8x7 chunk
    "oft (L1, parallel)": {"type": "oft"},
    "oft (bin tokens, parallel)": {"type": "oft", "oft_output": "tokens"},
    "tokenized (autoregressive)": {"type": "tokenized"},
    "flow (10 Euler steps, cached prefix)": {"type": "flow"},
    "diffusion (10 DDIM steps, cached prefix)": {"type": "diffusion"},
    "residual (over oft)": {"type": "residual"},
}


def bench_heads(repeats: int, backbone: str = "tiny_paligemma", image_size: int = 64) -> list[dict]:
    """Every head on the same tiny backbone and chunk, side by side; plus the cost of one full
    forward pass (images + prompt + proprio + 8 suffix tokens) as the unit for denoising heads."""
    from vla.checkpoint import norm_specs
    from vla.config import ExperimentConfig, merge
    from vla.model import Policy
    from vla.normalize import Normalizer, compute_stats

    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(64, 7)), "action"), "state": compute_stats(rng.normal(size=(64, 8)), "state")}
    images = torch.randint(0, 255, (1, 2, 128, 128, 3), dtype=torch.uint8)
    state = torch.zeros(1, 8)
    instruction = ["pick up the black bowl between the plate and the ramekin and place it on the plate"]

    def policy_for(head: dict) -> Policy:
        torch.manual_seed(0)
        cfg = merge(ExperimentConfig(), {"head": {**head, "chunk_size": 8},
                                         "backbone": {"name": backbone, "image_size": image_size}})
        return Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()

    base = policy_for({"type": "oft"})
    suffix = torch.zeros(1, 8, base.backbone.hidden_size)

    @torch.no_grad()
    def full_pass():
        base.build_prefix(images, state, instruction).run_with_suffix(suffix, causal_suffix=False)

    rows, references = [], []
    for label, head in HEAD_VARIANTS.items():
        policy = policy_for(head)
        # each head call right after a reference pass, so the ratio sees the same machine load (medians)
        pairs = [(_timed_ms(full_pass), _timed_ms(lambda: policy.act(images, state, instruction)))
                 for _ in range(repeats + 2)][2:]
        full, act = np.array(pairs).T
        references += list(full)
        ms = float(np.median(act))
        rows.append({"what": f"{label}, {backbone} {image_size}px, chunk 8x7", "ms_per_chunk": ms,
                     "actions_per_s": 8000 / ms, "full_passes": float(np.median(act / full)),
                     "full_passes_iqr": "-".join(f"{q:.2f}" for q in np.percentile(act / full, [25, 75]))})
    return [{"what": "one full forward pass (reference, all interleaved calls)", "ms_per_chunk": float(np.median(references))},
            *rows]


def _control_loop(ticks: int) -> list[dict]:
    from real_robot.bench_loop import bench_control_loop

    return bench_control_loop(ticks)


def _table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run_all(out: Path, quick: bool = False, only: list[str] | None = None) -> dict:
    """Every section (or those named in `only`) -> out/results.md and results.json."""
    from vla.bench_maniskill import bench_maniskill
    from vla.rl.bench import bench_rl, bench_rl_maniskill

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    sections = {  # name -> (title, measurement)
        "env_steps": ("Env steps/s (one process)", lambda: bench_env_steps(20 if quick else 200)),
        "workers": ("Sweep workers: env steps/s through worker processes (lockstep, shared memory)",
                    lambda: bench_workers(20 if quick else 200, tuple(sorted({1, 2, os.cpu_count() or 2})))),
        "sweep": ("Sweep: wall time split, and the sweep's own overhead beyond reset + simulation + policy",
                  lambda: bench_sweep(1 if quick else 3, 24 if quick else 96)),
        "heads": ("Action heads: latency per chunk, actions/s, cost in full forward passes (batch 1, CPU, 2 threads)",
                  lambda: bench_heads(2 if quick else 20)),
        "server": ("Policy server round trip (loopback)", lambda: bench_server(5 if quick else 50)),
        "control_loop": ("Deployment control loop: period jitter against the MuJoCo stand-in",
                         lambda: _control_loop(45 if quick else 300)),
        # the same comparison where compute dominates: 2 x 196 image tokens, width 512, 8 layers
        "heads_small": ("Action heads on small_paligemma (random weights, ~28M, 224 px): compute-bound",
                        lambda: bench_heads(1 if quick else 5, "small_paligemma", 224)),
        "rl": ("RL throughput (env frames/s, LIBERO, 2 workers)", lambda: bench_rl(4 if quick else 8, 32 if quick else 64)),
        "rl_maniskill": ("RL rollout throughput in ManiSkill (env frames/s): worker process vs rl.batched_envs; "
                         "GPU-parallel when CUDA is present", lambda: bench_rl_maniskill(16 if quick else 48)),
        "maniskill": ("ManiSkill3 env frames/s (PickCube-v1; CPU always, GPU-parallel when CUDA is present)",
                      lambda: bench_maniskill(20 if quick else 100)),
    }
    unknown = sorted(set(only or []) - set(sections))
    if unknown:
        raise ValueError(f"unknown bench section(s) {unknown}; valid: {', '.join(sections)}")
    results = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.cuda.is_available()}}
    md = ["# Benchmark results", "", f"Machine: {results['machine']}", ""]
    for name, (title, measure) in sections.items():
        if only and name not in only:
            continue
        results[name] = measure()
        md += [f"## {title}", "", _table(results[name]), ""]
        # after every section: a run stopped part way (a time limit, a crash) keeps what it measured
        (out / "results.md").write_text("\n".join(md))
        (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(md))
    return results
