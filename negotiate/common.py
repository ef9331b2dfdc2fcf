"""Arguments and helpers several subcommands share."""

from __future__ import annotations

import argparse

from negotiation_env.scenarios import ScenarioBank


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenario data (default: the shipped data set)")
    group.add_argument("--dilemmas", metavar="FILE", help="dilemmas JSONL file")
    group.add_argument("--personas", metavar="FILE", help="personas JSONL file")
    group.add_argument("--pairs", metavar="FILE", help="persona pairs JSONL file")


def load_bank(args: argparse.Namespace) -> ScenarioBank:
    if args.dilemmas or args.personas or args.pairs:
        return ScenarioBank.from_files(args.dilemmas, args.personas, args.pairs)
    return ScenarioBank.default()
