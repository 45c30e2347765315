"""What an RL run leaves behind: rl_summary.json (before/after success with 95% CIs, wall time),
learning_curve.png (rollout success per iteration and every evaluation), report.md."""
from __future__ import annotations

import json
from pathlib import Path

from vla.config import ExperimentConfig
from vla.eval.report import episode_successes
from vla.eval.stats import paired_outcomes


def _fmt(e: dict) -> str:
    lo, hi = e["ci95"]
    return f"{e['successes']}/{e['episodes']} = {100 * e['success_rate']:.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"


def write_rl_report(out: Path, state: dict, cfg: ExperimentConfig, checkpoint: Path) -> dict:
    evals = {int(k): v for k, v in state["evals"].items()}
    history = state["history"]
    first, last = min(evals), max(evals)
    summary = {
        "algo": cfg.rl.algo, "head": cfg.head.type, "iterations": state["iteration"], "checkpoint": str(checkpoint),
        "before": evals[first], "after": evals[last],
        "rl_seconds": round(sum(r["iteration_s"] for r in history), 1),
        "eval_seconds": round(sum(e.get("seconds", 0.0) for e in evals.values()), 1),
        "env_frames": int(sum(r["episode_steps"] * r["episodes"] for r in history)),
        "evals": {str(k): v for k, v in sorted(evals.items())},
    }
    if last != first:
        summary["paired"] = paired_outcomes(episode_successes(out / f"eval_{first:04d}"),
                                            episode_successes(out / f"eval_{last:04d}"))
    (out / "rl_summary.json").write_text(json.dumps(summary, indent=2))
    _plot(out / "learning_curve.png", history, evals, cfg)
    lines = [f"# RL: {cfg.rl.algo} on the {cfg.head.type} head", "",
             f"- before (iteration {first}): {_fmt(evals[first])}",
             f"- after (iteration {last}): {_fmt(evals[last])}",
             *([_fmt_paired(summary["paired"])] if "paired" in summary else []),
             f"- RL wall time: {summary['rl_seconds']} s over {state['iteration']} iterations "
             f"({summary['env_frames']} env frames); evaluation: {summary['eval_seconds']} s",
             "", "![learning curve](learning_curve.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"[rl] before {_fmt(evals[first])} -> after {_fmt(evals[last])}; report in {out / 'report.md'}", flush=True)
    return summary


def _fmt_paired(p: dict) -> str:
    return (f"- paired on the same {p['episodes']} episodes: {p['gained']} failure->success, {p['lost']} "
            f"success->failure (exact McNemar p = {p['mcnemar_p']:.3g})")


def _plot(path: Path, history: list[dict], evals: dict[int, dict], cfg: ExperimentConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        ax.plot([r["iteration"] for r in history], [100 * r["success_rate"] for r in history],
                color="0.6", marker=".", label="rollout episodes (exploring)")
    its = sorted(evals)
    rate = [100 * evals[i]["success_rate"] for i in its]
    low = [100 * (evals[i]["success_rate"] - evals[i]["ci95"][0]) for i in its]
    high = [100 * (evals[i]["ci95"][1] - evals[i]["success_rate"]) for i in its]
    ax.errorbar(its, rate, yerr=[low, high], color="C0", marker="o", capsize=3,
                label=f"evaluation ({evals[its[0]]['episodes']} fixed episodes, 95% CI)")
    ax.set(xlabel="RL iteration", ylabel="success %", ylim=(0, 100),
           title=f"{cfg.rl.algo.upper()} on the {cfg.head.type} head")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
