"""How much of the training reward's spread inside a group comes from the dialogue?

    python -m benchmarks.reward_noise --config configs/cpu_learning.yaml --scenarios 8 \\
        --resolutions 3 --out docs/results/reward-noise

GRPO compares the dialogues of one group (one scenario) by their rewards and puts the
difference on the *dialogue* tokens. But the reward is the judge's score of a resolution
that is itself sampled (at ``rollout.summary_temperature``) after the dialogue: two
resolutions of the same dialogue can score differently. The part of a group's reward spread
that comes from resolution sampling is noise on the dialogue tokens' advantage, whatever the
judge's quality.

This plays groups of ``rollout.group_size`` dialogues on the first ``--scenarios`` training
scenarios of the trainer's order (the untrained policy, the config's turn settings, the
reward judge), then writes ``--resolutions`` resolutions of every dialogue (the first is the
one the rollout wrote, the others with the same settings and other seeds) and scores them
with the reward judge. A one-way random-effects analysis inside each group splits the
variance of a single reward into a between-dialogue part (``E[reward | dialogue]`` differs)
and a within-dialogue part (resolution sampling). Reported: both parts, the share due to the
dialogue (the intraclass correlation, ICC), the correlation of two resolutions' rewards of
the same dialogues after removing each group's mean (a direct test-retest estimate of the
same share) with a 95% bootstrap interval over scenarios, the share of dialogues whose
resolutions are all the same text, and the reliability the mean of K resolutions would have
(Spearman-Brown). Dialogues, resolutions and scores are kept in ``OUT/records.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.command import run_main
from benchmarks.machine import describe_machine, machine_line
from benchmarks.report import write_results
from negotiation_env.jsonl import read_jsonl_records, write_jsonl, write_text_atomic

RECORDS = "records.jsonl"


def play(config: Any, scenarios: int, resolutions: int, seed: int) -> list[dict[str, Any]]:
    """One record per dialogue: scenario, transcript, ``resolutions`` texts and their scores."""
    import torch

    from llm.interface import end_at_sentence, token_decoder
    from llm.specs import load_backend
    from negotiation_env.judges.base import JudgeRequest, judge_safely
    from negotiation_env.judges.specs import load_agreement_detector
    from negotiation_env.scenarios import ScenarioBank
    from trainers.rollout import play_dialogues
    from trainers.selfplay import SelfPlayRollout, load_reward_judge, scenario_dataset

    bank = ScenarioBank.default()
    order = list(scenario_dataset(config, bank)["prompt"])[:scenarios]
    judge = load_reward_judge(config)
    rollout = SelfPlayRollout(config, judge, load_agreement_detector(config.reward.agreement), bank)
    backend = load_backend(config.model.policy, dtype=config.model.dtype)
    torch.manual_seed(seed)
    ids = [s for s in order for _ in range(config.rollout.group_size)]
    outcomes, _ = play_dialogues(
        backend,
        rollout.vector_env,
        ids,
        rollout.dialogue,
        rollout.summary,
        config.trained_seats,
        config.rollout.cut_turns,
    )
    negotiations = rollout.vector_env.negotiations
    texts = [[n.resolution.text if n.resolution else None] for n in negotiations]
    scores = [[o.reward] for o in outcomes]
    written = [i for i, n in enumerate(negotiations) if n.resolution is not None]
    decode = token_decoder(backend)
    for extra in range(1, resolutions):
        settings = dataclasses.replace(rollout.summary, seed=seed * 1000 + extra)
        generations = backend.generate(
            [negotiations[i].resolution_messages() for i in written], settings
        )
        if config.rollout.cut_turns == "sentence":
            generations = [end_at_sentence(g, decode) for g in generations]
        # the env's own cleaning (surrogates, length cap, strip), as for the first resolution
        cleaned = [
            negotiations[i].clean(g.text)[0] for i, g in zip(written, generations, strict=True)
        ]
        judgements = judge_safely(
            judge,
            [
                JudgeRequest(negotiations[i].scenario, text, tuple(negotiations[i].turns))
                for i, text in zip(written, cleaned, strict=True)
            ],
        )
        for i, text, judgement in zip(written, cleaned, judgements, strict=True):
            texts[i].append(text)
            scores[i].append(judgement.score)
    rollout.close()
    return [
        {
            "scenario_id": n.scenario.id,
            "dialogue": index % config.rollout.group_size,
            "agreement": n.agreed,
            "transcript": [turn.to_record() for turn in n.turns],
            "resolutions": texts[index],
            "scores": scores[index],
        }
        for index, n in enumerate(negotiations)
    ]


def _groups(records: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Scenario -> its dialogues' complete score lists (dialogues with a missing score are
    left out)."""
    groups: dict[str, list[list[float]]] = {}
    width = max(len(r["scores"]) for r in records)
    for record in records:
        scores = record["scores"]
        if len(scores) == width and all(s is not None for s in scores):
            groups.setdefault(record["scenario_id"], []).append([float(s) for s in scores])
    return {s: dialogues for s, dialogues in groups.items() if len(dialogues) >= 2}


