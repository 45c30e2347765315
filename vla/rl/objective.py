"""The update the on-policy algorithms share: epochs of minibatch steps on the clipped surrogate
objective, plus the critic (PPO), an entropy bonus and a KL penalty to the starting policy.

PPO and GRPO differ only in where advantages come from (GAE over a critic vs. group-normalized
returns) and their clip defaults; RFT (`vla.rl.rft`) keeps only successful episodes and maximizes
their chunks' likelihood instead of the clipped ratio; everything that touches gradients is here, once.

log-ratio per_dim: a chunk's log-probability sums over chunk_size x action_dim terms (times the
denoising steps for flow/diffusion), so the chunk ratio exp(sum) swings by orders of magnitude
after one small step. Dividing the chunk log-ratio by the number of action dims (the
length-normalized sequence ratio of GSPO) keeps ratios near 1 and clipping meaningful.

Why a KL stop as well: per_dim clipping bounds the *geometric mean* of 56+ per-dimension ratios, so
a step that stays inside it can still move the whole chunk's distribution a lot (a per-dim KL of
1e-3 is ~0.06-0.6 nats per chunk), and Adam's step size does not shrink with the 1/56 loss scale.
`rl.target_kl` measures the chunk-level KL of every minibatch against the sampling policy and ends
the update once it exceeds 1.5x the target (the early stop of standard PPO implementations).

rl.rescore (decoupled PPO, as verl's "recompute old log-prob" with a truncated importance weight): the
log-prob a decision was sampled with comes from the rollout's pass (KV-cached decoding for the token heads,
the copy of the weights acting one update behind with rl.overlap); the update scores it again, in another
order of floating-point operations. In float32 the two agree to ~1e-6; in bf16 they do not, and the first
minibatch's ratios would start off 1 by noise. Re-scored, the ratio is clipped against the learner's own score
at the update's start (the proximal policy) and each decision weighs exp(gap / scale) truncated at
rl.behaviour_weight_cap, the gap being proximal minus sampling log-prob on the ratio's scale.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from vla.config import RLConfig
from vla.rl.buffer import DecisionBatch
from vla.rl.distributed import GradSync, full_tensor, split_evenly
from vla.train.checkpointing import checkpointing_in_eval_mode


def clip_range(cfg: RLConfig) -> tuple[float, float]:
    high = cfg.clip_high if cfg.clip_high is not None else (0.28 if cfg.algo == "grpo" else 0.2)
    if not (0 < cfg.clip_low < 1 and high > 0):
        raise ValueError(f"need 0 < rl.clip_low < 1 and rl.clip_high > 0, got {cfg.clip_low}, {high}")
    return 1.0 - cfg.clip_low, 1.0 + high


def ratio_scale(cfg: RLConfig, chunk_size: int, action_dim: int) -> float:
    if cfg.log_ratio == "per_dim":
        return float(chunk_size * action_dim)
    if cfg.log_ratio == "chunk":
        return 1.0
    raise ValueError(f"rl.log_ratio must be per_dim or chunk, got {cfg.log_ratio!r}")


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float,
                      weights: torch.Tensor | None = None):
    """PPO's pessimistic objective (as a loss, optionally weighted per decision) and the fraction of
    clipped ratios."""
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(low, high) * advantages
    pessimistic = torch.minimum(unclipped, clipped)
    loss = -(pessimistic if weights is None else pessimistic * weights).mean()
    clip_frac = ((ratio < low) | (ratio > high)).float().mean()
    return loss, clip_frac


def rescoring(policy, cfg: RLConfig) -> bool:
    """Whether the update clips against a fresh score of its batch (rl.rescore; unset: when the backbone computes
    in a low precision, where the sampling pass and the update's pass round differently)."""
    if cfg.algo not in ("ppo", "grpo"):
        return False
    if cfg.rescore is not None:
        return bool(cfg.rescore)
    return any(p.dtype != torch.float32 for p in policy.parameters() if p.is_floating_point())


def reference_copy(policy):
    """A frozen copy of the starting policy for the KL penalty."""
    ref = copy.deepcopy(policy).eval()
    ref.requires_grad_(False)
    return ref


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = float(returns.var()) if len(returns) > 1 else 0.0
    return float("nan") if var == 0 else 1.0 - float((returns - values).var()) / var


def make_optimizer(policy, cfg: RLConfig) -> torch.optim.Optimizer:
    critic = list(policy.value_head.parameters()) if policy.value_head is not None else []
    # a learned sampling temperature: a handful of fresh numbers that want a rate of their own, like
    # Gaussian PPO's log-std (at the actor's 1e-5 they would take ~10^4 steps to move by 0.1)
    temperature = [p for n, p in policy.named_parameters() if n.endswith("log_temperature") and p.requires_grad]
    own = {id(p) for p in critic + temperature}
    actor = [p for p in policy.parameters() if p.requires_grad and id(p) not in own]
    if not actor:
        raise ValueError("the policy has no trainable actor parameters")
    groups = [{"params": actor, "lr": cfg.lr, "name": "actor"}]
    if critic:
        groups.append({"params": critic, "lr": cfg.critic_lr, "name": "critic"})
    if temperature:
        groups.append({"params": temperature, "lr": cfg.temperature_lr, "name": "temperature"})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def update(policy, batch: DecisionBatch | None, optimizer: torch.optim.Optimizer, cfg: RLConfig,
           generator: torch.Generator, train_actor: bool = True, train_critic: bool = False,
           reference=None, sync: GradSync | None = None, filler: DecisionBatch | None = None) -> dict[str, float]:
    """Epochs of minibatch steps. sync: the torchrun replicas' collectives (`vla.rl.distributed`);
    there `batch` may be None, a rank that holds no decisions this iteration but still steps along.
    With sync.sharded (rl.fsdp) such a rank runs `filler` (one decision of its rollout) at zero weight,
    since every rank must join the same forward/backward collectives."""
    if batch is None and sync is None:
        raise ValueError("no decisions to learn from")
    sharded = sync is not None and sync.sharded
    if sharded and filler is None:
        raise ValueError("a sharded update needs a filler decision for minibatches this rank holds none of")
    if cfg.target_kl is not None and cfg.target_kl <= 0:
        raise ValueError(f"rl.target_kl must be > 0 (chunk-level nats) or null to disable, got {cfg.target_kl}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    logs: dict[str, list[float]] = {}
    policy.eval()  # no dropout: the log-prob being clipped must be the one that sampled
    steps, stopped = 0, False
    # the batch's sampling log-probs are older than this update when rl.overlap sampled it one update ago, or
    # when an RFT replay holds successes of earlier iterations: measure how far this update moves the policy
    # from where it starts (against the sampling policy the stop would fire before the first step)
    stale = cfg.overlap or (cfg.algo == "rft" and cfg.rft_replay > 0)
    rescore = rescoring(policy, cfg)
    # the learner's own score of the batch at the update's start: the ratio's denominator (rl.rescore) or only
    # the trust region's origin; under rl.fsdp every rank runs as many scoring passes as the others
    start = None
    if train_actor and (rescore or (stale and cfg.target_kl is not None)):  # the critic's warm-up takes no ratio
        start = _score(policy, batch, cfg.minibatch_size, sync if sharded else None, filler)
    proximal = start if rescore else None
    clip = clip_range(cfg)
    scale = ratio_scale(cfg, policy.cfg.head.chunk_size, policy.cfg.head.action_dim)
    local = len(batch) if batch is not None else 0
    parts = sync.minibatches_per_epoch(sync.total(local), cfg.minibatch_size) if sync is not None else 0
    with checkpointing_in_eval_mode(policy, active=train_actor):  # backbone.gradient_checkpointing, if on
        for _ in range(cfg.epochs):
            if stopped:
                break
            for mb in _minibatches(batch, cfg.minibatch_size, generator, parts):
                count = len(mb) if mb is not None else 0
                loss, chunk_kl = torch.zeros((), device=policy.device), 0.0
                if count:
                    loss, chunk_kl = _loss(policy, mb, cfg, logs, train_actor, train_critic, reference, start,
                                           proximal, clip, scale)
                elif sharded:  # the same collectives as the other ranks, nothing learned from it
                    loss, _ = _loss(policy, filler, cfg, {}, train_actor, train_critic, reference, None, None, clip,
                                    scale)
                total = float(count)
                if sync is not None:  # the KL of all ranks' decisions: every replica stops at the same step
                    chunk_kl, total = sync.weighted_mean(chunk_kl, float(count))
                if train_actor:
                    _add(logs, chunk_kl=torch.tensor(chunk_kl))
                    if cfg.target_kl is not None and chunk_kl > 1.5 * cfg.target_kl:
                        stopped = True  # this minibatch is already too far from the sampling policy: no step
                        break
                optimizer.zero_grad(set_to_none=True)
                if sharded:  # FSDP averages gradients over ranks: weigh this rank's mean loss by its share of decisions
                    (loss * (sync.place.world * count / total)).backward()
                elif count:
                    loss.backward()
                if sync is not None and not sharded:
                    sync.average_gradients(params, float(count), total)
                # each group (actor, critic, temperature) clipped on its own: the critic regresses raw returns, and a
                # large value loss clipped together with the actor would scale the actor's step down with it
                norms = {g.get("name", "actor" if i == 0 else f"group{i}"):  # a plain optimizer: the first group acts
                         full_tensor(torch.nn.utils.clip_grad_norm_(g["params"], cfg.max_grad_norm))
                         for i, g in enumerate(optimizer.param_groups)}
                if not all(torch.isfinite(n) for n in norms.values()):
                    raise FloatingPointError("non-finite RL gradient; lower rl.lr or check the rewards")
                optimizer.step()
                steps += 1
                _add(logs, grad_norm=norms["actor"])
                if "critic" in norms and train_critic:
                    _add(logs, critic_grad_norm=norms["critic"])
    out = {k: float(np.mean(v)) for k, v in logs.items()}
    if "chunk_kl" in logs:
        out["chunk_kl_max"] = float(np.max(logs["chunk_kl"]))
    return {**out, "gradient_steps": float(steps), "kl_stopped": float(stopped)}


def _minibatches(batch: DecisionBatch | None, size: int, generator: torch.Generator, parts: int):
    """Shuffled minibatches of `size`; across replicas (parts > 0) the same number, `parts`, on
    every rank (None: none here)."""
    if not parts:
        yield from batch.minibatches(size, generator)
        return
    local = len(batch) if batch is not None else 0
    order = torch.randperm(local, generator=generator)
    for index in split_evenly(order, parts):
        yield batch.select(index) if len(index) else None


def _loss(policy, mb: DecisionBatch, cfg: RLConfig, logs: dict, train_actor: bool, train_critic: bool,
          reference, anchor: torch.Tensor | None, proximal: torch.Tensor | None, clip: tuple[float, float],
          scale: float) -> tuple[torch.Tensor, float]:
    """One minibatch's loss and its chunk-level KL to the sampling policy (or the update's start, `anchor`).
    proximal: the batch re-scored at the update's start (rl.rescore), the ratio's denominator."""
    low, high = clip
    dev = policy.device
    prefix = policy.build_prefix(mb.images, mb.states, mb.instructions)
    records = {k: v.to(dev) for k, v in mb.records.items()}
    loss, chunk_kl = torch.zeros((), device=dev), 0.0
    if train_actor:
        new_lp, entropy = policy.head.evaluate(prefix, records)
        behaviour = mb.old_log_prob.to(dev)
        weights = mb.weights.to(dev)
        denominator = behaviour
        if proximal is not None:
            denominator = proximal[mb.index].to(dev)
            gap = denominator - behaviour  # how much likelier the learner finds the chunk than its sampler did
            behaviour_weight = (gap / scale).exp().clamp(max=cfg.behaviour_weight_cap)
            weights = weights * behaviour_weight
            _add(logs, behaviour_gap=gap.abs().mean(), behaviour_weight=behaviour_weight.mean(),
                 behaviour_truncated=(behaviour_weight >= cfg.behaviour_weight_cap).float().mean())
        chunk_log_ratio = new_lp - denominator
        with torch.no_grad():  # KL(old || new) of whole chunks, k3 estimator on the sampled chunks
            moved = chunk_log_ratio if anchor is None else new_lp - anchor[mb.index].to(dev)
            chunk_kl = float(((moved.exp() - 1) - moved).mean())
        log_ratio = chunk_log_ratio / scale
        if cfg.algo == "rft":  # maximum likelihood of the kept (successful) chunks, per action dimension
            pg = -(log_ratio * mb.advantages.to(dev) * weights).mean()
            clip_frac = torch.zeros((), device=dev)
        else:
            pg, clip_frac = clipped_surrogate(log_ratio, mb.advantages.to(dev), low, high, weights)
        ent = entropy.mean() / scale
        loss = loss + pg - cfg.entropy_coef * ent
        with torch.no_grad():
            approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
        _add(logs, pg_loss=pg, clip_frac=clip_frac, entropy=ent, approx_kl=approx_kl)
        if reference is not None and cfg.kl_coef > 0:
            with torch.no_grad():
                ref_prefix = reference.build_prefix(mb.images, mb.states, mb.instructions)
                ref_lp, _ = reference.head.evaluate(ref_prefix, records)
            diff = (ref_lp - new_lp) / scale  # k3 estimator of KL(new || ref), per dim
            kl = (diff.exp() - diff - 1).mean()
            loss = loss + cfg.kl_coef * kl
            _add(logs, kl_ref=kl)
    if train_critic:
        value = policy.value_head(prefix, detach_features=True)
        v_loss = ((value - mb.returns.to(dev)) ** 2).mean()
        loss = loss + cfg.value_coef * v_loss
        _add(logs, value_loss=v_loss)
    return loss, chunk_kl


@torch.no_grad()
def _score(policy, batch: DecisionBatch | None, size: int, sync: GradSync | None = None,
           filler: DecisionBatch | None = None) -> torch.Tensor | None:
    """The current policy's log-prob of every recorded decision, in batch order (None without a batch).
    sync (rl.fsdp): every rank runs the same number of passes, FSDP gathering weights in each; a rank out
    of decisions scores `filler` and drops the result."""
    local = len(batch) if batch is not None else 0
    passes = sync.minibatches_per_epoch(sync.total(local), size) if sync is not None else -(-local // size)
    pieces = split_evenly(torch.arange(local), passes) if passes else []
    out = []
    for index in pieces:
        mb = batch.select(index) if len(index) else filler
        if mb is None:
            continue
        prefix = policy.build_prefix(mb.images, mb.states, mb.instructions)
        lp = policy.head.evaluate(prefix, {k: v.to(policy.device) for k, v in mb.records.items()})[0]
        if len(index):
            out.append(lp.cpu())
    return torch.cat(out) if out else None


def _add(logs: dict[str, list[float]], **values: torch.Tensor) -> None:
    for k, v in values.items():
        logs.setdefault(k, []).append(float(v.detach()))
