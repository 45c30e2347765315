"""RL algorithms without a simulator: GAE and group advantages against hand computation, the
clipped objective, and for every stochastic head one real `update()` (the code `vla rl` runs) on a
fixed batch that raises the log-prob of the advantaged chunk and lowers the disadvantaged one."""
import numpy as np
import pytest
import torch

from vla.config import RLConfig
from vla.model import Policy
from vla.rl import grpo, ppo, rft
from vla.rl.buffer import flatten
from vla.rl.objective import clip_range, clipped_surrogate, make_optimizer, update
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode
from vla.random_policy import random_policy
from rl_batches import one_decision_episodes


def _episode(rewards, group=0, values=None, instruction="put the bowl on the plate"):
    values = values if values is not None else [0.0] * len(rewards)
    decisions = [Decision(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(8, np.float32), {"x": torch.zeros(1)}, 0.0, v, r)
                 for r, v in zip(rewards, values)]
    return EpisodeRollout(PlannedEpisode("libero_spatial", 0, 3, group), instruction, decisions,
                          success=bool(sum(rewards) > 0), steps=8 * len(rewards))


def test_gae_matches_hand_computation():
    r, v = np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.6, 0.8])
    g, lam = 0.9, 0.5
    d2 = 1.0 - 0.8
    d1 = 0.0 + g * 0.8 - 0.6
    d0 = 0.0 + g * 0.6 - 0.5
    a2, a1 = d2, d1 + g * lam * d2
    a0 = d0 + g * lam * a1
    adv, ret = ppo.gae(r, v, g, lam)
    assert np.allclose(adv, [a0, a1, a2]) and np.allclose(ret, adv + v)
    # lambda = 1 and a zero critic: the advantage is the discounted return
    adv, _ = ppo.gae(r, np.zeros(3), g, 1.0)
    assert np.allclose(adv, [g * g, g, 1.0])


def test_ppo_advantages_are_normalized_over_the_batch():
    eps = [_episode([0, 0, 1]), _episode([0, 0, 0, 0])]
    kept, advs, rets, _ = ppo.advantages(eps, RLConfig())
    flat = np.concatenate(advs)
    assert len(kept) == 2 and abs(flat.mean()) < 1e-9 and abs(flat.std() - 1) < 1e-6
    assert advs[0][-1] > 0 > advs[1][-1]


def test_grpo_group_advantages_and_filtering():
    eps = [_episode([0, 1], group=0), _episode([0, 0, 0], group=0), _episode([0, 1], group=0), _episode([0, 0], group=0),
           _episode([0, 1], group=1), _episode([1], group=1),  # all success: no signal
           _episode([0, 0], group=2), _episode([0, 0], group=2)]  # all failure: no signal
    kept, advs, _, logs = grpo.advantages(eps, RLConfig(algo="grpo"))
    assert logs == {"groups_filtered": 2, "groups_kept": 1} and len(kept) == 4
    assert [a[0] for a in advs] == pytest.approx([1, -1, 1, -1], abs=1e-5)  # (R - mean) / std within the group
    assert all(len(a) == len(e.decisions) and np.all(a == a[0]) for a, e in zip(advs, kept))  # one value per episode
    kept, _, _, logs = grpo.advantages(eps, RLConfig(algo="grpo", filter_groups=False))
    assert len(kept) == 8 and logs["groups_filtered"] == 0


def test_grpo_weighs_episodes_equally_so_a_groups_advantages_cancel():
    # a short success and a long failure: per decision the failure's 4 decisions outvote the
    # success's 2 and the batch pushes every sampled action down; per episode they cancel
    eps = [_episode([0, 1], group=0), _episode([0, 0, 0, 0], group=0)]
    kept, advs, rets, _ = grpo.advantages(eps, RLConfig(algo="grpo"))
    by_decision = flatten(kept, advs, rets)
    by_episode = flatten(kept, advs, rets, per_episode=True)
    assert float((by_decision.weights * by_decision.advantages).sum()) == pytest.approx(-2, abs=1e-4)
    assert float((by_episode.weights * by_episode.advantages).sum()) == pytest.approx(0, abs=1e-4)
    assert by_episode.weights.tolist() == pytest.approx([1.5, 1.5, 0.75, 0.75, 0.75, 0.75])
    assert float(by_episode.weights.mean()) == pytest.approx(1.0)


