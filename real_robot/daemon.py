"""`vla deploy`: run a served policy on a robot at a fixed rate, record the episodes.

    vla serve --ckpt runs/x/checkpoints/step_0001000 &            # the policy, its own process
    vla deploy --robot sim --task "pick up the cube" --record data/rollouts_001
    vla deploy --robot franka --robot-ip 172.16.0.2 --camera agentview=realsense:123456 \
               --camera wrist=opencv:0 --task "..." --record data/rollouts_002

The server is reached through `PolicyClient` (openpi protocol); the loop itself is
`real_robot.control_loop.ControlLoop`. SIGINT/SIGTERM end the run cleanly: the arm holds, the
current episode is written, the dataset finalized, cameras and the robot disconnected. Every event
is a JSON line on stdout (and in --log).
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from real_robot.base import ActionScale, OperatorNeeded, Robot
from real_robot.cameras import Camera, SimCamera, parse_camera_spec
from real_robot.chunking import ChunkSchedule
from real_robot.client import PolicyClient
from real_robot.control_loop import ControlLoop, LoopConfig
from real_robot.jsonlog import JsonLog
from real_robot.policy_link import PolicyLink
from real_robot.safety import SafetyLimits

DEFAULT_RATE_HZ = 15.0  # for a server that does not say its policy's rate
DEFAULT_IMAGE_SIZE = 128  # for a server that does not say its policy's image size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", choices=["sim", "franka"], default="sim", help="sim: the MuJoCo Panda stand-in")
    p.add_argument("--robot-ip", default=None, help="Franka FCI address (--robot franka)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=KIND[:ARG]",
                   help="real cameras: agentview=realsense[:serial], wrist=opencv:0 (sim: rendered)")
    p.add_argument("--host", default="127.0.0.1", help="policy server address")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None)
    p.add_argument("--rate", type=float, default=None,
                   help=f"control rate (Hz); default: the rate the served policy's data was recorded at "
                        f"({DEFAULT_RATE_HZ:g} when the server does not say)")
    p.add_argument("--replan", type=int, default=None, help="ticks between policy requests (default: chunk/2)")
    p.add_argument("--ensemble", type=float, default=None, metavar="K",
                   help="temporal ensembling with weights exp(-K*i) (off by default)")
    p.add_argument("--policy-timeout", type=float, default=None, help="s; default: one control period")
    p.add_argument("--frame-timeout", type=float, default=None, help="s; default: one control period")
    p.add_argument("--task", required=True, help="the instruction sent to the policy")
    p.add_argument("--steps", type=int, default=300, help="control ticks per episode")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--reset-wait", type=float, default=5.0, help="s the arm holds between episodes")
    p.add_argument("--image-size", type=int, default=None,
                   help="side of the square frames sent and recorded; default: the size the served policy's "
                        f"training images were stored at ({DEFAULT_IMAGE_SIZE} when the server does not say)")
    p.add_argument("--record", type=Path, default=None, help="new LeRobot dataset directory")
    p.add_argument("--images", action="store_true", help="record PNG frames instead of video")
    p.add_argument("--log", type=Path, default=None, help="also append the JSON-lines log here")
    p.add_argument("--workspace", default=None, metavar="X0,Y0,Z0,X1,Y1,Z1", help="safety box (m, base frame)")
    p.add_argument("--max-speed", type=float, default=None, help="m/s, the end effector's speed limit (safety)")
    p.add_argument("--max-turn", type=float, default=None, help="rad/s, its rotation rate limit (safety)")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="s to wait for the policy server at start")


def limits_from_args(args: argparse.Namespace) -> SafetyLimits:
    overrides: dict = {}
    if args.workspace:
        values = [float(v) for v in args.workspace.split(",")]
        if len(values) != 6:
            raise ValueError(f"--workspace needs 6 numbers x0,y0,z0,x1,y1,z1, got {args.workspace!r}")
        overrides.update(workspace_min=tuple(values[:3]), workspace_max=tuple(values[3:]))
    if args.max_speed is not None:
        overrides["max_speed_m_s"] = args.max_speed
    if args.max_turn is not None:
        overrides["max_turn_rad_s"] = args.max_turn
    return SafetyLimits(**overrides)


def control_rate(args: argparse.Namespace, meta: dict) -> tuple[float, str | None]:
    """The rate to act at and, when it is not the one the served policy's actions were recorded at, why that
    matters: a delta action is a displacement per recorded step, so at another rate the arm moves faster or
    slower than in the demonstrations (the safety layer's speed limits hold either way)."""
    given = meta.get("control_hz")
    if given is not None and (isinstance(given, bool) or not isinstance(given, (int, float))):
        raise ValueError(f"the server's control_hz {given!r} is not a number")
    trained = float(given) if given is not None else None
    if trained is not None and not 0 < trained <= 1000:
        raise ValueError(f"the server's control_hz {given!r} is outside 0 < Hz <= 1000")
    rate = args.rate if args.rate is not None else trained if trained is not None else DEFAULT_RATE_HZ
    if not rate > 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    if trained is None:
        return rate, (f"the server does not say the rate its policy's data was recorded at; acting at {rate:g} Hz")
    if rate != trained:
        return rate, (f"acting at {rate:g} Hz, but the policy's data was recorded at {trained:g} Hz: each action "
                      f"moves the arm as far as one recorded step, so it moves {rate / trained:.2f}x as fast "
                      "as in its demonstrations")
    return rate, None


def served_action_scale(meta: dict) -> ActionScale:
    """The metres/radians per action unit of the simulator the served checkpoint was trained in (`vla serve`
    sends them); a server that sends none (an older one, another openpi server) gets LIBERO's, as the start
    log line shows. A ManiSkill policy run at LIBERO's scale would move half as far and turn 5x as much."""
    given = meta.get("action_scale")
    if given is None:
        return ActionScale()
    try:
        scale = ActionScale(float(given["meters"]), float(given["radians"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the server's action_scale {given!r} is not {{'meters': m, 'radians': r}}") from err
    if not (0 < scale.meters <= 0.2 and 0 < scale.radians <= 1.0):
        raise ValueError(f"the server's action_scale {given!r} is outside 0 < meters <= 0.2, 0 < radians <= 1")
    return scale


def frame_size(args: argparse.Namespace, meta: dict) -> int:
    """--image-size, else the size the served policy's training images were stored at (the server resizes to the
    model's input either way, but frames sent smaller than the training images reach it blurrier than they were)."""
    given = meta.get("image_size")
    if args.image_size is not None:
        size = args.image_size
    elif given is None:
        size = DEFAULT_IMAGE_SIZE
    elif isinstance(given, int) and not isinstance(given, bool):
        size = given
    else:
        raise ValueError(f"the server's image_size {given!r} is not an integer")
    if not 8 <= size <= 2048:
        raise ValueError(f"image size {size} is outside 8..2048 px")
    return size


def make_robot(args: argparse.Namespace, rate_hz: float) -> Robot:
    if args.robot == "sim":
        from real_robot.sim_panda import SimPanda

        return SimPanda(control_hz=rate_hz)
    from real_robot.franka import FrankaRobot

    return FrankaRobot(args.robot_ip)


def make_cameras(args: argparse.Namespace, robot: Robot, names: list[str], size: int) -> dict[str, Camera]:
    if args.robot == "sim":
        if args.camera:
            raise ValueError("--robot sim renders its own cameras; --camera is for real ones")
        return {n: SimCamera(robot, n, size, size) for n in names}
    cams = [parse_camera_spec(spec) for spec in args.camera]
    return {c.name: c for c in cams}


def run(args: argparse.Namespace) -> int:
    import torch  # lerobot's writer imports it anyway: one thread, the policy runs elsewhere

    torch.set_num_threads(1)
    log = JsonLog(args.log)
    stop = threading.Event()
    on_signal = SignalStop(stop)

    limits = limits_from_args(args)  # bad flags fail here, before anything connects
    if args.robot == "franka" and not args.robot_ip:
        raise ValueError("--robot franka needs --robot-ip <FCI address>")
    robot: Robot | None = None
    link = PolicyLink(lambda: PolicyClient(args.host, args.port, args.api_key, timeout_s=2.0))
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cameras: dict[str, Camera] = {}
    recorder = None
    connected = False
    try:
        link.start(wait_s=args.connect_timeout)
        meta = link.metadata
        log("connected", server=f"{args.host}:{args.port}", metadata=meta)
        chunk = int(meta.get("chunk_size", 0)) or None
        scale = served_action_scale(meta)
        rate, rate_note = control_rate(args, meta)
        size = frame_size(args, meta)
        if rate_note:
            log("rate", rate_hz=rate, note=rate_note)
        replan = args.replan or max(1, (chunk or 2) // 2)
        if chunk:  # before the arm connects: a policy this loop cannot run is refused first
            ChunkSchedule(replan, args.ensemble).validate_chunk_size(chunk)
        cfg = LoopConfig(rate_hz=rate, replan_every=replan, ensemble_k=args.ensemble,
                         policy_timeout_s=args.policy_timeout, frame_timeout_s=args.frame_timeout,
                         max_steps=args.steps, task=args.task, image_size=size)
        robot = make_robot(args, rate)
        robot.connect()
        connected = True
        cameras = make_cameras(args, robot, list(meta.get("cameras", ["agentview", "wrist"])), size)
        for cam in cameras.values():
            cam.start()
        if args.record:
            from real_robot.recorder import EpisodeRecorder

            recorder = EpisodeRecorder(args.record, rate, size, list(cameras), args.task,
                                       use_videos=not args.images)
        loop = ControlLoop(robot, cameras, link, cfg, log, limits=limits, scale=scale, recorder=recorder)
        loop.warm_up(args.connect_timeout)
        log("start", robot=args.robot, rate_hz=rate, image_size=size, replan_every=replan, ensemble_k=args.ensemble,
            limits=limits.__dict__, action_scale={"meters": scale.meters, "radians": scale.radians},
            cameras=sorted(cameras), record=str(args.record) if args.record else None)
        for episode in range(args.episodes):
            if stop.is_set():
                break
            try:
                loop.run_episode(stop, episode)
                on_signal.log_received(log)  # a signal ended it: said before the episode is saved
            except OperatorNeeded as err:  # held; the episode so far is saved by the shutdown below
                log("operator_needed", episode=episode, why=str(err), action="hold, save the episode, exit 3")
                return 3
            if recorder is not None:
                frames = recorder.end_episode()
                log("episode_saved", episode=episode, frames=frames, dataset=str(args.record))
            if episode + 1 < args.episodes and not stop.is_set():
                _hold_for(robot, args.reset_wait, rate, stop)
                if robot.fault is not None:  # latched while holding for the reset
                    log("operator_needed", episode=episode + 1, why=f"the robot stopped on a fault: {robot.fault}",
                        action="hold, exit 3")
                    return 3
                robot.new_episode(episode + 1)
        return 0
    finally:
        on_signal.log_received(log)
        _shutdown(robot if connected else None, cameras, link, recorder, log)
        for s, handler in previous.items():
            signal.signal(s, handler)


class SignalStop:
    """SIGINT/SIGTERM handler: only sets the stop event. Python runs handlers on the main thread between two
    bytecodes, possibly inside the log's lock; logging from here would wait on that lock forever."""

    def __init__(self, stop: threading.Event):
        self.stop, self.received, self._logged = stop, [], False

    def __call__(self, signum, _frame) -> None:
        self.received.append(signal.Signals(signum).name)
        self.stop.set()

    def log_received(self, log: JsonLog) -> None:
        """Log the first signal received, once (called from the main loop, outside any handler)."""
        if self.received and not self._logged:
            self._logged = True
            log("signal", signal=self.received[0], received=len(self.received),
                action="hold, save the episode, disconnect")


def _hold_for(robot: Robot, seconds: float, rate: float, stop: threading.Event) -> None:
    """Keep holding (the stand-in's sim advances one period per hold call) while the scene is reset."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        robot.hold()
        stop.wait(1.0 / rate)


def _shutdown(robot: Robot | None, cameras: dict[str, Camera], link: PolicyLink, recorder, log: JsonLog) -> None:
    steps = [("hold", robot.hold)] if robot is not None else []
    if recorder is not None:
        def save() -> None:
            frames = recorder.end_episode()
            if frames:
                log("episode_saved", frames=frames, dataset=str(recorder.root), partial=True)
            recorder.close()
        steps.append(("save_dataset", save))
    steps += [("policy_link", link.stop)] + [(f"camera:{n}", c.stop) for n, c in cameras.items()]
    if robot is not None:
        steps.append(("disconnect", robot.disconnect))
    for name, step in steps:  # every step runs even when an earlier one fails
        try:
            step()
        except Exception as err:
            log("shutdown_error", step=name, error=f"{type(err).__name__}: {err}")
    log("stopped")
    log.close()
