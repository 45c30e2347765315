"""Critic for PPO: an MLP on the prefix's pooled last hidden states (the backbone features)."""
from __future__ import annotations

import torch
from torch import nn

from vla.sequence import Prefix


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, width), nn.GELU(),
                                 nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, prefix: Prefix) -> torch.Tensor:
        """State value (B,)."""
        return self.net(prefix.pooled()).squeeze(-1)