def test_grpo_plans_groups_of_one_init_state():
    plan = grpo.plan_groups([("libero_spatial", 0), ("libero_spatial", 1)], list(range(50)), 3, 4,
                            np.random.default_rng(0))
    assert len(plan) == 12
    for g in range(3):
        members = plan[4 * g:4 * g + 4]
        assert len({(p.task, p.init_state, p.group, p.seed) for p in members}) == 1  # one scene per group
    assert len({p.seed for p in plan}) == 3  # fresh reset seeds: RL sees the fixture variety eval does
    assert all(1_000 <= p.seed < 40_000 for p in plan)  # ManiSkill's s * 100000 + i must stay under 2**32
    fixed = grpo.plan_groups([("libero_spatial", 0)], [0], 3, 2, np.random.default_rng(0), seeds=[7, 8])
    assert {p.seed for p in fixed} <= {7, 8}


def test_clip_ranges_and_surrogate():
    assert clip_range(RLConfig(algo="ppo")) == pytest.approx((0.8, 1.2))
    assert clip_range(RLConfig(algo="grpo")) == pytest.approx((0.8, 1.28))  # clip-higher
    with pytest.raises(ValueError, match="clip_low"):
        clip_range(RLConfig(clip_low=1.5))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    log_ratio = torch.log(torch.tensor([1.5, 1.1, 0.5, 0.9]))
    loss, frac = clipped_surrogate(log_ratio, adv, 0.8, 1.2)
    # positive advantage gains at most 1.2x; negative advantage loses at most down to 0.8x
    assert float(loss) == pytest.approx(-(1.2 + 1.1 - 0.8 - 0.9) / 4)
    assert float(frac) == pytest.approx(0.5)
    # where the ratio moved against the advantage the unclipped term is the smaller one and is kept whole:
    # 1.5x an action with A=-1 costs -1.5 (not the clipped -1.2), 0.5x an action with A=+1 earns 0.5 (not 0.8)
    loss, frac = clipped_surrogate(torch.log(torch.tensor([1.5, 0.5])), torch.tensor([-1.0, 1.0]), 0.8, 1.2)
    assert float(loss) == pytest.approx(-(-1.5 + 0.5) / 2) and float(frac) == pytest.approx(1.0)
    # and its gradient flows through those ratios (the clipped term would give none)
    log_ratio = torch.log(torch.tensor([1.5, 0.5])).requires_grad_()
    clipped_surrogate(log_ratio, torch.tensor([-1.0, 1.0]), 0.8, 1.2)[0].backward()
    assert torch.allclose(log_ratio.grad, torch.tensor([1.5 / 2, -0.5 / 2]))


HEADS = {
    "tokenized": {"type": "tokenized"},
    "oft_tokens": {"type": "oft", "oft_output": "tokens"},
    "flow_sde": {"type": "flow", "flow": {"steps": 4}},
    "flow_noise": {"type": "flow", "flow": {"steps": 4, "rl_noise": "noise"}},
    "flow_sde_one_step": {"type": "flow", "flow": {"steps": 4, "rl_steps": "one"}},
    "diffusion": {"type": "diffusion", "diffusion": {"inference_steps": 4}},
    "residual": {"type": "residual"},
}


