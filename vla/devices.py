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
    """auto = this process's GPU (LOCAL_RANK under torchrun) when CUDA is available, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' asked for, but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device '{name}' is unknown; valid: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def setup_distributed(device: torch.device, timeout_s: float | None = None) -> Dist:
    """Join the torchrun job (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs. timeout_s: how long a
    collective may wait (RL ranks wait at barriers while rank 0 evaluates)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
    return Dist(dist.get_rank(), world)
