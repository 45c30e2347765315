"""LoRA through peft, injected into the backbone's language model in place."""
from __future__ import annotations

import torch

from vla.config import BackboneConfig

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def apply_lora(policy, cfg: BackboneConfig) -> None:
    """With lora_rank > 0: add LoRA adapters to the decoder and freeze the rest of the backbone
    (the head, proprio projector and adapters train)."""
    if cfg.lora_rank <= 0:
        return
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=LORA_TARGETS)
    inject_adapter_in_model(lora, policy.backbone.decoder())
    # peft puts the adapters in the base layer's dtype; in bf16 an AdamW step below ~1/256 of a weight rounds away
    # (RL's small steps would not move them at all). peft's LoRA layers cast their input to the adapter's dtype and
    # the result back, so float32 adapters run beside a bf16 base inside or outside autocast.
    for name, param in policy.backbone.decoder().named_parameters():
        if "lora_" in name and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
    for name, param in policy.backbone.named_parameters():
        param.requires_grad = "lora_" in name


def freeze_vision(policy) -> None:
    """Freeze the pretrained image encoder only: the projector, the decoder, its embeddings and the LM head (an
    untied one holds openvla-7b's action-token rows) keep training."""
    for module in policy.backbone.vision_encoder():
        module.requires_grad_(False)
