"""Does training change behaviour? Train, then compare trained and untrained on held-out scenarios.

    python -m benchmarks.learning --config configs/cpu_learning.yaml --out docs/results/learning
    python -m benchmarks.learning ... --baseline single-agent       (also the paper's baseline)

Stages, each resumable (rerun the same command after an interruption):

1. **train**: self-play GRPO with ``--config`` into ``RUNS/selfplay`` (and, with
   ``--baseline single-agent``, the direct-answer baseline on the same config into
   ``RUNS/single-agent``);
2. **evaluate**: the evaluation suite (:mod:`benchmarks.suite`) on held-out scenarios (test
   dilemmas x held-out persona pairs) for the untrained policy and every trained adapter,
   negotiating with the turn lengths and word limits they were trained with, judged by
   ``--judge`` (the evaluation judge);
3. **second judge**: every resolution of stage 2 judged again by ``--second-judge``, a judge
   that is not the reward, absolutely and pairwise, so that a gain that exists only under
   the training judge shows up as reward hacking;
4. **report**: per policy, the CA score under both judges, the paired difference to the
   untrained policy with a 95% bootstrap interval (over scenarios), the pairwise win rate
   against it (position-free verdicts; ties count half) minus 0.5 with its interval, each
   checklist criterion's pass rate (p > 0.5), agreement rate, rounds to agreement, tokens
   per dialogue, and the training runs' curves (PNG; TensorBoard logs are in the runs).
   Written to ``OUT/results.md`` and ``OUT/results.json`` with the command and machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.command import run_main
from benchmarks.machine import describe_machine, machine_line
from benchmarks.metrics import bootstrap_interval, efficiency, sign_flip_p_value
from benchmarks.report import write_results
from negotiation_env.jsonl import append_jsonl, read_jsonl_records

BASELINES = ("single-agent",)
UNTRAINED = "untrained"
SECOND_JUDGE_FILE = "second_judge.jsonl"


def policy_specs(config: Any, runs: Path, baselines: list[str]) -> dict[str, str]:
    """Policy label -> agent spec: the untrained model and each trained adapter."""
    policy = config.model.policy
    specs = {UNTRAINED: policy, "self-play": f"{policy}?adapter={runs / 'selfplay' / 'final'}"}
    for name in baselines:
        specs[name] = f"{policy}?adapter={runs / name / 'final'}"
    return specs


def train(config: Any, runs: Path, baselines: list[str]) -> dict[str, float]:
    """Train self-play (and the baselines) unless their final adapter exists; seconds each."""
    import dataclasses

    from trainers.selfplay import train_selfplay
    from trainers.single_agent import train_single_agent

    seconds = {}
    for name, function in (
        ("selfplay", train_selfplay),
        *((b, train_single_agent) for b in baselines),
    ):
        folder = runs / name
        if (folder / "final").is_dir():
            continue
        run = dataclasses.replace(config.run, output_dir=str(folder))
        started = time.perf_counter()
        function(dataclasses.replace(config, run=run), resume=True)
        seconds[name] = round(time.perf_counter() - started, 1)
    return seconds


def evaluate(args: argparse.Namespace, config: Any, specs: dict[str, str]) -> Any:
    """The evaluation suite on held-out scenarios, with the training run's turn settings."""
    from benchmarks.suite import BenchConfig, Suite

    bench = BenchConfig(
        agents=list(specs.values()),
        scenarios=args.scenarios,
        skip_scenarios=args.skip_scenarios,
        seeds=args.seeds,
        judge=args.judge,
        agreement=args.agreement,
        baselines=False,
        direct=False,
        capability=False,
        max_turns=config.env.max_turns,
        out=str(Path(args.out) / "eval"),
        max_new_tokens=config.rollout.max_new_tokens,
        summary_max_new_tokens=config.rollout.summary_max_new_tokens,
        summary_no_repeat_ngram_size=config.rollout.summary_no_repeat_ngram_size,
        env={
            "context_turns": config.env.context_turns,
            "turn_word_limit": config.env.turn_word_limit,
            "summary_word_limit": config.env.summary_word_limit,
        },
    )
    suite = Suite(bench)
    suite.run()
    return suite


