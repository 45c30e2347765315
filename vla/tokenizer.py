"""Text tokenizers behind one small interface.

Tiny backbones are random-weight models built from a config, so there is no tokenizer file to
load (and no hub to load it from): they hash words into ids, which needs no training. Real
checkpoints use their own tokenizer through transformers' AutoTokenizer.
"""
from __future__ import annotations

import re
import zlib
from typing import Protocol


class TextTokenizer(Protocol):
    pad_id: int
    bos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class WordHashTokenizer:
    """Lower-cased words and punctuation hashed (crc32) into a fixed id range: no vocabulary file,
    nothing to train or ship, deterministic across processes, and ~4x shorter sequences than bytes
    for instructions (which is most of a tiny model's prompt cost). Ids stay below `max_id` so the
    action-bin ids at the top of the vocabulary are never produced by text."""

    pad_id, bos_id, eos_id = 0, 1, 2
    _offset = 3

    def __init__(self, vocab_size: int, max_id: int):
        if max_id <= self._offset + 16 or max_id > vocab_size:
            raise ValueError(f"word-hash tokenizer needs 19 < max_id <= vocab_size, got {max_id}, {vocab_size}")
        self.vocab_size, self.max_id = vocab_size, max_id

    def _id(self, word: str) -> int:
        return self._offset + zlib.crc32(word.encode("utf-8")) % (self.max_id - self._offset)

    def encode(self, text: str) -> list[int]:
        return [self.bos_id] + [self._id(w) for w in re.findall(r"\w+|[^\w\s]", text.lower())]

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError("hashed word ids cannot be decoded back to text")


class HFTokenizer:
    """Adapter for a transformers tokenizer (the real checkpoints' own)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._tok = tokenizer
        self.vocab_size = vocab_size  # the model's embedding rows (often padded past the tokenizer's)
        self.text_vocab_size = int(tokenizer.vocab_size)  # the tokenizer's own ids, without added tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.pad_id

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=True)["input_ids"])

    def token_id(self, token: str) -> int:
        """The id of one vocabulary entry (e.g. Llama's "▁"); an error when the vocabulary lacks it."""
        found = self._tok.convert_tokens_to_ids(token)
        if found is None or found == self._tok.unk_token_id:
            raise KeyError(f"the tokenizer has no token {token!r}")
        return int(found)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
