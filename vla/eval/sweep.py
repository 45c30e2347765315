"""Evaluation sweeps over LIBERO or ManiSkill suites on N worker processes: crash-proof, resumable, shardable.

Episodes are (suite, task, init state) triples. Each worker runs one episode at a time; every
control step the runner gathers the workers that need a new action chunk, runs the policy once on
that batch (different tasks and instructions in one batch), and sends each worker its next action.
A worker that crashes or hangs is restarted and its episode re-run from the start; a crashed
attempt is never counted. Every finished episode is appended to `episodes.jsonl` at once (and
flushed), so a sweep killed at any moment and started again runs only the missing episodes.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import sim
from sim.worker import CAMERAS, EnvError, EnvSpec, EnvWorker, WorkerCrashed
from vla.heads.noise import EpisodeNoise, stream_seed

EPISODES_FILE = "episodes.jsonl"
MAX_ATTEMPTS = 3  # an episode whose worker crashes this often is reported as an error, not a result
# (one whose env refuses its steps this often is a failure)
RECORD_EPISODES_PER_TASK = 8  # recorded episodes render every frame; bound them so videos stay cheap


@dataclass(frozen=True)
class Episode:
    suite: str
    task: int
    init_state: int

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.task}/{self.init_state}"


@dataclass
class Protocol:
    """What makes numbers comparable. The defaults are the standard LIBERO protocol; ManiSkill uses the same
    (its 50 indexed init states 0..49 by convention, its own per-task max steps)."""

    episodes_per_task: int = 50  # the task's 50 fixed init states (ManiSkill: seeded resets 0..49)
    first_init_state: int = 0
    settle_steps: int = 10  # no-op steps after reset (in LiberoEnv; ManiSkill has none)
    # None = the env's standard value: per LIBERO suite (sim.libero.MAX_STEPS), per ManiSkill task
    # (sim.maniskill.TASKS[i].max_steps)
    max_steps: int | None = None
    seed: int = 7
    replan_steps: int = 8
    image_size: int = 128
    videos_per_outcome: int = 2  # mp4s kept per task for successes and for failures (0 = none)
    # how sampling heads draw noise: one stream per (episode, step), shared by every policy evaluated on the
    # episode. A sweep directory written with the older per-batch noise (no such field) is not resumed into.
    noise: str = "per_episode"


LIBERO_ALL = "libero_130"  # LIBERO's five suites, 130 tasks
FULL_SWEEP = {"libero": LIBERO_ALL, "maniskill": "maniskill"}  # a simulator -> the --suite of all its tasks


def suite_sims() -> dict[str, str]:
    """Every suite a sweep can run -> its simulator. Suite names are unique across simulators, so a suite
    names its simulator."""
    from sim.libero import list_suites
    from sim.maniskill import SUITE as MANISKILL_SUITE

    return {**{s: "libero" for s in list_suites()}, MANISKILL_SUITE: "maniskill"}


def sweep_sim(suites, sim_name: str | None = None) -> str:
    """The one simulator that runs `suites` (suite names); `sim_name`, if given, must be that one."""
    known = suite_sims()
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; valid: {LIBERO_ALL}, {', '.join(known)}")
    sims = sorted({known[s] for s in suites})
    if len(sims) != 1:
        raise ValueError(f"suites {list(suites)} belong to {' and '.join(sims) or 'no simulator'}; "
                         "one sweep runs in one simulator")
    if sim_name is not None and sim_name != sims[0]:
        raise ValueError(f"suites {list(suites)} are {sims[0]} suites; they cannot run with sim_name={sim_name!r}")
    return sims[0]


def resolve_suites(spec: str, tasks: list[int | str] | None = None) -> dict[str, list[int]]:
    """'libero_130' (all five LIBERO suites, 130 tasks), 'maniskill' (ManiSkill's task table) or comma-separated
    suite names of one simulator -> {suite: task ids}. Suite and task lists are the simulators' own (LIBERO's
    benchmark registry, sim.maniskill.TASKS), not typed here. `tasks` (ids, or names the simulator resolves)
    apply to every suite; None = all of each suite's tasks."""
    known = suite_sims()
    return {name: _resolve_tasks(known[name], name, tasks) for name in suite_names(spec)}