def variance_parts(groups: dict[str, list[list[float]]]) -> dict[str, float]:
    """One-way random-effects estimates inside groups: the within-dialogue variance of a
    single reward (resolution sampling), the between-dialogue variance of the expected
    reward, and the dialogue's share of the two (the ICC; 0 when the between part's
    estimate is not positive)."""
    within, between = [], []
    for dialogues in groups.values():
        k = len(dialogues[0])
        noise = statistics.fmean(statistics.variance(d) for d in dialogues)
        spread = statistics.variance([statistics.fmean(d) for d in dialogues])
        within.append(noise)
        between.append(spread - noise / k)
    within_var, between_var = statistics.fmean(within), statistics.fmean(between)
    total = within_var + max(between_var, 0.0)
    return {
        "within_dialogue": within_var,
        "between_dialogues": between_var,
        "icc": max(between_var, 0.0) / total if total > 0 else math.nan,
    }


def centred_pairs(dialogues: list[list[float]]) -> list[tuple[float, float]]:
    """The first two resolutions' rewards of each dialogue, minus their group's means."""
    first = statistics.fmean(d[0] for d in dialogues)
    second = statistics.fmean(d[1] for d in dialogues)
    return [(d[0] - first, d[1] - second) for d in dialogues]


def retest_correlation(groups: dict[str, list[list[float]]]) -> float:
    """Pearson correlation of two resolutions' rewards of the same dialogues, each centred
    on its group's mean (pooled over groups): how well one resolution's reward predicts
    another's, i.e. the dialogue's share of what GRPO compares."""
    pairs = [pair for dialogues in groups.values() for pair in centred_pairs(dialogues)]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    sx = math.sqrt(sum(x * x for x in xs))
    sy = math.sqrt(sum(y * y for y in ys))
    if sx == 0 or sy == 0:
        return math.nan
    return sum(x * y for x, y in pairs) / (sx * sy)


def spearman_brown(reliability: float, k: int) -> float:
    """Reliability of the mean of ``k`` measurements, each of ``reliability``."""
    if math.isnan(reliability):
        return math.nan
    return k * reliability / (1 + (k - 1) * reliability)


def summarise(records: list[dict[str, Any]], bootstrap_seed: int = 0) -> dict[str, Any]:
    groups = _groups(records)
    if not groups:
        raise ValueError("no scenario has two dialogues with every resolution scored")
    k = len(next(iter(groups.values()))[0])
    parts = variance_parts(groups)
    names = sorted(groups)
    rng = random.Random(bootstrap_seed)
    resampled = []
    for _ in range(1000):
        drawn = [rng.choice(names) for _ in names]
        # the same scenario drawn twice counts twice: keys made unique per draw
        value = retest_correlation({f"{i}": groups[n] for i, n in enumerate(drawn)})
        if not math.isnan(value):
            resampled.append(value)
    low, high = bootstrap_interval_of(resampled)
    scores = [s for d in groups.values() for dialogue in d for s in dialogue]
    identical = [len(set(r["resolutions"])) == 1 for r in records if None not in r["resolutions"]]
    return {
        "scenarios": len(groups),
        "dialogues": sum(len(d) for d in groups.values()),
        "resolutions_per_dialogue": k,
        "mean_reward": statistics.fmean(scores),
        "between_scenarios": statistics.variance(
            [statistics.fmean(s for d in g for s in d) for g in groups.values()]
        )
        if len(groups) > 1
        else math.nan,
        **parts,
        "retest_correlation": retest_correlation(groups),
        "retest_ci95": [low, high],
        "identical_resolutions": statistics.fmean(identical) if identical else math.nan,
        "mean_of_k_reliability": {str(n): spearman_brown(parts["icc"], n) for n in (1, 2, 4, 8)},
    }