def _policy(head: dict, algo: str) -> Policy:
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2, "value_head": algo == "ppo", **head},
                            "rl": {"algo": algo, "epochs": 1, "minibatch_size": 4, "lr": 1e-4}})
    if head["type"] == "residual":
        policy.freeze_base()
    return policy


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
@pytest.mark.parametrize("head", list(HEADS))
def test_update_raises_the_log_prob_of_the_advantaged_chunk(head, algo):
    if algo == "grpo" and head not in ("tokenized", "flow_sde"):
        pytest.skip("GRPO shares PPO's update; two heads cover it")
    policy = _policy(HEADS[head], algo)
    (images, states, instructions), sample, episodes = one_decision_episodes(policy, [1.0, 0.0, 0.5, 0.5], seed=1)
    kept, advs, rets, _ = (ppo if algo == "ppo" else grpo).advantages(episodes, policy.cfg.rl)
    assert advs[0][0] > 0 > advs[1][0]
    batch = flatten(kept, advs, rets)
    before = policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[0].detach()
    assert torch.allclose(before, sample.log_prob, rtol=1e-3, atol=1e-3)  # on-policy: every ratio starts at 1
    logs = update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0),
                  train_critic=algo == "ppo")
    with torch.no_grad():
        after = policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[0]
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert logs["clip_frac"] == 0.0 and np.isfinite(logs["pg_loss"])
    if algo == "ppo":
        assert logs["value_loss"] > 0


def test_kl_penalty_pulls_the_policy_back_toward_the_reference():
    """rl.kl_coef > 0 with no advantage signal: the only gradient is the k3 KL to the frozen starting policy,
    so a policy that has drifted from it moves back (and the penalty is logged)."""
    from vla.rl.objective import reference_copy

    policy = _policy(HEADS["oft_tokens"], "grpo")
    reference = reference_copy(policy)
    with torch.no_grad():  # drift away from the reference
        policy.head.slots.add_(0.5 * torch.randn(policy.head.slots.shape, generator=torch.Generator().manual_seed(0)))
    (images, states, instructions), sample, episodes = one_decision_episodes(policy, [0.0] * 4, seed=2)
    batch = flatten(episodes, [np.zeros(1, np.float32)] * 4, [np.zeros(1, np.float32)] * 4)

    def kl_to_reference() -> float:
        with torch.no_grad():
            lp = policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[0]
            ref = reference.head.evaluate(reference.build_prefix(images, states, instructions), sample.record)[0]
        return float(((ref - lp).exp() - (ref - lp) - 1).mean())

    cfg = policy.cfg.rl
    cfg.kl_coef, cfg.lr, cfg.epochs, cfg.target_kl = 1.0, 3e-3, 8, None
    before = kl_to_reference()
    logs = update(policy, batch, make_optimizer(policy, cfg), cfg, torch.Generator().manual_seed(0), reference=reference)
    assert logs["kl_ref"] > 0 and abs(logs["pg_loss"]) < 1e-6
    assert kl_to_reference() < 0.7 * before, (before, kl_to_reference())


def test_rft_keeps_only_successful_episodes_with_advantage_one():
    eps = [_episode([0, 1]), _episode([0, 0, 0]), _episode([0, 0, 1])]
    kept, advs, rets, logs = rft.advantages(eps, RLConfig(algo="rft"))
    assert kept == [eps[0], eps[2]] and logs == {"episodes_kept": 2}
    assert [a.tolist() for a in advs] == [[1.0, 1.0], [1.0, 1.0, 1.0]]
    assert rft.advantages([_episode([0, 0])], RLConfig(algo="rft"))[0] == []  # nothing succeeded: nothing to learn


