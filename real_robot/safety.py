"""Safety layer between the policy and the arm; on by default and not optional in the daemon.

Every control step the raw policy action is checked against `SafetyLimits`:
- NaN/inf anywhere (the action or the arm's measured state), a wrong shape, a policy answer older than `max_action_age_s` or a camera frame
  older than `max_frame_age_s` -> hold (the arm keeps its pose);
- the translation is clipped to `max_speed_m_s` (per step: divided by the control rate) and the target to the
  workspace box; an arm found outside the box is moved back towards it no faster than that;
- the rotation is clipped to `max_turn_rad_s` (per step likewise);
- the gripper command is binary, the sign of the action (0 keeps the last one), as every backend and LIBERO act
  on it, and it switches between open and close at most every `min_gripper_switch_s` (no chattering);
- joint velocities above `max_joint_velocity` -> hold.
Each clip or hold is reported in `Command.events` (and logged by the daemon), never silent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from real_robot.base import ActionScale, Command, RobotObservation


# no override goes past what a Franka arm can do at all (its datasheet's Cartesian and joint velocity limits), or
# lets a stale answer or frame act: the layer has no off switch, `inf` included
HARD_CAPS = {"max_speed_m_s": 1.7, "max_turn_rad_s": 2.5, "max_joint_velocity": 2.61, "max_action_age_s": 2.0,
             "max_frame_age_s": 2.0}
CAP_REASONS = {"max_speed_m_s": "the Franka's Cartesian speed limit (m/s)",
               "max_turn_rad_s": "the Franka's Cartesian rotation speed limit (rad/s)",
               "max_joint_velocity": "the fastest Franka joint's limit (rad/s)",
               "max_action_age_s": "past which an answer is too old to act on (s)",
               "max_frame_age_s": "past which a frame is too old to act on (s)"}


@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.02)  # m, Franka base frame, above the table
    workspace_max: tuple[float, float, float] = (0.75, 0.35, 0.60)
    # speeds, not per-step sizes: the same limit holds at any control rate (per step: 0.02 m, 0.15 rad at 15 Hz)
    max_speed_m_s: float = 0.3
    max_turn_rad_s: float = 2.25
    min_gripper_switch_s: float = 0.5  # the gripper switches open <-> close at most this often
    max_joint_velocity: float = 1.5  # rad/s, below the Franka's 2.1-2.6 rad/s hardware limits
    max_action_age_s: float = 0.2
    max_frame_age_s: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = np.array(self.workspace_min, dtype=float), np.array(self.workspace_max, dtype=float)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}, "
                             "all finite")
        for name in ("max_speed_m_s", "max_turn_rad_s", "min_gripper_switch_s", "max_joint_velocity", "max_action_age_s",
                     "max_frame_age_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"safety limit {name} must be positive and finite, got {value}")
            if name in HARD_CAPS and value > HARD_CAPS[name]:
                raise ValueError(f"safety limit {name}={value} is above {HARD_CAPS[name]}, {CAP_REASONS[name]}")


@dataclass
class SafetyFilter:
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    scale: ActionScale = field(default_factory=ActionScale)
    rate_hz: float = 15.0  # the control rate: the speed limits become per-step limits at it
    _gripper: float | None = None  # the last commanded gripper, -1 or +1
    _switched_at: float = -float("inf")

    @property
    def gripper_commanded(self) -> bool:
        """Whether a gripper command has been sent this episode (before one, a hold's gripper is unknown)."""
        return self._gripper is not None

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"the safety filter's rate_hz must be positive, got {self.rate_hz}")

    @property
    def max_step_m(self) -> float:
        return self.limits.max_speed_m_s / self.rate_hz

    @property
    def max_step_rad(self) -> float:
        return self.limits.max_turn_rad_s / self.rate_hz

    def hold(self, obs: RobotObservation, why: str) -> Command:
        s = obs.state
        gripper = self._gripper if self._gripper is not None else 0.0
        return Command(s.ee_position.copy(), np.zeros(3), gripper, hold=True, events=(why,))

    def _binary_gripper(self, value: float, now: float, events: list[str]) -> float:
        """-1 or +1, what is executed and recorded: fractions would be labels no backend acts on (the next
        fine-tune would learn them). A switch within min_gripper_switch_s of the last one waits."""
        want = 1.0 if value > 0 else -1.0 if value < 0 else (self._gripper if self._gripper is not None else -1.0)
        if self._gripper is not None and want != self._gripper:  # the episode's first command is no switch
            since = now - self._switched_at
            if since < self.limits.min_gripper_switch_s:
                events.append(f"clip: gripper switch to {want:+.0f} waits ({since:.2f} s after the last, "
                              f"min {self.limits.min_gripper_switch_s} s)")
                return self._gripper
            self._switched_at = now
        self._gripper = want
        return want

    def __call__(self, action: np.ndarray, obs: RobotObservation, action_time: float, now: float | None = None) -> Command:
        """The command to send for a raw policy `action` computed at `action_time` (monotonic)."""
        now = time.monotonic() if now is None else now
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            return self.hold(obs, f"hold: action shape {a.shape}, expected (7,)")
        if not np.all(np.isfinite(a)):
            return self.hold(obs, f"hold: non-finite action {a.tolist()}")
        measured = {"ee_position": obs.state.ee_position, "ee_rotvec": obs.state.ee_rotvec,
                    "joint_velocities": obs.state.joint_velocities}
        broken = [name for name, v in measured.items() if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
        if broken:  # a target computed from a NaN pose would be NaN; a NaN velocity would pass the speed check
            return self.hold(obs, f"hold: non-finite robot state {broken}")
        if now - action_time > self.limits.max_action_age_s:
            return self.hold(obs, f"hold: action is {now - action_time:.3f} s old (limit {self.limits.max_action_age_s})")
        stale = [n for n, f in obs.frames.items() if now - f.timestamp > self.limits.max_frame_age_s]
        if stale:
            return self.hold(obs, f"hold: stale camera frames {stale}")
        fast = np.abs(obs.state.joint_velocities).max(initial=0.0)
        if fast > self.limits.max_joint_velocity:
            return self.hold(obs, f"hold: joint velocity {fast:.2f} rad/s over {self.limits.max_joint_velocity}")
        events: list[str] = []
        if np.any(np.abs(a) > 1.0):
            events.append(f"clip: action outside [-1, 1] {np.round(a, 3).tolist()}")
            a = np.clip(a, -1.0, 1.0)
        delta = a[:3] * self.scale.meters
        step = np.linalg.norm(delta)
        if step > self.max_step_m:
            delta *= self.max_step_m / step
            events.append(f"clip: translation {step:.4f} m -> {self.max_step_m:.4f} m per step "
                          f"({self.limits.max_speed_m_s} m/s at {self.rate_hz:g} Hz)")
        target = obs.state.ee_position + delta
        boxed = np.clip(target, self.limits.workspace_min, self.limits.workspace_max)
        if not np.allclose(boxed, target):
            events.append(f"clip: target {np.round(target, 3).tolist()} into the workspace box")
            # from outside the box the boxed target can be far away: approach it at the step limit
            move = boxed - obs.state.ee_position
            far = np.linalg.norm(move)
            if far > self.max_step_m:
                boxed = obs.state.ee_position + move * (self.max_step_m / far)
                events.append(f"clip: the arm is outside the workspace box, its boxed target {far:.3f} m away; "
                              f"moving back {self.max_step_m:.4f} m per step")
        rot = a[3:6] * self.scale.radians
        angle = np.linalg.norm(rot)
        if angle > self.max_step_rad:
            rot *= self.max_step_rad / angle
            events.append(f"clip: rotation {angle:.3f} rad -> {self.max_step_rad:.3f} rad per step "
                          f"({self.limits.max_turn_rad_s} rad/s at {self.rate_hz:g} Hz)")
        gripper = self._binary_gripper(float(a[6]), now, events)
        return Command(boxed, rot, gripper, hold=False, events=tuple(events))
