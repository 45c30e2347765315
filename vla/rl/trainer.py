"""`vla rl`: online RL from a BC checkpoint. Rollout on env workers -> advantages (PPO or GRPO) ->
clipped-surrogate update, every iteration checkpointed (policy, optimizer, RNG, iteration, log)
so a kill -9 loses at most the iteration in flight. The same fixed evaluation set is run before
RL and after it (and every rl.eval_every iterations), through the resumable sweep runner."""
from __future__ import annotations

import copy
import datetime
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from vla.config import ExperimentConfig, to_yaml
from vla.devices import pick_device, setup_distributed
from vla.rl import rft
from vla.rl.buffer import DecisionBatch, flatten
from vla.rl.distributed import BARRIER_TIMEOUT_S, GradSync, seed_offset, shard_plan
from vla.rl.objective import explained_variance, make_optimizer, reference_copy, update
from vla.rl.prepare import (ALGOS, check_config, check_replicas, make_pool, plan_iteration, prepare_policy,
                             rollout_generator, rollout_tasks, set_rollout_threads)
from vla.rl.rollout import EpisodeRollout, PlannedEpisode, apply_step_penalty
from vla.rl.run_state import resume_state, save_state, write_log
from vla.rl.td3 import ResidualTD3


def evaluate(policy, cfg: ExperimentConfig, tasks: list[tuple[str, int]], out: Path) -> dict:
    """The fixed evaluation set: init states 0.. of each RL task, once per seed in rl.eval_seeds
    (the seed sets the sim's reset and the policy's sampling noise). Each pass is a resumable sweep."""
    from vla.eval.report import summarize_rows
    from vla.eval.sweep import Protocol, read_results, run_sweep

    suites: dict[str, list[int]] = {}
    for suite, task in tasks:
        suites.setdefault(suite, []).append(task)
    rows = []
    for seed in cfg.rl.eval_seeds:
        protocol = Protocol(episodes_per_task=cfg.rl.eval_episodes_per_task, max_steps=cfg.rl.max_steps, seed=seed,
                            replan_steps=cfg.head.chunk_size, image_size=cfg.demos.image_size, videos_per_outcome=0)
        run_sweep(policy, suites, out / f"seed_{seed}", protocol, workers=cfg.rl.workers, sim_name=cfg.sim,
                  progress=False)
        rows += list(read_results(out / f"seed_{seed}").values())
    return summarize_rows(rows)


