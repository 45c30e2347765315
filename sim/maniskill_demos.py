"""ManiSkill demonstrations (its PickCube and PushCube motion-planning solutions) written as a LeRobot dataset, in the same
layout `sim.demos` writes for LIBERO: agent-view + wrist images, 8-dim state, 7-dim action, the task string.

Each episode is recorded live in `ManiSkillEnv` with both cameras (observation before the action, the action
taken) while the expert drives it; only episodes that reach the env's success are written. Demo episodes use
init states (seeded resets) from `DEMO_FIRST_INIT_STATE` on, so evaluation and RL, which use init states
0..49, never see a demo's start.

    python -m sim.maniskill_demos --tasks 0 --episodes 20 --root data/maniskill_pickcube
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.demo_writer import finish_task_stats, write_episode
from sim.experts import maniskill_pick_cube, maniskill_push_cube
from sim.maniskill import SUITE, TASKS, ManiSkillEnv, resolve_task
from vla.data.features import ACTION_KEY, CAMERA_TO_KEY, LIBERO_FPS, STATE_KEY, libero_features

DEMO_FIRST_INIT_STATE = 1000
MAX_ATTEMPTS_FACTOR = 3  # give up on a task after 3x the requested episodes
EXPERTS = {"PickCube-v1": maniskill_pick_cube.solve, "PushCube-v1": maniskill_push_cube.solve}  # env id -> solve


def generate_maniskill_demos(suite: str, task_ids: list[int | str], episodes_per_task: int, root: Path,
                             repo_id: str, image_size: int = 128, use_videos: bool = True,
                             seed: int = 7) -> dict[str, Any]:
    """Write up to `episodes_per_task` successful expert episodes per task into a new dataset at `root`;
    returns a summary (per task: attempts, successes, success rate, episodes and frames written)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"dataset root {root} already exists; pick a new path or delete it first")
    if episodes_per_task <= 0:
        raise ValueError(f"episodes_per_task must be positive, got {episodes_per_task}")
    ids = [resolve_task(suite, t) for t in task_ids]
    unsupported = [TASKS[t].env_id for t in ids if TASKS[t].env_id not in EXPERTS]
    if unsupported:
        supported = [i for i, t in enumerate(TASKS) if t.env_id in EXPERTS]
        raise ValueError(f"no ManiSkill expert for {unsupported}; tasks with demos: {supported} ({', '.join(EXPERTS)})")
    ds = LeRobotDataset.create(repo_id=repo_id, fps=LIBERO_FPS, root=root,
                               features=libero_features(image_size, use_videos), robot_type="panda",
                               use_videos=use_videos)
    summary: dict[str, Any] = {"sim": "maniskill", "suite": suite, "repo_id": repo_id, "root": str(root), "tasks": {}}
    start = time.perf_counter()
    try:
        for task_id in ids:
            summary["tasks"][task_id] = _record_task(ds, suite, task_id, episodes_per_task, image_size, seed)
    finally:
        ds.finalize()  # without it the parquet footers are missing and the dataset cannot be read
    per_task = summary["tasks"].values()
    summary["episodes_written"] = sum(t["episodes_written"] for t in per_task)
    summary["frames"] = sum(t["frames"] for t in per_task)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[demos] wrote {summary['episodes_written']} episodes, {summary['frames']} frames to {root} "
          f"in {summary['seconds']} s", flush=True)
    return summary


def record_episode(env: ManiSkillEnv, init_state_index: int) -> tuple[list[dict[str, Any]], bool]:
    """Frames of one expert episode (observation before the action, the action) and whether it succeeded."""
    frames: list[dict[str, Any]] = []
    current = {"obs": env.reset(init_state_index)}

    def step(action: np.ndarray) -> bool:
        obs = current["obs"]
        frame: dict[str, Any] = {CAMERA_TO_KEY[name]: image for name, image in obs.images.items()}
        frame[STATE_KEY] = obs.state
        frame[ACTION_KEY] = np.asarray(action, dtype=np.float32)
        frames.append(frame)
        result = env.step(action)
        current["obs"] = result.observation
        return result.done

    ok = EXPERTS[env.task_name](env, step, env.max_steps)
    return frames, ok


def _record_task(ds: Any, suite: str, task_id: int, episodes: int, image_size: int, seed: int) -> dict[str, Any]:
    env = ManiSkillEnv(suite, task_id, image_size=image_size, seed=seed)
    stats = {"task": env.task_name, "instruction": env.instruction, "attempts": 0, "successes": 0,
             "episodes_written": 0, "frames": 0}
    t0 = time.perf_counter()
    try:
        for k in range(episodes * MAX_ATTEMPTS_FACTOR):
            if stats["episodes_written"] >= episodes:
                break
            index = DEMO_FIRST_INIT_STATE + k
            stats["attempts"] += 1
            frames, ok = record_episode(env, index)
            if not ok:
                print(f"[demos] {env.task_name} init {index}: expert failed ({len(frames)} steps)", flush=True)
                continue
            stats["successes"] += 1
            write_episode(ds, frames, env.instruction, stats, f"{env.task_name} init {index}", episodes, t0)
    finally:
        env.close()
    return finish_task_stats(stats, env.task_name, episodes, t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=SUITE)
    parser.add_argument("--tasks", default="0", help="comma-separated task ids or env ids (PickCube-v1)")
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--root", type=Path, required=True, help="new dataset directory")
    parser.add_argument("--repo-id", default=None, help="default: local/<root name>")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", action="store_true", help="store PNG frames instead of videos")
    args = parser.parse_args()
    tasks: list[int | str] = [int(t) if t.strip().isdigit() else t.strip() for t in args.tasks.split(",")]
    summary = generate_maniskill_demos(args.suite, tasks, args.episodes, args.root,
                                       args.repo_id or f"local/{args.root.name}", image_size=args.image_size,
                                       use_videos=not args.images)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
