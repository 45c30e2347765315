"""Shared fixtures: a small LeRobot dataset built here (no downloads), torch on one thread."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # 2 cores: keep tests from oversubscribing them


def write_synthetic_dataset(root, episodes=3, frames=20, image_size=32, action_dim=7, state_dim=8,
                            use_videos=False, seed=0, task="pick up the bowl", nan_at=None, keys=None, gripper_sign=1.0):
    """A LIBERO-layout LeRobot dataset whose actions are a smooth function of the state; `keys` (a
    vla.data.features.DatasetKeys) stores the same frames under another layout's keys."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla.data.features import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY, DatasetKeys, libero_features

    keys = keys or DatasetKeys()
    rename = {AGENTVIEW_KEY: keys.camera("agentview"), WRIST_KEY: keys.camera("wrist"), STATE_KEY: keys.state,
              ACTION_KEY: keys.action}
    features = {rename.get(k, k): v for k, v in libero_features(image_size, use_videos=use_videos).items()}
    features[keys.action]["shape"] = (action_dim,)
    features[keys.state]["shape"] = (state_dim,)
    ds = LeRobotDataset.create(repo_id="test/synthetic", fps=20, root=root, features=features,
                               robot_type="panda", use_videos=use_videos)
    rng = np.random.default_rng(seed)
    for ep in range(episodes):
        state = rng.uniform(-1, 1, state_dim).astype(np.float32)
        for t in range(frames):
            action = np.tanh(np.resize(state, action_dim) * 2).astype(np.float32)
            action[-1] = gripper_sign * (1.0 if t > frames // 2 else -1.0)  # -1: a dataset where +1 opens
            if nan_at is not None and (ep, t) == nan_at:
                action[0] = np.nan
            img = np.full((image_size, image_size, 3), int(128 + 100 * state[0]), dtype=np.uint8)
            frame = {rename[AGENTVIEW_KEY]: img, rename[WRIST_KEY]: 255 - img}  # the wrist's differs
            recorded = state.copy()
            if state_dim == 8:  # LIBERO-layout fingers (+w/2, -w/2): open, closing once the gripper closes
                recorded[6] = max(0.04 - 0.01 * max(t - frames // 2, 0), 0.0)
                recorded[7] = -recorded[6]
            frame.update({keys.state: recorded, keys.action: action, "task": task})
            ds.add_frame(frame)
            state = (state + 0.05 * rng.standard_normal(state_dim)).astype(np.float32)
        ds.save_episode()
    ds.finalize()
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray cluster started by this process; its address for drivers run as subprocesses
    (the Ray integration tests)."""
    import ray  # here, not at import: the unit tests run without the ray extra

    info = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()  # stops the cluster this process started


def play_expert(env, solve, init_state: int) -> tuple[bool, list]:
    """Reset `env` to `init_state` and let a scripted expert's `solve(env, step, max_steps)` drive it without
    rendering; returns (what solve returned, every StepResult in order)."""
    env.reset(init_state)
    results = []

    def step(action):
        results.append(env.step(action, observe=False))
        return results[-1].done

    return solve(env, step, env.max_steps), results
