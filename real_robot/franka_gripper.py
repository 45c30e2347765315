"""The Franka Hand through franky, in a child process that owns the gripper connection.

franky's `Gripper.width` waits for the gripper's next status message (~0.1 s, franky issue #35) and is bound
without releasing the GIL, so in the daemon's process every read would stall the control loop and every other
thread (cameras, the policy link, the log) for that long. The child reads the width continuously into shared
memory and sends the open/close commands it is given; the daemon's side never waits on it.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import queue
import signal
import time

_STOP = "stop"


def _gripper_main(ip: str, speed: float, force: float, open_width: float, width, commands, errors) -> None:
    # Ctrl-C and systemd's stop reach the whole process group: the daemon stops this process itself, after
    # holding the arm and saving the episode (a gripper dead first would read as a fault)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = mp.parent_process()
    try:
        import franky

        gripper = franky.Gripper(ip)
        while parent is None or parent.is_alive():  # a daemon killed hard (SIGKILL, a crash) leaves no orphan
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = None
            if command == _STOP:
                return
            if command == "close":
                gripper.grasp_async(0.0, speed, force, epsilon_outer=1.0)
            elif command == "open":
                gripper.move_async(open_width, speed)
            width.value = float(gripper.width)  # blocks until the gripper's next status message
    except Exception as err:  # reported to the daemon's side, which turns it into a robot fault
        errors.put(f"{type(err).__name__}: {err}")


class GripperProcess:
    def __init__(self, ip: str, speed: float, force: float, open_width: float, first_timeout_s: float = 10.0):
        ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or CUDA state inherited from the daemon
        self._last_error: str | None = None
        self._width = ctx.Value("d", math.nan, lock=False)
        self._commands, self._errors = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_gripper_main, name="franka-gripper", daemon=True,
                                    args=(ip, speed, force, open_width, self._width, self._commands, self._errors))
        self._process.start()
        deadline = time.monotonic() + first_timeout_s
        while math.isnan(self._width.value):
            if self.error() is not None or time.monotonic() > deadline:
                why = self.error() or f"no gripper width within {first_timeout_s} s"
                self.stop()
                raise ConnectionError(f"Franka gripper at {ip}: {why}")
            time.sleep(0.01)

    def latest(self) -> float:
        """The newest width (m); never waits."""
        return float(self._width.value)

    def command(self, close: bool) -> None:
        self._commands.put("close" if close else "open")

    def error(self) -> str | None:
        """Why the gripper process stopped, once it has (None while it runs)."""
        if self._last_error is None:
            alive = self._process.is_alive()
            try:  # a process that died has flushed its message (if any) before exiting
                self._last_error = self._errors.get_nowait() if alive else self._errors.get(timeout=0.2)
            except queue.Empty:
                if not alive:
                    self._last_error = f"the gripper process exited (code {self._process.exitcode})"
        return self._last_error

    def stop(self) -> None:
        if self._process.is_alive():
            self._commands.put(_STOP)
            self._process.join(1.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(1.0)
