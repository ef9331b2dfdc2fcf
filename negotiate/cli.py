"""The ``negotiate`` command line: one subcommand per module of this package.

negotiate play --agent0 scripted:mediator --agent1 scripted:stubborn --seed 0
negotiate scenarios list --split test --category everyday
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from negotiate import bench, judge, models, play, scenarios, serve, train
from negotiation_env.backend_interface import BackendError

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
    return parser


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
