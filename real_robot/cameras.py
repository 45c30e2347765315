"""Cameras for the control loop: each real camera is read on its own thread, so `latest()` never
blocks; it returns the newest frame with its capture time (time.monotonic()), or None before the
first one. A camera that stalls keeps returning its last frame, whose growing age is what the
watchdog and the safety layer look at. OpenCV and RealSense are imported only when used.

The simulated camera is the exception: MuJoCo's OpenGL context belongs to the control-loop thread,
so `SimCamera` renders there, on demand.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from real_robot.base import CameraFrame

log = logging.getLogger(__name__)


class Camera(Protocol):
    name: str

    def start(self) -> None: ...

    def latest(self) -> CameraFrame | None:
        """The newest frame, immediately (never waits for the device)."""

    def stop(self) -> None: ...


class ThreadedCamera:
    """Runs a blocking `grab()` (returns an RGB (H, W, 3) uint8 image) in a daemon thread."""

    def __init__(self, name: str, grab: Callable[[], np.ndarray], close: Callable[[], None] | None = None,
                 retry_s: float = 0.5):
        self.name, self._grab, self._close, self._retry_s = name, grab, close, retry_s
        self._frame: CameraFrame | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                image = self._grab()
            except Exception as err:  # a device error must not kill the thread: log, back off, retry
                self.errors += 1
                log.warning("camera %s: %s: %s", self.name, type(err).__name__, err)
                self._stop.wait(self._retry_s)
                continue
            frame = CameraFrame(image, time.monotonic())
            with self._lock:
                self._frame = frame

    def latest(self) -> CameraFrame | None:
        with self._lock:
            return self._frame

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)  # a grab stuck in the driver may never return; the thread is a daemon
        if self._close is not None:
            self._close()


def opencv_camera(name: str, device: int | str, width: int, height: int, fps: float = 30.0) -> ThreadedCamera:
    """A V4L2/USB camera (or a video file/stream URL) through cv2.VideoCapture; frames come back as RGB."""
    import cv2

    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise RuntimeError(f"camera {name}: cv2.VideoCapture({device!r}) could not open the device")
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    cap.set(cv2.CAP_PROP_FPS, fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones

    def grab() -> np.ndarray:
        ok, bgr = cap.read()
        if not ok:
            raise RuntimeError(f"cv2.VideoCapture({device!r}) returned no frame")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return ThreadedCamera(name, grab, cap.release)


def realsense_camera(name: str, serial: str | None, width: int, height: int, fps: int = 30) -> ThreadedCamera:
    """An Intel RealSense colour stream (pyrealsense2), RGB8."""
    try:
        import pyrealsense2 as rs
    except ImportError as err:
        raise ImportError("RealSense cameras need pyrealsense2: pip install pyrealsense2") from err
    pipeline, config = rs.pipeline(), rs.config()
    if serial:
        config.enable_device(serial)
    config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
    pipeline.start(config)

    def grab() -> np.ndarray:
        frames = pipeline.wait_for_frames(timeout_ms=1000)
        color = frames.get_color_frame()
        if not color:
            raise RuntimeError("RealSense frame set without a colour frame")
        return np.asanyarray(color.get_data()).copy()

    return ThreadedCamera(name, grab, pipeline.stop)


class SimCamera:
    """A camera of the MuJoCo stand-in (`SimPanda.render`), rendered on the calling thread."""

    def __init__(self, robot, name: str, height: int, width: int):
        self.robot, self.name, self.height, self.width = robot, name, height, width

    def start(self) -> None:
        pass

    def latest(self) -> CameraFrame:
        return self.robot.render(self.name, self.height, self.width)

    def stop(self) -> None:
        pass


def parse_camera_spec(spec: str, width: int = 640, height: int = 480) -> Camera:
    """`name=opencv:<index or path>` or `name=realsense[:<serial>]` (the --camera flag of `vla deploy`).
    Devices capture at a size they support (640x480 by default); the loop centre-crops and resizes."""
    name, sep, source = spec.partition("=")
    kind, _, arg = source.partition(":")
    if not sep or not name or kind not in ("opencv", "realsense"):
        raise ValueError(f"bad camera spec {spec!r}; expected name=opencv:<index|path> or name=realsense[:<serial>]")
    if kind == "opencv":
        if not arg:
            raise ValueError(f"camera spec {spec!r}: opencv needs a device index or path")
        return opencv_camera(name, int(arg) if arg.isdigit() else arg, width, height)
    return realsense_camera(name, arg or None, width, height)
