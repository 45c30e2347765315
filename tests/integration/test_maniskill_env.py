"""ManiSkillEnv on the real ManiSkill CPU simulation (SAPIEN + lavapipe Vulkan): shapes, the LIBERO action
convention, success from the env, the expert and the worker processes eval/RL run it in."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.maniskill]


@pytest.fixture(scope="module")
def env():
    from sim import make_env

    e = make_env("maniskill", "maniskill", "PickCube-v1", image_size=32)
    yield e
    e.close()


def test_reset_and_step_shapes(env):
    from sim.base import StepResult

    obs = env.reset(0)
    assert env.task_name == "PickCube-v1" and env.max_steps == 100
    assert obs.instruction == env.instruction == "pick up the red cube and move it to the green goal"
    assert set(obs.images) == set(env.camera_names) == {"agentview", "wrist"}
    for image in obs.images.values():
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 1
    assert obs.state.shape == (8,) and obs.state.dtype == np.float32
    assert abs(obs.state[3]) > 1.5  # TCP pointing down: a large rotation from the world frame
    np.testing.assert_allclose(obs.state[6:], 0.04, atol=1e-3)  # fingers open
    result = env.step(np.zeros(7))
    assert isinstance(result, StepResult) and result.done is False and result.reward == 0.0
    assert result.info == {"success": False, "steps": 1, "truncated": False}


def test_action_convention_matches_libero(env):
    """+x moves the TCP along world +x; a world-z axis-angle turns it about world z; +1 closes the gripper."""
    from scipy.spatial.transform import Rotation

    start = env.reset(0).state
    for _ in range(4):
        state = env.step(np.array([0.5, 0, 0, 0, 0, 0, -1.0]), observe=False).observation.state
    assert state[0] - start[0] > 0.05 and abs(state[1] - start[1]) < 0.01 and abs(state[2] - start[2]) < 0.01
    np.testing.assert_allclose(state[6:], 0.04, atol=2e-3)  # -1 keeps it open

    start = env.reset(0).state
    for _ in range(3):
        state = env.step(np.array([0, 0, 0, 0, 0, 0.5, 1.0]), observe=False).observation.state
    turn = (Rotation.from_rotvec(state[3:6]) * Rotation.from_rotvec(start[3:6]).inv()).as_rotvec()
    assert turn[2] > 0.03 and abs(turn[0]) < 0.01 and abs(turn[1]) < 0.01
    assert state[6:].max() < 0.02  # +1 closes


def test_same_init_state_same_scene_and_observe_false_keeps_frames(env):
    a = env.reset(3)
    b = env.reset(3)
    np.testing.assert_array_equal(a.state, b.state)
    assert np.array_equal(a.images["agentview"], b.images["agentview"])
    c = env.reset(4)
    assert not np.array_equal(a.images["agentview"], c.images["agentview"])  # the cube moved
    first = env.step(np.array([0.8, 0, 0, 0, 0, 0, -1.0]), observe=False)
    assert np.array_equal(first.observation.images["agentview"], c.images["agentview"])  # not re-rendered
    seen = env.step(np.array([0.8, 0, 0, 0, 0, 0, -1.0]), observe=True)
    assert not np.array_equal(seen.observation.images["wrist"], c.images["wrist"])


def test_expert_reaches_success_from_the_env(env):
    from conftest import play_expert

    from sim.experts import maniskill_pick_cube as expert

    solved, results = play_expert(env, expert.solve, 1)
    assert solved
    assert results[-1].done and results[-1].reward == 1.0 and results[-1].info["success"]
    assert not any(r.done for r in results[:-1])
    assert env.raw_env().evaluate()["success"].item()


def test_push_cube_expert_pushes_the_cube_onto_the_target():
    """The PushCube expert succeeds from the env's own success on held-out starts, and it really pushed: the cube
    moved +x towards the target and stayed on the table."""
    from conftest import play_expert

    from sim import make_env
    from sim.experts import maniskill_push_cube as expert

    env = make_env("maniskill", "maniskill", "PushCube-v1", image_size=32)
    try:
        for init_state in (0, 7):
            env.reset(init_state)
            cube_before = env.raw_env().obj.pose.sp.p.copy()
            solved, results = play_expert(env, expert.solve, init_state)
            assert solved, f"init state {init_state}"
            assert results[-1].info["success"] and not any(r.done for r in results[:-1])
            cube_after = env.raw_env().obj.pose.sp.p
            assert cube_after[0] - cube_before[0] > 0.09 and abs(cube_after[1] - cube_before[1]) < 0.02
            assert cube_after[2] < 0.03
            assert results[-1].observation.state[6:].max() < 0.02  # pushed with closed fingers
        with pytest.raises(ValueError, match="PushCube-v1"):
            expert.solve(type("PickCubeEnv", (), {"task_name": "PickCube-v1"})(), lambda a: False, 10)
    finally:
        env.close()


def test_bad_input_raises(env):
    from sim.maniskill import resolve_task

    env.reset(0)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="(?s)PickCube-v1.*StackCube-v1"):
        resolve_task("maniskill", "FlyToTheMoon")
    with pytest.raises(ValueError, match="only suite is 'maniskill'"):
        resolve_task("libero_spatial", 0)
    assert resolve_task("maniskill", "PegInsertionSide") == 4
    with pytest.raises(ValueError, match="unknown SIM"):
        from sim import make_env

        make_env("isaac", "x", 0, 32)


def test_worker_process_runs_maniskill():
    """The eval sweep and RL rollouts step envs through these workers."""
    from sim.worker import EnvSpec, EnvWorker

    worker = EnvWorker(32)
    try:
        reply = worker.reset(EnvSpec("maniskill", "maniskill", 0, 32, max_steps=5), 2)
        assert reply["max_steps"] == 5 and "red cube" in reply["instruction"]
        images, state = worker.observation()
        assert images.shape == (2, 32, 32, 3) and images.std() > 1 and state.shape == (8,)
        worker.send({"cmd": "step", "action": [0.5, 0, 0, 0, 0, 0, -1], "observe": True})
        assert worker.receive()["done"] is False
        assert worker.observation()[1][0] > state[0]
    finally:
        worker.close()


def test_vector_env_class_of_the_gpu_path_on_the_cpu():
    """ManiSkillVectorEnv is what `make_vector_env` returns with CUDA; with N=1 it runs on the CPU sim too:
    SAME_STEP auto-reset after max_steps, the final observation kept, unobserved steps not re-rendered."""
    import torch

    from sim.maniskill import ManiSkillBatch
    from sim.maniskill_vector import ManiSkillVectorEnv, make_vector_env

    env = ManiSkillVectorEnv("PickCube-v1", 1, image_size=32, max_steps=2, backend="cpu")
    try:
        obs, info = env.reset(options={"init_states": [5]})
        assert obs["images"].shape == (1, 2, 32, 32, 3) and obs["images"].dtype == torch.uint8
        assert obs["state"].shape == (1, 8) and "red cube" in info["instruction"][0]
        push = torch.tensor([[0.8, 0, 0, 0, 0, 0, -1.0]])
        blind, *_ = env.step(push, observe=False)
        assert torch.equal(blind["images"], obs["images"]) and blind["state"][0, 0] > obs["state"][0, 0]
        after, reward, terminated, truncated, infos = env.step(push)
        assert truncated.tolist() == [True] and terminated.tolist() == [False] and infos["ended"].tolist() == [True]
        assert infos["final_obs"]["state"][0, 0] > after["state"][0, 0]  # a new episode started at the home pose
    finally:
        env.close()
    with pytest.raises(ValueError, match="one env per process"):
        ManiSkillBatch(0, num_envs=2, backend="cpu")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        make_vector_env(0, 0)


def test_demos_refuse_a_task_without_an_expert(tmp_path):
    from sim.maniskill_demos import generate_maniskill_demos

    with pytest.raises(ValueError, match=r"(?s)StackCube-v1.*tasks with demos: \[0, 2\]"):
        generate_maniskill_demos("maniskill", ["StackCube"], 2, tmp_path / "demos", "local/demos")
    assert not (tmp_path / "demos").exists()
