"""Dense RL rewards (`rl.reward=dense`) in the real simulators: LIBERO's potential-based progress
reward along a scripted expert's episode, its refusal for other goals, the RL env workers passing it
into chunk decisions, and ManiSkill's normalized dense reward (~60 s)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.integration]


@pytest.mark.libero
def test_libero_dense_reward_telescopes_to_success_plus_progress_along_an_expert_episode():
    from sim.experts.libero_pick_place import plan_episode
    from sim.libero import LiberoEnv

    actions = plan_episode("libero_spatial", 0, 0, max_steps=220)
    assert actions is not None
    env = LiberoEnv("libero_spatial", 0, image_size=32, reward="dense")
    try:
        env.reset(0)
        start = env._progress.potential()
        rewards, done = [], False
        for a in actions:
            result = env.step(a, observe=False)
            rewards.append(result.reward)
            done = result.done
        end = env._progress.potential()
    finally:
        env.close()
    assert done
    # shaping telescopes: the episode's dense return is success (1) + phi(end) - phi(start)
    assert sum(rewards) == pytest.approx(1.0 + end - start, abs=1e-6)
    assert end - start > 0.1  # the gripper reached the bowl and the bowl reached the plate (metres)
    assert rewards[-1] > 0.9  # the success step carries the success reward
    steps = np.asarray(rewards[:-1])
    assert (steps > 0).any() and (steps < 0).any()  # it signals progress both ways, step by step
    third = len(actions) // 3
    assert sum(rewards[:third]) > 0  # the approach alone already earns reward


@pytest.mark.libero
def test_dense_reward_is_refused_for_goals_it_cannot_shape():
    from sim.libero import LiberoEnv
    from vla.config import ConfigError, ExperimentConfig
    from vla.rl.prepare import check_reward

    with pytest.raises(ValueError, match="single pick-and-place goal"):
        LiberoEnv("libero_goal", 0, image_size=32, reward="dense")  # open a drawer
    with pytest.raises(ValueError, match="reward mode must be one of"):
        LiberoEnv("libero_spatial", 0, image_size=32, reward="shaped")
    cfg = ExperimentConfig()
    cfg.rl.reward = "dense"
    with pytest.raises(ConfigError, match="libero_10 task 0"):
        check_reward(cfg, [("libero_spatial", 0), ("libero_10", 0)])
    check_reward(cfg, [("libero_spatial", 0), ("libero_object", 3)])
    cfg.rl.reward = "Dense"
    with pytest.raises(ConfigError, match="rl.reward must be one of"):
        check_reward(cfg, [("libero_spatial", 0)])


@pytest.mark.libero
@pytest.mark.parametrize("reward", ["sparse", "dense"])
def test_rl_env_workers_put_the_dense_reward_into_chunk_decisions(reward):
    from vla.random_policy import random_policy
    from vla.rl.rollout import EnvPool, PlannedEpisode

    torch.set_num_threads(1)
    policy = random_policy({"backbone": {"image_size": 32}, "head": {"type": "flow", "chunk_size": 4},
                            "demos": {"image_size": 32}}).eval()
    pool = EnvPool(1, 32, "libero", max_steps=12, reward=reward)
    try:
        episodes, stats = pool.collect(policy, [PlannedEpisode("libero_spatial", 0, 0, 0, 11)],
                                       torch.Generator().manual_seed(0))
    finally:
        pool.close()
    (episode,) = episodes
    assert stats.env_steps == 12 and len(episode.decisions) == 3 and not episode.success
    rewards = np.array([d.reward for d in episode.decisions])
    if reward == "sparse":
        assert np.all(rewards == 0.0)  # no success in 12 random steps, nothing else counts
    else:  # a random arm moves, so the progress potential changes within every 4-step chunk
        assert np.all(np.isfinite(rewards)) and np.all(rewards != 0.0) and np.all(np.abs(rewards) < 0.5)


@pytest.mark.maniskill
def test_maniskill_dense_reward_is_its_normalized_dense_reward():
    from sim.maniskill import ManiSkillEnv

    env = ManiSkillEnv("maniskill", "PickCube-v1", image_size=32, max_steps=10, reward="dense")
    sparse = ManiSkillEnv("maniskill", "PickCube-v1", image_size=32, max_steps=10)
    try:
        assert env._batch.base.reward_mode == "normalized_dense" and sparse._batch.base.reward_mode == "sparse"
        env.reset(3)
        sparse.reset(3)
        noop = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
        dense_rewards = [env.step(noop, observe=False).reward for _ in range(3)]
        sparse_rewards = [sparse.step(noop, observe=False).reward for _ in range(3)]
    finally:
        env.close()
        sparse.close()
    assert all(0.0 < r < 1.0 / 10 for r in dense_rewards)  # a reaching term, short of success, / 10 max steps
    assert sparse_rewards == [0.0, 0.0, 0.0]


@pytest.mark.maniskill
def test_maniskill_success_step_is_credited_the_steps_it_did_not_need():
    """Episodes end at success; the success step earns 1 for each remaining step, so succeeding beats hovering;
    every step's reward is in units of the episode's budget, so the return is at most 1."""
    from conftest import play_expert

    from sim.experts import maniskill_push_cube as expert
    from sim.maniskill import ManiSkillEnv

    env = ManiSkillEnv("maniskill", "PushCube-v1", image_size=32, reward="dense")
    try:
        solved, results = play_expert(env, expert.solve, 5)
        assert solved
    finally:
        env.close()
    steps = len(results)
    assert steps < env.max_steps and all(0.0 <= r.reward < 1.0 / env.max_steps for r in results[:-1])
    assert results[-1].reward == pytest.approx((1.0 + env.max_steps - steps) / env.max_steps)
    assert 0.5 < sum(r.reward for r in results) <= 1.0
