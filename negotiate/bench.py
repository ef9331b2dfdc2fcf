"""``negotiate bench``: the evaluation suite (see benchmarks/suite.py and benchmarks/README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.machine import machine_line
from benchmarks.suite import Suite, add_arguments, config_from_args


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="evaluate agents on held-out scenarios: CA, win rates, efficiency, capability",
        description="Run the evaluation suite. Results (JSON, markdown, PNG plots) go to --out; "
        "rerunning with the same --out resumes.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = Suite(config_from_args(args)).run()
    print((Path(args.out) / "results.md").read_text())
    print(
        f"machine: {machine_line(results['machine'])}; {results['seconds']:.0f} s; results in {args.out}"
    )
    return 0
