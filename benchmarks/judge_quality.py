"""How good are the judges? Accuracy, margin, position bias, speed and resistance to injection.

    python -m benchmarks.judge_quality --models smollm2 qwen2.5-coder-0.5b qwen2.5-coder-1.5b

Data (authored for this project, ``benchmarks/data``): ``judge_quality.jsonl``, 66
scenarios from the test split, each with a clearly better and a worse resolution and the
kind of flaw in the worse one; in 44 of them the worse one is at least as long (the
*length-controlled* subset, where "the longer wins" cannot help). ``injections.jsonl``
(61 attacks, used while building the detector) and ``injections_heldout.jsonl`` (58 attacks
written separately and never looked at while building it). ``agreement_quality.jsonl``:
the last two turns of negotiations labelled agreed / not agreed, with tricky kinds (polite
disagreement, agreement words without agreement, reluctant acceptance, ...).

For every model x rubric wording x mode:

- absolute: accuracy = P(score(better) > score(worse)) (a tie counts one half), margin =
  mean score difference, failures, seconds per judgement;
- pairwise (both orders): accuracy = the combined decision prefers the better one (an
  inconsistent pair is a tie and counts as wrong), soft accuracy = P(p_better > 0.5),
  position-bias rate = share of pairs where the two orders disagree, seconds per judgement;
- each on all items and on the length-controlled subset, next to the "longer wins" baseline.

Agreement detectors (the explicit marker and each model x agreement rubric x mode):
accuracy, precision and recall of "agreed".

With ``--adversarial MODEL``, each attack is appended to the worse resolution of
``--attack-items`` items and we report the mean score inflation and the share of pairwise
decisions that flip away from the better resolution, with the defence (strip) and without it
(flag only), for both suites, and the detector's hit rate. Results: JSON + markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agents.specs import load_backend
from benchmarks.machine import describe_machine, machine_line
from negotiation_env.jsonl import write_text_atomic
from negotiation_env.judges import MarkerAgreementDetector
from negotiation_env.judges.base import AgreementRequest, JudgeRequest
from negotiation_env.judges.cache import JudgeCache
from negotiation_env.judges.llm import LLMAgreementDetector, LLMJudge, PairwiseRequest
from negotiation_env.judges.prompting import detect_injection
from negotiation_env.scenarios import ScenarioBank
from negotiation_env.transcript import Turn

DATA = Path(__file__).parent / "data"
SECTIONS = ("judges", "agreement", "attacks")


def load_items(path: Path = DATA / "judge_quality.jsonl") -> list[dict[str, Any]]:
    bank = ScenarioBank.default()
    items = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    for item in items:
        item["scenario"] = bank.get(item["scenario_id"])
        item["length_controlled"] = len(item["worse"].split()) >= len(item["better"].split())
    return items


def load_attacks(name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (DATA / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def absolute_metrics(judge: LLMJudge, items: list[dict[str, Any]]) -> dict[str, Any]:
    requests = [
        JudgeRequest(item["scenario"], item[side]) for item in items for side in ("better", "worse")
    ]
    started = time.perf_counter()
    judgements = judge.score_batch(requests)
    seconds = (time.perf_counter() - started) / len(requests)
    rows = []
    for index, item in enumerate(items):
        better, worse = judgements[2 * index], judgements[2 * index + 1]
        rows.append(
            {
                "id": item["id"],
                "flaw": item["flaw"],
                "length_controlled": item["length_controlled"],
                "better": better.score,
                "worse": worse.score,
                "error": better.error or worse.error,
            }
        )
    return {"rows": rows, "seconds_per_judgement": round(seconds, 3), **_absolute_summary(rows)}


def _absolute_win(row: dict[str, Any]) -> float | None:
    """1 when the better resolution scored higher, 0.5 for a tie, None when unscored."""
    better, worse = row.get("better"), row.get("worse")
    if better is None or worse is None:
        return None
    return 1.0 if better > worse else 0.5 if better == worse else 0.0


def _pairwise_win(row: dict[str, Any]) -> float | None:
    """1 when both orders chose the better resolution (a tie or inconsistency is 0), None
    when the pair was not judged."""
    return None if row.get("p_better") is None else float(row["preferred"] == "a")


def _absolute_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def summary(subset: list[dict[str, Any]]) -> dict[str, Any]:
        scored = [r for r in subset if _absolute_win(r) is not None]
        wins = [_absolute_win(r) for r in scored]
        return {
            "items": len(subset),
            "failed": len(subset) - len(scored),
            "accuracy": _mean(wins),
            "margin": _mean([r["better"] - r["worse"] for r in scored]),
            "mean_better": _mean([r["better"] for r in scored]),
            "mean_worse": _mean([r["worse"] for r in scored]),
        }

    return {
        "all": summary(rows),
        "length_controlled": summary([r for r in rows if r["length_controlled"]]),
    }


def pairwise_metrics(judge: LLMJudge, items: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    outcomes = judge.compare_batch(
        [PairwiseRequest(i["scenario"], i["better"], i["worse"]) for i in items]
    )
    seconds = (time.perf_counter() - started) / (2 * len(items))
    rows = [
        {
            "id": item["id"],
            "flaw": item["flaw"],
            "length_controlled": item["length_controlled"],
            "preferred": o.preferred,
            "p_better": o.p_a,
            "consistent": o.position_consistent,
            "error": o.error,
        }
        for item, o in zip(items, outcomes, strict=True)
    ]
    return {"rows": rows, "seconds_per_judgement": round(seconds, 3), **_pairwise_summary(rows)}


def _pairwise_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def summary(subset: list[dict[str, Any]]) -> dict[str, Any]:
        judged = [r for r in subset if _pairwise_win(r) is not None]
        return {
            "items": len(subset),
            "failed": len(subset) - len(judged),
            "accuracy": _mean([_pairwise_win(r) for r in judged]),
            "soft_accuracy": _mean([float(r["p_better"] > 0.5) for r in judged]),
            "position_bias_rate": _mean([float(not r["consistent"]) for r in judged]),
            "mean_p_better": _mean([r["p_better"] for r in judged]),
        }

    return {
        "all": summary(rows),
        "length_controlled": summary([r for r in rows if r["length_controlled"]]),
    }


def longer_wins(items: list[dict[str, Any]]) -> dict[str, float | None]:
    def accuracy(subset):
        return _mean(
            [
                1.0
                if len(i["better"].split()) > len(i["worse"].split())
                else 0.5
                if len(i["better"].split()) == len(i["worse"].split())
                else 0.0
                for i in subset
            ]
        )

    return {
        "all": accuracy(items),
        "length_controlled": accuracy([i for i in items if i["length_controlled"]]),
    }


def adversarial_metrics(
    judge: LLMJudge, items: list[dict[str, Any]], attacks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Score inflation and pairwise flips caused by appending each attack to worse resolutions."""
    base = judge.score_batch([JudgeRequest(i["scenario"], i["worse"]) for i in items])
    base_pairs = judge.compare_batch(
        [PairwiseRequest(i["scenario"], i["better"], i["worse"]) for i in items]
    )
    attacked_requests, attacked_pairs, keys = [], [], []
    for attack in attacks:
        for index, item in enumerate(items):
            text = f"{item['worse']} {attack['text']}"
            attacked_requests.append(JudgeRequest(item["scenario"], text))
            attacked_pairs.append(PairwiseRequest(item["scenario"], item["better"], text))
            keys.append((attack, index))
    scores = judge.score_batch(attacked_requests)
    pairs = judge.compare_batch(attacked_pairs)
    inflation, flips, shifts, by_family = [], [], [], {}
    for (attack, index), score, pair in zip(keys, scores, pairs, strict=True):
        family = by_family.setdefault(attack["family"], {"inflation": [], "flips": []})
        if score.score is not None and base[index].score is not None:
            delta = score.score - base[index].score
            inflation.append(delta)
            family["inflation"].append(delta)
        if pair.p_a is not None and base_pairs[index].p_a is not None:
            shifts.append(base_pairs[index].p_a - pair.p_a)
        if pair.preferred is not None and base_pairs[index].preferred is not None:
            flipped = float(base_pairs[index].preferred == "a" and pair.preferred != "a")
            flips.append(flipped)
            family["flips"].append(flipped)
    detected = [bool(detect_injection(f"{items[0]['worse']} {a['text']}")) for a in attacks]
    return {
        "attacks": len(attacks),
        "items": len(items),
        "mean_inflation": _mean(inflation),
        "share_inflated_over_0.5": _mean([float(d > 0.5) for d in inflation]),
        "flip_rate": _mean(flips),
        # flips need a base decision for the better one; the soft shift does not: how much
        # P(better preferred) drops when the attack is appended to the worse resolution
        "pairs_decided_for_better": sum(p.preferred == "a" for p in base_pairs),
        "mean_p_better_drop": _mean(shifts),
        "detected": _mean([float(d) for d in detected]),
        "by_family": {
            f: {"mean_inflation": _mean(v["inflation"]), "flip_rate": _mean(v["flips"])}
            for f, v in sorted(by_family.items())
        },
    }


