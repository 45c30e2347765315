"""Diffusion action head: the pi0-style action expert as denoiser, diffusers' schedulers for the math.

Training: DDPMScheduler.add_noise at a uniform random timestep; the expert predicts the noise
(`epsilon`) or the clean chunk (`sample`), MSE. Evaluation: DDIM with `inference_steps` steps,
eta=0 (deterministic given the initial noise).

RL (DPPO): the denoising chain is an MDP whose every step is the Gaussian DDIM step with eta>0.
Its mean and std come from diffusers' own `DDIMScheduler.step`: called with zero variance noise it
returns the mean, with unit noise mean + std, so no schedule formula is re-implemented here. The
std is floored at `rl_min_std` as DPPO does, which keeps the last steps' log-probs finite.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from vla.backbones.base import Backbone
from vla.config import DiffusionConfig
from vla.heads.base import ActionHead, masked_mean
from vla.heads.chain import GaussianChain
from vla.heads.expert import ActionExpert
from vla.heads.noise import normal
from vla.sequence import Prefix

PREDICTIONS = ("epsilon", "sample")


class DiffusionHead(GaussianChain, ActionHead):
    rl_quantity = "Gaussian log-prob of every DDIM denoising step (DPPO)"

    def __init__(self, backbone: Backbone, chunk_size: int, action_dim: int, width: int, cfg: DiffusionConfig):
        super().__init__()
        if cfg.prediction not in PREDICTIONS:
            raise ValueError(f"head.diffusion.prediction '{cfg.prediction}' is unknown; valid: {', '.join(PREDICTIONS)}")
        if not 1 <= cfg.inference_steps <= cfg.train_timesteps:
            raise ValueError(f"head.diffusion.inference_steps must be in [1, {cfg.train_timesteps}], got {cfg.inference_steps}")
        self.chunk_size, self.action_dim, self.cfg = chunk_size, action_dim, cfg
        self.expert = ActionExpert(backbone, width, action_dim)
        common = dict(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                      prediction_type=cfg.prediction, clip_sample=True, clip_sample_range=1.0)
        self.train_scheduler = DDPMScheduler(**common)
        self.scheduler = DDIMScheduler(**common, set_alpha_to_one=True)
        self.scheduler.set_timesteps(cfg.inference_steps)

    def denoiser(self, prefix: Prefix, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The expert's epsilon or clean-sample prediction for x at integer timesteps (B,)."""
        out, _ = self.expert(prefix, x, timestep.float() / self.cfg.train_timesteps)
        return out

    def loss(self, prefix, actions, pad, generator=None):
        b, dev = actions.shape[0], actions.device
        noise = normal(actions.shape, generator, dev)
        gdev = generator.device if generator is not None else dev
        timesteps = torch.randint(0, self.cfg.train_timesteps, (b,), generator=generator, device=gdev).to(dev)
        noisy = self.train_scheduler.add_noise(actions, noise, timesteps)
        target = noise if self.cfg.prediction == "epsilon" else actions
        mse = masked_mean((self.denoiser(prefix, noisy, timesteps) - target) ** 2, pad)
        return mse, {"diffusion_mse": float(mse.detach())}

    def chain_steps(self) -> list[int]:
        return [int(t) for t in self.scheduler.timesteps]

    def _timestep(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)

    @torch.no_grad()
    def sample(self, prefix, generator=None):
        x = self.initial_noise(prefix, generator)
        for t in self.scheduler.timesteps:
            out = self.denoiser(prefix, x, self._timestep(t, x))
            x = self.scheduler.step(out, int(t), x, eta=0.0).prev_sample
        return x

    def step_distribution(self, prefix: Prefix, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the stochastic DDIM step from x at timestep t (DPPO's per-step policy)."""
        out = self.denoiser(prefix, x, self._timestep(t, x))
        eta = self.cfg.rl_eta
        mean = self.scheduler.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
        if eta > 0:
            with torch.no_grad():  # the std depends on t only
                plus_one = self.scheduler.step(out, t, x, eta=eta, variance_noise=torch.ones_like(x)).prev_sample
            std = (plus_one - mean.detach())
        else:
            std = torch.zeros_like(mean)
        return mean, std.clamp(min=self.cfg.rl_min_std)
