"""Reading LeRobot-format datasets through the lerobot library.

`open_dataset` takes a local dataset directory or a Hub repo id (downloaded by lerobot when there
is internet), `validate_dataset` checks keys/shapes against the policy before any training starts,
and `FrameCache` decodes every frame once into memory at model resolution (right for the small
datasets of a CPU run; `StreamingFrames` reads through lerobot on every access for large ones).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vla.data.features import ACTION_KEY, KNOWN_LAYOUTS, DatasetKeys
from vla.normalize import compute_stats


class DatasetError(ValueError):
    """A dataset that does not match what the policy expects."""


def _format_error(source: str, version: str | None) -> DatasetError:
    found = f"LeRobot format {version}" if version else "an older LeRobot format"
    return DatasetError(
        f"dataset {source} is {found}; the installed lerobot reads only v3.0. The same LIBERO demonstrations are on "
        f"the Hub in v3.0 as lerobot/libero or HuggingFaceVLA/libero (their wrist camera: data.camera_keys={{wrist: "
        f"observation.images.image2}}); or convert a v2.1 dataset with `python -m "
        f"lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<name> --root=<its parent directory> "
        f"--push-to-hub=false` (a v2.0 one needs lerobot<0.4's convert_dataset_v20_to_v21 first)")


def open_dataset(source: str, chunk_size: int | None = None, action_key: str = ACTION_KEY):
    """LeRobotDataset from a local directory (with meta/info.json) or a Hub repo id; `chunk_size` opens it with
    an action window of that many steps on `action_key`."""
    import json

    from lerobot.datasets.backward_compatibility import CompatibilityError
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    path = Path(source).expanduser()
    if path.exists():
        info = path / "meta" / "info.json"
        if not info.is_file():
            raise DatasetError(f"{path} is not a LeRobot dataset (no meta/info.json)")
        version = str(json.loads(info.read_text()).get("codebase_version", ""))
        if not version.startswith("v3"):
            raise _format_error(source, version or None)
    try:
        delta = None
        if chunk_size is not None:
            # fps is read from the metadata first so the time window matches the dataset's rate
            meta = LeRobotDatasetMetadata(path.name, root=path) if path.is_dir() else LeRobotDatasetMetadata(source)
            delta = {action_key: [i / meta.fps for i in range(chunk_size)]}
        if path.exists():
            return LeRobotDataset(path.name, root=path, delta_timestamps=delta)
        return LeRobotDataset(source, delta_timestamps=delta)
    except (CompatibilityError, NotImplementedError) as err:  # a Hub dataset in an older format
        raise _format_error(source, None) from err


@dataclass(frozen=True)
class DatasetLayout:
    camera_keys: tuple[str, ...]
    state_dim: int
    action_dim: int
    keys: DatasetKeys = DatasetKeys()


def validate_dataset(ds, cameras: list[str], action_dim: int, use_state: bool,
                     keys: DatasetKeys = DatasetKeys()) -> DatasetLayout:
    """Check the features the policy needs; every problem found is listed in one error, with the overrides
    for a known LIBERO layout whose keys the dataset has."""
    features = ds.meta.features
    problems = []
    camera_keys = []
    for cam in cameras:
        key = keys.camera(cam)
        camera_keys.append(key)
        if key not in features:
            problems.append(f"camera '{cam}' needs key '{key}'")
    if keys.action not in features:
        problems.append(f"missing '{keys.action}'")
    elif tuple(features[keys.action]["shape"]) != (action_dim,):
        problems.append(f"'{keys.action}' has shape {tuple(features[keys.action]['shape'])}, the policy expects ({action_dim},)")
    state_dim = 0
    if use_state:
        if keys.state not in features:
            problems.append(f"missing '{keys.state}' (set data.use_state=false to train without proprio)")
        else:
            state_dim = int(np.prod(features[keys.state]["shape"]))
    if len(set(camera_keys)) < len(camera_keys):
        problems.append(f"two cameras read the same key ({camera_keys})")
    if problems:
        known = [f" This is {name}'s layout: add {layout.overrides(cameras)}." for name, layout in KNOWN_LAYOUTS.items()
                 if layout != keys and _has_keys(features, layout, cameras, use_state)]
        raise DatasetError(f"dataset {ds.root}: " + "; ".join(problems) + f". It has keys: {sorted(features)}."
                           + "".join(known))
    return DatasetLayout(tuple(camera_keys), state_dim, action_dim, keys)


def _has_keys(features, keys: DatasetKeys, cameras: list[str], use_state: bool) -> bool:
    needed = [keys.camera(c) for c in cameras] + [keys.action] + ([keys.state] if use_state else [])
    return all(k in features for k in needed)


# A column read scans the whole table, and training start needs the action, state and episode columns in the
# statistics, the gripper check and the frame cache: each is read once per opened dataset, and kept read-only.
_COLUMNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _column(ds, key: str, dtype: type = np.float32) -> np.ndarray:
    read = _COLUMNS.setdefault(ds, {})
    if (key, dtype) not in read:
        values = np.stack(ds.hf_dataset.with_format("numpy")[key]).astype(dtype)
        values.flags.writeable = False
        read[(key, dtype)] = values
    return read[(key, dtype)]


def dataset_stats(ds, use_state: bool, keys: DatasetKeys = DatasetKeys(),
                  rows: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Statistics from the raw columns (not lerobot's stats.json: we check them for NaNs ourselves), over `rows`
    (the frames trained on) or all frames."""
    def column(key: str) -> np.ndarray:
        values = _column(ds, key)
        return values if rows is None else values[rows]

    stats = {"action": compute_stats(column(keys.action), keys.action)}
    if use_state:
        stats["state"] = compute_stats(column(keys.state), keys.state)
    return stats