def second_judging(suite: Any, spec: str, specs: dict[str, str], out: Path) -> list[dict]:
    """Every negotiated resolution judged by ``spec`` (absolute, and pairwise against the
    untrained policy); resumable: records already in the file are kept."""
    from negotiation_env.judges.base import JudgeRequest, judge_safely
    from negotiation_env.judges.pairwise import PairwiseRequest
    from negotiation_env.judges.specs import load_judge, with_option

    path = out / SECOND_JUDGE_FILE
    done = [r for r in read_jsonl_records(path) if r.get("judge") == spec] if path.is_file() else []
    have = {(r["kind"], r["agent"], r["seed"], r["scenario_id"]) for r in done}
    records = run_records(suite, "records.jsonl")
    by_key = {(r["agent"], r["seed"], r["scenario_id"]): r for r in records}
    judge = load_judge(with_option(spec, "judge_cache", out / "judge_cache.sqlite"), "ca")
    todo = [r for r in records if ("absolute", r["agent"], r["seed"], r["scenario_id"]) not in have]
    if todo:
        judgements = judge_safely(
            judge,
            [JudgeRequest(suite.bank.get(r["scenario_id"]), r["resolution"] or "") for r in todo],
        )
        append_jsonl(
            [
                {
                    "kind": "absolute",
                    "judge": spec,
                    "agent": r["agent"],
                    "seed": r["seed"],
                    "scenario_id": r["scenario_id"],
                    "ca_score": j.score,
                    "judgement": j.to_record(),
                }
                for r, j in zip(todo, judgements, strict=True)
            ],
            path,
        )
    base = specs[UNTRAINED]
    pairs = [
        (r, by_key[(base, r["seed"], r["scenario_id"])])
        for r in records
        if r["agent"] != base
        and (base, r["seed"], r["scenario_id"]) in by_key
        and ("pairwise", r["agent"], r["seed"], r["scenario_id"]) not in have
    ]
    if pairs and hasattr(judge, "compare_batch"):
        verdicts = judge.compare_batch(
            [
                PairwiseRequest(
                    suite.bank.get(r["scenario_id"]), r["resolution"] or "", u["resolution"] or ""
                )
                for r, u in pairs
            ]
        )
        append_jsonl(
            [
                {
                    "kind": "pairwise",
                    "judge": spec,
                    "agent": r["agent"],
                    "seed": r["seed"],
                    "scenario_id": r["scenario_id"],
                    "preferred": v.preferred,
                    "p_a": v.p_a,
                }
                for (r, _), v in zip(pairs, verdicts, strict=True)
            ],
            path,
        )
    wanted = {(r["agent"], r["seed"], r["scenario_id"]) for r in records}
    latest = {
        (r["kind"], r["agent"], r["seed"], r["scenario_id"]): r
        for r in read_jsonl_records(path)
        if r.get("judge") == spec and (r["agent"], r["seed"], r["scenario_id"]) in wanted
    }
    return list(latest.values())


def run_records(suite: Any, name: str) -> list[dict[str, Any]]:
    """This run's records in the suite's ``name`` file: its scenarios and seeds only (a
    results folder may hold more from earlier runs, which the suite allows), one per key
    (the last, should an interrupted append have repeated one). Negotiated episodes from
    ``records.jsonl``; CA verdicts from ``pairwise.jsonl``."""
    scenarios, seeds = set(suite.scenario_ids), set(suite.config.seeds)
    latest: dict[tuple, dict[str, Any]] = {}
    for record in suite._records(name):
        if record["scenario_id"] not in scenarios or record["seed"] not in seeds:
            continue
        if name == "records.jsonl" and record["kind"] == "negotiated":
            key: tuple = (record["agent"], record["seed"], record["scenario_id"])
        elif name == "pairwise.jsonl" and record["criterion"] == "ca":
            key = (record["agent_a"], record["agent_b"], record["seed"], record["scenario_id"])
        else:
            continue
        latest[(record.get("decoding"), *key)] = record
    return list(latest.values())


SIGNIFICANCE = 0.05


def interval(values: list[float], differences: bool = False) -> dict[str, Any]:
    """Mean with its 95% bootstrap interval; for ``differences`` also the sign-flip test's
    p-value and whether the change is established: the interval excludes zero *and*
    p < SIGNIFICANCE (a percentile bootstrap interval alone runs liberal on few scenarios)."""
    if not values:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "n": 0, "excludes_zero": False}
    low, high = bootstrap_interval(values)
    block = {"mean": statistics.fmean(values), "ci95": [low, high], "n": len(values)}
    if differences:
        block["p"] = sign_flip_p_value(values)
    block["excludes_zero"] = bool((low > 0 or high < 0) and block.get("p", 0.0) < SIGNIFICANCE)
    return block


