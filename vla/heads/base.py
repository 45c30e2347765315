"""The one protocol every action head implements.

A head owns the suffix of the backbone sequence (action slots, action tokens, noisy actions) and
reads the prefix (images, instruction, proprio) through `vla.sequence.Prefix`. Actions it sees and
returns are normalized, shape (B, chunk_size, action_dim). BC, RL, evaluation and deployment only
call these methods, so they never ask which head they hold.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.sequence import Prefix


class ActionHead(nn.Module):
    chunk_size: int
    action_dim: int

    def loss(self, prefix: Prefix, actions: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Behaviour-cloning loss. `pad` (B, chunk) marks steps past the episode end (not supervised)."""
        raise NotImplementedError

    def sample(self, prefix: Prefix, generator: torch.Generator | None = None) -> torch.Tensor:
        """An action chunk (B, chunk, action_dim); deterministic when the head is."""
        raise NotImplementedError

    def log_prob(self, prefix: Prefix, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability (B,) of `actions` under the head: what policy-gradient RL needs."""
        raise NotImplementedError(
            f"{type(self).__name__} is deterministic and has no log-probability; use a head with one"
        )


def masked_mean(values: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, ...) values over steps where pad is False."""
    keep = (~pad).to(values.dtype)
    while keep.dim() < values.dim():
        keep = keep.unsqueeze(-1)
    denom = keep.expand_as(values).sum().clamp(min=1.0)
    return (values * keep).sum() / denom
