"""`vla rl ... rl.ray=<address>`: a local Ray cluster started here (2 CPUs), the RL driver a separate
process connecting by address, rollouts on 2 Ray actors of 1 LIBERO worker each, the learner in the
driver. Every planned episode must come back once, whole, and be learned from."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla.checkpoint import load_policy, save_policy
from vla.random_policy import random_policy

pytestmark = [pytest.mark.integration, pytest.mark.libero]
ROOT = Path(__file__).resolve().parents[2]


def test_grpo_rollouts_on_two_ray_actors_feed_the_local_learner(ray_address, tmp_path):
    ckpt = tmp_path / "bc" / "ckpt"
    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4, "oft_output": "tokens"},
                               "demos": {"image_size": 64}, "output_dir": str(tmp_path / "bc")}), ckpt)
    out = tmp_path / "rl"
    cmd = [sys.executable, "-m", "vla.cli", "rl", "--policy", "openvla_oft", "--ckpt", str(ckpt), f"output_dir={out}",
           "rl.algo=grpo", "rl.iterations=2", "rl.episodes_per_iter=4", "rl.group_size=2", "rl.filter_groups=false",
           "rl.max_steps=16", "rl.eval_episodes_per_task=1", "rl.workers=1", "rl.torch_threads=1",
           f"rl.ray={ray_address}", "rl.ray_actors=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 rollout actor(s) of 1 env workers" in done.stdout
    rows = [json.loads(line) for line in (out / "rl_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    # 4 episodes x 16 steps / chunks of 4, both groups kept, learned from in the driver
    assert all(r["episodes"] == 4 and r["decisions"] == 16 and r["groups_kept"] == 2 and "pg_loss" in r for r in rows)
    assert all(r["restarts"] == 0 and r["dropped"] == 0 for r in rows)
    assert load_policy(out / "checkpoints" / "step_0000002").cfg.rl.ray == ray_address

