"""The gradient noise scale estimator (`vla rl-noise`) against cases with a known answer, and its
per-episode gradients against the gradient GRPO's update takes."""
import numpy as np
import pytest
import torch

from vla.config import RLConfig
from vla.rl import grpo
from vla.rl.buffer import flatten
from vla.rl.noise_scale import (advantages, episode_gradients, noise_scale, parameter_groups, step_cosine,
                                summarize, unit_gram)
from vla.rl.objective import _loss, clip_range, ratio_scale
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode
from vla.random_policy import random_policy


def _gram(mean: np.ndarray, sigma: float, units: int, seed: int) -> np.ndarray:
    g = mean + sigma * np.random.default_rng(seed).normal(size=(units, len(mean)))
    return g @ g.T


def test_recovers_a_known_noise_scale():
    # per-unit gradients mean + N(0, sigma^2 I): B = d sigma^2 / |mean|^2 = 50 * 4 / 1 = 200 units
    mean = np.zeros(50)
    mean[0] = 1.0
    ns = noise_scale(_gram(mean, 2.0, 2000, 0), np.random.default_rng(0), resamples=300)
    assert ns.noise == pytest.approx(200, rel=0.05) and ns.signal == pytest.approx(1.0, abs=0.15)
    assert ns.scale == pytest.approx(200, rel=0.2) and ns.ci90[0] < 200 < ns.ci90[1]
    # two halves of 1000 units each: cosine ~ 1 / (1 + B / 1000)
    assert ns.split_cosine == pytest.approx(1 / (1 + 200 / 1000), abs=0.05)


def test_pure_noise_and_pure_signal():
    noise_only = noise_scale(_gram(np.zeros(20), 1.0, 400, 1), np.random.default_rng(0), resamples=200)
    assert abs(noise_only.split_cosine) < 0.15 and (noise_only.scale > 400 or noise_only.scale == float("inf"))
    clean = noise_scale(_gram(np.ones(20), 1e-3, 40, 2), np.random.default_rng(0), resamples=200)
    assert clean.scale < 1e-3 and clean.split_cosine > 0.999
    assert step_cosine(clean.scale, 16) == pytest.approx(1.0, abs=1e-3)
    assert step_cosine(float("inf"), 16) == 0.0 and step_cosine(48.0, 16) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 4 units"):
        noise_scale(np.eye(3), np.random.default_rng(0))


def test_baselines():
    groups, returns = np.array([0, 0, 1, 1, 2, 2]), np.array([1.0, 0, 1, 1, 0, 1])
    eps = [EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, int(g)), "x",
                          [Decision(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(8, np.float32), {}, 0.0, 0.0, r)])
           for g, r in zip(groups, returns)]
    group = advantages(groups, returns, "group")
    _, advs, _, _ = grpo.advantages(eps, RLConfig(algo="grpo"))
    assert group[[0, 1, 4, 5]] == pytest.approx([1, -1, -1, 1], abs=1e-5)  # (r - mean) / std within the group
    assert group[[0, 1, 4, 5]] == pytest.approx([a[0] for a in advs])  # GRPO's own values
    assert group[2] == group[3] == 0  # an all-success group carries nothing
    batch = advantages(groups, returns, "batch")
    assert batch.mean() == pytest.approx(0, abs=1e-9) and batch[2] > 0 > batch[1]
    with pytest.raises(ValueError, match="group or batch"):
        advantages(groups, returns, "critic")


def test_unit_gram_sums_each_groups_advantaged_gradients():
    groups = np.array([0, 0, 1, 1, 1, 2])
    h = np.random.default_rng(0).normal(size=(6, 9))
    adv = np.array([1.0, -1.0, 0.5, 0.2, -0.7, 2.0])
    units = np.stack([adv[0] * h[0] + adv[1] * h[1], adv[2:5] @ h[2:5], adv[5] * h[5]])
    assert unit_gram(h @ h.T, groups, adv) == pytest.approx(units @ units.T)


