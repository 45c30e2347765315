"""RT-2 / OpenVLA action tokens: each action dimension discretized into `num_bins` uniform bins on
[-1, 1], bin b written as vocabulary id `vocab_size - num_bins + b` (the language model's least-used
ids), decoded autoregressively with the KV cache. Decoding is constrained to the bin ids, which is
what makes the per-token log-probabilities well defined for RL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.heads.base import ActionHead, masked_mean
from vla.sequence import Prefix


class ActionTokenizer:
    def __init__(self, num_bins: int, vocab_size: int):
        if num_bins > vocab_size:
            raise ValueError(f"num_bins {num_bins} exceeds the vocabulary size {vocab_size}")
        self.num_bins, self.vocab_size = num_bins, vocab_size
        self.first_id = vocab_size - num_bins

    def to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        scaled = (actions.clamp(-1.0, 1.0) + 1.0) / 2.0 * self.num_bins
        return scaled.floor().long().clamp(0, self.num_bins - 1)

    def from_bins(self, bins: torch.Tensor) -> torch.Tensor:
        return (bins.float() + 0.5) / self.num_bins * 2.0 - 1.0  # bin centres

    def to_ids(self, actions: torch.Tensor) -> torch.Tensor:
        return self.to_bins(actions) + self.first_id

    def from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.from_bins(ids - self.first_id)


class TokenizedHead(ActionHead):
    def __init__(self, hidden_size: int, vocab_size: int, chunk_size: int, action_dim: int, num_bins: int):
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.tokens = ActionTokenizer(num_bins, vocab_size)
        # stands where OpenVLA's last prompt token stands; a learned slot is position-independent
        # when prompts in a batch have different lengths
        self.start = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)

    @property
    def n_tokens(self) -> int:
        return self.chunk_size * self.action_dim

    def _bin_logits(self, prefix: Prefix, hidden: torch.Tensor) -> torch.Tensor:
        return prefix.backbone.lm_logits(hidden)[..., self.tokens.first_id:].float()

    def _teacher_forced_logits(self, prefix: Prefix, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = actions.shape[0]
        ids = self.tokens.to_ids(actions).reshape(b, self.n_tokens)
        inputs = torch.cat([self.start.expand(b, -1, -1), prefix.backbone.embed_tokens(ids[:, :-1])], dim=1)
        hidden = prefix.run_with_suffix(inputs, causal_suffix=True)
        return self._bin_logits(prefix, hidden), ids - self.tokens.first_id

    def loss(self, prefix, actions, pad):
        logits, bins = self._teacher_forced_logits(prefix, actions)
        nll = F.cross_entropy(logits.transpose(1, 2), bins, reduction="none")  # (B, T*A)
        nll = nll.reshape(actions.shape[0], self.chunk_size, self.action_dim)
        loss = masked_mean(nll, pad)
        acc = masked_mean((logits.argmax(-1) == bins).float().reshape_as(nll), pad)
        return loss, {"ce": float(loss.detach()), "token_acc": float(acc)}

    def token_log_probs(self, prefix: Prefix, actions: torch.Tensor) -> torch.Tensor:
        logits, bins = self._teacher_forced_logits(prefix, actions)
        return torch.log_softmax(logits, -1).gather(-1, bins[..., None]).squeeze(-1)  # (B, T*A)

    def log_prob(self, prefix, actions):
        return self.token_log_probs(prefix, actions).sum(-1)

    @torch.no_grad()
    def sample(self, prefix, generator=None, temperature: float = 0.0):
        b = prefix.embeds.shape[0]
        cache = prefix.run_cached()
        token_in = self.start.expand(b, -1, -1)
        bins = []
        for step in range(self.n_tokens):
            hidden = prefix.step_cached(cache, token_in, step)
            logits = self._bin_logits(prefix, hidden[:, -1])
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            else:
                nxt = logits.argmax(-1)
            bins.append(nxt)
            token_in = prefix.backbone.embed_tokens((nxt + self.tokens.first_id)[:, None])
        actions = self.tokens.from_bins(torch.stack(bins, 1))
        return actions.reshape(b, self.chunk_size, self.action_dim)