def per_scenario(values: dict[tuple, float]) -> list[float]:
    """Values keyed by (seed, scenario) averaged over seeds: the scenario is the unit that is
    resampled and tested (several seeds of one scenario are not independent draws)."""
    by_scenario: dict[str, list[float]] = {}
    for (_, scenario), value in values.items():
        by_scenario.setdefault(scenario, []).append(value)
    return [statistics.fmean(v) for _, v in sorted(by_scenario.items())]


def paired_differences(scores: dict[tuple, float], agent: str, base: str) -> list[float]:
    """Per scenario, ``agent``'s score minus ``base``'s, over the seeds both were judged on."""
    return per_scenario(
        {
            key[1:]: value - scores[(base, *key[1:])]
            for key, value in scores.items()
            if key[0] == agent and (base, *key[1:]) in scores
        }
    )


MARGIN = {"a": 0.5, "tie": 0.0, "b": -0.5}


def win_margins(verdicts: list[dict[str, Any]]) -> list[float]:
    """Per scenario, the mean of its judged pairs as a win (1), tie (0.5) or loss (0), minus
    0.5 (``preferred`` seen from the agent; failures, ``None``, left out)."""
    return per_scenario(
        {
            (v["seed"], v["scenario_id"]): MARGIN[v["preferred"]]
            for v in verdicts
            if v["preferred"] is not None
        }
    )


def criterion_rates(records: list[dict[str, Any]]) -> dict[str, float]:
    """Share of resolutions passing each checklist criterion (p > 0.5), when the judge (or an
    ensemble member) is a checklist."""
    passed: dict[str, list[bool]] = {}

    def visit(details: Any) -> None:
        if isinstance(details, dict):
            for name, item in (details.get("checklist") or {}).items():
                passed.setdefault(name, []).append(item["p"] > 0.5)
            for member in details.get("member_details") or []:  # an ensemble's members
                visit(member)

    for record in records:
        visit((record.get("judgement") or {}).get("details"))
    return {name: statistics.fmean(values) for name, values in sorted(passed.items())}


def judge_block(
    records: list[dict[str, Any]], pairwise: list[dict[str, Any]], agent: str, base: str
) -> dict[str, Any]:
    """One judge's view of ``agent``: score, difference to ``base``, win margin, criteria."""
    scores = {
        (r["agent"], r["seed"], r["scenario_id"]): r["ca_score"]
        for r in records
        if r.get("ca_score") is not None
    }
    own = [v for k, v in scores.items() if k[0] == agent]
    mine = [r for r in records if r["agent"] == agent]
    block = {
        "ca": interval(own),
        "judge_failures": sum(r.get("ca_score") is None for r in mine),
        "criteria": criterion_rates(mine),
    }
    if agent != base:
        block["ca_minus_untrained"] = interval(paired_differences(scores, agent, base), True)
        block["win_rate_minus_half"] = interval(win_margins(pairwise), True)
        block["win_rate_minus_half"]["ties"] = sum(p["preferred"] == "tie" for p in pairwise)
    return block


def report(
    suite: Any,
    second: list[dict],
    specs: dict[str, str],
    args: argparse.Namespace,
    reward_judge: str,
) -> dict[str, Any]:
    records = run_records(suite, "records.jsonl")
    pairwise = run_records(suite, "pairwise.jsonl")
    base = specs[UNTRAINED]
    rows = []
    for label, spec in specs.items():
        mine = [r for r in records if r["agent"] == spec]
        versus = [
            {"seed": p["seed"], "scenario_id": p["scenario_id"], "preferred": _from_agent(p, spec)}
            for p in pairwise
            if {p["agent_a"], p["agent_b"]} == {spec, base}
        ]
        second_pairs = [r for r in second if r["kind"] == "pairwise" and r["agent"] == spec]
        rows.append(
            {
                "policy": label,
                "spec": spec,
                **efficiency(mine),
                "evaluation_judge": judge_block(records, versus, spec, base),
                "second_judge": judge_block(
                    [r for r in second if r["kind"] == "absolute"], second_pairs, spec, base
                )
                if second
                else None,
            }
        )
    return {
        "command": " ".join(["python -m benchmarks.learning", *sys.argv[1:]]),
        "machine": describe_machine(),
        "evaluation_judge": _judge_name(args.judge, suite.judge_id()),
        "evaluation_judge_is_reward": same_judge(args.judge, reward_judge),
        "second_judge": args.second_judge,
        "scenarios": suite.scenario_ids,
        "seeds": args.seeds,
        "policies": rows,
    }


