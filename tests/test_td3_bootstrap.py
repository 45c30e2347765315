"""Residual TD3's bootstrap without a simulator: the replay links each decision to the next one's
features, the target takes the smaller of the twin target critics, and a critic-warmup iteration
(train_actor=False) leaves the residual actor alone."""
import numpy as np
import pytest
import torch

from vla.random_policy import random_policy
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode
from vla.rl.td3 import ResidualTD3


def _learner(**td3) -> ResidualTD3:
    policy = random_policy({"backbone": {"image_size": 32},
                            "head": {"type": "residual", "chunk_size": 2, "residual": {"max_residual": 2.0}},
                            "rl": {"algo": "td3", "lr": 1e-3, "critic_lr": 1e-3, "gamma": 0.9,
                                   "td3": {"batch_size": 8, **td3}}})
    policy.freeze_base()
    return ResidualTD3(policy, policy.cfg.rl)


def _episode(learner: ResidualTD3, length: int) -> EpisodeRollout:
    """Decision j's features, base and residual chunks are all filled with j + 1 (told apart in the replay)."""
    head = learner.policy.head
    hidden, chunk = learner.policy.backbone.hidden_size, (head.chunk_size, head.action_dim)
    decisions = [Decision(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(8, np.float32),
                          {"features": torch.full((hidden,), j + 1.0), "base_action": torch.full(chunk, j + 1.0),
                           "residual": torch.full(chunk, 0.1 * (j + 1))}, 0.0, 0.0, float(j == length - 1))
                 for j in range(length)]
    return EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, 0), "pick up the bowl", decisions, success=True,
                          steps=2 * length)


def test_one_step_replay_bootstraps_from_the_next_decision():
    """With n_step=1 each decision's target reads the *next* decision's features and base chunk; reading its
    own would make Q(s) bootstrap from itself and never propagate the success reward backward."""
    learner = _learner(n_step=1)
    assert learner.add([_episode(learner, 3)]) == 3
    data = {k: v[:learner.replay.size] for k, v in learner.replay.data.items()}
    assert data["features"][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert data["next_features"][:2, 0].tolist() == [2.0, 3.0]  # decision t bootstraps from t + 1
    assert data["next_base"][:2, 0, 0].tolist() == [2.0, 3.0]
    assert data["discount"].tolist() == pytest.approx([0.9, 0.9, 0.0])  # the last one is terminal
    assert data["reward"].tolist() == [0.0, 0.0, 1.0]


def _constant_target_critics(learner: ResidualTD3, q1: float, q2: float) -> None:
    """Target critics that answer q1 and q2 whatever they are asked."""
    with torch.no_grad():
        for net, value in zip(learner.critic_target.q, (q1, q2)):
            net[-1].weight.zero_()
            net[-1].bias.fill_(value)


def test_target_uses_the_smaller_target_critic():
    """TD3's clipped double-Q: the target takes min(Q'1, Q'2); the larger one reintroduces the overestimation
    that makes Q diverge on sparse rewards."""
    learner = _learner(n_step=1, updates_per_iter=1)
    learner.add([_episode(learner, 3)])
    data = {k: v[:3].clone() for k, v in learner.replay.data.items()}
    data["reward"], data["discount"] = torch.zeros(3), torch.full((3,), 0.9)  # every row bootstraps: target = 0.9 min Q'
    learner.replay.size, learner.replay.cursor = 0, 0
    learner.replay.add(data)
    _constant_target_critics(learner, 1.0, 3.0)
    logs = learner.train(torch.Generator().manual_seed(0), train_actor=False)
    assert logs["target_q"] == pytest.approx(0.9 * 1.0, rel=1e-5)
    _constant_target_critics(learner, 5.0, 2.0)  # whichever of the two is smaller
    logs = learner.train(torch.Generator().manual_seed(0), train_actor=False)
    assert logs["target_q"] == pytest.approx(0.9 * 2.0, rel=1e-5)


def test_critic_warmup_leaves_the_actor_untouched():
    """train_actor=False (the critic-warmup iterations) must train the critics only: an actor that climbs an
    untrained critic walks the residual off before Q means anything."""
    learner = _learner(n_step=1, updates_per_iter=4, policy_delay=2)
    learner.add([_episode(learner, 3)])
    mean_net = learner.policy.head.mean_net
    before = [p.detach().clone() for p in mean_net.parameters()]
    target_before = [p.detach().clone() for p in learner.actor_target.parameters()]
    critic_before = [p.detach().clone() for p in learner.critic.parameters()]
    logs = learner.train(torch.Generator().manual_seed(0), train_actor=False)
    assert "actor_loss" not in logs and "residual_rms" not in logs
    assert all(torch.equal(a, b) for a, b in zip(before, mean_net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target_before, learner.actor_target.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic_before, learner.critic.parameters()))  # critics did train
    logs = learner.train(torch.Generator().manual_seed(0), train_actor=True)  # and the actor trains once allowed
    assert "actor_loss" in logs and not all(torch.equal(a, b) for a, b in zip(before, mean_net.parameters()))
