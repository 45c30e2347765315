"""The scripted LIBERO expert: a plan, its replay with cameras, and a one-episode LeRobot dataset (~60 s)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.libero]


def test_supported_goals():
    from sim.experts.libero_pick_place import supported, task_goal

    assert task_goal("libero_spatial", 0).predicate == "on"
    assert task_goal("libero_object", 0).target == "basket_1_contain_region"
    assert not supported("libero_goal", 0)  # open a drawer
    assert not supported("libero_10", 0)  # two objects


def test_plan_replays_to_success_with_cameras():
    from sim.experts.libero_pick_place import plan_episode
    from sim.libero import LiberoEnv

    actions = plan_episode("libero_spatial", 0, 0, max_steps=220)
    assert actions is not None and 0 < len(actions) <= 220
    stacked = np.stack(actions)
    assert stacked.shape == (len(actions), 7) and np.all(np.abs(stacked) <= 1.0)
    env = LiberoEnv("libero_spatial", 0, image_size=64)
    try:
        env.reset(0)
        results = [env.step(a) for a in actions]
    finally:
        env.close()
    assert results[-1].done and not any(r.done for r in results[:-1])


def test_one_demo_episode_reads_back(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from sim.demos import generate_libero_demos
    from vla.data.features import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY

    root = tmp_path / "demos"
    # asked for 2, but only init state 0 may be used (the others are left to evaluation): 1 episode, 1 attempt
    summary = generate_libero_demos("libero_spatial", [0], 2, root, "test/libero_demo", image_size=64,
                                    init_states_below=1)
    task = summary["tasks"][0]
    assert task["episodes_written"] == 1 and task["attempts"] == 1 and summary["frames"] == task["frames"] > 50
    assert task["init_states"] == [0] and summary["init_states_below"] == 1
    with pytest.raises(FileExistsError):
        generate_libero_demos("libero_spatial", [0], 1, root, "test/libero_demo")

    ds = LeRobotDataset("test/libero_demo", root=root, delta_timestamps={ACTION_KEY: [i / 20 for i in range(8)]})
    assert ds.num_episodes == 1 and len(ds) == summary["frames"]
    item = ds[len(ds) - 3]
    assert item[ACTION_KEY].shape == (8, 7) and item["action_is_pad"].tolist() == [False] * 3 + [True] * 5
    assert item[AGENTVIEW_KEY].shape == item[WRIST_KEY].shape == (3, 64, 64)
    assert item[STATE_KEY].shape == (8,)
    assert item["task"] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
