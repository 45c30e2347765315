"""Held-out episodes: never trained on (statistics included), scored at checkpoints, reproducible."""
import json

import numpy as np
import pytest
import torch

from vla.config import ConfigError, ExperimentConfig, merge
from vla.train.validation import spaced, split_episodes


def test_whole_episodes_are_held_out_by_a_seeded_draw():
    episode = np.repeat(np.arange(6), 10)
    split = split_episodes(episode, 2, seed=3)
    again = split_episodes(episode, 2, seed=3)
    assert len(split.val_episodes) == 2 and again.val_episodes == split.val_episodes
    assert np.array_equal(again.val_rows, split.val_rows) and np.array_equal(again.train_rows, split.train_rows)
    assert set(episode[split.val_rows]) == set(split.val_episodes)
    assert not set(episode[split.train_rows]) & set(split.val_episodes)
    assert len(split.train_rows) + len(split.val_rows) == 60
    assert {split_episodes(episode, 2, seed=s).val_episodes for s in range(8)} != {split.val_episodes}
    none = split_episodes(episode, 0, seed=3)
    assert none.val_episodes == () and len(none.train_rows) == 60
    with pytest.raises(ValueError, match="leaves no episode to train on: the dataset has 6"):
        split_episodes(episode, 6, seed=0)
    with pytest.raises(ValueError, match="0 or more"):
        split_episodes(episode, -1, seed=0)
    assert spaced(np.arange(1000), 5) == [0, 250, 500, 749, 999] and spaced(np.arange(3), 5) == [0, 1, 2]


def _cfg(out, dataset, **extra):
    return merge(ExperimentConfig(), {
        "backbone": {"image_size": 32}, "head": {"chunk_size": 4}, "output_dir": str(out),
        "data": {"dataset": str(dataset), "val_episodes": 1},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2, "save_every": 4, "val_every": 2,
                  **extra}})


def test_training_never_sees_the_held_out_episode_and_logs_its_scores(tmp_path, synthetic_dataset, monkeypatch):
    from vla.checkpoint import load_policy
    from vla.data.dataset import FrameCache, dataset_stats, episode_index, open_dataset
    from vla.train import trainer

    ds = open_dataset(str(synthetic_dataset))
    split = split_episodes(episode_index(ds), 1, seed=1)  # episode 1: rows 20-39, inside the training rows' range
    assert split.val_episodes == (1,)
    trained_on, scored = [], []
    plain = FrameCache.batch
    monkeypatch.setattr(FrameCache, "batch", lambda self, rows: trained_on.extend(rows) or plain(self, rows))

    def fake_validate(policy, frames, got, *args):
        scored.append(got)
        return {"val_loss": 1.0, "val_action_l1": 0.5, "train_action_l1": 0.25}

    monkeypatch.setattr(trainer, "validate", fake_validate)
    last = trainer.train(_cfg(tmp_path, synthetic_dataset, seed=1), str(synthetic_dataset))
    assert trained_on and not set(trained_on) & set(split.val_rows.tolist())
    assert len(scored) == 2 and np.array_equal(scored[0].val_rows, split.val_rows)  # steps 2 and 4
    logged = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "val_loss" in row] == [2, 4]
    # the normalization statistics come from the training episodes alone
    stats = load_policy(last).normalizer.stats["action"]
    expected = dataset_stats(ds, True, rows=split.train_rows)["action"]
    assert np.allclose(np.asarray(stats["q99"]), expected["q99"], atol=1e-6)
    assert not np.allclose(expected["mean"], dataset_stats(ds, True)["action"]["mean"])
    with pytest.raises(ConfigError, match="data.val_episodes=3 leaves no episode"):
        trainer.train(merge(_cfg(tmp_path / "all", synthetic_dataset), {"data": {"val_episodes": 3}}),
                      str(synthetic_dataset))


def test_the_scores_are_reproducible_and_measure_the_action_error(synthetic_dataset):
    """A policy that predicts each frame's demonstrated chunk scores 0 on both sides; the loss replays exactly."""
    from vla.data.dataset import FrameCache, episode_index, open_dataset, validate_dataset
    from vla.random_policy import random_policy
    from vla.train.validation import action_l1, validate

    ds = open_dataset(str(synthetic_dataset), chunk_size=4)
    frames = FrameCache(ds, validate_dataset(ds, ["agentview", "wrist"], 7, True), 4, image_size=32)
    split = split_episodes(episode_index(ds), 1, seed=0)
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4}}).train()
    first = validate(policy, frames, split, 8, 0, _no_autocast)
    again = validate(policy, frames, split, 8, 0, _no_autocast)
    assert first == again and policy.training and all(np.isfinite(v) and v > 0 for v in first.values())

    flow = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 4, "type": "flow"}})
    assert validate(flow, frames, split, 8, 0, _no_autocast) == validate(flow, frames, split, 8, 0, _no_autocast)

    rows = split.val_rows.tolist()
    demo = {r: frames.batch([r])["action"][0].numpy() for r in rows}
    by_state = {tuple(frames.batch([r])["state"][0].tolist()): demo[r] for r in rows}
    policy.act = lambda images, state, tasks, noise: np.stack([by_state[tuple(s.tolist())] for s in state])
    assert action_l1(policy, frames, rows, 8) == 0.0
    policy.act = lambda images, state, tasks, noise: np.stack([by_state[tuple(s.tolist())] + 0.5 for s in state])
    assert action_l1(policy, frames, rows, 8) == pytest.approx(0.5)


def _no_autocast():
    return torch.autocast("cpu", enabled=False)
