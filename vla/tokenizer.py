"""Text tokenizers behind one small interface.

Tiny backbones are random-weight models built from a config, so there is no tokenizer file to
load (and no hub to load it from): they use a byte-level tokenizer that needs no training. Real
checkpoints use their own tokenizer through transformers' AutoTokenizer.
"""
from __future__ import annotations

from typing import Protocol


class TextTokenizer(Protocol):
    pad_id: int
    bos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes shifted past three special ids: 0 pad, 1 bos, 2 eos."""

    pad_id, bos_id, eos_id = 0, 1, 2
    _offset = 3

    def __init__(self, vocab_size: int):
        if vocab_size < 256 + self._offset:
            raise ValueError(f"byte tokenizer needs vocab_size >= {256 + self._offset}, got {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [self.bos_id] + [b + self._offset for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self._offset for i in ids if self._offset <= i < 256 + self._offset)
        return data.decode("utf-8", errors="replace")


class HFTokenizer:
    """Adapter for a transformers tokenizer (the real checkpoints' own)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._tok = tokenizer
        self.vocab_size = vocab_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.pad_id

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
