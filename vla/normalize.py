"""Normalization of actions and proprio with statistics stored in the checkpoint.

Modes: `q01_q99` maps [q01, q99] to [-1, 1] and clips (OpenVLA/OFT; [min, max] for a dimension whose q01
equals its q99), `mean_std` standardizes,
`identity` passes through. Dims listed in `skip_dims` stay as they are (the gripper). Asking for
a key that has no statistics is an error: a silent pass-through is how normalization bugs hide.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

MODES = ("q01_q99", "mean_std", "identity")
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
_EPS = 1e-6


def compute_stats(values: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Statistics over axis 0 of an (N, D) array; NaN/inf is an error naming the key."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"stats for '{name}': expected a non-empty (N, D) array, got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"stats for '{name}': {int(bad.sum())} NaN/inf values (first at frame {row})")
    return {
        "mean": values.mean(0),
        "std": values.std(0),
        "min": values.min(0),
        "max": values.max(0),
        "q01": np.quantile(values, 0.01, axis=0),
        "q99": np.quantile(values, 0.99, axis=0),
    }


@dataclass
class KeySpec:
    mode: str
    skip_dims: tuple[int, ...] = ()
    narrow_min_max: bool = True  # q01_q99: a dimension with q01 == q99 is bounded by min/max instead


class Normalizer:
    """Holds per-key statistics and the mode each key is normalized with."""

    def __init__(self, stats: dict[str, dict[str, np.ndarray]], specs: dict[str, KeySpec]):
        for key, spec in specs.items():
            if spec.mode not in MODES:
                raise ValueError(f"normalization mode '{spec.mode}' for '{key}' is unknown; valid: {MODES}")
            if spec.mode != "identity" and key not in stats:
                raise KeyError(f"no normalization statistics for '{key}'; stats have: {sorted(stats)}")
        self.stats = {k: {s: np.asarray(v, dtype=np.float32) for s, v in d.items()} for k, d in stats.items()}
        self.specs = specs

    def _spec(self, key: str) -> KeySpec:
        if key not in self.specs:
            raise KeyError(f"no normalization spec for '{key}'; known keys: {sorted(self.specs)}")
        return self.specs[key]

    def _affine(self, key: str, like: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(scale, offset) with normalized = (x - offset) / scale, or None for identity."""
        spec = self._spec(key)
        if spec.mode == "identity":
            return None
        st = self.stats[key]
        if spec.mode == "q01_q99":
            # a dimension holding one value in 98%+ of frames has q01 == q99: its rare other values (a gripper
            # opening, an occasional rotation) would all clip to +-1 and come back as that value +- 1e-6, lost;
            # such a dimension is bounded by its min and max instead (a constant one still maps to 0)
            narrow = ((st["q99"] - st["q01"]) < 2 * _EPS) & spec.narrow_min_max
            low, high = np.where(narrow, st["min"], st["q01"]), np.where(narrow, st["max"], st["q99"])
            offset = (high + low) / 2
            scale = np.maximum((high - low) / 2, _EPS)
        else:
            offset, scale = st["mean"], np.maximum(st["std"], _EPS)
        dim = like.shape[-1]
        if offset.shape[0] != dim:
            raise ValueError(f"'{key}' has {dim} dims but its statistics have {offset.shape[0]}")
        offset, scale = offset.copy(), scale.copy()
        for d in spec.skip_dims:
            offset[d], scale[d] = 0.0, 1.0
        return scale, offset

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        aff = self._affine(key, x)
        if aff is None:
            return x
        scale, offset = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in aff)
        y = (x - offset) / scale
        if self._spec(key).mode == "q01_q99":
            y = y.clamp(-1.0, 1.0)
        return y

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        aff = self._affine(key, y)
        if aff is None:
            return y
        scale, offset = (torch.as_tensor(a, dtype=y.dtype, device=y.device) for a in aff)
        return y * scale + offset

    # --- persistence: statistics in safetensors, modes in the config -----------------------
    def save(self, path: Path) -> None:
        flat = {f"{k}/{s}": np.ascontiguousarray(v) for k, d in self.stats.items() for s, v in d.items()}
        save_file(flat, str(path))

    @staticmethod
    def load_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"normalization statistics not found: {path}")
        stats: dict[str, dict[str, np.ndarray]] = {}
        for name, value in load_file(str(path)).items():
            key, stat = name.rsplit("/", 1)
            stats.setdefault(key, {})[stat] = value
        return stats
