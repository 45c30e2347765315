"""A bf16 backbone (backbone.dtype=bfloat16, as for a 7B on a GPU) trains through float32 weights only: an AdamW
step on a bf16 weight rounds away below ~1/256 of it. Run here on the CPU, which computes bf16 too."""
import pytest
import torch

from vla.config import ConfigError
from vla.random_policy import random_policy
from vla.train.lora import apply_lora
from vla.train.precision import refuse_low_precision_training


@pytest.fixture
def bf16_backbone(monkeypatch):
    """Policies built while it is active get their backbone in bf16, as from_pretrained(torch_dtype=bf16) gives."""
    import vla.model

    plain = vla.model.build_backbone
    monkeypatch.setattr(vla.model, "build_backbone", lambda cfg: plain(cfg).to(torch.bfloat16))


def _policy(head: str, lora: int):
    policy = random_policy({"backbone": {"image_size": 32, "lora_rank": lora}, "head": {"chunk_size": 2, "type": head}})
    apply_lora(policy, policy.cfg.backbone)
    return policy


def _batch():
    return {"images": torch.zeros((2, 2, 32, 32, 3), dtype=torch.uint8), "state": torch.zeros(2, 8), "task": ["t", "t"],
            "action": torch.rand(2, 2, 7) * 2 - 1, "action_pad": torch.zeros(2, 2, dtype=torch.bool)}


@pytest.mark.parametrize("head", ["flow", "diffusion", "oft", "tokenized"])
def test_lora_over_a_bf16_backbone_trains_float32_weights_that_small_steps_move(bf16_backbone, head):
    policy = _policy(head, lora=4)
    trainable = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert any("lora_" in n for n in trainable) and policy.backbone.embed_tokens(torch.zeros(1, 1, dtype=torch.long)).dtype == torch.bfloat16
    refuse_low_precision_training(policy)
    assert policy.act(_batch()["images"], _batch()["state"], ["t", "t"]).shape == (2, 2, 7)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-6, weight_decay=0.0)  # an RL-sized step
    policy.train()
    for _ in range(2):  # LoRA's B starts at 0, so A gets its gradient from the second step on
        optimizer.zero_grad()
        loss, _ = policy.loss(_batch(), torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
    moved = [n for n, p in trainable.items() if not torch.equal(p, before[n])]
    assert any("lora_A" in n for n in moved) and any("lora_B" in n for n in moved), moved


def test_the_action_expert_computes_in_the_backbones_dtype_with_float32_weights(bf16_backbone):
    policy = _policy("flow", lora=0)
    expert = policy.head.expert
    assert {p.dtype for p in expert.parameters()} == {torch.float32} and expert.compute_dtype == torch.bfloat16
    prefix = policy.build_prefix(_batch()["images"], _batch()["state"], ["t", "t"])
    out, hidden = expert(prefix, torch.zeros(2, 2, 7), torch.full((2,), 0.5))
    assert hidden.dtype == torch.bfloat16 and out.dtype == torch.float32


def test_full_fine_tuning_of_bf16_weights_is_refused(bf16_backbone):
    with pytest.raises(ConfigError, match=r"trainable weights are bfloat16 .*backbone.lora_rank>0"):
        refuse_low_precision_training(_policy("oft", lora=0))
