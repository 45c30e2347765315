import numpy as np
import pytest
import torch

from conftest import write_synthetic_dataset
from vla.data.dataset import (DatasetError, EpochSampler, FrameCache, StreamingFrames, action_chunks, check_dataset_gripper,
                              dataset_stats, open_dataset, validate_dataset)


def test_action_chunks_stop_at_episode_end_with_padding():
    actions = np.arange(10, dtype=np.float32)[:, None]
    episode = np.array([0] * 4 + [1] * 6)
    chunks, pad = action_chunks(actions, episode, 3)
    assert chunks[2, :, 0].tolist() == [2, 3, 3] and pad[2].tolist() == [False, False, True]
    assert chunks[4, :, 0].tolist() == [4, 5, 6] and not pad[4].any()


def test_synthetic_dataset_reads_through_lerobot(synthetic_dataset):
    ds = open_dataset(str(synthetic_dataset), chunk_size=8)
    layout = validate_dataset(ds, ["agentview", "wrist"], 7, use_state=True)
    assert layout.state_dim == 8
    frames = FrameCache(ds, layout, 8, image_size=16)
    batch = frames.batch([0, 19, 20])
    assert batch["images"].shape == (3, 2, 16, 16, 3) and batch["action"].shape == (3, 8, 7)
    assert batch["action_pad"][1].tolist() == [False] + [True] * 7  # last frame of episode 0
    assert batch["task"] == ["pick up the bowl"] * 3
    # lerobot's own action window agrees with ours
    item = ds[19]
    assert np.allclose(item["action"].numpy(), batch["action"][1].numpy())
    assert item["action_is_pad"].tolist() == batch["action_pad"][1].tolist()


def test_wrong_action_dim_and_missing_keys_are_named(synthetic_dataset):
    ds = open_dataset(str(synthetic_dataset))
    with pytest.raises(DatasetError, match=r"'action' has shape \(7,\), the policy expects \(6,\)"):
        validate_dataset(ds, ["agentview"], 6, use_state=True)
    with pytest.raises(DatasetError, match="camera 'front' needs key 'front'"):
        validate_dataset(ds, ["front"], 7, use_state=True)


def test_nan_actions_are_rejected(tmp_path):
    root = write_synthetic_dataset(tmp_path / "nan", episodes=1, frames=6, nan_at=(0, 3))
    ds = open_dataset(str(root))
    with pytest.raises(ValueError, match="'action': 1 NaN/inf values \\(first at frame 3\\)"):
        dataset_stats(ds, use_state=True)


def test_not_a_dataset_dir(tmp_path):
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        open_dataset(str(tmp_path))


def test_sampler_is_deterministic_and_resumable():
    a = EpochSampler(10, 4, seed=3)
    seq = [a.next_batch() for _ in range(5)]
    b = EpochSampler(10, 4, seed=3)
    b.next_batch(), b.next_batch()
    c = EpochSampler(10, 4, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next_batch() for _ in range(3)] == seq[2:]
    with pytest.raises(DatasetError, match="fewer than one batch"):
        EpochSampler(3, 4, seed=0)


def test_streaming_frames_equal_cached_frames(synthetic_dataset):
    from vla.data.dataset import StreamingFrames

    ds = open_dataset(str(synthetic_dataset), chunk_size=8)
    layout = validate_dataset(ds, ["agentview", "wrist"], 7, use_state=True)
    cached = FrameCache(ds, layout, 8, image_size=16).batch([3, 19, 41])
    streamed = StreamingFrames(ds, layout, image_size=16).batch([3, 19, 41])
    for key in ("images", "state", "action", "action_pad"):
        assert (cached[key] == streamed[key]).all(), key
    assert cached["task"] == streamed["task"]


def test_streaming_video_frames_decode_in_one_thread_and_equal_cached_frames(tmp_path):
    """Concurrent decoding of one dataset's videos returned wrong frames or segfaulted: video is read serially."""
    from vla.data.dataset import StreamingFrames

    root = write_synthetic_dataset(tmp_path / "video", episodes=3, frames=40, use_videos=True)
    ds = open_dataset(str(root), chunk_size=4)
    layout = validate_dataset(ds, ["agentview", "wrist"], 7, use_state=True)
    streaming = StreamingFrames(ds, layout, image_size=16, threads=4)
    assert streaming.threads == 1
    indices = list(range(0, 120, 7))
    cached = FrameCache(ds, layout, 4, image_size=16).batch(indices)
    for _ in range(4):
        streamed = streaming.batch(indices)
        for key in ("images", "state", "action", "action_pad"):
            assert (cached[key] == streamed[key]).all(), key


