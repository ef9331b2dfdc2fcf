"""``negotiate scenarios``: list, show, sample, check and generate scenario data."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np

from llm.specs import load_text_generator
from negotiate.common import add_data_arguments, load_bank
from negotiation_env.scenarios import CATEGORIES, ScenarioBank, find_near_duplicates
from negotiation_env.scenarios.generation import generate_dilemmas, generate_pairs, write_generation
from negotiation_env.scenarios.records import SCENARIO_ID_SEPARATOR


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "scenarios", help="list, show, sample, validate or generate scenario data"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list dilemmas (or persona pairs with --pairs-only)")
    listing.add_argument("--split", default="all", choices=["train", "test", "all"])
    listing.add_argument("--category", choices=list(CATEGORIES))
    listing.add_argument("--search", help="only dilemmas whose title or text contains this")
    listing.add_argument("--limit", type=int, default=0, help="show at most this many (0 = all)")
    listing.add_argument("--pairs-only", action="store_true", help="list persona pairs instead")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(run=run_list)

    show = actions.add_parser("show", help="show a dilemma, a persona pair or a scenario by id")
    show.add_argument(
        "id", help=f"dilemma id, pair id, or DILEMMA_ID{SCENARIO_ID_SEPARATOR}PAIR_ID"
    )
    show.set_defaults(run=run_show)

    sample = actions.add_parser("sample", help="draw scenarios as reset(seed=...) would")
    sample.add_argument("--n", type=int, default=5)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--split", default="train", choices=["train", "test", "all"])
    sample.add_argument("--category", choices=list(CATEGORIES))
    sample.set_defaults(run=run_sample)

    stats = actions.add_parser("stats", help="counts per split and category")
    stats.set_defaults(run=run_stats)

    validate = actions.add_parser(
        "validate", help="load and check data files, including near-duplicate dilemmas"
    )
    validate.set_defaults(run=run_validate)

    generate = actions.add_parser(
        "generate",
        help="generate new dilemmas or persona pairs with an LLM, through the same checks",
    )
    generate.add_argument(
        "--generator",
        required=True,
        help="LLM spec (smollm2, hf:PATH, openai:MODEL@URL) or module:function (prompt -> text)",
    )
    generate.add_argument("--kind", default="dilemmas", choices=["dilemmas", "pairs"])
    generate.add_argument("--category", default="everyday", choices=list(CATEGORIES))
    generate.add_argument("--n", type=int, default=5, help="how many records to accept")
    generate.add_argument(
        "--max-calls", type=int, default=0, help="give up after this many LLM calls"
    )
    generate.add_argument(
        "--out", required=True, metavar="DIR", help="append accepted records here"
    )
    generate.set_defaults(run=run_generate)

    for sub in (listing, show, sample, stats, validate, generate):
        add_data_arguments(sub)


def run_list(args: argparse.Namespace) -> int:
    bank = load_bank(args)
    if args.pairs_only:
        pairs = bank.pairs(args.split)[: args.limit or None]
        for pair in pairs:
            if args.json:
                print(json.dumps(pair.to_record(), ensure_ascii=False))
            else:
                print(f"{pair.id:42} {pair.split:5} {pair.persona_a.name} vs {pair.persona_b.name}")
        return 0
    dilemmas = bank.dilemmas(args.split, args.category)
    if args.search:
        needle = args.search.lower()
        dilemmas = [d for d in dilemmas if needle in d.title.lower() or needle in d.text.lower()]
    for dilemma in dilemmas[: args.limit or None]:
        if args.json:
            print(json.dumps(dilemma.to_record(), ensure_ascii=False))
        else:
            print(f"{dilemma.id:10} {dilemma.split:5} {dilemma.category:13} {dilemma.title}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    bank = load_bank(args)
    if SCENARIO_ID_SEPARATOR in args.id:
        record = bank.get(args.id).to_record()
    else:
        try:
            record = bank.dilemma(args.id).to_record()
        except KeyError:
            pair = bank.pair(args.id)
            record = pair.to_record() | {
                "persona_a": pair.persona_a.to_record(),
                "persona_b": pair.persona_b.to_record(),
            }
    print(json.dumps(record, indent=2, ensure_ascii=False))
    return 0


def run_sample(args: argparse.Namespace) -> int:
    bank = load_bank(args)
    for offset in range(args.n):
        scenario = bank.sample(np.random.default_rng(args.seed + offset), args.split, args.category)
        print(f"seed {args.seed + offset:>4}  {scenario.id:50} {scenario.dilemma.title}")
    return 0


def _describe(bank: ScenarioBank) -> list[str]:
    lines = []
    for split in ("train", "test"):
        by_category = Counter(d.category for d in bank.dilemmas(split))
        lines.append(
            f"{split:5}: {len(bank.dilemmas(split))} dilemmas "
            f"({', '.join(f'{c} {by_category[c]}' for c in CATEGORIES)}), "
            f"{len(bank.pairs(split))} persona pairs, {bank.count(split)} scenarios"
        )
    lines.append(f"personas: {len(bank.personas())}")
    return lines


def run_stats(args: argparse.Namespace) -> int:
    print("\n".join(_describe(load_bank(args))))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    bank = load_bank(args)  # raises with file:line:field on malformed data
    print("\n".join(_describe(bank)))
    duplicates = find_near_duplicates((d.id, f"{d.title} {d.text}") for d in bank.dilemmas())
    for duplicate in duplicates:
        print(f"near-duplicate dilemmas: {duplicate}")
    if duplicates:
        return 1
    print("ok: all records valid, no near-duplicate dilemmas")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    bank = load_bank(args)
    generator = load_text_generator(args.generator)
    if args.kind == "dilemmas":
        result = generate_dilemmas(
            generator, args.n, args.category, bank, args.generator, max_calls=args.max_calls or None
        )
        accepted = len(result.dilemmas)
    else:
        result = generate_pairs(
            generator, args.n, bank, args.generator, max_calls=args.max_calls or None
        )
        accepted = len(result.pairs)
    written = write_generation(result, args.out)
    for rejection in result.rejections:
        print(f"rejected: {rejection.reason}", file=sys.stderr)
    print(
        f"{accepted} of {args.n} {args.kind} accepted after {result.calls} generator calls, "
        f"{len(result.rejections)} rejected; written: "
        + (", ".join(str(path) for path in written.values()) or "nothing")
    )
    return 0 if accepted == args.n else 1
