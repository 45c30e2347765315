"""The one protocol every action head implements.

A head owns the suffix of the backbone sequence (action slots, action tokens, noisy actions) and
reads the prefix (images, instruction, proprio) through `vla.sequence.Prefix`. Actions it sees and
returns are normalized, shape (B, chunk_size, action_dim). BC, RL, evaluation and deployment only
call these methods, so they never ask which head they hold.

RL contract: `sample_rl` draws an exploratory chunk and returns an `RLSample` whose `record` holds
whatever the head needs to score that chunk again later (bin ids, a denoising chain, the base
action); `evaluate(prefix, record)` recomputes, with gradients, the log-probability of what was
sampled and an entropy estimate. What "log-probability" means is head-specific (`rl_quantity`).

Sampling noise (`generator`) is one torch.Generator for the batch or an `EpisodeNoise` with one stream per
row; heads draw it through `vla.heads.noise`, which handles both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla.heads.noise import Noise
from vla.sequence import Prefix


@dataclass
class RLSample:
    actions: torch.Tensor  # (B, chunk, action_dim) normalized, what the env executes
    log_prob: torch.Tensor  # (B,) under the sampling policy, detached
    record: dict[str, torch.Tensor]  # what `evaluate` needs to score the same sample again

    def detach(self) -> "RLSample":
        return RLSample(self.actions.detach(), self.log_prob.detach(), {k: v.detach() for k, v in self.record.items()})


class ActionHead(nn.Module):
    chunk_size: int
    action_dim: int
    # what policy-gradient RL optimizes for this head (shown in the README's recipe table)
    rl_quantity: str = "none (deterministic head)"

    def loss(self, prefix: Prefix, actions: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Behaviour-cloning loss. `pad` (B, chunk) marks steps past the episode end (not supervised)."""
        raise NotImplementedError

    def sample(self, prefix: Prefix, generator: Noise = None) -> torch.Tensor:
        """The action chunk (B, chunk, action_dim) for evaluation/deployment."""
        raise NotImplementedError

    def sample_rl(self, prefix: Prefix, generator: Noise = None) -> RLSample:
        """An exploratory chunk plus what is needed to score it again."""
        raise NotImplementedError(self._no_rl())

    def evaluate(self, prefix: Prefix, record: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_prob (B,), entropy (B,)) of a recorded sample, differentiable."""
        raise NotImplementedError(self._no_rl())

    def log_prob(self, prefix: Prefix, record: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.evaluate(prefix, record)[0]

    def _no_rl(self) -> str:
        return (f"{type(self).__name__} is deterministic and has no log-probability; for RL use head.oft_output=tokens, "
                "or the tokenized, flow, diffusion or residual head")


def masked_mean(values: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, ...) values over steps where pad is False."""
    keep = (~pad).to(values.dtype)
    while keep.dim() < values.dim():
        keep = keep.unsqueeze(-1)
    denom = keep.expand_as(values).sum().clamp(min=1.0)
    return (values * keep).sum() / denom


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std^2)."""
    return torch.distributions.Normal(mean, std).log_prob(x)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(torch.zeros_like(std), std).entropy()
