"""Checkpoints are directories: safetensors weights, the full resolved config, normalization
statistics, and (for training checkpoints) optimizer/scheduler/RNG/data-position state. No pickle.
Writes go to a temporary directory renamed into place, so a kill never leaves half a checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from vla.config import ConfigError, ExperimentConfig, differences, from_dict, to_dict
from vla.normalize import KeySpec, Normalizer

FORMAT_VERSION = 1
CONFIG, WEIGHTS, STATS, META = "config.json", "model.safetensors", "norm_stats.safetensors", "meta.json"
TRAIN_TENSORS, TRAIN_JSON = "train_state.safetensors", "train_state.json"
LATEST = "LATEST"


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing files or holds unreadable ones."""


def norm_specs(cfg: ExperimentConfig) -> dict[str, KeySpec]:
    narrow = cfg.norm.narrow_min_max
    specs = {"action": KeySpec(cfg.norm.action, tuple(cfg.norm.action_skip_dims), narrow)}
    if cfg.data.use_state:
        specs["state"] = KeySpec(cfg.norm.state, (), narrow)
    return specs


def save_policy(policy, directory: Path, extra_meta: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(to_dict(policy.cfg), indent=2))
    save_model(policy, str(directory / WEIGHTS))  # handles tied weights (PaliGemma's lm_head)
    policy.normalizer.save(directory / STATS)
    meta = {"format_version": FORMAT_VERSION, "state_dim": policy.state_dim, **(extra_meta or {})}
    (directory / META).write_text(json.dumps(meta, indent=2))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint is missing {path.name}: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint file {path}: {err}") from err


def load_config(directory: Path) -> ExperimentConfig:
    data = _read_json(Path(directory) / CONFIG)
    if isinstance(data.get("head"), dict) and "token_ids" not in data["head"]:
        data["head"]["token_ids"] = "end"  # saved before head.token_ids existed: its bins were the last ids
    if isinstance(data.get("norm"), dict) and "narrow_min_max" not in data["norm"]:
        data["norm"]["narrow_min_max"] = False  # trained before the q01 == q99 fallback: keep its transform
    try:
        return from_dict(data)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {directory} has an invalid config: {err}") from err


def refuse_other_experiment(checkpoint: Path, cfg: ExperimentConfig, resumable: tuple[str, ...], run: str,
                            continuing: str, remedy: str) -> None:
    """ConfigError naming the keys (other than the `resumable` prefixes) in which `cfg` differs from the config
    the checkpoint was saved with: resuming would continue another experiment under this one's name."""
    changed = [k for k in differences(load_config(checkpoint), cfg) if not k.startswith(resumable)]
    if changed:
        raise ConfigError(f"{cfg.output_dir} holds {run} with other settings ({', '.join(changed[:8])}"
                          f"{' ...' if len(changed) > 8 else ''} differ from {checkpoint}/config.json); resuming it "
                          f"would continue {continuing} under the new settings. Give a new output_dir=, or {remedy}")


def load_policy(directory: str | Path, device: str | torch.device | None = None):
    """Rebuild a Policy from a checkpoint directory (config + stats + weights), on `device`
    (None: the checkpoint's own `device` setting, auto = the GPU when there is one)."""
    from vla.model import Policy

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    cfg = load_config(directory)
    meta = _read_json(directory / META)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    try:
        stats = Normalizer.load_stats(directory / STATS)
    except (SafetensorError, FileNotFoundError, ValueError) as err:
        raise CheckpointError(f"corrupt or missing normalization stats in {directory}: {err}") from err
    policy = Policy(cfg, Normalizer(stats, norm_specs(cfg)), int(meta["state_dim"]))
    from vla.train.lora import apply_lora

    apply_lora(policy, cfg.backbone)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint is missing {WEIGHTS}: {directory}")
    try:
        missing, unexpected = load_model(policy, str(weights), strict=False)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"corrupt weights file {weights}: {err}") from err
    except RuntimeError as err:  # torch's load_state_dict: tensors of other shapes than the config builds
        raise CheckpointError(f"{weights} does not match the config (tensor shapes differ): "
                              f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from err
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    from vla.devices import pick_device

    return policy.to(pick_device(cfg.device if device is None else str(device))).eval()


# --- training checkpoints: policy + everything needed for an exact resume ----------------------

def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def save_training_checkpoint(root: Path, step: int, policy, tensors: dict[str, torch.Tensor], state: dict, keep_last: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(policy, tmp, {"step": step})
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / TRAIN_TENSORS))
    (tmp / TRAIN_JSON).write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / LATEST)
    if keep_last > 0:  # 0 keeps every checkpoint
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    marker = root / LATEST
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{marker} names {path.name}, which does not exist")
    return path


def load_training_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        tensors = load_file(str(directory / TRAIN_TENSORS))
    except (SafetensorError, FileNotFoundError, OSError) as err:
        raise CheckpointError(f"corrupt or missing training state in {directory}: {err}") from err
    return tensors, _read_json(directory / TRAIN_JSON)
