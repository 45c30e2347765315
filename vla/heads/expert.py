"""pi0's action expert, shared by the flow-matching and diffusion heads.

The expert is a narrower decoder of the backbone's own family (Gemma for PaliGemma, Llama for
SmolVLM, ...) with the same depth and attention geometry (heads, KV heads, head_dim), so its layer i
can attend to the backbone's cached keys/values of layer i. In pi0 prefix tokens never attend to
action tokens, so computing the prefix once, caching it, and running only the expert over the
noisy action tokens is exactly pi0's joint attention, and every denoising step after the first
costs one small expert pass instead of a full forward.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from vla.backbones.base import Backbone, run_decoder
from vla.sequence import Prefix


def time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine-cosine embedding of t in [0, 1] (B,) -> (B, dim), with pi0's period range."""
    if dim % 2:
        raise ValueError(f"time embedding width must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def _k_proj_width(decoder: nn.Module) -> int:
    for name, module in decoder.named_modules():
        if name.endswith("k_proj") and isinstance(module, nn.Linear):
            return module.out_features
    raise ValueError(f"{type(decoder).__name__} has no k_proj layer; the action expert needs a standard HF decoder")


class ActionExpert(nn.Module):
    def __init__(self, backbone: Backbone, width: int, action_dim: int):
        super().__init__()
        base = backbone.decoder()
        cfg = copy.deepcopy(base.config)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        cfg.head_dim = head_dim  # keep the attention geometry when the width changes
        cfg.hidden_size = width
        cfg.intermediate_size = 4 * width
        cfg.vocab_size = 1  # the expert never embeds tokens; a full vocabulary table would be dead weight
        if hasattr(cfg, "pad_token_id"):
            cfg.pad_token_id = 0
        self.decoder = type(base)(cfg)
        if _k_proj_width(self.decoder) != _k_proj_width(base):
            # families that derive head_dim from hidden_size / heads (Qwen2): fewer query heads instead
            kv_heads = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
            heads = width // head_dim
            if width % head_dim or heads % kv_heads:
                raise ValueError(f"head.expert_width {width} cannot keep {type(base).__name__}'s attention geometry "
                                 f"(head_dim {head_dim}, {kv_heads} KV heads): use a multiple of {head_dim * kv_heads}")
            cfg.num_attention_heads = heads
            self.decoder = type(base)(cfg)
        if _k_proj_width(self.decoder) != _k_proj_width(base):
            raise ValueError(f"could not build an action expert of width {width} whose keys/values match "
                             f"{type(base).__name__}; try head.expert_width={base.config.hidden_size}")
        # the expert attends over the backbone's KV cache, so it computes in the backbone's dtype (bf16 for a real
        # checkpoint), also outside autocast (evaluation, RL, serving); its weights stay float32, since the
        # optimizer's steps on bf16 weights round away below ~1/256 of a weight
        self.compute_dtype = base.dtype
        self.width = width
        self.action_in = nn.Linear(action_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.action_out = nn.Linear(width, action_dim)

    def run(self, embeds, mask, positions, past_key_values=None, use_cache: bool = False):
        if self.compute_dtype == torch.float32:  # under an outer autocast (bf16 training) it computes as that says
            return run_decoder(self.decoder, embeds, mask, positions, past_key_values, use_cache)
        with torch.autocast(embeds.device.type, dtype=self.compute_dtype):
            return run_decoder(self.decoder, embeds, mask, positions, past_key_values, use_cache)

    def forward(self, prefix: Prefix, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy chunk x (B, T, A) at time t (B,) in [0, 1] -> (output (B, T, A), hidden (B, T, W)).
        Action tokens see the whole valid prefix and each other (bidirectional, as in pi0)."""
        _, cache = prefix.encode()
        tokens = self.action_in(x.float())
        temb = time_embedding(t, self.width)[:, None].expand(-1, x.shape[1], -1)
        tokens = self.time_mlp(torch.cat([tokens, temb.to(tokens.dtype)], dim=-1))
        dtype = prefix.embeds.dtype
        hidden = prefix.run_on_cache(self.run, cache, tokens.to(dtype), causal_suffix=False)
        return self.action_out(hidden.float()), hidden
