"""`make finetune POLICY=pi0 SIM=maniskill` and `make rl ... SIM=maniskill`, shrunk to CI size, on the real
ManiSkill CPU simulation: expert demos -> LeRobot dataset -> BC (tiny backbone, 3 steps) -> eval, then one
PPO iteration from that checkpoint through the env worker processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.maniskill]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = 32


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """One shrunk finetune run shared by the tests below: (its stdout, run dir, demos root)."""
    base = tmp_path_factory.mktemp("maniskill")
    out, demos = base / "run", base / "demos"
    cmd = [sys.executable, "-m", "vla.cli", "finetune", "--policy", "pi0", "--sim", "maniskill",
           f"output_dir={out}", f"demos.root={demos}", "demos.episodes_per_task=2", f"demos.image_size={IMAGE}",
           "backbone.image_size=32", "head.chunk_size=4", "eval.replan_steps=4", "head.flow.steps=3",
           "train.steps=3", "train.batch_size=8", "train.torch_threads=1", "eval.episodes=1", "eval.max_steps=12"]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout, out, demos


def test_demos_are_a_loadable_lerobot_dataset_of_successful_episodes(finetuned):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla.data.features import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY

    _, _, demos = finetuned
    (root,) = [p for p in demos.iterdir() if p.is_dir()]
    assert root.name == f"maniskill_t0_n2_px{IMAGE}"
    summary = json.loads((root / "meta" / "demos_summary.json").read_text())
    task = summary["tasks"]["0"]
    assert summary["episodes_written"] == 2 and task["successes"] >= 2 and task["task"] == "PickCube-v1"
    ds = LeRobotDataset(f"local/{root.name}", root=root)
    assert ds.num_episodes == 2 and ds.num_frames == summary["frames"] > 40
    frame = ds[0]
    assert tuple(frame[AGENTVIEW_KEY].shape) == tuple(frame[WRIST_KEY].shape) == (3, IMAGE, IMAGE)
    assert frame[STATE_KEY].shape == (8,) and frame[ACTION_KEY].shape == (7,)
    assert frame["task"] == "pick up the red cube and move it to the green goal"
    actions = np.stack([ds[i][ACTION_KEY].numpy() for i in range(ds.num_frames)])
    assert np.abs(actions).max() <= 1.0 and set(np.unique(actions[:, 6])) == {-1.0, 1.0}  # open, then close


def test_finetune_trains_and_evaluates_in_maniskill(finetuned):
    stdout, out, _ = finetuned
    assert "[result] success" in stdout
    ckpt = out / "checkpoints" / "step_0000003"
    report = json.loads((ckpt / "eval.json").read_text())
    detail = report["tasks"]["maniskill/0"]
    assert report["episodes"] == 1 and detail["task"] == "PickCube-v1"
    assert detail["episodes_detail"][0]["steps"] <= 12
    assert json.loads((ckpt / "config.json").read_text())["sim"] == "maniskill"


def test_fit_compares_the_first_chunks_with_the_demos_it_was_trained_on(finetuned):
    """`vla fit` finds the checkpoint's generated demos, decodes their first frames and scores the chunks."""
    _, out, demos = finetuned
    cmd = [sys.executable, "-m", "vla.cli", "fit", "--ckpt", str(out / "checkpoints" / "step_0000003"),
           "--episodes", "5"]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"first chunk (4 steps) on the first frame of 2 demos of {demos}" in run.stdout
    rows = [line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["x"], ["y"], ["gripper"])]
    assert len(rows) == 3 and all(float(r[2]) >= 0 and r[3] == "nan" for r in rows)  # 2 demos: no correlation
    missing = subprocess.run([*cmd[:-2], "--dataset", str(demos / "nope")], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0


@pytest.mark.parametrize("rollout", [["rl.workers=1"], ["rl.batched_envs=1"]], ids=["workers", "batched"])
def test_rl_runs_on_maniskill(finetuned, tmp_path, rollout):
    _, out, _ = finetuned
    rl_out = tmp_path / "rl"
    cmd = [sys.executable, "-m", "vla.cli", "rl", "--policy", "pi0", "--sim", "maniskill",
           "--ckpt", str(out / "checkpoints" / "step_0000003"), f"output_dir={rl_out}", "rl.algo=ppo",
           "rl.iterations=1", "rl.episodes_per_iter=2", *rollout, "rl.max_steps=8", "rl.torch_threads=1",
           "rl.eval_episodes_per_task=1", "rl.minibatch_size=4", "rl.epochs=1"]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (row,) = [json.loads(line) for line in (rl_out / "rl_log.jsonl").read_text().splitlines()]
    assert row["iteration"] == 1 and row["episodes"] == 2 and row["decisions"] == 4  # 8 steps / chunks of 4
    assert row["restarts"] == 0 and "pg_loss" in row
    summary = json.loads((rl_out / "rl_summary.json").read_text())
    assert summary["before"]["episodes"] == summary["after"]["episodes"] == 1


def test_batched_envs_play_the_worker_pools_episodes(finetuned):
    """`rl.batched_envs=1` on the CPU (one ManiSkill env in this process) against one env worker process:
    the same plan gives the same episodes, observations, chunks and rewards."""
    import torch

    from vla.rl.batched_rollout import BatchedEnvPool
    from vla.rl.rollout import EnvPool, PlannedEpisode
    from vla.rl.prepare import prepare_policy

    _, out, _ = finetuned
    torch.set_num_threads(1)
    policy = prepare_policy(out / "checkpoints" / "step_0000003", None, [])
    plan = [PlannedEpisode("maniskill", 0, init, k, seed=1234 + k) for k, init in enumerate([0, 3])]
    runs = []
    for pool in (EnvPool(1, IMAGE, "maniskill", max_steps=10, reward="dense"),
                 BatchedEnvPool(1, IMAGE, max_steps=10, reward="dense", backend="cpu")):
        try:
            runs.append(pool.collect(policy, plan, torch.Generator().manual_seed(3))[0])
        finally:
            pool.close()
    workers, batched = runs
    assert [e.plan for e in batched] == plan
    for a, b in zip(workers, batched):
        assert (a.steps, a.success, len(a.decisions), a.instruction) == (b.steps, b.success, len(b.decisions),
                                                                        b.instruction)
        assert a.steps == 10 and len(a.decisions) == 3  # chunks of 4: 4 + 4 + 2 steps
        for da, db in zip(a.decisions, b.decisions):
            assert np.array_equal(da.images, db.images)
            assert np.allclose(da.state, db.state, atol=1e-5)
            assert da.log_prob == pytest.approx(db.log_prob, rel=1e-5)
            assert da.reward == pytest.approx(db.reward, abs=1e-5)
    assert workers[0].decisions[0].state.tolist() != workers[1].decisions[0].state.tolist() or \
        not np.array_equal(workers[0].decisions[0].images, workers[1].decisions[0].images)  # two distinct scenes