def train_rl(ckpt: str | Path, recipe: str | None = None, overrides: list[str] | None = None,
             config_file: str | Path | None = None) -> dict | None:
    """Runs RL to rl.iterations (resuming if the output has checkpoints) and returns the summary
    (None on torchrun ranks other than 0, which neither evaluate nor report). `config_file`: YAML under `overrides`."""
    policy = prepare_policy(ckpt, recipe, overrides or [], config_file)
    cfg, rl = policy.cfg, policy.cfg.rl
    check_config(cfg)
    device = pick_device(cfg.device)
    place = setup_distributed(device, timeout_s=BARRIER_TIMEOUT_S)
    check_replicas(cfg, place)
    policy.to(device)
    set_rollout_threads(rl)
    out = Path(cfg.output_dir)
    if place.main:
        out.mkdir(parents=True, exist_ok=True)
    tasks, init_states = rollout_tasks(cfg)
    reference = reference_copy(policy) if rl.kl_coef > 0 else None  # the starting policy, before any resume
    offpolicy = ResidualTD3(policy, rl) if rl.algo == "td3" else None
    # rl.fsdp: the optimizer is built over the sharded weights, after the resumed ones are broadcast and sharded
    optimizer = make_optimizer(policy, rl) if offpolicy is None and not rl.fsdp else None
    replay = rft.SuccessReplay(rl.rft_replay) if rl.algo == "rft" and rl.rft_replay else None
    held: dict = {}  # rl.fsdp: the checkpoint's optimizer state, loaded once the optimizer exists
    state = resume_state(out / "checkpoints", policy, optimizer, offpolicy, replay, held, str(Path(ckpt).resolve()))
    if place.main:  # after the resume checks: a refused run leaves the directory's config as it was
        (out / "config.yaml").write_text(to_yaml(cfg))
    algo = ALGOS[rl.algo]
    # torchrun replicas: `rows` reduces log rows and holds barriers on the main thread, over gloo on the CPU: with
    # rl.overlap the main thread reduces its rollout's row while the learner thread all-reduces gradients, and two
    # NCCL communicators driven from two threads may enqueue in a different order on each rank and deadlock. The
    # learner's collectives get their own process group when rl.overlap runs them on the learner thread.
    rows = learner_sync = sharded = None
    if place.world > 1:
        # (a new group gets the backend's default timeout, 10 min for NCCL, unless given the job's)
        timeout = datetime.timedelta(seconds=BARRIER_TIMEOUT_S)
        rows = GradSync(place, torch.device("cpu"), dist.new_group(backend="gloo", timeout=timeout))
        group = dist.new_group(timeout=timeout) if rl.overlap else None
        learner_sync = GradSync(place, device, group, sharded=rl.fsdp)
        learner_sync.broadcast_parameters(policy)
    if rl.fsdp:  # the learner sharded over the replicas; each acts and evaluates with a plain copy (vla.rl.sharded)
        from vla.rl.sharded import ShardedLearner

        sharded = ShardedLearner(policy, place, device)
        optimizer = make_optimizer(policy, rl)
        if held:
            sharded.load_optimizer(optimizer, held["tensors"], held["meta"])
    acting = sharded.actor if sharded is not None else policy  # rolls out, evaluates and is saved
    say = partial(print, flush=True) if place.main else (lambda *a, **k: None)
    say(f"[rl] {rl.algo} on {tasks}, {len(init_states)} init states, head {cfg.head.type} "
          f"({policy.head.rl_quantity}); starting at iteration {state['iteration']}"
          + (f"; {place.world} replicas" if place.world > 1 else ""))

    def maybe_eval(it: int) -> None:
        if str(it) in state["evals"]:
            return
        if not place.main:  # rank 0 evaluates the (identical) policy while the replicas wait
            state["evals"][str(it)] = {}
        else:
            tic = time.perf_counter()
            state["evals"][str(it)] = {**evaluate(acting, cfg, tasks, out / f"eval_{it:04d}"),
                                       "seconds": round(time.perf_counter() - tic, 1)}
            e = state["evals"][str(it)]
            print(f"[rl] eval @ iteration {it}: {e['successes']}/{e['episodes']} = {e['success_rate']:.1%} "
                  f"(95% CI {e['ci95'][0]:.1%}-{e['ci95'][1]:.1%}), {e['seconds']} s", flush=True)
        if rows is not None:
            rows.barrier()

    pool = make_pool(policy, cfg) if rl.ray else None  # a missing Ray cluster fails before the long evaluation
    maybe_eval(0)
    # overlap: the rollout acts with a snapshot of the weights while the learner thread updates the
    # policy on the previous batch (one iteration off-policy: the ratio is taken against the log-prob
    # of the policy that sampled, so clipping bounds the gap); the snapshot follows every update
    actor = _snapshot(policy) if rl.overlap else acting
    learner = ThreadPoolExecutor(1, thread_name_prefix="rl-learner") if rl.overlap else None
    pool = pool or make_pool(policy, cfg)

    def finish(row: dict, started: float, job: Future | None) -> None:
        """Log, checkpoint and (maybe) evaluate one iteration once its update is done."""
        if job is not None:
            row.update(job.result())
        row["iteration_s"] = round(time.perf_counter() - started, 1)
        state["iteration"] = row["iteration"]
        state["history"].append(row)
        say("[rl] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if actor is not acting:
            actor.load_state_dict(policy.state_dict())
        gathered = sharded.gather_optimizer(optimizer) if sharded is not None else None  # a collective
        if place.main:
            save_state(out / "checkpoints", acting, optimizer, state, offpolicy, replay, gathered)
            write_log(out / "rl_log.jsonl", state["history"])
        if rl.eval_every and row["iteration"] % rl.eval_every == 0 and row["iteration"] < rl.iterations:
            maybe_eval(row["iteration"])
            if place.main:
                save_state(out / "checkpoints", acting, optimizer, state, offpolicy, replay, gathered)

    pending: tuple[dict, float, Future | None] | None = None
    filler = None  # rl.fsdp: one decision of this rank's rollouts, run at zero weight when it holds none
    try:
        it = state["iteration"] + 1
        while it <= rl.iterations or pending is not None:
            collected = None
            if it <= rl.iterations:
                generator = rollout_generator(rl, it, seed_offset(place))
                tic = time.perf_counter()
                plan = plan_iteration(cfg, tasks, init_states, it)
                row, batch, first = _rollout(actor, pool, cfg, algo, shard_plan(plan, place), generator, it)
                filler = first or filler
                if rows is not None:  # the iteration over every replica's episodes
                    row = rows.reduce_row(row)
                collected = (row, batch, generator, tic)
            if pending is not None:  # the update that trained during this rollout
                finish(*pending)
                pending = None
            if collected is None:
                break
            row, batch, generator, tic = collected
            it += 1
            if replay is not None:  # RFT: this iteration's successes join the earlier ones, all are trained on
                batch = replay.add(batch)
                row["replay_decisions"] = len(replay)
            local = len(batch) if batch is not None else 0
            if (rows.total(local) if rows is not None else local) == 0:
                finish(row, tic, None)
                continue
            if offpolicy is not None:  # batch = the iteration's whole episodes, into the replay buffer
                finish(row, tic, _completed(_timed_td3(offpolicy, batch, generator, row["iteration"] > rl.critic_warmup)))
                continue
            warmup = rl.algo == "ppo" and row["iteration"] <= rl.critic_warmup
            if sharded is not None and filler is None:
                raise RuntimeError(f"rank {place.rank} has no rollout decision yet to join the sharded update with "
                                   f"(all its episodes were dropped)")
            step = partial(_timed_update, policy, batch, optimizer, rl, generator, train_actor=not warmup,
                           train_critic=rl.algo == "ppo", reference=reference, sync=learner_sync, filler=filler,
                           after=sharded.sync_actor if sharded is not None else None)
            if learner is None:
                finish(row, tic, _completed(step()))
            else:
                pending = (row, tic, learner.submit(step))
    finally:
        if learner is not None:
            learner.shutdown(wait=True)
        pool.close()
    maybe_eval(state["iteration"])
    gathered = sharded.gather_optimizer(optimizer) if sharded is not None else None  # a collective
    if not place.main:
        dist.destroy_process_group()
        return None
    final = save_state(out / "checkpoints", acting, optimizer, state, offpolicy, replay, gathered)
    from vla.rl.report import write_rl_report

    summary = write_rl_report(out, state, cfg, final)
    if place.world > 1:
        dist.destroy_process_group()
    return summary


def _rollout(actor, pool, cfg: ExperimentConfig, algo, plan: list[PlannedEpisode], generator: torch.Generator,
             it: int) -> tuple[dict, DecisionBatch | None, DecisionBatch | None]:
    """One iteration's episodes -> its log row, the batch to learn from (None: nothing kept) and, for
    rl.fsdp, one of its decisions to stand in at zero weight (None without episodes)."""
    rl = cfg.rl
    actor.eval()
    episodes, stats = pool.collect(actor, plan, generator)
    apply_step_penalty(episodes, rl.step_penalty)
    # no episodes: every planned one was dropped after repeated simulator crashes, nothing to learn;
    # no algo: off-policy (td3), the learner stores whole episodes
    if algo is None or not episodes:
        kept, advs, rets, extra = episodes, [], [], {}
    else:
        kept, advs, rets, extra = algo.advantages(episodes, rl)
    row = {"iteration": it, "episodes": len(episodes),
           "success_rate": float(np.mean([e.success for e in episodes])) if episodes else 0.0,
           "return": float(np.mean([e.ret for e in episodes])) if episodes else 0.0,
           "episode_steps": float(np.mean([e.steps for e in episodes])) if episodes else 0.0,
           "env_frames": stats.env_steps, "env_frames_per_s": stats.env_steps / max(stats.seconds, 1e-9),
           "rollout_s": round(stats.seconds, 1), "policy_s": round(stats.policy_seconds, 1),
           "restarts": stats.restarts, "dropped": stats.dropped, **extra}
    first = None
    if rl.fsdp and episodes and episodes[0].decisions:
        one = EpisodeRollout(episodes[0].plan, episodes[0].instruction, episodes[0].decisions[:1])
        first = flatten([one], [np.zeros(1)], [np.zeros(1)])
    if not kept:
        return row, None, first
    if algo is None:
        return row, kept, first
    batch = flatten(kept, advs, rets, per_episode=rl.algo == "grpo")
    if rl.algo == "ppo":
        row["explained_variance"] = explained_variance(batch.values, batch.returns)
    return row, batch, first


def _timed_update(policy, batch, optimizer, rl, generator, after=None, **kwargs) -> dict:
    """One update, timed. after: what brings the weights to the acting copy and returns it (rl.fsdp:
    the gathered weights; the temperature is read there, not from the sharded learner)."""
    tic = time.perf_counter()
    logs = update(policy, batch, optimizer, rl, generator, **kwargs)
    view = after() if after is not None else policy
    learned = getattr(getattr(view.head, "temperature", None), "learned", False)
    temperature = {"temperature": view.head.temperature.values()} if learned else {}
    return {**logs, **temperature, "decisions": len(batch) if batch is not None else 0,
            "update_s": round(time.perf_counter() - tic, 1)}


def _timed_td3(learner: ResidualTD3, episodes, generator: torch.Generator, train_actor: bool) -> dict:
    tic = time.perf_counter()
    decisions = learner.add(episodes)
    logs = learner.train(generator, train_actor=train_actor)
    return {**logs, "decisions": decisions, "update_s": round(time.perf_counter() - tic, 1)}


def _completed(value: dict) -> Future:
    done: Future = Future()
    done.set_result(value)
    return done


def _snapshot(policy):
    """The acting copy of the policy for overlapped rollouts (a second set of weights in memory)."""
    actor = copy.deepcopy(policy).eval()
    actor.requires_grad_(False)
    return actor


