"""The diffusion head: learns a fixed batch, samples with diffusers' DDIM, and its DPPO log-prob is
exactly the Gaussian of each DDIM step computed from the schedule's alphas by hand."""

import pytest
import torch

from head_problems import Problem, chain_log_prob_by_hand


def test_diffusion_overfits_a_fixed_batch():
    p = Problem("diffusion")
    before, after = p.overfit(800, 2e-3)
    assert after < before / 50
    assert (p.sample() - p.targets).abs().max() < 0.12  # 10 DDIM steps from fresh noise
    assert torch.equal(p.sample(seed=5), p.sample(seed=5))  # eta=0: deterministic given the noise


def _ddim_step_by_hand(head, prefix, x, t):
    """DDIM (Song et al.) posterior step written from the alphas, independent of diffusers' step()."""
    sched, cfg = head.scheduler, head.cfg
    prev = t - cfg.train_timesteps // cfg.inference_steps
    a_t = sched.alphas_cumprod[t]
    a_prev = sched.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
    eps = head.denoiser(prefix, x, torch.full((x.shape[0],), t))
    x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    sigma = cfg.rl_eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
    return mean, torch.clamp(sigma, min=cfg.rl_min_std)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_dppo_log_prob_matches_a_direct_gaussian_computation(eta):
    p = Problem("diffusion", diffusion={"inference_steps": 5, "rl_eta": eta})
    p.bb.eval()
    with torch.no_grad():
        s = p.head.sample_rl(p.prefix(), torch.Generator().manual_seed(0))
        chain = s.record["chain"]
        assert chain.shape == (4, 6, 4, 3) and torch.equal(chain[:, -1], s.actions)
        stds = []

        def by_hand(x, t):
            mean, std = _ddim_step_by_hand(p.head, p.prefix(), x, t)
            stds.append(float(std))
            return mean, std

        direct = chain_log_prob_by_hand(chain, p.head.scheduler.timesteps.tolist(), by_hand)
        lp, ent = p.head.evaluate(p.prefix(), s.record)
    assert torch.allclose(lp, direct, rtol=1e-4, atol=1e-3), (lp, direct)
    assert torch.allclose(s.log_prob, direct, rtol=1e-4, atol=1e-3)
    assert max(stds) > 0.1 and min(stds) == pytest.approx(0.1)  # real DDIM noise, floored as in DPPO


def test_sample_prediction_and_bad_settings():
    p = Problem("diffusion", diffusion={"prediction": "sample"})
    before, after = p.overfit(100, 2e-3)
    assert after < before
    with pytest.raises(ValueError, match="prediction"):
        Problem("diffusion", diffusion={"prediction": "v"})
    with pytest.raises(ValueError, match="inference_steps"):
        Problem("diffusion", diffusion={"inference_steps": 500})
