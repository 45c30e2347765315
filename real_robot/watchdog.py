"""The daemon's watchdog: which faults hold the arm this tick.

- policy: a request has been in flight longer than `policy_timeout_s` (default: one control
  period), or the server's last answer was an error (killed server, dropped connection, latency
  spike, a server-side exception); it clears when a good chunk arrives;
- camera: a camera has no frame, or its newest frame is older than `frame_timeout_s` (default: one
  control period); it clears with the next fresh frame.

The watchdog only reports; the loop calls `robot.hold()` while any fault is active and logs every
transition (fault raised, fault cleared) once, not every tick.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from real_robot.base import CameraFrame


@dataclass
class Watchdog:
    policy_timeout_s: float
    frame_timeout_s: float
    request_started: float | None = None  # monotonic time the in-flight request was sent
    policy_error: str | None = None
    active: dict[str, str] = field(default_factory=dict)  # fault name -> why, as of the last check

    def __post_init__(self) -> None:
        if not (self.policy_timeout_s > 0 and self.frame_timeout_s > 0):
            raise ValueError("watchdog timeouts must be positive")

    def request_sent(self, now: float) -> None:
        self.request_started = now

    def reply_received(self, error: str | None) -> None:
        self.request_started = None
        self.policy_error = error

    def check(self, now: float, frames: dict[str, CameraFrame | None]) -> tuple[dict[str, str], list[str], list[str]]:
        """(active faults, faults raised this tick, faults cleared this tick)."""
        faults: dict[str, str] = {}
        if self.request_started is not None and now - self.request_started > self.policy_timeout_s:
            faults["policy"] = f"no answer from the policy server for {now - self.request_started:.3f} s"
        elif self.policy_error is not None:
            faults["policy"] = self.policy_error
        for name, frame in frames.items():
            if frame is None:
                faults[f"camera:{name}"] = "no frame yet"
            elif now - frame.timestamp > self.frame_timeout_s:
                faults[f"camera:{name}"] = f"newest frame is {now - frame.timestamp:.3f} s old"
        raised = [k for k in faults if k not in self.active]
        cleared = [k for k in self.active if k not in faults]
        self.active = faults
        return faults, raised, cleared