def test_summarize_reports_both_baselines_per_parameter_group():
    rng = np.random.default_rng(0)
    groups, returns = np.repeat(np.arange(8), 2), rng.integers(0, 2, 16).astype(float)
    h = {"actor": rng.normal(size=(16, 30)), "temperature": rng.normal(size=(16, 7))}
    shaped = returns + rng.normal(scale=0.1, size=16)
    rows = summarize({k: v @ v.T for k, v in h.items()}, groups, {"dense": shaped, "success": returns}, group_size=2)
    assert [(r["reward"], r["baseline"], r["parameters"]) for r in rows] == [
        (w, b, p) for w in ("dense", "success") for b in ("group", "batch") for p in ("actor", "temperature")]
    # each row stands alone: success's rows, bootstrap included, are what a report of success alone gives
    alone = summarize({k: v @ v.T for k, v in h.items()}, groups, {"success": returns}, group_size=2)
    assert rows[4:] == alone and rows[0]["noise"] != pytest.approx(rows[4]["noise"])
    for r in rows:
        assert r["units"] == 8 and r["scale_episodes"] == pytest.approx(2 * r["scale"])
        assert set(r["step_cosine"]) == {"16", "64", "256", "1024", "4096"}


def test_episode_gradients_give_grpos_policy_gradient():
    """Sum over episodes of A_e h_e is E x the negative gradient of GRPO's loss at ratio 1 (every episode
    weighted the same), so the estimate is about the very gradient the update follows."""
    torch.manual_seed(0)
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, "type": "oft", "oft_output": "tokens",
                                                                     "learn_temperature": True},
                            "rl": {"algo": "grpo"}})
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 255, (5, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(5, 8)).astype(np.float32))
    _, sample, _ = policy.act_rl(images, states, ["pick up the bowl"] * 5, torch.Generator().manual_seed(0))

    def decision(j, reward):
        return Decision(images[j].numpy(), states[j].numpy(), {k: v[j] for k, v in sample.record.items()},
                        float(sample.log_prob[j]), 0.0, reward)

    # episodes of 2, 1 and 2 decisions in one group: a long success, a short failure, a long failure
    eps = [EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, 0), "pick up the bowl", ds, success=s)
           for ds, s in [([decision(0, 0), decision(1, 1)], True), ([decision(2, 0)], False),
                         ([decision(3, 0), decision(4, 0)], False)]]
    params = parameter_groups(policy)
    assert set(params) == {"actor", "temperature"} and params["temperature"][0].numel() == 7
    rows = episode_gradients(policy, eps, params)
    adv = advantages(np.zeros(3, int), np.array([e.ret for e in eps]), "group")
    kept, advs, rets, _ = grpo.advantages(eps, policy.cfg.rl)
    batch = flatten(kept, advs, rets, per_episode=True)
    policy.zero_grad(set_to_none=True)
    scale = ratio_scale(policy.cfg.rl, 2, 7)
    loss, _ = _loss(policy, batch, policy.cfg.rl, {}, True, False, None, None, None, clip_range(policy.cfg.rl),
                    scale)
    loss.backward()
    for name, ps in params.items():
        expected = -len(eps) * torch.cat([p.grad.reshape(-1) for p in ps])
        got = torch.from_numpy(adv).float() @ rows[name]
        assert torch.allclose(got, expected, rtol=1e-3, atol=1e-6), name


def test_the_interval_covers_the_true_scale_about_nine_times_in_ten():
    # 32 units (the README's LIBERO measurement: 128 episodes in groups of 4), B = 16 units
    covered = 0
    for rep in range(60):
        mean = np.zeros(50)
        mean[0] = 1.0
        ns = noise_scale(_gram(mean, np.sqrt(16 / 50), 32, 100 + rep), np.random.default_rng(rep), resamples=300, splits=10)
        covered += ns.ci90[0] <= 16 <= ns.ci90[1]
    assert 48 <= covered  # 80% of 60; a 90% interval covers ~54
