"""How many episodes one RL update needs at a checkpoint: the gradient noise scale of its policy gradient.

McCandlish et al. (2018, "An empirical model of large-batch training") define the simple noise scale
B = tr(Sigma) / |G|^2: G is the true gradient, Sigma the covariance of the gradient one sample
contributes. A batch of b samples has gradient G + noise of variance tr(Sigma) / b, so below
b ~ B a step is mostly noise (its expected cosine with G is about 1 / sqrt(1 + B / b)), and Adam,
which normalizes the step's size, then takes full-size steps in mostly random directions: the
drift the README's RL runs show at 16-64 episodes per update. Above B, larger batches buy little.

The sample here is a GRPO group (its episodes share a scene, and its normalized advantages depend on
each other), so every estimate is per group and converted to episodes by the group size. Two
baselines are measured on the same rollouts: `group` (GRPO's: return normalized within the group,
all-success or all-failure groups contribute nothing) and `batch` (return normalized over every
episode of the batch, what a critic-free PPO would use). Every number follows from the Gram matrix
of the per-episode gradients, so each baseline costs no extra backward pass.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vla.config import ConfigError
from vla.devices import pick_device
from vla.rl.buffer import flatten
from vla.rl.grpo import group_advantages
from vla.rl.objective import ratio_scale
from vla.rl.rollout import EpisodeRollout, apply_step_penalty

BATCHES = (16, 64, 256, 1024, 4096)  # episodes per update reported in the "gradient quality" columns
MAX_GRADIENT_BYTES = 8 * 2**30  # per-episode gradients are held in memory to form their Gram matrix
GRAM_FILE = "episode_gram.safetensors"


@dataclass
class NoiseScale:
    units: int  # independent samples (groups) the estimate rests on
    signal: float  # |G|^2, unbiased: the squared norm of the mean gradient of one unit
    noise: float  # tr(Sigma): the summed variance of one unit's gradient
    scale: float  # B = noise / signal in units (inf when no signal is detected above the noise)
    ci90: tuple[float, float]  # bootstrap over units (5th and 95th percentiles of B)
    split_cosine: float  # mean cosine between the gradients of two random halves of the units


def noise_scale(gram: np.ndarray, rng: np.random.Generator, resamples: int = 2000, splits: int = 200) -> NoiseScale:
    """B and its parts from the Gram matrix K[i, j] = g_i . g_j of U per-unit gradients."""
    units = len(gram)
    if units < 4 or gram.shape != (units, units):
        raise ValueError(f"need a square Gram matrix of at least 4 units, got shape {gram.shape}")
    signal, noise = _signal_noise(gram)
    # bootstrap over units. The signal is the mean off-diagonal entry of the Gram matrix (an unbiased
    # U-statistic); in a resample, pairs of two copies of one unit would put |g_i|^2 into it, so they are left out
    boot = []
    for _ in range(resamples):
        pick = rng.integers(units, size=units)
        distinct = pick[:, None] != pick[None, :]
        sub = gram[np.ix_(pick, pick)]
        s = sub[distinct].mean()
        boot.append((np.diag(sub).mean() - s) / s if s > 0 else np.inf)
    cosines = []
    for _ in range(splits):
        order = rng.permutation(units)
        a, b = order[: units // 2], order[units // 2:]
        ab, aa, bb = gram[np.ix_(a, b)].sum(), gram[np.ix_(a, a)].sum(), gram[np.ix_(b, b)].sum()
        cosines.append(ab / np.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0)
    boot = np.sort(boot)  # inf (no signal in a resample) sorts last
    low, high = boot[int(0.05 * resamples)], boot[int(0.95 * resamples) - 1]
    return NoiseScale(units, float(signal), float(noise), float(noise / signal) if signal > 0 else float("inf"),
                      (float(low), float(high)), float(np.mean(cosines)))


def _signal_noise(gram: np.ndarray) -> tuple[float, float]:
    """(unbiased |G|^2, unbiased tr Sigma) from the Gram matrix of U samples: the mean off-diagonal
    entry estimates g_i . g_j = |G|^2 for independent i != j, the mean diagonal one E|g|^2 = tr Sigma + |G|^2."""
    units = len(gram)
    signal = (gram.sum() - np.trace(gram)) / (units * (units - 1))
    return signal, np.trace(gram) / units - signal


def step_cosine(scale: float, batch: float) -> float:
    """Expected cosine between a batch's gradient and the true one: 1 / sqrt(1 + B / b)."""
    return 0.0 if not np.isfinite(scale) else float(1.0 / np.sqrt(1.0 + scale / batch))


def advantages(groups: np.ndarray, returns: np.ndarray, baseline: str, filter_groups: bool = True) -> np.ndarray:
    """One advantage per episode (episode i in group groups[i] returned returns[i]): `group` = GRPO's
    (vla.rl.grpo), `batch` = normalized over all episodes."""
    if baseline == "batch":
        return (returns - returns.mean()) / (returns.std() + 1e-6)
    if baseline != "group":
        raise ValueError(f"baseline must be group or batch, got {baseline!r}")
    return group_advantages(groups, returns, filter_groups)[0]


