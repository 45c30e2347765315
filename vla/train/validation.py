"""Held-out demonstrations: the overfitting signal of a BC run.

`data.val_episodes=N` keeps N whole episodes (a seeded draw) out of training, normalization statistics included.
At every checkpoint (or every `train.val_every` steps) the policy is scored on them and on as many training frames:
- `val_loss`: the head's own training loss on held-out frames, without augmentation and with a fixed noise seed (flow
  and diffusion losses draw noise), so successive values are comparable within a run;
- `val_action_l1` / `train_action_l1`: mean |predicted - demonstrated| action over each frame's chunk (padding left
  out), in the dataset's raw units, with the sampler evaluation uses. Comparable across heads; the gap between the
  two is what memorizing the training episodes costs on new ones.
Whole episodes, not frames, are held out: neighbouring frames of one episode are near duplicates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

VAL_FRAMES = 256  # frames scored on each side (evenly spaced): enough for a stable mean, cheap at every checkpoint


@dataclass(frozen=True, eq=False)
class EpisodeSplit:
    train_rows: np.ndarray  # dataset rows trained on
    val_rows: np.ndarray  # rows of the held-out episodes
    val_episodes: tuple[int, ...]


def split_episodes(episode_index: np.ndarray, val_episodes: int, seed: int) -> EpisodeSplit:
    """Hold `val_episodes` whole episodes out, drawn with `seed` (the same draw on every rank and on resume)."""
    episodes = np.unique(episode_index)
    if val_episodes < 0:
        raise ValueError(f"data.val_episodes must be 0 or more, got {val_episodes}")
    if val_episodes >= len(episodes):
        raise ValueError(f"data.val_episodes={val_episodes} leaves no episode to train on: the dataset has "
                         f"{len(episodes)}")
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(episodes, size=val_episodes, replace=False)) if val_episodes else episodes[:0]
    is_val = np.isin(episode_index, held)
    return EpisodeSplit(np.flatnonzero(~is_val), np.flatnonzero(is_val), tuple(int(e) for e in held))


def spaced(rows: np.ndarray, count: int = VAL_FRAMES) -> list[int]:
    """At most `count` rows, evenly spaced (every episode's start, middle and end are represented)."""
    if len(rows) <= count:
        return [int(r) for r in rows]
    return [int(rows[i]) for i in np.linspace(0, len(rows) - 1, count).round().astype(int)]


def _batches(rows: list[int], size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


@torch.no_grad()
def action_l1(policy, frames, rows: list[int], batch_size: int, seed: int = 0) -> float:
    """Mean |act - demo| over the unpadded steps of each row's chunk, raw action units (a sampler that draws
    noise draws it from `seed`, so the score replays)."""
    total, count = 0.0, 0
    generator = torch.Generator().manual_seed(seed)
    for part in _batches(rows, batch_size):
        batch = frames.batch(part)
        predicted = torch.from_numpy(policy.act(batch["images"], batch["state"], batch["task"], generator))
        keep = ~batch["action_pad"]  # (B, chunk)
        err = (predicted - batch["action"].float()).abs()[keep]
        total, count = total + float(err.sum()), count + err.numel()
    return total / max(count, 1)


@torch.no_grad()
def validation_loss(policy, frames, rows: list[int], batch_size: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    losses, weights = [], []
    for part in _batches(rows, batch_size):
        loss, _ = policy.loss(frames.batch(part), generator, augment=False)
        losses.append(float(loss))
        weights.append(len(part))
    return float(np.average(losses, weights=weights))


def validate(policy, frames, split: EpisodeSplit, batch_size: int, seed: int, autocast) -> dict[str, float]:
    """The held-out scores, the policy left in the mode it was in."""
    was_training = policy.training
    policy.eval()
    try:
        with autocast():
            val = spaced(split.val_rows)
            return {"val_loss": validation_loss(policy, frames, val, batch_size, seed),
                    "val_action_l1": action_l1(policy, frames, val, batch_size, seed),
                    "train_action_l1": action_l1(policy, frames, spaced(split.train_rows, len(val)), batch_size, seed)}
    finally:
        policy.train(was_training)
