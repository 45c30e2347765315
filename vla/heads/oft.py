"""OpenVLA-OFT parallel decoding with L1 regression.

`chunk_size * action_dim` empty action slots (learned embeddings; their positions come from the
position ids) are appended to the prefix and attend bidirectionally to each other, so the whole
chunk comes out of one forward pass. The slots of one time step are concatenated and a residual
MLP regresses that step's action; training minimizes L1 to the normalized actions.

With `output="tokens"` each slot instead predicts its action bin through the language model head
(OpenVLA-style bins on the last vocabulary ids), still all in one pass: the discrete, parallel
variant that RL fine-tunes with per-token log-probs (RLinf's OpenVLA-OFT recipe).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.heads.base import ActionHead, RLSample, masked_mean
from vla.heads.temperature import TokenTemperature
from vla.heads.tokenized import ActionTokenizer, categorical_sample, token_scores
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


OUTPUTS = ("l1", "tokens")


class OFTHead(ActionHead):
    def __init__(self, hidden_size: int, chunk_size: int, action_dim: int, mlp_dim: int, output: str = "l1",
                 vocab_size: int = 0, num_bins: int = 256, temperature: float = 1.0,
                 learn_temperature: bool = False, top_id: int | None = None):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"head.oft_output '{output}' is unknown; valid: {', '.join(OUTPUTS)}")
        self.chunk_size, self.action_dim, self.output = chunk_size, action_dim, output
        self.slots = nn.Parameter(torch.randn(chunk_size * action_dim, hidden_size) * 0.02)
        if output == "l1":
            self.mlp = ResidualMLP(action_dim * hidden_size, mlp_dim, action_dim)
        else:
            self.tokens = ActionTokenizer(num_bins, vocab_size, top_id)
            self.temperature = TokenTemperature(action_dim, temperature, learn_temperature)
            self.rl_quantity = "per-token log-probs of the parallel-decoded bins"

    def _slot_hidden(self, prefix: Prefix) -> torch.Tensor:
        b = prefix.embeds.shape[0]
        return prefix.run_with_suffix(self.slots[None].expand(b, -1, -1), causal_suffix=False)

    def predict(self, prefix: Prefix) -> torch.Tensor:
        b = prefix.embeds.shape[0]
        per_step = self._slot_hidden(prefix).reshape(b, self.chunk_size, -1).float()
        return self.mlp(per_step)

    def bin_logits(self, prefix: Prefix) -> torch.Tensor:
        """(B, chunk * action_dim, num_bins) from the LM head's bin ids."""
        return self.tokens.bin_logits(prefix.backbone.lm_logits(self._slot_hidden(prefix)))

    def loss(self, prefix, actions, pad, generator=None):
        if self.output == "l1":
            l1 = masked_mean((self.predict(prefix) - actions).abs(), pad)
            return l1, {"l1": float(l1.detach())}
        logits = self.bin_logits(prefix)
        bins = self.tokens.to_bins(actions).flatten(1)
        nll = F.cross_entropy(logits.transpose(1, 2), bins, reduction="none").reshape(actions.shape)
        acc = masked_mean((logits.argmax(-1) == bins).float().reshape(actions.shape), pad)
        loss = masked_mean(nll, pad)
        return loss, {"ce": float(loss.detach()), "token_acc": float(acc)}

    @torch.no_grad()
    def sample(self, prefix, generator=None):
        if self.output == "l1":
            return self.predict(prefix)
        bins = self.bin_logits(prefix).argmax(-1)
        return self.tokens.from_bins(bins).reshape(-1, self.chunk_size, self.action_dim)

    @torch.no_grad()
    def sample_rl(self, prefix, generator=None):
        if self.output == "l1":
            raise NotImplementedError(self._no_rl())
        logits = self.temperature(self.bin_logits(prefix))
        bins = categorical_sample(logits, generator)
        log_prob = torch.log_softmax(logits, -1).gather(-1, bins[..., None]).squeeze(-1).sum(-1)
        actions = self.tokens.from_bins(bins).reshape(-1, self.chunk_size, self.action_dim)
        return RLSample(actions, log_prob, {"bins": bins})

    def evaluate(self, prefix, record):
        if self.output == "l1":
            raise NotImplementedError(self._no_rl())
        lp, ent = token_scores(self.temperature(self.bin_logits(prefix)), record["bins"])
        return lp.sum(-1), ent.sum(-1)