def same_judge(evaluation: str, reward: str) -> bool:
    """Whether the evaluation judge is the model the policy was trained against (the same
    backend, whatever the options): its verdicts then cannot reveal reward hacking."""
    from negotiation_env.judges.specs import resolved_spec

    return (
        resolved_spec(evaluation, "evaluation").partition("?")[0]
        == resolved_spec(reward, "reward").partition("?")[0]
    )


def _judge_name(spec: str, described: dict[str, Any]) -> str:
    """The spec, and what ``default`` stood for when the run was made."""
    if spec != "default":
        return spec
    return f"default = {described.get('model')} ({described.get('mode')})"


def _from_agent(record: dict[str, Any], agent: str) -> str | None:
    """A pairwise verdict seen from ``agent``: 'a' when it won, 'b' when it lost."""
    preferred = record["preferred"]
    if preferred in (None, "tie") or record["agent_a"] == agent:
        return preferred
    return "b" if preferred == "a" else "a"


def training_summary(runs: Path, names: list[str], out: Path) -> dict[str, Any]:
    """Per run: the curves' PNG and first/last values of the logged training scalars."""
    from benchmarks.report import training_curves

    summary = {}
    for name in names:
        folder = runs / name
        if not folder.is_dir():
            continue
        curves = training_curves(folder, out)
        series = scalar_series(folder)
        tags = (
            "train/reward",
            "train/negotiation/ca_mean",
            "train/negotiation/clipped_turn_fraction",
            "train/entropy",
            "train/kl",
            "train/negotiation/agreement_rate",
            "train/time/rollout_seconds",
            "train/time/step_seconds",
        )
        summary[name] = {
            "curves": curves.name if curves else None,
            "steps": len(series.get("train/reward", [])),
            **{
                tag: {"first": series[tag][0], "last": series[tag][-1]}
                for tag in tags
                if series.get(tag)
            },
        }
        rollout, step = (
            series.get("train/time/rollout_seconds"),
            series.get("train/time/step_seconds"),
        )
        if rollout and step:
            summary[name]["rollout_share"] = sum(rollout) / max(sum(step), 1e-9)
    return summary


def scalar_series(folder: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: [v for _, v in sorted(points)] for tag, points in series.items()}


def _number(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _cell(block: dict[str, Any]) -> str:
    mean, (low, high) = block["mean"], block["ci95"]
    if math.isnan(mean):
        return "-"
    mark = " *" if block.get("excludes_zero") else ""
    p = f" p={block['p']:.3f}" if "p" in block else ""
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]{p}{mark}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Learning benchmark",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine_line(results['machine'])}  ",
        f"Held-out scenarios: {len(results['scenarios'])}"
        + (
            f" (after the first {results['skip_scenarios']} of the fixed order)"
            if results.get("skip_scenarios")
            else ""
        )
        + f" x seeds {results['seeds']}; "
        f"evaluation judge `{results['evaluation_judge']}`"
        + (
            " (the training reward: its gains alone cannot tell learning from reward hacking)"
            if results.get("evaluation_judge_is_reward")
            else ""
        )
        + f", second judge `{results['second_judge']}`.",
        "",
        "Differences are to the untrained policy, paired by scenario (averaged over seeds), "
        "with 95% bootstrap intervals and the two-sided p-value of a sign-flip permutation "
        f"test; `*` marks a change established by both (interval excludes zero, p < "
        f"{SIGNIFICANCE}). Win rate: position-free pairwise verdicts against the untrained "
        "policy, ties counted half.",
        "",
        "| policy | judge | CA | CA - untrained | win rate - 0.5 | ties | agreement | rounds "
        "| tokens/dialogue |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["policies"]:
        for which in ("evaluation_judge", "second_judge"):
            block = row[which]
            if block is None:
                continue
            ca = block["ca"]
            lines.append(
                f"| {row['policy']} | {which.split('_')[0]} | {ca['mean']:.3f} "
                f"[{ca['ci95'][0]:.3f}, {ca['ci95'][1]:.3f}] | "
                f"{_cell(block['ca_minus_untrained']) if 'ca_minus_untrained' in block else '-'} | "
                f"{_cell(block['win_rate_minus_half']) if 'win_rate_minus_half' in block else '-'} | "
                f"{block.get('win_rate_minus_half', {}).get('ties', '-')} | "
                f"{row['agreement_rate']:.2f} | {_number(row['rounds_to_agreement'])} | "
                f"{row['tokens_per_dialogue']:.0f} |"
            )
    lines += ["", *verdicts(results)]
    criteria = sorted(
        {
            c
            for row in results["policies"]
            for w in ("evaluation_judge", "second_judge")
            for c in (row[w] or {}).get("criteria", {})
        }
    )
    if criteria:
        lines += ["", "Checklist criteria passed (share of resolutions with p > 0.5):", ""]
        lines.append("| policy | " + " | ".join(criteria) + " |")
        lines.append("|---|" + "---|" * len(criteria))
        for row in results["policies"]:
            rates = {
                **(row["second_judge"] or {}).get("criteria", {}),
                **row["evaluation_judge"]["criteria"],
            }
            lines.append(
                f"| {row['policy']} | "
                + " | ".join(f"{rates[c]:.2f}" if c in rates else "-" for c in criteria)
                + " |"
            )
    if results.get("training"):
        lines += ["", "Training runs:", ""]
        for name, run in results["training"].items():
            parts = [f"{run['steps']} steps"]
            for tag, label in (
                ("train/reward", "reward"),
                ("train/negotiation/clipped_turn_fraction", "clipped turns"),
                ("train/entropy", "entropy"),
            ):
                if tag in run:
                    parts.append(f"{label} {run[tag]['first']:.3f} -> {run[tag]['last']:.3f}")
            if "rollout_share" in run:
                parts.append(f"rollout share of a step {run['rollout_share']:.2f}")
            curves = f" ![{name}]({run['curves']})" if run.get("curves") else ""
            lines.append(f"- **{name}**: " + "; ".join(parts) + curves)
    return "\n".join(lines) + "\n"


