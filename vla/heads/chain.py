"""RL over a denoising chain (flow and diffusion heads): every denoising step is a Gaussian
policy step, the chunk's log-probability is the sum over steps, and the chain of intermediate
x's is what `evaluate` re-scores (the denoising MDP of DPPO and pi_RL)."""
from __future__ import annotations

import torch

from vla.heads.base import RLSample, gaussian_entropy, gaussian_log_prob
from vla.heads.noise import Noise, normal
from vla.sequence import Prefix


class GaussianChain:
    chunk_size: int
    action_dim: int

    def chain_steps(self) -> list:
        """The denoising steps in order (flow times, diffusion timesteps)."""
        raise NotImplementedError

    def step_distribution(self, prefix: Prefix, x: torch.Tensor, step) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def initial_noise(self, prefix: Prefix, generator: Noise) -> torch.Tensor:
        return normal((prefix.embeds.shape[0], self.chunk_size, self.action_dim), generator, prefix.embeds.device)

    @torch.no_grad()
    def sample_rl(self, prefix: Prefix, generator: Noise = None) -> RLSample:
        x = self.initial_noise(prefix, generator)
        chain, log_prob = [x], torch.zeros(x.shape[0], device=x.device)
        for step in self.chain_steps():
            mean, std = self.step_distribution(prefix, x, step)
            x = mean + std * normal(mean.shape, generator, mean.device)
            log_prob += gaussian_log_prob(x, mean, std).flatten(1).sum(-1)
            chain.append(x)
        return RLSample(x, log_prob, {"chain": torch.stack(chain, 1)})

    def evaluate(self, prefix: Prefix, record: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        chain = record["chain"]  # (B, steps + 1, chunk, action_dim)
        log_prob = torch.zeros(chain.shape[0], device=chain.device)
        entropy = torch.zeros_like(log_prob)
        for k, step in enumerate(self.chain_steps()):
            mean, std = self.step_distribution(prefix, chain[:, k], step)
            log_prob = log_prob + gaussian_log_prob(chain[:, k + 1], mean, std).flatten(1).sum(-1)
            entropy = entropy + gaussian_entropy(std).flatten(1).sum(-1)
        return log_prob, entropy
