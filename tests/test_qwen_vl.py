"""Qwen2.5-VL backbone: patch order proven against HF's image processor, and the Prefix paths
(cached decoding, padding, heads) on the tiny preset. Cached-vs-full and trailing padding are also
covered for every backbone in test_sequence.py; here padding sits mid-prefix, as in real prompts."""
from __future__ import annotations

import pytest
import torch

from vla.backbones import build_backbone
from vla.backbones.qwen_vl import QwenVLBackbone
from vla.config import BackboneConfig, HeadConfig
from vla.heads import build_head
from vla.sequence import Prefix


@pytest.fixture(scope="module")
def bb() -> QwenVLBackbone:
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name="tiny_qwen2_5_vl", image_size=32)).eval()


def _prefix(bb: QwenVLBackbone, pad: slice | None = None) -> Prefix:
    """Row 1 gets invalid positions at `pad` (between image and text tokens)."""
    torch.manual_seed(1)
    img = bb.embed_images(torch.rand(2, 2, 3, 32, 32))
    emb = torch.cat([img, bb.embed_tokens(torch.randint(3, 200, (2, 9)))], 1)
    valid = torch.ones(emb.shape[:2], dtype=torch.bool)
    if pad is not None:
        valid[1, pad] = False
    return Prefix(bb, emb, valid)


def test_patchify_matches_hf_image_processor(bb: QwenVLBackbone) -> None:
    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(
        do_resize=False, do_rescale=False, image_mean=list(bb.image_mean), image_std=list(bb.image_std),
        patch_size=bb.patch_size, merge_size=bb.merge_size, temporal_patch_size=bb.temporal_patch_size,
    )
    # non-square so a height/width swap would show; two images so per-image concatenation is checked
    images = torch.rand(2, 3, 48, 32)
    ref = proc([im.permute(1, 2, 0).numpy() for im in images], input_data_format="channels_last", return_tensors="pt")
    ours, grid = bb.patchify(bb.normalize_pixels(images))
    assert torch.equal(grid, ref["image_grid_thw"])
    assert ours.shape == ref["pixel_values"].shape
    assert torch.allclose(ours, ref["pixel_values"].float(), atol=1e-5)


def test_image_size_must_fit_the_merged_patch_grid() -> None:
    with pytest.raises(ValueError, match="divisible by patch_size \\* spatial_merge_size = 16"):
        QwenVLBackbone.tiny(40)


@torch.no_grad()
def test_embed_images_shape_and_images_differ(bb: QwenVLBackbone) -> None:
    torch.manual_seed(2)
    pixels = torch.rand(2, 3, 3, 32, 32)
    feats = bb.embed_images(pixels)
    assert bb.tokens_per_image == (32 // 8) ** 2 // 4
    assert feats.shape == (2, 3 * bb.tokens_per_image, bb.hidden_size)
    assert (feats[0] - feats[1]).abs().max() > 1e-3
    # each camera encoded alone gives the same tokens: no attention leaks across images in the ViT
    alone = bb.embed_images(pixels[:1, 1:2])
    assert torch.allclose(feats[:1, bb.tokens_per_image:2 * bb.tokens_per_image], alone, atol=1e-5)


@torch.no_grad()
def test_2d_positions_are_1d_rope_on_all_three_mrope_axes(bb: QwenVLBackbone) -> None:
    prefix = _prefix(bb)
    mask = torch.zeros(2, 1, prefix.length, prefix.length)
    pos = prefix.positions()
    a = bb.decoder()(inputs_embeds=prefix.embeds, attention_mask=mask, position_ids=pos).last_hidden_state
    b = bb.decoder()(inputs_embeds=prefix.embeds, attention_mask=mask, position_ids=pos[None].expand(3, -1, -1))
    assert torch.allclose(a, b.last_hidden_state, atol=1e-6)


@torch.no_grad()
def test_cached_decoding_matches_one_causal_pass_with_mid_prefix_padding(bb: QwenVLBackbone) -> None:
    prefix = _prefix(bb, pad=slice(10, 13))
    suffix = torch.randn(2, 3, bb.hidden_size)
    full = prefix.run_with_suffix(suffix, causal_suffix=True)
    cache = prefix.run_cached()
    steps = torch.cat([prefix.step_cached(cache, suffix[:, i:i + 1], i) for i in range(3)], 1)
    assert full.shape == (2, 3, bb.hidden_size)
    assert torch.allclose(full, steps, atol=1e-4)


@torch.no_grad()
def test_mid_prefix_padding_equals_removing_those_positions(bb: QwenVLBackbone) -> None:
    prefix = _prefix(bb, pad=slice(10, 13))
    keep = prefix.valid[1]
    trimmed = Prefix(bb, prefix.embeds[1:, keep], prefix.valid[1:, keep])
    suffix = torch.randn(2, 4, bb.hidden_size)
    for causal in (False, True):
        a = prefix.run_with_suffix(suffix, causal_suffix=causal)[1]
        b = trimmed.run_with_suffix(suffix[1:], causal_suffix=causal)[0]
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("head_type", ["oft", "tokenized"])
def test_heads_train_on_qwen(head_type: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(name="tiny_qwen2_5_vl", image_size=32))
    head = build_head(HeadConfig(type=head_type, chunk_size=2, action_dim=3, hidden_dim=64), bb)
    emb = torch.cat([bb.embed_images(torch.rand(2, 1, 3, 32, 32)), bb.embed_tokens(torch.randint(3, 200, (2, 5)))], 1)
    prefix = Prefix(bb, emb, torch.ones(emb.shape[:2], dtype=torch.bool))
    loss, _ = head.loss(prefix, torch.rand(2, 2, 3) * 1.6 - 0.8, torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss)
    # gradients reach the vision tower through the torch patchify, and the decoder
    assert bb.model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert bb.model.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
