"""`vla rl` under torchrun: two replicas (gloo on CPU), each with its own LIBERO worker, run GRPO
with rollout and learning overlapped; rank 0 logs every iteration over both replicas' episodes,
evaluates and checkpoints; with rl.fsdp the sharded learner trains and resumes. (That the replicas take the
single-process step is tests/test_rl_replicas.py, sharded or not tests/test_rl_sharded.py.)"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vla.checkpoint import load_policy, load_training_state
from test_rl_libero import ROOT, _checkpoint, _env

pytestmark = [pytest.mark.integration, pytest.mark.libero]


def test_two_replicas_run_grpo_and_rank_0_reports(tmp_path):
    ckpt = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "flow", "flow": {"steps": 3}})
    out = tmp_path / "rl"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vla.cli", "rl", "--policy", "pi0",
           "--ckpt", str(ckpt), f"output_dir={out}", "rl.max_steps=16", "rl.eval_episodes_per_task=2",
           "rl.torch_threads=1", "rl.workers=1", "rl.algo=grpo", "rl.iterations=2", "rl.episodes_per_iter=8",
           "rl.group_size=2", "rl.filter_groups=false", "rl.overlap=true"]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[rl] eval @ iteration") == 2  # rank 0 alone evaluates: before and after
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    # both replicas' episodes: 4 groups of 2 dealt over 2 ranks, 4 decisions (16 steps / chunk 4) each
    assert all(r["ranks"] == 2 and r["episodes"] == 8 and r["groups_kept"] == 4 for r in rows)
    assert all(r["env_frames"] == 8 * 16 and r["decisions"] == 16 and "pg_loss" in r for r in rows)
    summary = json.loads((out / "rl_summary.json").read_text())
    assert summary["before"]["episodes"] == summary["after"]["episodes"] == 2
    assert load_policy(out / "checkpoints" / "step_0000002").cfg.rl.algo == "grpo"


def test_sharded_learner_runs_ppo_and_resumes_its_adam_state(tmp_path):
    """rl.fsdp: the learner sharded over two replicas trains PPO (critic and flow head in the root unit,
    the backbone's layers each a unit); a second command resumes the checkpoint, its AdamW state loaded
    back into the shards, and runs one more iteration; the checkpoint is an ordinary one."""
    ckpt = _checkpoint(tmp_path / "bc" / "ckpt", {"type": "flow", "flow": {"steps": 3}})
    out = tmp_path / "rl"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"

    def run(iterations: int) -> subprocess.CompletedProcess:
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vla.cli", "rl", "--policy", "pi0",
               "--ckpt", str(ckpt), f"output_dir={out}", "rl.max_steps=16", "rl.eval_episodes_per_task=2",
               "rl.torch_threads=1", "rl.workers=1", "rl.algo=ppo", f"rl.iterations={iterations}",
               "rl.episodes_per_iter=2", "rl.epochs=1", "rl.target_kl=null", "rl.fsdp=true"]
        done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run(1)
    first = load_training_state(out / "checkpoints" / "step_0000001")[0]
    moments = [k for k in first if k.endswith("/exp_avg")]
    assert moments, "no AdamW state in the sharded run's checkpoint"
    resumed = run(2)
    assert "resumed from" in resumed.stdout
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(r["ranks"] == 2 and r["episodes"] == 2 and r["gradient_steps"] >= 1 for r in rows)
    second = load_training_state(out / "checkpoints" / "step_0000002")[0]
    # the resumed optimizer went on from the loaded moments: every one of them stepped twice
    assert all(int(second[k.replace("exp_avg", "step")]) == 2 for k in moments)
    policy = load_policy(out / "checkpoints" / "step_0000002")
    assert policy.cfg.rl.fsdp and policy.value_head is not None
