"""`vla` command line: finetune (demos -> BC -> eval), demos, train, eval, config, bench."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    bench = sub.add_parser("bench", help="benchmarks; writes a results table")
    bench.add_argument("--out", default="bench_results")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
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
            report = experiment.evaluate_checkpoint(Path(args.ckpt), tasks, args.episodes)
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in report.items() if k != "tasks"}, indent=2))
        return 0
    if args.cmd == "bench":
        from vla.bench import run_all

        run_all(Path(args.out), quick=args.quick)
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


if __name__ == "__main__":
    sys.exit(main())