def verdicts(results: dict[str, Any]) -> list[str]:
    """One plain sentence per trained policy and judge: did anything change, by the CA
    score's difference and by the pairwise win rate (each with its interval)?"""
    lines = []
    for row in results["policies"]:
        for which, label in (("evaluation_judge", "evaluation"), ("second_judge", "second")):
            block = row[which] or {}
            measures = [
                (name, block.get(key))
                for name, key in (
                    ("CA", "ca_minus_untrained"),
                    ("win rate - 0.5", "win_rate_minus_half"),
                )
                if block.get(key) and block[key]["n"]
            ]
            if not measures:
                continue
            parts = []
            for name, difference in measures:
                low, high = difference["ci95"]
                if difference["excludes_zero"]:
                    claim = "better than" if low > 0 else "worse than"
                else:
                    claim = "not told apart from"
                p = f", p={difference['p']:.3f}" if "p" in difference else ""
                parts.append(
                    f"{name} {difference['mean']:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}]{p} "
                    f"({difference['n']} scenarios): {claim} the untrained policy"
                )
            lines.append(f"- {row['policy']}, {label} judge: {'; '.join(parts)}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="configs/cpu_learning.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--runs", default="runs/learning", help="where the training runs go")
    parser.add_argument("--out", default="results/learning", help="results folder")
    parser.add_argument("--baseline", nargs="*", default=[], choices=list(BASELINES))
    parser.add_argument("--scenarios", type=int, default=16, help="held-out scenarios")
    parser.add_argument(
        "--skip-scenarios",
        type=int,
        default=0,
        help="skip the first N held-out scenarios of the fixed order: a fresh set, to confirm "
        "a configuration chosen by looking at results on the first ones",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--judge", default="default", help="evaluation judge spec")
    parser.add_argument(
        "--second-judge", default="checklist", help="a judge that is not the reward"
    )
    parser.add_argument("--agreement", default="default", help="agreement detector for evaluation")
    parser.add_argument("--no-train", action="store_true", help="evaluate existing runs only")
    args = parser.parse_args(argv)

    from negotiate.train import parse_overrides
    from trainers.config import TrainConfig

    config = TrainConfig.from_yaml(args.config, parse_overrides(args.set))
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds = {} if args.no_train else train(config, runs, args.baseline)
    specs = policy_specs(config, runs, args.baseline)
    missing = [
        s
        for label, s in specs.items()
        if label != UNTRAINED and not Path(s.split("adapter=")[1]).is_dir()
    ]
    if missing:
        raise SystemExit(f"no trained adapter at {missing}; run without --no-train first")
    suite = evaluate(args, config, specs)
    second = (
        [] if args.second_judge == "none" else second_judging(suite, args.second_judge, specs, out)
    )
    results = report(suite, second, specs, args, config.reward.judge)
    results["training"] = training_summary(runs, ["selfplay", *args.baseline], out)
    results["training_seconds"] = seconds
    results["skip_scenarios"] = args.skip_scenarios
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("python -m benchmarks.learning", main))
