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
    text = SimpleNamespace(vocab_size=32000, pad_token_id=32000, bos_token_id=1, unk_token_id=0,
                           convert_tokens_to_ids=lambda t: 29871 if t == "\u2581" else 0)
    backbone = OpenVLABackbone(model, [], [], 224, HFTokenizer(text, 32064))
    assert backbone.pretrained_action_tokens == (31999, 255)
    # what openvla-7b read before its first action token ("Out: " ends in Llama's "▁") and where its BOS stands
    assert backbone.action_start_id == 29871 and backbone.bos_before_images


def test_openvla_loads_with_eager_attention_then_sdpa_and_names_the_timm_it_needs(monkeypatch):
    """openvla-7b's remote code reads `_supports_sdpa` off a language model it has not built yet when
    transformers >= 4.50 picks the default attention; and it needs timm 0.9, which it imports itself."""
    import transformers

    from vla.backbones import openvla

    calls = {}
    language_model = SimpleNamespace(config=SimpleNamespace(hidden_size=16, vocab_size=32064),
                                     set_attn_implementation=lambda impl: calls.setdefault("switched", impl))
    model = SimpleNamespace(language_model=language_model,
                            vision_backbone=SimpleNamespace(get_num_patches=lambda: 256))

    def from_pretrained(name, **kwargs):
        calls["kwargs"] = kwargs
        return model

    proc = SimpleNamespace(input_sizes=[(3, 224, 224)], means=[(0.5,) * 3], stds=[(0.5,) * 3])
    monkeypatch.setattr(transformers.AutoModelForVision2Seq, "from_pretrained", from_pretrained)
    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", lambda name, **kw: proc)
    text = SimpleNamespace(vocab_size=32000, pad_token_id=32000, bos_token_id=1, unk_token_id=0,
                           convert_tokens_to_ids=lambda t: 29871)
    from vla.tokenizer import HFTokenizer

    monkeypatch.setattr(openvla, "_hf_tokenizer", lambda name, vocab: HFTokenizer(text, vocab))
    backbone = openvla.OpenVLABackbone.pretrained("openvla/openvla-7b", "bfloat16")
    assert calls["kwargs"]["attn_implementation"] == "eager" and calls["kwargs"]["trust_remote_code"]
    assert calls["switched"] == "sdpa" and backbone.image_size == 224

    def needs_timm(name, **kwargs):
        raise ImportError("This modeling file requires the following packages that were not found in your "
                          "environment: timm. Run `pip install timm`")

    monkeypatch.setattr(transformers.AutoModelForVision2Seq, "from_pretrained", needs_timm)
    with pytest.raises(ImportError, match=r"timm 0.9 .*\[openvla\]"):
        openvla.OpenVLABackbone.pretrained("openvla/openvla-7b", "bfloat16")


def test_a_backbone_that_read_bos_first_gets_bos_images_prompt():
    """openvla-7b was trained on [BOS][patches][prompt] (Prismatic splices the patches in after BOS)."""
    from vla.random_policy import random_policy

    policy = random_policy({"backbone": {"image_size": 32}})
    images = torch.zeros((2, 2, 32, 32, 3), dtype=torch.uint8)
    state, tasks = torch.zeros(2, 8), ["pick up the bowl", "put the bowl on the plate now"]
    plain = policy.build_prefix(images, state, tasks)
    policy.backbone.bos_before_images = True
    first = policy.build_prefix(images, state, tasks)
    assert first.embeds.shape == plain.embeds.shape
    bos = policy.backbone.embed_tokens(torch.tensor([[policy.backbone.tokenizer.bos_id]]))[0, 0]
    images_len = policy.backbone.tokens_per_image * 2
    assert torch.equal(first.embeds[:, 0], bos.expand(2, -1))  # BOS first
    assert torch.equal(first.embeds[:, 1:1 + images_len], plain.embeds[:, :images_len])  # then the images
    assert torch.equal(first.embeds[:, 1 + images_len:], plain.embeds[:, images_len + 1:])  # then the rest of the prompt
    assert torch.equal(first.valid[:, 1 + images_len:], plain.valid[:, images_len + 1:])  # padding stays where it was
    assert bool(first.valid[:, :1 + images_len].all())


def test_the_token_head_starts_from_the_token_before_the_pretrained_actions(monkeypatch):
    monkeypatch.setattr(PaliGemmaBackbone, "pretrained_action_tokens", (TINY_VOCAB - 5, 255))
    monkeypatch.setattr(PaliGemmaBackbone, "action_start_id", 7)
    p = Problem("tokenized", chunk=2, num_bins=255)
    assert torch.equal(p.head.start.data, p.bb.embed_tokens(torch.tensor([[7]])).float())
    monkeypatch.setattr(PaliGemmaBackbone, "pretrained_action_tokens", None)  # new tokens: a learned slot from scratch
    assert not torch.equal(Problem("tokenized", chunk=2, num_bins=255).head.start.data,
                           p.bb.embed_tokens(torch.tensor([[7]])).float())


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
