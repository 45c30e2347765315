"""The main job, shrunk: scripted demos in LIBERO -> a few BC steps -> eval in LIBERO, via the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.libero]
ROOT = Path(__file__).resolve().parents[2]


def test_finetune_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vla.cli", "finetune", "--policy", "openvla_oft", "--sim", "libero",
           f"output_dir={out}", f"demos.root={tmp_path / 'demos'}", "demos.episodes_per_task=1",
           "train.steps=3", "train.batch_size=8", "train.torch_threads=1", "eval.episodes=1", "eval.max_steps=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((out / "checkpoints" / "step_0000003" / "eval.json").read_text())
    assert report["episodes"] == 1 and report["tasks"]["libero_spatial/0"]["episodes_detail"][0]["steps"] <= 16
    assert "[result] success" in run.stdout
    # the resolved config is printed at start and saved with the checkpoint
    assert "resolved config" in run.stdout
    saved = json.loads((out / "checkpoints" / "step_0000003" / "config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["head"]["type"] == "oft"
