"""The safety layer: whatever the policy returns, the command stays inside the limits or holds."""
import numpy as np
import pytest

from real_robot.base import CameraFrame, RobotObservation, RobotState
from real_robot.safety import SafetyFilter, SafetyLimits

NOW = 100.0


def _obs(pos=(0.5, 0.0, 0.3), joint_vel=0.0, frame_age=0.0, rotvec=(0.0, 0.0, 0.0)):
    state = RobotState(np.zeros(7), np.full(7, joint_vel), np.array(pos, dtype=float), np.array(rotvec, dtype=float),
                       0.04, NOW)
    frames = {"agentview": CameraFrame(np.zeros((8, 8, 3), np.uint8), NOW - frame_age)}
    return RobotObservation(state, frames)


def test_non_finite_wrong_shape_stale_or_fast_means_hold_at_the_current_pose():
    f = SafetyFilter()
    obs = _obs()
    cases = {
        "non-finite": (np.array([np.nan, 0, 0, 0, 0, 0, 1.0]), obs, NOW),
        "shape": (np.zeros(6), obs, NOW),
        "old": (np.zeros(7), obs, NOW - 1.0),
        "stale camera": (np.zeros(7), _obs(frame_age=0.5), NOW),
        "joint velocity": (np.zeros(7), _obs(joint_vel=2.0), NOW),
    }
    for why, (action, o, t) in cases.items():
        cmd = f(action, o, t, now=NOW)
        assert cmd.hold and np.array_equal(cmd.target_position, o.state.ee_position), why
        assert cmd.events and cmd.events[0].startswith("hold:"), why


def test_a_non_finite_measured_state_means_hold():
    """A NaN pose would make a NaN target; a NaN joint velocity would pass the speed check (nan > limit is False)."""
    f = SafetyFilter()
    for why, obs in {"ee_position": _obs(pos=(np.nan, 0.0, 0.3)), "joint_velocities": _obs(joint_vel=np.nan),
                     "ee_rotvec": _obs(rotvec=(0.0, np.inf, 0.0))}.items():
        cmd = f(np.array([1.0, 0, 0, 0, 0, 0, 1.0]), obs, NOW, now=NOW)
        assert cmd.hold and "non-finite robot state" in cmd.events[0] and why in cmd.events[0], why


def _outside(p, lo, hi):
    return np.linalg.norm(p - np.clip(p, lo, hi))


def test_an_arm_outside_the_workspace_goes_back_at_the_step_limit():
    """Boxing the target after the step clip would otherwise jump the arm to the box (0.3 m here) in one step."""
    limits = SafetyLimits()
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    pos = np.array([0.5, 0.0, 0.9])  # 0.3 m above the box's ceiling
    f = SafetyFilter(limits)
    cmd = f(np.zeros(7), _obs(pos=pos), NOW, now=NOW)
    assert not cmd.hold and np.linalg.norm(cmd.target_position - pos) == pytest.approx(f.max_step_m)
    assert _outside(cmd.target_position, lo, hi) == pytest.approx(0.3 - f.max_step_m)
    assert any("outside the workspace box" in e for e in cmd.events)


def test_translation_rotation_workspace_and_gripper_are_clipped_and_reported():
    limits = SafetyLimits()
    f = SafetyFilter(limits)
    cmd = f(np.array([1.0, 1.0, 0, 1.0, 0, 0, -1.0]), _obs(), NOW, now=NOW)
    step = np.linalg.norm(cmd.target_position - _obs().state.ee_position)
    assert step == pytest.approx(0.02) and np.linalg.norm(cmd.delta_rotvec) == pytest.approx(0.15)  # at 15 Hz
    assert any("translation" in e for e in cmd.events) and any("rotation" in e for e in cmd.events)
    # pushing down into the table from just above it stops at the box floor
    cmd = f(np.array([0, 0, -1.0, 0, 0, 0, -1.0]), _obs(pos=(0.5, 0.0, 0.025)), NOW, now=NOW)
    assert cmd.target_position[2] == pytest.approx(limits.workspace_min[2]) and any("workspace" in e for e in cmd.events)
    # the gripper is binary (its sign; 0 keeps the last) and switches at most every min_gripper_switch_s
    def grip(value, t):
        cmd = f(np.array([0, 0, 0, 0, 0, 0, value]), _obs(frame_age=NOW - t), t, now=t)  # fresh frames at t
        assert not cmd.hold
        return cmd.gripper, any("gripper switch" in e for e in cmd.events)

    assert grip(0.3, NOW) == (1.0, False)  # the first commands (open, then close) are no switch to wait for
    assert grip(0.0, NOW + 0.1) == (1.0, False) and grip(0.9, NOW + 0.1) == (1.0, False)
    assert grip(-0.2, NOW + 0.3) == (1.0, True)  # 0.3 s after closing: opening waits
    assert grip(-0.2, NOW + 0.6) == (-1.0, False)
    assert grip(0.5, NOW + 0.9) == (-1.0, True) and grip(0.5, NOW + 1.2) == (1.0, False)


