"""Writing verified expert episodes into a LeRobot dataset: shared by every simulator's demo generator."""
from __future__ import annotations

import time
from typing import Any


def write_episode(ds: Any, frames: list[dict[str, Any]], instruction: str, stats: dict[str, Any], label: str,
                  episodes: int, t0: float) -> None:
    """Append one verified expert episode to the dataset and count it."""
    for frame in frames:
        ds.add_frame({**frame, "task": instruction})
    ds.save_episode(parallel_encoding=False)  # 2 cores: no encoder process pool
    stats["episodes_written"] += 1
    stats["frames"] += len(frames)
    print(f"[demos] {label}: {len(frames)} frames ({stats['episodes_written']}/{episodes}, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)


def finish_task_stats(stats: dict[str, Any], label: str, episodes: int, t0: float) -> dict[str, Any]:
    """Success rate and time of one task's demos; warns when fewer episodes than asked were written."""
    stats["success_rate"] = stats["successes"] / max(stats["attempts"], 1)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    if stats["episodes_written"] < episodes:
        print(f"[demos] WARNING {label}: only {stats['episodes_written']}/{episodes} episodes "
              f"from {stats['attempts']} attempts", flush=True)
    return stats

