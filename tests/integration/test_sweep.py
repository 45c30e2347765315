"""Evaluation sweeps against real LIBERO worker processes: a worker that segfaults or hangs
mid-episode is replaced and its episode re-run (never counted twice or as a failure), and a sweep
killed with SIGKILL and started again finishes exactly the missing episodes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vla.checkpoint import save_policy
from vla.eval.report import write_report
from vla.eval.sweep import EPISODES_FILE, Protocol, read_results, resolve_suites, run_sweep
from vla.random_policy import random_policy

pytestmark = [pytest.mark.integration, pytest.mark.libero]
ROOT = Path(__file__).resolve().parents[2]
SMALL = Protocol(episodes_per_task=2, max_steps=12, replan_steps=4, image_size=64)


@pytest.fixture(scope="module")
def policy():
    return random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4},
                          "demos": {"image_size": 64}, "eval": {"replan_steps": 4}})


def _rows(out: Path) -> list[dict]:
    rows = []
    for line in (out / EPISODES_FILE).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill
            pass
    return rows


def test_the_130_tasks_come_from_libero():
    suites = resolve_suites("libero_130")
    assert {k: len(v) for k, v in suites.items()} == {
        "libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
    with pytest.raises(ValueError, match="valid: libero_130, libero_spatial"):
        resolve_suites("libero_7")


@pytest.mark.parametrize("fault", ["segfault_at_step", "hang_at_step"])
def test_a_worker_that_dies_mid_episode_is_replaced_and_the_episode_rerun(policy, tmp_path, monkeypatch, fault):
    monkeypatch.setenv("VLA_FAULT_INJECT", json.dumps({fault: 5, "marker": str(tmp_path / "fired")}))
    out = tmp_path / "sweep"
    stats = run_sweep(policy, {"libero_spatial": [0, 1]}, out, SMALL, workers=2, step_timeout_s=20, progress=False)
    assert (tmp_path / "fired").exists() and stats["restarts"] == 1
    rows = _rows(out)
    keys = sorted(r["key"] for r in rows)
    assert keys == sorted(f"libero_spatial/{t}/{i}" for t in (0, 1) for i in (0, 1))  # each exactly once
    assert all(r["status"] == "ok" and r["steps"] <= 12 for r in rows)
    assert sorted(r["attempts"] for r in rows) == [1, 1, 1, 2]  # the crashed episode ran again, not counted
    summary = write_report(out)
    assert summary["overall"]["episodes"] == 4 and (out / "report.md").exists() and (out / "suite_libero_spatial.png").exists()
    # failure videos (2 per task by default) are real mp4s linked from the report
    videos = [r["video"] for r in rows if r["video"]]
    assert len(videos) == 4 and all((out / v).stat().st_size > 1000 for v in videos)
    import av

    with av.open(str(out / videos[0])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 13  # first observation + 12 steps
    assert f"]({videos[0]})" in (out / "report.md").read_text()


def test_a_sweep_killed_with_sigkill_finishes_only_the_missing_episodes(policy, tmp_path):
    save_policy(policy, tmp_path / "ckpt")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "vla.cli", "sweep", "--ckpt", str(tmp_path / "ckpt"), "--suite", "libero_spatial",
           "--tasks", "0,1", "--episodes", "3", "--max-steps", "12", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(read_results(out)) < 2:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the runner and its workers, mid-sweep
    first.wait()
    before = read_results(out)
    assert 2 <= len(before) < 6
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = [r for r in _rows(out)]
    keys = [r["key"] for r in rows]
    assert sorted(keys) == sorted(f"libero_spatial/{t}/{i}" for t in (0, 1) for i in range(3))  # none lost, none twice
    assert all(rows[i] == before[rows[i]["key"]] for i in range(len(before)))  # earlier results kept as they were
    report = json.loads((out / "results.json").read_text())
    assert report["overall"]["episodes"] == 6 and "[sweep] " in second.stdout
