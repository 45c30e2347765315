"""Evaluation sweeps sharded over a Ray cluster (`vla sweep --ray auto|<address>`).

The driver splits the sweep into N shards by the rule of `--shard i/N` (every N-th episode of the fixed
plan; N = the cluster's nodes that can host a shard, or `--ray-shards`) and runs each shard as a Ray task:
`run_sweep` on that node with its own local env workers, crash-proof as a local sweep. Each finished
episode travels back at once through a Ray queue as a plain JSON dict (plus the bytes of its mp4 when one
was recorded), and the driver appends it to its own `episodes.jsonl`. So the output directory, the report
and resuming are those of a local sweep: kill the driver, run the same command again, and only the
episodes missing from the driver's `episodes.jsonl` run (each shard is told which of its episodes are
done). A shard lost with its worker or node is resubmitted for its missing episodes; a row that arrives
twice is dropped, never counted twice.

What each node needs: the same checkout at the same path, installed with `make install`, and the cluster
started from its venv (`.venv/bin/ray start ...`). Ray puts the driver's working directory on the workers'
import path, so run the driver from the checkout's root. The checkpoint is read by every shard from its
path: it must be on a filesystem all nodes see at that path (a shared mount, or copied to the same path on
each node); a shard that cannot read it fails the sweep with a message naming the node.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vla.eval.sweep import (EPISODES_FILE, Protocol, _check_protocol, _open_log, _RowLog, _video_counts, plan_episodes,
                            read_results, sweep_sim)

MAX_SHARD_ATTEMPTS = 3  # a shard whose worker or node is lost is resubmitted (for its missing episodes) this often
FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "VLA_LIBERO_ASSETS")
POLL_SECONDS = 1.0


class RaySweepError(RuntimeError):
    """The Ray sweep cannot run or finish (no Ray, no cluster, no node fits a shard, a shard failed)."""


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise RaySweepError("--ray needs the `ray` package: `make install` installs it, or "
                            "`.venv/bin/pip install -e '.[ray]'`") from err
    return ray


def connect(address: str | None):
    """ray.init(address=...) on an existing cluster ('auto' or '<head ip>:6379'); never starts one.
    address None: use the connection the caller already made with ray.init."""
    ray = import_ray()
    if address is None:
        if not ray.is_initialized():
            raise RaySweepError("no Ray address given and ray.init was not called")
        return ray
    if ray.is_initialized():
        raise RaySweepError("Ray is already initialized in this process; pass address=None to use that connection")
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    try:
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=True)
    except ConnectionError as err:
        reason = str(err).rstrip(".")
        raise RaySweepError(f"no Ray cluster at --ray {address}: {reason}. Start one with `.venv/bin/ray start --head` "
                            "(and `.venv/bin/ray start --address <head ip>:6379` on the other machines). A cluster "
                            "with token authentication (Ray's default) also needs RAY_AUTH_MODE=token here and its "
                            "token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from err
    return ray


def shard_nodes(ray, workers: int) -> list[str]:
    """Hostnames of the live nodes with CPUs for one shard (`workers` env processes)."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= workers]
    if not nodes:
        cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        raise RaySweepError(f"no node of the Ray cluster has {workers} CPUs for a shard with --workers {workers} "
                            f"(nodes' CPUs: {cpus}); lower --workers")
    return [n.get("NodeManagerHostname", n.get("NodeID", "?")) for n in nodes]


def run_shard(ckpt: str, suites: dict[str, list[int]], protocol: dict, shard: tuple[int, int], workers: int,
              done_rows: list[dict], queue, sim_name: str, step_timeout_s: float) -> dict:
    """One shard, inside a Ray task on some node: load the policy there, run `run_sweep(shard=i/N)` in a
    scratch directory seeded with the shard's finished rows, and put every new row on the queue."""
    import torch

    from vla.checkpoint import load_policy
    from vla.devices import ray_worker_device
    from vla.eval.sweep import run_sweep

    node = socket.gethostname()
    if not Path(ckpt).is_dir():
        raise FileNotFoundError(f"checkpoint {ckpt} is not readable on node {node}: a Ray sweep reads it on every "
                                "node from that path (put it on a shared filesystem, or copy it to that path)")
    tic = time.perf_counter()
    torch.set_num_threads(workers)  # the task holds `workers` CPUs; Ray sets OMP_NUM_THREADS the same way
    policy = load_policy(ckpt, ray_worker_device())
    work = _scratch_dir(shard)

    def send(row: dict) -> None:
        video = (work / row["video"]).read_bytes() if row.get("video") else None
        queue.put({"row": row, "video": video})  # blocks until the queue holds it

    try:
        with (work / EPISODES_FILE).open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in done_rows)
        stats = run_sweep(policy, suites, work, Protocol(**protocol), workers, (shard[0], shard[1]), sim_name,
                          step_timeout_s, progress=False, on_row=send)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**stats, "node": node, "shard": f"{shard[0]}/{shard[1]}", "wall_seconds": round(time.perf_counter() - tic, 1)}


def _scratch_dir(shard: tuple[int, int]) -> Path:
    """A fresh scratch directory for this shard on this node, named after this process; those left by
    shard processes that were killed (and so could not clean up) are removed first."""
    parent = Path(tempfile.gettempdir()) / "vla_ray_sweep"
    parent.mkdir(exist_ok=True)
    for old in parent.iterdir():
        pid = old.name.split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}_shard{shard[0]}of{shard[1]}_", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _receive(queue, timeout_s: float) -> list[dict]:
    """Everything on the queue now, waiting up to timeout_s for the first item (0: no wait)."""
    from ray.util.queue import Empty

    items = []
    try:
        items.append(queue.get(block=timeout_s > 0, timeout=timeout_s if timeout_s > 0 else None))
        while True:
            items.append(queue.get(block=False))
    except Empty:
        pass
    return items


