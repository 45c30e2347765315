"""Where a process computes: torchrun replicas on their own GPUs, Ray workers where Ray placed them, and a
checkpoint trained on a GPU still loadable on a CPU machine."""
import sys
import types

import numpy as np
import pytest
import torch

from vla.devices import pick_device, ray_worker_device


def test_a_bare_cuda_means_this_replicas_gpu(monkeypatch):
    """torch's bare "cuda" is the current device, GPU 0 in every replica until set_device: under torchrun every
    rank would share one GPU (NCCL refuses a duplicate GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("cuda") == pick_device("auto") == torch.device("cuda", 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0) and pick_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="device 'tpu' is unknown"):
        pick_device("tpu")


def test_without_cuda_auto_is_the_cpu_and_cuda_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="--device cpu"):
        pick_device("cuda:1")


def test_ray_workers_use_a_gpu_only_when_ray_gave_them_one(monkeypatch):
    fake = types.SimpleNamespace(get_gpu_ids=lambda: [])
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert ray_worker_device() == "cpu"
    fake.get_gpu_ids = lambda: [3]
    assert ray_worker_device() == "cuda"


def test_a_checkpoint_trained_on_a_gpu_loads_on_the_cpu_when_asked(tmp_path, monkeypatch):
    from vla.checkpoint import load_policy, save_policy
    from vla.random_policy import random_policy

    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, "type": "flow"}, "device": "cuda"})
    save_policy(policy, tmp_path / "gpu_run")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--device cpu"):
        load_policy(tmp_path / "gpu_run")
    assert load_policy(tmp_path / "gpu_run", "auto").device.type == "cpu"
    with pytest.raises(RuntimeError, match="--device cpu"):
        load_policy(tmp_path / "gpu_run", "cuda")
    from vla.rl.prepare import prepare_policy

    assert prepare_policy(tmp_path / "gpu_run", None, ["device=cpu", "rl.algo=grpo"]).device.type == "cpu"
    loaded = load_policy(tmp_path / "gpu_run", "cpu")
    images = torch.zeros((1, 2, 32, 32, 3), dtype=torch.uint8)
    assert loaded.device.type == "cpu"
    same = [p.act(images, torch.zeros(1, 8), ["t"], torch.Generator().manual_seed(0)) for p in (loaded, policy)]
    assert np.allclose(*same)
