"""RL rollouts on a Ray cluster (`rl.ray=auto|<head ip>:6379`): env workers and rollout inference
placed as Ray actors, the learner stays in the driver process.

Each `RolloutActor` holds, on its node, a local `EnvPool` (`rl.workers` crash-tolerant env processes)
and a copy of the policy; every iteration the driver puts the current weights once into Ray's object
store (safetensors bytes, shared by every actor on a node), splits the iteration's planned episodes
over the actors (round robin) and gathers their episodes back. What travels is plain data: the
checkpoint's files as bytes, JSON-able dicts and safetensors bytes of the decisions (images, states,
head records) - never our Python objects. (Ray itself frames these with its own serializer; keep the
cluster on a trusted network, as Ray's docs require.)

An actor lost with its process or node is restarted by Ray (`max_restarts`) and its share of the
plan resubmitted, like a crashed env worker's episode: a lost actor never becomes a reward. Sampling
noise is seeded per (iteration, actor), so a run is reproducible for the same number of actors.
"""
from __future__ import annotations

import gc
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode, RolloutStats

MAX_ACTOR_ATTEMPTS = 3


class RayRolloutError(RuntimeError):
    """The Ray rollout cannot run (no Ray, no cluster, no node fits an actor, an actor kept failing)."""


# -- plain-data encoding of a policy and of episodes ------------------------------------------------

def policy_files(policy) -> dict[str, bytes]:
    """The policy as its checkpoint directory's files (config JSON, safetensors weights and stats)."""
    from vla.checkpoint import save_policy

    with tempfile.TemporaryDirectory() as tmp:
        save_policy(policy, Path(tmp))
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def weights_bytes(policy) -> bytes:
    """The parameters RL trains (all else is frozen and already on the actors): with LoRA or a residual
    head only those travel each iteration. named_parameters() lists a tied weight once."""
    return save_tensors({k: v.detach().contiguous().cpu() for k, v in policy.named_parameters() if v.requires_grad})


def load_weights(policy, data: bytes) -> None:
    unexpected = policy.load_state_dict(load_tensors(data), strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"weights do not fit the actor's policy: unexpected {unexpected[:4]}")


def encode_episodes(episodes: list[EpisodeRollout]) -> tuple[str, bytes]:
    """(JSON of everything but arrays, safetensors bytes of the decisions' arrays stacked in order)."""
    meta, decisions = [], [d for e in episodes for d in e.decisions]
    for e in episodes:
        meta.append({"plan": _plan_row(e.plan), "instruction": e.instruction,
                     "success": e.success, "steps": e.steps,
                     "decisions": [[d.log_prob, d.value, d.reward] for d in e.decisions]})
    tensors: dict[str, torch.Tensor] = {}
    if decisions:
        tensors["images"] = torch.from_numpy(np.stack([d.images for d in decisions]))
        tensors["states"] = torch.from_numpy(np.stack([d.state for d in decisions]).astype(np.float32))
        for key in decisions[0].record:
            tensors[f"record/{key}"] = torch.stack([d.record[key] for d in decisions]).contiguous()
    return json.dumps(meta), save_tensors(tensors) if tensors else b""


def decode_episodes(meta_json: str, payload: bytes) -> list[EpisodeRollout]:
    meta = json.loads(meta_json)
    tensors = load_tensors(payload) if payload else {}
    records = {k[len("record/"):]: v for k, v in tensors.items() if k.startswith("record/")}
    out, row = [], 0
    for m in meta:
        episode = EpisodeRollout(_planned(m["plan"]), m["instruction"],
                                 success=bool(m["success"]), steps=int(m["steps"]))
        for log_prob, value, reward in m["decisions"]:
            episode.decisions.append(Decision(tensors["images"][row].numpy(), tensors["states"][row].numpy(),
                                              {k: v[row] for k, v in records.items()}, float(log_prob), float(value),
                                              float(reward)))
            row += 1
        out.append(episode)
    return out


def _plan_row(p: PlannedEpisode) -> list:
    return [p.suite, p.task, p.init_state, p.group, p.seed]


def _planned(row: list) -> PlannedEpisode:
    suite, task, init, group, seed = row
    return PlannedEpisode(suite, int(task), int(init), int(group), None if seed is None else int(seed))


# -- the actor (runs on a cluster node) ----------------------------------------------------------------

