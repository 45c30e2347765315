import numpy as np
import pytest
import torch

from vla.checkpoint import CheckpointError, load_policy, norm_specs, save_policy
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}})
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(100, 7)), "action"), "state": compute_stats(rng.normal(size=(100, 8)), "state")}
    return Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval()


def _obs():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (2, 2, 48, 48, 3), dtype=torch.uint8, generator=g), torch.randn(2, 8, generator=g)


def test_roundtrip_gives_identical_actions(policy, tmp_path):
    save_policy(policy, tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    images, state = _obs()
    a = policy.act(images, state, ["put the bowl on the plate"] * 2)
    b = loaded.act(images, state, ["put the bowl on the plate"] * 2)
    assert a.shape == (2, 8, 7) and np.array_equal(a, b)
    assert not list(tmp_path.glob("ck/*.pt")) and not list(tmp_path.glob("ck/*.pkl"))


@pytest.mark.parametrize("victim,garbage,match", [
    ("model.safetensors", b"\x00garbage", "corrupt weights file"),
    ("norm_stats.safetensors", b"nope", "normalization stats"),
    ("config.json", b"{not json", "corrupt checkpoint file"),
])
def test_corrupt_checkpoint_is_named(policy, tmp_path, victim, garbage, match):
    save_policy(policy, tmp_path / "ck")
    (tmp_path / "ck" / victim).write_bytes(garbage)
    with pytest.raises(CheckpointError, match=match):
        load_policy(tmp_path / "ck")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nothing")
    save_policy_dir = tmp_path / "half"
    save_policy_dir.mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_policy(save_policy_dir)


@pytest.mark.parametrize("keep_last,kept", [(2, [3, 4]), (1, [4]), (0, [1, 2, 3, 4])])
def test_training_checkpoints_keep_the_newest_or_all(policy, tmp_path, keep_last, kept):
    from vla.checkpoint import latest_checkpoint, save_training_checkpoint

    for step in (1, 2, 3, 4):
        save_training_checkpoint(tmp_path, step, policy, {"x": torch.zeros(1)}, {"step": step}, keep_last)
    assert sorted(int(p.name.split("_")[1]) for p in tmp_path.glob("step_*")) == kept
    assert latest_checkpoint(tmp_path).name == "step_0000004"


def test_weights_of_another_structure_or_format_are_refused(policy, tmp_path):
    """A config edited after training (another head width) or a checkpoint of another format version must not
    load with some layers left at their random initialization."""
    import json

    save_policy(policy, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["head"]["hidden_dim"] = cfg["head"]["hidden_dim"] * 2
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"does not match the config \(tensor shapes differ\): size mismatch"):
        load_policy(tmp_path / "ck")
    cfg["head"]["hidden_dim"] //= 2
    cfg["head"]["value_head"] = True  # a critic the weights do not hold
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"does not match the config: missing \['value_head"):
        load_policy(tmp_path / "ck")
    save_policy(policy, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    (tmp_path / "old" / "meta.json").write_text(json.dumps({**meta, "format_version": -1}))
    with pytest.raises(CheckpointError, match="checkpoint format -1, expected"):
        load_policy(tmp_path / "old")
