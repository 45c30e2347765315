"""Action heads by name; `head.type` in the config picks one (one file per head)."""
from __future__ import annotations

import torch

from vla.backbones.base import Backbone
from vla.config import HeadConfig
from vla.heads.base import ActionHead, RLSample

HEAD_TYPES = ("oft", "tokenized", "flow", "diffusion", "residual")

__all__ = ["HEAD_TYPES", "ActionHead", "RLSample", "build_head", "samples_bins"]


def samples_bins(cfg: HeadConfig, kind: str | None = None) -> bool:
    """Whether the head's actions are categorical bins on [-1, 1]: the tokenized head, or OFT with token outputs."""
    kind = kind or cfg.type
    return kind == "tokenized" or (kind == "oft" and cfg.oft_output == "tokens")


def _expert_width(cfg: HeadConfig, backbone: Backbone) -> int:
    return cfg.expert_width or backbone.hidden_size // 2


def _token_top_id(cfg: HeadConfig, backbone: Backbone, kind: str) -> int | None:
    """head.token_ids=auto over a backbone with pretrained action tokens: their layout, which fixes num_bins."""
    pretrained = backbone.pretrained_action_tokens
    if not samples_bins(cfg, kind) or cfg.token_ids == "end" or pretrained is None:
        return None
    top_id, num_bins = pretrained
    refuse_other_bin_count(cfg.num_bins, num_bins, f"this backbone's (ids {top_id - num_bins + 1}..{top_id})")
    return top_id


def refuse_other_bin_count(num_bins: int, pretrained_bins: int, whose: str, error: type[Exception] = ValueError) -> None:
    """Pretrained action tokens fix the bin count: another head.num_bins would map actions onto the wrong tokens."""
    if num_bins != pretrained_bins:
        raise error(f"head.num_bins={num_bins}, but {whose} pretrained action tokens are {pretrained_bins} uniform "
                    f"bins on [-1, 1]; set head.num_bins={pretrained_bins} to fine-tune them, or "
                    "head.token_ids=end to learn new tokens")


def build_head(cfg: HeadConfig, backbone: Backbone, _type: str | None = None) -> ActionHead:
    kind = _type or cfg.type
    if cfg.learn_temperature and not samples_bins(cfg, kind):
        raise ValueError(f"head.learn_temperature needs a bin-token head (tokenized, or oft with "
                         f"oft_output=tokens); head '{kind}' (oft_output={cfg.oft_output}) samples no bins")
    if kind == "oft":
        from vla.heads.oft import OFTHead

        return OFTHead(backbone.hidden_size, cfg.chunk_size, cfg.action_dim, cfg.hidden_dim, cfg.oft_output,
                       backbone.vocab_size, cfg.num_bins, cfg.rl_temperature, cfg.learn_temperature,
                       _token_top_id(cfg, backbone, kind))
    if kind == "tokenized":
        from vla.heads.tokenized import TokenizedHead

        top_id = _token_top_id(cfg, backbone, kind)
        head = TokenizedHead(backbone.hidden_size, backbone.vocab_size, cfg.chunk_size, cfg.action_dim, cfg.num_bins,
                             cfg.rl_temperature, cfg.learn_temperature, top_id)
        if top_id is not None and backbone.action_start_id is not None:  # its own action tokens: start where it did
            with torch.no_grad():
                ids = torch.tensor([[backbone.action_start_id]], device=next(backbone.parameters()).device)
                start = backbone.embed_tokens(ids)
                head.start.copy_(start.float().to(head.start.device))
        return head
    if kind == "flow":
        from vla.heads.flow import FlowHead

        return FlowHead(backbone, cfg.chunk_size, cfg.action_dim, _expert_width(cfg, backbone), cfg.flow)
    if kind == "diffusion":
        from vla.heads.diffusion import DiffusionHead

        return DiffusionHead(backbone, cfg.chunk_size, cfg.action_dim, _expert_width(cfg, backbone), cfg.diffusion)
    if kind == "residual" and _type is None:
        from vla.heads.residual import ResidualHead

        if cfg.residual.base_type == "residual":
            raise ValueError("head.residual.base_type cannot itself be 'residual'")
        base = build_head(cfg, backbone, _type=cfg.residual.base_type)
        return ResidualHead(base, backbone.hidden_size, cfg.residual)
    valid = HEAD_TYPES if _type is None else tuple(t for t in HEAD_TYPES if t != "residual")
    field = "head.type" if _type is None else "head.residual.base_type"
    raise ValueError(f"unknown {field} '{kind}'; valid: {', '.join(valid)}")