def test_cameras_of_different_resolutions_load_cached_and_streamed(tmp_path):
    """Hub datasets often record the wrist camera at another size than the main one: each is resized on its own."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla.data.dataset import StreamingFrames
    from vla.data.features import ACTION_KEY, AGENTVIEW_KEY, STATE_KEY, WRIST_KEY, libero_features

    features = libero_features(32, use_videos=False)
    features[WRIST_KEY] = {**features[WRIST_KEY], "shape": (24, 40, 3)}
    ds = LeRobotDataset.create(repo_id="test/mixed", fps=20, root=tmp_path / "mixed", features=features,
                               robot_type="panda", use_videos=False)
    for t in range(6):
        ds.add_frame({AGENTVIEW_KEY: np.full((32, 32, 3), 10 * t, np.uint8), WRIST_KEY: np.full((24, 40, 3), 200, np.uint8),
                      STATE_KEY: np.zeros(8, np.float32), ACTION_KEY: np.full(7, 0.1 * t, np.float32), "task": "x"})
    ds.save_episode()
    ds.finalize()
    ds = open_dataset(str(tmp_path / "mixed"), chunk_size=4)
    layout = validate_dataset(ds, ["agentview", "wrist"], 7, use_state=True)
    cached = FrameCache(ds, layout, 4, image_size=16).batch([0, 5])
    streamed = StreamingFrames(ds, layout, image_size=16).batch([0, 5])
    assert cached["images"].shape == (2, 2, 16, 16, 3) and torch.equal(cached["images"], streamed["images"])
    assert int(cached["images"][1, 0, 0, 0, 0]) == 50 and int(cached["images"][0, 1, 0, 0, 0]) == 200


def test_dataset_stats_are_those_of_the_frames_written(synthetic_dataset):
    """The statistics the normalizer is fitted on: every frame's action and state, as the conftest wrote them
    (replayed here from its seed), not lerobot's stats.json nor a subset."""
    rng = np.random.default_rng(0)
    actions, states = [], []
    for _ in range(3):  # write_synthetic_dataset's defaults: 3 episodes x 20 frames, 7-dim actions, 8-dim state
        state = rng.uniform(-1, 1, 8).astype(np.float32)
        for t in range(20):
            action = np.tanh(np.resize(state, 7) * 2).astype(np.float32)
            action[-1] = 1.0 if t > 10 else -1.0
            actions.append(action)
            fingers = max(0.04 - 0.01 * max(t - 10, 0), 0.0)  # the conftest's LIBERO-layout fingers
            states.append(np.r_[state[:6], fingers, -fingers].astype(np.float32))
            state = (state + 0.05 * rng.standard_normal(8)).astype(np.float32)
    stats = dataset_stats(open_dataset(str(synthetic_dataset)), use_state=True)
    for key, values in (("action", np.array(actions)), ("state", np.array(states))):
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), atol=1e-6)
        np.testing.assert_allclose(stats[key]["q01"], np.quantile(values, 0.01, axis=0), atol=1e-6)
        np.testing.assert_allclose(stats[key]["q99"], np.quantile(values, 0.99, axis=0), atol=1e-6)
    assert "state" not in dataset_stats(open_dataset(str(synthetic_dataset)), use_state=False)


def test_a_gripper_in_another_convention_is_refused_before_training(tmp_path):
    """The gripper dimension is not normalized and every env and robot acts on its sign: a dataset in OpenVLA's
    0/1 convention, or with +1 = open, would train without error and then open where it should close."""
    from vla.data.dataset import check_dataset_gripper
    from vla.data.gripper_check import check_gripper_convention

    root = write_synthetic_dataset(tmp_path / "ok", episodes=2, frames=12)
    ds = open_dataset(str(root))
    check_dataset_gripper(ds, validate_dataset(ds, ["agentview"], 7, use_state=True))
    # the range: values beyond [-1, 1], and the 0/1 convention
    episodes = np.repeat(np.arange(4), 10)
    actions = np.zeros((40, 7))
    actions[:, 6] = np.tile(np.r_[np.zeros(5), np.ones(5)], 4)  # 0 = close, 1 = open
    with pytest.raises(ValueError, match="the 0/1 convention"):
        check_gripper_convention(actions, episodes, None, 6)
    with pytest.raises(ValueError, match="never negative"):  # a continuous 0..1 width with no exact zero
        check_gripper_convention(np.c_[actions[:, :6], 0.2 + 0.7 * actions[:, 6]], episodes, None, 6)
    check_gripper_convention(np.zeros((40, 7)), episodes, None, 6)  # an unused gripper, 0 throughout
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        check_gripper_convention(actions * 255, episodes, None, 6)
    # the sign, from the fingers (state[6] shrinks as they close): each episode closes at step 5
    episodes = np.repeat(np.arange(4), 12)
    state = np.zeros((48, 8))
    state[:, 6] = np.tile(np.r_[np.full(5, 0.04), np.linspace(0.04, 0.0, 5), [0.0, 0.0]], 4)
    state[:, 7] = -state[:, 6]  # LIBERO's fingers: +w/2, -w/2
    actions = np.zeros((48, 7))
    actions[:, 6] = np.tile(np.r_[-np.ones(5), np.ones(7)], 4)  # -1 open, +1 close: the fingers follow
    check_gripper_convention(actions, episodes, state, 6)
    with pytest.raises(ValueError, match="after 4 of 4 switches the fingers moved the other way"):
        check_gripper_convention(-actions, episodes, state, 6)
    # the same state[6] without a mirrored finger beside it (a gripper scalar, 1 = closed, then padding) is not read
    # as a finger: the correctly signed actions are not refused
    scalar = np.zeros((48, 8))
    scalar[:, 6] = 1.0 - state[:, 6] / 0.04
    check_gripper_convention(actions, episodes, scalar, 6)


