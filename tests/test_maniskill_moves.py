"""The step budget and success handling that the ManiSkill experts' legs share (no simulator needed)."""
import numpy as np

from sim.experts.maniskill_moves import CLOSE, Legs


def recorder(success_at: int | None):
    actions: list[np.ndarray] = []

    def step(action: np.ndarray) -> bool:
        actions.append(action)
        return success_at is not None and len(actions) == success_at

    return actions, step


def test_hold_fills_the_rest_of_the_budget_with_zero_motion():
    actions, step = recorder(None)
    legs = Legs(env=None, step=step, max_steps=5)
    assert not legs.hold(CLOSE, 2)
    assert not legs.hold(CLOSE)
    assert len(actions) == 5 and legs.exhausted
    assert all(np.array_equal(a, [0, 0, 0, 0, 0, 0, CLOSE]) for a in actions)
    assert not legs.hold(CLOSE, 3) and len(actions) == 5  # nothing past the budget


def test_success_stops_at_once():
    actions, step = recorder(success_at=3)
    legs = Legs(env=None, step=step, max_steps=10)
    assert legs.hold(CLOSE)
    assert len(actions) == 3 and legs.used == 3
