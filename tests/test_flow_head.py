"""The flow-matching head is pi0's, not a shape-compatible stand-in: it learns, its integrator
solves known ODEs, its SDE keeps the right marginals, and its RL log-probs are real Gaussians."""
import math

import pytest
import torch

from head_problems import Problem, chain_log_prob_by_hand


def test_flow_overfits_a_fixed_batch():
    p = Problem("flow")
    before, after = p.overfit(800, 2e-3)
    assert after < before / 50  # 1.7 -> ~0.01
    assert (p.sample() - p.targets).abs().max() < 0.12  # 10 Euler steps from fresh noise


def _with_velocity(p: Problem, field):
    """Replace the learned network by a known velocity field v(x, t)."""
    p.head.velocity = lambda prefix, x, t: (field(x, t[:, None, None]), torch.zeros(*x.shape[:2], 8))


def test_euler_matches_the_analytic_solution_of_known_fields():
    p = Problem("flow", flow={"steps": 10})
    # the exact conditional field of a point target a: x(t) = a + t (x1 - a) is linear, so Euler is exact
    a = p.targets
    _with_velocity(p, lambda x, t: (x - a) / t)
    assert torch.allclose(p.sample(), a, atol=1e-5)
    # dx/dt = x from t=1 to 0: K Euler steps give x1 * (1 - 1/K)^K, which tends to x1 / e
    _with_velocity(p, lambda x, t: x)
    x1 = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(p.sample(seed=1), x1 * 0.9**10, atol=1e-5)
    p.head.cfg.steps = 2000
    assert torch.allclose(p.sample(seed=1), x1 / math.e, atol=1e-3)


def _gaussian_data_field(mu: torch.Tensor, s: float):
    """The exact marginal velocity E[x1 - a | x_t] for data a ~ N(mu, s^2) and noise x1 ~ N(0, 1), with
    x_t = (1 - t) a + t x1 (jointly Gaussian, so the conditional mean is linear in x_t)."""
    def field(x, t):
        var = (1 - t) ** 2 * s**2 + t**2
        return -mu + (t - (1 - t) * s**2) / var * (x - (1 - t) * mu)
    return field


def test_flow_sde_keeps_the_ode_marginals():
    """Under the exact field of Gaussian data N(mu, 0.3^2), the ODE maps noise onto the data distribution
    and Flow-SDE's stochastic chain must end at the same distribution: its score-corrected drift exactly
    offsets the noise it injects (a missing drift term, or a std that does not match it, widens the
    result). ~3,000 draws: the standard error of the measured std is ~0.015 of s."""
    s = 0.3
    p = Problem("flow", flow={"steps": 100, "sde_noise_level": 0.7})
    mu = p.targets
    _with_velocity(p, _gaussian_data_field(mu, s))
    ode = torch.stack([p.sample(seed=k) for k in range(64)])
    sde = torch.stack([p.head.sample_rl(p.prefix(), torch.Generator().manual_seed(k)).actions for k in range(64)])
    for finals in (ode, sde):
        z = (finals - mu) / s
        assert abs(float(z.mean())) < 0.06 and abs(float(z.std()) - 1.0) < 0.06, (float(z.mean()), float(z.std()))
    # the SDE path differs from the ODE's draw by draw (it is stochastic, not the ODE with a seed)
    assert (sde - ode).abs().mean() > 0.1 * s


@pytest.mark.parametrize("rl_noise", ["sde", "noise"])
def test_rl_log_prob_is_the_sum_of_per_step_gaussians(rl_noise):
    p = Problem("flow", flow={"steps": 5, "rl_noise": rl_noise})
    p.bb.eval()
    with torch.no_grad():
        s = p.head.sample_rl(p.prefix(), torch.Generator().manual_seed(0))
        chain = s.record["chain"]
        assert chain.shape == (4, 6, 4, 3) and torch.equal(chain[:, -1], s.actions)
        direct = chain_log_prob_by_hand(chain, [1.0, 0.8, 0.6, 0.4, 0.2],
                                        lambda x, t: p.head.step_distribution(p.prefix(), x, t))
        lp, _ = p.head.evaluate(p.prefix(), s.record)
    assert torch.allclose(lp, direct, rtol=1e-4) and torch.allclose(s.log_prob, direct, rtol=1e-4)
    if rl_noise == "noise":  # learned std stays inside its bounds
        _, std = p.head.step_distribution(p.prefix(), chain[:, 0], 1.0)
        assert std.min() >= 0.08 and std.max() <= 0.16


