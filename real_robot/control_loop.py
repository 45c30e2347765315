"""The fixed-rate control loop of `vla deploy`.

Every tick (1 / rate_hz, on an absolute schedule so errors do not accumulate):
1. read the robot state and the newest camera frames (never waits for a device);
2. take the policy server's finished replies (chunks) from the `PolicyLink` thread;
3. the watchdog checks the server and the cameras; any fault -> `robot.hold()` for this tick;
4. every `replan_every` ticks send the current observation to the server (without waiting);
5. otherwise the action planned for this tick (`ChunkSchedule`, optionally ensembled) goes through
   the `SafetyFilter` (always) and the command actually executed comes back from `robot.send`;
6. the frame is queued for the episode recorder; then sleep to the next tick.

Faults are logged when raised and when cleared; the loop resumes by itself once the fault clears.
Two are not ridden through (`OperatorNeeded`: the episode ends holding and `vla deploy` exits): a fault the
robot latched (a reflex) and a server that came back from a restart serving another policy.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from real_robot.base import ActionScale, CameraFrame, Command, OperatorNeeded, Robot, RobotObservation
from real_robot.cameras import Camera
from real_robot.chunking import Chunk, ChunkSchedule
from real_robot.jsonlog import JsonLog
from real_robot.policy_link import PolicyLink
from real_robot.recorder import EpisodeRecorder, executed_action, libero_state
from real_robot.safety import SafetyFilter, SafetyLimits
from real_robot.server import OPENPI_CAMERA_KEYS
from real_robot.watchdog import Watchdog


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float = 15.0
    replan_every: int = 4  # ticks between policy requests (the replan horizon)
    ensemble_k: float | None = None  # temporal ensembling weight; None: newest chunk wins
    policy_timeout_s: float | None = None  # default: one control period
    frame_timeout_s: float | None = None  # default: one control period
    max_steps: int = 300  # ticks per episode
    task: str = "pick up the cube"
    image_size: int = 128  # frames sent to the policy and recorded, (size, size, 3)

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass
class EpisodeStats:
    ticks: int = 0
    sent: int = 0  # policy actions executed (possibly clipped)
    holds: int = 0  # ticks spent holding (fault, no action, or a safety hold)
    clipped: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # fault name -> times raised
    overruns: int = 0  # ticks that started more than one period late (ticks were skipped)
    recorded: int = 0  # frames recorded (ticks from the first gripper command on)
    periods_s: list[float] = field(default_factory=list)
    busy_s: list[float] = field(default_factory=list)
    round_trips_s: list[float] = field(default_factory=list)

    def summary(self, period_s: float) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)) * 1000, 3) if values else None

        jitter = [abs(p - period_s) for p in self.periods_s]
        return {"ticks": self.ticks, "sent": self.sent, "holds": self.holds, "clipped": self.clipped,
                "faults": self.faults, "overruns": self.overruns, "recorded": self.recorded,
                "period_ms_p50": pct(self.periods_s, 50), "period_ms_p99": pct(self.periods_s, 99),
                "jitter_ms_p50": pct(jitter, 50), "jitter_ms_p99": pct(jitter, 99),
                "busy_ms_p50": pct(self.busy_s, 50), "busy_ms_p99": pct(self.busy_s, 99),
                "round_trip_ms_p50": pct(self.round_trips_s, 50), "round_trip_ms_p99": pct(self.round_trips_s, 99)}


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square frames as the policies are trained on: centre crop to a square, then resize."""
    if image.shape[:2] == (size, size):
        return image
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)


