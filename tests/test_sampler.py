"""`head.sampler`: evaluation and serving act with the sampler RL optimizes when asked to."""
import numpy as np
import pytest
import torch

from vla.checkpoint import norm_specs
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats


def _policy(head: dict) -> Policy:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(50, 7)), "action"),
             "state": compute_stats(rng.normal(size=(50, 8)), "state")}
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"chunk_size": 4, **head}})
    return Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()


def _obs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (1, 2, 32, 32, 3), dtype=torch.uint8, generator=g), torch.zeros(1, 8)


def _act(policy: Policy, seed: int) -> np.ndarray:
    return policy.act(*_obs(), ["pick"], torch.Generator().manual_seed(seed))


def test_stochastic_sampler_acts_with_the_rl_chain():
    policy = _policy({"type": "diffusion", "sampler": "stochastic"})
    images, state = _obs()
    acted = policy.act(images, state, ["pick"], torch.Generator().manual_seed(3))
    explored, _, _ = policy.act_rl(images, state, ["pick"], torch.Generator().manual_seed(3))
    assert np.array_equal(acted, explored)
    policy.cfg.head.sampler = "deterministic"
    assert not np.allclose(policy.act(images, state, ["pick"], torch.Generator().manual_seed(3)), acted)


def test_token_head_sampler_deterministic_is_argmax_stochastic_varies():
    policy = _policy({"type": "oft", "oft_output": "tokens"})
    assert np.array_equal(_act(policy, 1), _act(policy, 2))  # argmax ignores the noise
    policy.cfg.head.sampler = "stochastic"
    assert not np.array_equal(_act(policy, 1), _act(policy, 2))
    assert np.array_equal(_act(policy, 1), _act(policy, 1))


@pytest.mark.parametrize("head,match", [
    ({"type": "diffusion", "sampler": "mean"}, "head.sampler 'mean' is unknown"),
    ({"type": "oft", "oft_output": "l1", "sampler": "stochastic"}, "oft_output=l1 is deterministic"),
])
def test_bad_sampler_is_refused_at_construction(head, match):
    with pytest.raises(ValueError, match=match):
        _policy(head)
