"""Fit the off-topic gate's threshold on the reward-model recipe's own texts.

The gate (:mod:`negotiation_env.judges.relevance`) marks a resolution off topic when its
relevance (how much reading the dilemma raises its mean token log-probability) is below a
threshold. A good resolution that the gate marks down is a pair lost, so the threshold is set
by the share of good texts it may gate: the largest threshold that gates at most
``--good-gated`` (2%) of the good resolutions of the recipe's sources (project-built texts on
training-split scenarios; :mod:`trainers.preferences`). Reported beside it: how many of the
recipe's off-topic texts (``off_topic`` and ``off_topic_near``: other dilemmas' good texts,
:func:`trainers.preferences.build_pairs`) it gates, and the same threshold rule fitted on the
dilemmas of one half and counted on the other, both ways.

An earlier objective, the most pairs put right by the gate alone over all of the recipe's
pairs, chose a threshold that gated 14% of the good texts (other flawed texts, such as vague
ones, are less relevant too, which rewarded a high threshold): a quality signal that the
labelled sets do not share, so the gate is kept to its one job.

    python -m trainers.relevance_gate --out docs/results/relevance-gate
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from negotiation_env.jsonl import write_text_atomic
from negotiation_env.judges.base import JudgeRequest
from negotiation_env.judges.cache import JudgeCache
from negotiation_env.judges.relevance import RelevanceGate
from negotiation_env.scenarios import ScenarioBank
from negotiation_env.scenarios.records import split_scenario_id
from trainers.preferences import build_pairs, load_source_list

OFF_TOPIC_FLAWS = ("off_topic", "off_topic_near")


def threshold_for(good: Sequence[float], share: float) -> float:
    """The largest threshold that gates at most ``share`` of the ``good`` relevances (a gate
    fires below it): halfway between the last value it may gate and the next one."""
    if not 0 <= share < 1:
        raise ValueError(f"good-gated share: need 0 <= share < 1, got {share}")
    values = sorted(good)
    if not values:
        raise ValueError("threshold_for: no good texts")
    allowed = int(share * len(values))
    while allowed > 0 and values[allowed] == values[allowed - 1]:
        allowed -= 1  # a threshold between equal values does not exist: gate fewer
    if allowed == 0:
        return values[0] - 1.0
    return (values[allowed - 1] + values[allowed]) / 2


def _counts(good: Sequence[float], off_topic: Sequence[float], threshold: float) -> dict:
    return {
        "good_texts": len(good),
        "good_gated": sum(v < threshold for v in good),
        "off_topic_texts": len(off_topic),
        "off_topic_gated": sum(v < threshold for v in off_topic),
    }


def fit(
    sources: str,
    model: str = "smollm2",
    share: float = 0.02,
    seed: int = 0,
    out: str | Path | None = None,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    bank = ScenarioBank.default()
    records = load_source_list(sources, bank)
    pairs = build_pairs(records, seed=seed, flaws=OFF_TOPIC_FLAWS)
    gate = RelevanceGate.load(model, threshold=0.0, cache=JudgeCache(cache) if cache else None)
    started = time.perf_counter()
    # every good text in its own dilemma (from the records: the pairs are length-balanced
    # and may leave some out), then every off-topic text in the dilemma it is not about
    good_keys = sorted({(r.scenario.id, t) for r in records for t in (r.good_long, r.good_short)})
    off_keys = sorted({(p.scenario_id, p.rejected) for p in pairs})
    relevance = gate.relevance([JudgeRequest(bank.get(s), t) for s, t in good_keys + off_keys])
    seconds = time.perf_counter() - started
    by_key = {
        "good": dict(zip(good_keys, relevance[: len(good_keys)], strict=True)),
        "off": dict(zip(off_keys, relevance[len(good_keys) :], strict=True)),
    }
    threshold = threshold_for(list(by_key["good"].values()), share)

    dilemmas = sorted({split_scenario_id(s)[0] for s, _ in good_keys})
    random.Random(seed).shuffle(dilemmas)
    halves = [set(dilemmas[: len(dilemmas) // 2]), set(dilemmas[len(dilemmas) // 2 :])]

    def half(kind: str, dilemmas_of: set[str]) -> list[float]:
        return [v for (s, _), v in by_key[kind].items() if split_scenario_id(s)[0] in dilemmas_of]

    transfer = []
    for fitted_on, counted_on in (halves, halves[::-1]):
        half_threshold = threshold_for(half("good", fitted_on), share)
        transfer.append(
            {
                "threshold": round(half_threshold, 4),
                **_counts(half("good", counted_on), half("off", counted_on), half_threshold),
            }
        )
    report = {
        "command": f"python -m trainers.relevance_gate --sources {sources} --model {model} "
        f"--good-gated {share}",
        "gate": gate.backend.name,
        "threshold": round(threshold, 4),
        **_counts(list(by_key["good"].values()), list(by_key["off"].values()), threshold),
        "transfer_between_halves": transfer,
        "seconds": round(seconds, 1),
        "texts_scored": len(relevance),
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out) / "fit.json", json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.relevance_gate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sources",
        default="shipped,other-authors,other-authors-2",
        help="source sets or files the texts come from (default: %(default)s)",
    )
    parser.add_argument("--model", default="smollm2", help="the gate's model (default: smollm2)")
    parser.add_argument(
        "--good-gated",
        type=float,
        default=0.02,
        help="the largest share of good texts the gate may mark down (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for fit.json")
    parser.add_argument("--cache", default=None, help="SQLite file keeping the relevances")
    args = parser.parse_args(argv)
    try:
        report = fit(args.sources, args.model, args.good_gated, args.seed, args.out, args.cache)
    except ValueError as error:
        print(f"relevance gate: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
