"""Success rate of the scripted expert per task, planning only (no cameras, a few seconds per episode).

    python -m sim.experts.report --suite libero_spatial --tasks 0,1,2 --init-states 20
"""
from __future__ import annotations

import argparse
import time

from sim.experts.libero_pick_place import plan_episode, supported
from sim.libero import MAX_STEPS, list_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--tasks", default="all", help="comma-separated task ids, or 'all' supported ones")
    parser.add_argument("--init-states", type=int, default=20, help="init states 0..N-1 per task")
    args = parser.parse_args()
    n_tasks = len(list_tasks(args.suite))
    tasks = range(n_tasks) if args.tasks == "all" else [int(t) for t in args.tasks.split(",")]
    print(f"| {args.suite} task | solved | mean steps | seconds |\n|---|---|---|---|")
    for task in tasks:
        if not supported(args.suite, task):
            print(f"| {task} | unsupported goal | | |")
            continue
        tic, lengths = time.perf_counter(), []
        for init in range(args.init_states):
            actions = plan_episode(args.suite, task, init, MAX_STEPS[args.suite])
            if actions is not None:
                lengths.append(len(actions))
        mean = sum(lengths) / len(lengths) if lengths else float("nan")
        print(f"| {task} | {len(lengths)}/{args.init_states} | {mean:.0f} | {time.perf_counter() - tic:.0f} |", flush=True)


if __name__ == "__main__":
    main()