def test_a_given_dataset_sets_the_evaluation_render_size(synthetic_dataset):
    """A 256 px hub dataset evaluated from 128 px renders (demos.image_size's default) would show the policy
    blurrier images than it trained on; the checkpoint's config takes the dataset's size."""
    from vla.config import ExperimentConfig, merge
    from vla.data.dataset import stored_image_size
    from vla.train.trainer import adopt_render_size

    ds = open_dataset(str(synthetic_dataset))
    assert stored_image_size(ds, ["agentview", "wrist"]) == 32
    given = merge(ExperimentConfig(), {"data": {"dataset": str(synthetic_dataset)}})
    assert given.demos.image_size == 128 and adopt_render_size(given, ds).demos.image_size == 32
    generated = ExperimentConfig()  # demos generated at demos.image_size: nothing to adopt
    assert adopt_render_size(generated, ds) is generated


def test_the_checkpoint_keeps_the_rate_its_data_was_recorded_at(synthetic_dataset):
    """`vla deploy` acts at data.fps: the dataset's fps unless given (a dataset's fps can be nominal)."""
    from vla.config import ConfigError, ExperimentConfig, merge
    from vla.train.trainer import adopt_recording_rate

    ds = open_dataset(str(synthetic_dataset))
    assert ds.meta.fps == 20 and adopt_recording_rate(ExperimentConfig(), ds).data.fps == 20
    given = merge(ExperimentConfig(), {"data": {"fps": 10}})
    assert adopt_recording_rate(given, ds) is given
    with pytest.raises(ConfigError, match="data.fps must be a positive"):
        adopt_recording_rate(merge(ExperimentConfig(), {"data": {"fps": 0}}), ds)


def test_a_dataset_in_another_layout_reads_through_its_keys(synthetic_dataset, tmp_path):
    """openpi's LIBERO dataset keeps the same inputs under image/wrist_image/state/actions: refused with the
    overrides that read it, and read through them it gives the very batches of the LIBERO layout."""
    from vla.config import ConfigError, ExperimentConfig, merge
    from vla.data.features import KNOWN_LAYOUTS, DatasetKeys
    from vla.experiment import check_choices

    openpi = KNOWN_LAYOUTS["openpi's LIBERO (physical-intelligence/libero)"]
    root = write_synthetic_dataset(tmp_path / "openpi", keys=openpi)
    plain = open_dataset(str(root), chunk_size=8, action_key="actions")
    with pytest.raises(DatasetError, match=r"This is openpi's LIBERO \(physical-intelligence/libero\)'s layout: add "
                                           r"data.camera_keys=\"\{agentview: image, wrist: wrist_image\}\" "
                                           r"data.state_key=state data.action_key=actions"):
        validate_dataset(plain, ["agentview", "wrist"], 7, use_state=True)
    with pytest.raises(DatasetError, match=r"add data.camera_keys=\"\{agentview: image\}\" data.state_key"):
        validate_dataset(plain, ["agentview"], 7, use_state=True)  # only the cameras the policy reads
    layout = validate_dataset(plain, ["agentview", "wrist"], 7, use_state=True, keys=openpi)
    ours = open_dataset(str(synthetic_dataset), chunk_size=8)
    ours_layout = validate_dataset(ours, ["agentview", "wrist"], 7, use_state=True)
    a, b = FrameCache(plain, layout, 8, 16).batch([0, 19, 20]), FrameCache(ours, ours_layout, 8, 16).batch([0, 19, 20])
    streamed = StreamingFrames(plain, layout, 16).batch([0, 19, 20])
    for key in ("images", "state", "action", "action_pad"):
        assert torch.equal(a[key], b[key]) and torch.allclose(streamed[key].float(), b[key].float(), atol=2), key
    assert not torch.equal(a["images"][:, 0], a["images"][:, 1])  # the cameras are not read from one key
    stats = dataset_stats(plain, True, openpi)
    np.testing.assert_array_equal(stats["action"]["q99"], dataset_stats(ours, True)["action"]["q99"])
    check_dataset_gripper(plain, layout)
    # the override itself, as a user writes it, and a camera name the policy does not read
    cfg = merge(ExperimentConfig(), {"data": {"camera_keys": {"agentview": "image", "wrist": "wrist_image"},
                                              "state_key": "state", "action_key": "actions"}})
    assert DatasetKeys.from_config(cfg.data) == openpi
    with pytest.raises(ConfigError, match=r"data.camera_keys maps camera\(s\) \['front'\] the policy does not read"):
        check_choices(merge(ExperimentConfig(), {"data": {"camera_keys": {"front": "image"}}}))