@pytest.mark.parametrize("rl_noise", ["sde", "noise"])
def test_mixed_ode_sde_chain_scores_only_its_one_stochastic_step(rl_noise):
    p = Problem("flow", flow={"steps": 5, "rl_noise": rl_noise, "rl_steps": "one"})
    p.bb.eval()
    times = [1.0, 0.8, 0.6, 0.4, 0.2]
    with torch.no_grad():
        s = p.head.sample_rl(p.prefix(), torch.Generator().manual_seed(0))
        chain, chosen = s.record["chain"], s.record["stochastic_step"]
        assert chain.shape == (4, 6, 4, 3) and torch.equal(chain[:, -1], s.actions)
        assert len(set(chosen.tolist())) > 1  # drawn per row
        expected = torch.zeros(4)
        for k, t in enumerate(times):
            x = chain[:, k]
            mean, std = p.head.step_distribution(p.prefix(), x, t)
            v, _ = p.head.velocity(p.prefix(), x, torch.full((4,), t))
            by_hand = chain_log_prob_by_hand(chain[:, k:k + 2], [t], lambda *_: (mean, std))
            for row in range(4):
                euler = x[row] - 0.2 * v[row]
                if k == int(chosen[row]):  # the Gaussian step: scored by hand, and not the Euler step
                    expected[row] = by_hand[row]
                    assert not torch.allclose(chain[row, k + 1], euler, atol=1e-4)
                else:  # every other step is exactly the ODE's Euler step
                    assert torch.allclose(chain[row, k + 1], euler, atol=1e-5)
        lp, entropy = p.head.evaluate(p.prefix(), s.record)
    assert torch.allclose(s.log_prob, expected, rtol=1e-4) and torch.allclose(lp, expected, rtol=1e-4)
    assert entropy.shape == (4,)
    with pytest.raises(ValueError, match="stochastic_step"):
        p.head.evaluate(p.prefix(), {"chain": chain})


def test_unknown_rl_steps_is_rejected():
    with pytest.raises(ValueError, match="rl_steps 'some'.*all, one"):
        Problem("flow", flow={"rl_steps": "some"})


def test_prefix_is_encoded_once_and_its_cache_survives_sampling():
    p = Problem("flow")
    prefix = p.prefix()
    calls = []
    original = p.bb.run
    p.bb.run = lambda *a, **k: calls.append(1) or original(*a, **k)
    first = p.head.sample(prefix, torch.Generator().manual_seed(3))
    assert len(calls) == 1  # one backbone pass for 10 denoising steps; the rest is the expert
    assert prefix.encode()[1].get_seq_length() == prefix.length  # expert tokens were cropped away
    assert torch.equal(first, p.head.sample(prefix, torch.Generator().manual_seed(3)))


def test_expert_shares_depth_and_attention_geometry_with_the_backbone():
    for backbone in ("tiny_paligemma", "tiny_smolvlm", "tiny_qwen2_5_vl"):
        p = Problem("flow", backbone=backbone)
        expert, base = p.head.expert.decoder, p.bb.decoder()
        assert expert.config.num_hidden_layers == base.config.num_hidden_layers
        assert expert.config.hidden_size == base.config.hidden_size // 2
        assert p.sample().shape == (4, 4, 3)


def test_policy_act_with_a_seeded_generator_is_reproducible():
    """Evaluation seeds each episode's sampling noise, so flow/diffusion rollouts replay exactly."""
    import numpy as np

    from vla.checkpoint import norm_specs
    from vla.config import ExperimentConfig, merge
    from vla.model import Policy
    from vla.normalize import Normalizer, compute_stats

    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(50, 7)), "action"), "state": compute_stats(rng.normal(size=(50, 8)), "state")}
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"type": "flow", "chunk_size": 4}})
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()
    images, state = torch.randint(0, 255, (1, 2, 32, 32, 3), dtype=torch.uint8), torch.zeros(1, 8)
    a = policy.act(images, state, ["pick"], torch.Generator().manual_seed(4))
    b = policy.act(images, state, ["pick"], torch.Generator().manual_seed(4))
    c = policy.act(images, state, ["pick"], torch.Generator().manual_seed(5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_the_action_expert_runs_in_a_bf16_backbones_dtype_without_autocast(kind):
    """A real checkpoint loads in bf16; evaluation, RL and serving sample without autocast, so the expert reading
    the backbone's KV cache must share its dtype (a float32 expert failed on its first matmul)."""
    from vla.backbones.hf_vlm import PaliGemmaBackbone
    from vla.config import DiffusionConfig, FlowConfig
    from vla.heads.diffusion import DiffusionHead
    from vla.heads.flow import FlowHead
    from vla.sequence import Prefix

    torch.manual_seed(0)
    bb = PaliGemmaBackbone.tiny(32)
    bb.model.to(torch.bfloat16)
    head = FlowHead(bb, 4, 3, 64, FlowConfig(steps=2)) if kind == "flow" else \
        DiffusionHead(bb, 4, 3, 64, DiffusionConfig(inference_steps=2))
    embeds = torch.cat([bb.embed_images(torch.rand(2, 1, 3, 32, 32)), bb.embed_tokens(torch.tensor([[1, 5, 6], [1, 7, 0]]))], 1)
    valid = torch.ones(embeds.shape[:2], dtype=torch.bool)
    valid[1, -1] = False
    actions = head.sample(Prefix(bb, embeds, valid))
    assert embeds.dtype == torch.bfloat16 and actions.shape == (2, 4, 3) and torch.isfinite(actions).all()


def test_seeded_beta_draws_replay_and_leave_the_global_generators_alone(monkeypatch):
    """torch's Beta sampler takes no generator: the seeded draw borrows the global CPU generator and restores it
    (torch.manual_seed there would also have reseeded every CUDA generator for the rest of the run)."""
    from vla.heads.flow import beta_sample

    cuda_seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: cuda_seeded.append(seed))
    before = torch.get_rng_state()
    first = beta_sample((5,), 1.5, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(first, beta_sample((5,), 1.5, 1.0, torch.Generator().manual_seed(3)))
    assert torch.equal(torch.get_rng_state(), before) and ((first > 0) & (first < 1)).all()
    assert cuda_seeded == []
