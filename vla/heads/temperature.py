"""The sampling temperature of the bin-token heads (tokenized, OFT with `oft_output=tokens`).

Fixed (`head.rl_temperature`), or learned by RL (`head.learn_temperature`): one log-temperature per
action dimension, starting at `head.rl_temperature`, trained by the policy-gradient update like the
state-independent log-std of Gaussian PPO. Why: a behaviour-cloned token policy spreads ~2 nats over
each token's 256 bins, so its sampled chunks fail where its argmax succeeds, and lowering that noise
through the 56 per-token distributions of a chunk takes far more updates than a trust region allows;
seven numbers that scale all of them let RL learn how much to explore (`rl.temperature_lr`).
The argmax (`head.sampler=deterministic`) does not depend on the temperature.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# a learned temperature stays in [e^-3, e^3] ~ [0.05, 20]: beyond, the softmax is one-hot or uniform
LOG_T_BOUND = 3.0


class TokenTemperature(nn.Module):
    def __init__(self, action_dim: int, initial: float, learned: bool):
        super().__init__()
        if not initial > 0:
            raise ValueError(f"head.rl_temperature must be > 0, got {initial}")
        self.action_dim, self.initial, self.learned = action_dim, float(initial), learned
        if learned:
            self.log_temperature = nn.Parameter(torch.full((action_dim,), math.log(initial)))

    def per_dim(self) -> torch.Tensor | None:
        """The learned temperature of each action dimension (bounded); None when it is fixed."""
        return self.log_temperature.clamp(-LOG_T_BOUND, LOG_T_BOUND).exp() if self.learned else None

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, n_tokens, K) bin logits divided by each token's temperature (token t is dimension t % action_dim)."""
        t = self.per_dim()
        if t is None:
            return logits / self.initial
        n = logits.shape[-2]
        return logits / t.repeat(n // self.action_dim + 1)[:n, None]

    def at(self, logits: torch.Tensor, token: int) -> torch.Tensor:
        """(B, K) logits of token number `token` (autoregressive decoding) divided by its temperature."""
        t = self.per_dim()
        return logits / (self.initial if t is None else t[token % self.action_dim])

    def values(self) -> list[float]:
        """The current temperature of each action dimension (for the RL log)."""
        t = self.per_dim()
        return [self.initial] * self.action_dim if t is None else [round(float(v), 4) for v in t.detach()]