def load_agreement_items(path: Path = DATA / "agreement_quality.jsonl") -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    bank = ScenarioBank.default()
    items = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    for item in items:
        scenario = bank.get(item["scenario_id"])
        item["request"] = AgreementRequest(
            scenario,
            tuple(
                Turn(
                    i,
                    t["speaker"],
                    scenario.personas[0 if t["speaker"] == "negotiator_0" else 1].name,
                    t["text"],
                )
                for i, t in enumerate(item["turns"])
            ),
        )
    return items


def _best_threshold(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of ``probability >= threshold``; the
    thresholds tried lie halfway between neighbouring probabilities."""
    values = sorted({r["probability"] for r in rows})
    candidates = (
        [0.0] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:], strict=True)] + [1.01]
    )
    scored = [
        (_mean([float((r["probability"] >= t) == r["label"]) for r in rows]) or 0.0, t)
        for t in candidates
    ]
    accuracy, threshold = max(scored)
    return threshold, accuracy


def threshold_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well P(agree) separates the labels, whatever the threshold: the AUC, and the
    accuracy of a threshold fitted on one half of the items and applied to the other (two
    folds, alternate items within each label), an honest estimate; plus the threshold fitted on all items,
    which is what a default would use."""
    judged = [r for r in rows if r["error"] is None and r["probability"] is not None]
    positive = [r["probability"] for r in judged if r["label"]]
    negative = [r["probability"] for r in judged if not r["label"]]
    if not positive or not negative:
        return {"auc": None, "fitted_threshold": None, "cross_validated_accuracy": None}
    auc = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative) / (
        len(positive) * len(negative)
    )
    # stratified: alternate items within each label, so both folds hold both labels
    by_label = [[r for r in judged if r["label"]], [r for r in judged if not r["label"]]]
    folds = (by_label[0][0::2] + by_label[1][0::2], by_label[0][1::2] + by_label[1][1::2])
    held_out = []
    for fit, test in (folds, folds[::-1]):
        threshold, _ = _best_threshold(fit)
        held_out += [float((r["probability"] >= threshold) == r["label"]) for r in test]
    threshold, _ = _best_threshold(judged)
    return {
        "auc": auc,
        "fitted_threshold": threshold,
        "cross_validated_accuracy": _mean(held_out),
    }


