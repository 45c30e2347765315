"""The token sequence a policy feeds its backbone: a prefix (images, instruction, proprio) plus a
suffix that the action head owns (OFT action slots, action tokens, a flow expert's noisy actions).

Attention rules, as a boolean "query may see key":
- nobody sees padding keys;
- prefix queries see the prefix only (bidirectionally for prefix-LM backbones, causally otherwise);
- suffix queries see the whole prefix, and the suffix bidirectionally (OFT parallel decoding) or
  causally (autoregressive tokens).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vla.backbones.base import Backbone


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool (B, Q, K) -> additive float (B, 1, Q, K): 0 where allowed, dtype's min elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _tri(n: int, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


@dataclass
class Prefix:
    backbone: Backbone
    embeds: torch.Tensor  # (B, P, D)
    valid: torch.Tensor  # (B, P) bool, False on padding
    _encoded: tuple | None = field(default=None, repr=False)
    _prefix_hidden: torch.Tensor | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return self.embeds.shape[1]

    def prefix_allowed(self) -> torch.Tensor:
        b, p = self.valid.shape
        base = torch.ones(p, p, dtype=torch.bool, device=self.valid.device)
        if not self.backbone.prefix_bidirectional:
            base = _tri(p, self.valid.device)
        return base[None] & self.valid[:, None, :]

    def positions(self) -> torch.Tensor:
        return (self.valid.long().cumsum(-1) - 1).clamp(min=0)

    def run_with_suffix(self, suffix: torch.Tensor, causal_suffix: bool) -> torch.Tensor:
        """One pass over prefix + suffix; returns the suffix's last hidden states (B, S, D)."""
        b, p = self.valid.shape
        s = suffix.shape[1]
        dev = suffix.device
        suffix_self = _tri(s, dev) if causal_suffix else torch.ones(s, s, dtype=torch.bool, device=dev)
        top = torch.cat([self.prefix_allowed(), torch.zeros(b, p, s, dtype=torch.bool, device=dev)], dim=2)
        bottom = torch.cat([self.valid[:, None, :].expand(b, s, p), suffix_self[None].expand(b, s, s)], dim=2)
        allowed = torch.cat([top, bottom], dim=1)
        n_valid = self.valid.long().sum(-1, keepdim=True)
        positions = torch.cat([self.positions(), n_valid + torch.arange(s, device=dev)[None]], dim=1)
        embeds = torch.cat([self.embeds, suffix.to(self.embeds.dtype)], dim=1)
        hidden, _ = self.backbone.run(embeds, additive_mask(allowed, embeds.dtype), positions)
        # prefix queries never see the suffix, so these equal a prefix-only pass: reused by pooled()
        self._prefix_hidden = hidden[:, :p]
        return hidden[:, p:]

    def run_cached(self):
        """Run the prefix alone and keep its KV cache (autoregressive decoding)."""
        return self.encode(fresh=True)[1]

    def encode(self, fresh: bool = False):
        """(prefix hidden states (B, P, D), KV cache), computed once per Prefix unless `fresh`.
        The cache is what a flow/diffusion expert reads at every denoising step; callers that append
        to it must crop it back (`run_on_cache` does)."""
        if fresh or self._encoded is None:
            mask = additive_mask(self.prefix_allowed(), self.embeds.dtype)
            hidden, cache = self.backbone.run(self.embeds, mask, self.positions(), use_cache=True)
            if cache is None or cache.get_seq_length() != self.length:
                raise RuntimeError("the backbone returned no KV cache for the prefix; gradient checkpointing disables "
                                   "caching, so heads that read a cached prefix (flow, diffusion) cannot use it")
            if fresh:
                return hidden, cache
            self._encoded = (hidden, cache)
        return self._encoded

    def pooled(self) -> torch.Tensor:
        """Mean of the prefix's last hidden states over valid tokens (B, D): value and residual heads."""
        hidden = self._prefix_hidden if self._prefix_hidden is not None else self.encode()[0]
        hidden = hidden.float()
        keep = self.valid[..., None].float()
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def run_on_cache(self, run, cache, suffix: torch.Tensor, causal_suffix: bool, past_suffix: int = 0,
                     keep: bool = False) -> torch.Tensor:
        """Run `suffix` (B, S, D) through `run` (`Backbone.run`, or an action expert's `run` with the
        same signature and matching layers) reading the cached prefix and `past_suffix` earlier suffix tokens. The cache is
        cropped back afterwards unless `keep` (autoregressive decoding keeps what it appends)."""
        b, s = suffix.shape[:2]
        dev = suffix.device
        before = cache.get_seq_length()
        own = _tri(s, dev) if causal_suffix else torch.ones(s, s, dtype=torch.bool, device=dev)
        allowed = torch.cat([
            self.valid[:, None, :].expand(b, s, -1),
            torch.ones(b, s, past_suffix, dtype=torch.bool, device=dev),
            own[None].expand(b, s, s),
        ], dim=2)
        positions = self.valid.long().sum(-1, keepdim=True) + past_suffix + torch.arange(s, device=dev)[None]
        hidden, _ = run(suffix, additive_mask(allowed, suffix.dtype), positions, past_key_values=cache, use_cache=True)
        if not keep:
            cache.crop(before)
        return hidden

    def step_cached(self, cache, token_embeds: torch.Tensor, step: int) -> torch.Tensor:
        """Append one suffix token (B, 1, D) that sees the valid prefix and earlier suffix tokens."""
        return self.run_on_cache(self.backbone.run, cache, token_embeds.to(self.embeds.dtype), True, step, keep=True)