def test_an_older_lerobot_format_is_refused_with_where_to_get_or_convert_it(tmp_path):
    import json

    root = tmp_path / "libero_v20"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.0", "fps": 10}))
    with pytest.raises(DatasetError, match=r"LeRobot format v2.0; the installed lerobot reads only v3.0.*"
                                           r"lerobot/libero or HuggingFaceVLA/libero.*convert_dataset_v21_to_v30"):
        open_dataset(str(root), chunk_size=4)


def test_training_refuses_a_dataset_whose_gripper_opens_on_plus_one(tmp_path):
    """The check runs where training builds its policy (not only when called by hand); data.check_gripper=false
    is the way past it for an action whose last dimension is not a gripper."""
    from vla.config import ExperimentConfig, merge
    from vla.train.trainer import build_policy_for_training

    root = write_synthetic_dataset(tmp_path / "inverted", episodes=3, frames=20, gripper_sign=-1.0)
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "data": {"dataset": str(root)}})
    with pytest.raises(DatasetError, match="the fingers moved the other way"):
        build_policy_for_training(cfg, open_dataset(str(root), chunk_size=8))
    unchecked = merge(cfg, {"data": {"check_gripper": False}})
    policy, _ = build_policy_for_training(unchecked, open_dataset(str(root), chunk_size=8))
    assert policy.state_dim == 8


def test_training_start_reads_each_column_once(synthetic_dataset, monkeypatch):
    """Statistics, the gripper check and the frame cache share one read of each numeric column (each read scans
    the whole table), and the shared arrays cannot be changed through one of them."""
    import datasets

    reads = []
    plain = datasets.Dataset.__getitem__

    def counting(self, key):
        if isinstance(key, str):
            reads.append(key)
        return plain(self, key)

    ds = open_dataset(str(synthetic_dataset), chunk_size=4)
    layout = validate_dataset(ds, ["agentview"], 7, use_state=True)
    monkeypatch.setattr(datasets.Dataset, "__getitem__", counting)
    stats = dataset_stats(ds, True, layout.keys)
    check_dataset_gripper(ds, layout)
    frames = FrameCache(ds, layout, 4, image_size=16)
    numeric = [k for k in reads if k in ("action", "observation.state", "episode_index", "task_index")]
    assert sorted(numeric) == ["action", "episode_index", "observation.state", "task_index"], reads
    assert np.allclose(stats["action"]["mean"], frames.actions[:, 0].numpy().mean(0), atol=1e-6)
    frames.state[0] += 1  # the cache's own copy: the shared column stays as read
    assert np.allclose(stats["state"]["mean"], dataset_stats(ds, True, layout.keys)["state"]["mean"])


def test_finetune_refuses_to_evaluate_a_task_the_given_dataset_does_not_hold(tmp_path):
    """With data.dataset= the evaluation still runs demos.suite/demos.tasks (libero_spatial 0 by default):
    a dataset of other tasks would be scored on a task it never showed the policy."""
    from sim.libero import task_instruction
    from vla.config import ConfigError
    from vla.experiment import check_eval_tasks_in_dataset, resolve_config

    other = write_synthetic_dataset(tmp_path / "other", episodes=1, frames=4, task="open the drawer")
    cfg = resolve_config("openvla_oft", "libero", overrides=[f"data.dataset={other}"])
    with pytest.raises(ConfigError, match=r"libero_spatial task\(s\) \[0\].*lacks their instructions.*"
                                          r"open the drawer.*demos.tasks="):
        check_eval_tasks_in_dataset(cfg, str(other))
    cfg.eval.enabled = False  # nothing evaluated: nothing to check
    check_eval_tasks_in_dataset(cfg, str(other))
    same = write_synthetic_dataset(tmp_path / "same", episodes=1, frames=4,
                                   task=task_instruction("libero_spatial", 0).upper() + " ")
    cfg = resolve_config("openvla_oft", "libero", overrides=[f"data.dataset={same}"])
    check_eval_tasks_in_dataset(cfg, str(same))  # as the prompt reads it: case and outer spaces aside