def bootstrap_interval_of(values: list[float]) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of already resampled statistics."""
    if not values:
        return math.nan, math.nan
    ordered = sorted(values)
    return ordered[int(0.025 * (len(ordered) - 1))], ordered[int(0.975 * (len(ordered) - 1))]


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    low, high = s["retest_ci95"]
    reliability = ", ".join(f"{k}: {v:.2f}" for k, v in s["mean_of_k_reliability"].items())
    return "\n".join(
        [
            "# Reward noise from resolution sampling",
            "",
            f"Command: `{results['command']}`  ",
            f"Machine: {machine_line(results['machine'])}  ",
            f"Policy `{results['policy']}` (untrained); reward judge `{results['judge']}`; "
            f"resolutions at temperature {results['summary_temperature']}; "
            f"{s['scenarios']} training scenarios x {s['dialogues'] // s['scenarios']} "
            f"dialogues x {s['resolutions_per_dialogue']} resolutions; "
            f"{results['seconds']:.0f} s.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| mean reward | {s['mean_reward']:.3f} |",
            f"| variance between scenarios (GRPO removes it) | {s['between_scenarios']:.4f} |",
            f"| variance between dialogues of a group | {s['between_dialogues']:.4f} |",
            f"| variance between resolutions of one dialogue | {s['within_dialogue']:.4f} |",
            f"| dialogue's share (ICC) | {s['icc']:.2f} |",
            f"| two resolutions' rewards, correlation within groups | "
            f"{s['retest_correlation']:.2f} [{low:.2f}, {high:.2f}] |",
            f"| dialogues whose resolutions are all the same text | "
            f"{s['identical_resolutions']:.2f} |",
            f"| reliability of the mean of K resolutions (K: value) | {reliability} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reward_noise", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="configs/cpu_learning.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--scenarios", type=int, default=8, help="training scenarios (groups)")
    parser.add_argument("--resolutions", type=int, default=3, help="resolutions per dialogue")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/reward-noise")
    args = parser.parse_args(argv)
    if args.resolutions < 2:
        raise ValueError(f"--resolutions: at least 2 are needed, got {args.resolutions}")
    if args.scenarios < 1:
        raise ValueError(f"--scenarios: at least 1, got {args.scenarios}")

    from negotiate.train import parse_overrides
    from trainers.config import TrainConfig

    config = TrainConfig.from_yaml(args.config, parse_overrides(args.set))
    if config.rollout.group_size < 2:
        raise ValueError("rollout.group_size: at least 2 dialogues per group are needed")
    out = Path(args.out)
    records_file = out / RECORDS
    settings = {k: getattr(args, k) for k in ("config", "set", "scenarios", "resolutions", "seed")}
    started = time.perf_counter()
    settings_file = out / "settings.json"
    if records_file.exists() and settings_file.exists():
        if json.loads(settings_file.read_text(encoding="utf-8")) != settings:
            raise ValueError(
                f"{out}: holds records made with other settings ({settings_file}); "
                "use another --out"
            )
        records = read_jsonl_records(records_file)
    else:
        records = play(config, args.scenarios, args.resolutions, args.seed)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(records, records_file)
        write_text_atomic(settings_file, json.dumps(settings, indent=2) + "\n")
    results = {
        "command": " ".join(["python -m benchmarks.reward_noise", *(argv or sys.argv[1:])]),
        "machine": describe_machine(),
        "policy": config.model.policy,
        "judge": config.reward.judge,
        "summary_temperature": config.rollout.summary_temperature,
        "summary": summarise(records),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("python -m benchmarks.reward_noise", main))
