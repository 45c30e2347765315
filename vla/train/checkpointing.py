"""Gradient checkpointing of the backbone's decoder (`backbone.gradient_checkpointing`), in BC and in RL.

transformers' decoder layers recompute their activations in the backward pass only while the layer is in
training mode. BC trains in training mode; an RL update runs the policy in eval mode (no dropout: the log-prob
being clipped must be the one that sampled), so there the layers alone are put in training mode for the update,
their dropout submodules staying in eval. Non-reentrant checkpointing: the reentrant kind gives no gradient to
weights inside a checkpointed layer whose inputs do not require one (frozen embeddings under LoRA).
"""
from __future__ import annotations

from contextlib import contextmanager

from vla.config import ConfigError, ExperimentConfig


def enable_gradient_checkpointing(policy, cfg: ExperimentConfig) -> None:
    if not cfg.backbone.gradient_checkpointing or getattr(policy.head, "base_frozen", False):
        return  # a residual over a frozen base detaches the backbone's features: no backward to checkpoint
    if cfg.head.type in ("flow", "diffusion"):
        raise ConfigError(f"backbone.gradient_checkpointing disables the KV cache the {cfg.head.type} head's expert "
                          "reads; turn one of them off")
    policy.backbone.decoder().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointed_layers(policy) -> list:
    """The decoder layers that checkpoint their activations (none unless enabled)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in policy.backbone.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


@contextmanager
def checkpointing_in_eval_mode(policy, active: bool = True):
    """Within: the checkpointed layers themselves in training mode (so they checkpoint), nothing else."""
    layers = checkpointed_layers(policy) if active else []
    before = [layer.training for layer in layers]
    for layer in layers:
        layer.training = True  # not .train(): their attention and MLP submodules keep eval mode, dropout off
    try:
        yield len(layers)
    finally:
        for layer, was in zip(layers, before):
            layer.training = was
