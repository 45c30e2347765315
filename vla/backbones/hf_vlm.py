"""Backbones built from transformers' own VLM classes: PaliGemma and Idefics3 (SmolVLM).

`tiny_*` presets are random-weight models built from a small config (about a million
parameters) so everything runs on a CPU; `pretrained=` loads real weights with from_pretrained.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.backbones.base import Backbone
from vla.tokenizer import HFTokenizer, TextTokenizer, WordHashTokenizer

TINY_VOCAB = 1024  # hashed words below, the image token, and 256 action bins at the top


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"backbone.dtype '{name}' is unknown; valid: {sorted(table)}")
    return table[name]


def _hf_tokenizer(pretrained: str, vocab_size: int) -> TextTokenizer:
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(pretrained), vocab_size)


class PaliGemmaBackbone(Backbone):
    """SigLIP vision tower + linear projector + Gemma decoder, prefix-LM attention."""

    prefix_bidirectional = True
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer):
        super().__init__()
        self.model = model
        cfg = model.config
        self.hidden_size = cfg.text_config.hidden_size
        self.vocab_size = cfg.text_config.vocab_size
        self.image_size = cfg.vision_config.image_size
        self.tokens_per_image = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        self.tokenizer = tokenizer

    @classmethod
    def tiny(cls, image_size: int) -> "PaliGemmaBackbone":
        return cls.random(image_size, width=128, layers=4, patch=8)

    @classmethod
    def small(cls, image_size: int) -> "PaliGemmaBackbone":
        """Random weights at a size where compute, not per-call overhead, dominates (~28M parameters)."""
        return cls.random(image_size, width=512, layers=8, patch=16)

    @classmethod
    def random(cls, image_size: int, width: int, layers: int, patch: int) -> "PaliGemmaBackbone":
        from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

        vision = SiglipVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=max(2, layers // 2), num_attention_heads=4,
            image_size=image_size, patch_size=patch, projection_dim=width, vision_use_head=False,
        )
        text = GemmaConfig(
            vocab_size=TINY_VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=1, head_dim=width // 4, max_position_embeddings=1024,
        )
        config = PaliGemmaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=width,
                                 image_token_index=TINY_VOCAB - 257)
        config.text_config._attn_implementation = "sdpa"
        model = PaliGemmaForConditionalGeneration(config)
        return cls(model, WordHashTokenizer(TINY_VOCAB, max_id=TINY_VOCAB - 257))

    @classmethod
    def pretrained(cls, name: str, dtype: str) -> "PaliGemmaBackbone":
        from transformers import PaliGemmaForConditionalGeneration

        model = PaliGemmaForConditionalGeneration.from_pretrained(name, torch_dtype=_dtype(dtype))
        return cls(model, _hf_tokenizer(name, model.config.text_config.vocab_size))

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c = pixels.shape[:2]
        feats = self.model.model.get_image_features(self.normalize_pixels(pixels).flatten(0, 1).to(self.model.dtype))
        return feats.reshape(b, c * feats.shape[1], feats.shape[2])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.language_model.embed_tokens(ids)

    def decoder(self) -> nn.Module:
        return self.model.model.language_model

    def vision_encoder(self) -> list[nn.Module]:
        return [self.model.model.vision_tower]

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)


class Idefics3Backbone(Backbone):
    """SmolVLM / Idefics3: SigLIP-style encoder + pixel-shuffle connector + Llama decoder (causal)."""

    prefix_bidirectional = False
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer):
        super().__init__()
        self.model = model
        cfg = model.config
        self.hidden_size = cfg.text_config.hidden_size
        self.vocab_size = cfg.text_config.vocab_size
        self.image_size = cfg.vision_config.image_size
        patches = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        self.tokens_per_image = patches // (cfg.scale_factor**2)
        self.tokenizer = tokenizer

    @classmethod
    def tiny(cls, image_size: int) -> "Idefics3Backbone":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig, LlamaConfig

        vision = Idefics3VisionConfig(
            hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            image_size=image_size, patch_size=8,
        )
        text = LlamaConfig(
            vocab_size=TINY_VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        )
        config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=2,
                                image_token_id=TINY_VOCAB - 257)
        model = Idefics3ForConditionalGeneration(config)
        return cls(model, WordHashTokenizer(TINY_VOCAB, max_id=TINY_VOCAB - 257))

    @classmethod
    def pretrained(cls, name: str, dtype: str) -> "Idefics3Backbone":
        from transformers import Idefics3ForConditionalGeneration

        model = Idefics3ForConditionalGeneration.from_pretrained(name, torch_dtype=_dtype(dtype))
        return cls(model, _hf_tokenizer(name, model.config.text_config.vocab_size))

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c = pixels.shape[:2]
        # vision model + connector directly: get_image_features drops all-zero images, which would
        # silently change the sequence length for a black camera frame
        inner = self.model.model
        flat = self.normalize_pixels(pixels).flatten(0, 1).to(self.model.dtype)
        hidden = inner.vision_model(pixel_values=flat).last_hidden_state
        feats = inner.connector(hidden)
        return feats.reshape(b, c * feats.shape[1], feats.shape[2])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.text_model.embed_tokens(ids)

    def decoder(self) -> nn.Module:
        return self.model.model.text_model

    def vision_encoder(self) -> list[nn.Module]:
        return [self.model.model.vision_model]  # the pixel-shuffle connector is the projector

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)
