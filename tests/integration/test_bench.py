"""`make bench` sections run end to end (quick repetitions) and write the table the README quotes: the heads
with their interleaved full-pass ratio, the server interleaved call by call with direct inference, and the
LIBERO RL throughput with the same rollout alternating and overlapped."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.libero]


def test_quick_bench_writes_every_requested_section(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "vla.cli", "bench", "--quick", "--only", "heads,server,rl",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"machine", "heads", "server", "rl"}
    reference, *heads = results["heads"]
    assert reference["ms_per_chunk"] > 0 and len(heads) == 6
    assert all(h["full_passes"] > 0 and h["actions_per_s"] > 0 for h in heads)
    served = results["server"][-1]
    assert served["served_ms"] > 0 and served["server_side_infer_ms"] > 0 and served["wire_ms"] > 0
    rollout, sequential, overlapped = results["rl"]
    assert "torch thread" in rollout["what"] and rollout["env_frames_per_s"] > 0
    assert sequential["update_seconds"] > 0 and overlapped["update_seconds"] > 0
    assert "## Policy server round trip" in (tmp_path / "results.md").read_text()
