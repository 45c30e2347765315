"""One simulator in its own process: observations through shared memory, JSON control messages.

A CPU simulator can segfault (MuJoCo instability), hang, or leak; running each env in a child
process lets the parent notice (the pipe closes, or no reply within the timeout), kill it, start a
fresh one and re-run the episode, so a sweep never dies with its simulator. Images and proprio are
written into a shared-memory block the parent reads in place (nothing is pickled per step); the
small control messages are JSON bytes.

Fault injection for tests and chaos runs: `VLA_FAULT_INJECT='{"segfault_at_step": 5, "marker":
"/tmp/x"}'` (or `hang_at_step`) makes the worker crash or hang once at that step; the marker file
records that it happened, so the re-run episode goes through.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from dataclasses import asdict, dataclass
from multiprocessing import shared_memory

import numpy as np

STATE_DIM = 8
CAMERAS = ("agentview", "wrist")


class WorkerCrashed(RuntimeError):
    """The worker process died or stopped answering; the episode it ran must be re-run."""


class EnvError(RuntimeError):
    """The env raised inside a live worker (bad request, or a simulator error such as MuJoCo
    instability); the message is the worker's."""


@dataclass(frozen=True)
class EnvSpec:
    sim: str
    suite: str
    task: int
    image_size: int
    max_steps: int | None = None
    seed: int = 7
    reward: str = "sparse"  # sim.base.REWARD_MODES


def _layout(image_size: int) -> tuple[int, int]:
    """(bytes of all camera images, total bytes) of one worker's shared block."""
    images = len(CAMERAS) * image_size * image_size * 3
    return images, images + STATE_DIM * 4


def _fault(fault: dict, step: int) -> None:
    for kind in ("segfault_at_step", "hang_at_step"):
        if fault.get(kind) != step:
            continue
        marker = fault.get("marker")
        if marker:
            try:  # atomic: of several workers reaching this step together, exactly one fires
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        if kind == "segfault_at_step":
            os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(3600)


def write_mp4(path: str, frames: list[np.ndarray], fps: int) -> None:
    """H.264 mp4 through PyAV (bundled with lerobot); the directory is created as needed."""
    import av

    if not frames:
        raise ValueError("no frames recorded for this episode (reset with record=True)")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _serve(conn, shm_name: str, image_size: int) -> None:
    """Worker main loop: build/reuse the env named by each reset, step it, write obs into shm."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import sim

    shm = shared_memory.SharedMemory(name=shm_name)
    n_img, _ = _layout(image_size)
    images = np.ndarray((len(CAMERAS), image_size, image_size, 3), np.uint8, shm.buf[:n_img])
    state = np.ndarray((STATE_DIM,), np.float32, shm.buf[n_img:n_img + STATE_DIM * 4])
    env, env_spec, steps = None, None, 0
    fault = json.loads(os.environ.get("VLA_FAULT_INJECT") or "{}")  # read once, checked per step
    frames: list[np.ndarray] = []  # the current episode's agentview frames, when recording
    record = False

    def publish(obs, observed: bool = True) -> None:
        if observed:  # unobserved steps leave the last rendered frames in place
            for i, cam in enumerate(CAMERAS):
                images[i] = obs.images[cam]
        state[:] = obs.state
        if record:
            frames.append(obs.images[CAMERAS[0]].copy())

    while True:
        msg = json.loads(conn.recv_bytes())
        try:
            if msg["cmd"] == "close":
                break
            if msg["cmd"] == "reset":
                spec = EnvSpec(**msg["spec"])
                if spec != env_spec:
                    if env is not None:
                        env.close()
                    env = sim.make_env(spec.sim, spec.suite, spec.task, spec.image_size, spec.max_steps, spec.seed, spec.reward)
                    env_spec = spec
                record = bool(msg.get("record", False))
                frames.clear()
                # a per-reset seed re-draws the scene's randomness without rebuilding the env (seconds)
                env.seed = int(msg["seed"]) if msg.get("seed") is not None else spec.seed
                publish(env.reset(msg["init_state"]))
                steps = 0
                reply = {"ok": True, "instruction": env.instruction, "max_steps": env.max_steps}
            elif msg["cmd"] == "step":
                steps += 1
                if fault:
                    _fault(fault, steps)
                observe = bool(msg.get("observe", True)) or record  # videos need every frame
                result = env.step(np.asarray(msg["action"], dtype=np.float32), observe=observe)
                publish(result.observation, observe)
                reply = {"ok": True, "reward": result.reward, "done": result.done}
            elif msg["cmd"] == "save_video":
                write_mp4(msg["path"], frames, int(msg.get("fps", 20)))
                reply = {"ok": True, "frames": len(frames)}
            else:
                reply = {"ok": False, "error": f"unknown command {msg['cmd']!r}"}
        except Exception as err:  # an env error is reported, the worker stays up
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        conn.send_bytes(json.dumps(reply).encode())
    if env is not None:
        env.close()
    del images, state
    shm.close()


class EnvWorker:
    """Parent-side handle of one worker process; `restart()` replaces a dead or hung one."""

    def __init__(self, image_size: int, timeout_s: float = 120.0):
        self.image_size, self.timeout_s = image_size, timeout_s
        n_img, total = _layout(image_size)
        self.shm = shared_memory.SharedMemory(create=True, size=total)
        self.images = np.ndarray((len(CAMERAS), image_size, image_size, 3), np.uint8, self.shm.buf[:n_img])
        self.state = np.ndarray((STATE_DIM,), np.float32, self.shm.buf[n_img:n_img + STATE_DIM * 4])
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: MuJoCo/EGL state must not be inherited
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.shm.name, self.image_size), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def send(self, msg: dict) -> None:
        try:
            self.conn.send_bytes(json.dumps(msg).encode())
        except (BrokenPipeError, OSError) as err:
            raise WorkerCrashed(f"worker {self.pid} is gone: {err}") from err

    def receive(self, timeout_s: float | None = None) -> dict:
        """The reply to the last message; WorkerCrashed if the process died or timed out."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            if not self.conn.poll(timeout):
                raise WorkerCrashed(f"worker {self.pid} did not answer within {timeout:.0f} s")
            reply = json.loads(self.conn.recv_bytes())
        except (EOFError, ConnectionResetError, OSError) as err:
            raise WorkerCrashed(f"worker {self.pid} died (exit code {self.proc.exitcode})") from err
        if not reply["ok"]:
            raise EnvError(f"env error in worker {self.pid}: {reply['error']}")
        return reply

    def reset(self, spec: EnvSpec, init_state: int, record: bool = False, seed: int | None = None) -> dict:
        """Reset to `init_state` (building the env if `spec` changed); `seed` overrides spec.seed for this
        reset only (LIBERO's fixture placement, ManiSkill's episode seed)."""
        self.send({"cmd": "reset", "spec": asdict(spec), "init_state": init_state, "record": record, "seed": seed})
        return self.receive(max(self.timeout_s, 300.0))  # building a LIBERO env takes a while

    def observation(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the latest (cams, H, W, 3) images and (8,) state from shared memory."""
        return self.images.copy(), self.state.copy()

    def restart(self) -> None:
        self.restarts += 1
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.send({"cmd": "close"})
                self.proc.join(timeout=10)
        except WorkerCrashed:
            pass
        self._kill()
        del self.images, self.state
        self.shm.close()
        self.shm.unlink()
