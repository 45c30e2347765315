"""pi0 flow matching: an action expert reads the cached prefix and predicts a velocity field.

Convention (pi0's): x_t = t * noise + (1 - t) * actions, so t=1 is noise and t=0 is the data; the
target velocity is u = noise - actions; training draws t from Beta(1.5, 1) (more weight on noisy
times) and minimizes |v - u|^2. Sampling integrates dx/dt = v from t=1 to t=0 with `steps` Euler
steps; the prefix is encoded once and each step is one expert pass over the chunk tokens.

For RL (pi_RL) every Euler step is made a Gaussian with a tractable log-probability:
- Flow-SDE: the reverse SDE with the same marginals as the ODE,
  x_{t-dt} = x_t - dt * [v + s^2 / (2t) * (x_t + (1 - t) v)] + s * sqrt(dt) * z,  s = level * sqrt(t / (1 - t)),
  where -(x_t + (1 - t) v) / t is the score implied by v under this interpolation;
- Flow-Noise: the Euler mean x_t - dt * v plus a learned, bounded std from the expert's hidden state.
The chunk's log-probability is the sum over steps; the chain of x's is the RL record.
`rl_steps=one` makes only one random step per chunk a Gaussian and the rest plain Euler steps (mixed
ODE-SDE sampling, as in Flow-GRPO-Fast / MixGRPO; see `vla.heads.chain`).
"""
from __future__ import annotations

import torch
from torch import nn

from vla.backbones.base import Backbone
from vla.config import FlowConfig
from vla.heads.base import ActionHead, masked_mean
from vla.heads.chain import GaussianChain
from vla.heads.expert import ActionExpert
from vla.sequence import Prefix

RL_NOISE = ("sde", "noise")
RL_STEPS = ("all", "one")


def beta_sample(shape: tuple[int, ...], a: float, b: float, generator: torch.Generator | None) -> torch.Tensor:
    """Beta(a, b) draws reproducible from `generator` (torch's Beta sampler has no generator argument)."""
    if generator is None:
        return torch.distributions.Beta(a, b).sample(shape)
    # the draw runs under the global CPU generator, set from `generator` and restored afterwards (torch.manual_seed
    # would also reseed every CUDA generator, for good)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(seed)
        return torch.distributions.Beta(a, b).sample(shape)
    finally:
        torch.set_rng_state(state)


class FlowHead(GaussianChain, ActionHead):
    rl_quantity = "Gaussian log-prob of every denoising step (Flow-SDE / Flow-Noise, pi_RL)"

    def __init__(self, backbone: Backbone, chunk_size: int, action_dim: int, width: int, cfg: FlowConfig):
        super().__init__()
        if cfg.rl_noise not in RL_NOISE:
            raise ValueError(f"head.flow.rl_noise '{cfg.rl_noise}' is unknown; valid: {', '.join(RL_NOISE)}")
        if cfg.rl_steps not in RL_STEPS:
            raise ValueError(f"head.flow.rl_steps '{cfg.rl_steps}' is unknown; valid: {', '.join(RL_STEPS)}")
        if cfg.steps < 1:
            raise ValueError(f"head.flow.steps must be >= 1, got {cfg.steps}")
        self.chunk_size, self.action_dim, self.cfg = chunk_size, action_dim, cfg
        self.expert = ActionExpert(backbone, width, action_dim)
        self.noise_std = nn.Linear(width, action_dim) if cfg.rl_noise == "noise" else None
        if cfg.rl_steps == "one":
            self.rl_quantity = "Gaussian log-prob of one random denoising step, the rest ODE (mixed Flow-SDE / Flow-Noise)"

    def velocity(self, prefix: Prefix, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v(x, t) (B, T, A) and the expert's hidden states; t is (B,)."""
        return self.expert(prefix, x, t)

    def loss(self, prefix, actions, pad, generator=None):
        b = actions.shape[0]
        a, bb = self.cfg.time_beta
        t = (beta_sample((b,), a, bb, generator) * 0.999 + 0.001).to(actions.device)
        noise = self.initial_noise(prefix, generator)
        tt = t[:, None, None]
        x_t = tt * noise + (1 - tt) * actions
        v, _ = self.velocity(prefix, x_t, t)
        mse = masked_mean((v - (noise - actions)) ** 2, pad)
        return mse, {"flow_mse": float(mse.detach())}

    def chain_steps(self) -> list[float]:
        return [1.0 - k / self.cfg.steps for k in range(self.cfg.steps)]

    @torch.no_grad()
    def sample(self, prefix, generator=None):
        x = self.initial_noise(prefix, generator)
        dt = 1.0 / self.cfg.steps
        for t in self.chain_steps():
            v, _ = self.velocity(prefix, x, torch.full((x.shape[0],), t, device=x.device))
            x = x - dt * v
        return x

    @property
    def one_stochastic_step(self) -> bool:
        return self.cfg.rl_steps == "one"

    def step_distribution(self, prefix: Prefix, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of x_{t-dt} given x_t: the Gaussian one denoising step draws from (t: a float, or (B,))."""
        mean, std, _ = self.step_with_ode(prefix, x, t)
        return mean, std

    def step_with_ode(self, prefix: Prefix, x: torch.Tensor, t: float | torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's Gaussian (mean, std) and its plain Euler step x_t - dt v, from one expert pass."""
        dt = 1.0 / self.cfg.steps
        rows = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        v, hidden = self.velocity(prefix, x, rows)
        ode = x - dt * v
        if self.noise_std is None:  # Flow-SDE; sigma is clipped where t -> 1
            level = self.cfg.sde_noise_level
            if isinstance(t, torch.Tensor):  # a step per row (re-scoring mixed ODE-SDE chains)
                tt = rows[:, None, None]
                sigma = level * (tt / (1.0 - tt).clamp(min=dt)) ** 0.5
                std = (sigma * dt**0.5).expand_as(x)
            else:  # one step for all rows: scalar float64 arithmetic, so sampling replays bit for bit
                tt = t
                sigma = level * (t / max(1.0 - t, dt)) ** 0.5
                std = torch.full_like(x, sigma * dt**0.5)
            mean = x - dt * (v + sigma**2 / (2 * tt) * (x + (1 - tt) * v))
        else:  # Flow-Noise
            lo, hi = self.cfg.noise_std_range
            mean = ode
            std = lo + (hi - lo) * torch.sigmoid(self.noise_std(hidden.float()))
        return mean, std, ode
