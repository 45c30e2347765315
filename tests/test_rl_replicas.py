"""Data-parallel RL (torchrun replicas): two gloo processes, each holding part of a fixed batch,
take exactly the step one process takes on the whole batch, and stay identical to each other."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vla.devices import Dist
from vla.random_policy import random_policy
from vla.rl import ppo
from vla.rl.buffer import flatten
from vla.rl.distributed import GradSync, shard_plan
from vla.rl.objective import update
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode

ROWS = 10


def _policy():
    torch.manual_seed(0)
    return random_policy({"backbone": {"image_size": 32},
                          "head": {"type": "diffusion", "chunk_size": 2, "value_head": True,
                                   "diffusion": {"inference_steps": 3}},
                          "rl": {"algo": "ppo", "epochs": 2, "minibatch_size": 64, "lr": 1e-3, "target_kl": None,
                                 "max_grad_norm": 1e6}})


def _batch(policy, rows: list[int]):
    """Single-decision episodes (rewards alternate) for the given rows of one fixed draw."""
    if not rows:
        return None
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 255, (ROWS, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(ROWS, 8)).astype(np.float32))
    _, sample, value = policy.act_rl(images, states, ["pick up the bowl"] * ROWS, torch.Generator().manual_seed(0))
    episodes = [EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, j), "pick up the bowl", [Decision(
        images[j].numpy(), states[j].numpy(), {k: v[j] for k, v in sample.record.items()}, float(sample.log_prob[j]),
        float(value[j]), float(j % 2))]) for j in rows]
    # advantages from the whole batch on every rank, so the comparison isolates the update itself
    _, advs, rets, _ = ppo.advantages([EpisodeRollout(e.plan, e.instruction, e.decisions) for e in episodes], policy.cfg.rl)
    return flatten(episodes, advs, rets)


def _sgd(policy) -> torch.optim.Optimizer:
    """Plain SGD: the step is linear in the gradient, so a wrong weighting of the ranks shows (Adam's
    first step is ~lr * sign(grad) and would hide it)."""
    return torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.05)


def _flat(policy) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()])


def _replica(rank: int, world: int, port: int, shares: list[list[int]], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    policy = _policy()
    whole = _batch(policy, list(range(ROWS)))
    mine = _batch(policy, shares[rank])
    # the replica's advantages are the whole batch's rows (see _batch): pick them by row
    if mine is not None:
        mine.advantages = whole.advantages[shares[rank]]
        mine.returns = whole.returns[shares[rank]]
    sync = GradSync(Dist(rank, world), torch.device("cpu"))
    logs = update(policy, mine, _sgd(policy), policy.cfg.rl,
                  torch.Generator().manual_seed(rank), train_critic=True, sync=sync)
    save_file({"weights": _flat(policy), "steps": torch.tensor(logs["gradient_steps"])}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("shares", [[[0, 1, 2, 3, 4, 5, 6], [7, 8, 9]], [list(range(ROWS)), []]],
                         ids=["uneven", "one-rank-empty"])
def test_replicas_take_the_single_process_step(shares, tmp_path):
    policy = _policy()
    whole = _batch(policy, list(range(ROWS)))
    update(policy, whole, _sgd(policy), policy.cfg.rl, torch.Generator().manual_seed(0),
           train_critic=True)
    expected = _flat(policy)
    mp.start_processes(_replica, args=(2, _free_port(), shares, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])  # the replicas never drift apart
    assert float(ranks[0]["steps"]) == float(ranks[1]["steps"]) == 2  # one minibatch per epoch on both
    moved = float((expected - _flat(_policy())).abs().max())
    gap = float((ranks[0]["weights"] - expected).abs().max())
    assert moved > 1e-4 and gap < 1e-3 * moved, (moved, gap)


def test_plan_shards_keep_groups_whole():
    plan = [PlannedEpisode("libero_spatial", 0, g, g, 1000 + g) for g in range(3) for _ in range(4)]
    shards = [shard_plan(plan, Dist(r, 2)) for r in range(2)]
    assert sorted(p.group for s in shards for p in s) == sorted(p.group for p in plan)
    assert {p.group for p in shards[0]} == {0, 2} and {p.group for p in shards[1]} == {1}
