"""Success-filtered self-imitation (rejection-sampling fine-tuning, expert iteration; the "supervised
learning on successful rollouts" step of iRe-VLA): roll out the stochastic policy, keep the episodes
that succeeded, and raise the likelihood of every chunk they executed. It is the policy gradient of
a 0/1 episode reward with no baseline and failures dropped, so it never pushes an action down, needs
no critic, and its update is the head's own maximum-likelihood objective on its own samples (the
loss branch lives in `vla.rl.objective`). A sampling policy that succeeds half the time gets
sharper exactly where it succeeds; one that never succeeds learns nothing (use PPO/GRPO there).

`rl.rft_replay` > 0 keeps the successful decisions of earlier iterations too (the last N) and trains
on all of them each iteration, as expert iteration grows its dataset: the policy is behaviour-cloned
on every success it has produced so far, not only on this iteration's handful.
"""
from __future__ import annotations

import numpy as np
import torch

from vla.config import RLConfig
from vla.rl.buffer import TENSOR_FIELDS, DecisionBatch, concat
from vla.rl.rollout import EpisodeRollout

STATE_PREFIX = "rft_replay/"


def advantages(episodes: list[EpisodeRollout], cfg: RLConfig) -> tuple[list[EpisodeRollout], list[np.ndarray], list[np.ndarray], dict]:
    """(the successful episodes, advantage 1 for each of their decisions, zero returns, logs)."""
    kept = [e for e in episodes if e.success]
    advs = [np.ones(len(e.decisions)) for e in kept]
    rets = [np.zeros(len(e.decisions)) for e in kept]
    return kept, advs, rets, {"episodes_kept": len(kept)}


class SuccessReplay:
    """The last `capacity` decisions of successful episodes, over iterations, checkpointed with the run."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"rl.rft_replay must be >= 1 to keep successes (0 disables the replay), got {capacity}")
        self.capacity = capacity
        self.batch: DecisionBatch | None = None

    def __len__(self) -> int:
        return 0 if self.batch is None else len(self.batch)

    def add(self, batch: DecisionBatch | None) -> DecisionBatch | None:
        """Adds this iteration's kept decisions (None: none succeeded) and returns everything kept."""
        if batch is not None:
            joined = batch if self.batch is None else concat(self.batch, batch)
            start = max(0, len(joined) - self.capacity)
            self.batch = joined.select(torch.arange(start, len(joined))) if start else joined
            self.batch.index = None
        return self.batch

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        if self.batch is None:
            return {}, {"instructions": []}
        tensors = {name: getattr(self.batch, name) for name in TENSOR_FIELDS}
        tensors.update({f"records/{k}": v for k, v in self.batch.records.items()})
        return {STATE_PREFIX + k: v for k, v in tensors.items()}, {"instructions": self.batch.instructions}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if not meta["instructions"]:
            self.batch = None
            return
        part = {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
        records = {k[len("records/"):]: v for k, v in part.items() if k.startswith("records/")}
        self.batch = DecisionBatch(instructions=list(meta["instructions"]), records=records,
                                   **{name: part[name] for name in TENSOR_FIELDS})
