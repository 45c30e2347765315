"""Off-policy residual RL (rl.algo=td3) without a simulator: n-step targets by hand, the replay ring,
a learner that finds the rewarded direction of the residual, and its exact checkpoint round trip."""
import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla.random_policy import random_policy
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode
from vla.rl.td3 import ReplayBuffer, ResidualTD3, nstep_targets


def test_nstep_targets_by_hand():
    sums, boot, disc = nstep_targets(np.array([0.0, 0.0, 1.0]), n=2, gamma=0.9)
    np.testing.assert_allclose(sums, [0.0, 0.9, 1.0])
    assert boot.tolist() == [2, -1, -1]  # decision 0 bootstraps from 2; 1 and 2 reach the end (terminal)
    np.testing.assert_allclose(disc, [0.81, 0.0, 0.0])
    sums, boot, disc = nstep_targets(np.array([0.0, 0.0, 0.0, 0.0]), n=1, gamma=0.5)
    assert boot.tolist() == [1, 2, 3, -1] and disc.tolist() == [0.5, 0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="n_step must be >= 1"):
        nstep_targets(np.zeros(2), 0, 0.9)


def test_replay_ring_keeps_the_newest_rows_and_round_trips():
    ring = ReplayBuffer(5)
    ring.add({"reward": torch.arange(3.0), "features": torch.arange(3.0)[:, None].repeat(1, 2)})
    ring.add({"reward": torch.arange(3.0, 7.0), "features": torch.arange(3.0, 7.0)[:, None].repeat(1, 2)})
    assert ring.size == 5 and sorted(ring.data["reward"].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    ring.FIELDS = ("reward", "features")
    copy = ReplayBuffer(5)
    copy.FIELDS = ("reward", "features")
    copy.load(ring.state())
    assert torch.equal(copy.data["reward"], ring.data["reward"]) and copy.cursor == ring.cursor
    with pytest.raises(ValueError, match="holds 5 decisions, rl.td3.replay_size is 4"):
        small = ReplayBuffer(4)
        small.FIELDS = ("reward", "features")
        small.load(ring.state())
    empty = ReplayBuffer(5)  # checkpointed before anything was added (every episode crashed): resumes empty
    empty.load(ReplayBuffer(5).state())
    assert empty.size == 0 and not empty.data


def _residual_policy(max_residual=2.0, **td3):
    policy = random_policy({"backbone": {"image_size": 32},
                            "head": {"type": "residual", "chunk_size": 2, "residual": {"max_residual": max_residual}},
                            "rl": {"algo": "td3", "lr": 1e-3, "critic_lr": 1e-3,
                                   "td3": {"batch_size": 32, "updates_per_iter": 300, **td3}}})
    policy.freeze_base()
    return policy


def _episodes(policy, count: int = 48, seed: int = 0) -> list[EpisodeRollout]:
    """One-decision episodes whose reward is 1 exactly when the sampled residual's first entry is positive."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 255, (count, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(count, 8)).astype(np.float32))
    _, sample, _ = policy.act_rl(images, states, ["pick up the bowl"] * count, torch.Generator().manual_seed(seed))
    out = []
    for j in range(count):
        record = {k: v[j] for k, v in sample.record.items()}
        reward = float(record["residual"][0, 0] > 0)
        out.append(EpisodeRollout(PlannedEpisode("libero_spatial", 0, j, j), "pick up the bowl",
                                  [Decision(images[j].numpy(), states[j].numpy(), record, float(sample.log_prob[j]), 0.0,
                                            reward)], success=bool(reward), steps=2))
    return out


def test_td3_moves_the_residual_toward_what_was_rewarded():
    torch.manual_seed(0)
    policy = _residual_policy()
    learner = ResidualTD3(policy, policy.cfg.rl)
    episodes = _episodes(policy)
    assert learner.add(episodes) == 48 and learner.replay.size == 48
    base_before = [p.detach().clone() for p in policy.head.base.parameters()]
    feats = torch.stack([e.decisions[0].record["features"] for e in episodes])
    images = torch.from_numpy(np.stack([e.decisions[0].images for e in episodes]))
    states = torch.from_numpy(np.stack([e.decisions[0].state for e in episodes]))
    with torch.no_grad():  # the recorded features are the frozen backbone's, as acting saw them
        torch.testing.assert_close(feats, policy.build_prefix(images, states, ["pick up the bowl"] * 48).pooled())
    base = torch.stack([e.decisions[0].record["base_action"] for e in episodes])
    with torch.no_grad():
        before = learner._mean(policy.head.mean_net, feats, base)[:, 0, 0]
    assert torch.all(before == 0)  # zero-initialised residual: the base alone
    logs = learner.train(torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = learner._mean(policy.head.mean_net, feats, base)
        q_pos = learner.critic(feats, base, torch.full_like(after, 0.5))[0]
        q_neg = learner.critic(feats, base, torch.full_like(after, -0.5))[0]
    assert after[:, 0, 0].mean() > 0.05, after[:, 0, 0]  # pushed toward the rewarded sign
    assert (q_pos > q_neg).float().mean() > 0.9  # the critic learned which way the reward lies
    assert logs["gradient_steps"] == 300 and np.isfinite(logs["critic_loss"])
    assert all(torch.equal(a, b) for a, b in zip(base_before, policy.head.base.parameters()))  # base frozen


def test_td3_state_round_trips_for_a_kill_9_resume(tmp_path):
    policy = _residual_policy(updates_per_iter=5)
    learner = ResidualTD3(policy, policy.cfg.rl)
    learner.add(_episodes(policy, count=8))
    learner.train(torch.Generator().manual_seed(0))
    tensors, meta = learner.state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "td3.safetensors"))  # as _save does
    tensors = load_file(str(tmp_path / "td3.safetensors"))
    resumed = copy.deepcopy(policy)  # what the checkpoint's model.safetensors restores
    fresh = ResidualTD3(resumed, resumed.cfg.rl)
    fresh.load_state(tensors, meta)
    for name in ("critic", "critic_target", "actor_target"):
        for a, b in zip(getattr(learner, name).state_dict().values(), getattr(fresh, name).state_dict().values()):
            assert torch.equal(a, b)
    assert fresh.steps == learner.steps == 5 and fresh.replay.size == 8
    assert fresh.critic_opt.state_dict()["state"][0]["step"] == learner.critic_opt.state_dict()["state"][0]["step"]
    # the same sampled batch gives the same next update on both
    a = learner.train(torch.Generator().manual_seed(3))
    b = fresh.train(torch.Generator().manual_seed(3))
    assert a["critic_loss"] == pytest.approx(b["critic_loss"], rel=1e-6)


def test_td3_needs_a_residual_over_a_frozen_base():
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"type": "residual", "chunk_size": 2}})
    with pytest.raises(ValueError, match="frozen base"):
        ResidualTD3(policy, policy.cfg.rl)


def test_td3_needs_a_bounded_residual_and_keeps_the_mean_inside_it():
    with pytest.raises(ValueError, match="bounded residual"):
        ResidualTD3(_residual_policy(max_residual=None), _residual_policy().cfg.rl)
    with pytest.raises(ValueError, match="max_residual must be a positive bound"):
        _residual_policy(max_residual=0.0)
    policy = _residual_policy(max_residual=1.5)
    learner = ResidualTD3(policy, policy.cfg.rl)
    episodes = _episodes(policy, count=4)
    feats = torch.stack([e.decisions[0].record["features"] for e in episodes])
    base = torch.stack([e.decisions[0].record["base_action"] for e in episodes])
    with torch.no_grad():
        policy.head.mean_net[-1].bias.fill_(100.0)  # an actor that has run far off: the mean saturates at the bound
        mean = learner._mean(policy.head.mean_net, feats, base)
        torch.testing.assert_close(mean, torch.full_like(mean, 1.5))
        torch.testing.assert_close(policy.head.bound(torch.tensor([0.0, 1e-3])), torch.tensor([0.0, 1e-3]))