def suite_names(spec: str) -> list[str]:
    """The suites of a --suite spec (without their tasks), checked to be known and of one simulator."""
    known = suite_sims()
    if spec == LIBERO_ALL:
        names = [s for s, sim_name in known.items() if sim_name == "libero"]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"unknown suite(s) {spec!r}; valid: {LIBERO_ALL}, {', '.join(known)}")
    sweep_sim(names)
    return names


def _resolve_tasks(sim_name: str, suite: str, tasks: list[int | str] | None) -> list[int]:
    if sim_name == "maniskill":
        from sim.maniskill import TASKS, resolve_task

        chosen = range(len(TASKS)) if tasks is None else tasks
        return list(dict.fromkeys(resolve_task(suite, t) for t in chosen))
    from sim.libero import list_tasks, resolve_task

    count = len(list_tasks(suite))
    if tasks is None:
        return list(range(count))
    bad = [t for t in tasks if not isinstance(t, str) and not 0 <= t < count]
    if bad:
        raise ValueError(f"task ids {bad} out of range for {suite} (0..{count - 1})")
    return list(dict.fromkeys(resolve_task(suite, t) for t in tasks))


def plan_episodes(suites: dict[str, list[int]], protocol: Protocol, shard: tuple[int, int] = (0, 1)) -> list[Episode]:
    """All episodes of the sweep in a fixed order, then this shard's share (every N-th one)."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
    episodes = [Episode(suite, task, protocol.first_init_state + k)
                for suite, tasks in suites.items() for task in tasks for k in range(protocol.episodes_per_task)]
    return episodes[index::count]


def read_results(out: Path) -> dict[str, dict]:
    """Finished episodes by key. A last line cut short by a kill is ignored (that episode re-runs)."""
    path = out / EPISODES_FILE
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["key"]] = row
    return done


class _Slot:
    """One worker and the episode it is running."""

    def __init__(self, worker: EnvWorker):
        self.worker = worker
        self.episode: Episode | None = None
        self.instruction = ""
        self.max_steps = 0
        self.steps = 0
        self.queue: deque[np.ndarray] = deque()
        self.started = 0.0
        self.attempt = 0


def run_sweep(policy, suites: dict[str, list[int]], out: Path, protocol: Protocol = Protocol(), workers: int = 2,
              shard: tuple[int, int] = (0, 1), sim_name: str | None = None, step_timeout_s: float = 120.0,
              progress: bool = True, on_row: Callable[[dict], None] | None = None) -> dict:
    """Run (or finish) the sweep; returns counts. Results accumulate in out/episodes.jsonl; `on_row`, if
    given, is called with each row (a plain dict) right after it is written (the Ray launcher streams them).
    `sim_name`: the simulator the env workers build; None = the suites' own (a given one must match them)."""
    sim_name = sweep_sim(suites, sim_name)
    for suite, tasks in suites.items():
        for task in tasks:
            sim.check_episode_range(sim_name, suite, task, protocol.first_init_state, protocol.episodes_per_task)
    out.mkdir(parents=True, exist_ok=True)
    _check_protocol(out, protocol, suites)
    done = read_results(out)
    todo = deque(e for e in plan_episodes(suites, protocol, shard) if e.key not in done)
    total = len(todo)
    attempts: dict[str, int] = {}
    videos = _video_counts(done)
    restarts = 0
    cameras = list(policy.cfg.data.cameras)
    cam_index = [CAMERAS.index(c) for c in cameras]
    slots = [_Slot(EnvWorker(protocol.image_size, step_timeout_s)) for _ in range(min(workers, max(total, 1)))]
    bar = tqdm(total=total, desc="sweep", disable=not progress, dynamic_ncols=True)
    log = _RowLog(_open_log(out / EPISODES_FILE), on_row)
    sim_s = policy_s = reset_s = 0.0
    wall = time.perf_counter()
    try:
        while todo or any(s.episode for s in slots):
            for slot in slots:  # give idle workers the next episode
                while slot.episode is None and todo:
                    episode = todo.popleft()
                    tic = time.perf_counter()
                    try:
                        _start(slot, episode, protocol, sim_name, videos)
                    except (WorkerCrashed, EnvError):  # the env could not be built or reset: not the policy's doing
                        restarts += 1
                        slot.worker.restart()
                        _retry(todo, episode, attempts, log, bar)
                    reset_s += time.perf_counter() - tic
            active = [s for s in slots if s.episode is not None]
            if not active:
                break
            need = [s for s in active if not s.queue]
            if need:
                tic = time.perf_counter()
                _act(policy, need, cam_index, protocol)
                policy_s += time.perf_counter() - tic
            tic = time.perf_counter()
            for slot in active:
                slot.steps += 1
                try:
                    action = slot.queue.popleft()  # render only the frame the next chunk is planned from
                    slot.worker.send({"cmd": "step", "action": action.tolist(), "observe": not slot.queue})
                except WorkerCrashed:
                    slot.queue.clear()
            for slot in active:
                try:
                    reply = slot.worker.receive()
                except (WorkerCrashed, EnvError) as err:
                    restarts += 1
                    slot.worker.restart()
                    # the env refusing a step (a NaN action, an unstable simulation) replays the same way: after
                    # the last attempt it is the episode's failure, not an episode left out of the success rate
                    refused = (slot.steps, str(err)) if isinstance(err, EnvError) else None
                    _retry(todo, slot.episode, attempts, log, bar, refused)
                    slot.episode = None
                    continue
                if reply["done"] or slot.steps >= slot.max_steps:
                    _finish(slot, bool(reply["done"]), log, 1 + attempts.get(slot.episode.key, 0), out, videos)
                    bar.update(1)
            sim_s += time.perf_counter() - tic
    finally:
        log.close()
        bar.close()
        for slot in slots:
            slot.worker.close()
    wall = time.perf_counter() - wall
    # what the sweep itself costs beyond env construction/reset, simulation steps and the policy
    overhead = wall - reset_s - sim_s - policy_s
    return {"ran": total, "restarts": restarts, "reset_seconds": round(reset_s, 1), "sim_seconds": round(sim_s, 1),
            "policy_seconds": round(policy_s, 1), "overhead_seconds": round(overhead, 2)}