@pytest.mark.parametrize("head", ["oft_tokens", "flow_sde", "diffusion", "residual"])
def test_rft_update_raises_the_likelihood_of_the_successful_chunks(head):
    """Self-imitation: the successful episodes' sampled chunks become more likely, failures are not in the batch."""
    policy = _policy(HEADS[head], "rft")
    policy.cfg.rl.epochs = 2
    (images, states, instructions), sample, episodes = one_decision_episodes(
        policy, [1.0, 1.0, 0.0, 0.0], seed=3, successes=[True, True, False, False])
    kept, advs, rets, _ = rft.advantages(episodes, policy.cfg.rl)
    assert len(kept) == 2
    before = policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[0].detach()
    logs = update(policy, flatten(kept, advs, rets), make_optimizer(policy, policy.cfg.rl), policy.cfg.rl,
                  torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = policy.head.evaluate(policy.build_prefix(images, states, instructions), sample.record)[0]
    assert torch.all(after[:2] > before[:2]), (before, after)
    assert logs["clip_frac"] == 0.0 and logs["gradient_steps"] >= 1


def test_rft_replay_keeps_the_last_successes_and_survives_a_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    def batch(n, start):
        eps = [_episode([0] * (n - 1) + [1], instruction=f"task {start + i}") for i in range(1)]
        for j, d in enumerate(eps[0].decisions):
            d.state = np.full(8, start + j, np.float32)
        kept, advs, rets, _ = rft.advantages(eps, RLConfig(algo="rft"))
        return flatten(kept, advs, rets)

    replay = rft.SuccessReplay(5)
    assert replay.add(None) is None and len(replay) == 0  # nothing succeeded yet
    assert len(replay.add(batch(3, 0))) == 3
    kept = replay.add(batch(4, 10))  # 7 decisions, the oldest 2 dropped
    assert len(kept) == 5 and kept.states[:, 0].tolist() == [2, 10, 11, 12, 13]
    assert replay.add(None) is kept  # an iteration without successes still trains on the replay
    tensors, meta = replay.state()
    save_file(tensors, str(tmp_path / "t.safetensors"))
    again = rft.SuccessReplay(5)
    again.load(load_file(str(tmp_path / "t.safetensors")), meta)
    assert torch.equal(again.batch.states, kept.states) and again.batch.instructions == kept.instructions
    assert torch.equal(again.batch.records["x"], kept.records["x"]) and torch.equal(again.batch.images, kept.images)
    with pytest.raises(ValueError, match="rl.rft_replay"):
        rft.SuccessReplay(0)


def _fixed_batch(policy: Policy, rows: int = 8):
    """A rollout of `rows` one-decision episodes with alternating advantages, sampled by `policy`."""
    _, _, episodes = one_decision_episodes(policy, [float(j % 2) for j in range(rows)], seed=2)
    return flatten(episodes, [np.array([1.0 if j % 2 else -1.0]) for j in range(rows)], [np.zeros(1)] * rows)


@pytest.mark.parametrize("target_kl, stops", [(None, False), (1e-4, True)])
def test_target_kl_ends_the_update_once_the_chunk_distribution_moved_that_far(target_kl, stops):
    policy = _policy(HEADS["oft_tokens"], "grpo")
    policy.cfg.rl.lr, policy.cfg.rl.epochs, policy.cfg.rl.minibatch_size = 3e-3, 4, 2
    policy.cfg.rl.target_kl = target_kl
    batch = _fixed_batch(policy)
    logs = update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))
    if stops:  # the first minibatch is on-policy (KL 0), so at least one step is taken before the stop
        assert logs["kl_stopped"] == 1.0 and 1 <= logs["gradient_steps"] < 16
        assert logs["chunk_kl_max"] > 1.5 * target_kl
    else:
        assert logs["kl_stopped"] == 0.0 and logs["gradient_steps"] == 16  # 4 epochs x 4 minibatches
        assert logs["chunk_kl_max"] > 1.5 * 1e-4  # the same steps unchecked go that far and beyond


def test_target_kl_is_measured_from_where_an_overlapped_update_starts():
    """With rl.overlap the batch's log-probs are one update stale; the stop must not fire on that lag alone."""
    policy = _policy(HEADS["oft_tokens"], "grpo")
    policy.cfg.rl.lr, policy.cfg.rl.epochs, policy.cfg.rl.minibatch_size = 3e-3, 1, 2
    batch = _fixed_batch(policy)
    update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(0))
    policy.cfg.rl.target_kl, policy.cfg.rl.lr = 1e-3, 1e-7  # stale batch, then a near-zero step
    policy.cfg.rl.overlap = True
    logs = update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(1))
    assert logs["kl_stopped"] == 0.0 and logs["gradient_steps"] == 4
    policy.cfg.rl.overlap = False  # measured against the stale sampling log-probs it would stop at once
    logs = update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(1))
    assert logs["kl_stopped"] == 1.0 and logs["gradient_steps"] == 0
    rft_policy = _policy(HEADS["oft_tokens"], "rft")  # an RFT replay's chunks were sampled iterations ago
    rft_policy.load_state_dict(policy.state_dict())
    rft_policy.cfg.rl.target_kl, rft_policy.cfg.rl.lr, rft_policy.cfg.rl.epochs = 1e-3, 1e-7, 1
    rft_policy.cfg.rl.minibatch_size, rft_policy.cfg.rl.rft_replay = 2, 100
    logs = update(rft_policy, batch, make_optimizer(rft_policy, rft_policy.cfg.rl), rft_policy.cfg.rl,
                  torch.Generator().manual_seed(1))
    assert logs["kl_stopped"] == 0.0 and logs["gradient_steps"] == 4
    with pytest.raises(ValueError, match="rl.target_kl must be > 0"):
        policy.cfg.rl.target_kl = 0.0
        update(policy, batch, make_optimizer(policy, policy.cfg.rl), policy.cfg.rl, torch.Generator().manual_seed(1))


