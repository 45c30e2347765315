"""Where a head's sampling noise comes from: one torch.Generator for the whole batch, or one per batch row.

Evaluation and rollouts pass `EpisodeNoise`, a stream per episode seeded from the episode and its step, so an
episode's draws do not depend on which other episodes share its batch (the worker count, the order in which
episodes finish). Two policies evaluated on the same episodes then see the same random numbers (common random
numbers), which pairs their outcomes far more tightly than independent noise does: a token head samples a bin by
inverting its CDF at the episode's uniform draw, so a slightly different distribution mostly picks the same or a
neighbouring bin.
"""
from __future__ import annotations

import hashlib

import torch


class EpisodeNoise:
    """One generator per batch row, seeded by the caller (e.g. from an episode key and its step)."""

    def __init__(self, seeds: list[int]):
        if not seeds:
            raise ValueError("EpisodeNoise needs one seed per batch row; got none")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"a batch of {shape[0]} rows drew noise from {len(self.generators)} episode streams; "
                             "expected one stream per row")
        fn = DRAWS[kind]
        return torch.stack([fn(tuple(shape[1:]), generator=g) for g in self.generators])


Noise = torch.Generator | EpisodeNoise | None
DRAWS = {"normal": torch.randn, "uniform": torch.rand}


def _draw(kind: str, shape: tuple[int, ...], noise: Noise, device: torch.device) -> torch.Tensor:
    if isinstance(noise, EpisodeNoise):
        return noise.draw(kind, shape).to(device)
    fn = DRAWS[kind]
    gdev = noise.device if noise is not None else device  # drawn on the generator's device: reproducible
    return fn(shape, generator=noise, device=gdev).to(device)


def normal(shape: tuple[int, ...], noise: Noise, device: torch.device) -> torch.Tensor:
    """Standard normal draws of `shape` (row i from stream i for EpisodeNoise), returned on `device`."""
    return _draw("normal", tuple(shape), noise, device)


def uniform(shape: tuple[int, ...], noise: Noise, device: torch.device) -> torch.Tensor:
    """U[0, 1) draws of `shape`, returned on `device`."""
    return _draw("uniform", tuple(shape), noise, device)


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text (stable across processes and runs, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
