"""Decisions of a rollout flattened into tensors, with the advantages an algorithm assigned them."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from vla.rl.rollout import EpisodeRollout


@dataclass
class DecisionBatch:
    images: torch.Tensor  # (N, cams, H, W, 3) uint8
    states: torch.Tensor  # (N, state_dim)
    instructions: list[str]
    records: dict[str, torch.Tensor]  # each (N, ...)
    old_log_prob: torch.Tensor  # (N,)
    values: torch.Tensor  # (N,) critic at sampling time
    advantages: torch.Tensor  # (N,)
    returns: torch.Tensor  # (N,) critic targets (PPO)
    weights: torch.Tensor  # (N,) each decision's share of the policy loss, mean 1
    index: torch.Tensor | None = None  # (N,) rows of the full batch these decisions are (set by select)

    def __len__(self) -> int:
        return len(self.instructions)

    def select(self, index: torch.Tensor) -> "DecisionBatch":
        idx = index.tolist()
        return DecisionBatch(
            self.images[index], self.states[index], [self.instructions[i] for i in idx],
            {k: v[index] for k, v in self.records.items()}, self.old_log_prob[index], self.values[index],
            self.advantages[index], self.returns[index], self.weights[index],
            index if self.index is None else self.index[index],
        )

    def minibatches(self, size: int, generator: torch.Generator):
        """Shuffled minibatches covering every decision once."""
        if size < 1:
            raise ValueError(f"rl.minibatch_size must be >= 1, got {size}")
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), size):
            yield self.select(order[start:start + size])


# the per-decision tensors of a DecisionBatch (everything but the instructions, records and index)
TENSOR_FIELDS = tuple(f.name for f in fields(DecisionBatch) if f.name not in ("instructions", "records", "index"))


def concat(first: DecisionBatch, second: DecisionBatch) -> DecisionBatch:
    """The rows of `first` followed by those of `second` (same record keys)."""
    if first.records.keys() != second.records.keys():
        raise ValueError(f"cannot join decisions recorded with {sorted(first.records)} and {sorted(second.records)}")
    return DecisionBatch(
        instructions=first.instructions + second.instructions,
        records={k: torch.cat([first.records[k], second.records[k]]) for k in first.records},
        **{name: torch.cat([getattr(first, name), getattr(second, name)]) for name in TENSOR_FIELDS},
    )


def flatten(episodes: list[EpisodeRollout], advantages: list[np.ndarray], returns: list[np.ndarray],
            per_episode: bool = False) -> DecisionBatch:
    """One row per decision; `advantages[i]` / `returns[i]` hold episode i's per-decision values.

    per_episode: every episode weighs the same in the loss, however many decisions it took. With an
    episode-level advantage (GRPO) per-decision weighting lets length decide the sign of the batch's
    net push: failures run to the time limit with about twice the decisions of successes, so a
    group's advantages no longer cancel and the update drifts the policy (Dr. GRPO's length bias)."""
    decisions = [d for e in episodes for d in e.decisions]
    if not decisions:
        raise ValueError("no decisions to learn from (every episode was filtered out or dropped)")
    if per_episode:
        mean_len = len(decisions) / len(episodes)
        weights = np.concatenate([np.full(len(e.decisions), mean_len / len(e.decisions)) for e in episodes if e.decisions])
    else:
        weights = np.ones(len(decisions))
    keys = decisions[0].record.keys()
    return DecisionBatch(
        images=torch.from_numpy(np.stack([d.images for d in decisions])),
        states=torch.from_numpy(np.stack([d.state for d in decisions])).float(),
        instructions=[e.instruction for e in episodes for _ in e.decisions],
        records={k: torch.stack([d.record[k] for d in decisions]) for k in keys},
        old_log_prob=torch.tensor([d.log_prob for d in decisions], dtype=torch.float32),
        values=torch.tensor([d.value for d in decisions], dtype=torch.float32),
        advantages=torch.from_numpy(np.concatenate(advantages)).float(),
        returns=torch.from_numpy(np.concatenate(returns)).float(),
        weights=torch.from_numpy(weights).float(),
    )
