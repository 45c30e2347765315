"""Off-policy residual RL: TD3 with n-step returns on the residual head, its base frozen (as in
residual off-policy RL for BC policies, Ankile et al. 2025).

Why off-policy here: PPO/GRPO throw each rollout away after one update, and on a CPU every env frame
is expensive. A residual policy over a frozen base reads frozen features (the backbone and the base
do not train), so a decision is fully described by (pooled prefix features, base chunk, residual
chunk): the replay buffer stores those few numbers instead of images, and hundreds of critic and
actor steps per iteration cost milliseconds each, reusing every frame many times.

- Critics: twin Q(features, base chunk, residual chunk) MLPs with Polyak-averaged targets.
- Target: R_t^(n) + gamma^m * min_i Q'_i(s_{t+m}, base_{t+m}, mu'(s_{t+m}) + clipped noise), with
  m = min(n, decisions left); an episode's end (success, or the time limit, which the critic cannot
  see coming, as in PPO here) is terminal.
- Actor: the residual head's mean network, updated every `policy_delay` critic steps to maximize
  Q1 with an L2 pull toward zero residual (the base stays the prior). Exploration is the head's own
  Gaussian (`head.log_std`, not trained by TD3).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from vla.config import RLConfig
from vla.rl.rollout import EpisodeRollout

STATE_PREFIX = "td3/"


class TwinCritic(nn.Module):
    def __init__(self, in_dim: int, width: int):
        super().__init__()
        self.q = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                          nn.Linear(width, 1))
            for _ in range(2))

    def forward(self, features: torch.Tensor, base: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([features, base.flatten(1), residual.flatten(1)], dim=-1)
        return self.q[0](x).squeeze(-1), self.q[1](x).squeeze(-1)


def nstep_targets(rewards: np.ndarray, n: int, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one whole episode's per-decision rewards: (n-step discounted reward sums, the index of the
    state to bootstrap from (or -1 when the episode ends first), the discount gamma^m on it)."""
    if n < 1:
        raise ValueError(f"rl.td3.n_step must be >= 1, got {n}")
    length = len(rewards)
    sums = np.zeros(length)
    boot = np.full(length, -1, dtype=np.int64)
    disc = np.zeros(length)
    for t in range(length):
        m = min(n, length - t)
        sums[t] = sum(gamma ** i * rewards[t + i] for i in range(m))
        if t + m < length:
            boot[t], disc[t] = t + m, gamma ** m
    return sums, boot, disc


class ReplayBuffer:
    """A ring of decisions as tensors (no images: frozen features stand in for them)."""

    FIELDS = ("features", "base", "residual", "reward", "next_features", "next_base", "discount")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"rl.td3.replay_size must be >= 1, got {capacity}")
        self.capacity, self.size, self.cursor = capacity, 0, 0
        self.data: dict[str, torch.Tensor] = {}

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        count = len(rows["reward"])
        if not self.data:
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
        for start in range(0, count, self.capacity):  # a batch larger than the ring keeps its newest rows
            part = {k: v[start:start + self.capacity] for k, v in rows.items()}
            k = len(part["reward"])
            idx = (self.cursor + torch.arange(k)) % self.capacity
            for name, value in part.items():
                self.data[name][idx] = value
            self.cursor = int((self.cursor + k) % self.capacity)
            self.size = min(self.capacity, self.size + k)

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch,), generator=generator)
        return {k: v[idx] for k, v in self.data.items()}

    def state(self) -> dict[str, torch.Tensor]:
        head = {"meta": torch.tensor([self.capacity, self.size, self.cursor], dtype=torch.int64)}
        return {**head, **{k: v[:self.size] if self.size < self.capacity else v for k, v in self.data.items()}}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        capacity, size, cursor = (int(x) for x in tensors["meta"])
        if capacity != self.capacity:
            raise ValueError(f"saved replay buffer holds {capacity} decisions, rl.td3.replay_size is {self.capacity}")
        self.size, self.cursor = size, cursor
        self.data = {}
        if size == 0:  # saved before anything was added (an iteration whose episodes all crashed): no fields
            return
        for k in self.FIELDS:
            saved = tensors[k]
            self.data[k] = torch.zeros((capacity, *saved.shape[1:]), dtype=saved.dtype)
            self.data[k][:len(saved)] = saved


