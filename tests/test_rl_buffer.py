"""The path from collected episodes to what the on-policy update trains on, without a simulator: each
decision keeps its own episode's instruction through flattening and minibatch selection, PPO's critic
targets are GAE returns, `vla rl`'s rollout step weighs GRPO episodes equally, and the entropy bonus
pushes the head's entropy up."""
import numpy as np
import pytest
import torch

from vla.config import ExperimentConfig, RLConfig
from vla.random_policy import random_policy
from vla.rl import ppo
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.rl.prepare import ALGOS
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode, RolloutStats
from vla.rl.trainer import _rollout
from rl_batches import one_decision_episodes


def _episode(rewards, instruction="put the bowl on the plate", group=0, values=None, first_state=0.0):
    """An episode whose decision j has state filled with first_state + j (to follow rows through reordering)."""
    values = values if values is not None else [0.0] * len(rewards)
    decisions = [Decision(np.zeros((1, 8, 8, 3), np.uint8), np.full(8, first_state + j, np.float32), {"x": torch.zeros(1)},
                          0.0, v, r) for j, (r, v) in enumerate(zip(rewards, values))]
    return EpisodeRollout(PlannedEpisode("libero_spatial", 0, 3, group), instruction, decisions,
                          success=bool(sum(rewards) > 0), steps=8 * len(rewards))


def test_flatten_gives_every_decision_its_own_episodes_instruction():
    """A batch of mixed tasks must condition each decision on the instruction it was acted on; otherwise
    multi-task RL trains every chunk against the first episode's task."""
    eps = [_episode([0, 1], "pick up the bowl", first_state=0), _episode([0, 0, 1], "open the drawer", first_state=10)]
    batch = flatten(eps, [np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(3)])
    assert batch.instructions == ["pick up the bowl"] * 2 + ["open the drawer"] * 3
    assert batch.states[:, 0].tolist() == [0, 1, 10, 11, 12]


def test_select_reorders_instructions_with_the_rows():
    """Shuffled minibatches must keep each row's instruction next to its images and state; a minibatch that
    took the first instructions would pair decisions with other episodes' tasks."""
    eps = [_episode([0, 1], "pick up the bowl", first_state=0), _episode([0, 0, 1], "open the drawer", first_state=10)]
    batch = flatten(eps, [np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(3)])
    mb = batch.select(torch.tensor([4, 0, 2]))
    assert mb.states[:, 0].tolist() == [12, 0, 10]
    assert mb.instructions == ["open the drawer", "pick up the bowl", "open the drawer"]
    assert mb.index.tolist() == [4, 0, 2]
    again = mb.select(torch.tensor([1, 0]))  # a selection of a selection still maps to the full batch
    assert again.instructions == ["pick up the bowl", "open the drawer"] and again.index.tolist() == [0, 4]


def test_ppo_critic_targets_are_gae_returns_not_advantages():
    """The critic regresses advantage + value (the lambda-return, before advantage normalization); regressing
    the advantage alone would teach it values near zero and break every later advantage."""
    eps = [_episode([0, 0, 1], values=[0.5, 0.6, 0.8]), _episode([0, 0, 0, 0], values=[0.3, 0.2, 0.4, 0.1])]
    cfg = RLConfig(gamma=0.9, gae_lambda=0.5)
    kept, advs, rets, _ = ppo.advantages(eps, cfg)
    for e, ret in zip(eps, rets):
        r = np.array([d.reward for d in e.decisions])
        v = np.array([d.value for d in e.decisions])
        adv, expected = ppo.gae(r, v, cfg.gamma, cfg.gae_lambda)
        np.testing.assert_allclose(ret, adv + v)
        np.testing.assert_allclose(ret, expected)
    batch = flatten(kept, advs, rets)  # what the critic's loss reads
    np.testing.assert_allclose(batch.returns.numpy(), np.concatenate(rets), rtol=1e-6)
    assert not np.allclose(batch.returns.numpy(), batch.advantages.numpy())


class _FakePool:
    """Stands in for the env workers: hands back fixed episodes as if just collected."""

    def __init__(self, episodes):
        self.episodes = episodes

    def collect(self, actor, plan, generator):
        return self.episodes, RolloutStats(env_steps=sum(e.steps for e in self.episodes), seconds=1.0,
                                           policy_seconds=0.5, restarts=0, dropped=0)


class _Actor:
    def eval(self):
        return self


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_rollout_step_weighs_grpo_episodes_equally(algo):
    """`vla rl`'s rollout step: with GRPO a short success and a long failure of one group must cancel (each
    episode weighs the same), or the longer failures push every sampled action down; PPO weighs decisions."""
    eps = [_episode([0, 1], group=0), _episode([0, 0, 0, 0], group=0)]
    cfg = ExperimentConfig(rl=RLConfig(algo=algo))
    plan = [e.plan for e in eps]
    row, batch, first = _rollout(_Actor(), _FakePool(eps), cfg, ALGOS[algo], plan, torch.Generator(), 1)
    assert row["episodes"] == 2 and first is None and len(batch) == 6
    if algo == "grpo":
        assert batch.weights.tolist() == pytest.approx([1.5, 1.5, 0.75, 0.75, 0.75, 0.75])
        assert float((batch.weights * batch.advantages).sum()) == pytest.approx(0, abs=1e-4)
    else:
        assert batch.weights.tolist() == [1.0] * 6 and "explained_variance" in row


def test_entropy_bonus_raises_the_heads_entropy():
    """rl.entropy_coef > 0 with no advantage signal: the only gradient is the bonus, which must make the
    sampling distribution broader (a sign slip would collapse exploration instead)."""
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, "type": "oft", "oft_output": "tokens"},
                            "rl": {"algo": "grpo", "epochs": 1, "minibatch_size": 4, "lr": 1e-3, "entropy_coef": 1.0,
                                   "target_kl": None}})
    (images, states, instructions), sample, episodes = one_decision_episodes(policy, [0.0] * 4, seed=4)
    batch = flatten(episodes, [np.zeros(1)] * 4, [np.zeros(1)] * 4)

    def entropy() -> float:
        with torch.no_grad():
            return float(policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[1].mean())

    before = entropy()
    logs = update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))
    assert logs["gradient_steps"] == 1 and abs(logs["pg_loss"]) < 1e-6
    after = entropy()
    assert after > before, (before, after)