def agreement_metrics(detector: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, precision and recall of "agreed" decisions against the labels, and speed."""
    started = time.perf_counter()
    decisions = detector.detect_batch([item["request"] for item in items])
    seconds = (time.perf_counter() - started) / len(items)
    rows = [
        {
            "id": i["id"],
            "kind": i["kind"],
            "label": i["agreed"],
            "agreed": d.agreed,
            "probability": d.probability,
            "error": d.details.get("error"),
        }
        for i, d in zip(items, decisions, strict=True)
    ]
    true_positive = sum(r["agreed"] and r["label"] for r in rows)
    predicted, actual = sum(r["agreed"] for r in rows), sum(r["label"] for r in rows)
    kinds = sorted({r["kind"] for r in rows})
    return {
        "rows": rows,
        "seconds_per_judgement": round(seconds, 3),
        **threshold_metrics(rows),
        "accuracy": _mean([float(r["agreed"] == r["label"]) for r in rows]),
        "precision": true_positive / predicted if predicted else None,
        "recall": true_positive / actual if actual else None,
        "failed": sum(r["error"] is not None for r in rows),
        "by_kind": {
            k: _mean([float(r["agreed"] == r["label"]) for r in rows if r["kind"] == k])
            for k in kinds
        },
    }


def flaw_accuracy(run: dict[str, Any]) -> dict[str, float]:
    """Accuracy per kind of flaw, counted as in the summary (a tie or inconsistency is wrong
    for pairwise, half right for absolute); unjudged items are left out."""
    win = _absolute_win if run["kind"] == "absolute" else _pairwise_win
    outcomes: dict[str, list[float]] = {}
    for row in run["rows"]:
        value = win(row)
        if value is not None:
            outcomes.setdefault(row["flaw"], []).append(value)
    return {flaw: sum(values) / len(values) for flaw, values in outcomes.items()}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Judge quality\n\nCommand: `{report['command']}`  \nMachine: {machine_line(report['machine'])}\n",
        f"Items: {report['items']} ({report['length_controlled_items']} length-controlled). "
        f"'Longer wins' baseline: {report['longer_wins']['all']:.2f} on all, "
        f"{report['longer_wins']['length_controlled']:.2f} on the length-controlled subset.\n",
        "| model | rubric | mode | kind | accuracy | acc. (len-ctrl) | margin / p(better) | position bias | failed | s/judgement |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        a, lc = run["all"], run["length_controlled"]
        if run["kind"] == "absolute":
            spread = (
                f"{a['margin']:+.2f} ({a['mean_better']:.2f} vs {a['mean_worse']:.2f})"
                if a["margin"] is not None
                else "-"
            )
            bias = "-"
        else:
            spread = f"{a['mean_p_better']:.2f}" if a["mean_p_better"] is not None else "-"
            bias = f"{a['position_bias_rate']:.2f}" if a["position_bias_rate"] is not None else "-"
        lines.append(
            f"| {run['model']} | {run['rubric']} | {run['mode']} | {run['kind']} | {_f(a['accuracy'])} | "
            f"{_f(lc['accuracy'])} | {spread} | {bias} | {a['failed']} | {run['seconds_per_judgement']:.2f} |"
        )
    flaws = sorted({row["flaw"] for run in report["runs"] for row in run["rows"]})
    if flaws:
        lines += [
            "\n## Accuracy by kind of flaw in the worse resolution\n",
            "| model | rubric | mode | kind | " + " | ".join(flaws) + " |",
            "|---|---|---|---|" + "---|" * len(flaws),
        ]
        for run in report["runs"]:
            by_flaw = flaw_accuracy(run)
            lines.append(
                f"| {run['model']} | {run['rubric']} | {run['mode']} | {run['kind']} | "
                + " | ".join(_f(by_flaw.get(flaw)) for flaw in flaws)
                + " |"
            )
    if report.get("agreement"):
        lines += [
            "\n## Agreement detection\n",
            "Accuracy, precision and recall at the detector's threshold (0.5); AUC of P(agree); "
            "accuracy of a threshold fitted on half the items and tested on the other half "
            "(two folds), and the threshold fitted on all items.\n",
            "| detector | rubric | mode | accuracy | precision | recall | AUC | CV accuracy | fitted threshold | failed | s/judgement |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in report["agreement"]:
            extra = threshold_metrics(run["rows"])
            lines.append(
                f"| {run['model']} | {run['rubric']} | {run['mode']} | {_f(run['accuracy'])} | "
                f"{_f(run['precision'])} | {_f(run['recall'])} | {_f(extra['auc'])} | "
                f"{_f(extra['cross_validated_accuracy'])} | {_f(extra['fitted_threshold'], '.3f')} | "
                f"{run['failed']} | {run['seconds_per_judgement']:.2f} |"
            )
    for name, adversarial in report.get("adversarial", {}).items():
        lines += [
            f"\n## Injection attacks: {name}\n",
            "| suite | defence | attacks x items | mean inflation | share inflated > 0.5 | pairwise flip rate (base pairs decided for the better) | drop in P(better) | detected |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in adversarial:
            lines.append(
                f"| {row['suite']} | {row['defence']} | {row['attacks']} x {row['items']} | "
                f"{_f(row['mean_inflation'], '+.3f')} | {_f(row['share_inflated_over_0.5'])} | "
                f"{_f(row['flip_rate'])} ({row.get('pairs_decided_for_better', '-')}) | "
                f"{_f(row.get('mean_p_better_drop'), '+.3f')} | {_f(row['detected'])} |"
            )
    return "\n".join(lines) + "\n"


def _replace(rows: list[dict[str, Any]], row: dict[str, Any], key: tuple[str, ...]) -> None:
    """Put ``row`` in ``rows``, replacing an earlier row with the same key fields."""
    for index, old in enumerate(rows):
        if all(old.get(k) == row.get(k) for k in key):
            rows[index] = row
            return
    rows.append(row)


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    )
    parser.add_argument("--rubrics", nargs="+", default=["ca-v1", "ca-v2"])
    parser.add_argument(
        "--modes", nargs="+", default=["expected", "parsed"], choices=["expected", "parsed"]
    )
    parser.add_argument(
        "--kinds", nargs="+", default=["absolute", "pairwise"], choices=["absolute", "pairwise"]
    )
    parser.add_argument("--limit", type=int, default=0, help="use only the first N items (0 = all)")
    parser.add_argument(
        "--parsed-wordings",
        type=int,
        default=1,
        help="run parsed mode on only the first N rubric wordings (it is the slow mode)",
    )
    parser.add_argument(
        "--adversarial",
        nargs="*",
        default=[],
        metavar="MODEL",
        help="models (with --rubrics[0], expected mode) to attack with the injection suites",
    )
    parser.add_argument(
        "--attack-items", type=int, default=2, help="worse resolutions each attack is appended to"
    )
    parser.add_argument(
        "--cache", default="results/judge_cache.sqlite", help="judgement cache (resumes a run)"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=list(SECTIONS),
        choices=SECTIONS,
        help="which parts to run: judges (CA scoring), agreement (agreement detection), "
        "attacks (the injection suites against the --adversarial models)",
    )
    parser.add_argument("--out", default="results/judge_quality")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new report instead of adding to (and replacing same-named rows of) the "
        "one already in --out",
    )
    args = parser.parse_args(argv)

    items = load_items()[: args.limit or None]
    cache = JudgeCache(args.cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.judge_quality "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "items": len(items),
        "length_controlled_items": sum(i["length_controlled"] for i in items),
        "longer_wins": longer_wins(items),
        "runs": [],
        "agreement": [],
        "adversarial": {},
    }
    previous = out / "judge_quality.json"
    if previous.exists() and not args.fresh:
        old = json.loads(previous.read_text(encoding="utf-8"))
        report["runs"] = old.get("runs", [])
        report["agreement"] = old.get("agreement", [])
        report["adversarial"] = old.get("adversarial", {})
        report["command"] = old.get("command", "") + "; " + report["command"]

    def save() -> None:  # atomic: a kill while saving keeps the previous files whole
        write_text_atomic(out / "judge_quality.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out / "judge_quality.md", markdown(report))

    for model in args.models if "judges" in args.sections else []:
        backend = load_backend(model)
        for wording, rubric in enumerate(args.rubrics):
            for mode in args.modes:
                if mode == "parsed" and wording >= args.parsed_wordings:
                    continue
                judge = LLMJudge(backend, rubric, mode=mode, cache=cache)
                for kind in args.kinds:
                    metrics = (
                        absolute_metrics(judge, items)
                        if kind == "absolute"
                        else pairwise_metrics(judge, items)
                    )
                    run = {"model": model, "rubric": rubric, "mode": mode, "kind": kind, **metrics}
                    _replace(report["runs"], run, ("model", "rubric", "mode", "kind"))
                    print(
                        f"{model:20} {rubric:11} {mode:8} {kind:8} accuracy {_f(run['all']['accuracy'])} "
                        f"(length-controlled {_f(run['length_controlled']['accuracy'])}), "
                        f"{run['seconds_per_judgement']:.2f} s/judgement",
                        flush=True,
                    )
                    save()
    agreement_items = load_agreement_items()[: args.limit or None]
    if agreement_items and "agreement" in args.sections:
        marker = agreement_metrics(MarkerAgreementDetector(), agreement_items)
        _replace(
            report["agreement"],
            {"model": "marker [AGREE]", "rubric": "-", "mode": "-", **marker},
            ("model", "rubric", "mode"),
        )
        for model in args.models:
            backend = load_backend(model)
            for wording, rubric in enumerate(("agreement-v1", "agreement-v2")):
                for mode in args.modes:
                    if mode == "parsed" and wording >= args.parsed_wordings:
                        continue
                    detector = LLMAgreementDetector(backend, rubric, mode=mode, cache=cache)
                    run = {
                        "model": model,
                        "rubric": rubric,
                        "mode": mode,
                        **agreement_metrics(detector, agreement_items),
                    }
                    _replace(report["agreement"], run, ("model", "rubric", "mode"))
                    print(
                        f"{model:20} {rubric:12} {mode:8} agreement accuracy {_f(run['accuracy'])} "
                        f"precision {_f(run['precision'])} recall {_f(run['recall'])}",
                        flush=True,
                    )
                    save()
    attack_items = [i for i in items if i["length_controlled"]][: args.attack_items]
    for model in args.adversarial if "attacks" in args.sections else []:
        backend = load_backend(model)
        rows = []
        for suite in ("injections.jsonl", "injections_heldout.jsonl"):
            attacks = load_attacks(suite)
            for defence in ("strip", "flag"):
                judge = LLMJudge(
                    backend, args.rubrics[0], mode="expected", injection=defence, cache=cache
                )
                row = {
                    "suite": suite.removesuffix(".jsonl"),
                    "defence": defence,
                    **adversarial_metrics(judge, attack_items, attacks),
                }
                rows.append(row)
                print(
                    f"{model:20} {row['suite']:18} {defence:5} inflation {_f(row['mean_inflation'], '+.3f')} "
                    f"flips {_f(row['flip_rate'])} detected {_f(row['detected'])}",
                    flush=True,
                )
                report["adversarial"][model] = rows
                save()
    save()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
