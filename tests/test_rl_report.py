"""The RL report's statistics: the paired McNemar test over the fixed evaluation episodes."""
import json

import pytest

from vla.config import ExperimentConfig
from vla.eval.stats import mcnemar_exact_p, paired_outcomes
from vla.rl.report import write_rl_report


def test_mcnemar_matches_the_binomial_test():
    # reference values from scipy.stats.binomtest(min, n, 0.5).pvalue
    assert mcnemar_exact_p(23, 13) == pytest.approx(0.1324981639627)
    assert mcnemar_exact_p(10, 2) == pytest.approx(0.03857421875)
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    with pytest.raises(ValueError, match="gained=-1"):
        mcnemar_exact_p(-1, 2)


def test_paired_outcomes_counts_only_shared_episodes():
    before = {"a": True, "b": False, "c": False, "d": True, "only_before": True}
    after = {"a": True, "b": True, "c": False, "d": False, "only_after": False}
    out = paired_outcomes(before, after)
    assert out == {"episodes": 4, "gained": 1, "lost": 1, "both": 1, "neither": 1, "mcnemar_p": 1.0}
    with pytest.raises(ValueError, match="share no episode keys"):
        paired_outcomes({"x": True}, {"y": True})


def _write_eval(root, seed: int, outcomes: list[bool | None]) -> None:
    d = root / f"seed_{seed}"
    d.mkdir(parents=True)
    rows = [{"key": f"libero_spatial/0/{i}", "status": "error" if ok is None else "ok", "success": ok}
            for i, ok in enumerate(outcomes)]
    (d / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_pairs_the_first_and_last_evaluation(tmp_path):
    # seed 7: 2 gained, 1 lost; seed 8: 3 gained, one episode errored after RL (left out of the pairing)
    _write_eval(tmp_path / "eval_0000", 7, [False, False, True, True])
    _write_eval(tmp_path / "eval_0000", 8, [False, False, False, True])
    _write_eval(tmp_path / "eval_0005", 7, [True, True, False, True])
    _write_eval(tmp_path / "eval_0005", 8, [True, True, True, None])

    def ev(k, n):
        return {"episodes": n, "successes": k, "success_rate": k / n, "ci95": [0.1, 0.9], "seconds": 1.0}

    state = {"iteration": 5, "evals": {"0": ev(3, 8), "5": ev(6, 7)},
             "history": [{"iteration": i, "iteration_s": 2.0, "episode_steps": 10.0, "episodes": 4,
                          "success_rate": 0.5} for i in range(1, 6)]}
    summary = write_rl_report(tmp_path, state, ExperimentConfig(), tmp_path / "ckpt")
    assert summary["paired"] == {"episodes": 7, "gained": 5, "lost": 1, "both": 1, "neither": 0,
                                 "mcnemar_p": pytest.approx(mcnemar_exact_p(5, 1))}
    assert json.loads((tmp_path / "rl_summary.json").read_text())["paired"]["gained"] == 5
    assert "5 failure->success, 1 success->failure" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