def test_rft_replay_is_refused_for_other_algorithms_and_resumes_with_the_run(tmp_path):
    from vla.config import ConfigError, ExperimentConfig
    from vla.rl import prepare, run_state

    with pytest.raises(ConfigError, match="rl.rft_replay"):
        prepare.check_config(ExperimentConfig(rl=RLConfig(algo="ppo", rft_replay=100)))
    policy = _policy(HEADS["oft_tokens"], "rft")
    optimizer = make_optimizer(policy, policy.cfg.rl)
    replay = rft.SuccessReplay(100)
    replay.add(_fixed_batch(policy, rows=4))
    state = {"iteration": 3, "history": [], "evals": {}}
    run_state.save_state(tmp_path, policy, optimizer, state, None, replay)
    resumed = rft.SuccessReplay(100)
    assert run_state.resume_state(tmp_path, policy, optimizer, None, resumed)["iteration"] == 3
    assert len(resumed) == 4 and torch.equal(resumed.batch.images, replay.batch.images)
    assert all(torch.equal(resumed.batch.records[k], replay.batch.records[k]) for k in replay.batch.records)
    with pytest.raises(ConfigError, match="without a success replay"):  # a run started without one
        run_state.save_state(tmp_path, policy, optimizer, {**state, "iteration": 4}, None, None)
        run_state.resume_state(tmp_path, policy, optimizer, None, rft.SuccessReplay(100))


def test_rl_resumes_only_the_experiment_its_directory_holds(tmp_path):
    """`make rl` run again with another rate into the same output would continue the old run's weights and
    compare its new "after" with the old settings' "before"; more iterations or other workers resume."""
    from vla.config import ConfigError, merge
    from vla.rl import run_state

    policy = _policy(HEADS["oft_tokens"], "grpo")
    optimizer = make_optimizer(policy, policy.cfg.rl)
    run_state.save_state(tmp_path, policy, optimizer, {"iteration": 2, "history": [], "evals": {}})
    trained = policy.cfg
    policy.cfg = merge(trained, {"rl": {"iterations": 40, "workers": 1, "eval_every": 5}, "device": "cpu"})
    assert run_state.resume_state(tmp_path, policy, optimizer)["iteration"] == 2
    for changed in ({"rl": {"lr": 1e-3}}, {"rl": {"eval_seeds": [8]}}, {"head": {"rl_temperature": 0.5}}):
        policy.cfg = merge(trained, changed)
        with pytest.raises(ConfigError, match="holds an RL run with other settings"):
            run_state.resume_state(tmp_path, policy, optimizer)
    # the same settings from another BC checkpoint of the same run (its config is the same): refused as well
    policy.cfg = trained
    run_state.save_state(tmp_path, policy, optimizer, {"iteration": 3, "history": [], "evals": {},
                                                       "source": "/runs/bc/checkpoints/step_0000500"})
    assert run_state.resume_state(tmp_path, policy, optimizer, source="/runs/bc/checkpoints/step_0000500")["iteration"] == 3
    with pytest.raises(ConfigError, match="started from /runs/bc/checkpoints/step_0000500; this one starts from"):
        run_state.resume_state(tmp_path, policy, optimizer, source="/runs/bc/checkpoints/step_0001000")


