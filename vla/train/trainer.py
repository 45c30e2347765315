"""Behaviour-cloning trainer: AdamW + warmup/cosine, gradient accumulation, LoRA or full
fine-tuning, bf16 autocast and gradient checkpointing on GPU, exact resume, torchrun DDP.

The same entry point runs on one CPU and under `torchrun --nproc_per_node N`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from vla.checkpoint import (latest_checkpoint, load_training_state, norm_specs, refuse_other_experiment,
                            save_training_checkpoint)
from vla.config import ConfigError, ExperimentConfig, merge, to_dict, to_yaml
from vla.data.dataset import (EpochSampler, FrameCache, StreamingFrames, check_dataset_gripper, dataset_stats, episode_index,
                              open_dataset, stored_image_size, validate_dataset)
from vla.data.features import DatasetKeys
from vla.devices import pick_device, setup_distributed
from vla.model import Policy
from vla.normalize import Normalizer
from vla.train.checkpointing import enable_gradient_checkpointing
from vla.train.lora import apply_lora, freeze_vision
from vla.train.optim_state import optimizer_from_tensors, optimizer_to_tensors
from vla.train.precision import refuse_low_precision_training
from vla.train.validation import split_episodes, validate


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"train.precision '{precision}' is unknown; valid: auto, fp32, bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class Logger:
    """TensorBoard / W&B when asked for, plus a JSON-lines log that is always written."""

    def __init__(self, cfg: ExperimentConfig, out: Path, enabled: bool):
        self.enabled = enabled
        self.tb = self.wandb = None
        if not enabled:
            return
        self.jsonl = (out / "train_log.jsonl").open("a")
        if cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        if cfg.train.wandb:
            try:
                import wandb
            except ImportError as err:
                raise RuntimeError("train.wandb=true needs the wandb package: pip install wandb") from err
            self.wandb = wandb.init(project="vla", dir=str(out), config=to_dict(cfg))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb:
            self.wandb.log(values, step=step)


def build_policy_for_training(cfg: ExperimentConfig, ds, rows=None) -> tuple[Policy, object]:
    """The policy to train, its normalization from the dataset's `rows` (the frames trained on; None = all)."""
    layout = validate_dataset(ds, cfg.data.cameras, cfg.head.action_dim, cfg.data.use_state,
                              DatasetKeys.from_config(cfg.data))
    if cfg.data.check_gripper and cfg.head.action_dim == 7:
        check_dataset_gripper(ds, layout)
    if cfg.head.type == "residual" and cfg.head.residual.base_checkpoint:
        from vla.residual_init import residual_from_base

        return residual_from_base(cfg), layout  # the base's own statistics, backbone and prompt
    stats = dataset_stats(ds, cfg.data.use_state, layout.keys, rows)
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), layout.state_dim)
    apply_lora(policy, cfg.backbone)
    if cfg.backbone.freeze_vision:
        freeze_vision(policy)
    enable_gradient_checkpointing(policy, cfg)
    return policy, layout


def adopt_render_size(cfg: ExperimentConfig, ds) -> ExperimentConfig:
    """Evaluation, RL and sweeps render the simulator at demos.image_size; for a given dataset that is the size
    its images are stored at, so the policy sees the same resampling in both (a 256 px hub dataset evaluated
    from 128 px renders would see blurrier images than it trained on)."""
    size = stored_image_size(ds, cfg.data.cameras, DatasetKeys.from_config(cfg.data))
    if not cfg.data.dataset or size is None or size == cfg.demos.image_size:
        return cfg
    print(f"[train] evaluation renders at the dataset's {size} px (demos.image_size {cfg.demos.image_size} -> {size})",
          flush=True)
    return merge(cfg, {"demos": {"image_size": size}})


def adopt_recording_rate(cfg: ExperimentConfig, ds) -> ExperimentConfig:
    """data.fps: the control rate the dataset's actions were recorded at, kept in the checkpoint. A delta action is a
    displacement per recorded step, so executed at another rate the arm moves faster or slower than in its
    demonstrations (`vla deploy` acts at this rate unless told otherwise). Unset, it is the dataset's fps; a given
    value wins, since a dataset's fps can be nominal (openpi's LIBERO conversion stores 10 for 20 Hz control)."""
    fps = int(ds.meta.fps)
    if cfg.data.fps is None:
        return merge(cfg, {"data": {"fps": fps}})
    if not cfg.data.fps > 0:
        raise ConfigError(f"data.fps must be a positive control rate in Hz, got {cfg.data.fps}")
    if cfg.data.fps != fps:
        print(f"[train] data.fps={cfg.data.fps}: the policy's actions are taken as recorded at {cfg.data.fps} Hz, "
              f"not the dataset's stated {fps} fps", flush=True)
    return cfg


