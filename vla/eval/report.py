"""Sweep report: per-task and per-suite success with 95% Wilson intervals and episode lengths, as
JSON, CSV and markdown with one PNG bar chart per suite; `compare` puts two sweeps side by side
and tests the change on the episodes they share."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vla.eval.stats import paired_outcomes, wilson_interval
from vla.eval.sweep import EPISODES_FILE, read_results


def summarize_rows(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    wins = sum(bool(r["success"]) for r in ok)
    low, high = wilson_interval(wins, len(ok))
    return {"episodes": len(ok), "successes": wins, "success_rate": wins / len(ok) if ok else 0.0,
            "ci95": [low, high], "mean_steps": float(np.mean([r["steps"] for r in ok])) if ok else 0.0,
            "errors": len(rows) - len(ok), "env_errors": sum("env_error" in r for r in ok)}


def read_evaluation(out: Path) -> dict[str, dict]:
    """Finished episodes of a sweep directory, or of an RL evaluation (`eval_NNNN/seed_S/`, one sweep
    per scene seed; keys get a `seed_S/` prefix so that the same init state under two seeds stays two
    episodes). Anything else is an error rather than an empty result."""
    if (out / EPISODES_FILE).exists():
        return read_results(out)
    seed_dirs = sorted(d for d in out.glob("seed_*") if (d / EPISODES_FILE).exists())
    if not seed_dirs:
        raise FileNotFoundError(f"{out} holds no {EPISODES_FILE} and no seed_*/{EPISODES_FILE}; expected a sweep "
                                "directory or an RL evaluation directory (eval_NNNN)")
    return {f"{d.name}/{key}": row for d in seed_dirs for key, row in read_results(d).items()}


def episode_successes(out: Path) -> dict[str, bool]:
    """Success of every episode that finished (status ok), by episode key."""
    return {key: bool(row.get("success")) for key, row in read_evaluation(out).items() if row.get("status") == "ok"}


def summarize_sweep(out: Path) -> dict:
    rows = list(read_evaluation(out).values())
    videos: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.get("video"):
            videos[f"{r['suite']}/{r['task']}"].append(r["video"])
    by_task: dict[tuple[str, int], list[dict]] = defaultdict(list)
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[(r["suite"], r["task"])].append(r)
        by_suite[r["suite"]].append(r)
    return {
        "overall": summarize_rows(rows),
        "suites": {s: summarize_rows(v) for s, v in sorted(by_suite.items())},
        "tasks": {f"{s}/{t}": {**summarize_rows(v), "videos": sorted(videos.get(f"{s}/{t}", []))}
                  for (s, t), v in sorted(by_task.items())},
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_report(out: Path, extra: dict | None = None) -> dict:
    """results.json, tasks.csv, report.md and suite_<name>.png in `out`."""
    summary = summarize_sweep(out)
    if extra:
        summary["run"] = extra
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with (out / "tasks.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["suite", "task", "episodes", "successes", "success_rate", "ci95_low", "ci95_high", "mean_steps", "errors"])
        for key, s in summary["tasks"].items():
            suite, task = key.rsplit("/", 1)
            writer.writerow([suite, task, s["episodes"], s["successes"], f"{s['success_rate']:.4f}", f"{s['ci95'][0]:.4f}",
                             f"{s['ci95'][1]:.4f}", f"{s['mean_steps']:.1f}", s["errors"]])
    md = ["# Evaluation sweep", ""]
    o = summary["overall"]
    md += [f"Overall: **{o['successes']}/{o['episodes']} = {_pct(o['success_rate'])}** "
           f"(95% CI {_pct(o['ci95'][0])}-{_pct(o['ci95'][1])}), mean episode length {o['mean_steps']:.0f} steps, "
           f"{o['errors']} episodes abandoned after repeated worker crashes, {o['env_errors']} failures counted where "
           "the env refused the policy's action (non-finite, or a simulation that went unstable) in every attempt.", ""]
    if extra:
        md += [f"Run: {json.dumps(extra)}", ""]
    md += ["| suite | success | 95% CI | episodes | mean steps |", "|---|---|---|---|---|"]
    for suite, s in summary["suites"].items():
        md.append(f"| {suite} | {_pct(s['success_rate'])} | {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])} | {s['episodes']} | {s['mean_steps']:.0f} |")
    for suite in summary["suites"]:
        png = _bar_chart(out, suite, {k: v for k, v in summary["tasks"].items() if k.startswith(suite + "/")})
        md += ["", f"## {suite}", "", f"![{suite}]({png.name})", "",
               "| task | success | 95% CI | episodes | mean steps | videos |", "|---|---|---|---|---|---|"]
        for key, s in summary["tasks"].items():
            if key.startswith(suite + "/"):
                links = " ".join(f"[{Path(v).stem.rsplit('_', 1)[1]} {Path(v).stem.split('_')[-2]}]({v})" for v in s["videos"])
                md.append(f"| {key} | {_pct(s['success_rate'])} | {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])} | "
                          f"{s['episodes']} | {s['mean_steps']:.0f} | {links} |")
    (out / "report.md").write_text("\n".join(md) + "\n")
    return summary


def _bar_chart(out: Path, suite: str, tasks: dict[str, dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k.rsplit("/", 1)[1] for k in tasks]
    rates = np.array([v["success_rate"] for v in tasks.values()])
    low = rates - np.array([v["ci95"][0] for v in tasks.values()])
    high = np.array([v["ci95"][1] for v in tasks.values()]) - rates
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(names) + 1.5), 3.0))
    ax.bar(names, rates, yerr=[low, high], capsize=2, color="#4c72b0")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("task")
    ax.set_ylabel("success (95% CI)")
    ax.set_title(suite)
    fig.tight_layout()
    path = out / f"suite_{suite}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def merge_shards(shards: list[Path], out: Path) -> dict:
    """Combine shard directories (`--shard i/N` runs) into one sweep directory and report it.
    The same episode in two shards is an error: shards must partition the sweep."""
    merged: dict[str, dict] = {}
    for shard in shards:
        for key, row in read_results(shard).items():
            if key in merged:
                raise ValueError(f"episode {key} appears in more than one shard ({shard}); shards must not overlap")
            merged[key] = row
    out.mkdir(parents=True, exist_ok=True)
    (out / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in merged.values()))
    for shard in shards:  # keep the videos next to the merged log
        for video in (shard / "videos").glob("*.mp4") if (shard / "videos").is_dir() else []:
            (out / "videos").mkdir(exist_ok=True)
            target = out / "videos" / video.name
            if not target.exists():
                target.write_bytes(video.read_bytes())
    return write_report(out, {"merged_from": [str(s) for s in shards]})


def _cell(s: dict | None, with_ci: bool) -> str:
    """'56.0% (56/100)' for one summary row, with its 95% CI if asked; '-' where the run lacks it."""
    if not s:
        return "-"
    ci = f", 95% CI {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])}" if with_ci else ""
    return f"{_pct(s['success_rate'])} ({s['successes']}/{s['episodes']}{ci})"


def compare(a: Path, b: Path) -> str:
    """Markdown table of two sweeps' (or RL evaluations') per-suite and per-task success, side by side,
    then the paired test on the episodes both ran: the same task, init state and seed is the same
    scene, so episodes that both policies solve or both fail say nothing about the difference."""
    sa, sb = summarize_sweep(a), summarize_sweep(b)
    lines = [f"| | {a} | {b} | difference |", "|---|---|---|---|"]
    rows = [("overall", sa["overall"], sb["overall"], True)]
    rows += [(key, sa[level].get(key), sb[level].get(key), False)
             for level in ("suites", "tasks") for key in sorted(set(sa[level]) | set(sb[level]))]
    for key, ra, rb, with_ci in rows:
        diff = f"{100 * (rb['success_rate'] - ra['success_rate']):+.1f} pt" if ra and rb else "-"
        lines.append(f"| {key} | {_cell(ra, with_ci)} | {_cell(rb, with_ci)} | {diff} |")
    try:
        p = paired_outcomes(episode_successes(a), episode_successes(b))
        lines += ["", f"Paired on the {p['episodes']} episodes both ran: {p['gained']} failure->success, {p['lost']} "
                      f"success->failure, {p['both']} both succeed, {p['neither']} both fail "
                      f"(exact McNemar p = {p['mcnemar_p']:.3g})."]
    except ValueError:  # different episode sets (other tasks or seeds): only the unpaired table applies
        lines += ["", "No episode in common (different tasks, init states or seeds): no paired test."]
    return "\n".join(lines) + "\n"
