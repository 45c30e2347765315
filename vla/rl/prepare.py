"""What an RL run starts from: the BC checkpoint rebuilt with the RL settings, the checks that refuse
a bad configuration before any env worker or evaluation starts, each iteration's episode plan, and
what rolls it out (the env pool, torch's threads beside it, the sampling noise)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sim.base import REWARD_MODES
from vla.checkpoint import load_policy
from vla.config import ConfigError, ExperimentConfig, RLConfig, combine_updates, load_yaml, merge, parse_overrides
from vla.devices import Dist
from vla.model import Policy
from vla.rl import grpo, ppo, rft
from vla.rl.rollout import EnvPool, PlannedEpisode, draw_seed

ALGOS = {"ppo": ppo, "grpo": grpo, "rft": rft, "td3": None}  # td3: off-policy, its own learner (vla.rl.td3)
# parameters a BC checkpoint may lack: a fresh critic, Flow-Noise's std, a residual's own net, a learned temperature
FRESH = ("value_head.", "head.noise_std.", "head.mean_net.", "head.log_std", "head.temperature.")


def prepare_policy(ckpt: str | Path, recipe: str | None, overrides: list[str],
                   config_file: str | Path | None = None) -> Policy:
    """The BC checkpoint rebuilt with the RL settings (`rl.*`, head RL knobs, a critic for PPO): the YAML
    `config_file`'s keys, then `overrides` over them. recipe 'residual' over a non-residual checkpoint freezes
    it as the base of a new residual."""
    updates = combine_updates(load_yaml(config_file) if config_file else {}, parse_overrides(overrides))
    base = load_policy(ckpt, updates.get("device"))  # device=cpu: a checkpoint trained on a GPU, on a CPU machine
    cfg = merge(base.cfg, updates)
    if cfg.sim != base.cfg.sim:
        raise ConfigError(f"{ckpt} was trained in {base.cfg.sim}; RL must run there too: --sim {base.cfg.sim} "
                          f"(make rl SIM={base.cfg.sim}), got {cfg.sim}")
    if cfg.norm != base.cfg.norm:  # the policy would train with the checkpoint's transform but save the new one
        raise ConfigError(f"norm.* is fixed by the BC checkpoint its statistics and weights were trained with "
                          f"({base.cfg.norm}); RL cannot change it (got {cfg.norm})")
    if cfg.rl.algo not in ALGOS:
        raise ConfigError(f"rl.algo '{cfg.rl.algo}' is unknown; valid: {', '.join(ALGOS)}")
    if cfg.rl.algo == "ppo":
        cfg = merge(cfg, {"head": {"value_head": True}})
    if "output_dir" not in updates:  # never write RL checkpoints where the BC run resumes from
        cfg = merge(cfg, {"output_dir": f"{cfg.output_dir.rstrip('/')}_rl_{cfg.rl.algo}"})
    if recipe == "residual" and base.cfg.head.type != "residual":
        from vla.residual_init import residual_from_base

        from policies import get_recipe

        # the residual recipe's own settings (scale, bound), then the user's overrides over them
        recipe_residual = {k: v for k, v in get_recipe("residual")["head"]["residual"].items() if k != "base_type"}
        cfg = merge(merge(cfg, {"head": {"residual": recipe_residual}}), updates)
        cfg = merge(cfg, {"policy": "residual", "head": {"type": "residual", "residual": {"base_checkpoint": str(ckpt)}}})
        policy = residual_from_base(cfg)  # keeps cfg.rl; base weights frozen
    else:
        policy = Policy(cfg, base.normalizer, base.state_dim)
        from vla.train.lora import apply_lora

        # backbone.lora_rank=N over a checkpoint trained without LoRA: the trained weights load first, then
        # fresh adapters wrap them (LoRA B starts at zero, so the policy starts exactly as trained) and the
        # rest of the backbone freezes: LoRA RL for backbones too large to fine-tune whole
        fresh_lora = cfg.backbone.lora_rank > 0 and base.cfg.backbone.lora_rank == 0
        if not fresh_lora:
            apply_lora(policy, cfg.backbone)
        missing, unexpected = policy.load_state_dict(base.state_dict(), strict=False)
        if fresh_lora:
            apply_lora(policy, cfg.backbone)
        missing = [k for k in missing if not k.startswith(FRESH)]
        if missing or unexpected:
            raise ConfigError(f"overrides change the trained policy's structure: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}; only rl.* and head RL settings may change")
        if cfg.head.type == "residual":
            policy.freeze_base()
    if policy.head.rl_quantity.startswith("none"):
        raise ConfigError(policy.head._no_rl())
    from vla.train.checkpointing import enable_gradient_checkpointing
    from vla.train.precision import refuse_low_precision_training

    enable_gradient_checkpointing(policy, cfg)  # the update's backward stores one activation per layer, not all

    refuse_low_precision_training(policy)
    return policy


def plan_iteration(cfg: ExperimentConfig, tasks: list[tuple[str, int]], init_states: list[int], it: int) -> list[PlannedEpisode]:
    rl = cfg.rl
    rng = np.random.default_rng([rl.seed, it])
    if rl.algo == "grpo":
        return grpo.plan_groups(tasks, init_states, rl.episodes_per_iter // rl.group_size, rl.group_size, rng,
                                rl.rollout_seeds)
    plan = []
    for k in range(rl.episodes_per_iter):
        suite, task = tasks[rng.integers(len(tasks))]
        init = int(init_states[rng.integers(len(init_states))])
        plan.append(PlannedEpisode(suite, task, init, k, draw_seed(rng, rl.rollout_seeds)))
    return plan


def rollout_tasks(cfg: ExperimentConfig) -> tuple[list[tuple[str, int]], list[int]]:
    """The (suite, task) pairs RL plays and the init states its episodes start from; refuses a reward
    those tasks cannot give."""
    import sim

    tasks = [(cfg.demos.suite, t) for t in (cfg.rl.tasks or cfg.demos.tasks)]
    check_reward(cfg, tasks)
    return tasks, cfg.rl.init_states or list(range(sim.num_init_states(cfg.sim, *tasks[0])))


def set_rollout_threads(rl: RLConfig) -> None:
    # the env workers run while the policy samples; torch threads spinning on the same cores as the
    # simulators measured ~10x slower inference here than one thread
    torch.set_num_threads(rl.torch_threads or max(1, (os.cpu_count() or 1) - rl.workers))


def rollout_generator(rl: RLConfig, it: int, offset: int = 0) -> torch.Generator:
    """The sampling noise of iteration `it` (offset: a torchrun replica's own stream), so a resumed run redraws it."""
    return torch.Generator().manual_seed(rl.seed * 1_000_003 + it + offset)


def make_pool(policy: Policy, cfg: ExperimentConfig):
    """Local env workers, N envs in one ManiSkill simulation (rl.batched_envs), or rollout actors on a Ray
    cluster (rl.ray)."""
    rl = cfg.rl
    if rl.batched_envs:
        from vla.rl.batched_rollout import BatchedEnvPool

        return BatchedEnvPool(rl.batched_envs, cfg.demos.image_size, rl.max_steps, cfg.eval.seed, reward=rl.reward)
    if not rl.ray:
        return EnvPool(rl.workers, cfg.demos.image_size, cfg.sim, rl.max_steps, cfg.eval.seed, reward=rl.reward)
    if rl.ray_actors < 0:
        raise ConfigError(f"rl.ray_actors must be >= 0 (0 = one per node), got {rl.ray_actors}")
    from vla.rl.ray_rollout import RayEnvPool

    return RayEnvPool(policy, rl.ray, rl.ray_actors, rl.workers, cfg.demos.image_size, cfg.sim, rl.max_steps,
                      cfg.eval.seed, torch_threads=1, reward=rl.reward)


def check_config(cfg: ExperimentConfig) -> None:
    rl = cfg.rl
    if rl.iterations < 0 or rl.episodes_per_iter < 1 or rl.epochs < 1:
        raise ConfigError("need rl.iterations >= 0, rl.episodes_per_iter >= 1 and rl.epochs >= 1")
    if rl.algo == "grpo" and (rl.group_size < 2 or rl.episodes_per_iter % rl.group_size):
        raise ConfigError(f"GRPO needs rl.group_size >= 2 dividing rl.episodes_per_iter, got "
                          f"{rl.group_size} and {rl.episodes_per_iter}")
    if rl.rft_replay < 0 or (rl.rft_replay and rl.algo != "rft"):
        raise ConfigError(f"rl.rft_replay keeps successes for rl.algo=rft (a count >= 0); got {rl.rft_replay} "
                          f"with rl.algo={rl.algo}")
    if rl.algo == "td3" and cfg.head.type != "residual":
        raise ConfigError(f"rl.algo=td3 is off-policy residual RL: it needs POLICY=residual over a frozen base "
                          f"checkpoint, this policy's head is {cfg.head.type}")
    if rl.algo == "td3" and rl.overlap:
        raise ConfigError("rl.overlap pipelines on-policy updates; td3 already reuses old data (set rl.overlap=false)")
    if rl.rescore and rl.algo not in ("ppo", "grpo"):
        raise ConfigError(f"rl.rescore re-scores the clipped ratio's denominator (ppo, grpo); rl.algo={rl.algo} "
                          "takes no ratio: leave rl.rescore unset")
    if rl.behaviour_weight_cap < 1:
        raise ConfigError(f"rl.behaviour_weight_cap truncates importance weights from above and must be >= 1, got "
                          f"{rl.behaviour_weight_cap}")
    check_batched(cfg)


def check_batched(cfg: ExperimentConfig) -> None:
    rl = cfg.rl
    if rl.batched_envs < 0:
        raise ConfigError(f"rl.batched_envs must be >= 0 (0 = rl.workers env processes), got {rl.batched_envs}")
    if not rl.batched_envs:
        return
    if cfg.sim != "maniskill":
        raise ConfigError(f"rl.batched_envs runs ManiSkill's N-env simulation (SIM=maniskill); SIM={cfg.sim} rolls "
                          f"out on rl.workers env processes")
    if rl.ray:
        raise ConfigError("rl.ray places rollouts on a cluster's env workers; rl.batched_envs simulates them in "
                          "this process: use one or the other")
    if rl.batched_envs > 1 and not torch.cuda.is_available():
        raise ConfigError(f"rl.batched_envs={rl.batched_envs} needs CUDA (ManiSkill's GPU simulation); its CPU "
                          f"simulation holds one env per process: on a CPU use rl.workers (or rl.batched_envs=1)")


def check_reward(cfg: ExperimentConfig, tasks: list[tuple[str, int]]) -> None:
    """Refuse a reward mode the RL tasks cannot give before any env worker is built (in a worker the
    error would read as a simulator crash)."""
    if cfg.rl.reward not in REWARD_MODES:
        raise ConfigError(f"rl.reward must be one of {REWARD_MODES}, got {cfg.rl.reward!r}")
    if cfg.rl.reward == "dense" and cfg.sim == "libero":
        from sim.libero_progress import pick_place_goal

        for suite, task in tasks:
            try:
                pick_place_goal(suite, task)
            except ValueError as err:
                raise ConfigError(f"rl.reward=dense: {err}") from err


def check_replicas(cfg: ExperimentConfig, place: Dist) -> None:
    if place.world == 1:
        if cfg.rl.fsdp:
            raise ConfigError("rl.fsdp shards the learner over torchrun replicas: start it with "
                              "`torchrun --nproc_per_node N -m vla.cli rl ...` (N >= 2)")
        return
    if cfg.rl.fsdp and cfg.backbone.dtype != "float32":
        # FSDP2 flattens each unit's parameters into one dtype; the root unit holds the bf16 backbone's embeddings
        # beside the float32 head, projector and critic
        raise ConfigError(f"rl.fsdp needs backbone.dtype=float32 (got {cfg.backbone.dtype}): FSDP shards a unit's "
                          "parameters only when they share one dtype, and the head and critic are float32")
    if cfg.rl.fsdp and cfg.rl.overlap:
        raise ConfigError("rl.fsdp with rl.overlap is not wired in: the learner thread's FSDP collectives would "
                          "interleave with the rollout's; set one of them false")
    if cfg.rl.ray:
        raise ConfigError("rl.ray puts rollouts on a Ray cluster for one learner process; under torchrun every "
                          "replica rolls out on its own env workers: use one or the other")
    if cfg.rl.algo == "td3":
        raise ConfigError("rl.algo=td3 trains its small residual and critics in one process; run it without torchrun")
    if cfg.rl.batched_envs:
        # ManiSkill places its GPU simulation itself; one per rank on its own GPU is not wired in
        raise ConfigError("rl.batched_envs runs one GPU simulation in one process; under torchrun use rl.workers "
                          "env processes per replica, or one process with a larger rl.batched_envs")


