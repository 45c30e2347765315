"""RL over a denoising chain (flow and diffusion heads): every denoising step is a Gaussian
policy step, the chunk's log-probability is the sum over steps, and the chain of intermediate
x's is what `evaluate` re-scores (the denoising MDP of DPPO and pi_RL).

Mixed ODE-SDE chains (`one_stochastic_step`, flow only): each chunk draws one denoising step that
is a Gaussian; every other step follows the deterministic ODE. The chunk's log-probability is then
that one step's Gaussian over chunk x action_dim numbers, as the per-dim ratio assumes, instead of a
sum over all steps dominated by the small-std late steps; re-scoring it needs one expert pass per
decision instead of one per step. The initial noise and the ODE steps are deterministic given the
recorded chain, so the policy gradient through the one stochastic step stays exact."""
from __future__ import annotations

import torch

from vla.heads.base import RLSample, gaussian_entropy, gaussian_log_prob
from vla.heads.noise import Noise, normal, uniform
from vla.sequence import Prefix


class GaussianChain:
    chunk_size: int
    action_dim: int

    def chain_steps(self) -> list:
        """The denoising steps in order (flow times, diffusion timesteps)."""
        raise NotImplementedError

    def step_distribution(self, prefix: Prefix, x: torch.Tensor, step) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the next x given x at `step` (a scalar, or one step per row)."""
        raise NotImplementedError

    @property
    def one_stochastic_step(self) -> bool:
        return False

    def step_with_ode(self, prefix: Prefix, x: torch.Tensor, step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, std, deterministic next x) from one network pass; needed by mixed ODE-SDE chains."""
        raise NotImplementedError

    def initial_noise(self, prefix: Prefix, generator: Noise) -> torch.Tensor:
        return normal((prefix.embeds.shape[0], self.chunk_size, self.action_dim), generator, prefix.embeds.device)

    @torch.no_grad()
    def sample_rl(self, prefix: Prefix, generator: Noise = None) -> RLSample:
        if self.one_stochastic_step:
            return self._sample_one_stochastic(prefix, generator)
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
        if self.one_stochastic_step:
            return self._evaluate_one_stochastic(prefix, chain, record)
        log_prob = torch.zeros(chain.shape[0], device=chain.device)
        entropy = torch.zeros_like(log_prob)
        for k, step in enumerate(self.chain_steps()):
            mean, std = self.step_distribution(prefix, chain[:, k], step)
            log_prob = log_prob + gaussian_log_prob(chain[:, k + 1], mean, std).flatten(1).sum(-1)
            entropy = entropy + gaussian_entropy(std).flatten(1).sum(-1)
        return log_prob, entropy

    def _sample_one_stochastic(self, prefix: Prefix, generator: Noise) -> RLSample:
        steps = self.chain_steps()
        x = self.initial_noise(prefix, generator)
        # which step is the Gaussian, drawn per row (per episode stream under EpisodeNoise)
        chosen = (uniform((x.shape[0],), generator, x.device) * len(steps)).long().clamp(max=len(steps) - 1)
        chain, log_prob = [x], torch.zeros(x.shape[0], device=x.device)
        for k, step in enumerate(steps):
            mean, std, ode = self.step_with_ode(prefix, x, step)
            drawn = mean + std * normal(mean.shape, generator, mean.device)
            here = (chosen == k)[:, None, None]
            x = torch.where(here, drawn, ode)
            log_prob += torch.where(here[:, 0, 0], gaussian_log_prob(drawn, mean, std).flatten(1).sum(-1), 0.0)
            chain.append(x)
        return RLSample(x, log_prob, {"chain": torch.stack(chain, 1), "stochastic_step": chosen})

    def _evaluate_one_stochastic(self, prefix: Prefix, chain: torch.Tensor, record: dict[str, torch.Tensor]
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if "stochastic_step" not in record:
            raise ValueError("a mixed ODE-SDE head re-scores decisions recorded with their 'stochastic_step'; this "
                             "record has none (sampled with every step stochastic? keep the head's rl setting)")
        chosen = record["stochastic_step"].long().to(chain.device)
        rows = torch.arange(chain.shape[0], device=chain.device)
        steps = torch.tensor(self.chain_steps(), dtype=chain.dtype, device=chain.device)
        mean, std = self.step_distribution(prefix, chain[rows, chosen], steps[chosen])
        log_prob = gaussian_log_prob(chain[rows, chosen + 1], mean, std).flatten(1).sum(-1)
        return log_prob, gaussian_entropy(std).flatten(1).sum(-1)
