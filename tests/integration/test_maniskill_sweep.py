"""`vla sweep --suite maniskill`: the sweep runner (the same code path as LIBERO's) on real ManiSkill worker
processes, from a ManiSkill checkpoint of an untrained policy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla.checkpoint import save_policy
from vla.eval.sweep import EPISODES_FILE, Protocol, read_results, run_sweep
from vla.random_policy import random_policy

pytestmark = [pytest.mark.integration, pytest.mark.maniskill]
ROOT = Path(__file__).resolve().parents[2]


def test_cli_sweep_runs_maniskill_episodes_on_maniskill_workers(tmp_path):
    policy = random_policy({"sim": "maniskill", "backbone": {"image_size": 32}, "head": {"chunk_size": 4},
                            "demos": {"suite": "maniskill", "image_size": 32}, "eval": {"replan_steps": 4}})
    save_policy(policy, tmp_path / "ckpt")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "vla.cli", "sweep", "--ckpt", str(tmp_path / "ckpt"), "--suite", "maniskill",
           "--tasks", "PushCube", "--episodes", "2", "--max-steps", "6", "--workers", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    rows = [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == ["maniskill/2/0", "maniskill/2/1"]  # PushCube-v1, init states 0, 1
    for r in rows:
        assert r["status"] == "ok" and r["attempts"] == 1 and r["suite"] == "maniskill" and r["task"] == 2
        assert r["steps"] == 6 or r["success"]  # --max-steps bounds the episode
    saved = json.loads((out / "protocol.json").read_text())
    assert saved["suites"] == {"maniskill": [2]} and saved["protocol"]["max_steps"] == 6
    assert saved["protocol"]["image_size"] == 32

    summary = json.loads((out / "results.json").read_text())
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["errors"] == 0
    assert set(summary["suites"]) == {"maniskill"} and set(summary["tasks"]) == {"maniskill/2"}
    assert summary["run"]["restarts"] == 0
    report = (out / "report.md").read_text()
    assert "| maniskill |" in report and (out / "suite_maniskill.png").stat().st_size > 1000
    videos = [r["video"] for r in rows if r["video"]]  # up to 2 per task and outcome, rendered by the worker
    assert videos and all((out / v).stat().st_size > 0 for v in videos)
    assert "[sweep] " in run.stdout and "report:" in run.stdout


def test_max_steps_default_to_the_maniskill_tasks_own(tmp_path):
    """Protocol.max_steps=None: each episode runs ManiSkill's per-task budget (sim.maniskill.TASKS), the value
    ManiSkillEnv picks; the simulator comes from the suite (run_sweep's sim_name left out)."""
    from sim.maniskill import TASKS

    policy = random_policy({"sim": "maniskill", "backbone": {"image_size": 32}, "head": {"chunk_size": 4}})
    protocol = Protocol(episodes_per_task=1, replan_steps=4, image_size=32, videos_per_outcome=0)
    stats = run_sweep(policy, {"maniskill": [3]}, tmp_path, protocol, workers=1, progress=False)
    (row,) = read_results(tmp_path).values()
    assert stats["restarts"] == 0 and row["key"] == "maniskill/3/0" and row["status"] == "ok"
    assert TASKS[3].env_id == "PullCube-v1" and TASKS[3].max_steps == 80
    assert row["steps"] == 80 or row["success"]
