"""RT-2 / OpenVLA action tokens: each action dimension discretized into `num_bins` uniform bins on
[-1, 1], each bin written as one vocabulary id, decoded autoregressively with the KV cache. Decoding is
constrained to the bin ids, which is what makes the per-token log-probabilities well defined for RL.
Which ids: a backbone whose pretrained model already has action tokens (openvla-7b) keeps its layout, so
fine-tuning starts from the learned rows; otherwise bin b is id `vocab_size - num_bins + b` (the
vocabulary's last, least-used ids).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.heads.base import ActionHead, RLSample, masked_mean
from vla.heads.noise import Noise, uniform
from vla.heads.temperature import TokenTemperature
from vla.sequence import Prefix

TOKEN_IDS = ("auto", "end")  # head.token_ids: the backbone's pretrained action tokens if any, or the last ids


class ActionTokenizer:
    """Bins <-> vocabulary ids. `top_id` None: bin b is id first_id + b (the last `num_bins` ids).
    `top_id` set: bin b is id top_id - b, OpenVLA's layout (its id = tokenizer.vocab_size - digitize(a)
    over 256 edges, i.e. 255 bins counting down from 31999 on Llama-2; a = 1.0 exactly, its id 31744,
    decodes as the top bin there and never occurs here)."""

    def __init__(self, num_bins: int, vocab_size: int, top_id: int | None = None):
        if num_bins > vocab_size:
            raise ValueError(f"num_bins {num_bins} exceeds the vocabulary size {vocab_size}")
        if top_id is not None and not num_bins - 1 <= top_id < vocab_size:
            raise ValueError(f"action token ids {top_id - num_bins + 1}..{top_id} fall outside the vocabulary "
                             f"(size {vocab_size})")
        self.num_bins, self.vocab_size, self.top_id = num_bins, vocab_size, top_id
        # the lowest id of the bin block, whichever its order
        self.first_id = vocab_size - num_bins if top_id is None else top_id - num_bins + 1

    def to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        scaled = (actions.clamp(-1.0, 1.0) + 1.0) / 2.0 * self.num_bins
        return scaled.floor().long().clamp(0, self.num_bins - 1)

    def from_bins(self, bins: torch.Tensor) -> torch.Tensor:
        return (bins.float() + 0.5) / self.num_bins * 2.0 - 1.0  # bin centres

    def ids(self, bins: torch.Tensor) -> torch.Tensor:
        return bins + self.first_id if self.top_id is None else self.top_id - bins

    def bins_of(self, ids: torch.Tensor) -> torch.Tensor:
        return ids - self.first_id if self.top_id is None else self.top_id - ids

    def to_ids(self, actions: torch.Tensor) -> torch.Tensor:
        return self.ids(self.to_bins(actions))

    def from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.from_bins(self.bins_of(ids))

    def bin_logits(self, lm_logits: torch.Tensor) -> torch.Tensor:
        """(..., vocab) LM logits -> (..., num_bins) in bin order, as float32."""
        block = lm_logits[..., self.first_id:self.first_id + self.num_bins].float()
        return block if self.top_id is None else block.flip(-1)


def categorical_sample(logits: torch.Tensor, generator: Noise) -> torch.Tensor:
    """One draw per row of (..., K) logits by inverting the CDF at a uniform draw: the bins are ordered action
    levels, so under common random numbers two nearby distributions pick the same or a neighbouring bin."""
    cdf = torch.softmax(logits.float(), -1).cumsum(-1)
    u = uniform(tuple(cdf.shape[:-1]), generator, cdf.device)
    return (cdf < u[..., None]).sum(-1).clamp(max=cdf.shape[-1] - 1)


def token_scores(logits: torch.Tensor, bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of `bins` and entropy under (..., K) logits."""
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, bins[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


class TokenizedHead(ActionHead):
    rl_quantity = "per-token log-probs of the autoregressive bins"

    def __init__(self, hidden_size: int, vocab_size: int, chunk_size: int, action_dim: int, num_bins: int,
                 temperature: float = 1.0, learn_temperature: bool = False, top_id: int | None = None):
        super().__init__()
        self.temperature = TokenTemperature(action_dim, temperature, learn_temperature)
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.tokens = ActionTokenizer(num_bins, vocab_size, top_id)
        # stands where OpenVLA's last prompt token stands; a learned slot is position-independent
        # when prompts in a batch have different lengths
        self.start = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)

    @property
    def n_tokens(self) -> int:
        return self.chunk_size * self.action_dim

    def _bin_logits(self, prefix: Prefix, hidden: torch.Tensor) -> torch.Tensor:
        return self.tokens.bin_logits(prefix.backbone.lm_logits(hidden))

    def _teacher_forced_logits(self, prefix: Prefix, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bins = self.tokens.to_bins(actions).reshape(actions.shape[0], self.n_tokens)
        return self._bin_logits_given(prefix, bins), bins

    def _bin_logits_given(self, prefix: Prefix, bins: torch.Tensor) -> torch.Tensor:
        """Bin logits at every position when the previous bins (B, T*A) are fed in (teacher forcing)."""
        ids = self.tokens.ids(bins)
        inputs = torch.cat([self.start.expand(bins.shape[0], -1, -1), prefix.backbone.embed_tokens(ids[:, :-1])], dim=1)
        return self._bin_logits(prefix, prefix.run_with_suffix(inputs, causal_suffix=True))

    def loss(self, prefix, actions, pad, generator=None):
        logits, bins = self._teacher_forced_logits(prefix, actions)
        nll = F.cross_entropy(logits.transpose(1, 2), bins, reduction="none")  # (B, T*A)
        nll = nll.reshape(actions.shape[0], self.chunk_size, self.action_dim)
        loss = masked_mean(nll, pad)
        acc = masked_mean((logits.argmax(-1) == bins).float().reshape_as(nll), pad)
        return loss, {"ce": float(loss.detach()), "token_acc": float(acc)}

    def token_log_probs(self, prefix: Prefix, actions: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs (B, T*A) of the bins of `actions` (at temperature 1)."""
        logits, bins = self._teacher_forced_logits(prefix, actions)
        return token_scores(logits, bins)[0]

    def evaluate(self, prefix, record):
        bins = record["bins"]
        logits = self._bin_logits_given(prefix, bins)
        lp, ent = token_scores(self.temperature(logits), bins)
        return lp.sum(-1), ent.sum(-1)

    @torch.no_grad()
    def _decode(self, prefix: Prefix, generator, stochastic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """KV-cached decoding; returns bins (B, T*A) and their summed log-probs (B,)."""
        b = prefix.embeds.shape[0]
        cache = prefix.run_cached()
        token_in = self.start.expand(b, -1, -1)
        bins, log_prob = [], torch.zeros(b, device=prefix.embeds.device)
        for step in range(self.n_tokens):
            hidden = prefix.step_cached(cache, token_in, step)
            logits = self.temperature.at(self._bin_logits(prefix, hidden[:, -1]), step)
            nxt = categorical_sample(logits, generator) if stochastic else logits.argmax(-1)
            log_prob += torch.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1)
            bins.append(nxt)
            token_in = prefix.backbone.embed_tokens(self.tokens.ids(nxt)[:, None])
        return torch.stack(bins, 1), log_prob

    def sample(self, prefix, generator=None):
        bins, _ = self._decode(prefix, generator, stochastic=False)
        return self.tokens.from_bins(bins).reshape(-1, self.chunk_size, self.action_dim)

    def sample_rl(self, prefix, generator=None):
        bins, log_prob = self._decode(prefix, generator, stochastic=True)
        actions = self.tokens.from_bins(bins).reshape(-1, self.chunk_size, self.action_dim)
        return RLSample(actions, log_prob, {"bins": bins})
