import pytest
import torch

from vla.backbones import build_backbone
from vla.config import BackboneConfig
from vla.sequence import Prefix


@pytest.fixture(scope="module", params=["tiny_paligemma", "tiny_smolvlm", "tiny_qwen2_5_vl"])
def backbone(request):
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name=request.param, image_size=32)).eval()


def _prefix(bb, pad_last=0):
    torch.manual_seed(1)
    img = bb.embed_images(torch.rand(2, 2, 3, 32, 32))
    ids = torch.randint(3, 200, (2, 9))
    emb = torch.cat([img, bb.embed_tokens(ids)], 1)
    valid = torch.ones(emb.shape[:2], dtype=torch.bool)
    if pad_last:
        valid[1, -pad_last:] = False
    return Prefix(bb, emb, valid)


@torch.no_grad()
def test_cached_decoding_matches_one_full_pass(backbone):
    prefix = _prefix(backbone, pad_last=3)
    suffix = torch.randn(2, 5, backbone.hidden_size)
    full = prefix.run_with_suffix(suffix, causal_suffix=True)
    cache = prefix.run_cached()
    steps = torch.cat([prefix.step_cached(cache, suffix[:, i:i + 1], i) for i in range(5)], 1)
    assert torch.allclose(full, steps, atol=1e-5)


@torch.no_grad()
def test_padding_does_not_change_the_suffix(backbone):
    """Row 1 padded with 3 extra masked tokens gives the same suffix output as without them."""
    prefix = _prefix(backbone, pad_last=3)
    trimmed = Prefix(backbone, prefix.embeds[1:, :-3], prefix.valid[1:, :-3])
    suffix = torch.randn(2, 4, backbone.hidden_size)
    a = prefix.run_with_suffix(suffix, causal_suffix=False)[1]
    b = trimmed.run_with_suffix(suffix[1:], causal_suffix=False)[0]
    assert torch.allclose(a, b, atol=1e-5)


@torch.no_grad()
def test_bidirectional_suffix_sees_later_slots_causal_does_not(backbone):
    prefix = _prefix(backbone)
    suffix = torch.randn(2, 4, backbone.hidden_size)
    changed = suffix.clone()
    changed[:, -1] += 1.0
    bi = prefix.run_with_suffix(suffix, False)[:, 0] - prefix.run_with_suffix(changed, False)[:, 0]
    ca = prefix.run_with_suffix(suffix, True)[:, 0] - prefix.run_with_suffix(changed, True)[:, 0]
    assert bi.abs().max() > 1e-4 and ca.abs().max() < 1e-6


def test_pooled_features_from_a_suffix_pass_equal_a_prefix_only_pass(backbone):
    """The residual/value heads reuse the prefix states of the head's own pass (no second pass)."""
    with torch.no_grad():
        prefix = _prefix(backbone, pad_last=3)
        alone = prefix.pooled()
        again = _prefix(backbone, pad_last=3)
        again.run_with_suffix(torch.randn(2, 4, backbone.hidden_size), causal_suffix=False)
        assert again._encoded is None
        assert torch.allclose(again.pooled(), alone, atol=1e-5)
