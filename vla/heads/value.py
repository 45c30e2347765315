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

    def forward(self, prefix: Prefix, detach_features: bool = False) -> torch.Tensor:
        """State value (B,). detach_features: the critic's loss does not move the shared backbone
        (RL keeps value gradients out of the features the actor uses)."""
        features = prefix.pooled()
        return self.net(features.detach() if detach_features else features).squeeze(-1)
