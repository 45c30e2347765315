"""Start a residual policy from a trained base checkpoint (head.residual.base_checkpoint).

The residual run adopts what the base was trained with (backbone, prompt, normalization, cameras,
proprio, the base head's settings) so the frozen base sees exactly its own inputs, copies the base
weights into the new policy (the base head under `head.base`), and freezes them. The saved residual
checkpoint is self-contained: it holds the base weights too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from vla.checkpoint import load_config, load_policy
from vla.config import ExperimentConfig
from vla.model import Policy


def adopt_base_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with what the base checkpoint was trained with: its backbone, head settings (chunk size
    included), normalization, prompt, cameras and proprio. The trainer reads the dataset with these, so
    the base sees its own inputs in training as in evaluation. Applying it twice changes nothing."""
    bcfg = load_config(Path(cfg.head.residual.base_checkpoint))
    if bcfg.head.type == "residual":
        raise ValueError(f"{cfg.head.residual.base_checkpoint} is itself a residual policy; give the base checkpoint")
    head = dataclasses.replace(  # the base's architecture; how the residual policy acts and learns is this run's
        bcfg.head, type="residual", value_head=cfg.head.value_head, sampler=cfg.head.sampler,
        residual=dataclasses.replace(cfg.head.residual, base_type=bcfg.head.type),
    )
    data = dataclasses.replace(cfg.data, cameras=bcfg.data.cameras, use_state=bcfg.data.use_state)
    return dataclasses.replace(cfg, backbone=bcfg.backbone, head=head, norm=bcfg.norm, prompt=bcfg.prompt, data=data)


def residual_from_base(cfg: ExperimentConfig) -> Policy:
    adopted = adopt_base_config(cfg)
    base = load_policy(cfg.head.residual.base_checkpoint, cfg.device)
    policy = Policy(adopted, base.normalizer, base.state_dim)
    from vla.train.lora import apply_lora

    apply_lora(policy, adopted.backbone)
    state = {}
    for key, value in base.state_dict().items():
        state["head.base." + key[len("head."):] if key.startswith("head.") else key] = value
    missing, unexpected = policy.load_state_dict(state, strict=False)
    allowed_missing = ("head.mean_net", "head.log_std", "value_head")
    missing = [k for k in missing if not k.startswith(allowed_missing)]
    if missing or unexpected:
        raise ValueError(f"base checkpoint does not fit the residual policy: missing {missing[:5]}, unexpected {unexpected[:5]}")
    policy.freeze_base()
    return policy
