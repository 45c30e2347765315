"""Residual head: zero residual == its base exactly; a trained base checkpoint is loaded and frozen;
the residual's log-prob is its Gaussian."""
import math

import numpy as np
import torch

from head_problems import Problem
from vla.checkpoint import load_policy, norm_specs, save_policy
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats
from vla.residual_init import residual_from_base

INSTR = ["put the bowl on the plate"] * 2


def test_zero_residual_reproduces_the_base_exactly():
    p = Problem("residual")
    with torch.no_grad():
        prefix = p.prefix()
        assert torch.equal(p.head.sample(prefix), p.head.base.sample(prefix))
        s = p.head.sample_rl(prefix, torch.Generator().manual_seed(0))
        assert torch.allclose(s.actions, s.record["base_action"] + 0.1 * s.record["residual"])
        std = p.head.log_std.exp()[0]
        r = s.record["residual"]  # zero mean at init: log N(r; 0, std^2) by hand
        direct = (-(r**2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(-1)
        assert torch.allclose(p.head.evaluate(prefix, s.record)[0], direct, atol=1e-4)


def _policy(cfg):
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(100, 7)), "action"),
             "state": compute_stats(rng.normal(size=(100, 8)), "state")}
    return Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()


def test_residual_from_a_base_checkpoint_freezes_the_base_and_acts_like_it(tmp_path):
    torch.manual_seed(0)
    base = _policy(merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"chunk_size": 4}}))
    save_policy(base, tmp_path / "base")
    # the residual run's own backbone/head settings are replaced by the base's
    cfg = merge(ExperimentConfig(), {"head": {"type": "residual", "residual": {"base_checkpoint": str(tmp_path / "base")}}})
    res = residual_from_base(cfg).eval()
    assert res.cfg.backbone.image_size == 32 and res.cfg.head.chunk_size == 4 and res.cfg.head.residual.base_type == "oft"
    stochastic = merge(cfg, {"head": {"sampler": "stochastic"}})  # how the residual acts is the run's own setting
    assert residual_from_base(stochastic).cfg.head.sampler == "stochastic"
    trainable = {n for n, q in res.named_parameters() if q.requires_grad}
    assert trainable == {"head.log_std"} | {n for n in trainable if n.startswith("head.mean_net.")}
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (2, 2, 48, 48, 3), dtype=torch.uint8, generator=g)
    state = torch.randn(2, 8, generator=g)
    assert np.array_equal(res.act(images, state, INSTR), base.act(images, state, INSTR))
    # and the residual checkpoint is self-contained
    save_policy(res, tmp_path / "res")
    assert np.array_equal(load_policy(tmp_path / "res").act(images, state, INSTR), base.act(images, state, INSTR))


def test_rl_residual_over_a_base_takes_the_recipe_bound_unless_overridden(tmp_path):
    """`make rl POLICY=residual CKPT=<base>` builds the residual from the recipe's settings (its bound, which
    off-policy RL needs), with the user's overrides on top."""
    from vla.random_policy import random_policy
    from vla.rl.prepare import prepare_policy

    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2}}), tmp_path / "base")
    policy = prepare_policy(tmp_path / "base", "residual", ["rl.algo=td3"])
    assert policy.cfg.head.residual.max_residual == 2.0 and policy.cfg.head.residual.scale == 0.1
    assert policy.head.base_frozen
    override = prepare_policy(tmp_path / "base", "residual", ["rl.algo=td3", "head.residual.max_residual=0.5",
                                                              "head.residual.scale=0.2"])
    assert override.cfg.head.residual.max_residual == 0.5 and override.cfg.head.residual.scale == 0.2


def test_training_a_residual_reads_the_dataset_as_its_base_was_trained(tmp_path, synthetic_dataset):
    """The base was trained on one camera and chunks of 4; the residual run's defaults (two cameras, chunks of
    8) must not reach the dataset, or the frozen base would see other inputs than in evaluation."""
    from vla.train.trainer import train

    torch.manual_seed(0)
    base_cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"chunk_size": 4},
                                          "data": {"cameras": ["agentview"]}})
    save_policy(_policy(base_cfg), tmp_path / "base")
    cfg = merge(ExperimentConfig(), {
        "head": {"type": "residual", "residual": {"base_checkpoint": str(tmp_path / "base")}},
        "output_dir": str(tmp_path / "run"), "data": {"dataset": str(synthetic_dataset)},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "log_every": 1, "save_every": 2}})
    trained = load_policy(train(cfg, str(synthetic_dataset)))
    assert trained.cfg.data.cameras == ["agentview"] and trained.cfg.head.chunk_size == 4
