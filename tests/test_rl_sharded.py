"""rl.fsdp: two gloo processes shard the learner (FSDP2) and each holds part of a fixed batch; the
gathered weights equal one unsharded process's step on the whole batch, and the sharded AdamW state
written to a checkpoint is exactly the unsharded optimizer's, and loads back."""
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from test_rl_replicas import ROWS, _batch, _flat, _free_port, _policy, _sgd
from vla.devices import Dist
from vla.rl.distributed import GradSync
from vla.rl.objective import make_optimizer, update
from vla.rl.sharded import ShardedLearner, backbone_blocks
from vla.train.optim_state import optimizer_to_tensors

SHARES = {"uneven": [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9]], "one-rank-empty": [list(range(ROWS)), []]}


def _mine(policy, whole, rows):
    mine = _batch(policy, rows)
    if mine is not None:  # the replica's advantages are the whole batch's rows
        mine.advantages = whole.advantages[rows]
        mine.returns = whole.returns[rows]
    return mine


def _replica(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    place, cpu = Dist(rank, world), torch.device("cpu")
    results = {}
    for name, shares in SHARES.items():
        policy = _policy()
        whole = _batch(policy, list(range(ROWS)))
        mine = _mine(policy, whole, shares[rank])
        learner = ShardedLearner(policy, place, cpu)
        sync = GradSync(place, cpu, sharded=True)
        logs = update(policy, mine, _sgd(policy), policy.cfg.rl, torch.Generator().manual_seed(rank),
                      train_critic=True, sync=sync, filler=whole.select(torch.tensor([0])))
        learner.sync_actor()
        results[f"{name}/weights"] = _flat(learner.actor)
        results[f"{name}/steps"] = torch.tensor(logs["gradient_steps"])
    # AdamW through the checkpoint format: gathered whole, then loaded into a fresh sharded optimizer
    policy = _policy()
    whole = _batch(policy, list(range(ROWS)))
    learner = ShardedLearner(policy, place, cpu)
    optimizer = make_optimizer(policy, policy.cfg.rl)
    update(policy, _mine(policy, whole, SHARES["uneven"][rank]), optimizer, policy.cfg.rl,
           torch.Generator().manual_seed(rank), train_critic=True, sync=GradSync(place, cpu, sharded=True),
           filler=whole.select(torch.tensor([0])))
    tensors, meta = learner.gather_optimizer(optimizer)
    if rank == 0:  # as a checkpoint: rank 0 writes, every rank reads
        save_file(tensors, f"{out}/adam.safetensors")
        Path(f"{out}/adam.json").write_text(json.dumps(meta))
    dist.barrier()
    tensors, meta = load_file(f"{out}/adam.safetensors"), json.loads(Path(f"{out}/adam.json").read_text())
    fresh = make_optimizer(policy, policy.cfg.rl)
    learner.load_optimizer(fresh, tensors, meta)
    again, _ = learner.gather_optimizer(fresh)
    if rank == 0:
        results.update({f"adam/{k}": v for k, v in tensors.items()})
        results["adam_reloaded_equal"] = torch.tensor(
            float(again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)))
        results["adam_groups"] = torch.tensor([len(g["params"]) for g in meta["param_groups"]])
    save_file(results, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_sharded_learner_takes_the_single_process_step_and_checkpoints_adam(tmp_path):
    mp.start_processes(_replica, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for name in SHARES:
        policy = _policy()
        start = _flat(policy)
        update(policy, _batch(policy, list(range(ROWS))), _sgd(policy), policy.cfg.rl,
               torch.Generator().manual_seed(0), train_critic=True)
        expected = _flat(policy)
        assert torch.equal(ranks[0][f"{name}/weights"], ranks[1][f"{name}/weights"]), name  # no drift
        assert float(ranks[0][f"{name}/steps"]) == float(ranks[1][f"{name}/steps"]) == 2, name
        moved = float((expected - start).abs().max())
        gap = float((ranks[0][f"{name}/weights"] - expected).abs().max())
        assert moved > 1e-4 and gap < 1e-3 * moved, (name, moved, gap)
    # the unsharded AdamW after the same step: the same entries, numbered the same way
    policy = _policy()
    optimizer = make_optimizer(policy, policy.cfg.rl)
    update(policy, _batch(policy, list(range(ROWS))), optimizer, policy.cfg.rl, torch.Generator().manual_seed(0),
           train_critic=True)
    tensors, meta = optimizer_to_tensors(optimizer)
    sharded = {k[len("adam/"):]: v for k, v in ranks[0].items() if k.startswith("adam/")}
    assert sharded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.allclose(sharded[key], value, atol=1e-6, rtol=1e-4), key
    assert ranks[0]["adam_groups"].tolist() == [len(g["params"]) for g in meta["param_groups"]]
    assert float(ranks[0]["adam_reloaded_equal"]) == 1.0


def test_blocks_are_the_backbones_layers_deepest_first():
    policy = _policy()
    blocks = backbone_blocks(policy)
    layers = [m for m in policy.backbone.modules() if type(m).__name__.endswith("Layer")]
    assert blocks and {id(b) for b in layers} <= {id(b) for b in blocks}


def test_fsdp_is_refused_outside_torchrun_and_with_overlap():
    import pytest

    from vla.config import ConfigError, merge
    from vla.rl.prepare import check_replicas

    cfg = _policy().cfg
    with pytest.raises(ConfigError, match="torchrun"):
        check_replicas(merge(cfg, {"rl": {"fsdp": True}}), Dist(0, 1))
    with pytest.raises(ConfigError, match="rl.overlap"):
        check_replicas(merge(cfg, {"rl": {"fsdp": True, "overlap": True}}), Dist(0, 2))
    check_replicas(merge(cfg, {"rl": {"fsdp": True}}), Dist(0, 2))  # the supported setting passes
