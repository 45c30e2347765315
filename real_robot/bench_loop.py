"""Control-loop timing for `make bench`: the deployment loop at 15 Hz against the MuJoCo stand-in,
with a tiny policy served by `vla serve` in its own process (as in deployment), two 128x128
rendered cameras, the safety layer and the episode recorder all on.

Reported: the tick period and its jitter |period - 1/rate| (p50/p99), the loop's busy time per tick
(observe + render + act + queue the frame), the policy round trip, holds and overruns.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np


def _tiny_checkpoint(directory: Path) -> Path:
    import torch

    from vla.checkpoint import norm_specs, save_policy
    from vla.config import ExperimentConfig, merge
    from vla.model import Policy
    from vla.normalize import Normalizer, compute_stats

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 64}, "head": {"chunk_size": 8}})
    stats = {"action": compute_stats(rng.normal(scale=0.3, size=(64, 7)), "action"),
             "state": compute_stats(rng.normal(size=(64, 8)), "state")}
    save_policy(Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval(), directory)
    return directory


def bench_control_loop(ticks: int, rate_hz: float = 15.0, image_size: int = 128) -> list[dict]:
    from real_robot.cameras import SimCamera
    from real_robot.client import PolicyClient
    from real_robot.control_loop import ControlLoop, LoopConfig
    from real_robot.policy_link import PolicyLink
    from real_robot.recorder import EpisodeRecorder
    from real_robot.sim_panda import SimPanda

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _tiny_checkpoint(Path(tmp) / "ckpt")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        server = subprocess.Popen([sys.executable, "-m", "vla.cli", "serve", "--ckpt", str(ckpt), "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        robot = SimPanda(control_hz=rate_hz)
        link = None
        try:
            line = ""
            while not line.startswith("[serve]"):
                line = server.stdout.readline()
                if not line:
                    raise RuntimeError("vla serve exited before it was ready")
            port = int(line.split(":")[-1].split()[0])
            link = PolicyLink(lambda: PolicyClient(port=port, timeout_s=2.0))
            link.start(wait_s=60)
            robot.connect()
            cams = {n: SimCamera(robot, n, image_size, image_size) for n in ("agentview", "wrist")}
            recorder = EpisodeRecorder(Path(tmp) / "episode", rate_hz, image_size, list(cams), "bench",
                                       use_videos=False)
            cfg = LoopConfig(rate_hz=rate_hz, replan_every=4, max_steps=ticks, task="pick up the cube",
                             image_size=image_size)
            loop = ControlLoop(robot, cams, link, cfg, lambda *a, **k: None, recorder=recorder)
            loop.warm_up(60)
            stats = loop.run_episode(threading.Event())
            recorder.end_episode()
            recorder.close()
        finally:
            if link is not None:
                link.stop()
            robot.disconnect()
            server.kill()
            server.wait()
    s = stats.summary(1.0 / rate_hz)
    return [{"what": f"control loop {rate_hz:g} Hz, MuJoCo stand-in, 2 cameras {image_size}x{image_size}, "
                     f"tiny policy via `vla serve`, {s['ticks']} ticks",
             "jitter_ms_p50": s["jitter_ms_p50"], "jitter_ms_p99": s["jitter_ms_p99"],
             "period_ms_p50": s["period_ms_p50"], "period_ms_p99": s["period_ms_p99"],
             "busy_ms_p50": s["busy_ms_p50"], "busy_ms_p99": s["busy_ms_p99"],
             "round_trip_ms_p50": s["round_trip_ms_p50"], "holds": s["holds"], "overruns": s["overruns"]}]


if __name__ == "__main__":
    from vla.bench import _table

    print(_table(bench_control_loop(int(sys.argv[1]) if len(sys.argv) > 1 else 150)))
