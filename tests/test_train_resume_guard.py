"""A run directory resumes only the experiment it holds: longer training continues it, other settings are refused
(they would otherwise continue the old weights and report the old config as if the new one had run)."""
import pytest

from vla.checkpoint import load_policy
from vla.config import ConfigError, ExperimentConfig, merge
from vla.train.trainer import train


def _cfg(out, dataset, **train_cfg):
    return merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"chunk_size": 4}, "output_dir": str(out),
                                      "data": {"dataset": str(dataset)},
                                      "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "log_every": 1,
                                                "save_every": 2, **train_cfg}})


def test_a_run_resumes_for_more_steps_but_not_under_other_settings(tmp_path, synthetic_dataset, capsys):
    train(_cfg(tmp_path, synthetic_dataset), str(synthetic_dataset))
    longer = train(_cfg(tmp_path, synthetic_dataset, steps=3, save_every=3), str(synthetic_dataset))
    assert longer.name == "step_0000003" and "resumed from" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"other settings \(train.lr differ"):
        train(_cfg(tmp_path, synthetic_dataset, steps=4, lr=1e-3), str(synthetic_dataset))
    fresh = train(_cfg(tmp_path, synthetic_dataset, steps=2, lr=1e-3, resume=False), str(synthetic_dataset))
    assert load_policy(fresh).cfg.train.lr == 1e-3


def test_a_run_does_not_resume_over_data_that_changed_under_the_same_path(tmp_path, synthetic_dataset):
    """data.dataset may move (another path, the same frames); data regenerated or re-downloaded under it may not:
    the weights learned under the checkpoint's statistics would continue under new ones."""
    import shutil

    from conftest import write_synthetic_dataset

    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    train(_cfg(tmp_path / "run", data), str(data))
    moved = tmp_path / "moved"
    shutil.move(str(data), str(moved))
    assert train(_cfg(tmp_path / "run", moved, steps=3, save_every=3), str(moved)).name == "step_0000003"
    write_synthetic_dataset(data, seed=1)  # regenerated: other frames under the first path
    with pytest.raises(ConfigError, match=r"normalization statistics differ .*action/"):
        train(_cfg(tmp_path / "run", data, steps=4, save_every=4), str(data))


def test_bad_yaml_in_an_override_is_a_config_error():
    from vla.config import parse_overrides

    with pytest.raises(ConfigError, match="inner quotes"):
        parse_overrides(["prompt.template=In: {instruction}? Out:"])
    assert parse_overrides(['prompt.template="In: {instruction}? Out:"'])["prompt"]["template"] == "In: {instruction}? Out:"
