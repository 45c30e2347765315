"""backbone.gradient_checkpointing in RL: transformers' layers only checkpoint in training mode, and an RL update
runs the policy in eval mode (no dropout), so the update puts the layers alone in training mode."""
import numpy as np
import pytest
import torch
import transformers.modeling_utils

from vla.config import ConfigError, merge
from vla.random_policy import random_policy
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.train.checkpointing import checkpointed_layers, checkpointing_in_eval_mode, enable_gradient_checkpointing
from rl_batches import one_decision_episodes


def _policy(head: dict, lora: int = 0):
    from vla.train.lora import apply_lora

    torch.manual_seed(0)
    policy = random_policy({"backbone": {"image_size": 32, "lora_rank": lora}, "head": {"chunk_size": 2, **head},
                            "rl": {"algo": "grpo", "epochs": 1, "minibatch_size": 4, "lr": 1e-3, "target_kl": None}})
    apply_lora(policy, policy.cfg.backbone)
    return policy


def _batch(policy, rows=8):
    _, _, episodes = one_decision_episodes(policy, [float(j % 2) for j in range(rows)], seed=4)
    return flatten(episodes, [np.array([1.0 if j % 2 else -1.0]) for j in range(rows)], [np.zeros(1)] * rows)


@pytest.mark.parametrize("head, lora", [({"type": "tokenized"}, 0), ({"type": "oft", "oft_output": "tokens"}, 4)])
def test_an_rl_update_checkpoints_the_decoder_and_takes_the_same_step(head, lora, monkeypatch):
    calls = []
    real = transformers.modeling_utils.checkpoint
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    plain, checkpointed = _policy(head, lora), _policy(head, lora)
    checkpointed.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(checkpointed, merge(checkpointed.cfg, {"backbone": {"gradient_checkpointing": True}}))
    layers = checkpointed_layers(checkpointed)
    assert layers and not checkpointed_layers(plain)
    batch = _batch(plain)
    for policy in (plain, checkpointed):
        update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))
    assert calls and all(k == {"use_reentrant": False} for k in calls)  # every layer's forward went through it
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name  # recomputation changes memory, not the step
    assert not any(m.training for m in checkpointed.modules())  # back in eval mode after the update
    _batch(checkpointed)  # and rollouts still decode on the KV cache (eval mode: nothing checkpoints there)


def test_only_the_layers_train_inside_the_update_their_dropout_stays_off():
    policy = _policy({"type": "tokenized"})
    enable_gradient_checkpointing(policy, merge(policy.cfg, {"backbone": {"gradient_checkpointing": True}}))
    policy.eval()
    layers = checkpointed_layers(policy)
    with checkpointing_in_eval_mode(policy) as n:
        assert n == len(layers) and all(layer.training for layer in layers)
        assert not any(m.training for layer in layers for m in layer.modules() if m is not layer)
    assert not any(layer.training for layer in layers)
    with checkpointing_in_eval_mode(policy, active=False) as n:  # PPO's critic warm-up reads the prefix's KV cache
        assert n == 0 and not any(layer.training for layer in layers)


def test_checkpointing_is_refused_for_heads_that_read_the_kv_cache():
    policy = _policy({"type": "flow"})
    with pytest.raises(ConfigError, match="disables the KV cache the flow head's expert reads"):
        enable_gradient_checkpointing(policy, merge(policy.cfg, {"backbone": {"gradient_checkpointing": True}}))


def test_a_residual_over_a_frozen_base_has_nothing_to_checkpoint():
    """Its base and backbone are frozen and their features detached: the update runs no backward through the
    decoder (and reads the prefix's KV cache for its pooled features, which checkpointing would disable)."""
    policy = _policy({"type": "residual"})
    on = merge(policy.cfg, {"backbone": {"gradient_checkpointing": True}})
    enable_gradient_checkpointing(policy, on)  # trained from scratch, base and backbone with it: checkpointed
    assert checkpointed_layers(policy)
    policy = _policy({"type": "residual"})
    policy.freeze_base()
    enable_gradient_checkpointing(policy, on)
    assert not checkpointed_layers(policy)
    update(policy, _batch(policy), make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))
