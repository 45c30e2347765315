"""The learned sampling temperature of the bin-token heads (`head.learn_temperature`): RL starts from
exactly the BC policy's log-probs, the temperatures get their own Adam rate, and one update lowers the
temperature when the advantaged chunks are the most likely bins and raises it when they are unlikely ones."""
import numpy as np
import pytest
import torch

from vla.checkpoint import save_policy
from vla.heads.temperature import TokenTemperature
from vla.rl.buffer import flatten
from vla.rl.objective import make_optimizer, update
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode
from vla.rl.prepare import prepare_policy
from vla.random_policy import random_policy

HEADS = {"oft_tokens": {"type": "oft", "oft_output": "tokens"}, "tokenized": {"type": "tokenized"}}


def _policy(head: dict, **rl):
    return random_policy({"backbone": {"image_size": 32},
                          "head": {"chunk_size": 2, "learn_temperature": True, **head},
                          "rl": {"algo": "grpo", "epochs": 4, "minibatch_size": 8, "lr": 0.0, "target_kl": None,
                                 "temperature_lr": 0.05, **rl}})


def _inputs(rows: int):
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 255, (rows, 2, 32, 32, 3), dtype=np.uint8))
    states = torch.from_numpy(rng.normal(size=(rows, 8)).astype(np.float32))
    return images, states, ["pick up the bowl"] * rows


def _batch(policy, bins: torch.Tensor, advantages: list[float]):
    """One-decision episodes whose chunks are `bins`, with their log-probs under `policy`."""
    images, states, instructions = _inputs(len(bins))
    with torch.no_grad():
        log_prob = policy.head.evaluate(policy.build_prefix(images, states, instructions), {"bins": bins})[0]
    episodes = [EpisodeRollout(PlannedEpisode("libero_spatial", 0, 0, 0), instructions[j],
                               [Decision(images[j].numpy(), states[j].numpy(), {"bins": bins[j]}, float(log_prob[j]),
                                         0.0, 0.0)]) for j in range(len(bins))]
    return flatten(episodes, [np.array([a]) for a in advantages], [np.zeros(1)] * len(bins))


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("greedy_advantage, colder", [(1.0, True), (-1.0, False)])
def test_one_update_moves_the_temperature_towards_the_advantaged_bins(head, greedy_advantage, colder):
    policy = _policy(HEADS[head])
    images, states, instructions = _inputs(4)
    with torch.no_grad():
        greedy = policy.head.tokens.to_bins(policy.head.sample(policy.build_prefix(images, states, instructions)))
    greedy = greedy.reshape(4, -1)
    uniform = torch.randint(0, policy.head.tokens.num_bins, greedy.shape, generator=torch.Generator().manual_seed(0))
    # rows 0-1: the most likely bins; rows 2-3: bins drawn uniformly (unlikely under the policy)
    bins = torch.cat([greedy[:2], uniform[2:]])
    batch = _batch(policy, bins, [greedy_advantage] * 2 + [-greedy_advantage] * 2)
    before = torch.tensor(policy.head.temperature.values())
    optimizer = make_optimizer(policy, policy.cfg.rl)
    assert [g["name"] for g in optimizer.param_groups] == ["actor", "temperature"]
    assert optimizer.param_groups[1]["lr"] == 0.05
    update(policy, batch, optimizer, policy.cfg.rl, torch.Generator().manual_seed(0))
    after = torch.tensor(policy.head.temperature.values())
    moved = (after < before) if colder else (after > before)
    assert bool(moved.all()), (before, after)


def test_rl_over_a_bc_checkpoint_starts_at_its_log_probs(tmp_path):
    bc = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, "oft_output": "tokens"},
                        "output_dir": str(tmp_path / "bc")})
    save_policy(bc, tmp_path / "ckpt")
    rl = prepare_policy(tmp_path / "ckpt", None, ["rl.algo=grpo", "head.learn_temperature=true"])
    assert rl.head.temperature.learned and rl.head.temperature.values() == [1.0] * 7
    assert "head.temperature.log_temperature" in rl.state_dict()
    images, states, instructions = _inputs(2)
    _, sample, _ = rl.act_rl(images, states, instructions, torch.Generator().manual_seed(0))
    with torch.no_grad():
        bc_log_prob = bc.head.evaluate(bc.build_prefix(images, states, instructions), sample.record)[0]
    assert torch.allclose(sample.log_prob, bc_log_prob, atol=1e-4)


def test_temperatures_index_action_dimensions_and_bad_settings_are_refused():
    temp = TokenTemperature(3, 0.5, learned=True)
    with torch.no_grad():
        temp.log_temperature.copy_(torch.log(torch.tensor([1.0, 2.0, 4.0])))
    logits = torch.ones(1, 7, 5)
    scaled = temp(logits)[0, :, 0]  # token t is action dimension t % 3
    assert torch.allclose(scaled, torch.tensor([1.0, 0.5, 0.25, 1.0, 0.5, 0.25, 1.0]))
    assert torch.allclose(temp.at(logits[:, 5], 5), torch.full((1, 5), 0.25))
    assert TokenTemperature(3, 0.5, learned=False)(logits).max() == 2.0
    with pytest.raises(ValueError, match="rl_temperature must be > 0"):
        TokenTemperature(3, 0.0, learned=False)
    with pytest.raises(ValueError, match="learn_temperature needs a bin-token head"):
        random_policy({"backbone": {"image_size": 32}, "head": {"type": "flow", "learn_temperature": True}})