def episode_index(ds) -> np.ndarray:
    """Each frame's episode, read once per opened dataset."""
    return _column(ds, "episode_index", np.int64)


def stored_image_size(ds, cameras: list[str], keys: DatasetKeys = DatasetKeys()) -> int | None:
    """The largest side of the policy's cameras when they are all square, as a simulator renders (None when
    the features do not say, or an image is not square)."""
    sizes = []
    for cam in cameras:
        shape = [int(d) for d in ds.meta.features.get(keys.camera(cam), {}).get("shape") or []]
        sides = [d for d in shape if d > 4]  # height and width, whichever side the channels are on
        if len(sides) != 2 or sides[0] != sides[1]:
            return None
        sizes.append(sides[0])
    return max(sizes) if sizes else None


def check_dataset_gripper(ds, layout: DatasetLayout) -> None:
    """The last action dimension is a gripper in -1 open / +1 close (vla.data.gripper_check)."""
    from vla.data.gripper_check import check_gripper_convention

    actions = _column(ds, layout.keys.action)
    episodes = episode_index(ds)
    state = _column(ds, layout.keys.state) if layout.keys.state in ds.meta.features else None
    try:
        check_gripper_convention(actions, episodes, state, actions.shape[1] - 1)
    except ValueError as err:
        raise DatasetError(f"dataset {ds.root}: {err}") from err


