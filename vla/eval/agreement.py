"""How many of several evaluations of the same episodes solved each one.

Several policies (or one policy under several samplers) evaluated on one fixed episode set tell apart
episodes every run solves, episodes none solves, and episodes whose outcome changes from run to run.
The last kind is where sampling noise or a small policy change decides success; the "never" kind is
where a policy has to act differently, not just more reliably. Used to judge how much of an RL
run's paired gains and losses an evaluation can attribute to the update at all.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from vla.eval.report import episode_successes


def success_counts(runs: list[dict[str, bool]]) -> dict[str, int]:
    """For every episode key that all runs finished: in how many of them it succeeded."""
    if len(runs) < 2:
        raise ValueError(f"agreement needs at least 2 evaluations of the same episodes, got {len(runs)}")
    shared = set.intersection(*(set(r) for r in runs))
    if not shared:
        raise ValueError("the evaluations share no episode keys; were they run on the same episode set?")
    return {key: sum(r[key] for r in runs) for key in sorted(shared)}


def agreement_table(dirs: list[Path]) -> str:
    """Markdown: the histogram of per-episode success counts over the given evaluation directories."""
    counts = success_counts([episode_successes(d) for d in dirs])
    n, hist = len(dirs), Counter(counts.values())
    total = len(counts)
    lines = [f"{total} episodes shared by {n} evaluations:", "", "| succeeded in | episodes | share |", "|---|---|---|"]
    for k in range(n + 1):
        label = "none" if k == 0 else "all" if k == n else f"{k} of {n}"
        lines.append(f"| {label} | {hist.get(k, 0)} | {100 * hist.get(k, 0) / total:.0f}% |")
    mixed = total - hist.get(0, 0) - hist.get(n, 0)
    lines += ["", f"Decided the same way by every run: {total - mixed} ({hist.get(n, 0)} always solved, "
                  f"{hist.get(0, 0)} never); outcome varies between runs: {mixed}."]
    return "\n".join(lines) + "\n"
