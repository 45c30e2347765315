"""Deployment episodes written as a LeRobot dataset in the LIBERO layout (`vla.data.features`), so
real rollouts load with `vla.data.dataset.open_dataset` and can feed the next fine-tune.

One frame per control tick: the camera images, the 8-dim state (end-effector position + axis-angle
+ two finger positions, as LIBERO) and the 7-dim normalized action actually executed (the safety
layer's output converted back to the policy's convention; a hold is a zero motion). Frames go to a
writer thread through a queue so image encoding never runs on the control loop; `end_episode`
waits for the queue and saves (video encoding happens there, while the arm holds).
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import numpy as np

from real_robot.base import ActionScale, Command, RobotObservation
from vla.data.features import ACTION_KEY, CAMERA_TO_KEY, STATE_KEY, libero_features

log = logging.getLogger(__name__)


def libero_state(obs: RobotObservation) -> np.ndarray:
    """(8,) float32: ee position (3) + axis-angle (3) + finger positions (+w/2, -w/2)."""
    s = obs.state
    half = s.gripper_width / 2
    return np.concatenate([s.ee_position, s.ee_rotvec, [half, -half]]).astype(np.float32)


def executed_action(command: Command, obs: RobotObservation, scale: ActionScale) -> np.ndarray:
    """The command as a normalized 7-dim action relative to the pose it was sent from."""
    if command.hold:
        return np.array([0, 0, 0, 0, 0, 0, command.gripper], dtype=np.float32)
    move = (np.asarray(command.target_position) - obs.state.ee_position) / scale.meters
    turn = np.asarray(command.delta_rotvec) / scale.radians
    return np.concatenate([move, turn, [command.gripper]]).astype(np.float32)


class EpisodeRecorder:
    def __init__(self, root: Path, fps: float, image_size: int, cameras: list[str], task: str,
                 repo_id: str | None = None, use_videos: bool = True):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        root = Path(root)
        if root.exists():
            raise FileExistsError(f"dataset root {root} already exists; pick a new --record path")
        unknown = [c for c in cameras if c not in CAMERA_TO_KEY]
        if unknown:
            raise ValueError(f"cameras {unknown} have no dataset key; recordable cameras: {sorted(CAMERA_TO_KEY)}")
        if abs(fps - round(fps)) > 1e-9:
            raise ValueError(f"LeRobot datasets need an integer fps; the control rate is {fps} Hz")
        features = libero_features(image_size, use_videos)
        for cam, key in CAMERA_TO_KEY.items():
            if cam not in cameras:
                del features[key]
        self.cameras, self.task, self.image_size = cameras, task, image_size
        self.root = root
        self.ds = LeRobotDataset.create(repo_id=repo_id or f"local/{root.name}", fps=int(round(fps)), root=root,
                                        features=features, robot_type="panda", use_videos=use_videos)
        self._queue: queue.Queue = queue.Queue()
        self.frames_in_episode = 0
        self.episodes = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add(self, images: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray) -> None:
        if self._error is not None:
            raise RuntimeError(f"the episode writer failed: {self._error}") from self._error
        for cam in self.cameras:
            shape = images[cam].shape
            if shape != (self.image_size, self.image_size, 3):
                raise ValueError(f"camera {cam}: frame {shape}, the dataset expects ({self.image_size}, {self.image_size}, 3)")
        frame = {CAMERA_TO_KEY[c]: images[c] for c in self.cameras}
        frame.update({STATE_KEY: state, ACTION_KEY: action, "task": self.task})
        self._queue.put(frame)
        self.frames_in_episode += 1

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            try:
                if frame is None:
                    return
                if self._error is None:
                    self.ds.add_frame(frame)
            except BaseException as err:  # surfaced to the loop on its next add / end_episode
                self._error = err
                log.error("episode writer failed: %s", err)
            finally:
                self._queue.task_done()

    def end_episode(self) -> int:
        """Flush and save the current episode; returns its frame count (0: nothing saved)."""
        self._queue.join()
        if self._error is not None:
            raise RuntimeError(f"the episode writer failed: {self._error}") from self._error
        frames, self.frames_in_episode = self.frames_in_episode, 0
        if frames:
            self.ds.save_episode(parallel_encoding=False)  # 2-core machines: no encoder process pool
            self.episodes += 1
        return frames

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.ds.finalize()  # without it the parquet footers are missing and the dataset cannot be read
