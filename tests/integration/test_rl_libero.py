"""`vla rl` against real LIBERO workers with tiny random policies: PPO killed with SIGKILL after
its first RL checkpoint and started again finishes every iteration exactly once, with the
before/after evaluation, log, learning curve and a loadable checkpoint; GRPO over a frozen-base
residual runs end to end too, and off-policy TD3 on a residual resumes after SIGKILL with its replay buffer;
`vla rl-noise` measures a gradient noise scale on real rollouts. (Learning itself is shown by the RL benchmark,
not here.)"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.checkpoint import load_policy, save_policy
from vla.random_policy import random_policy

pytestmark = [pytest.mark.integration, pytest.mark.libero]
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["rl.max_steps=16", "rl.eval_episodes_per_task=2", "rl.torch_threads=1", "rl.workers=2"]


def _checkpoint(path: Path, head: dict) -> Path:
    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4, **head},
                               "demos": {"image_size": 64}, "output_dir": str(path.parent)}), path)
    return path


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _rl(ckpt: Path, out: Path, *args: str, policy: str = "pi0") -> list[str]:
    return [sys.executable, "-m", "vla.cli", "rl", "--policy", policy, "--ckpt", str(ckpt), f"output_dir={out}",
            *SMALL, *args]


def _kill_after_first_checkpoint(cmd: list[str], out: Path) -> None:
    """Start `vla rl` and SIGKILL it as soon as its first RL checkpoint exists."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while not (out / "checkpoints" / "LATEST").exists():
        assert proc.poll() is None, "RL exited before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_ppo_killed_and_resumed_runs_every_iteration_once(tmp_path):
    ckpt = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "flow", "flow": {"steps": 3}})
    out = tmp_path / "rl"
    cmd = _rl(ckpt, out, "rl.algo=ppo", "rl.iterations=3", "rl.episodes_per_iter=4", "rl.critic_warmup=1")
    _kill_after_first_checkpoint(cmd, out)
    assert (out / "checkpoints" / "LATEST").read_text().strip() != "step_0000003"

    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resumed from" in done.stdout
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert "pg_loss" not in rows[0] and "pg_loss" in rows[1]  # critic warm-up: iteration 1 trains the critic only
    assert all(r["episodes"] == 4 and r["decisions"] == 16 for r in rows)  # 16 steps / chunks of 4, per episode
    summary = json.loads((out / "rl_summary.json").read_text())
    assert summary["before"]["episodes"] == summary["after"]["episodes"] == 2
    assert set(summary["evals"]) == {"0", "3"} and (out / "learning_curve.png").stat().st_size > 1000
    policy = load_policy(out / "checkpoints" / "step_0000003")
    assert policy.value_head is not None and policy.cfg.rl.algo == "ppo"


def test_grpo_on_a_frozen_base_residual_with_rollout_and_learning_overlapped(tmp_path):
    base = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "oft"})
    out = tmp_path / "rl"
    done = subprocess.run(_rl(base, out, "rl.algo=grpo", "rl.iterations=2", "rl.episodes_per_iter=4",
                              "rl.group_size=2", "rl.filter_groups=false", "rl.overlap=true", policy="residual"),
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]  # every update finished and logged, in order
    assert all(r["groups_kept"] == 2 and r["decisions"] == 16 and "pg_loss" in r for r in rows)
    policy = load_policy(out / "checkpoints" / "step_0000002")
    bc = load_policy(base)
    assert policy.cfg.head.type == "residual" and policy.value_head is None
    for name, value in bc.backbone.state_dict().items():  # the base stayed frozen
        assert torch.equal(value, policy.backbone.state_dict()[name])


def test_td3_residual_killed_and_resumed_keeps_its_replay_buffer(tmp_path):
    """Off-policy residual RL: the replay buffer, critics and targets survive a SIGKILL with the policy."""
    base = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "oft"})
    out = tmp_path / "rl"
    cmd = _rl(base, out, "rl.algo=td3", "rl.iterations=2", "rl.episodes_per_iter=2", "rl.lr=1e-3",
              "rl.td3.updates_per_iter=20", "rl.td3.batch_size=8", policy="residual")
    _kill_after_first_checkpoint(cmd, out)
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    # 2 episodes x 16 steps / chunks of 4 = 8 decisions per iteration; the resumed run kept iteration 1's
    assert [r["decisions"] for r in rows] == [8, 8] and [r["replay_size"] for r in rows] == [8.0, 16.0]
    assert all(np.isfinite(r["critic_loss"]) and "actor_loss" in r for r in rows)
    policy = load_policy(out / "checkpoints" / "step_0000002")
    assert policy.cfg.rl.algo == "td3" and float(policy.head.mean_net[-1].weight.detach().abs().sum()) > 0  # the actor moved
    bc = load_policy(base)
    for name, value in bc.head.state_dict().items():  # the base head stayed frozen
        assert torch.equal(value, policy.head.base.state_dict()[name])


def test_rl_noise_measures_the_gradient_noise_scale_of_real_rollouts(tmp_path):
    """`vla rl-noise` rolls out one GRPO plan in LIBERO and reports B for both baselines and every parameter
    group; the dense reward makes every return differ, so every group carries a gradient."""
    ckpt = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "oft", "oft_output": "tokens"})
    done = subprocess.run([sys.executable, "-m", "vla.cli", "rl-noise", "--policy", "openvla_oft", "--ckpt", str(ckpt),
                           "--out", str(tmp_path / "noise"), "rl.max_steps=16", "rl.torch_threads=1", "rl.workers=2",
                           "rl.episodes_per_iter=8", "rl.group_size=2", "rl.reward=dense", "head.learn_temperature=true"],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "noise" / "noise_scale.json").read_text())
    assert report["episodes"] == 8 and report["group_size"] == 2 and report["env_frames"] == 8 * 16
    rows = {(r["reward"], r["baseline"], r["parameters"]): r for r in report["results"]}
    # the dense reward, and plain success on the same episodes
    assert set(rows) == {(w, b, p) for w in ("dense", "success") for b in ("group", "batch") for p in ("actor", "temperature")}
    assert rows["dense", "group", "temperature"]["numel"] == 7
    for r in rows.values():
        assert r["units"] == 4 and np.isfinite(r["signal"]) and (r["noise"] > 0 or r["reward"] == "success")
    assert report["return_by_outcome"]["failure"][0] < 1  # none succeeds in 16 steps; no success credit
    assert "| dense | group | actor" in done.stdout and (tmp_path / "noise" / "noise_scale.md").exists()
    # the saved Gram matrices give the same report again without a simulator
    again = subprocess.run([sys.executable, "-m", "vla.cli", "rl-noise", "--from", str(tmp_path / "noise")],
                           env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "noise" / "noise_scale.json").read_text())["results"] == report["results"]
