import numpy as np
import pytest
import torch

from vla.checkpoint import load_policy, norm_specs, save_policy
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats
from vla.train.lora import apply_lora


def _policy(**backbone):
    torch.manual_seed(0)
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32, **backbone}})
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(50, 7)), "action"), "state": compute_stats(rng.normal(size=(50, 8)), "state")}
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8)
    apply_lora(policy, cfg.backbone)
    return policy


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randint(0, 255, (2, 2, 32, 32, 3), dtype=torch.uint8, generator=g),
            "state": torch.randn(2, 8, generator=g), "action": torch.rand(2, 8, 7, generator=g) * 2 - 1,
            "action_pad": torch.zeros(2, 8, dtype=torch.bool), "task": ["open the drawer"] * 2}


def test_lora_trains_only_adapters_head_and_proprio(tmp_path):
    policy = _policy(lora_rank=4)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert all("lora_" in n for n in trainable if n.startswith("backbone."))
    assert any(n.startswith("head.") for n in trainable) and any(n.startswith("proprio.") for n in trainable)
    loss, _ = policy.loss(_batch())
    loss.backward()
    lora_grads = [p.grad for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    save_policy(policy, tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    b = _batch()
    assert np.array_equal(policy.eval().act(b["images"], b["state"], b["task"]), loaded.act(b["images"], b["state"], b["task"]))


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, ckpt = _policy(), _policy()
    ckpt.backbone.decoder().gradient_checkpointing_enable()
    for p in (plain, ckpt):
        p.train()
        p.loss(_batch(), torch.Generator().manual_seed(0))[0].backward()  # same augmentation
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5), n


def test_rl_adds_fresh_lora_adapters_to_a_checkpoint_trained_without_them(tmp_path):
    """LoRA RL for large backbones: `backbone.lora_rank=N` at RL time over a fully fine-tuned checkpoint."""
    import numpy as np

    from vla.checkpoint import save_policy
    from vla.random_policy import random_policy
    from vla.rl.prepare import prepare_policy

    bc = random_policy({"backbone": {"image_size": 32}, "head": {"type": "oft", "oft_output": "tokens", "chunk_size": 2}})
    save_policy(bc, tmp_path / "ckpt")
    policy = prepare_policy(tmp_path / "ckpt", None, ["rl.algo=grpo", "backbone.lora_rank=4"])
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    assert all("lora_" in n for n in trainable if n.startswith("backbone."))
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (2, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.zeros(2, 8)
    same = [p.act(images, states, ["pick up the bowl"] * 2) for p in (bc, policy)]
    np.testing.assert_allclose(same[0], same[1], atol=1e-5)  # zero-initialised B: the trained policy, unchanged
    save_policy(policy, tmp_path / "rl_ckpt")  # an RL checkpoint with the new adapters loads like any LoRA one
    np.testing.assert_allclose(load_policy(tmp_path / "rl_ckpt").act(images, states, ["pick up the bowl"] * 2), same[1],
                               atol=1e-5)


@pytest.mark.parametrize("name, size", [("tiny_paligemma", 32), ("tiny_smolvlm", 32), ("tiny_qwen2_5_vl", 32)])
def test_freeze_vision_freezes_the_image_encoder_only(name, size):
    """OpenVLA's frozen-vision recipe trains the projector and the LM head; only the encoder is frozen."""
    from vla.random_policy import random_policy
    from vla.train.lora import freeze_vision

    policy = random_policy({"backbone": {"name": name, "image_size": size}})
    freeze_vision(policy)
    frozen = {n for n, p in policy.backbone.named_parameters() if not p.requires_grad}
    encoder = {id(p) for m in policy.backbone.vision_encoder() for p in m.parameters()}
    assert frozen and frozen == {n for n, p in policy.backbone.named_parameters() if id(p) in encoder}
    trainable = [n for n, p in policy.backbone.named_parameters() if p.requires_grad]
    assert any(k in n for n in trainable for k in ("projector", "connector", "merger"))  # the projector trains
    assert any("embed_tokens" in n for n in trainable) and any("layers" in n for n in trainable)
