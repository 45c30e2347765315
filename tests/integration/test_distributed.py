"""The training entry point under torchrun: 2 processes (gloo on CPU), same command as one."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_train_and_checkpoint(synthetic_dataset, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vla.cli", "train",
           f"data.dataset={synthetic_dataset}", f"output_dir={tmp_path}", "backbone.image_size=32",
           "train.steps=4", "train.batch_size=4", "train.save_every=2", "train.torch_threads=1",
           "head.type=flow"]  # the flow head draws its noise and timesteps from each rank's stream
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "LATEST").read_text() == "step_0000004"
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 1  # only rank 0 logs (log_every=20 -> just the final step)
    # resumed from step 2 (its checkpoint copied alone into a fresh run), the same command ends with the same
    # weights: every rank's augmentation and noise stream continues as in the uninterrupted run
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "checkpoints" / "step_0000002", resumed / "checkpoints" / "step_0000002")
    (resumed / "checkpoints" / "LATEST").write_text("step_0000002")
    cmd = [c.replace(f"output_dir={tmp_path}", f"output_dir={resumed}") for c in cmd]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from" in run.stdout
    from safetensors.torch import load_file

    full = load_file(tmp_path / "checkpoints" / "step_0000004" / "model.safetensors")
    again = load_file(resumed / "checkpoints" / "step_0000004" / "model.safetensors")
    assert all((full[k] == again[k]).all() for k in full), "the resumed run's weights differ"
