"""Scripted LIBERO demonstrations written as a LeRobot dataset (the layout of the public LIBERO datasets).

For each task, init states 0, 1, 2, ... are planned with the privileged expert in a camera-free env; each
successful plan is replayed in `LiberoEnv` with both cameras and recorded frame by frame (observation
before the action, the action taken). Failed plans are never rendered and never written.

    python -m sim.demos --suite libero_spatial --tasks 0 --episodes 20 --root data/libero_spatial_demo
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.demo_writer import finish_task_stats, write_episode
from sim.experts import libero_pick_place as expert
from sim.libero import LiberoEnv, list_tasks, num_init_states, resolve_task
from vla.data.features import ACTION_KEY, CAMERA_TO_KEY, LIBERO_FPS, STATE_KEY, libero_features


def _replay(env: LiberoEnv, init_state_index: int, actions: list[np.ndarray]) -> tuple[list[dict[str, Any]], bool]:
    """Frames of the replayed plan, and whether the env reported success on its last action."""
    obs = env.reset(init_state_index)
    frames = []
    done = False
    for k, action in enumerate(actions):
        frame = {CAMERA_TO_KEY[name]: image for name, image in obs.images.items()}
        frame[STATE_KEY] = obs.state
        frame[ACTION_KEY] = np.asarray(action, dtype=np.float32)
        frames.append(frame)
        result = env.step(action)
        obs, done = result.observation, result.done
        if done:
            return frames, k == len(actions) - 1
    return frames, False


def generate_libero_demos(
    suite: str,
    task_ids: list[int],
    episodes_per_task: int,
    root: Path,
    repo_id: str,
    image_size: int = 128,
    use_videos: bool = True,
    init_states_below: int | None = None,
) -> dict[str, Any]:
    """Write up to `episodes_per_task` successful expert episodes per task into a new dataset at `root`.

    init_states_below: take only init states 0 .. init_states_below - 1 (those from which evaluation starts
    are left out, so a held-out success rate stays held out); None = all 50.
    Returns a summary: per task the init states tried (attempts), plans that succeeded, the success rate,
    episodes written and frames; plus totals. A task runs out of attempts after its fixed init states.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"dataset root {root} already exists; pick a new path or delete it first")
    if episodes_per_task <= 0:
        raise ValueError(f"episodes_per_task must be positive, got {episodes_per_task}")
    task_ids = [resolve_task(suite, t) for t in task_ids]
    unsupported = [t for t in task_ids if not expert.supported(suite, t)]
    if unsupported:
        supported = [t for t in range(len(list_tasks(suite))) if expert.supported(suite, t)]
        raise ValueError(f"the expert cannot do {suite} tasks {unsupported}; supported task ids: {supported}")

    ds = LeRobotDataset.create(
        repo_id=repo_id,
        fps=LIBERO_FPS,
        root=root,
        features=libero_features(image_size, use_videos),
        robot_type="panda",
        use_videos=use_videos,
    )
    if init_states_below is not None and init_states_below < 1:
        raise ValueError(f"init_states_below must be >= 1 (or None for all), got {init_states_below}")
    summary: dict[str, Any] = {"suite": suite, "repo_id": repo_id, "root": str(root), "tasks": {},
                               "init_states_below": init_states_below}
    start = time.perf_counter()
    try:
        for task_id in task_ids:
            summary["tasks"][task_id] = _record_task(ds, suite, task_id, episodes_per_task, image_size,
                                                     init_states_below)
    finally:
        ds.finalize()  # without it the parquet footers are missing and the dataset cannot be read
    per_task = summary["tasks"].values()
    summary["episodes_written"] = sum(t["episodes_written"] for t in per_task)
    summary["frames"] = sum(t["frames"] for t in per_task)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[demos] wrote {summary['episodes_written']} episodes, {summary['frames']} frames to {root} "
          f"in {summary['seconds']} s", flush=True)
    return summary


def _record_task(ds: Any, suite: str, task_id: int, episodes: int, image_size: int,
                 init_states_below: int | None) -> dict[str, Any]:
    env = LiberoEnv(suite, task_id, image_size=image_size)
    stats = {"task": env.task_name, "instruction": env.instruction, "attempts": 0, "successes": 0,
             "replay_mismatches": 0, "episodes_written": 0, "frames": 0, "init_states": []}
    t0 = time.perf_counter()
    available = num_init_states(suite, task_id)
    try:
        for index in range(min(available, init_states_below or available)):
            if stats["episodes_written"] >= episodes:
                break
            stats["attempts"] += 1
            actions = expert.plan_episode(suite, task_id, index, env.max_steps, seed=env.seed)
            if actions is None:
                print(f"[demos] {suite} task {task_id} init {index}: expert failed", flush=True)
                continue
            stats["successes"] += 1
            frames, ok = _replay(env, index, actions)
            if not ok:  # the replay must reproduce the plan exactly; never write an unverified episode
                stats["replay_mismatches"] += 1
                print(f"[demos] {suite} task {task_id} init {index}: replay did not reproduce success", flush=True)
                continue
            write_episode(ds, frames, env.instruction, stats, f"{suite} task {task_id} init {index}", episodes, t0)
            stats["init_states"].append(index)
    finally:
        env.close()
    bound = f" (init states below {init_states_below}, the evaluation's first)" if init_states_below else ""
    return finish_task_stats(stats, f"{suite} task {task_id}{bound}", episodes, t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--tasks", required=True, help="comma-separated task ids or names")
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--root", type=Path, required=True, help="new dataset directory")
    parser.add_argument("--repo-id", default=None, help="default: local/<root name>")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", action="store_true", help="store PNG frames instead of videos")
    parser.add_argument("--init-states-below", type=int, default=None,
                        help="only init states 0..N-1 (keep the evaluation's init states out of the demos)")
    args = parser.parse_args()
    tasks = [int(t) if t.strip().isdigit() else t.strip() for t in args.tasks.split(",")]
    summary = generate_libero_demos(
        args.suite, tasks, args.episodes, args.root, args.repo_id or f"local/{args.root.name}",
        image_size=args.image_size, use_videos=not args.images, init_states_below=args.init_states_below,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
