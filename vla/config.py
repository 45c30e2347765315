"""Typed experiment configuration: dataclasses, YAML files and `a.b=value` overrides.

Resolution order (later wins): dataclass defaults -> policy recipe -> sim YAML -> --config YAML ->
command-line overrides. Every key is checked against the dataclasses; an unknown key is an error
that lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class BackboneConfig:
    name: str = "tiny_paligemma"  # preset name, see vla.backbones.registry
    pretrained: str | None = None  # HF repo id or local dir; None = random weights from the preset's config
    image_size: int = 64  # model input resolution (square)
    freeze_vision: bool = False
    lora_rank: int = 0  # 0 = full fine-tuning; >0 wraps the language model with peft LoRA
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    dtype: str = "float32"  # weights dtype when loading pretrained: float32 | bfloat16


@dataclass
class FlowConfig:
    """pi0-style flow matching: x_t = t * noise + (1 - t) * actions, the expert regresses noise - actions."""

    steps: int = 10  # Euler steps from t=1 (noise) to t=0 (actions)
    time_beta: list[float] = field(default_factory=lambda: [1.5, 1.0])  # training t ~ Beta(a, b), pi0's choice
    rl_noise: str = "sde"  # how RL makes each Euler step a Gaussian: sde (Flow-SDE) | noise (Flow-Noise, learned std)
    sde_noise_level: float = 0.5  # Flow-SDE: sigma_t = level * sqrt(t / (1 - t))
    noise_std_range: list[float] = field(default_factory=lambda: [0.08, 0.16])  # Flow-Noise: learned std bounds
    # which Euler steps RL makes Gaussian: all | one (one random step per chunk, the others plain ODE steps;
    # the log-prob is that step's alone, re-scored with one expert pass)
    rl_steps: str = "all"


@dataclass
class DiffusionConfig:
    """Denoising with diffusers' schedulers (no schedule is written here)."""

    train_timesteps: int = 100
    inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    prediction: str = "epsilon"  # epsilon | sample
    rl_eta: float = 1.0  # DDIM eta of the stochastic chain RL samples (1 = DDPM-like posterior noise)
    rl_min_std: float = 0.1  # DPPO's floor on each denoising step's std, keeps log-probs finite


@dataclass
class ResidualConfig:
    """A Gaussian residual over a frozen base policy (ResiP / policy decorator)."""

    base_type: str = "oft"  # head the base policy uses (any head type except residual)
    base_checkpoint: str | None = None  # a trained checkpoint to freeze; None = BC trains the base in the same run
    scale: float = 0.1  # executed action = base + scale * residual (normalized units)
    init_log_std: float = -1.0
    hidden_dim: int = 256
    # bound on the residual mean, in residual units (limit * tanh(raw / limit)); None = unbounded. Off-policy RL
    # needs one: an unbounded actor climbs the critic's extrapolation outside the data and Q diverges
    max_residual: float | None = None