def _open_log(path: Path):
    """Append mode; a line cut short by a kill is closed off first so it cannot swallow the next."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
        if cut:
            with path.open("a") as f:
                f.write("\n")
    return path.open("a")


class _RowLog:
    """episodes.jsonl: one JSON line per finished episode, flushed and fsynced, then handed to `on_row`."""

    def __init__(self, file, on_row: Callable[[dict], None] | None):
        self.file, self.on_row = file, on_row

    def append(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.on_row is not None:
            self.on_row(row)

    def close(self) -> None:
        self.file.close()


def _check_protocol(out: Path, protocol: Protocol, suites: dict[str, list[int]]) -> None:
    """A resumed sweep must use the protocol it started with, or its numbers would mix."""
    path = out / "protocol.json"
    current = {"protocol": asdict(protocol), "suites": {k: list(v) for k, v in suites.items()}}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["protocol"] != current["protocol"]:
            raise ValueError(f"{out} holds a sweep run with protocol {saved['protocol']}; this run asks for "
                             f"{current['protocol']}. Use another output directory.")
    else:
        path.write_text(json.dumps(current, indent=2))


def _video_counts(done: dict[str, dict]) -> dict:
    counts: dict = {"limit": 0}
    for row in done.values():
        if row.get("video"):
            key = (row["suite"], row["task"], bool(row["success"]))
            counts[key] = counts.get(key, 0) + 1
    return counts


def _wants_video(videos: dict, episode: Episode, success: bool) -> bool:
    return videos.get((episode.suite, episode.task, success), 0) < videos["limit"]


def _start(slot: _Slot, episode: Episode, protocol: Protocol, sim_name: str, videos: dict) -> None:
    spec = EnvSpec(sim_name, episode.suite, episode.task, protocol.image_size, protocol.max_steps, protocol.seed)
    videos["limit"] = protocol.videos_per_outcome
    # record while this task still lacks a success or a failure video, for a bounded number of episodes:
    # a recording worker renders every step, an unrecorded one only the steps the policy looks at
    tried = ("recorded", episode.suite, episode.task)
    record = videos.get(tried, 0) < RECORD_EPISODES_PER_TASK and (
        _wants_video(videos, episode, True) or _wants_video(videos, episode, False))
    videos[tried] = videos.get(tried, 0) + int(record)
    reply = slot.worker.reset(spec, episode.init_state, record)
    slot.episode, slot.instruction, slot.max_steps = episode, reply["instruction"], int(reply["max_steps"])
    slot.steps, slot.started = 0, time.perf_counter()
    slot.queue.clear()


def _retry(todo: deque, episode: Episode, attempts: dict[str, int], log, bar,
           refused: tuple[int, str] | None = None) -> None:
    """Re-run a crashed episode from its init state, or after MAX_ATTEMPTS write its row: an error (left out
    of the success rate) after a crash, a failure after the env refused the policy's step (`refused`: the
    step and the env's message)."""
    attempts[episode.key] = attempts.get(episode.key, 0) + 1
    if attempts[episode.key] < MAX_ATTEMPTS:
        todo.appendleft(episode)  # the crashed attempt is not counted
        return
    row = {"key": episode.key, **asdict(episode), "attempts": attempts[episode.key]}
    if refused is not None:
        row.update(status="ok", success=False, steps=refused[0], video=None, env_error=refused[1])
    else:
        row.update(status="error", success=None, steps=None)
    log.append(row)
    bar.update(1)


