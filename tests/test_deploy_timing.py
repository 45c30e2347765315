"""Deploy timing without a robot: the temporal ensemble reads each chunk at the tick's own offset, and the
watchdog judges camera frames and policy requests each by its own timeout."""
import numpy as np
import pytest

from real_robot.base import CameraFrame
from real_robot.chunking import Chunk, ChunkSchedule
from real_robot.watchdog import Watchdog

P = 1 / 15


def test_ensemble_reads_every_chunk_at_the_ticks_offset_in_it():
    """Two overlapping chunks vote for tick 2: the one from tick 0 with its 3rd action (weight 1, the oldest),
    the one from tick 1 with its 2nd (weight exp(-k)); reading both at the newest chunk's offset would replay
    an action meant for a past tick."""
    s = ChunkSchedule(replan_every=1, ensemble_k=0.5)
    a = np.arange(4.0)[:, None] * np.ones((4, 2))
    b = 10 + np.arange(4.0)[:, None] * np.ones((4, 2))
    s.add(Chunk(1, 100.0 + P, b))  # added out of order: the schedule keeps them oldest first
    s.add(Chunk(0, 100.0, a))
    action, planned = s.action(2, P)
    w_old, w_new = 1.0, np.exp(-0.5)
    expected = (w_old * a[2] + w_new * b[1]) / (w_old + w_new)
    np.testing.assert_allclose(action, expected)
    assert action[0] == pytest.approx((2 + np.exp(-0.5) * 11) / (1 + np.exp(-0.5)))
    assert planned == pytest.approx(100.0 + 2 * P)  # timed by the newest chunk's clock


def test_watchdog_uses_the_frame_timeout_for_cameras_and_the_policy_timeout_for_requests():
    """A 0.5 s old frame with a 0.1 s frame timeout is a stalled camera (the arm must hold), while a request
    in flight for 0.5 s under a 1 s policy timeout is not yet a policy fault."""
    w = Watchdog(policy_timeout_s=1.0, frame_timeout_s=0.1)
    w.request_sent(10.0)
    faults, raised, _ = w.check(10.5, {"agentview": CameraFrame(np.zeros((2, 2, 3), np.uint8), 10.0)})
    assert set(faults) == {"camera:agentview"} and raised == ["camera:agentview"]
    assert "policy" not in faults
    faults, _, cleared = w.check(10.55, {"agentview": CameraFrame(np.zeros((2, 2, 3), np.uint8), 10.5)})
    assert faults == {} and cleared == ["camera:agentview"]  # a fresh frame clears it; the request is still young
    assert set(w.check(11.2, {"agentview": CameraFrame(np.zeros((2, 2, 3), np.uint8), 11.15)})[0]) == {"policy"}
