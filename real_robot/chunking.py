"""Action chunks on the control loop's tick clock: replanning and optional temporal ensembling.

A chunk computed from the observation of tick `s` holds actions for ticks s, s+1, ..., s+C-1.
Replies arrive some ticks later, so the loop uses the action for the *current* tick (the elapsed
ones are skipped: they were meant for moments already past). A new chunk is requested every
`replan_every` ticks (the replan horizon H < C leaves C - H ticks of slack for the round trip).

Without ensembling the newest chunk that covers the tick wins. With ensembling (ACT's temporal
ensemble) every chunk that covers the tick votes, weighted exp(-k * age_rank) with the oldest
prediction weighted most, which smooths the seams between chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    start_tick: int  # the tick whose observation the chunk was computed from
    start_time: float  # monotonic time of that observation
    actions: np.ndarray  # (C, action_dim)

    def covers(self, tick: int) -> bool:
        return self.start_tick <= tick < self.start_tick + len(self.actions)


class ChunkSchedule:
    def __init__(self, replan_every: int, ensemble_k: float | None = None):
        if replan_every < 1:
            raise ValueError(f"replan horizon must be >= 1 tick, got {replan_every}")
        if ensemble_k is not None and ensemble_k < 0:
            raise ValueError(f"ensembling weight k must be >= 0, got {ensemble_k}")
        self.replan_every, self.ensemble_k = replan_every, ensemble_k
        self.chunks: list[Chunk] = []  # oldest first
        self.last_request_tick: int | None = None

    def validate_chunk_size(self, chunk_size: int) -> None:
        if chunk_size == 1:
            raise ValueError("the served policy answers one action per call (chunk_size 1, as the openvla recipe): "
                             "at a fixed rate its answer arrives after the tick it was computed for, so it can never "
                             "be executed on time; serve a chunked policy (openvla_oft, pi0, diffusion)")
        if self.replan_every >= chunk_size:
            raise ValueError(f"replan horizon {self.replan_every} must be below the chunk size {chunk_size}, "
                             "or the chunk runs out before the next one can arrive")

    def needs_request(self, tick: int) -> bool:
        """Time to ask for a new chunk: every `replan_every` ticks, or now if nothing covers the tick."""
        if self.last_request_tick is None or not any(c.covers(tick) for c in self.chunks):
            return True
        return tick - self.last_request_tick >= self.replan_every

    def requested(self, tick: int) -> None:
        self.last_request_tick = tick

    def forget_request(self) -> None:
        """The request failed (server gone, timeout): the next tick asks again."""
        self.last_request_tick = None

    def add(self, chunk: Chunk) -> None:
        if chunk.actions.ndim != 2 or len(chunk.actions) == 0:
            raise ValueError(f"a chunk must be (C, action_dim) with C >= 1, got {chunk.actions.shape}")
        self.chunks.append(chunk)
        self.chunks.sort(key=lambda c: c.start_tick)

    def action(self, tick: int, period_s: float) -> tuple[np.ndarray, float] | None:
        """(action for `tick`, the time it was planned for) or None when no chunk covers the tick."""
        self.chunks = [c for c in self.chunks if c.start_tick + len(c.actions) > tick]  # drop the used-up ones
        live = [c for c in self.chunks if c.covers(tick)]
        if not live:
            return None
        newest = live[-1]
        planned = newest.start_time + (tick - newest.start_tick) * period_s
        if self.ensemble_k is None:
            return newest.actions[tick - newest.start_tick], planned
        preds = np.stack([c.actions[tick - c.start_tick] for c in live])  # oldest first
        weights = np.exp(-self.ensemble_k * np.arange(len(live)))
        return (weights[:, None] * preds).sum(0) / weights.sum(), planned

    def clear(self) -> None:
        self.chunks.clear()
        self.last_request_tick = None