def _act(policy, slots: list[_Slot], cam_index: list[int], protocol: Protocol) -> None:
    images, states = [], []
    for slot in slots:
        img, state = slot.worker.observation()
        images.append(img[cam_index])
        states.append(state)
    # one noise stream per episode and step: an episode draws the same numbers whichever episodes share its
    # batch, and every policy evaluated on it draws them too (common random numbers)
    noise = EpisodeNoise([stream_seed(protocol.seed, s.episode.key, s.steps) for s in slots])
    chunks = policy.act(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(states)),
                        [s.instruction for s in slots], noise)
    for slot, chunk in zip(slots, chunks):
        slot.queue.extend(np.clip(chunk[:protocol.replan_steps], -1.0, 1.0))


def _finish(slot: _Slot, success: bool, log, attempt: int, out: Path, videos: dict) -> None:
    episode = slot.episode
    row = {"key": episode.key, **asdict(episode), "status": "ok", "success": success, "steps": slot.steps,
           "seconds": round(time.perf_counter() - slot.started, 3), "attempts": attempt, "video": None}
    if _wants_video(videos, episode, success):
        name = f"videos/{episode.suite}_{episode.task}_{episode.init_state}_{'success' if success else 'failure'}.mp4"
        try:
            slot.worker.send({"cmd": "save_video", "path": str(out / name)})
            slot.worker.receive()
            row["video"] = name
            key = (episode.suite, episode.task, success)
            videos[key] = videos.get(key, 0) + 1
        except (WorkerCrashed, EnvError) as err:  # the result stands without its video
            print(f"[sweep] video for {episode.key} not written: {err}")
            slot.worker.restart()  # a late reply would otherwise be read as the next reset's
    log.append(row)
    slot.episode = None
    slot.queue.clear()