def parameter_groups(policy) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters RL updates, as the optimizer groups them (the critic excluded: it follows no policy gradient)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"actor": [], "temperature": []}
    for name, p in policy.named_parameters():
        if not p.requires_grad or name.startswith("value_head."):
            continue
        groups["temperature" if name.endswith("log_temperature") else "actor"].append(p)
    return {k: v for k, v in groups.items() if v}


def episode_gradients(policy, episodes: list[EpisodeRollout], params: dict[str, list[torch.nn.Parameter]]
                      ) -> dict[str, torch.Tensor]:
    """Per parameter group, one row per episode: the gradient of its decisions' mean chunk log-prob
    (per action dimension, as `rl.log_ratio=per_dim` scales it). GRPO's loss weighs every episode
    the same however many decisions it took, so an episode's share is this row times its advantage."""
    scale = ratio_scale(policy.cfg.rl, policy.cfg.head.chunk_size, policy.cfg.head.action_dim)
    sizes = {k: sum(p.numel() for p in ps) for k, ps in params.items()}
    needed = 4 * len(episodes) * sum(sizes.values())
    if needed > MAX_GRADIENT_BYTES:
        raise ConfigError(f"{len(episodes)} episodes x {sum(sizes.values()):,} trainable parameters need "
                          f"{needed / 2**30:.1f} GiB of per-episode gradients (limit {MAX_GRADIENT_BYTES / 2**30:.0f}); "
                          f"use fewer rl.episodes_per_iter or LoRA (backbone.lora_rank)")
    rows = {k: torch.zeros(len(episodes), n) for k, n in sizes.items()}
    policy.eval()  # no dropout: the log-prob must be the one that sampled
    for i, episode in enumerate(episodes):
        if not episode.decisions:
            continue
        batch = flatten([episode], [np.zeros(len(episode.decisions))], [np.zeros(len(episode.decisions))])
        policy.zero_grad(set_to_none=True)
        prefix = policy.build_prefix(batch.images, batch.states, batch.instructions)
        log_prob, _ = policy.head.evaluate(prefix, {k: v.to(policy.device) for k, v in batch.records.items()})
        (log_prob.mean() / scale).backward()
        for k, ps in params.items():
            rows[k][i] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).cpu()
                                    for p in ps])
    policy.zero_grad(set_to_none=True)
    return rows


