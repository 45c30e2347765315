import numpy as np
import pytest
import torch

from vla.normalize import KeySpec, Normalizer, compute_stats


def _norm(mode="q01_q99", skip=()):
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    return Normalizer({"action": compute_stats(data, "action")}, {"action": KeySpec(mode, tuple(skip))}), data


@pytest.mark.parametrize("mode", ["q01_q99", "mean_std"])
def test_roundtrip_inside_bounds(mode):
    norm, data = _norm(mode)
    x = torch.tensor(np.clip(data[:50], norm.stats["action"]["q01"], norm.stats["action"]["q99"]), dtype=torch.float32)
    assert torch.allclose(norm.unnormalize("action", norm.normalize("action", x)), x, atol=1e-4)


def test_q01_q99_maps_bounds_to_unit_interval_and_skips_gripper():
    norm, _ = _norm(skip=[3])
    st = norm.stats["action"]
    lo = torch.tensor(st["q01"])[None]
    hi = torch.tensor(st["q99"])[None]
    assert torch.allclose(norm.normalize("action", lo)[0, :3], torch.full((3,), -1.0), atol=1e-5)
    assert torch.allclose(norm.normalize("action", hi)[0, :3], torch.ones(3), atol=1e-5)
    raw = torch.tensor([[0.0, 0.0, 0.0, 0.7]])
    assert norm.normalize("action", raw)[0, 3] == pytest.approx(0.7)


def test_missing_key_is_an_error_not_a_pass_through():
    norm, _ = _norm()
    with pytest.raises(KeyError, match="no normalization spec for 'state'"):
        norm.normalize("state", torch.zeros(1, 8))
    with pytest.raises(KeyError, match="no normalization statistics for 'state'"):
        Normalizer(norm.stats, {"state": KeySpec("mean_std")})


def test_nan_in_data_and_dim_mismatch_are_errors():
    data = np.zeros((10, 3))
    data[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf values \\(first at frame 4\\)"):
        compute_stats(data, "action")
    norm, _ = _norm()
    with pytest.raises(ValueError, match="has 7 dims but its statistics have 4"):
        norm.normalize("action", torch.zeros(1, 7))


def test_save_load(tmp_path):
    norm, _ = _norm()
    state = compute_stats(np.random.default_rng(1).uniform(-2, 5, size=(200, 8)), "state")
    norm = Normalizer({**norm.stats, "state": state}, norm.specs)
    norm.save(tmp_path / "s.safetensors")
    stats = Normalizer.load_stats(tmp_path / "s.safetensors")
    assert set(stats) == {"action", "state"}
    for key in stats:  # every statistic of every key, each where it belongs (mean_std reads mean/std, q01_q99 q01/q99)
        assert set(stats[key]) == {"mean", "std", "min", "max", "q01", "q99"}
        for name, value in stats[key].items():
            np.testing.assert_array_equal(value, norm.stats[key][name])


def test_stats_are_the_datas_and_mean_std_standardizes():
    norm, data = _norm("mean_std")
    st = norm.stats["action"]
    for name, expect in [("mean", data.mean(0)), ("std", data.std(0)), ("min", data.min(0)), ("max", data.max(0)),
                         ("q01", np.quantile(data, 0.01, 0)), ("q99", np.quantile(data, 0.99, 0))]:
        np.testing.assert_allclose(st[name], expect, rtol=1e-5)
    z = norm.normalize("action", torch.tensor(data, dtype=torch.float32))
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4) and torch.allclose(z.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert z.abs().max() > 2.5  # mean_std does not clip (the tails of N(3, 2) are beyond 1 sd)


def test_q01_q99_clips_beyond_the_bounds():
    """Outliers beyond q01/q99 map to exactly -1/1 (they are the 2% of frames the bins/ranges must not chase)."""
    norm, _ = _norm()
    st = norm.stats["action"]
    far = torch.tensor(np.stack([st["q99"] + 5.0, st["q01"] - 5.0]), dtype=torch.float32)
    y = norm.normalize("action", far)
    assert torch.equal(y, torch.tensor([[1.0] * 4, [-1.0] * 4]))
    assert torch.allclose(norm.unnormalize("action", y), torch.tensor(np.stack([st["q99"], st["q01"]])), atol=1e-5)


@pytest.mark.parametrize("head", [{"type": "tokenized"}, {"type": "diffusion"}, {"type": "oft", "oft_output": "tokens"}])
def test_heads_bounded_to_the_unit_interval_refuse_mean_std_actions(head):
    """Bins on [-1, 1] or a sample clipped to it would hold only +-1 sd of mean_std-normalized actions."""
    from vla.random_policy import random_policy

    with pytest.raises(ValueError, match="norm.action=mean_std with head"):
        random_policy({"backbone": {"image_size": 32}, "head": head, "norm": {"action": "mean_std"}})
    random_policy({"backbone": {"image_size": 32}, "head": {"type": "flow"}, "norm": {"action": "mean_std"}})


def test_a_dimension_that_rarely_leaves_one_value_keeps_its_rare_values():
    """q01 == q99 when 98%+ of frames hold one value: a gripper open in 0.5% of frames (the diffusion recipe
    normalizes it) or a rotation used once in a while would clip to +-1 and come back as the common value."""
    values = np.zeros((1000, 3), dtype=np.float32)
    values[:, 0] = 1.0
    values[:5, 0] = -1.0  # rare gripper opening
    values[:7, 1] = [0.3, -0.2, 0.1, 0.25, -0.3, 0.05, 0.2]  # rare rotation corrections
    values[:, 2] = 0.5  # truly constant
    norm = Normalizer({"action": compute_stats(values, "action")}, {"action": KeySpec("q01_q99", [])})
    x = torch.from_numpy(values)
    y = norm.normalize("action", x)
    assert float(y.abs().max()) <= 1.0 and torch.all(y[:, 2] == 0)
    assert torch.allclose(norm.unnormalize("action", y), x, atol=1e-6)


def test_checkpoints_saved_before_the_fallback_keep_their_transform(tmp_path):
    """A checkpoint's weights were trained under its transform: one saved before norm.narrow_min_max existed loads
    with plain q01/q99, a new one with the fallback."""
    import json

    from vla.checkpoint import load_config, save_policy
    from vla.random_policy import random_policy

    save_policy(random_policy({"backbone": {"image_size": 32}}), tmp_path / "new")
    assert load_config(tmp_path / "new").norm.narrow_min_max is True
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    del config["norm"]["narrow_min_max"]
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    assert load_config(tmp_path / "new").norm.narrow_min_max is False
    values = np.zeros((1000, 1), dtype=np.float32)
    values[:5] = -1.0
    old = Normalizer({"action": compute_stats(values, "action")}, {"action": KeySpec("q01_q99", (), False)})
    assert float(old.normalize("action", torch.tensor([[-1.0]]))) == -1.0  # clipped, as it was trained
