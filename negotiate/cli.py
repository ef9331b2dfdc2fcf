"""The ``negotiate`` command line: one subcommand per module of this package.

negotiate play --agent0 scripted:mediator --agent1 scripted:stubborn --seed 0
negotiate scenarios list --split test --category everyday
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llm.interface import BackendError
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
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        # Bad input: a one-line message naming what was wrong, not a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"negotiate {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BackendError as error:
        # A model or server that could not answer: the cause (the backend's message names
        # it) and what to do, on one line.
        cause = " ".join(str(error).split())
        print(
            f"negotiate {args.command}: model backend failed: {cause}. Check that the model "
            "or server named in the spec is available (server running, URL and API key "
            "right), then rerun; commands that resume keep what they had finished.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