def test_batched_envs_are_refused_where_they_cannot_run(monkeypatch):
    from vla.config import ConfigError, ExperimentConfig
    from vla.rl import prepare
    from vla.rl.batched_rollout import BatchedEnvPool

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cfg, message in [
        (ExperimentConfig(sim="maniskill", rl=RLConfig(batched_envs=-1)), "must be >= 0"),
        (ExperimentConfig(sim="libero", rl=RLConfig(batched_envs=1)), "SIM=libero"),
        (ExperimentConfig(sim="maniskill", rl=RLConfig(batched_envs=1, ray="auto")), "one or the other"),
        (ExperimentConfig(sim="maniskill", rl=RLConfig(batched_envs=4)), "needs CUDA"),
    ]:
        with pytest.raises(ConfigError, match=message):
            prepare.check_config(cfg)
    prepare.check_config(ExperimentConfig(sim="maniskill", rl=RLConfig(batched_envs=1)))
    from vla.devices import Dist

    with pytest.raises(ConfigError, match="under torchrun"):
        prepare.check_replicas(ExperimentConfig(sim="maniskill", rl=RLConfig(batched_envs=1)), Dist(0, 2))
    pool, policy = BatchedEnvPool(2, 16), random_policy({"head": {"type": "flow"}})
    with pytest.raises(ValueError, match="suite 'maniskill'"):
        pool.collect(policy, [PlannedEpisode("libero_spatial", 0, 0, 0)], torch.Generator())
    with pytest.raises(ValueError, match=r"one task per run; the plan holds tasks \[0, 2\]"):
        pool.collect(policy, [PlannedEpisode("maniskill", 0, 0, 0), PlannedEpisode("maniskill", 2, 0, 1)],
                     torch.Generator())


def test_rl_refuses_to_change_the_checkpoints_normalization(tmp_path):
    """The policy trains with the checkpoint's transform; a norm.* override would be saved as if it had been used."""
    from vla.checkpoint import save_policy
    from vla.config import ConfigError
    from vla.rl.prepare import prepare_policy

    save_policy(random_policy({"backbone": {"image_size": 32}, "head": {"type": "flow", "chunk_size": 2}}), tmp_path / "bc")
    for override in ("norm.action=mean_std", "norm.action_skip_dims=[]"):
        with pytest.raises(ConfigError, match="fixed by the BC checkpoint"):
            prepare_policy(tmp_path / "bc", None, ["rl.algo=grpo", override])
    assert prepare_policy(tmp_path / "bc", None, ["rl.algo=grpo", "norm.action=q01_q99"]).cfg.norm.action == "q01_q99"


def test_rl_refuses_another_simulator_and_reads_a_config_file(tmp_path):
    """`make rl` passes SIM (default libero); a ManiSkill checkpoint must not silently roll out in LIBERO."""
    from vla.checkpoint import save_policy
    from vla.config import ConfigError, combine_updates
    from vla.rl.prepare import prepare_policy

    save_policy(random_policy({"sim": "maniskill", "backbone": {"image_size": 32}, "head": {"type": "flow", "chunk_size": 2}}),
                tmp_path / "bc")
    with pytest.raises(ConfigError, match="trained in maniskill; RL must run there too"):
        prepare_policy(tmp_path / "bc", None, ["sim=libero", "rl.algo=grpo"])
    (tmp_path / "rl.yaml").write_text("rl:\n  algo: grpo\n  init_states: [0, 3]\n  target_kl: null\n"
                                      "prompt:\n  template: 'In: {instruction}? Out:'\n")
    policy = prepare_policy(tmp_path / "bc", None, ["sim=maniskill", "rl.init_states=[5]"], tmp_path / "rl.yaml")
    # the command line over the file, key by key: the file's other rl.* and prompt.* keys still apply
    assert policy.cfg.rl.init_states == [5] and policy.cfg.rl.algo == "grpo" and policy.cfg.rl.target_kl is None
    assert policy.cfg.prompt.template == "In: {instruction}? Out:"
    assert combine_updates({"rl": {"algo": "grpo", "seed": 1}}, {"rl": {"seed": 2}, "sim": "x"}) == \
        {"rl": {"algo": "grpo", "seed": 2}, "sim": "x"}
