"""The RL run's checkpoint: weights, the optimizer (or TD3's critics and replay), RFT's success
replay, the torch RNG and the run's state (iteration, log rows, evaluations), all safetensors +
JSON, so a kill -9 resumes after the last finished iteration."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vla.checkpoint import latest_checkpoint, load_training_state, refuse_other_experiment, save_training_checkpoint
from vla.config import ConfigError, ExperimentConfig
from vla.rl import rft
from vla.rl.td3 import ResidualTD3
from vla.train.optim_state import optimizer_from_tensors, optimizer_to_tensors


def write_log(path: Path, history: list[dict]) -> None:
    """The log mirrors the checkpointed history (rewritten atomically), so a kill between the two
    can neither lose nor repeat an iteration's row."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    tmp.replace(path)


def save_state(root: Path, policy, optimizer, state: dict, offpolicy: ResidualTD3 | None = None,
          replay: rft.SuccessReplay | None = None, gathered: tuple[dict, dict] | None = None) -> Path:
    """gathered: rl.fsdp's optimizer state, gathered whole (policy is then the acting copy)."""
    if offpolicy is not None:  # critics, targets, their optimizers and the replay buffer
        tensors, td3_meta = offpolicy.state()
        meta = {"td3": td3_meta}
    else:
        tensors, opt_meta = gathered if gathered is not None else optimizer_to_tensors(optimizer)
        tensors, meta = dict(tensors), {"optimizer": opt_meta}
    if replay is not None:  # RFT's kept successes
        replay_tensors, meta["rft_replay"] = replay.state()
        tensors.update(replay_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    return save_training_checkpoint(root, state["iteration"], policy, tensors, {**state, **meta}, keep_last=2)


# what may change when an RL run resumes: how long it runs, where and on how many workers/envs, and the BC-only
# settings RL never reads. Anything else (the algorithm, its rates, rewards, the before/after evaluation set)
# is another experiment: its "after" would be compared with a "before" of other settings.
# (a residual's base checkpoint path may be spelled another way: the run's resolved source checkpoint is compared)
RL_RESUMABLE = ("output_dir", "device", "rl.iterations", "rl.workers", "rl.batched_envs", "rl.eval_every",
                "rl.torch_threads", "rl.ray", "rl.ray_actors", "train.", "data.dataset", "data.cache_in_memory", "eval.",
                "head.residual.base_checkpoint")


def check_resumable(checkpoint: Path, cfg: ExperimentConfig) -> None:
    refuse_other_experiment(checkpoint, cfg, RL_RESUMABLE, "an RL run", "its weights and its before-evaluation",
                            "remove that directory to start over")


def resume_state(root: Path, policy, optimizer, offpolicy: ResidualTD3 | None = None,
            replay: rft.SuccessReplay | None = None, held: dict | None = None, source: str | None = None) -> dict:
    """The last checkpoint's weights into `policy` and its optimizer state into `optimizer` (or, with
    no optimizer yet, rl.fsdp's, into `held`). `source`: the (resolved) checkpoint this run starts from; a
    directory holding a run started from another one is refused."""
    state = {"iteration": 0, "history": [], "evals": {}, "source": source}
    last = latest_checkpoint(root)
    if last is None:
        return state
    check_resumable(last, policy.cfg)
    tensors, saved = load_training_state(last)
    started = saved.get("source")
    if source is not None and started is not None and started != source:
        raise ConfigError(f"{policy.cfg.output_dir} holds an RL run started from {started}; this one starts from "
                          f"{source}: resuming would report its weights and before-evaluation as this checkpoint's. "
                          "Give a new output_dir=, or remove that directory to start over")
    from safetensors.torch import load_model

    missing, unexpected = load_model(policy, str(last / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ConfigError(f"cannot resume RL from {last}: weights do not match ({missing[:3]}, {unexpected[:3]})")
    if offpolicy is not None:
        offpolicy.load_state(tensors, saved.pop("td3"))
    elif optimizer is None:
        held.update(tensors={k: v for k, v in tensors.items() if k.startswith("optim/")}, meta=saved.pop("optimizer"))
    else:
        optimizer_from_tensors(optimizer, tensors, saved.pop("optimizer"))
    replay_meta = saved.pop("rft_replay", None)
    if replay is not None:
        if replay_meta is None:
            raise ConfigError(f"cannot resume RL from {last} with rl.rft_replay={replay.capacity}: the run was "
                              "started without a success replay")
        replay.load(tensors, replay_meta)
    torch.set_rng_state(tensors["rng/torch"])
    print(f"[rl] resumed from {last}", flush=True)
    return {**state, **saved}