@dataclass
class HeadConfig:
    type: str = "oft"  # oft | tokenized | flow | diffusion | residual
    chunk_size: int = 8
    action_dim: int = 7
    hidden_dim: int = 256  # width of the regression MLP (oft)
    num_bins: int = 256  # token outputs: uniform bins on [-1, 1]
    # token outputs' vocabulary ids: auto = the backbone's pretrained action tokens when it has them (openvla-7b:
    # 255 bins counting down from id 31999, so fine-tuning starts from its learned rows), else the last ids;
    # end = always the last num_bins ids (new tokens, any num_bins)
    token_ids: str = "auto"  # auto | end
    oft_output: str = "l1"  # oft: l1 (continuous regression) | tokens (bin tokens decoded in parallel)
    rl_temperature: float = 1.0  # token heads: sampling temperature for RL exploration (and its log-probs)
    # token heads: RL learns one temperature per action dimension (from rl_temperature), as Gaussian PPO
    # learns its log-std (vla/heads/temperature.py); its Adam rate is rl.temperature_lr
    learn_temperature: bool = False
    expert_width: int = 0  # flow/diffusion action expert width; 0 = half the backbone width
    value_head: bool = False  # a critic on the prefix features (PPO)
    # what eval, sweeps and serving act with: the head's deterministic sample (argmax bins, eta=0 DDIM,
    # the residual's mean) or its stochastic one, the very sampler RL optimizes (evaluate what RL trained)
    sampler: str = "deterministic"  # deterministic | stochastic
    flow: FlowConfig = field(default_factory=FlowConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    residual: ResidualConfig = field(default_factory=ResidualConfig)


@dataclass
class NormConfig:
    action: str = "q01_q99"  # q01_q99 | mean_std | identity
    state: str = "q01_q99"
    # action dims kept as they are (the gripper, already in {-1, +1}), as OpenVLA-OFT does
    action_skip_dims: list[int] = field(default_factory=lambda: [6])
    # q01_q99: a dimension whose q01 equals its q99 (one value in 98%+ of frames) is bounded by its min and max,
    # or its rare values clip away. false in checkpoints saved before this existed, which were trained without it
    narrow_min_max: bool = True


@dataclass
class PromptConfig:
    template: str = "In: What action should the robot take to {instruction}?\nOut:"
    max_tokens: int = 64


@dataclass
class DataConfig:
    dataset: str | None = None  # local dataset dir or Hub repo id; None = generate demos (see DemoConfig)
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    use_state: bool = True
    cache_in_memory: bool = True  # decode every frame once; right for small datasets
    augment_shift: int = 4  # random-shift augmentation in pixels at model resolution (0 = off)
    # refuse a 7-dim action whose last dimension is not a gripper in -1 open / +1 close (vla/data/gripper_check.py)
    check_gripper: bool = True
    # where the dataset keeps its inputs, when not in the LIBERO layout (vla/data/features.py): camera role ->
    # key, e.g. {agentview: image, wrist: wrist_image}; the state and action keys
    camera_keys: dict[str, str] = field(default_factory=dict)
    state_key: str = "observation.state"
    action_key: str = "action"
    # the control rate the dataset's actions were recorded at (Hz), kept in the checkpoint so `vla deploy` acts at it;
    # None = the dataset's fps (set it where that is nominal: openpi's LIBERO conversion says 10 for 20 Hz control)
    fps: int | None = None
    # whole episodes held out of training (a seeded draw) and scored at every checkpoint (vla/train/validation.py)
    val_episodes: int = 0


@dataclass
class DemoConfig:
    suite: str = "libero_spatial"
    tasks: list[int] = field(default_factory=lambda: [0])
    episodes_per_task: int = 20
    image_size: int = 128  # render resolution
    root: str = "runs/demos"  # generated datasets are cached here, one folder per (suite, tasks, count, size)


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 20
    save_every: int = 500
    keep_last: int = 2  # step_* checkpoints kept (the newest); 0 keeps them all
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    torch_threads: int = 0  # 0 = leave torch's default
    tensorboard: bool = False
    wandb: bool = False
    resume: bool = True  # continue from the last checkpoint in output_dir when there is one
    val_every: int = 0  # steps between held-out scores (data.val_episodes > 0); 0 = at every checkpoint


@dataclass
class EvalConfig:
    episodes: int = 20
    first_init_state: int = 0  # episodes use the task's fixed init states first_init_state, first_init_state+1, ...
    replan_steps: int = 8  # actions executed open-loop from each chunk
    max_steps: int | None = None  # None = the suite's standard value
    seed: int = 7
    enabled: bool = True


@dataclass
class TD3Config:
    """rl.algo=td3: off-policy residual RL (TD3, n-step returns) over cached frozen features."""

    n_step: int = 3  # decisions summed before bootstrapping
    replay_size: int = 100_000  # decisions kept
    batch_size: int = 256
    updates_per_iter: int = 200  # critic steps per iteration (actor: every policy_delay-th)
    policy_delay: int = 2
    tau: float = 0.005  # Polyak rate of the target networks
    target_noise: float = 0.2  # target policy smoothing, residual units
    noise_clip: float = 0.5
    residual_l2: float = 0.01  # pull of the residual mean toward zero (the base stays the prior)
    critic_width: int = 256


@dataclass
class RLConfig:
    """Online RL from a BC checkpoint (`vla rl`, `make rl`). Decisions are whole action chunks:
    the head's log-probability covers the chunk, so RL executes every action of it."""

    algo: str = "ppo"  # ppo | grpo | rft (success-filtered self-imitation) | td3 (off-policy, residual head only)
    iterations: int = 20  # rollout + update rounds
    workers: int = 2  # env worker processes
    # > 0: SIM=maniskill rollouts on this many envs simulated in one process (ManiSkill's GPU backend when CUDA
    # is present, its CPU one otherwise, which holds 1) instead of rl.workers processes; one task per run
    batched_envs: int = 0
    tasks: list[int] = field(default_factory=list)  # task ids in demos.suite; empty = demos.tasks
    init_states: list[int] = field(default_factory=list)  # init states rolled out in RL; empty = all 50
    # reset seeds of RL rollouts (LIBERO re-draws fixture placements per reset from it); empty = a fresh seed per
    # episode (per group in GRPO), so RL sees the scene variety evaluation does, not one placement per init state
    rollout_seeds: list[int] = field(default_factory=list)
    episodes_per_iter: int = 16  # GRPO: a multiple of group_size
    group_size: int = 4  # GRPO: episodes from the same (task, init state)
    max_steps: int | None = None  # None = the suite's standard value
    # sparse: 1 on the success step; dense: the simulator's shaped reward summed over each chunk (LIBERO:
    # success + a potential-based progress term for pick-and-place goals; ManiSkill: normalized_dense)
    reward: str = "sparse"
    step_penalty: float = 0.0  # optional shaping: reward -= this per chunk (sparse success reward is 1)
    epochs: int = 2  # passes over each rollout
    minibatch_size: int = 32  # decisions per gradient step
    lr: float = 1e-5  # policy (actor) learning rate
    critic_lr: float = 3e-4
    temperature_lr: float = 0.01  # head.learn_temperature: Adam rate of the per-dimension log-temperatures
    max_grad_norm: float = 1.0
    # trust region: end the update when a minibatch's chunk-level KL to the sampling policy exceeds
    # 1.5x this (nats per chunk decision); null = no limit (clipping only)
    target_kl: float | None = 0.05
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float | None = None  # None: 0.2 for PPO, 0.28 for GRPO (asymmetric "clip-higher")
    log_ratio: str = "per_dim"  # per_dim: chunk log-ratio / (chunk_size * action_dim) (GSPO-style) | chunk
    # re-score every decision with the learner's weights before the update and clip the ratio against that score
    # (decoupled PPO), the gap to the sampling log-prob entering as an importance weight truncated at
    # rl.behaviour_weight_cap: the sampling pass and the update's pass round differently in bf16 (the token heads
    # sample by KV-cached decoding, re-score in one parallel pass); null = on when any weight is not float32
    rescore: bool | None = None
    behaviour_weight_cap: float = 2.0
    gamma: float = 0.99  # per chunk
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    kl_coef: float = 0.0  # > 0: k3 KL penalty to the starting (BC) policy, scored by a frozen copy
    critic_warmup: int = 0  # PPO: first iterations train only the critic
    filter_groups: bool = True  # GRPO: skip groups that are all success or all failure
    rft_replay: int = 0  # RFT: successful decisions kept over iterations and trained on (0 = this iteration's only)
    eval_episodes_per_task: int = 50  # before/after evaluation: init states 0.. on rl.tasks (same set both times)
    eval_seeds: list[int] = field(default_factory=lambda: [7])  # one pass over those init states per seed
    eval_every: int = 0  # also evaluate every N iterations (0 = before and after only)
    seed: int = 0
    torch_threads: int = 0  # 0 = the cores the env workers leave free (at least 1): oversubscribed torch crawls
    overlap: bool = False  # pipelined: the next rollout runs (on a copy of the weights) while this batch trains
    # under torchrun: the learner's weights, gradients and AdamW state sharded over the replicas (FSDP2); each
    # replica acts with an unsharded copy of the weights (vla.rl.sharded)
    fsdp: bool = False
    # rollouts on a Ray cluster (auto | <head ip>:6379; null = local env workers): rollout actors of rl.workers
    # env processes each, rl.ray_actors of them (0 = one per node that fits one); the learner stays here
    ray: str | None = None
    ray_actors: int = 0
    td3: TD3Config = field(default_factory=TD3Config)


@dataclass
class ExperimentConfig:
    policy: str = "openvla_oft"
    sim: str = "libero"
    output_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    demos: DemoConfig = field(default_factory=DemoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rl: RLConfig = field(default_factory=RLConfig)


class ConfigError(ValueError):
    """A config key or value that does not fit the dataclasses."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert a YAML value to the annotated type, with an error naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not fit type {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {sorted(_field_types(tp))}, got {value!r}")
        return merge(tp(), value, path)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, f"{path} key"): _coerce(v, value_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def merge(obj: Any, updates: dict[str, Any], path: str = "") -> Any:
    """Return a copy of dataclass `obj` with `updates` (a nested dict) applied."""
    types_ = _field_types(type(obj))
    changes = {}
    for key, value in updates.items():
        full = f"{path}.{key}" if path else key
        if key not in types_:
            raise ConfigError(f"unknown config key '{full}'; valid keys here: {', '.join(sorted(types_))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, full)
        else:
            changes[key] = _coerce(value, types_[key], full)
    return dataclasses.replace(obj, **changes)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['train.steps=10', 'data.cameras=[agentview]'] -> nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': the value is not valid YAML ({getattr(err, 'problem', err)}); a "
                              f"string holding ': ' or ' #' needs inner quotes, e.g. {key}='\"...\"'") from err
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (or nested dicts)."""
    da = to_dict(a) if dataclasses.is_dataclass(a) else a
    db = to_dict(b) if dataclasses.is_dataclass(b) else b
    keys: list[str] = []
    for k in sorted(set(da) | set(db)):
        va, vb = da.get(k), db.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def combine_updates(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """Two nested update dicts as one, `then`'s values winning: a --config file's keys under the command line's."""
    out = dict(first)
    for k, v in then.items():
        out[k] = combine_updates(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict[str, Any]) -> ExperimentConfig:
    return merge(ExperimentConfig(), data)


def save_json(cfg: Any, path: Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2))
