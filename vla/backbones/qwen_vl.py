"""Qwen2.5-VL from transformers' own classes: a native-resolution ViT (window attention, 2D
rotary positions) whose 2x2 patch groups are merged by an MLP into the Qwen2.5 decoder's width.

Qwen2.5-VL takes images at any size (multiple of patch_size * spatial_merge_size); here every
camera frame comes at the fixed `image_size`, so each one gives the same number of tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.backbones.base import Backbone
from vla.backbones.hf_vlm import TINY_VOCAB, _dtype, _hf_tokenizer
from vla.tokenizer import TextTokenizer, WordHashTokenizer


class QwenVLBackbone(Backbone):
    """Qwen2.5-VL vision tower + patch merger + Qwen2.5 decoder (causal).

    Positions: Qwen2.5-VL's LM uses M-RoPE (separate temporal/height/width rotary sections), and its
    own forward gives image tokens 3D (t, h, w) positions. We pass the 2D (B, L) positions of
    `Backbone.run`; the text model then repeats them on all 3 axes, which makes M-RoPE plain 1D RoPE,
    so image tokens get 1D text positions in the LM. The vision tower keeps its own 2D rotary positions
    (computed from `image_grid_thw`), so spatial layout is still encoded inside each image's features.
    """

    prefix_bidirectional = False
    # OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, the defaults of transformers' Qwen2VLImageProcessor
    image_mean = (0.48145466, 0.4578275, 0.40821073)
    image_std = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, image_size: int):
        super().__init__()
        self.model = model
        cfg = model.config
        vis = cfg.vision_config
        self.patch_size, self.merge_size, self.temporal_patch_size = (
            vis.patch_size, vis.spatial_merge_size, vis.temporal_patch_size
        )
        unit = self.patch_size * self.merge_size
        if image_size % unit != 0:
            raise ValueError(
                f"Qwen2.5-VL image_size must be divisible by patch_size * spatial_merge_size = {unit}, "
                f"got {image_size} (e.g. use {max(unit, image_size // unit * unit)})"
            )
        self.hidden_size = cfg.text_config.hidden_size
        self.vocab_size = cfg.text_config.vocab_size
        self.image_size = image_size
        self.tokens_per_image = (image_size // self.patch_size) ** 2 // self.merge_size**2
        self.tokenizer = tokenizer

    @classmethod
    def tiny(cls, image_size: int) -> "QwenVLBackbone":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = dict(
            depth=2, hidden_size=128, intermediate_size=256, num_heads=4, patch_size=8, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=128,
            window_size=32, fullatt_block_indexes=[1],  # windows of 2x2 merged tokens, last block global
        )
        text = dict(
            vocab_size=TINY_VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},  # sums to head_dim / 2 = 16
        )
        # all special ids below the 256 action-bin ids at the top of the vocabulary
        config = Qwen2_5_VLConfig(
            vision_config=vision, text_config=text, image_token_id=TINY_VOCAB - 257,
            video_token_id=TINY_VOCAB - 258, vision_start_token_id=TINY_VOCAB - 259,
            vision_end_token_id=TINY_VOCAB - 260, attn_implementation="sdpa",
        )
        model = Qwen2_5_VLForConditionalGeneration(config)
        return cls(model, WordHashTokenizer(TINY_VOCAB, max_id=TINY_VOCAB - 260), image_size)

    @classmethod
    def pretrained(cls, name: str, dtype: str, image_size: int = 224) -> "QwenVLBackbone":
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            name, torch_dtype=_dtype(dtype), attn_implementation="sdpa"
        )
        return cls(model, _hf_tokenizer(name, model.config.text_config.vocab_size), image_size)

    def patchify(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (N, 3, H, W) -> (N * gh * gw, 3 * t * p * p) patches and (N, 3) grid_thw, in the
        order of Qwen2VLImageProcessor._preprocess (a still frame repeated t times; patches grouped
        by merge x merge blocks), done in torch so it stays differentiable and on-device."""
        n, c, h, w = pixels.shape
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = h // p, w // p
        x = pixels[:, None].expand(n, t, c, h, w).reshape(n, t, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (n, gh/m, gw/m, m, m, c, t, p, p), as the processor
        grid = torch.tensor([[1, gh, gw]], device=pixels.device).expand(n, 3)
        return x.reshape(n * gh * gw, c * t * p * p), grid

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c = pixels.shape[:2]
        visual = self.model.model.visual
        patches, grid = self.patchify(self.normalize_pixels(pixels).flatten(0, 1))
        # the vision tower directly (not get_image_features): one flat tensor, no per-image split
        feats = visual(patches.to(visual.dtype), grid_thw=grid)  # (b * c * tokens_per_image, hidden)
        return feats.reshape(b, c * self.tokens_per_image, feats.shape[-1])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.language_model.embed_tokens(ids)

    def vision_encoder(self) -> list[nn.Module]:
        visual = self.model.model.visual
        return [visual.patch_embed, visual.blocks]  # its patch merger is the projector

    def decoder(self) -> nn.Module:
        # Qwen2_5_VLTextModel: takes our 4D additive mask as-is (masking_utils returns 4D masks
        # unchanged) and expands 2D position_ids to the 3 M-RoPE axes, so Backbone.run needs no override
        return self.model.model.language_model

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)
