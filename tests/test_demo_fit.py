"""`vla fit`'s arithmetic: a policy that follows the demos' first chunks correlates with them, one that
predicts the same chunk everywhere does not and errs by about the demos' spread."""
from __future__ import annotations

import numpy as np
import pytest

from vla.eval.demo_fit import episode_starts, fit_table, format_fit


def test_episode_starts_are_the_rows_where_the_episode_changes():
    assert episode_starts(np.array([0, 0, 0, 1, 1, 2, 5, 5])) == [0, 3, 5, 6]
    assert episode_starts(np.array([3])) == [0]
    with pytest.raises(ValueError, match="non-empty 1-d"):
        episode_starts(np.array([], dtype=int))


def test_a_reader_correlates_and_a_constant_policy_does_not():
    rng = np.random.default_rng(0)
    demo = np.zeros((30, 8, 7))
    demo[:, :, :2] = rng.uniform(-0.2, 0.2, size=(30, 1, 2))  # x, y depend on the placement
    demo[:, :, 6] = 1.0  # the gripper never changes
    reader = demo + rng.normal(0, 0.01, size=demo.shape)
    constant = np.repeat(demo.mean(axis=0, keepdims=True), 30, axis=0)
    follows = {r["dim"]: r for r in fit_table(reader, demo)}
    average = {r["dim"]: r for r in fit_table(constant, demo)}
    assert follows["x"]["correlation"] > 0.95 and follows["y"]["correlation"] > 0.95
    assert follows["x"]["mae"] < 0.01 < 0.05 < average["x"]["mae"]
    assert np.isnan(average["x"]["correlation"])  # the prediction does not vary at all
    assert average["x"]["mae"] == pytest.approx(np.abs(demo[:, 0, 0] - demo[:, 0, 0].mean()).mean())
    assert np.isnan(follows["gripper"]["correlation"]) and follows["gripper"]["demo_spread"] == 0.0
    two = fit_table(reader[:2], demo[:2])
    assert all(np.isnan(r["correlation"]) for r in two) and np.isfinite(two[0]["mae"])
    text = format_fit({"dataset": "d", "episodes": 30, "steps": 8, "sampler": "deterministic",
                       "dims": fit_table(reader, demo)})
    assert "correlation" in text and text.count("\n") == 9
    with pytest.raises(ValueError, match="must both be"):
        fit_table(reader[:, :4], demo)