def action_chunks(actions: np.ndarray, episode: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) per-frame actions -> (N, chunk, A) windows that stop at the episode end, plus a pad
    mask; past the end the last action is repeated and marked as padding (as lerobot does)."""
    n = len(actions)
    idx = np.arange(n)[:, None] + np.arange(chunk)[None]
    ends = np.zeros(n, dtype=np.int64)
    for ep in np.unique(episode):
        rows = np.nonzero(episode == ep)[0]
        ends[rows] = rows.max()
    pad = idx > ends[:, None]
    idx = np.minimum(idx, ends[:, None])
    return actions[idx], pad


def _to_uint8_hwc(images: torch.Tensor, size: int) -> torch.Tensor:
    """lerobot's float (N, 3, H, W) frames in [0, 1] -> uint8 (N, size, size, 3)."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class FrameCache:
    """Every frame decoded once: uint8 images at model resolution, raw state, action chunks."""

    def __init__(self, ds, layout: DatasetLayout, chunk_size: int, image_size: int, num_workers: int = 0):
        n = ds.num_frames
        self.images = torch.zeros((n, len(layout.camera_keys), image_size, image_size, 3), dtype=torch.uint8)
        frames = _CurrentFrameImages(ds)
        loader = torch.utils.data.DataLoader(frames, batch_size=32, num_workers=num_workers,
                                             collate_fn=_collate_images(layout.camera_keys, image_size))
        i = 0
        for u8 in loader:  # (b, cams, size, size, 3) uint8
            self.images[i:i + len(u8)] = u8
            i += len(u8)
        acts, pad = action_chunks(_column(ds, layout.keys.action), episode_index(ds), chunk_size)
        bad = ~np.isfinite(acts)
        if bad.any():
            raise DatasetError(f"'{layout.keys.action}' holds NaN/inf values (frame {int(np.argwhere(bad)[0, 0])})")
        self.actions = torch.from_numpy(acts)
        self.action_pad = torch.from_numpy(pad)
        self.state = torch.from_numpy(_column(ds, layout.keys.state).copy()) if layout.state_dim else torch.zeros(n, 0)
        task_index = _column(ds, "task_index", np.int64)
        names = {int(row.task_index): name for name, row in ds.meta.tasks.iterrows()}
        self.tasks = [names[int(t)] for t in task_index]

    def __len__(self) -> int:
        return len(self.tasks)

    def batch(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {
            "images": self.images[idx],
            "state": self.state[idx],
            "action": self.actions[idx],
            "action_pad": self.action_pad[idx],
            "task": [self.tasks[i] for i in indices],
        }


class StreamingFrames:
    """Reads each batch through lerobot (video decode per access), for datasets too big to cache.
    Same `batch()` output as FrameCache; image frames are read by a small thread pool, video frames by one
    thread: lerobot's video decoding is not thread-safe (concurrent reads of one dataset's videos returned
    frames from the wrong time, or crashed the process with a segfault)."""

    def __init__(self, ds, layout: DatasetLayout, image_size: int, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        if ds.delta_indices is None:
            raise DatasetError("streaming needs the dataset opened with an action window (open_dataset(chunk_size=...))")
        self.ds, self.layout, self.image_size = ds, layout, image_size
        self.threads = 1 if ds.meta.video_keys else threads
        self.pool = ThreadPoolExecutor(max_workers=self.threads)

    def __len__(self) -> int:
        return self.ds.num_frames

    def _frame(self, i: int) -> dict:
        item = self.ds[i]
        # each camera resized on its own: a dataset's cameras may differ in resolution
        u8 = torch.cat([_to_uint8_hwc(item[k][None], self.image_size) for k in self.layout.camera_keys])
        keys = self.layout.keys
        state = item[keys.state].float() if self.layout.state_dim else torch.zeros(0)
        return {"images": u8, "state": state, "action": item[keys.action].float(),
                "action_pad": item[f"{keys.action}_is_pad"].bool(), "task": item["task"]}

    def batch(self, indices: list[int]) -> dict:
        frames = list(self.pool.map(self._frame, indices))
        out = {k: torch.stack([f[k] for f in frames]) for k in ("images", "state", "action", "action_pad")}
        out["task"] = [f["task"] for f in frames]
        return out


class _CurrentFrameImages(torch.utils.data.Dataset):
    """The dataset's frames without the action window (images only need the current frame)."""

    def __init__(self, ds):
        self.ds = ds
        self.saved_delta = ds.delta_indices

    def __len__(self):
        return self.ds.num_frames

    def __getitem__(self, i):
        self.ds.delta_indices = None
        try:
            return self.ds[i]
        finally:
            self.ds.delta_indices = self.saved_delta


def _collate_images(keys, size: int):
    """Items' frames of every camera -> uint8 (b, cams, size, size, 3); each camera is resized as one
    batch of its own, since a dataset's cameras may differ in resolution."""
    def collate(items):
        return torch.stack([_to_uint8_hwc(torch.stack([item[k] for item in items]), size) for k in keys], dim=1)

    return collate


class EpochSampler:
    """Shuffled index order per epoch from (seed, epoch); its position is part of the resume state."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < batch_size * world:
            raise DatasetError(f"dataset has {n} frames, fewer than one batch ({batch_size} x {world} ranks)")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._cached: tuple[int, torch.Tensor] | None = None  # (epoch, permutation): one randperm per epoch

    def _order(self) -> torch.Tensor:
        if self._cached is None or self._cached[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self._cached = (self.epoch, torch.randperm(self.n, generator=g))
        return self._cached[1]

    def next_batch(self) -> list[int]:
        span = self.batch_size * self.world
        if self.pos + span > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
        order = self._order()[self.pos:self.pos + span]
        self.pos += span
        return order[self.rank::self.world].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
