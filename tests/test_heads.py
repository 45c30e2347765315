import numpy as np
import pytest
import torch

from vla.backbones import build_backbone
from vla.config import BackboneConfig, HeadConfig
from vla.heads import build_head
from vla.heads.tokenized import ActionTokenizer
from vla.sequence import Prefix


def _setup(head_type, chunk=4):
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(name="tiny_paligemma", image_size=32))
    head = build_head(HeadConfig(type=head_type, chunk_size=chunk, action_dim=3, hidden_dim=64), bb)
    images = torch.rand(4, 1, 3, 32, 32)
    ids = torch.randint(3, 200, (4, 6))
    targets = torch.rand(4, chunk, 3) * 1.6 - 0.8
    params = list(bb.parameters()) + list(head.parameters())

    def prefix():
        emb = torch.cat([bb.embed_images(images), bb.embed_tokens(ids)], 1)
        return Prefix(bb, emb, torch.ones(emb.shape[:2], dtype=torch.bool))

    return bb, head, prefix, targets, params


def test_oft_overfits_a_fixed_batch():
    bb, head, prefix, targets, params = _setup("oft")
    pad = torch.zeros(4, 4, dtype=torch.bool)
    opt = torch.optim.Adam(params, lr=1e-3)
    first = None
    for _ in range(150):
        loss, _ = head.loss(prefix(), targets, pad)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = (head.sample(prefix()) - targets).abs().max()
    assert float(loss.detach()) < first / 10
    assert err < 0.1


def test_tokenized_overfits_and_greedy_decode_returns_target_bins():
    bb, head, prefix, targets, params = _setup("tokenized", chunk=2)
    pad = torch.zeros(4, 2, dtype=torch.bool)
    opt = torch.optim.Adam(params, lr=2e-3)
    for _ in range(200):
        loss, logs = head.loss(prefix(), targets, pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["token_acc"] == 1.0
    bb.eval()
    with torch.no_grad():
        decoded = head.sample(prefix())
    assert (decoded - targets).abs().max() <= 1.0 / 256 + 1e-6  # within half a bin (bin width 2/256)


def test_action_tokenizer_roundtrip_within_half_a_bin():
    tok = ActionTokenizer(256, 1024)
    a = torch.linspace(-1, 1, 10001)
    ids = tok.to_ids(a)
    assert ids.min() >= 1024 - 256 and ids.max() <= 1023
    assert (tok.from_ids(ids) - a).abs().max() <= 1.0 / 256 + 1e-6


def test_tokenized_log_prob_matches_sampling_distribution():
    bb, head, prefix, targets, _ = _setup("tokenized", chunk=1)
    bb.eval()
    with torch.no_grad():
        p = prefix()
        lp = head.token_log_probs(p, targets)
        assert lp.shape == (4, 3) and (lp <= 0).all()
        assert torch.allclose(head.log_prob(p, targets), lp.sum(-1))


def test_oft_has_no_log_prob():
    _, head, prefix, targets, _ = _setup("oft")
    with pytest.raises(NotImplementedError, match="deterministic"):
        head.log_prob(prefix(), targets)


def test_unknown_head_lists_valid():
    bb = build_backbone(BackboneConfig(image_size=32))
    with pytest.raises(ValueError, match="valid: oft, tokenized"):
        build_head(HeadConfig(type="flow"), bb)
