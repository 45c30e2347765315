"""Train a few steps, SIGKILL the process after its first checkpoint, start the same command again:
the final weights and optimizer state equal those of an uninterrupted run, bit for bit."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cmd(dataset, out):
    return [sys.executable, "-m", "vla.cli", "train", f"data.dataset={dataset}", f"output_dir={out}",
            "backbone.image_size=32", "train.steps=12", "train.save_every=3", "train.batch_size=8",
            "train.warmup_steps=2", "train.torch_threads=1", "train.keep_last=10"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_kill_and_resume_matches_uninterrupted(synthetic_dataset, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cmd(synthetic_dataset, full), check=True, env=_env(), cwd=ROOT, capture_output=True)

    proc = subprocess.Popen(_cmd(synthetic_dataset, cut), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "LATEST").exists():
        assert proc.poll() is None, "training exited before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = (cut / "checkpoints" / "LATEST").read_text().strip()
    assert killed_at != "step_0000012", "the run finished before it could be killed"

    resumed = subprocess.run(_cmd(synthetic_dataset, cut), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout

    for name in ("model.safetensors", "train_state.safetensors"):
        a = load_file(str(full / "checkpoints" / "step_0000012" / name))
        b = load_file(str(cut / "checkpoints" / "step_0000012" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] == b[key]).all(), f"{name}:{key} differs after resume from {killed_at}"
