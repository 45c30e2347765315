"""`vla sweep --ray <address>`: a local Ray cluster started here (2 CPUs), the CLI connecting to it by
address as a separate driver process, the sweep split into 2 shards of 1 LIBERO worker each. The merged
output must hold every expected episode exactly once with the local sweep's report files; a rerun over a
partial episodes.jsonl (with a line cut by a kill) must run only the missing episodes."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla.checkpoint import save_policy
from vla.eval.sweep import EPISODES_FILE
from vla.random_policy import random_policy

pytestmark = [pytest.mark.integration, pytest.mark.libero]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray_sweep") / "ckpt"
    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4},
                               "demos": {"image_size": 64}, "eval": {"replan_steps": 4}}), path)
    return path


def _sweep(ray_address: str, ckpt: Path, out: Path, tasks: str, episodes: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vla.cli", "sweep", "--ckpt", str(ckpt), "--suite", "libero_spatial", "--tasks", tasks,
           "--episodes", str(episodes), "--max-steps", "8", "--workers", "1", "--out", str(out),
           "--ray", ray_address, "--ray-shards", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines() if line.startswith("{\"key\"")
            and line.endswith("}")]


def test_a_ray_sweep_in_two_shards_gives_every_episode_once_and_the_local_report(ray_address, ckpt, tmp_path):
    out = tmp_path / "sweep"
    _sweep(ray_address, ckpt, out, "0,1", 2)
    rows = _rows(out)
    assert sorted(r["key"] for r in rows) == sorted(f"libero_spatial/{t}/{i}" for t in (0, 1) for i in (0, 1))
    assert all(r["status"] == "ok" and r["steps"] <= 8 and r["attempts"] == 1 for r in rows)
    report = json.loads((out / "results.json").read_text())
    assert set(report) == {"overall", "suites", "tasks", "run"} and report["overall"]["episodes"] == 4
    assert set(report["tasks"]) == {"libero_spatial/0", "libero_spatial/1"}
    run = report["run"]
    assert run["ran"] == 4 and run["restarts"] == 0 and run["ray"]["shards"] == 2
    assert sorted(run["ray"]["shard_wall_seconds"]) == ["0/2", "1/2"] and run["ray"]["duplicate_rows_dropped"] == 0
    with (out / "tasks.csv").open() as f:
        assert next(csv.reader(f))[:3] == ["suite", "task", "episodes"]
    assert (out / "report.md").exists() and (out / "suite_libero_spatial.png").exists()
    # the shards recorded failure videos in their own scratch dirs; the bytes came back with the rows
    videos = [r["video"] for r in rows if r["video"]]
    assert videos and all((out / v).stat().st_size > 1000 for v in videos)
    assert f"]({videos[0]})" in (out / "report.md").read_text()


def test_a_ray_sweep_over_a_partial_log_runs_only_the_missing_episodes(ray_address, ckpt, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    earlier = [{"key": f"libero_spatial/0/{i}", "suite": "libero_spatial", "task": 0, "init_state": i, "status": "ok",
                "success": False, "steps": 8, "seconds": 1.0, "attempts": 1, "video": None, "earlier": True}
               for i in (0, 3)]  # one from each shard's share (shard 0: init states 0, 2; shard 1: 1, 3)
    cut = '{"key": "libero_spatial/0/1", "suite": "libero_sp'  # a row cut short by kill -9
    (out / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in earlier) + cut)
    result = _sweep(ray_address, ckpt, out, "0", 4)
    assert "2 episodes to run in 2 of 2 shards (2 already done)" in result.stdout
    rows = _rows(out)
    assert sorted(r["key"] for r in rows) == [f"libero_spatial/0/{i}" for i in range(4)]  # none lost, none twice
    assert rows[:2] == earlier  # kept as they were, not run again
    assert all(r["status"] == "ok" and "earlier" not in r for r in rows[2:])
    report = json.loads((out / "results.json").read_text())
    assert report["overall"]["episodes"] == 4 and report["run"]["ran"] == 2
