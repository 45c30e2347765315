"""rl.rescore (decoupled PPO): the update clips its ratio against the learner's own score of the batch at its
start, and the gap to the sampling log-prob enters as a truncated importance weight. In bf16 the token heads'
sampling pass (KV-cached decoding) and the update's parallel pass round differently; here on the CPU, which
computes bf16 too."""
import math

import numpy as np
import pytest
import torch

from vla.config import ConfigError, ExperimentConfig
from vla.rl import prepare
from vla.rl.buffer import flatten
from vla.rl.objective import _score, make_optimizer, rescoring, update
from vla.random_policy import random_policy
from vla.train.lora import apply_lora
from rl_batches import one_decision_episodes


def _policy(algo: str = "grpo", lora: int = 0, head: str = "tokenized"):
    policy = random_policy({"backbone": {"image_size": 32, "lora_rank": lora}, "head": {"chunk_size": 2, "type": head},
                            "rl": {"algo": algo, "epochs": 1, "minibatch_size": 8, "lr": 1e-4, "target_kl": None}})
    apply_lora(policy, policy.cfg.backbone)
    return policy


def _batch(policy, rows: int = 8):
    _, _, episodes = one_decision_episodes(policy, [float(j % 2) for j in range(rows)], seed=3)
    return flatten(episodes, [np.array([1.0 if j % 2 else -1.0]) for j in range(rows)], [np.zeros(1)] * rows)


def _update(policy, batch):
    return update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))


def test_in_float32_a_rescored_update_takes_the_plain_updates_step():
    policy = _policy()
    twin = _policy()
    twin.load_state_dict(policy.state_dict())
    batch = _batch(policy)
    assert not rescoring(policy, policy.cfg.rl)  # unset: off while every weight is float32
    plain = _update(policy, batch)
    twin.cfg.rl.rescore = True
    rescored = _update(twin, batch)
    assert rescored["behaviour_gap"] < 1e-4 and abs(rescored["behaviour_weight"] - 1) < 1e-5
    assert abs(plain["pg_loss"] - rescored["pg_loss"]) < 1e-6
    for (name, a), b in zip(policy.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.fixture
def bf16_backbone(monkeypatch):
    import vla.model

    plain = vla.model.build_backbone
    monkeypatch.setattr(vla.model, "build_backbone", lambda cfg: plain(cfg).to(torch.bfloat16))


def test_in_bf16_the_sampling_log_probs_are_off_and_rescoring_starts_every_ratio_at_one(bf16_backbone):
    policy = _policy(lora=4)
    batch = _batch(policy)
    assert rescoring(policy, policy.cfg.rl)  # unset: on, the backbone computes in bf16
    gap = (_score(policy, batch, 8) - batch.old_log_prob).abs()
    assert gap.max() > 1e-4  # KV-cached sampling and the parallel re-score disagree in bf16
    policy.cfg.rl.lr = 0.0  # one full-batch minibatch, no step: the logged ratio is the starting one
    rescored = _update(policy, batch)
    assert rescored["approx_kl"] < 1e-9 and rescored["clip_frac"] == 0.0
    assert rescored["behaviour_gap"] == pytest.approx(float(gap.mean()), rel=1e-4)
    policy.cfg.rl.rescore = False
    plain = _update(policy, batch)
    assert plain["approx_kl"] > 1e-9 and "behaviour_gap" not in plain


@pytest.mark.parametrize("head", ["flow", "diffusion"])
def test_in_bf16_the_expert_heads_rescore_along_their_sampling_path(bf16_backbone, head):
    policy = _policy(lora=4, head=head)
    batch = _batch(policy)
    assert torch.equal(_score(policy, batch, 8), batch.old_log_prob)


def test_the_behaviour_weight_is_the_length_normalized_gap_truncated_at_the_cap():
    policy = _policy()
    policy.cfg.rl.rescore, policy.cfg.rl.lr = True, 0.0
    batch = _batch(policy)
    scale = policy.cfg.head.chunk_size * policy.cfg.head.action_dim  # rl.log_ratio=per_dim
    shifts = torch.tensor([0.0, 0.5, -0.5, -1.0, 1.0, -3.0, 0.25, 0.0]) * scale  # sampled as that much more likely
    batch.old_log_prob = _score(policy, batch, 8) + shifts
    logs = _update(policy, batch)
    expected = (-shifts / scale).exp().clamp(max=policy.cfg.rl.behaviour_weight_cap)
    assert logs["behaviour_weight"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert logs["behaviour_truncated"] == pytest.approx(2 / 8)  # exp(1) and exp(3) above the cap of 2
    assert logs["behaviour_gap"] == pytest.approx(float(shifts.abs().mean()), rel=1e-4)
    # the weight scales each decision's surrogate: at ratio 1 the loss is -mean(weight x advantage)
    assert logs["pg_loss"] == pytest.approx(-float((expected * batch.advantages).mean()), rel=1e-4)
    assert math.isfinite(logs["pg_loss"])


def test_rescore_is_refused_where_no_ratio_is_taken():
    cfg = ExperimentConfig()
    cfg.rl.algo, cfg.rl.rescore = "rft", True
    with pytest.raises(ConfigError, match="rl.rescore re-scores the clipped ratio"):
        prepare.check_config(cfg)
    cfg.rl.algo, cfg.rl.behaviour_weight_cap = "ppo", 0.5
    with pytest.raises(ConfigError, match="behaviour_weight_cap .* must be >= 1"):
        prepare.check_config(cfg)


class _Ranks:
    """Stands in for GradSync on one rank: `others` decisions held by the other ranks, world of 2."""

    def __init__(self, others: int):
        self.others = others

    def total(self, count: int) -> int:
        return count + self.others

    def minibatches_per_epoch(self, total: int, size: int) -> int:
        return max(1, -(-total // (2 * size)))


def test_under_fsdp_a_rank_scores_as_many_passes_as_the_others_even_with_no_decisions(monkeypatch):
    """Every FSDP forward gathers weights from all ranks: a rank running fewer scoring passes would hang them."""
    policy = _policy()
    batch = _batch(policy)
    calls = []
    build = policy.build_prefix
    monkeypatch.setattr(policy, "build_prefix", lambda *a: calls.append(len(a[2])) or build(*a))
    filler = batch.select(torch.arange(1))
    assert _score(policy, None, 4, _Ranks(others=24), filler) is None
    assert calls == [1, 1, 1]  # the other rank's 24 decisions take 3 passes of 4 per rank each
    calls.clear()
    scores = _score(policy, batch, 4, _Ranks(others=40), filler)
    assert calls == [2, 2, 1, 1, 1, 1]  # 48 decisions in all: 6 passes on every rank, its 8 spread over them
    assert torch.allclose(scores, _score(policy, batch, 4), atol=1e-6) and len(scores) == 8