def unit_gram(episode_gram: np.ndarray, groups: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """Gram matrix of the groups' gradients g_u = sum over its episodes of A_e h_e, from that of the h_e."""
    ids = np.unique(groups)
    mix = (groups[None, :] == ids[:, None]) * advantage[None, :]
    return mix @ episode_gram @ mix.T


def summarize(grams: dict[str, np.ndarray], groups: np.ndarray, returns: dict[str, np.ndarray], group_size: int,
              filter_groups: bool = True, seed: int = 0) -> list[dict]:
    """Per reward (returns: its name -> one return per episode), baseline and parameter group: B (in
    groups and in episodes), its interval, the split-half cosine and the expected step cosine at
    BATCHES episodes per update."""
    results = []
    for reward, episode_returns in returns.items():
        for baseline in ("group", "batch"):
            adv = advantages(groups, episode_returns, baseline, filter_groups)
            for name, gram in grams.items():
                # every row its own bootstrap stream: a row's interval does not depend on which rows precede it
                ns = noise_scale(unit_gram(gram, groups, adv), np.random.default_rng(seed))
                scale = ns.scale * group_size
                results.append({"reward": reward, "baseline": baseline, "parameters": name, **asdict(ns),
                                "scale_episodes": scale, "ci90_episodes": [c * group_size for c in ns.ci90],
                                "step_cosine": {str(b): step_cosine(scale, b) for b in BATCHES}})
    return results


def measure(ckpt: str | Path, recipe: str | None, overrides: list[str], out: str | Path | None = None,
            config_file: str | Path | None = None) -> dict:
    """Rolls out one GRPO iteration's plan (rl.episodes_per_iter episodes in groups of rl.group_size) with
    the checkpoint's RL sampler and reports the noise scale of each parameter group under both baselines."""
    from vla.rl.prepare import check_config, make_pool, plan_iteration, prepare_policy, rollout_generator, \
        rollout_tasks, set_rollout_threads

    policy = prepare_policy(ckpt, recipe, [*overrides, "rl.algo=grpo"], config_file)
    cfg, rl = policy.cfg, policy.cfg.rl
    check_config(cfg)
    if rl.episodes_per_iter // rl.group_size < 4:
        raise ConfigError(f"the estimate needs at least 4 groups: rl.episodes_per_iter={rl.episodes_per_iter} "
                          f"holds {rl.episodes_per_iter // rl.group_size} of rl.group_size={rl.group_size}")
    # before the rollouts, so that an unwritable path fails now rather than after them
    out = Path(out) if out is not None else Path(ckpt).resolve().parent.parent / "noise_scale"
    out.mkdir(parents=True, exist_ok=True)
    policy.to(pick_device(cfg.device))
    set_rollout_threads(rl)
    tasks, init_states = rollout_tasks(cfg)
    plan = plan_iteration(cfg, tasks, init_states, 1)
    pool = make_pool(policy, cfg)
    tic = time.perf_counter()
    try:
        episodes, stats = pool.collect(policy, plan, rollout_generator(rl, 1))
    finally:
        pool.close()
    rollout_s = time.perf_counter() - tic
    apply_step_penalty(episodes, rl.step_penalty)  # the returns `vla rl` would learn from
    print(f"[rl-noise] {len(episodes)} episodes ({sum(e.success for e in episodes)} successes) in {rollout_s:.0f} s; "
          f"one backward pass per episode next", flush=True)
    tic = time.perf_counter()
    params = parameter_groups(policy)
    rows = episode_gradients(policy, episodes, params)
    grams = {name: (g @ g.T).double().numpy() for name, g in rows.items()}
    meta = {"checkpoint": str(ckpt), "episodes": len(episodes), "group_size": rl.group_size,
            "successes": int(sum(e.success for e in episodes)), "reward": _reward_name(rl.reward, rl.step_penalty),
            "filter_groups": rl.filter_groups,
            "seed": rl.seed, "numel": {name: int(g.shape[1]) for name, g in rows.items()},
            "rollout_s": round(rollout_s, 1), "gradient_s": round(time.perf_counter() - tic, 1),
            "env_frames": stats.env_steps}
    # the rollouts reduced to what every estimate needs, so `vla rl-noise --from` recomputes without a simulator
    save_file({**{f"gram.{name}": torch.from_numpy(g) for name, g in grams.items()},
               "groups": torch.tensor([e.plan.group for e in episodes]),
               "returns": torch.tensor([e.ret for e in episodes], dtype=torch.float64),
               "success": torch.tensor([e.success for e in episodes])}, str(out / GRAM_FILE))
    (out / "noise_scale.json").write_text(json.dumps(meta, indent=2))
    return recompute(out)


def recompute(out: str | Path) -> dict:
    """The report from a measurement's saved Gram matrices (`vla rl-noise --from DIR`)."""
    out = Path(out)
    if not (out / GRAM_FILE).exists():
        raise FileNotFoundError(f"{out / GRAM_FILE} not found: --from takes the output directory of a `vla rl-noise` run")
    saved = load_file(str(out / GRAM_FILE))
    meta = json.loads((out / "noise_scale.json").read_text())
    groups, returns, success = saved["groups"].numpy(), saved["returns"].numpy(), saved["success"].numpy()
    grams = {k.removeprefix("gram."): v.numpy() for k, v in saved.items() if k.startswith("gram.")}
    meta["groups_all_same"] = int(sum(len(set(success[groups == g])) == 1 for g in np.unique(groups)))
    meta["return_by_outcome"] = {outcome: [float(returns[success == won].mean()), float(returns[success == won].std())]
                                 for outcome, won in (("success", 1), ("failure", 0)) if (success == won).any()}
    # a shaped reward is also scored against plain success on the very same episodes and gradients: which
    # of the two carries more signal per episode, from one rollout
    rewards = {meta["reward"]: returns, **({} if meta["reward"] == "sparse" else {"success": success.astype(np.float64)})}
    meta["results"] = [{**r, "numel": meta["numel"][r["parameters"]]} for r in
                       summarize(grams, groups, rewards, meta["group_size"], meta["filter_groups"], meta["seed"])]
    (out / "noise_scale.json").write_text(json.dumps(meta, indent=2))
    (out / "noise_scale.md").write_text(format_report(meta))
    return meta


def format_report(report: dict) -> str:
    """The markdown table `vla rl-noise` prints and writes."""
    head = (f"{report['episodes']} episodes in groups of {report['group_size']} ({report['successes']} successes, "
            f"{report['groups_all_same']} groups all-success or all-failure), {report['reward']} reward, from "
            f"{report['checkpoint']}; return (mean +- sd) "
            + ", ".join(f"{k} {m:.3g} +- {sd:.2g}" for k, (m, sd) in report["return_by_outcome"].items()) + "\n\n")
    cols = " | ".join(f"cos @ {b}" for b in BATCHES)
    lines = [f"| reward | baseline | parameters | B (episodes) | 90% CI | split-half cosine | {cols} |",
             "|---|---|---|---|---|---|" + "---|" * len(BATCHES)]
    for r in report["results"]:
        low, high = r["ci90_episodes"]
        cos = " | ".join(f"{r['step_cosine'][str(b)]:.2f}" for b in BATCHES)
        lines.append(f"| {r['reward']} | {r['baseline']} | {r['parameters']} ({r['numel']:,}) | {_num(r['scale_episodes'])} | "
                     f"{_num(low)}-{_num(high)} | {r['split_cosine']:.2f} | {cos} |")
    return head + "\n".join(lines) + "\n"


def _reward_name(reward: str, step_penalty: float) -> str:
    return reward if not step_penalty else f"{reward}, step penalty {step_penalty:g}"


def _num(x: float) -> str:
    return "inf" if not np.isfinite(x) else f"{x:,.0f}"
