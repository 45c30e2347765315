"""`rl.fsdp=true` under torchrun: the learner's weights, gradients and AdamW state sharded over the
replicas (FSDP2, `torch.distributed.fsdp.fully_shard`), for policies whose training state does not
fit one device while their weights alone do.

Why the split: full fine-tuning keeps ~16 bytes per parameter in the learner (fp32 weights,
gradients, two Adam moments) but acting needs only the weights. So each rank keeps one plain,
unsharded copy of the policy that rolls out and evaluates (no gradients, no optimizer), and the
sharded learner trains. After every update the learner's full weights are gathered into that copy
(every rank's copy stays identical, as the replicas of the unsharded path do).

What sharding asks of the update: FSDP gathers a unit's weights inside its forward, a collective
every rank must join, so every rank runs the same forward/backward calls in the same order. The
minibatch count is already the same on every rank; a rank without decisions in a minibatch runs
one stand-in decision (`filler`) at zero weight. Gradients are reduce-scattered as a mean over
ranks, so each rank's loss is scaled by world * n_rank / n_total first: the result is the gradient
of the mean loss over all ranks' decisions, the same step as the unsharded path.

Units: every block of a ModuleList inside the backbone (its transformer layers) is its own unit;
everything else (head, critic, projector, embeddings) sits in the root unit, gathered by the root's
`build_prefix`, which every RL minibatch calls first. A block keeps its gathered weights from its
forward until its backward (reshard_after_forward=False, ZeRO-2's trade): the flow and diffusion
experts attend to the blocks' cached keys and values, a path into the block weights that FSDP's
pre-backward hooks (on the blocks' outputs) do not see. What stays sharded at all times is the
gradients and the AdamW moments, 12 of the 16 bytes per trained parameter.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

from vla.devices import Dist
from vla.rl.distributed import full_tensor
from vla.train.optim_state import state_to_tensors, tensors_to_state


def backbone_blocks(policy: nn.Module) -> list[nn.Module]:
    """The backbone's repeated blocks (the elements of its ModuleLists that hold weights), deepest
    first: fully_shard wants children wrapped before their parents."""
    backbone = getattr(policy, "backbone", None)
    if backbone is None:
        raise ValueError("rl.fsdp shards the backbone's blocks; this policy has no .backbone")
    found: list[tuple[int, nn.Module]] = []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList):
            depth = name.count(".")
            found += [(depth, block) for block in module if any(True for _ in block.parameters())]
    return [block for _, block in sorted(found, key=lambda item: -item[0])]


class ShardedLearner:
    """The FSDP-sharded learner and the unsharded acting copy of one torchrun replica."""

    def __init__(self, policy: nn.Module, place: Dist, device: torch.device):
        # the acting copy is taken before sharding: the same weights, plain tensors, nothing to train
        self.actor = copy.deepcopy(policy).eval()
        self.actor.requires_grad_(False)
        mesh = init_device_mesh(device.type, (place.world,))
        blocks = backbone_blocks(policy)
        if not blocks:
            raise ValueError("rl.fsdp found no repeated blocks in the backbone to shard")
        for block in blocks:
            # gathered weights stay until backward: pi0's expert attends to the blocks' cached keys and
            # values, a path into their weights that FSDP's backward hooks (on block outputs) never see
            fully_shard(block, mesh=mesh, reshard_after_forward=False)
        fully_shard(policy, mesh=mesh)
        # RL enters the policy through build_prefix, not forward: the root's weights gather there
        register_fsdp_forward_method(policy, "build_prefix")
        self.policy = policy

    def sync_actor(self) -> nn.Module:
        """The learner's full weights into the acting copy, which it returns (a collective: every rank
        calls it)."""
        full = get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True))
        self.actor.load_state_dict({k: full_tensor(v) for k, v in full.items()})
        return self.actor

    def gather_optimizer(self, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
        """The whole AdamW state in the checkpoint's format (`vla.train.optim_state`: entries numbered
        by the parameter's position in the optimizer's groups), so an unsharded run can resume from
        it and back. A collective: every rank calls it; only rank 0 receives the state (in CPU memory),
        the others an empty one."""
        sd = get_optimizer_state_dict(self.policy, optimizer,
                                      options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not sd:  # not rank 0
            return {}, {"param_groups": [], "scalars": {}}
        order = {name: idx for idx, name in enumerate(n for group in sd["param_groups"] for n in group["params"])}
        state = {order[name]: {key: full_tensor(value).detach().cpu() if torch.is_tensor(value) else value
                               for key, value in entry.items()}
                 for name, entry in sd["state"].items()}
        groups, start = [], 0
        for group in sd["param_groups"]:
            n = len(group["params"])
            groups.append({**group, "params": list(range(start, start + n))})
            start += n
        return state_to_tensors(state, groups)

    def load_optimizer(self, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """A checkpoint's optimizer state (full, numbered as `gather_optimizer` writes it) into the
        sharded optimizer: every rank reads the same file and keeps its own shard."""
        names = {id(p): n for n, p in self.policy.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        if len(order) != sum(len(g["params"]) for g in meta["param_groups"]):
            raise ValueError(f"the checkpoint's optimizer holds {sum(len(g['params']) for g in meta['param_groups'])} "
                             f"parameters, this policy trains {len(order)}")
        state = {order[idx]: entry for idx, entry in tensors_to_state(tensors, meta).items()}
        groups = [{**group, "params": [order[i] for i in group["params"]]} for group in meta["param_groups"]]
        optimizer.zero_grad(set_to_none=True)  # torch builds the empty state to fill only when no gradient is held
        set_optimizer_state_dict(self.policy, optimizer, {"state": state, "param_groups": groups},
                                 # a parameter that never had a gradient (a last block's query, whose output
                                 # the expert never reads) has no AdamW state, as in the unsharded optimizer
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        for p in [p for group in optimizer.param_groups for p in group["params"]]:
            if names[id(p)] not in state:  # torch's placeholder step on a parameter the checkpoint has no state for
                optimizer.state.pop(p, None)