def test_fuzzed_actions_never_leave_the_limits():
    limits = SafetyLimits()
    f = SafetyFilter(limits)
    rng = np.random.default_rng(0)
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    for _ in range(3000):
        action = rng.normal(scale=rng.choice([0.5, 5.0, 1e6]), size=7)
        if rng.random() < 0.05:
            action[rng.integers(7)] = rng.choice([np.nan, np.inf, -np.inf])
        pos = rng.uniform(lo, hi) if rng.random() < 0.8 else rng.uniform(lo - 0.3, hi + 0.3)
        cmd = f(action, _obs(pos=pos), NOW, now=NOW)
        if _outside(pos, lo, hi) == 0:
            assert np.all(cmd.target_position >= lo - 1e-12) and np.all(cmd.target_position <= hi + 1e-12)
        elif not cmd.hold:  # outside: never further from the box
            assert _outside(cmd.target_position, lo, hi) <= _outside(pos, lo, hi) + 1e-12
        assert np.linalg.norm(cmd.target_position - pos) <= f.max_step_m + 1e-9
        assert np.linalg.norm(cmd.delta_rotvec) <= f.max_step_rad + 1e-9
        assert cmd.gripper in (-1.0, 1.0) or (cmd.hold and cmd.gripper == 0.0)
        assert np.all(np.isfinite(cmd.target_position))


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=(1, 0, 0), workspace_max=(0, 1, 1))
    with pytest.raises(ValueError, match="max_speed_m_s"):
        SafetyLimits(max_speed_m_s=0)
    # no off switch: infinities and values past what the arm can do are refused, not taken as "no limit"
    with pytest.raises(ValueError, match="max_speed_m_s must be positive and finite"):
        SafetyLimits(max_speed_m_s=float("inf"))
    with pytest.raises(ValueError, match=r"max_turn_rad_s=3.0 is above 2.5, the Franka's Cartesian rotation"):
        SafetyLimits(max_turn_rad_s=3.0)
    with pytest.raises(ValueError, match="max_action_age_s must be positive and finite"):
        SafetyLimits(max_action_age_s=float("nan"))
    with pytest.raises(ValueError, match="all finite"):
        SafetyLimits(workspace_min=(-float("inf"), 0, 0), workspace_max=(1, 1, 1))
    assert SafetyLimits(max_speed_m_s=1.7, max_turn_rad_s=2.5).max_speed_m_s == 1.7  # the caps themselves pass
    with pytest.raises(ValueError, match="rate_hz"):
        SafetyFilter(rate_hz=0)


def test_a_hold_keeps_the_last_commanded_gripper_and_zero_rotation():
    """A hold must not open a closed gripper (the object would drop) and is what the recorder labels the tick
    with; before any command the gripper is 0 (no command yet: the episode is not recorded until one)."""
    f = SafetyFilter()
    assert not f.gripper_commanded
    assert f(np.zeros(6), _obs(), NOW, now=NOW).gripper == 0.0
    f(np.array([0, 0, 0, 0, 0, 0, 1.0]), _obs(), NOW, now=NOW)  # close
    assert f.gripper_commanded
    for why in (np.full(7, np.nan), np.zeros(6)):
        cmd = f(why, _obs(), NOW, now=NOW)
        assert cmd.hold and cmd.gripper == 1.0 and np.array_equal(cmd.delta_rotvec, np.zeros(3))
    held = f(np.zeros(7), _obs(joint_vel=2.0), NOW, now=NOW)
    assert held.hold and held.gripper == 1.0


def test_the_speed_limits_hold_at_any_control_rate():
    """Per-step limits would let a faster loop move the arm faster (0.02 m per step is 0.3 m/s at 15 Hz, 1 m/s at
    50 Hz); the limits are speeds, so the step shrinks with the period."""
    limits = SafetyLimits()
    for rate in (5.0, 15.0, 20.0, 50.0):
        cmd = SafetyFilter(limits, rate_hz=rate)(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), _obs(), NOW, now=NOW)
        moved = np.linalg.norm(cmd.target_position - _obs().state.ee_position)
        assert moved * rate == pytest.approx(limits.max_speed_m_s), rate
        assert np.linalg.norm(cmd.delta_rotvec) * rate == pytest.approx(limits.max_turn_rad_s), rate
        assert any(f"m/s at {rate:g} Hz" in e for e in cmd.events)
