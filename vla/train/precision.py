"""Weights that train must be float32: AdamW's step on a bf16 weight rounds away once it is below ~1/256 of the
weight (bf16 keeps 8 significant bits), so BC's later steps and RL's small ones would silently not happen.
A bf16 backbone trains through float32 LoRA adapters or float32 heads and experts; its own weights stay frozen."""
from __future__ import annotations

import torch

from vla.config import ConfigError


def refuse_low_precision_training(policy) -> None:
    low = [(name, p.dtype) for name, p in policy.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if low:
        dtypes = sorted({str(d).replace("torch.", "") for _, d in low})
        raise ConfigError(
            f"{len(low)} trainable weights are {'/'.join(dtypes)} (e.g. {[n for n, _ in low[:3]]}): an optimizer step "
            "on them rounds away below ~1/256 of a weight. With backbone.dtype=bfloat16 train LoRA adapters "
            "(backbone.lora_rank>0; they are kept float32); to fine-tune the whole backbone load it in float32 "
            "(backbone.dtype=float32: bf16 autocast still computes in bf16 on a GPU)")
