"""Optimizer state as flat safetensors tensors + JSON metadata (torch.save would pickle it).

The format: each tensor of entry `idx` (the parameter's position across the optimizer's groups) is
stored as `optim/<idx>/<name>`; its scalars and the param groups go to the JSON metadata."""
from __future__ import annotations

import torch


def state_to_tensors(state: dict[int, dict], param_groups: list[dict]) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict's parts (entries keyed by index) in the checkpoint's format."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, entry in state.items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": param_groups, "scalars": scalars}


def tensors_to_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict[int, dict]:
    """The checkpoint's format back to optimizer state entries keyed by index."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return state


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    return state_to_tensors(sd["state"], sd["param_groups"])


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    optimizer.load_state_dict({"state": tensors_to_state(tensors, meta), "param_groups": meta["param_groups"]})
