"""LiberoEnv against the real LIBERO scenes (needs hf-libero and its assets; ~30 s)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.libero]


@pytest.fixture(scope="module")
def env():
    from sim.libero import LiberoEnv

    e = LiberoEnv("libero_spatial", 0, image_size=64)
    yield e
    e.close()


def test_setup_is_idempotent_and_writes_config():
    import os

    from sim.libero_setup import CONFIG_KEYS, ensure_libero_ready, libero_package_dir, prepare_libero

    ensure_libero_ready()
    assert any("kept" in line or "found" in line for line in prepare_libero())
    config = yaml.safe_load((Path(os.environ["LIBERO_CONFIG_PATH"]) / "config.yaml").read_text())
    assert set(CONFIG_KEYS) <= set(config)
    assert (libero_package_dir() / "assets" / "scenes").is_dir()
    assert os.environ["MUJOCO_GL"]


def test_reset_and_step_shapes(env):
    from sim.base import StepResult

    obs = env.reset(0)
    assert env.instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert obs.instruction == env.instruction and env.max_steps == 220
    assert set(obs.images) == set(env.camera_names) == {"agentview", "wrist"}
    for image in obs.images.values():
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 1
    assert obs.state.shape == (8,) and obs.state.dtype == np.float32
    assert abs(obs.state[3]) > 3.0  # gripper pointing down: ~pi about x in axis-angle
    for _ in range(3):
        result = env.step(np.array([0.3, 0, 0, 0, 0, 0, -1.0]))
        assert isinstance(result, StepResult) and result.done is False
    assert result.info["steps"] == 3
    assert result.observation.state[0] > obs.state[0]  # moved along +x


def test_images_are_rotated_180(env):
    obs = env.reset(0)
    raw = env.raw_env().env._get_observations(force_update=True)  # a fresh render (a few pixels may differ)
    for name, key in (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image")):
        ours, theirs = obs.images[name].astype(float), raw[key].astype(float)
        assert np.abs(ours - theirs[::-1, ::-1]).mean() < 0.5
        assert np.abs(ours - theirs).mean() > 5 * np.abs(ours - theirs[::-1, ::-1]).mean() + 5


def test_same_init_state_gives_same_observation(env):
    a, b = env.reset(3), env.reset(3)
    np.testing.assert_array_equal(a.state, b.state)
    assert np.abs(a.images["agentview"].astype(float) - b.images["agentview"]).mean() < 0.5


def test_unobserved_steps_skip_rendering_but_not_physics(env):
    """A chunked policy renders one frame in eight; the frames it does see, and every state, are
    bit-identical to rendering every step."""
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, (16, 7)).astype(np.float32)

    def run(every: int):
        env.reset(2)
        seen = []
        for i, a in enumerate(actions):
            r = env.step(a, observe=(i + 1) % every == 0)
            seen.append((r.observation.state.copy(), {k: v.copy() for k, v in r.observation.images.items()}))
        return seen

    full, sparse = run(1), run(8)
    for i, ((s_full, im_full), (s_sparse, im_sparse)) in enumerate(zip(full, sparse)):
        assert np.array_equal(s_full, s_sparse)
        if (i + 1) % 8 == 0:
            assert all(np.array_equal(im_full[k], im_sparse[k]) for k in im_full)
    # skipped steps keep the last rendered frame (the arm moved, the picture did not)
    assert np.array_equal(sparse[1][1]["agentview"], sparse[0][1]["agentview"])
    assert not np.array_equal(full[6][1]["agentview"], full[0][1]["agentview"])


def test_bad_actions_raise(env):
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="init_state_index 50 out of range"):
        env.reset(50)


def test_unknown_suite_and_task_list_valid_choices():
    from sim.libero import resolve_task

    with pytest.raises(ValueError, match="libero_spatial.*libero_object"):
        resolve_task("libero_nope", 0)
    with pytest.raises(ValueError, match="pick_up_the_black_bowl_between_the_plate_and_the_ramekin"):
        resolve_task("libero_spatial", "fly_to_the_moon")
    with pytest.raises(ValueError, match="out of range"):
        resolve_task("libero_spatial", 10)
    name = "pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate"
    assert resolve_task("libero_spatial", name) == 1


def test_suites_hold_130_tasks_with_50_init_states():
    from sim.libero import list_suites, list_tasks, num_init_states

    counts = {s: len(list_tasks(s)) for s in list_suites()}
    assert counts == {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
    assert sum(counts.values()) == 130
    assert num_init_states("libero_object", 3) == 50


def test_quat_to_axis_angle():
    from sim.libero import quat_to_axis_angle

    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), 0)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [math.pi, 0, 0])
    half = math.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, half, half])), [0, 0, math.pi / 2], atol=1e-12)