def _store(item: dict[str, Any], out: Path, log: _RowLog, done: dict[str, dict], videos: dict, limit: int) -> bool:
    """Video first, then the row (fsynced), so a row never names a missing file. False: a duplicate.
    Shards running side by side each keep up to `limit` videos per task and outcome; of those the
    first ones to arrive are kept, as many as a local sweep keeps (`videos`: counts so far), the rest dropped."""
    row = item["row"]
    if row["key"] in done:
        return False
    outcome = (row["suite"], row["task"], bool(row["success"]))
    if row.get("video") and videos.get(outcome, 0) >= limit:
        row = {**row, "video": None}
    if row.get("video"):
        videos[outcome] = videos.get(outcome, 0) + 1
        path = out / row["video"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item["video"])
    log.append(row)
    done[row["key"]] = row
    return True


def run_ray_sweep(ckpt: Path, suites: dict[str, list[int]], out: Path, protocol: Protocol, workers: int,
                  address: str | None, shards: int | None = None, sim_name: str | None = None,
                  step_timeout_s: float = 120.0, progress: bool = True) -> dict:
    """Run (or finish) the sweep as shards on the Ray cluster at `address`; results accumulate in
    out/episodes.jsonl on this machine as they finish. Returns counts like `run_sweep` plus a `ray` entry.
    `sim_name`: as in `run_sweep` (None = the suites' simulator); every shard's workers build that one."""
    if shards is not None and shards < 1:
        raise RaySweepError(f"--ray-shards must be at least 1, got {shards}")
    sim_name = sweep_sim(suites, sim_name)
    out.mkdir(parents=True, exist_ok=True)
    _check_protocol(out, protocol, suites)
    ray = connect(address)
    started_here = address is not None
    try:
        return _drive(ray, str(Path(ckpt).resolve()), suites, out, protocol, workers, shards, sim_name,
                      step_timeout_s, progress)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, ckpt: str, suites, out: Path, protocol: Protocol, workers: int, shards: int | None,
           sim_name: str, step_timeout_s: float, progress: bool) -> dict:
    from ray.util.queue import Queue

    nodes = shard_nodes(ray, workers)
    count = shards or len(nodes)
    done = read_results(out)
    plans = {i: [e.key for e in plan_episodes(suites, protocol, (i, count))] for i in range(count)}
    todo = {i: [k for k in keys if k not in done] for i, keys in plans.items()}
    queue = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(run_shard).options(num_cpus=workers, max_retries=0, scheduling_strategy="SPREAD")

    def submit(i: int):
        finished = [done[k] for k in plans[i] if k in done]  # plain dicts: the shard skips these
        return task.remote(ckpt, suites, asdict(protocol), (i, count), workers, finished, queue, sim_name, step_timeout_s)

    pending = {submit(i): i for i in range(count) if todo[i]}
    attempts = {i: 1 for i in pending.values()}
    print(f"[sweep] Ray: {sum(map(len, todo.values()))} episodes to run in {len(pending)} of {count} shards "
          f"({len(done)} already done), {len(nodes)} node(s) fit a shard of {workers} workers", flush=True)
    bar = tqdm(total=sum(map(len, todo.values())), desc="sweep (ray)", disable=not progress, dynamic_ncols=True)
    log = _RowLog(_open_log(out / EPISODES_FILE), None)
    received = duplicates = 0
    videos = _video_counts(done)
    shard_stats: list[dict] = []
    wall = time.perf_counter()

    def take(items: list[dict]) -> None:
        nonlocal received, duplicates
        for item in items:
            if _store(item, out, log, done, videos, protocol.videos_per_outcome):
                received += 1
                bar.update(1)
            else:
                duplicates += 1

    try:
        while pending:
            take(_receive(queue, POLL_SECONDS))
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                i = pending.pop(ref)
                take(_receive(queue, 0))  # the shard's puts all landed before it returned
                try:
                    shard_stats.append(ray.get(ref))
                except ray.exceptions.RayTaskError as err:  # our code raised there: it would again
                    raise RaySweepError(f"shard {i}/{count} failed: {err}") from err
                except ray.exceptions.RayError as err:  # worker or node lost: rerun what it had not finished
                    if attempts[i] >= MAX_SHARD_ATTEMPTS:
                        raise RaySweepError(f"shard {i}/{count} lost {attempts[i]} times, last: {err}") from err
                    attempts[i] += 1
                    print(f"[sweep] shard {i}/{count} lost ({type(err).__name__}); resubmitting its missing episodes",
                          flush=True)
                    pending[submit(i)] = i
    finally:
        for ref in pending:  # on an error here, stop the other shards instead of leaving them running
            ray.cancel(ref, force=True)
        try:
            take(_receive(queue, 0))  # rows still in flight from shards that finished
        finally:
            log.close()
            bar.close()
            queue.shutdown()
    summed = {k: round(sum(s[k] for s in shard_stats), 1)
              for k in ("restarts", "reset_seconds", "sim_seconds", "policy_seconds", "overhead_seconds")}
    return {"ran": received, **summed, "ray": {
        "shards": count, "nodes": sorted({s["node"] for s in shard_stats}),
        "resubmitted": sum(attempts.values()) - len(attempts), "duplicate_rows_dropped": duplicates,
        "driver_wall_seconds": round(time.perf_counter() - wall, 1),
        "shard_wall_seconds": {s["shard"]: s["wall_seconds"] for s in shard_stats}}}
