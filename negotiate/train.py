"""``negotiate train``: GRPO self-play (the paper's method) or the single-agent baseline."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from trainers.config import TrainConfig


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a policy by negotiation self-play (or the single-agent baseline)",
        description="Train with GRPO. Settings come from --config (YAML; see configs/) and --set "
        "overrides; --help-config lists every setting with its default. Checkpoints go to "
        "run.output_dir; --resume continues from the last complete one.",
    )
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="configuration file (default: the paper's defaults)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set optim.max_steps=10 (repeatable)",
    )
    parser.add_argument("--output-dir", help="shortcut for --set run.output_dir=DIR")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last complete checkpoint"
    )
    parser.add_argument(
        "--baseline",
        choices=["selfplay", "single-agent"],
        default="selfplay",
        help="selfplay (default) or the single-agent direct-answer baseline",
    )
    parser.add_argument(
        "--self-reward",
        action="store_true",
        help="single-agent baseline: the policy judges its own candidates",
    )
    parser.add_argument("--help-config", action="store_true", help="print every setting and exit")
    parser.set_defaults(run=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. optim.max_steps=10")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return overrides


def load_config(args: argparse.Namespace) -> TrainConfig:
    overrides = parse_overrides(args.overrides)
    if args.output_dir:
        overrides["run.output_dir"] = args.output_dir
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    values: dict[str, Any] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        values.setdefault(section, {})[key] = value
    return TrainConfig.from_dict(values, source="--set")


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.help_config:
        print(config.help())
        return 0
    if args.baseline == "single-agent":
        from trainers.single_agent import train_single_agent

        result = train_single_agent(config, resume=args.resume, self_reward=args.self_reward)
    else:
        from trainers.selfplay import train_selfplay

        result = train_selfplay(config, resume=args.resume)
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    print(
        f"trained {result.steps} steps in {result.seconds:.0f} s{resumed}; final model: {result.final_dir}"
    )
    return 0
