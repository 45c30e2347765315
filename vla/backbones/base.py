"""What every backbone offers the action heads.

A backbone is a HF vision-language model taken apart into the pieces a policy needs: image
features already projected into the language model's width, token embeddings, the decoder run on
a sequence of embeddings with an explicit attention mask, and the LM head (for token heads).
Composing the sequence ourselves (instead of calling the model's own forward) is what lets heads
append action slots with their own attention pattern, as OpenVLA-OFT and pi0 do.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.tokenizer import TextTokenizer


class Backbone(nn.Module):
    hidden_size: int
    vocab_size: int
    image_size: int
    tokens_per_image: int
    prefix_bidirectional: bool  # PaliGemma-style prefix-LM; causal LMs (Llama) use False
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    tokenizer: TextTokenizer
    # the pretrained model's own action tokens, (top_id, num_bins): bin b of num_bins uniform bins on [-1, 1] is
    # id top_id - b (OpenVLA). None: the model has none and token heads take the vocabulary's last ids
    pretrained_action_tokens: tuple[int, int] | None = None
    # the token the pretrained model read right before its first action token (OpenVLA: "▁" after "Out:"); the
    # autoregressive token head starts from its embedding. None: a learned start slot from scratch
    action_start_id: int | None = None
    # the pretrained model read its BOS token before the image tokens (OpenVLA: [BOS][patches][prompt]); False:
    # [images][BOS prompt] (PaliGemma's own layout; SmolVLM and Qwen have no such order to keep)
    bos_before_images: bool = False

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_mean, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
        return (pixels - mean) / std

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, cams, 3, H, W) pixels in [0, 1] at `image_size` -> (B, cams * tokens_per_image, hidden).
        Each backbone applies its own pixel normalization."""
        raise NotImplementedError

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decoder(self) -> nn.Module:
        """The transformer decoder (called with inputs_embeds, a 4D additive mask, position ids)."""
        raise NotImplementedError

    def vision_encoder(self) -> list[nn.Module]:
        """The pretrained image encoder, without the projector into the decoder's width (`backbone.freeze_vision`
        freezes these; the projector, embeddings, decoder and LM head keep training, as OpenVLA's frozen-vision
        recipe does)."""
        raise NotImplementedError

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
    ):
        """Decoder over `embeds` with an additive (B, 1, Q, K) mask. Returns (hidden, cache)."""
        return run_decoder(self.decoder(), embeds, mask, positions, past_key_values, use_cache)


def run_decoder(decoder: nn.Module, embeds, mask, positions, past_key_values=None, use_cache: bool = False):
    """A transformers decoder called on embeddings with our own 4D mask and positions."""
    out = decoder(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=past_key_values,
        use_cache=use_cache,
        return_dict=True,
    )
    return out.last_hidden_state, (out.past_key_values if use_cache else None)