def train(cfg: ExperimentConfig, dataset: str) -> Path:
    """Train to cfg.train.steps (resuming from the last checkpoint if any); returns the last checkpoint."""
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)
    device = pick_device(cfg.device)
    ddp = setup_distributed(device, timeout_s=3600)  # the other ranks wait while rank 0 validates and saves
    if cfg.head.type == "residual" and cfg.head.residual.base_checkpoint:
        from vla.residual_init import adopt_base_config

        cfg = adopt_base_config(cfg)  # the dataset is read with the base's cameras, proprio and chunk size
    ds = open_dataset(dataset, cfg.head.chunk_size, cfg.data.action_key)
    cfg = adopt_recording_rate(adopt_render_size(cfg, ds), ds)
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
        print(f"resolved config:\n{to_yaml(cfg)}", flush=True)

    torch.manual_seed(cfg.train.seed)
    try:
        split = split_episodes(episode_index(ds), cfg.data.val_episodes, cfg.train.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    stats_rows = split.train_rows if split.val_episodes else None  # held-out frames stay unseen, statistics too
    policy, layout = build_policy_for_training(cfg, ds, stats_rows)
    refuse_low_precision_training(policy)
    policy.to(device)
    if cfg.data.cache_in_memory:
        frames = FrameCache(ds, layout, cfg.head.chunk_size, policy.backbone.image_size)
    else:
        frames = StreamingFrames(ds, layout, policy.backbone.image_size)
    train_rows = split.train_rows.tolist()
    sampler = EpochSampler(len(train_rows), cfg.train.batch_size, cfg.train.seed, ddp.rank, ddp.world)
    aug_gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + ddp.rank)

    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    step = 0
    resume_from = latest_checkpoint(ckpt_root) if cfg.train.resume else None
    if resume_from is not None:
        _check_resumable(resume_from, cfg)
        _check_same_statistics(resume_from, policy.normalizer.stats)
        step = _restore(resume_from, policy, optimizer, scheduler, sampler, aug_gen)
        if ddp.main:
            print(f"resumed from {resume_from} at step {step}", flush=True)
    # some backbone weights are structurally unused by some heads (an untied lm_head under OFT)
    model = torch.nn.parallel.DistributedDataParallel(policy, find_unused_parameters=True) if ddp.world > 1 else policy
    amp = autocast_dtype(cfg.train.precision, device)
    logger = Logger(cfg, out, ddp.main)
    n_params = sum(p.numel() for p in policy.parameters())
    n_train = sum(p.numel() for p in params)
    if ddp.main:
        print(f"policy: {n_params:,} parameters ({n_train:,} trainable); {len(train_rows)} frames; device {device}",
              flush=True)
        if split.val_episodes:
            print(f"held out: episodes {list(split.val_episodes)} ({len(split.val_rows)} frames)", flush=True)

    bar = tqdm(total=cfg.train.steps, initial=step, disable=not ddp.main, dynamic_ncols=True)
    last = latest_checkpoint(ckpt_root) if step else None
    tic, seen = time.perf_counter(), 0
    while step < cfg.train.steps:
        policy.train()
        optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        if ddp.world > 1:  # only rank 0 checkpoints: seed each rank's stream from (seed, rank, step), so a resume
            aug_gen.manual_seed((cfg.train.seed * 7919 + ddp.rank) * 1_000_003 + step)  # reproduces every rank's
        for _ in range(cfg.train.grad_accum):
            batch = frames.batch([train_rows[i] for i in sampler.next_batch()])
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss, part = model(batch, aug_gen)
            (loss / cfg.train.grad_accum).backward()
            for k, v in part.items():
                logs[k] = logs.get(k, 0.0) + v / cfg.train.grad_accum
            seen += len(batch["task"]) * ddp.world
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        if not math.isfinite(float(grad_norm)):
            raise FloatingPointError(f"non-finite gradient norm at step {step + 1}; lower train.lr or check the data")
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            rate = seen / max(time.perf_counter() - tic, 1e-9)
            logs.update(lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm), samples_per_s=rate)
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "lr"})
            logger.log(step, logs)
            tic, seen = time.perf_counter(), 0
        saving = step % cfg.train.save_every == 0 or step == cfg.train.steps
        every = cfg.train.val_every or cfg.train.save_every
        if ddp.main and split.val_episodes and (step % every == 0 or step == cfg.train.steps):
            scores = validate(policy, frames, split, cfg.train.batch_size, cfg.train.seed,
                              lambda: torch.autocast(device.type, dtype=amp, enabled=amp is not None))
            print(f"[train] step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()), flush=True)
            logger.log(step, scores)
        if ddp.main and saving:
            last = _save(ckpt_root, step, policy, optimizer, scheduler, sampler, aug_gen, cfg.train.keep_last)
        if ddp.world > 1:
            dist.barrier()
    bar.close()
    if ddp.world > 1:
        dist.destroy_process_group()
    return last if last is not None else latest_checkpoint(ckpt_root)


# what may change when a run resumes: how long and how often it saves/logs, where it runs, evaluation and RL
# settings, where the data lives. Anything else means another experiment, which must not continue this one's weights.
RESUMABLE = ("output_dir", "device", "data.dataset", "data.fps", "data.cache_in_memory", "data.check_gripper", "data.camera_keys",
             "data.state_key", "data.action_key", "demos.image_size", "eval.", "rl.", "head.sampler",
             "train.steps", "train.save_every", "train.keep_last", "train.log_every", "train.val_every", "train.torch_threads",
             "train.tensorboard", "train.wandb", "train.resume")


def _check_resumable(checkpoint: Path, cfg: ExperimentConfig) -> None:
    refuse_other_experiment(checkpoint, cfg, RESUMABLE, "a run trained", "its weights",
                            "train.resume=false to start over there")


def _save(root, step, policy, optimizer, scheduler, sampler, aug_gen, keep_last) -> Path:
    tensors, opt_meta = optimizer_to_tensors(optimizer)
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/augment"] = aug_gen.get_state()
    if policy.device.type == "cuda":  # the training GPU's generator (dropout, noise drawn on the device)
        tensors["rng/cuda"] = torch.cuda.get_rng_state(policy.device)
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {"step": step, "optimizer": opt_meta, "scheduler": sched, "sampler": sampler.state_dict()}
    return save_training_checkpoint(root, step, policy, tensors, state, keep_last)


def _check_same_statistics(checkpoint: Path, stats: dict[str, dict[str, np.ndarray]]) -> None:
    """The statistics computed from the data now must be the checkpoint's: its weights learned under those, and a
    dataset that changed under the same path (regenerated demos, another revision of a hub dataset, other held-out
    episodes) would shift every normalized action and state the resumed steps see."""
    saved = Normalizer.load_stats(checkpoint / "norm_stats.safetensors")
    differ = sorted(f"{key}/{stat}" for key in set(saved) | set(stats)
                    for stat in set(saved.get(key, {})) | set(stats.get(key, {}))
                    if stat not in saved.get(key, {}) or stat not in stats.get(key, {})
                    or np.shape(saved[key][stat]) != np.shape(stats[key][stat])
                    or not np.allclose(saved[key][stat], stats[key][stat], rtol=1e-5, atol=1e-6))
    if differ:
        raise ConfigError(f"cannot resume from {checkpoint}: the dataset's normalization statistics differ from the "
                          f"ones its weights were trained with ({differ[:4]}); the data changed under the same "
                          f"name. output_dir= a new directory, or train.resume=false to start over there")


def _restore(directory: Path, policy, optimizer, scheduler, sampler, aug_gen) -> int:
    from safetensors.torch import load_model

    missing, unexpected = load_model(policy, str(directory / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"cannot resume from {directory}: weights do not match the model ({missing[:3]}, {unexpected[:3]})")
    tensors, state = load_training_state(directory)
    try:
        optimizer_from_tensors(optimizer, tensors, state["optimizer"])
    except ValueError as err:  # torch: "loaded state dict contains a parameter group that doesn't match the size"
        raise ConfigError(f"cannot resume from {directory}: its optimizer trained another set of weights than this "
                          f"policy trains ({err}); backbone.freeze_vision froze the projector and LM head too before "
                          "they were kept training. output_dir= a new directory, or train.resume=false") from err
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(tensors["rng/torch"])
    aug_gen.set_state(tensors["rng/augment"])
    if "rng/cuda" in tensors and policy.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng/cuda"], policy.device)
    return int(state["step"])
