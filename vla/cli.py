"""`vla` command line: finetune (demos -> BC -> eval), demos, train, eval, fit, sweep, rl, rl-noise, serve, deploy, config,
bench."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


DEVICE_HELP = "auto | cpu | cuda | cuda:N (default: the checkpoint's own device setting)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default="openvla_oft", help="recipe in policies/ (POLICY=)")
    p.add_argument("--sim", default="libero", help="simulator (SIM=)")
    p.add_argument("--config", default=None, help="YAML file with config overrides")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=100")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in [("finetune", "demos (if no dataset) -> BC -> eval"), ("train", "BC only"),
                        ("demos", "generate scripted-expert demos as a LeRobot dataset"),
                        ("config", "print the resolved config")]:
        _common(sub.add_parser(name, help=help_))
    ev = sub.add_parser("eval", help="evaluate a checkpoint in its simulator")
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--tasks", default=None, help="comma-separated task ids (default: the ones trained on)")
    ev.add_argument("--episodes", type=int, default=None)
    ev.add_argument("--device", default=None, help=DEVICE_HELP)
    fit = sub.add_parser("fit", help="does a BC checkpoint follow the placement? its first chunk against the demos'")
    fit.add_argument("--ckpt", required=True)
    fit.add_argument("--episodes", type=int, default=20, help="demos compared (their first frames)")
    fit.add_argument("--dataset", default=None, help="default: the dataset the checkpoint was trained on")
    rl = sub.add_parser("rl", help="online RL (PPO/GRPO) from a BC checkpoint, evaluated before and after")
    _common(rl)
    rl.add_argument("--ckpt", required=True, help="BC checkpoint (POLICY=residual: the base to freeze)")
    rn = sub.add_parser("rl-noise", help="how many episodes an RL update needs at a checkpoint: the gradient noise "
                                         "scale of its policy gradient, from one GRPO iteration's rollouts")
    _common(rn)
    rn.add_argument("--ckpt", help="the checkpoint RL would start from")
    rn.add_argument("--out", default=None, help="default: <checkpoint's run>/noise_scale")
    rn.add_argument("--from", dest="saved", metavar="DIR", help="recompute the report from an earlier run's output "
                    "(its saved Gram matrices), without rollouts")
    sw = sub.add_parser("sweep", help="evaluation sweep over LIBERO or ManiSkill suites on worker processes "
                                      "(resumable)")
    sw.add_argument("--ckpt", help="checkpoint directory")
    sw.add_argument("--suite", default=None, help="libero_130, maniskill or comma-separated suites of the checkpoint's "
                    "simulator (default: libero_130 for a LIBERO checkpoint, maniskill for a ManiSkill one)")
    sw.add_argument("--tasks", default=None, help="comma-separated task ids or names within each suite (default: all)")
    sw.add_argument("--episodes", type=int, default=50, help="episodes per task (standard protocol: 50)")
    sw.add_argument("--max-steps", type=int, default=None, help="default: the suite's standard value")
    sw.add_argument("--workers", type=int, default=2)
    sw.add_argument("--device", default=None, help=DEVICE_HELP + " (--ray shards run where Ray placed them: on the "
                    "CPUs they asked for)")
    sw.add_argument("--shard", default="0/1", help="i/N: run every N-th episode starting at i")
    sw.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="shard the sweep over a running Ray cluster: auto or <head ip>:6379 (RAY=; ray extra)")
    sw.add_argument("--ray-shards", type=int, default=None, help="with --ray: shards (default: one per node)")
    sw.add_argument("--out", default=None, help="results directory (default: <ckpt>/sweep_<suite>)")
    sw.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two sweeps' (or RL evaluations', eval_NNNN) results side by side, with the "
                    "paired McNemar test on the episodes both ran")
    sw.add_argument("--agreement", nargs="+", metavar="EVAL_DIR",
                    help="for 2+ evaluations of the same episodes: how many episodes every run solved, none did, "
                    "or only some did (where noise or a small policy change decides)")
    sw.add_argument("--merge", nargs="+", metavar="SHARD_DIR", help="merge shard directories into --out and report")
    sv = sub.add_parser("serve", help="serve a checkpoint over websocket + msgpack (openpi protocol)")
    sv.add_argument("--ckpt", required=True)
    sv.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs --api-key")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None)
    sv.add_argument("--device", default=None, help=DEVICE_HELP)
    dp = sub.add_parser("deploy", help="run a served policy on a robot (or the MuJoCo stand-in) at a fixed rate")
    from real_robot.daemon import add_arguments as add_deploy_arguments

    add_deploy_arguments(dp)
    bench = sub.add_parser("bench", help="benchmarks; writes a results table")
    bench.add_argument("--out", default="bench_results")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    bench.add_argument("--only", default=None, help="comma-separated sections (e.g. sweep,server); default: all")
    args = parser.parse_args(argv)

    from vla.config import ConfigError

    try:
        return _run(args)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from vla import experiment

    if args.cmd == "eval":
        from vla.checkpoint import CheckpointError

        tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else None
        try:
            report = experiment.evaluate_checkpoint(Path(args.ckpt), tasks, args.episodes, args.device)
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in report.items() if k != "tasks"}, indent=2))
        return 0
    if args.cmd == "sweep":
        return _sweep(args)
    if args.cmd == "fit":
        from vla.checkpoint import CheckpointError
        from vla.eval.demo_fit import first_chunk_fit, format_fit

        try:
            print(format_fit(first_chunk_fit(args.ckpt, args.episodes, args.dataset)))
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "rl":
        from vla.rl.ray_rollout import RayRolloutError
        from vla.rl.trainer import train_rl

        try:
            summary = train_rl(args.ckpt, args.policy, [f"sim={args.sim}", *args.overrides], args.config)
        except RayRolloutError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if summary is not None:  # None: a torchrun replica other than rank 0
            print(json.dumps({k: summary[k] for k in ("before", "after", "rl_seconds", "checkpoint")}, indent=2))
        return 0
    if args.cmd == "rl-noise":
        from vla.rl.noise_scale import format_report, measure, recompute

        if bool(args.ckpt) == bool(args.saved):
            print("error: give --ckpt (measure) or --from DIR (recompute a measurement), one of them", file=sys.stderr)
            return 2
        report = recompute(args.saved) if args.saved else measure(
            args.ckpt, args.policy, [f"sim={args.sim}", *args.overrides], args.out, args.config)
        print(format_report(report))
        return 0
    if args.cmd == "serve":
        from real_robot.server import policy_infer, run
        from vla.checkpoint import load_policy

        policy = load_policy(args.ckpt, args.device)
        from sim.base import ACTION_SCALES

        # what the actions mean: the daemon executes them at the scale of the simulator the checkpoint was trained in
        meters, radians = ACTION_SCALES[policy.cfg.sim]
        meta = {"checkpoint": str(args.ckpt), "policy": policy.cfg.policy, "chunk_size": policy.cfg.head.chunk_size,
                "action_dim": policy.cfg.head.action_dim, "cameras": list(policy.cfg.data.cameras),
                "sim": policy.cfg.sim, "action_scale": {"meters": meters, "radians": radians},
                # the rate its data was recorded at: the daemon acts at it (None: trained before it was kept)
                "control_hz": policy.cfg.data.fps,
                # the size its training images were stored at (and its simulator renders): frames are sent at it
                "image_size": policy.cfg.demos.image_size}
        run(policy_infer(policy), args.host, args.port, args.api_key, meta)
        return 0
    if args.cmd == "deploy":
        from real_robot.daemon import run as deploy

        try:
            return deploy(args)
        except (TimeoutError, ConnectionError, ImportError, FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.cmd == "bench":
        from vla.bench import run_all

        run_all(Path(args.out), quick=args.quick, only=args.only.split(",") if args.only else None)
        return 0
    cfg = experiment.resolve_config(args.policy, args.sim, args.config, args.overrides)
    if args.cmd == "config":
        from vla.config import to_yaml

        print(to_yaml(cfg))
    elif args.cmd == "demos":
        print(experiment.ensure_demos(cfg))
    elif args.cmd == "train":
        from vla.train.trainer import train

        print(train(cfg, cfg.data.dataset or str(experiment.ensure_demos(cfg))))
    else:
        experiment.finetune(cfg)
    return 0


def _sweep(args) -> int:
    from vla.eval.report import compare, merge_shards, write_report

    if args.compare:
        print(compare(Path(args.compare[0]), Path(args.compare[1])))
        return 0
    if args.agreement:
        from vla.eval.agreement import agreement_table

        print(agreement_table([Path(d) for d in args.agreement]))
        return 0
    if args.merge:
        if not args.out:
            raise ValueError("--merge needs --out <merged dir>")
        o = merge_shards([Path(d) for d in args.merge], Path(args.out))["overall"]
        print(f"[sweep] merged {len(args.merge)} shards: {o['successes']}/{o['episodes']}; report: {Path(args.out) / 'report.md'}")
        return 0
    if not args.ckpt:
        raise ValueError("sweep needs --ckpt <checkpoint dir> (or --compare A B)")
    import time

    from vla.checkpoint import CheckpointError, load_config, load_policy
    from vla.eval.sweep import FULL_SWEEP, LIBERO_ALL, Protocol, resolve_suites, run_sweep, suite_names, sweep_sim

    index, _, count = args.shard.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise ValueError(f"--shard must look like i/N, got {args.shard!r}")
    if args.ray and args.shard != "0/1":
        raise ValueError("--ray makes its own shards; leave out --shard")
    if args.ray_shards is not None and not args.ray:
        raise ValueError("--ray-shards needs --ray <address>")
    tasks = [int(t) if t.strip().isdigit() else t.strip() for t in args.tasks.split(",")] if args.tasks else None
    try:
        cfg = load_config(Path(args.ckpt))
        suite = args.suite or FULL_SWEEP.get(cfg.sim, LIBERO_ALL)
        # the suite names its simulator (the env workers build that one); the checkpoint must come from it
        sim_name = sweep_sim(suite_names(suite))
        if sim_name != cfg.sim:
            raise ValueError(f"checkpoint {args.ckpt} was trained in SIM={cfg.sim}, but --suite {suite} runs in "
                             f"{sim_name}; a checkpoint is swept in its own simulator: use --suite "
                             f"{FULL_SWEEP.get(cfg.sim, cfg.sim)} or some of its suites (or leave --suite out)")
        suites = resolve_suites(suite, tasks)
        # with --ray the shards load it on their nodes
        policy = None if args.ray else load_policy(args.ckpt, args.device)
    except CheckpointError as err:
        raise ValueError(str(err)) from err
    protocol = Protocol(episodes_per_task=args.episodes, max_steps=args.max_steps,
                        replan_steps=cfg.eval.replan_steps, image_size=cfg.demos.image_size)
    out = Path(args.out or Path(args.ckpt) / f"sweep_{suite.replace(',', '+')}")
    tic = time.perf_counter()
    if args.ray:
        from vla.eval.ray_sweep import RaySweepError, run_ray_sweep

        try:
            stats = run_ray_sweep(Path(args.ckpt), suites, out, protocol, args.workers, args.ray, args.ray_shards,
                                  sim_name)
        except RaySweepError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        stats = run_sweep(policy, suites, out, protocol, args.workers, (int(index), int(count)), sim_name)
    stats["wall_seconds"] = round(time.perf_counter() - tic, 1)
    summary = write_report(out, {"checkpoint": str(args.ckpt), "workers": args.workers,
                                "shard": f"ray {args.ray}" if args.ray else args.shard, **stats})
    o = summary["overall"]
    print(f"[sweep] {o['successes']}/{o['episodes']} successes, {stats['restarts']} worker restarts; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
