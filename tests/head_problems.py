"""A small fixed behaviour-cloning problem every head test shares: 4 random images + instructions
on the tiny PaliGemma backbone, each with its own target chunk in [-0.8, 0.8]."""
from __future__ import annotations

import math

import torch

from vla.backbones import build_backbone
from vla.config import BackboneConfig, HeadConfig, merge
from vla.heads import build_head
from vla.sequence import Prefix


def chain_log_prob_by_hand(chain: torch.Tensor, steps, step_distribution) -> torch.Tensor:
    """Sum over denoising steps of log N(x_{k+1}; mean_k, std_k^2), written out from the Gaussian
    density (not torch.distributions), with `step_distribution(x_k, step) -> (mean, std)`."""
    total = torch.zeros(chain.shape[0])
    for k, step in enumerate(steps):
        mean, std = step_distribution(chain[:, k], step)
        var = std**2
        total += (-(chain[:, k + 1] - mean) ** 2 / (2 * var) - 0.5 * torch.log(2 * math.pi * var)).flatten(1).sum(-1)
    return total


class Problem:
    def __init__(self, head_type: str, chunk: int = 4, backbone: str = "tiny_paligemma", **head_overrides):
        torch.manual_seed(0)
        self.bb = build_backbone(BackboneConfig(name=backbone, image_size=32))
        cfg = merge(HeadConfig(chunk_size=chunk, action_dim=3, hidden_dim=64), {"type": head_type, **head_overrides})
        self.head = build_head(cfg, self.bb)
        self.images = torch.rand(4, 1, 3, 32, 32)
        self.ids = torch.randint(3, 200, (4, 6))
        self.targets = torch.rand(4, chunk, 3) * 1.6 - 0.8
        self.pad = torch.zeros(4, chunk, dtype=torch.bool)

    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in list(self.bb.parameters()) + list(self.head.parameters()) if p.requires_grad]

    def prefix(self) -> Prefix:
        emb = torch.cat([self.bb.embed_images(self.images), self.bb.embed_tokens(self.ids)], 1)
        return Prefix(self.bb, emb, torch.ones(emb.shape[:2], dtype=torch.bool))

    def eval_loss(self, draws: int = 8) -> float:
        """BC loss averaged over fixed noise/time draws (stochastic heads' single-batch loss is noisy)."""
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(float(self.head.loss(self.prefix(), self.targets, self.pad, g)[0]) for _ in range(draws)) / draws

    def overfit(self, steps: int, lr: float) -> tuple[float, float]:
        """Train on the fixed batch; returns (loss before, loss after)."""
        before = self.eval_loss()
        opt = torch.optim.Adam(self.params(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            loss, _ = self.head.loss(self.prefix(), self.targets, self.pad, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.bb.eval()
        return before, self.eval_loss()

    def sample(self, seed: int = 1) -> torch.Tensor:
        with torch.no_grad():
            return self.head.sample(self.prefix(), torch.Generator().manual_seed(seed))
