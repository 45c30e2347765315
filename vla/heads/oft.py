"""OpenVLA-OFT parallel decoding with L1 regression.

`chunk_size * action_dim` empty action slots (learned embeddings; their positions come from the
position ids) are appended to the prefix and attend bidirectionally to each other, so the whole
chunk comes out of one forward pass. The slots of one time step are concatenated and a residual
MLP regresses that step's action; training minimizes L1 to the normalized actions.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.heads.base import ActionHead, masked_mean
from vla.sequence import Prefix


class ResidualMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, blocks: int = 2):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU()) for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class OFTHead(ActionHead):
    def __init__(self, hidden_size: int, chunk_size: int, action_dim: int, mlp_dim: int):
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.slots = nn.Parameter(torch.randn(chunk_size * action_dim, hidden_size) * 0.02)
        self.mlp = ResidualMLP(action_dim * hidden_size, mlp_dim, action_dim)

    def predict(self, prefix: Prefix) -> torch.Tensor:
        b = prefix.embeds.shape[0]
        hidden = prefix.run_with_suffix(self.slots[None].expand(b, -1, -1), causal_suffix=False)
        per_step = hidden.reshape(b, self.chunk_size, -1).float()
        return self.mlp(per_step)

    def loss(self, prefix, actions, pad):
        pred = self.predict(prefix)
        l1 = masked_mean((pred - actions).abs(), pad)
        return l1, {"l1": float(l1.detach())}

    def sample(self, prefix, generator=None):
        return self.predict(prefix)