class ResidualTD3:
    """Critics, targets, optimizers and replay for TD3 on a policy with a frozen-base residual head."""

    def __init__(self, policy, rl: RLConfig):
        head = policy.head
        if not getattr(head, "base_frozen", False):
            raise ValueError("rl.algo=td3 trains a residual over a frozen base: use POLICY=residual with a base "
                             "checkpoint (make rl POLICY=residual ALGO=td3 CKPT=<base>)")
        if head.cfg.max_residual is None:
            raise ValueError("rl.algo=td3 needs a bounded residual (head.residual.max_residual, e.g. 2.0; the "
                             "residual recipe sets one): an unbounded actor climbs the critic's extrapolation and "
                             "Q diverges (measured on PushCube: Q 0.13 -> 7.8 in 4 iterations for returns <= 1)")
        self.policy, self.rl, self.cfg = policy, rl, rl.td3
        n = head.chunk_size * head.action_dim
        self.device = policy.device  # the replay stays in CPU memory; sampled batches move here
        self.critic = TwinCritic(policy.backbone.hidden_size + 2 * n, self.cfg.critic_width).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_target = copy.deepcopy(head.mean_net).requires_grad_(False)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=rl.critic_lr)
        self.actor_opt = torch.optim.Adam(head.mean_net.parameters(), lr=rl.lr)
        self.replay = ReplayBuffer(self.cfg.replay_size)
        self.steps = 0

    # -- data ---------------------------------------------------------------------------------
    def add(self, episodes: list[EpisodeRollout]) -> int:
        """Store every decision of these whole episodes with its n-step target inputs."""
        episodes = [e for e in episodes if e.decisions]
        if not episodes:
            return 0
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in ReplayBuffer.FIELDS}
        for e in episodes:
            # the pooled features acting saw (ResidualHead.sample_rl records them; the backbone is frozen)
            feats = torch.stack([d.record["features"].float() for d in e.decisions])
            rewards = np.array([d.reward for d in e.decisions])
            sums, boot, disc = nstep_targets(rewards, self.cfg.n_step, self.rl.gamma)
            base = torch.stack([d.record["base_action"].float() for d in e.decisions])
            residual = torch.stack([d.record["residual"].float() for d in e.decisions])
            nxt = torch.from_numpy(np.where(boot >= 0, boot, np.arange(len(boot))))  # any row; discount 0 masks it
            rows["features"].append(feats)
            rows["base"].append(base)
            rows["residual"].append(residual)
            rows["reward"].append(torch.from_numpy(sums).float())
            rows["next_features"].append(feats[nxt])
            rows["next_base"].append(base[nxt])
            rows["discount"].append(torch.from_numpy(disc).float())
        self.replay.add({k: torch.cat(v) for k, v in rows.items()})
        return sum(len(e.decisions) for e in episodes)

    # -- learning -----------------------------------------------------------------------------
    def _mean(self, net: nn.Module, features: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return self.policy.head.mean_from_features(features, base, net)

    def train(self, generator: torch.Generator, train_actor: bool = True) -> dict[str, float]:
        """`updates_per_iter` critic steps (and delayed actor steps) on replayed decisions."""
        if self.replay.size == 0:
            raise ValueError("no decisions in the replay buffer to learn from")
        cfg, head = self.cfg, self.policy.head
        logs: dict[str, list[float]] = {}
        for _ in range(cfg.updates_per_iter):
            b = {k: v.to(self.device) for k, v in self.replay.sample(cfg.batch_size, generator).items()}
            with torch.no_grad():
                noise = (torch.randn(b["next_base"].shape, generator=generator) * cfg.target_noise).clamp(
                    -cfg.noise_clip, cfg.noise_clip).to(self.device)
                limit = head.cfg.max_residual  # smoothed target actions stay in the actor's range, as in TD3
                next_residual = (self._mean(self.actor_target, b["next_features"], b["next_base"]) + noise).clamp(
                    -limit, limit)
                q1_t, q2_t = self.critic_target(b["next_features"], b["next_base"], next_residual)
                target = b["reward"] + b["discount"] * torch.minimum(q1_t, q2_t)
            q1, q2 = self.critic(b["features"], b["base"], b["residual"])
            critic_loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.rl.max_grad_norm)
            self.critic_opt.step()
            self.steps += 1
            _add(logs, critic_loss=critic_loss, q=q1.mean(), target_q=target.mean())
            if train_actor and self.steps % cfg.policy_delay == 0:
                mean = self._mean(head.mean_net, b["features"], b["base"])
                q_pi = self.critic(b["features"], b["base"], mean)[0]
                actor_loss = -q_pi.mean() + cfg.residual_l2 * (mean ** 2).mean()
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                torch.nn.utils.clip_grad_norm_(head.mean_net.parameters(), self.rl.max_grad_norm)
                self.actor_opt.step()
                _polyak(self.actor_target, head.mean_net, cfg.tau)
                _add(logs, actor_loss=actor_loss, residual_rms=mean.pow(2).mean().sqrt())
            _polyak(self.critic_target, self.critic, cfg.tau)
        out = {k: float(np.mean(v)) for k, v in logs.items()}
        return {**out, "replay_size": float(self.replay.size), "gradient_steps": float(cfg.updates_per_iter)}

    # -- checkpointing ------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything beyond the policy weights a kill -9 resume needs: flat tensors + JSON metadata."""
        from vla.train.optim_state import optimizer_to_tensors

        out: dict[str, torch.Tensor] = {}
        for name, module in (("critic", self.critic), ("critic_target", self.critic_target),
                             ("actor_target", self.actor_target)):
            out.update({f"{STATE_PREFIX}{name}/{k}": v for k, v in module.state_dict().items()})
        out.update({f"{STATE_PREFIX}replay/{k}": v for k, v in self.replay.state().items()})
        out[f"{STATE_PREFIX}steps"] = torch.tensor([self.steps], dtype=torch.int64)
        meta = {}
        for name, opt in (("critic_opt", self.critic_opt), ("actor_opt", self.actor_opt)):
            tensors, meta[name] = optimizer_to_tensors(opt)
            out.update({f"{STATE_PREFIX}{name}/{k}": v for k, v in tensors.items()})
        return out, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        from vla.train.optim_state import optimizer_from_tensors

        def part(name: str) -> dict[str, torch.Tensor]:
            prefix = f"{STATE_PREFIX}{name}/"
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.critic.load_state_dict(part("critic"))
        self.critic_target.load_state_dict(part("critic_target"))
        self.actor_target.load_state_dict(part("actor_target"))
        self.replay.load(part("replay"))
        self.steps = int(tensors[f"{STATE_PREFIX}steps"][0])
        for name, opt in (("critic_opt", self.critic_opt), ("actor_opt", self.actor_opt)):
            optimizer_from_tensors(opt, part(name), meta[name])


@torch.no_grad()
def _polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)


def _add(logs: dict[str, list[float]], **values: torch.Tensor) -> None:
    for k, v in values.items():
        logs.setdefault(k, []).append(float(v.detach()))
