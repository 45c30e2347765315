"""Transforms shared by training and acting, so both see exactly the same inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vla.tokenizer import TextTokenizer


def images_to_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, cams, H, W, 3) -> float (B, cams, 3, size, size) in [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 5 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, cams, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    b, c, h, w, _ = images.shape
    x = images.permute(0, 1, 4, 2, 3).reshape(b * c, 3, h, w).float() / 255.0
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.reshape(b, c, 3, size, size)


def random_shift(pixels: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random-shift augmentation (DrQ): replicate-pad by `pad` and crop back at a random offset,
    independently per image. Deterministic for a given generator state."""
    if pad <= 0:
        return pixels
    b, c, ch, h, w = pixels.shape
    flat = F.pad(pixels.reshape(b * c, ch, h, w), (pad,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b * c, 2), generator=generator)
    out = torch.stack([flat[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    return out.reshape(b, c, ch, h, w)


class PromptEncoder:
    """Instruction strings -> right-padded token ids + validity mask, memoized per string."""

    def __init__(self, tokenizer: TextTokenizer, template: str, max_tokens: int):
        if "{instruction}" not in template:
            raise ValueError(f"prompt template must contain '{{instruction}}', got {template!r}")
        self.tokenizer, self.template, self.max_tokens = tokenizer, template, max_tokens
        self._cache: dict[str, list[int]] = {}

    def _ids(self, instruction: str) -> list[int]:
        if instruction not in self._cache:
            text = self.template.format(instruction=instruction.strip().lower())
            self._cache[instruction] = self.tokenizer.encode(text)[: self.max_tokens]
        return self._cache[instruction]

    def __call__(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self._ids(s) for s in instructions]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.tokenizer.pad_id, dtype=torch.long)
        valid = torch.zeros((len(seqs), length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            valid[i, : len(s)] = True
        return ids, valid
