import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _vla(*args):
    return subprocess.run([sys.executable, "-m", "vla.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_bad_inputs_exit_2_with_a_message(tmp_path):
    run = _vla("config", "--policy", "pi9")
    assert run.returncode == 2 and "valid policies: diffusion, openvla, openvla_oft, pi0, residual" in run.stderr
    run = _vla("config", "train.stepz=1")
    assert run.returncode == 2 and "unknown config key 'train.stepz'" in run.stderr
    run = _vla("eval", "--ckpt", str(tmp_path / "missing"))
    assert run.returncode == 2 and "checkpoint directory not found" in run.stderr


def test_config_prints_resolved_yaml():
    run = _vla("config", "--policy", "openvla", "train.steps=5")
    assert run.returncode == 0
    assert "type: tokenized" in run.stdout and "steps: 5" in run.stdout
