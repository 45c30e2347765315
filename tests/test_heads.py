import pytest
import torch

from head_problems import Problem
from vla.backbones import build_backbone
from vla.config import BackboneConfig, HeadConfig
from vla.heads import build_head
from vla.heads.tokenized import ActionTokenizer


def test_oft_l1_overfits_a_fixed_batch():
    p = Problem("oft")
    before, after = p.overfit(150, 1e-3)
    assert after < before / 10
    assert (p.sample() - p.targets).abs().max() < 0.1


def test_oft_parallel_tokens_overfit_to_within_half_a_bin():
    p = Problem("oft", oft_output="tokens")
    before, after = p.overfit(150, 2e-3)
    assert after < before / 100
    assert (p.sample() - p.targets).abs().max() <= 1.0 / 256 + 1e-6


def test_tokenized_overfits_and_greedy_decode_returns_target_bins():
    p = Problem("tokenized", chunk=2)
    before, after = p.overfit(200, 2e-3)
    assert after < before / 100
    assert (p.sample() - p.targets).abs().max() <= 1.0 / 256 + 1e-6  # within half a bin (bin width 2/256)


def test_action_tokenizer_roundtrip_within_half_a_bin():
    tok = ActionTokenizer(256, 1024)
    a = torch.linspace(-1, 1, 10001)
    ids = tok.to_ids(a)
    assert ids.min() >= 1024 - 256 and ids.max() <= 1023
    assert (tok.from_ids(ids) - a).abs().max() <= 1.0 / 256 + 1e-6


@pytest.mark.parametrize("head_type", ["tokenized", "oft_tokens"])
def test_token_log_probs_match_the_sampling_distribution(head_type):
    """The log-prob recorded while sampling equals the recomputed one and a direct softmax."""
    p = Problem("oft", oft_output="tokens") if head_type == "oft_tokens" else Problem("tokenized", chunk=1)
    p.bb.eval()
    with torch.no_grad():
        prefix = p.prefix()
        s = p.head.sample_rl(prefix, torch.Generator().manual_seed(0))
        lp, ent = p.head.evaluate(p.prefix(), s.record)
        assert torch.allclose(lp, s.log_prob, atol=1e-4)
        assert (ent > 0).all()
        if head_type == "tokenized":
            direct = p.head.token_log_probs(p.prefix(), s.actions).sum(-1)  # teacher-forced, temperature 1
            assert torch.allclose(direct, lp, atol=1e-4)


def test_oft_l1_has_no_log_prob_and_says_what_to_use():
    p = Problem("oft")
    with pytest.raises(NotImplementedError, match="oft_output=tokens"):
        p.head.sample_rl(p.prefix())


def test_unknown_head_lists_valid():
    bb = build_backbone(BackboneConfig(image_size=32))
    with pytest.raises(ValueError, match="valid: oft, tokenized, flow, diffusion, residual"):
        build_head(HeadConfig(type="mlp"), bb)
    with pytest.raises(ValueError, match="head.oft_output"):
        build_head(HeadConfig(type="oft", oft_output="bins"), bb)


def test_token_scores_are_the_categoricals_log_prob_and_entropy():
    """The entropy feeds RL's entropy bonus; it must be the distribution's, not merely positive."""
    from vla.heads.tokenized import token_scores

    logits = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(0)) * 3
    bins = torch.randint(0, 256, (3, 5), generator=torch.Generator().manual_seed(1))
    lp, ent = token_scores(logits, bins)
    dist = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(lp, dist.log_prob(bins), atol=1e-5) and torch.allclose(ent, dist.entropy(), atol=1e-5)
