"""Where a process computes: its device, and its place in a torchrun job.

BC training, RL, evaluation and serving all resolve `device` (auto | cpu | cuda | cuda:N) here, so
a checkpoint trained on a GPU is also evaluated, served and RL-tuned on one when it is present.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """auto = this process's GPU when CUDA is available, else the CPU; auto and a bare `cuda` mean GPU LOCAL_RANK
    under torchrun (bare `cuda` is "the current GPU", which is GPU 0 in every replica until set_device)."""
    if name != "cpu" and name != "auto" and not name.startswith("cuda"):
        raise ValueError(f"device '{name}' is unknown; valid: auto, cpu, cuda, cuda:N")
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' asked for, but CUDA is not available here (a checkpoint trained on a GPU "
                           "keeps that setting: `--device cpu` for eval, sweep and serve, ARGS=\"device=cpu\" for the "
                           "others)")
    if name in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def ray_worker_device() -> str:
    """Inside a Ray task or actor: its GPU when Ray assigned it one, else the CPU. Ray leaves CUDA_VISIBLE_DEVICES
    alone for a worker that asked for no GPU, so `auto` there would put every worker's copy of the policy on GPU 0,
    beside the learner and unaccounted for."""
    import ray

    return "cuda" if ray.get_gpu_ids() else "cpu"


def setup_distributed(device: torch.device, timeout_s: float | None = None) -> Dist:
    """Join the torchrun job (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs. timeout_s: how long a
    collective may wait (RL ranks wait at barriers while rank 0 evaluates)."""
    if device.type == "cuda":  # NCCL and argument-less CUDA calls (RNG state, caches) use the current device
        torch.cuda.set_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
    return Dist(dist.get_rank(), world)
