"""The ``negotiate`` command line: one subcommand per module of this package.

negotiate play --agent0 scripted:mediator --agent1 scripted:stubborn --seed 0
negotiate scenarios list --split test --category everyday
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from benchmarks.command import run_main
from negotiate import bench, judge, models, play, scenarios, serve, train

SUBCOMMANDS = (play, scenarios, models, serve, judge, train, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negotiate",
        description="Negotiation-based value alignment of LLMs: play, inspect scenarios, train, evaluate.",
    )
    parser.add_argument(
        "--models-dir",
        metavar="DIR",
        help="cache folder of registered models for every subcommand (sets NEGOTIATION_MODELS_DIR)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    for subcommand in commands.choices.values():
        subcommand.formatter_class = _DefaultsFormatter
    return parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option's default in ``--help`` (paths, host, port ...), unless its help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default in (None, False, argparse.SUPPRESS, [], "")
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.models_dir:
        os.environ["NEGOTIATION_MODELS_DIR"] = args.models_dir
    return run_main(f"negotiate {args.command}", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