class RolloutActor:
    def __init__(self, files: dict[str, bytes], workers: int, image_size: int, sim: str, max_steps: int | None,
                 seed: int, torch_threads: int, reward: str = "sparse"):
        from vla.checkpoint import load_policy
        from vla.devices import ray_worker_device
        from vla.rl.rollout import EnvPool

        torch.set_num_threads(torch_threads)
        self._dir = tempfile.TemporaryDirectory(prefix="vla_rl_actor_")
        for name, data in files.items():
            (Path(self._dir.name) / name).write_bytes(data)
        self.policy = load_policy(self._dir.name, ray_worker_device()).eval()
        self.pool = EnvPool(workers, image_size, sim, max_steps, seed, reward=reward)

    def collect(self, weights: bytes, plan: list[list], seed: int) -> dict:
        load_weights(self.policy, weights)
        planned = [_planned(row) for row in plan]
        episodes, stats = self.pool.collect(self.policy, planned, torch.Generator().manual_seed(seed))
        meta, payload = encode_episodes(episodes)
        return {"meta": meta, "payload": payload, "node": socket.gethostname(),
                "stats": [stats.env_steps, stats.seconds, stats.policy_seconds, stats.restarts, stats.dropped]}

    def close(self) -> None:
        self.pool.close()


# -- the driver side -------------------------------------------------------------------------------------

class RayEnvPool:
    """`EnvPool`'s interface (`collect`, `close`) over rollout actors on a Ray cluster."""

    def __init__(self, policy, address: str, actors: int, workers: int, image_size: int, sim: str,
                 max_steps: int | None, seed: int, torch_threads: int, reward: str = "sparse"):
        from vla.eval.ray_sweep import RaySweepError, connect, shard_nodes

        try:
            self.ray = connect(address)
            nodes = shard_nodes(self.ray, workers)
        except RaySweepError as err:
            raise RayRolloutError(str(err).replace("--workers", "rl.workers").replace("a shard", "an actor")) from err
        self.count = actors or len(nodes)
        files = self.ray.put(policy_files(policy))
        self.options = dict(num_cpus=workers, max_restarts=MAX_ACTOR_ATTEMPTS - 1, max_task_retries=0,
                            scheduling_strategy="SPREAD")
        self.args = (files, workers, image_size, sim, max_steps, seed, torch_threads, reward)
        remote = self.ray.remote(RolloutActor).options(**self.options)
        self.actors = [remote.remote(*self.args) for _ in range(self.count)]
        self.nodes: list[str] = []
        print(f"[rl] Ray: {self.count} rollout actor(s) of {workers} env workers on {len(nodes)} node(s)", flush=True)

    def collect(self, policy, plan: list[PlannedEpisode],
                generator: torch.Generator) -> tuple[list[EpisodeRollout], RolloutStats]:
        ray = self.ray
        tic = time.perf_counter()
        weights = ray.put(weights_bytes(policy))
        base_seed = int(generator.initial_seed())
        shares = {a: list(range(a, len(plan), self.count)) for a in range(self.count)}
        shares = {a: idx for a, idx in shares.items() if idx}

        def submit(a: int):
            return self.actors[a].collect.remote(weights, [_plan_row(plan[i]) for i in shares[a]],
                                                 base_seed * 1_000_003 + a)

        pending = {submit(a): a for a in shares}
        attempts = {a: 1 for a in shares}
        by_actor: dict[int, list[EpisodeRollout]] = {}
        totals = np.zeros(5)
        nodes = set()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            a = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:  # our code raised inside the actor: it would again
                raise RayRolloutError(f"rollout actor {a} failed: {err}") from err
            except ray.exceptions.RayError as err:  # the actor's process or node was lost: Ray restarts it
                if attempts[a] >= MAX_ACTOR_ATTEMPTS:
                    raise RayRolloutError(f"rollout actor {a} lost {attempts[a]} times, last: {err}") from err
                attempts[a] += 1
                print(f"[rl] rollout actor {a} lost ({type(err).__name__}); rerunning its episodes", flush=True)
                pending[submit(a)] = a
                continue
            by_actor[a] = decode_episodes(result["meta"], result["payload"])  # its share in plan order, minus dropped
            totals += np.array(result["stats"], dtype=np.float64)
            nodes.add(result["node"])
        self.nodes = sorted(nodes)
        stats = RolloutStats(int(totals[0]), time.perf_counter() - tic, float(totals[2]), int(totals[3]), int(totals[4]))
        return [e for a in sorted(by_actor) for e in by_actor[a]], stats

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.get(actor.close.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - an actor already gone has nothing to close
                pass
            self.ray.kill(actor)
        # no actor handle or object ref of ours may outlive the connection: one collected after
        # ray.shutdown() calls into the torn-down core worker (a driver segfaulted so, in the
        # evaluation that follows the last rollout)
        self.actors = []
        gc.collect()
        self.ray.shutdown()  # this pool connected (connect() never starts a cluster)
