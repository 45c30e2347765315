"""Per-episode sampling noise (`vla.heads.noise.EpisodeNoise`): an episode's draws do not depend on which other
episodes share its batch, for every sampling head, and two nearby token distributions sampled with the same
numbers mostly agree (common random numbers), which independent draws do not."""
import json

import numpy as np
import pytest
import torch

from vla.eval.sweep import Protocol, _check_protocol
from vla.heads.noise import EpisodeNoise, normal, stream_seed, uniform
from vla.heads.tokenized import categorical_sample
from vla.random_policy import random_policy

HEADS = {
    "oft_tokens": {"type": "oft", "oft_output": "tokens"},
    "tokenized": {"type": "tokenized"},
    "diffusion": {"type": "diffusion"},
    "flow": {"type": "flow"},
    "residual": {"type": "residual", "residual": {"base_type": "flow"}},
}


def _inputs(rows: int):
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 255, (rows, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(rows, 8)).astype(np.float32))
    return images, states, ["put the bowl on the plate"] * rows


@pytest.mark.parametrize("draw", [normal, uniform])
def test_a_row_draws_the_same_numbers_whatever_shares_its_batch(draw):
    alone = draw((1, 3, 4), EpisodeNoise([11]), torch.device("cpu"))
    shared = draw((3, 3, 4), EpisodeNoise([5, 11, 7]), torch.device("cpu"))
    assert torch.equal(alone[0], shared[1])
    assert not torch.equal(shared[0], shared[1])


def test_a_batch_must_have_one_stream_per_row():
    with pytest.raises(ValueError, match="one stream per row"):
        normal((2, 4), EpisodeNoise([1, 2, 3]), torch.device("cpu"))
    with pytest.raises(ValueError, match="one seed per batch row"):
        EpisodeNoise([])


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(7, "libero_spatial/0/3", 16) == stream_seed(7, "libero_spatial/0/3", 16)
    assert len({stream_seed(7, "libero_spatial/0/3", s) for s in range(100)}) == 100
    assert 0 <= stream_seed("x") < 2**63


@pytest.mark.parametrize("head", list(HEADS))
def test_every_sampling_head_samples_an_episode_independently_of_its_batch(head):
    torch.manual_seed(0)
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, **HEADS[head]}})
    images, states, instructions = _inputs(3)
    with torch.no_grad():
        together = policy.head.sample_rl(policy.build_prefix(images, states, instructions), EpisodeNoise([4, 5, 6]))
        alone = policy.head.sample_rl(policy.build_prefix(images[1:2], states[1:2], instructions[1:2]),
                                      EpisodeNoise([5]))
        again = policy.head.sample_rl(policy.build_prefix(images[1:2], states[1:2], instructions[1:2]),
                                      EpisodeNoise([9]))
    torch.testing.assert_close(together.actions[1:2], alone.actions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.log_prob[1:2], alone.log_prob, atol=1e-3, rtol=1e-5)
    assert not torch.allclose(alone.actions, again.actions)  # another stream, another sample


def test_inverse_cdf_sampling_has_the_right_frequencies():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    bins = categorical_sample(probs.log().expand(40_000, 4), torch.Generator().manual_seed(0))
    freq = torch.bincount(bins, minlength=4).float() / len(bins)
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    assert int(bins.max()) <= 3


def test_common_random_numbers_couple_two_nearby_token_distributions():
    """Unimodal bin distributions (what a BC token head predicts), sampled at temperature 1 and 0.7: with the same
    per-episode numbers the two pick bins a fraction of a bin apart on average; with independent numbers, bins
    several apart (the distribution's width)."""
    g = torch.Generator().manual_seed(1)
    centre = torch.randint(20, 236, (2_000, 1), generator=g).float()
    logits = -((torch.arange(256).float() - centre) ** 2) / (2 * 6.0**2)  # ~6 bins wide
    seeds = list(range(2_000))
    hot = categorical_sample(logits, EpisodeNoise(seeds))
    cold = categorical_sample(logits / 0.7, EpisodeNoise(seeds))
    independent = categorical_sample(logits / 0.7, EpisodeNoise([s + 10_000 for s in seeds]))
    apart_crn = float((hot - cold).abs().float().mean())
    apart_independent = float((hot - independent).abs().float().mean())
    assert apart_crn < 1.0 < 5.0 < apart_independent
    assert float((hot == cold).float().mean()) > 4 * float((hot == independent).float().mean())


def test_a_sweep_written_with_the_older_noise_is_not_resumed_into(tmp_path):
    old = {k: v for k, v in Protocol().__dict__.items() if k != "noise"}
    (tmp_path / "protocol.json").write_text(json.dumps({"protocol": old, "suites": {"libero_spatial": [0]}}))
    with pytest.raises(ValueError, match="Use another output directory"):
        _check_protocol(tmp_path, Protocol(), {"libero_spatial": [0]})
