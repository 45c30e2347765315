"""A Gaussian residual over a frozen base policy (ResiP, policy decorator).

executed = base_action + scale * r,  r ~ N(mu(features, base_action), diag(exp(log_std))^2).
`features` are the pooled prefix hidden states (detached: the base's backbone stays frozen); the
base is any other head. mu's last layer starts at zero, so before training the residual policy's
mean reproduces its base exactly. RL trains mu and log_std only.

Behaviour cloning: with a frozen base (head.residual.base_checkpoint) the residual regresses the
base's leftover error (a - base) / scale; otherwise BC trains the base as usual and leaves the
residual at zero, for RL to train later (a residual fitted to a base that is still moving would
chase a moving target).
"""
from __future__ import annotations

import torch
from torch import nn

from vla.config import ResidualConfig
from vla.heads.base import ActionHead, RLSample, gaussian_entropy, gaussian_log_prob, masked_mean
from vla.heads.noise import normal
from vla.sequence import Prefix


class ResidualHead(ActionHead):
    rl_quantity = "Gaussian log-prob of the residual, base frozen (ResiP)"

    def __init__(self, base: ActionHead, hidden_size: int, cfg: ResidualConfig):
        super().__init__()
        if cfg.max_residual is not None and not cfg.max_residual > 0:
            raise ValueError(f"head.residual.max_residual must be a positive bound (residual units) or null, "
                             f"got {cfg.max_residual}")
        self.base, self.cfg = base, cfg
        self.chunk_size, self.action_dim = base.chunk_size, base.action_dim
        n = self.chunk_size * self.action_dim
        self.mean_net = nn.Sequential(
            nn.LayerNorm(hidden_size + n), nn.Linear(hidden_size + n, cfg.hidden_dim), nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, n),
        )
        nn.init.zeros_(self.mean_net[-1].weight)
        nn.init.zeros_(self.mean_net[-1].bias)
        self.log_std = nn.Parameter(torch.full((n,), cfg.init_log_std))
        self.base_frozen = False

    def freeze_base(self) -> None:
        self.base_frozen = True
        self.base.requires_grad_(False)

    def base_action(self, prefix: Prefix, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.base.sample(prefix, generator)

    def residual_mean(self, prefix: Prefix, base_action: torch.Tensor) -> torch.Tensor:
        return self.mean_from_features(prefix.pooled().detach(), base_action)

    def mean_from_features(self, features: torch.Tensor, base_action: torch.Tensor,
                           net: nn.Module | None = None) -> torch.Tensor:
        """The (bounded) residual mean from pooled features; `net` replaces `mean_net` (TD3's target actor)."""
        inp = torch.cat([features, base_action.flatten(1).float()], dim=-1)
        return self.bound((net or self.mean_net)(inp)).reshape(base_action.shape)

    def bound(self, raw: torch.Tensor) -> torch.Tensor:
        """The mean network's output, squashed into [-max_residual, max_residual] when that is set (identity
        near zero, so a zero-initialised residual still starts as its base)."""
        limit = self.cfg.max_residual
        return raw if limit is None else limit * torch.tanh(raw / limit)

    def loss(self, prefix, actions, pad, generator=None):
        if not self.base_frozen:
            loss, logs = self.base.loss(prefix, actions, pad, generator)
            return loss, {**logs, "residual": 0.0}
        base = self.base_action(prefix, generator)
        err = masked_mean((self.residual_mean(prefix, base) - (actions - base) / self.cfg.scale) ** 2, pad)
        return err, {"residual_mse": float(err.detach())}

    @torch.no_grad()
    def sample(self, prefix, generator=None):
        base = self.base_action(prefix, generator)
        return base + self.cfg.scale * self.residual_mean(prefix, base)

    def _std(self) -> torch.Tensor:
        return self.log_std.exp().reshape(self.chunk_size, self.action_dim)

    @torch.no_grad()
    def sample_rl(self, prefix, generator=None):
        base = self.base_action(prefix, generator)
        mean, std = self.residual_mean(prefix, base), self._std()
        residual = mean + std * normal(mean.shape, generator, mean.device)
        log_prob = gaussian_log_prob(residual, mean, std.expand_as(mean)).flatten(1).sum(-1)
        # the pooled features ride along so off-policy RL (TD3) need not run the frozen backbone again
        record = {"base_action": base, "residual": residual, "features": prefix.pooled().detach().float()}
        return RLSample(base + self.cfg.scale * residual, log_prob, record)

    def evaluate(self, prefix, record):
        mean = self.residual_mean(prefix, record["base_action"])
        std = self._std().expand_as(mean)
        log_prob = gaussian_log_prob(record["residual"], mean, std).flatten(1).sum(-1)
        return log_prob, gaussian_entropy(std).flatten(1).sum(-1)