class ControlLoop:
    def __init__(self, robot: Robot, cameras: dict[str, Camera], link: PolicyLink, cfg: LoopConfig,
                 log: JsonLog, limits: SafetyLimits | None = None, scale: ActionScale | None = None,
                 recorder: EpisodeRecorder | None = None,
                 on_tick: Callable[[int, RobotObservation, Command], None] | None = None):
        self.robot, self.cameras, self.link, self.cfg, self.log = robot, cameras, link, cfg, log
        self.limits, self.scale = limits or SafetyLimits(), scale or ActionScale()
        self.recorder, self.on_tick = recorder, on_tick
        chunk_size = int(link.metadata.get("chunk_size", 0))
        self.policy_cameras = list(link.metadata.get("cameras", list(cameras)))
        missing = [c for c in self.policy_cameras if c not in cameras]
        if missing:
            raise ValueError(f"the policy needs cameras {missing}; the daemon has {sorted(cameras)}")
        self.schedule = ChunkSchedule(cfg.replan_every, cfg.ensemble_k)
        if chunk_size:
            self.schedule.validate_chunk_size(chunk_size)
        self.watchdog = Watchdog(cfg.policy_timeout_s or cfg.period_s, cfg.frame_timeout_s or cfg.period_s)

    def _policy_obs(self, obs: RobotObservation, images: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {OPENPI_CAMERA_KEYS.get(c, c): images[c] for c in self.policy_cameras}
        out["observation/state"] = libero_state(obs)
        out["prompt"] = self.cfg.task
        return out

    def _take_replies(self, stats: EpisodeStats) -> None:
        for reply in self.link.poll():
            error = reply.error
            a = reply.actions
            if error is None and (a is None or a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != 7):
                error = f"reply actions have shape {None if a is None else a.shape}, expected (C, 7) with C >= 1"
            self.watchdog.reply_received(error)
            if error is not None:
                self.schedule.forget_request()
                self.log("policy_error", tick=reply.tick, error=error, round_trip_ms=round(reply.round_trip_s * 1000, 2))
                continue
            stats.round_trips_s.append(reply.round_trip_s)
            self.schedule.add(Chunk(reply.tick, reply.obs_time, reply.actions))

    def warm_up(self, timeout_s: float) -> float:
        """Before the clock starts: wait for every camera's first frame, render once (the stand-in builds
        its renderer), and run one inference (the server's first call is slow). Returns its round trip."""
        deadline = time.monotonic() + timeout_s
        while True:
            obs = self.robot.observe()
            frames = {n: cam.latest() for n, cam in self.cameras.items()}
            if all(f is not None for f in frames.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cameras without a frame after {timeout_s} s: {[n for n, f in frames.items() if f is None]}")
            time.sleep(0.05)
        images = {n: _resize(f.image, self.cfg.image_size) for n, f in frames.items()}
        self.link.submit(-1, time.monotonic(), self._policy_obs(obs, images))
        while time.monotonic() < deadline:
            for reply in self.link.poll():
                if reply.error:
                    raise ConnectionError(f"warm-up inference failed: {reply.error}")
                self.log("warm_up", round_trip_ms=round(reply.round_trip_s * 1000, 2), server_timing=reply.server_timing)
                return reply.round_trip_s
            time.sleep(0.01)
        raise TimeoutError(f"no warm-up answer from the policy server within {timeout_s} s")

    def run_episode(self, stop: threading.Event, episode: int = 0) -> EpisodeStats:
        cfg, period = self.cfg, self.cfg.period_s
        stats = EpisodeStats()
        safety = SafetyFilter(self.limits, self.scale, cfg.rate_hz)
        self.schedule.clear()
        self.log("episode_start", episode=episode, rate_hz=cfg.rate_hz, max_steps=cfg.max_steps,
                 replan_every=cfg.replan_every, ensemble_k=cfg.ensemble_k)
        t0 = time.monotonic()
        tick, last_start = 0, None
        operator: OperatorNeeded | None = None
        while tick < cfg.max_steps and not stop.is_set():
            start = time.monotonic()
            if last_start is not None:
                stats.periods_s.append(start - last_start)
            last_start = start
            try:
                self._tick(tick, start, safety, stats)
            except OperatorNeeded as err:
                operator = err
                break
            stats.ticks += 1
            stats.busy_s.append(time.monotonic() - start)
            tick += 1
            now = time.monotonic()
            if now > t0 + (tick + 1) * period:  # a whole period late: skip ticks to stay on the wall clock
                skipped = int((now - t0) / period) - tick
                stats.overruns += 1
                self.log("overrun", tick=tick, skipped=skipped, late_ms=round((now - t0 - tick * period) * 1000, 2))
                tick += skipped
            stop.wait(max(0.0, t0 + tick * period - time.monotonic()))
        self.robot.hold()
        summary = stats.summary(period)
        self.log("episode_end", episode=episode, stopped=stop.is_set(),
                 operator_needed=str(operator) if operator else None, **summary)
        if operator is not None:
            raise operator
        return stats

    def _operator_needed(self, tick: int) -> None:
        """Stop the run on what must not be ridden through: a fault the arm latched, or a server that came back
        serving another policy."""
        why = self.link.fatal or (f"the robot stopped on a fault: {self.robot.fault}" if self.robot.fault else None)
        if why is not None:
            self.robot.hold()
            self.log("fault", tick=tick, fault="operator_needed", why=why, action="hold, save the episode, exit")
            raise OperatorNeeded(why)

    def _tick(self, tick: int, now: float, safety: SafetyFilter, stats: EpisodeStats) -> None:
        self._operator_needed(tick)
        obs = self.robot.observe()
        frames: dict[str, CameraFrame | None] = {n: cam.latest() for n, cam in self.cameras.items()}
        obs = RobotObservation(obs.state, {**obs.frames, **{n: f for n, f in frames.items() if f is not None}})
        self._take_replies(stats)
        faults, raised, cleared = self.watchdog.check(now, frames)
        for name in raised:
            stats.faults[name] = stats.faults.get(name, 0) + 1
            self.log("fault", tick=tick, fault=name, why=faults[name], action="hold")
        for name in cleared:
            self.log("recovered", tick=tick, fault=name)
        images = {n: _resize(f.image, self.cfg.image_size) for n, f in frames.items() if f is not None}
        camera_ok = not any(k.startswith("camera:") for k in faults)
        if camera_ok and not self.link.in_flight and self.schedule.needs_request(tick):
            if self.link.submit(tick, now, self._policy_obs(obs, images)):
                self.schedule.requested(tick)
                self.watchdog.request_sent(now)
        planned = None if faults else self.schedule.action(tick, self.cfg.period_s)
        if planned is None:
            why = "; ".join(f"{k}: {v}" for k, v in faults.items()) or "no policy action covers this tick yet"
            self.robot.hold()
            command = safety.hold(obs, f"hold: {why}")
        else:
            command = self.robot.send(safety(planned[0], obs, planned[1], now=time.monotonic()))
            if command.events:
                self.log("safety", tick=tick, events=list(command.events))
        if command.hold:
            stats.holds += 1
        else:
            stats.sent += 1
            stats.clipped += bool(command.events)
        # ticks before the episode's first command have no gripper target to label them with: not recorded
        if self.recorder is not None and safety.gripper_commanded and all(c in images for c in self.recorder.cameras):
            self.recorder.add(images, libero_state(obs), executed_action(command, obs, self.scale))
            stats.recorded += 1
        if self.on_tick is not None:
            self.on_tick(tick, obs, command)
        self._operator_needed(tick)  # this tick's command or hold may have faulted the arm
