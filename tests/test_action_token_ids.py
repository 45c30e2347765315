"""Which vocabulary ids the bin-token heads use: OpenVLA's own layout on openvla-7b (so fine-tuning starts
from its learned action rows), the vocabulary's last ids elsewhere."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from head_problems import Problem
from vla.backbones.hf_vlm import TINY_VOCAB, PaliGemmaBackbone
from vla.heads.tokenized import ActionTokenizer


def openvla_ids(actions: np.ndarray) -> np.ndarray:
    """openvla's prismatic/vla/action_tokenizer.py, written out: tokenizer.vocab_size (32000) - digitize
    over 256 edges on [-1, 1]."""
    return 32000 - np.digitize(np.clip(actions, -1.0, 1.0), np.linspace(-1, 1, 256))


def openvla_values(ids: np.ndarray) -> np.ndarray:
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2
    return centers[np.clip(32000 - ids - 1, 0, centers.shape[0] - 1)]


def test_openvla_layout_matches_openvlas_action_tokenizer():
    tok = ActionTokenizer(255, 32064, top_id=31999)  # openvla-7b: padded embedding 32064, Llama-2 text vocab 32000
    rng = np.random.default_rng(0)
    # random actions, values just inside each bin edge (float rounding exactly on an edge may go either way)
    edges = np.linspace(-1, 1, 256)
    a = np.concatenate([rng.uniform(-1, 1, 20000), edges[:-1] + 1e-6, edges[1:] - 1e-6, [-1.0, -3.0]])
    ours = tok.to_ids(torch.from_numpy(a)).numpy()
    theirs = openvla_ids(a)
    assert ours.min() == 31745 and ours.max() == 31999
    np.testing.assert_array_equal(ours, theirs)
    # a >= 1: OpenVLA writes id 31744, which it decodes as the top bin, 31745; ours writes 31745 directly
    assert tok.to_ids(torch.tensor([1.0, 2.0])).tolist() == [31745, 31745]
    assert openvla_ids(np.array([1.0, 2.0])).tolist() == [31744, 31744]
    # decoding: the same bin centres for every id either side produces (OpenVLA's id 31744, a == 1.0 exactly,
    # decodes as the top bin; ours encodes 1.0 as that bin directly)
    ids = np.arange(31744, 32000)
    np.testing.assert_allclose(tok.from_ids(torch.from_numpy(np.maximum(ids, 31745))).numpy(), openvla_values(ids),
                               atol=1e-6)
    # the LM's logits in bin order: bin b is the logit of id 31999 - b
    lm = torch.arange(32064.0)
    assert tok.bin_logits(lm).tolist() == [31999.0 - b for b in range(255)]


def test_end_layout_is_the_last_ids_in_bin_order():
    tok = ActionTokenizer(256, 1024)
    assert tok.bin_logits(torch.arange(1024.0)).tolist() == [768.0 + b for b in range(256)]
    assert tok.ids(torch.tensor([0, 255])).tolist() == [768, 1023]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ActionTokenizer(255, 1024, top_id=1024)


def test_openvla_backbone_declares_its_action_tokens_from_the_text_tokenizer():
    from vla.backbones.openvla import OpenVLABackbone
    from vla.tokenizer import HFTokenizer

    # the remote-code model's parts the constructor reads; the tokenizer's vocab_size is its text vocabulary
    model = SimpleNamespace(language_model=SimpleNamespace(config=SimpleNamespace(hidden_size=16, vocab_size=32064)),
                            vision_backbone=SimpleNamespace(get_num_patches=lambda: 256))
    text = SimpleNamespace(vocab_size=32000, pad_token_id=32000, bos_token_id=1)
    backbone = OpenVLABackbone(model, [], [], 224, HFTokenizer(text, 32064))
    assert backbone.pretrained_action_tokens == (31999, 255)


@pytest.mark.parametrize("kind", ["tokenized", "oft_tokens"])
def test_heads_train_and_decode_on_a_backbones_pretrained_action_tokens(kind, monkeypatch):
    top = TINY_VOCAB - 5  # a block that is neither the last ids nor in bin order
    monkeypatch.setattr(PaliGemmaBackbone, "pretrained_action_tokens", (top, 255))
    extra = {"oft_output": "tokens"} if kind == "oft_tokens" else {}
    p = Problem(kind.split("_")[0], chunk=2, num_bins=255, **extra)
    assert p.head.tokens.top_id == top and p.head.tokens.first_id == top - 254
    before, after = p.overfit(150, 2e-3)
    assert after < before / 50
    assert (p.sample() - p.targets).abs().max() <= 1.0 / 255 + 1e-6  # within half a bin
    # the ids the head reads and writes are the backbone's: greedy bins, through the LM head, are its top ids
    with torch.no_grad():
        hidden_logits = torch.zeros(1, TINY_VOCAB)
        hidden_logits[0, top - 7] = 10.0  # id top - 7 is bin 7
        assert p.head.tokens.bin_logits(hidden_logits).argmax(-1).item() == 7
    # num_bins must be the backbone's, unless the head asks for new tokens at the end of the vocabulary
    with pytest.raises(ValueError, match="head.num_bins=255"):
        Problem(kind.split("_")[0], chunk=2, num_bins=256, **extra)
    fresh = Problem(kind.split("_")[0], chunk=2, num_bins=256, token_ids="end", **extra)
    assert fresh.head.tokens.top_id is None and fresh.head.tokens.first_id == TINY_VOCAB - 256


def test_old_checkpoints_keep_their_last_ids_and_openvla_bins_are_checked_before_the_download(tmp_path):
    import json

    from vla.checkpoint import load_config, save_policy
    from vla.config import ConfigError, ExperimentConfig, merge
    from vla.experiment import check_choices
    from vla.random_policy import random_policy

    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"type": "tokenized", "chunk_size": 1}}),
                tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["head"]["token_ids"]  # saved before the key existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert load_config(tmp_path / "old").head.token_ids == "end"
    openvla = {"backbone": {"name": "openvla"}, "head": {"type": "tokenized", "num_bins": 256}}
    with pytest.raises(ConfigError, match="openvla-7b's pretrained action tokens are 255 uniform bins"):
        check_choices(merge(ExperimentConfig(), openvla))
    check_choices(merge(ExperimentConfig(), {**openvla, "head": {"type": "tokenized", "num_bins": 255}}))
    check_choices(merge(ExperimentConfig(), {**openvla, "head": {"type": "tokenized", "token_ids": "end"}}))
