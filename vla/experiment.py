"""The main job: demos (when no dataset is given) -> behaviour cloning -> evaluation in the sim."""
from __future__ import annotations

import json
from pathlib import Path

import policies
import sim
from vla.config import ConfigError, ExperimentConfig, load_yaml, merge, parse_overrides

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config(policy: str, sim_name: str, config_file: str | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """defaults -> policy recipe -> configs/sims/<sim>.yaml -> --config file -> key=value overrides."""
    sim.check_sim(sim_name)
    cfg = merge(ExperimentConfig(), {"policy": policy, "sim": sim_name})
    cfg = merge(cfg, policies.get_recipe(policy))
    sim_yaml = CONFIG_DIR / "sims" / f"{sim_name}.yaml"
    if sim_yaml.is_file():
        cfg = merge(cfg, load_yaml(sim_yaml))
    if config_file:
        from_file = load_yaml(config_file)
        _refuse_another_recipe(f"--config {config_file}", from_file, policy, sim_name)
        cfg = merge(cfg, from_file)
    given = parse_overrides(overrides or [])
    _refuse_another_recipe("an override", given, policy, sim_name)
    cfg = merge(cfg, given)
    check_choices(cfg)
    return cfg


def _refuse_another_recipe(source: str, updates: dict, policy: str, sim_name: str) -> None:
    """The recipe and the simulator's defaults are applied before a config file and overrides, from POLICY= and
    SIM=; a file saying another one would run a mix of both (another simulator with this one's demo suite)."""
    for key, chosen, flag in (("policy", policy, "POLICY"), ("sim", sim_name, "SIM")):
        if key in updates and updates[key] != chosen:
            raise ConfigError(f"{source} sets {key}: {updates[key]}, but the command runs {key} {chosen} "
                              f"({flag}={chosen}, the default unless given, picks the defaults applied first); run "
                              f"with {flag}={updates[key]} (--{key} {updates[key]})")


def check_choices(cfg: ExperimentConfig) -> None:
    """Values the config's types cannot catch (a head, backbone or mode name), refused before any demos or
    training run rather than when the policy is first built."""
    from vla.backbones import PRESETS
    from vla.heads import HEAD_TYPES
    from vla.heads.oft import OUTPUTS
    from vla.heads.tokenized import TOKEN_IDS
    from vla.model import SAMPLERS
    from vla.normalize import MODES

    h = cfg.head
    choices = [("head.type", h.type, HEAD_TYPES), ("head.sampler", h.sampler, SAMPLERS),
               ("head.oft_output", h.oft_output, OUTPUTS), ("head.token_ids", h.token_ids, TOKEN_IDS),
               ("backbone.name", cfg.backbone.name, tuple(PRESETS)),
               ("norm.action", cfg.norm.action, MODES), ("norm.state", cfg.norm.state, MODES)]
    if h.type == "residual" and not h.residual.base_checkpoint:
        choices.append(("head.residual.base_type", h.residual.base_type, tuple(t for t in HEAD_TYPES if t != "residual")))
    for key, value, valid in choices:
        if value not in valid:
            raise ConfigError(f"{key} '{value}' is unknown; valid: {', '.join(valid)}")
    from vla.heads import refuse_other_bin_count, samples_bins

    if cfg.backbone.name == "openvla" and samples_bins(h) and h.token_ids == "auto":
        from vla.backbones.openvla import ACTION_BINS

        # before the 7B download: the head would refuse it once built
        refuse_other_bin_count(h.num_bins, ACTION_BINS, "openvla-7b's", ConfigError)
    unused = sorted(set(cfg.data.camera_keys) - set(cfg.data.cameras))
    if unused:
        raise ConfigError(f"data.camera_keys maps camera(s) {unused} the policy does not read (data.cameras="
                          f"{cfg.data.cameras}); its keys are camera names, its values the dataset's keys")


def demo_dataset_dir(cfg: ExperimentConfig) -> Path:
    d = cfg.demos
    tasks = "-".join(str(t) for t in d.tasks)
    below = demo_init_states_below(cfg)
    plain = Path(d.root) / f"{d.suite}_t{tasks}_n{d.episodes_per_task}_px{d.image_size}"
    if not below:
        return plain
    bounded = plain.with_name(plain.name + f"_below{below}")
    if not bounded.exists() and _tried_only_below(plain, below):
        return plain  # written before the bound existed, from init states below it anyway (tried in order from 0)
    return bounded


def _tried_only_below(root: Path, below: int) -> bool:
    marker = root / "meta" / "demos_summary.json"
    if not marker.is_file():
        return False
    tasks = json.loads(marker.read_text()).get("tasks", {})
    return bool(tasks) and all(int(t.get("attempts", below + 1)) <= below for t in tasks.values())


def demo_init_states_below(cfg: ExperimentConfig) -> int | None:
    """LIBERO demos come from the fixed init states below the evaluation's first, so the success rate
    `finetune` reports is on init states the policy never trained on (ManiSkill's demos use seeds from 1000,
    apart from evaluation's). None: eval.first_init_state = 0, LIBERO's standard protocol over all 50."""
    return (cfg.eval.first_init_state or None) if cfg.sim == "libero" else None


def ensure_demos(cfg: ExperimentConfig) -> Path:
    """Generate the scripted-expert dataset once; later runs reuse it (a marker file says it is whole)."""
    root = demo_dataset_dir(cfg)
    marker = root / "meta" / "demos_summary.json"
    if marker.is_file():
        print(f"[demos] reusing {root}", flush=True)
        return root
    if root.exists():
        import shutil

        print(f"[demos] {root} is incomplete (interrupted run); regenerating", flush=True)
        shutil.rmtree(root)
    if cfg.sim == "maniskill":
        from sim.maniskill_demos import generate_maniskill_demos

        summary = generate_maniskill_demos(cfg.demos.suite, cfg.demos.tasks, cfg.demos.episodes_per_task, root,
                                           repo_id=f"local/{root.name}", image_size=cfg.demos.image_size)
    else:
        from sim.demos import generate_libero_demos

        summary = generate_libero_demos(cfg.demos.suite, cfg.demos.tasks, cfg.demos.episodes_per_task, root,
                                        repo_id=f"local/{root.name}", image_size=cfg.demos.image_size,
                                        init_states_below=demo_init_states_below(cfg))
    marker.write_text(json.dumps(summary, indent=2, default=str))
    return root


def evaluate_checkpoint(ckpt: Path, tasks: list[int] | None = None, episodes: int | None = None,
                        device: str | None = None) -> dict:
    from vla.checkpoint import load_policy
    from vla.eval.rollout import evaluate, summarize, EpisodeResult

    policy = load_policy(ckpt, device)
    cfg = policy.cfg
    tasks = cfg.demos.tasks if tasks is None else tasks
    episodes = cfg.eval.episodes if episodes is None else episodes
    for task in tasks:
        sim.check_episode_range(cfg.sim, cfg.demos.suite, task, cfg.eval.first_init_state, episodes)
    per_task, all_results = {}, []
    for task in tasks:
        env = sim.make_env(cfg.sim, cfg.demos.suite, task, cfg.demos.image_size, cfg.eval.max_steps, cfg.eval.seed)
        try:
            summary = evaluate(policy, env, episodes, cfg.eval.replan_steps, cfg.eval.first_init_state, seed=cfg.eval.seed)
        finally:
            env.close()
        per_task[f"{cfg.demos.suite}/{task}"] = summary
        all_results += [EpisodeResult(**e) for e in summary["episodes_detail"]]
    report = {"checkpoint": str(ckpt), "suite": cfg.demos.suite, **summarize(all_results), "tasks": per_task}
    (Path(ckpt) / "eval.json").write_text(json.dumps(report, indent=2))
    return report


def check_eval_tasks_in_dataset(cfg: ExperimentConfig, source: str) -> None:
    """finetune evaluates the tasks demos.suite / demos.tasks name (by default libero_spatial task 0); a given
    dataset must hold their instructions, or the success it reports is on a task the policy never saw."""
    if cfg.sim != "libero" or not cfg.eval.enabled:
        return
    from sim.libero import task_instruction
    from vla.data.dataset import open_dataset

    held = {str(t).strip().lower() for t in open_dataset(source).meta.tasks.index}
    wanted = {t: task_instruction(cfg.demos.suite, t) for t in cfg.demos.tasks}
    missing = {t: text for t, text in wanted.items() if text.strip().lower() not in held}
    if missing:
        raise ConfigError(
            f"finetune would evaluate {cfg.demos.suite} task(s) {sorted(missing)} ({list(missing.values())[:2]}), "
            f"but the dataset {source} lacks their instructions (its {len(held)} task(s), e.g. "
            f"{sorted(held)[:3]}): name its tasks with demos.suite=... demos.tasks=[...], or eval.enabled=false "
            f"and evaluate with make eval")


def finetune(cfg: ExperimentConfig) -> dict:
    from vla.train.trainer import train

    if cfg.data.dataset:
        check_eval_tasks_in_dataset(cfg, cfg.data.dataset)
    dataset = cfg.data.dataset or str(ensure_demos(cfg))
    ckpt = train(cfg, dataset)
    result = {"checkpoint": str(ckpt)}
    if cfg.eval.enabled:
        report = evaluate_checkpoint(ckpt)
        lo, hi = report["ci95"]
        print(f"[result] success {report['successes']}/{report['episodes']} = {report['success_rate']:.1%} "
              f"(95% CI {lo:.1%}-{hi:.1%}); written to {Path(ckpt) / 'eval.json'}", flush=True)
        result.update(report)
    return result
