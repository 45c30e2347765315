"""Data-parallel RL under torchrun: `torchrun --nproc_per_node N -m vla.cli rl ...`.

Every rank is a replica of the policy with its own env workers. An iteration's plan is drawn the
same on every rank and split by episode group (a GRPO group never straddles ranks, so its advantage
normalization stays local); each rank rolls out its share and computes gradients on its own
decisions. Before every optimizer step the gradients are averaged over ranks, weighted by how many
decisions each rank holds in that minibatch, so every replica takes the very same step and the
replicas never drift apart. The trust region's KL is the same decision-weighted average, so all
ranks stop an update together.

Why not DDP: one RL minibatch runs the backbone for the prefix and then the head's own re-scoring
(several denoising steps, a critic), not a single forward call DDP could wrap; and a rank may hold
no decisions for a minibatch at all (its groups were filtered), which DDP cannot express. An
explicit all-reduce of the flattened gradients is the same communication.

Rank 0 alone evaluates, checkpoints and logs; the others wait at a barrier meanwhile.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from vla.devices import Dist
from vla.rl.rollout import PlannedEpisode

# collectives wait this long: the other ranks sit at a barrier while rank 0 runs an evaluation
BARRIER_TIMEOUT_S = 6 * 3600
# row fields summed over ranks, averaged per episode, or the slowest rank's
SUMMED = ("episodes", "env_frames", "restarts", "dropped", "groups_filtered", "groups_kept")
PER_EPISODE = ("success_rate", "return", "episode_steps")
SLOWEST = ("rollout_s", "policy_s")


def shard_plan(plan: list[PlannedEpisode], place: Dist) -> list[PlannedEpisode]:
    """This rank's episodes: whole groups (GRPO) or single episodes (PPO: group = its index), dealt
    round robin."""
    return [p for p in plan if p.group % place.world == place.rank]


class GradSync:
    """The collectives of one data-parallel update (on their own process group, so a learner thread
    can run them while the main thread rolls out)."""

    def __init__(self, place: Dist, device: torch.device, group=None, sharded: bool = False):
        # sharded (rl.fsdp): FSDP reduces the gradients itself inside backward (`vla.rl.sharded`)
        self.place, self.device, self.group, self.sharded = place, device, group, sharded

    def _reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op, group=self.group)
        return t.tolist()

    def total(self, count: int) -> int:
        return int(self._reduce([float(count)])[0])

    def minibatches_per_epoch(self, total: int, size: int) -> int:
        """The same count on every rank: as many as the global batch of `total` decisions needs at
        `size` per rank."""
        return max(1, math.ceil(total / (self.place.world * size)))

    def weighted_mean(self, value: float, weight: float) -> tuple[float, float]:
        """(decision-weighted mean of value over ranks, total weight)."""
        num, den = self._reduce([value * weight, weight])
        return (num / den if den > 0 else 0.0), den

    def average_gradients(self, params: list[torch.nn.Parameter], weight: float, total: float) -> None:
        """Every rank ends with sum_r (n_r / N) grad_r: the gradient of the mean loss over all
        ranks' decisions. A parameter no rank produced a gradient for keeps grad None (Adam then
        skips it on every rank alike)."""
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX, group=self.group)
        live = [p for p, h in zip(params, has.tolist()) if h > 0]
        for p, h in zip(params, has.tolist()):
            if h == 0:
                p.grad = None
        if not live:
            return
        scale = weight / total if total > 0 else 0.0
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() * scale
                          for p in live])
        dist.all_reduce(flat, group=self.group)
        offset = 0
        for p in live:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's weights everywhere (a freshly initialised critic differs per rank otherwise)."""
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0, group=self.group)

    def reduce_row(self, row: dict) -> dict:
        """The iteration's log row over all ranks' episodes."""
        n = float(row["episodes"])
        summed = self._reduce([float(row.get(k, 0.0)) for k in SUMMED] + [n * float(row[k]) for k in PER_EPISODE])
        slowest = self._reduce([float(row[k]) for k in SLOWEST], op=dist.ReduceOp.MAX)
        out = dict(row)
        out.update({k: v for k, v in zip(SUMMED, summed) if k in row})
        episodes = summed[0]
        out.update({k: (v / episodes if episodes else 0.0) for k, v in zip(PER_EPISODE, summed[len(SUMMED):])})
        out.update({k: round(v, 1) for k, v in zip(SLOWEST, slowest)})
        out["episodes"] = int(episodes)
        out["env_frames_per_s"] = out["env_frames"] / max(out["rollout_s"], 1e-9)
        out["ranks"] = self.place.world
        return out

    def barrier(self) -> None:
        dist.barrier(group=self.group)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP DTensor) result gathered whole; a plain tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def split_evenly(order: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """`parts` near-equal slices of a permutation (some empty when it is shorter than `parts`)."""
    return list(torch.tensor_split(order, parts)) if len(order) else [order[:0]] * parts


def seed_offset(place: Dist) -> int:
    """Rank 0 keeps the single-process seeds, so a 1-rank run reproduces a plain one."""
    return place.rank * 7_919
