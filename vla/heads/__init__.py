"""Action heads by name; `head.type` in the config picks one."""
from __future__ import annotations

from vla.backbones.base import Backbone
from vla.config import HeadConfig
from vla.heads.base import ActionHead

HEAD_TYPES = ("oft", "tokenized")


def build_head(cfg: HeadConfig, backbone: Backbone) -> ActionHead:
    if cfg.type == "oft":
        from vla.heads.oft import OFTHead

        return OFTHead(backbone.hidden_size, cfg.chunk_size, cfg.action_dim, cfg.hidden_dim)
    if cfg.type == "tokenized":
        from vla.heads.tokenized import TokenizedHead

        return TokenizedHead(backbone.hidden_size, backbone.vocab_size, cfg.chunk_size, cfg.action_dim, cfg.num_bins)
    raise ValueError(f"unknown head.type '{cfg.type}'; valid: {', '.join(HEAD_TYPES)}")
