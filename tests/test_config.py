import pytest

from vla.config import ConfigError, ExperimentConfig, from_dict, merge, parse_overrides, to_dict
from vla.experiment import resolve_config


def test_overrides_parse_nested_yaml_values():
    assert parse_overrides(["train.steps=10", "data.cameras=[agentview]", "backbone.pretrained=null"]) == {
        "train": {"steps": 10}, "data": {"cameras": ["agentview"]}, "backbone": {"pretrained": None}}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'.*steps"):
        merge(ExperimentConfig(), {"train": {"stepz": 1}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        merge(ExperimentConfig(), {"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match="eval.enabled: expected true/false"):
        merge(ExperimentConfig(), {"eval": {"enabled": "yes"}})


def test_int_is_accepted_for_float_and_roundtrip():
    cfg = merge(ExperimentConfig(), {"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert from_dict(to_dict(cfg)) == cfg


def test_recipe_then_sim_then_overrides():
    cfg = resolve_config("openvla", "libero", overrides=["train.steps=7"])
    assert cfg.head.type == "tokenized" and cfg.demos.suite == "libero_spatial" and cfg.train.steps == 7


def test_unknown_policy_and_sim_list_valid_ones():
    with pytest.raises(ValueError, match="valid policies: .*openvla_oft"):
        resolve_config("nope", "libero")
    with pytest.raises(ValueError, match="valid simulators: libero"):
        resolve_config("openvla_oft", "gazebo")


def test_word_hash_tokenizer_is_stable_and_below_action_ids():
    from vla.tokenizer import WordHashTokenizer

    tok = WordHashTokenizer(1024, max_id=767)
    ids = tok.encode("Pick up the black bowl, then place it on the plate.")
    assert ids == tok.encode("pick up the black bowl , then place it on the plate .")
    assert ids[0] == tok.bos_id and max(ids) < 767 and len(ids) == 14


def test_float_keys_take_yaml_exponents_and_refuse_words():
    # YAML 1.1 reads 5e-5 (no dot) as a string; a float key must still get the number
    cfg = merge(ExperimentConfig(), parse_overrides(["rl.lr=5e-5", "train.lr=3"]))
    assert cfg.rl.lr == 5e-5 and isinstance(cfg.rl.lr, float) and cfg.train.lr == 3.0
    with pytest.raises(ConfigError, match="rl.lr: expected a number"):
        merge(ExperimentConfig(), parse_overrides(["rl.lr=fast"]))


@pytest.mark.parametrize("override, message", [("head.type=bogus", "head.type 'bogus' is unknown"),
                                               ("norm.action=foo", "norm.action 'foo' is unknown"),
                                               ("backbone.name=x", "backbone.name 'x' is unknown"),
                                               ("head.sampler=greedy", "head.sampler 'greedy' is unknown")])
def test_unknown_names_are_refused_when_the_config_resolves(override, message):
    """Before demos are generated (minutes), not when the policy is first built."""
    from vla.experiment import resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config("openvla_oft", "libero", None, [override])


def test_a_config_file_or_override_naming_another_simulator_or_recipe_is_refused(tmp_path):
    """SIM= and POLICY= pick the defaults applied before a --config file; a file saying `sim: maniskill` under the
    default SIM=libero would run ManiSkill with LIBERO's demo suite. The same value is accepted."""
    other, same = tmp_path / "other.yaml", tmp_path / "same.yaml"
    other.write_text("sim: maniskill\ntrain:\n  steps: 5\n")
    same.write_text("sim: libero\npolicy: pi0\ntrain:\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"sets sim: maniskill, but the command runs sim libero .*SIM=maniskill"):
        resolve_config("pi0", "libero", str(other))
    assert resolve_config("pi0", "maniskill", str(other)).demos.suite == "maniskill"
    assert resolve_config("pi0", "libero", str(same)).train.steps == 5
    with pytest.raises(ConfigError, match="sets policy: pi0, but the command runs policy openvla_oft"):
        resolve_config("openvla_oft", "libero", str(same))
    with pytest.raises(ConfigError, match="an override sets sim: maniskill"):
        resolve_config("pi0", "libero", None, ["sim=maniskill"])


def test_libero_demos_leave_the_evaluations_init_states_out(tmp_path):
    """finetune's held-out success rate: the demos come from init states below eval.first_init_state (30)."""
    from vla.experiment import demo_dataset_dir, demo_init_states_below

    cfg = resolve_config("openvla_oft", "libero", overrides=[f"demos.root={tmp_path}"])
    assert cfg.eval.first_init_state == 30 and demo_init_states_below(cfg) == 30
    assert demo_dataset_dir(cfg).name.endswith("_below30")
    standard = resolve_config("openvla_oft", "libero", overrides=["eval.first_init_state=0"])  # all 50, as LIBERO's protocol
    assert demo_init_states_below(standard) is None and "below" not in demo_dataset_dir(standard).name
    assert demo_init_states_below(resolve_config("openvla_oft", "maniskill", overrides=[])) is None  # seeds from 1000


def test_demos_cached_before_the_bound_are_reused_when_they_kept_below_it(tmp_path):
    import json

    from vla.experiment import demo_dataset_dir

    cfg = resolve_config("openvla_oft", "libero", overrides=[f"demos.root={tmp_path}"])
    old = tmp_path / "libero_spatial_t0_n20_px128"
    (old / "meta").mkdir(parents=True)
    summary = {"tasks": {"0": {"attempts": 20}}}  # init states 0-19 tried: all below the evaluation's 30
    (old / "meta" / "demos_summary.json").write_text(json.dumps(summary))
    assert demo_dataset_dir(cfg) == old
    summary["tasks"]["0"]["attempts"] = 35  # some demos may come from evaluated init states: not reused
    (old / "meta" / "demos_summary.json").write_text(json.dumps(summary))
    assert demo_dataset_dir(cfg).name == "libero_spatial_t0_n20_px128_below30"
