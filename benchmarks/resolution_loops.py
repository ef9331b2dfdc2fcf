"""How often the untrained policy's resolutions loop, and what a no-repeat ban changes.

    python -m benchmarks.resolution_loops --config configs/cpu_learning.yaml --sizes 0 4 8 \\
        --scenarios 16 --out docs/results/resolution-loops

For each ban size N (0: none) the untrained policy negotiates held-out scenarios with the
config's turn settings, exactly as in the learning benchmark's evaluation
(:func:`benchmarks.learning.evaluate`), and writes each resolution with
``rollout.summary_no_repeat_ngram_size: N``. The dialogues are sampled with the same seed
and settings for every size, so they are the same and only the resolutions differ: every
comparison is paired by scenario. Reported per size: the evaluation judge's score (the
training reward by default) with its 95% interval and the paired difference to size 0, the
checklist judge's score and its ``not_repetitive`` pass rate, the share of a resolution's
sentences that repeat an earlier one, and words per resolution. Resumable, like the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.command import run_main
from benchmarks.learning import (
    UNTRAINED,
    criterion_rates,
    evaluate,
    interval,
    per_scenario,
    policy_specs,
    run_records,
    second_judging,
)
from benchmarks.machine import describe_machine, machine_line
from benchmarks.report import write_results

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def repeated_sentence_share(text: str) -> float:
    """Share of a text's sentences (of more than two words) that repeat an earlier one,
    ignoring case and surrounding spaces; 0 for a text without such sentences."""
    sentences = [s.strip().lower() for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if len(s.split()) > 2]
    if not sentences:
        return 0.0
    return (len(sentences) - len(set(sentences))) / len(sentences)


Rows = dict[tuple[int, str], dict[str, Any]]  # (seed, scenario id) -> measures


def measure_size(args: argparse.Namespace, config: Any, size: int, out: Path) -> Rows:
    """Per (seed, scenario): evaluation score, second judge's record, text measures."""
    rollout = dataclasses.replace(config.rollout, summary_no_repeat_ngram_size=size)
    sized = dataclasses.replace(config, rollout=rollout)
    specs = {UNTRAINED: policy_specs(sized, out, [])[UNTRAINED]}
    suite = evaluate(argparse.Namespace(**{**vars(args), "out": str(out)}), sized, specs)
    second = {
        (r["seed"], r["scenario_id"]): r
        for r in second_judging(suite, args.second_judge, specs, out)
        if r["kind"] == "absolute"
    }
    rows = {}
    for record in run_records(suite, "records.jsonl"):
        key = (record["seed"], record["scenario_id"])
        text = record["resolution"] or ""
        checked = second.get(key, {})
        rows[key] = {
            "score": record["ca_score"],
            "second_score": checked.get("ca_score"),
            "second_record": checked,
            "repeated_sentences": repeated_sentence_share(text),
            "words": len(text.split()),
        }
    return rows


def summarise(rows: Rows, base: Rows) -> dict[str, Any]:
    """One ban size's measures; differences are to ``base`` (no ban), paired by scenario
    (seeds averaged: the scenario is the unit resampled)."""

    def score_blocks(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        mine = {k: r[key] for k, r in rows.items() if r[key] is not None}
        theirs = {k: r[key] for k, r in base.items() if r[key] is not None}
        differences = {k: v - theirs[k] for k, v in mine.items() if k in theirs}
        return interval(per_scenario(mine)), interval(per_scenario(differences), True)

    score, score_difference = score_blocks("score")
    second, second_difference = score_blocks("second_score")
    return {
        "resolutions": len(rows),
        "score": score,
        "score_minus_no_ban": score_difference,
        "second_score": second,
        "second_score_minus_no_ban": second_difference,
        "criteria": criterion_rates([r["second_record"] for r in rows.values()]),
        "repeated_sentences": statistics.fmean(r["repeated_sentences"] for r in rows.values()),
        "words": statistics.fmean(r["words"] for r in rows.values()),
    }


def markdown(results: dict[str, Any]) -> str:
    def cell(block: dict[str, Any], signed: bool = False) -> str:
        low, high = block["ci95"]
        form = "{:+.3f}" if signed else "{:.3f}"
        text = f"{form.format(block['mean'])} [{form.format(low)}, {form.format(high)}]"
        return text + (f" p={block['p']:.3f}" if "p" in block else "")

    lines = [
        "# Resolution loops and the no-repeat ban",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine_line(results['machine'])}  ",
        f"Held-out scenarios: {results['scenarios']} (after the first {results['skip']}); "
        f"untrained `{results['policy']}`; evaluation judge `{results['judge']}`, second judge "
        f"`{results['second_judge']}`. Same dialogues for every size; differences paired by "
        "scenario, 95% bootstrap intervals, sign-flip p-values.",
        "",
        "| ban size | score | - no ban | second judge | - no ban | not_repetitive passed "
        "| repeated sentences | words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, row in results["sizes"].items():
        first = size == str(min(int(s) for s in results["sizes"]))
        lines.append(
            f"| {size} | {cell(row['score'])} | "
            f"{'-' if first else cell(row['score_minus_no_ban'], True)} | "
            f"{cell(row['second_score'])} | "
            f"{'-' if first else cell(row['second_score_minus_no_ban'], True)} | "
            f"{row['criteria'].get('not_repetitive', float('nan')):.2f} | "
            f"{row['repeated_sentences']:.2f} | {row['words']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.resolution_loops", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="configs/cpu_learning.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--scenarios", type=int, default=16, help="held-out scenarios")
    parser.add_argument("--skip-scenarios", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--judge", default="default", help="evaluation judge spec")
    parser.add_argument("--second-judge", default="checklist")
    parser.add_argument("--agreement", default="marker", help="agreement detector")
    parser.add_argument("--out", default="results/resolution-loops")
    args = parser.parse_args(argv)
    if 0 not in args.sizes or any(size < 0 for size in args.sizes):
        raise ValueError(f"--sizes: must include 0 (no ban) and be >= 0, got {args.sizes}")

    from negotiate.train import parse_overrides
    from trainers.config import TrainConfig

    config = TrainConfig.from_yaml(args.config, parse_overrides(args.set))
    out = Path(args.out)
    started = time.perf_counter()
    measured = {size: measure_size(args, config, size, out / f"n{size}") for size in args.sizes}
    results = {
        "command": " ".join(["python -m benchmarks.resolution_loops", *(argv or sys.argv[1:])]),
        "machine": describe_machine(),
        "policy": config.model.policy,
        "judge": args.judge,
        "second_judge": args.second_judge,
        "scenarios": args.scenarios,
        "skip": args.skip_scenarios,
        "sizes": {
            str(size): summarise(rows, measured[0]) for size, rows in sorted(measured.items())
        },
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("python -m benchmarks.resolution_loops", main))
