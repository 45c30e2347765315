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

    def per_token(self, n_tokens: int) -> torch.Tensor | float:
        """Temperatures of tokens 0..n_tokens-1, whose action dimension is token % action_dim."""
        if not self.learned:
            return self.initial
        log_t = self.log_temperature.clamp(-LOG_T_BOUND, LOG_T_BOUND)
        return log_t.exp().repeat(n_tokens // self.action_dim + 1)[:n_tokens]

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, n_tokens, K) bin logits divided by each token's temperature."""
        t = self.per_token(logits.shape[-2])
        return logits / (t[:, None] if isinstance(t, torch.Tensor) else t)

    def at(self, logits: torch.Tensor, token: int) -> torch.Tensor:
        """(B, K) logits of token number `token` (autoregressive decoding) divided by its temperature."""
        t = self.per_token(token + 1)
        return logits / (t[token] if isinstance(t, torch.Tensor) else t)

    def values(self) -> list[float]:
        """The current temperature of each action dimension (for the RL log)."""
        if not self.learned:
            return [self.initial] * self.action_dim
        return [round(float(v), 4) for v in self.log_temperature.detach().clamp(-LOG_T_BOUND, LOG_T_BOUND).exp()]
