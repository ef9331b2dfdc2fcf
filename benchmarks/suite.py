"""The standard evaluation suite: alignment, conflict resolution, efficiency, general capability.

    negotiate bench --agents smollm2 "smollm2?adapter=runs/cpu_smoke/final" --tier quick
    python -m benchmarks --agents ...                                   (the same)

Every agent negotiates with itself (both seats) on held-out scenarios: test-split dilemmas x
held-out persona pairs, in evaluation mode (a resolution is always written). Then:

- **CA score**: the evaluation judge's absolute Collective-Agency score of each resolution,
  mean with a 95% bootstrap interval;
- **CA and conflict-resolution win rates**: each pair of agents compared on the same
  scenario, seed and decoding by the judge's position-free pairwise verdict (an LLM judge
  asked in both orders, the mean of the two probabilities deciding; a score-based judge by
  the two scores); ties are reported;
- **efficiency**: agreement rate, mean rounds to agreement, tokens per dialogue (counted with
  one reference tokenizer, so agents are comparable);
- **single-agent answers**: each LLM agent also answers every dilemma directly, judged the
  same way and compared with its negotiated resolutions;
- **general capability**: perplexity on the held-out general-text set and accuracy on the
  verifiable instruction-following set, per model.

Records are appended to ``records.jsonl`` / ``pairwise.jsonl`` / ``capability.jsonl`` as
they finish; rerunning with the same ``--out`` skips what is done. What the records depend
on besides their keys (agent, seed, decoding, scenario) is saved in ``settings.json`` at the
first run: turns, token budgets, judge, agreement detector, observer. A rerun into the same
``--out`` with other such settings is refused, so that no table mixes records made under
different settings; agents, seeds, decodings and scenarios may be added. A judge failure is
recorded and counted, never scored 0 and never a crash of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.rollout import act_by_seat, round_progress
from agents.specs import check_agent_spec, load_agent
from benchmarks.command import run_main
from benchmarks.machine import describe_machine, machine_line
from benchmarks.metrics import efficiency, score_summary, win_rates
from llm.interface import GenerationSettings
from llm.specs import is_llm_spec, split_spec
from negotiation_env import AGENTS, NegotiationConfig
from negotiation_env.direct import direct_messages
from negotiation_env.jsonl import append_jsonl, read_jsonl_records, write_text_atomic
from negotiation_env.judges.base import JudgeRequest, judge_safely
from negotiation_env.judges.pairwise import PairwiseRequest
from negotiation_env.judges.specs import load_agreement_detector, load_judge, with_option
from negotiation_env.scenarios import ScenarioBank
from negotiation_env.vector import VectorNegotiationEnv

TIERS = {
    "quick": {
        "scenarios": 8,
        "max_new_tokens": 64,
        "summary_max_new_tokens": 96,
        "instructions": 16,
        "passages": 12,
    },
    "full": {
        "scenarios": 100,
        "max_new_tokens": 160,
        "summary_max_new_tokens": 256,
        "instructions": 0,
        "passages": 0,
    },
}
BASELINES = ("smollm2", "scripted:mediator", "scripted:stubborn", "scripted:conceding")
SCENARIO_SEED = 20261127  # fixes which held-out scenarios each tier uses
OBSERVED = "+observer"  # suffix of an agent's name when it ran under the observer
# Version of how capability records are measured. Records without it (before 2) have a wrong
# perplexity (sequence_logprobs misread passages shorter than a batch's longest) and are
# measured again on resume; the latest record of an agent is the one reported.
CAPABILITY_SCORING = 2
SETTINGS_FILE = "settings.json"
RECORD_FILES = ("records.jsonl", "pairwise.jsonl", "capability.jsonl")


@dataclass
class BenchConfig:
    agents: list[str] = field(default_factory=list)
    tier: str = "quick"
    scenarios: int = 0  # 0: the tier's number
    # held-out scenarios skipped at the head of the fixed order: a fresh set, e.g. to
    # confirm on new scenarios what was chosen by looking at the first ones
    skip_scenarios: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    decodings: list[str] = field(default_factory=lambda: ["sampled"])
    judge: str = "default"
    agreement: str = "default"
    baselines: bool = True
    direct: bool = True
    capability: bool = True
    max_turns: int = 7
    observer: str = ""  # a constraint file: every agent is also run under the observer
    out: str = "results/bench"
    run_dirs: list[str] = field(default_factory=list)
    # Overrides of the tier's token budgets (0: the tier's) and further NegotiationConfig
    # fields, e.g. to evaluate with the turn lengths a policy was trained with.
    max_new_tokens: int = 0
    summary_max_new_tokens: int = 0
    # no run of this many tokens twice in one resolution (GenerationSettings); 0: off
    summary_no_repeat_ngram_size: int = 0
    env: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"tier: {self.tier!r} is not one of {list(TIERS)}")
        bad = [d for d in self.decodings if d not in ("greedy", "sampled")]
        if bad:
            raise ValueError(f"decodings: {bad} not in ['greedy', 'sampled']")
        unknown = sorted(set(self.env) - {f.name for f in dataclasses.fields(NegotiationConfig)})
        if unknown:
            raise ValueError(f"env: unknown NegotiationConfig field(s) {unknown}")
        if self.summary_no_repeat_ngram_size < 0:
            raise ValueError(
                "summary_no_repeat_ngram_size: must be >= 0 (0 disables), got "
                f"{self.summary_no_repeat_ngram_size}"
            )
        self.negotiation_config()  # any other bad value is refused now, by name

    def setting(self, key: str) -> int:
        overridable = ("scenarios", "max_new_tokens", "summary_max_new_tokens")
        return (getattr(self, key) if key in overridable else 0) or TIERS[self.tier][key]

    def negotiation_config(self) -> NegotiationConfig:
        return NegotiationConfig(**{**self.env, "mode": "evaluation", "max_turns": self.max_turns})


def agent_list(config: BenchConfig) -> list[str]:
    agents = list(dict.fromkeys(config.agents))
    if config.baselines:
        agents += [b for b in BASELINES if b not in agents]
    if not agents:
        raise ValueError("no agents to evaluate: give --agents or keep the baselines")
    return agents


def held_out_scenarios(count: int, bank: ScenarioBank | None = None, skip: int = 0) -> list[str]:
    """``count`` held-out scenarios in a fixed order (the same for every run), after the
    first ``skip`` of that order; ValueError when the test split has too few."""
    bank = bank or ScenarioBank.default()
    ids = sorted(bank.scenario_ids("test"))
    if skip < 0 or skip + count > len(ids):
        raise ValueError(
            f"scenarios: {count} after skipping {skip} needs {skip + count} held-out scenarios; "
            f"the test split has {len(ids)}"
        )
    order = np.random.default_rng(SCENARIO_SEED).permutation(len(ids))
    return [ids[i] for i in order[skip : skip + count]]


def sampling(
    config: BenchConfig, decoding: str, seed: int
) -> tuple[GenerationSettings, GenerationSettings]:
    tokens, summary_tokens = (
        config.setting("max_new_tokens"),
        config.setting("summary_max_new_tokens"),
    )
    ban = config.summary_no_repeat_ngram_size
    if decoding == "greedy":
        return (
            GenerationSettings(max_new_tokens=tokens, temperature=0.0),
            GenerationSettings(
                max_new_tokens=summary_tokens, temperature=0.0, no_repeat_ngram_size=ban
            ),
        )
    return (
        GenerationSettings(max_new_tokens=tokens, temperature=0.7, top_p=0.95, seed=seed),
        GenerationSettings(
            max_new_tokens=summary_tokens, temperature=0.1, seed=seed, no_repeat_ngram_size=ban
        ),
    )


class Suite:
    """Runs the suite into ``config.out``; each stage resumes from what is already recorded."""

    def __init__(
        self,
        config: BenchConfig,
        judge: Any = None,
        conflict_judge: Any = None,
        agreement_detector: Any = None,
        bank: ScenarioBank | None = None,
    ):
        self.config = config
        for spec in agent_list(config):  # every spec now, before any model is loaded
            check_agent_spec(spec)
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.bank = bank or ScenarioBank.default()
        cache = self.out / "judge_cache.sqlite"  # judgements live with the results: reruns are free
        self.judge = judge or load_judge(
            with_option(config.judge, "judge_cache", cache), criterion="ca"
        )
        self.conflict_judge = conflict_judge or (
            self.judge
            if not hasattr(self.judge, "compare_batch")
            else load_judge(with_option(config.judge, "judge_cache", cache), "conflict")
        )
        self.agreement = agreement_detector or load_agreement_detector(config.agreement)
        self.agents = agent_list(config)
        self.observer = None
        if config.observer:
            from negotiation_env.observer import Observer

            self.observer = Observer.load(config.observer)
        self.scenario_ids = held_out_scenarios(
            config.setting("scenarios"), self.bank, config.skip_scenarios
        )
        self._tokenizer = None
        self._check_resumable()

    # ------------------------------------------------------------------ resuming
    def record_settings(self) -> dict[str, Any]:
        """What the records depend on besides the keys they are stored under."""
        observer = None
        if self.observer is not None:
            rules = [
                [c.name, c.rule, c.overlay, c.scope, c.message] for c in self.observer.constraints
            ]
            knobs = [self.observer.rigidity, self.observer.max_regenerations]
            digest = hashlib.sha256(json.dumps([rules, knobs]).encode()).hexdigest()[:16]
            observer = f"{self.config.observer} ({digest})"
        return {
            "max_turns": self.config.max_turns,
            "max_new_tokens": self.config.setting("max_new_tokens"),
            "summary_max_new_tokens": self.config.setting("summary_max_new_tokens"),
            "instructions": self.config.setting("instructions"),
            "passages": self.config.setting("passages"),
            "judge": self.judge_id(),
            "agreement_detector": getattr(self.agreement, "name", type(self.agreement).__name__),
            "observer": observer,
            **({"env": self.config.env} if self.config.env else {}),
            **(
                {"summary_no_repeat_ngram_size": self.config.summary_no_repeat_ngram_size}
                if self.config.summary_no_repeat_ngram_size
                else {}
            ),
        }

    def _check_resumable(self) -> None:
        """Save the settings with the first records; refuse to add to records made otherwise."""
        path = self.out / SETTINGS_FILE
        current = json.loads(json.dumps(self.record_settings(), default=str))
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            differing = [
                k for k in dict.fromkeys([*saved, *current]) if saved.get(k) != current.get(k)
            ]
            if differing:
                changes = "; ".join(
                    f"{k} {saved.get(k)!r} there, {current.get(k)!r} now" for k in differing
                )
                raise ValueError(
                    f"--out {self.out} holds records made with other settings ({changes}); "
                    "resuming would mix them in one table. Rerun with the same settings, give "
                    f"another --out, or delete {self.out} to start over"
                )
            return
        if any((self.out / name).is_file() for name in RECORD_FILES):
            raise ValueError(
                f"--out {self.out} holds records but no {SETTINGS_FILE} (a run of an earlier "
                "version), so their settings are unknown and resuming could mix settings. "
                f"Give another --out, or delete {self.out} to start over"
            )
        write_text_atomic(path, json.dumps(current, indent=2) + "\n")

    # ------------------------------------------------------------------ files
    def _records(self, name: str) -> list[dict[str, Any]]:
        path = self.out / name
        return read_jsonl_records(path) if path.is_file() else []

    def _append(self, name: str, records: list[dict[str, Any]]) -> None:
        if records:
            append_jsonl(records, self.out / name)

    def judge_id(self) -> dict[str, Any]:
        return getattr(self.judge, "describe", lambda: {"model": self.judge.name})()

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, texts: list[str]) -> int:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from llm.models import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
        return sum(len(self._tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    # ------------------------------------------------------------------ negotiation
    def negotiate(self) -> None:
        done = {
            (r["agent"], r["seed"], r["decoding"], r["scenario_id"])
            for r in self._records("records.jsonl")
            if r["kind"] == "negotiated"
        }
        variants = [(spec, None) for spec in self.agents]
        if self.observer is not None:
            variants += [(f"{spec} {OBSERVED}", self.observer) for spec in self.agents]
        for (name, observer), seed, decoding in itertools.product(
            variants, self.config.seeds, self.config.decodings
        ):
            agent_spec = name.removesuffix(f" {OBSERVED}")
            if not is_llm_spec(split_spec(agent_spec)[0]) and decoding != self.config.decodings[0]:
                continue  # scripted agents do not depend on decoding
            todo = [s for s in self.scenario_ids if (name, seed, decoding, s) not in done]
            if not todo:
                continue
            started = time.perf_counter()
            agent = self._agent(agent_spec, decoding, seed)
            env = VectorNegotiationEnv(
                config=self.config.negotiation_config(),
                scenarios=self.bank,
                judge=self.judge,
                agreement_detector=self.agreement,
                observer=observer,
            )
            env.reset(todo)
            label = f"{name} seed {seed} {decoding}: {len(todo)} dialogues"
            with round_progress(env, label) as after_round:
                env.play(
                    lambda pending, agent=agent: act_by_seat(dict.fromkeys(AGENTS, agent), pending),
                    after_round,
                )
            records = []
            for negotiation, info in zip(env.negotiations, env.infos(), strict=True):
                texts = [t["text"] for t in info["transcript"]] + [info["resolution"] or ""]
                judgement = info["judgement"] or {}
                records.append(
                    {
                        "kind": "negotiated",
                        "agent": name,
                        "seed": seed,
                        "decoding": decoding,
                        "scenario_id": negotiation.scenario.id,
                        "agreement": info["agreement"],
                        "rounds_to_agreement": info["rounds_to_agreement"],
                        # a detector that failed (e.g. its server is down) counts as "not
                        # agreed"; counted so that such an agreement rate is not taken as real
                        "agreement_check_failures": sum(
                            "error" in check.details for check in negotiation.agreement_checks
                        ),
                        "turns": info["turn"],
                        "generated_tokens": self.count_tokens(texts),
                        "transcript": info["transcript"],
                        "resolution": info["resolution"],
                        "ca_score": judgement.get("score"),
                        "judge_error": judgement.get("error"),
                        "judgement": judgement,
                        **({"observer": info["observer"]} if "observer" in info else {}),
                    }
                )
            self._append("records.jsonl", records)
            print(
                f"negotiated: {name} seed {seed} {decoding}: {len(records)} scenarios in "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def _agent(self, spec: str, decoding: str, seed: int) -> Any:
        agent = load_agent(spec)
        if hasattr(agent, "dialogue"):  # an LLM agent: the suite's sampling for this run
            agent.dialogue, agent.summary = sampling(self.config, decoding, seed)
        return agent

    # ------------------------------------------------------------------ direct answers
    def answer_directly(self) -> None:
        done = {
            (r["agent"], r["seed"], r["decoding"], r["scenario_id"])
            for r in self._records("records.jsonl")
            if r["kind"] == "direct"
        }
        for agent_spec, seed, decoding in itertools.product(
            self.agents, self.config.seeds, self.config.decodings
        ):
            if not is_llm_spec(split_spec(agent_spec)[0]):
                continue
            todo = [s for s in self.scenario_ids if (agent_spec, seed, decoding, s) not in done]
            if not todo:
                continue
            agent = self._agent(agent_spec, decoding, seed)
            scenarios = [self.bank.get(s) for s in todo]
            words = self.config.negotiation_config().summary_word_limit  # as in a dialogue
            generations = agent.backend.generate(
                [direct_messages(s, words) for s in scenarios], agent.summary
            )
            judgements = judge_safely(
                self.judge,
                [JudgeRequest(s, g.text) for s, g in zip(scenarios, generations, strict=True)],
            )
            self._append(
                "records.jsonl",
                [
                    {
                        "kind": "direct",
                        "agent": agent_spec,
                        "seed": seed,
                        "decoding": decoding,
                        "scenario_id": s.id,
                        "resolution": g.text,
                        "ca_score": j.score,
                        "judge_error": j.error,
                        "judgement": j.to_record(),
                        "generated_tokens": self.count_tokens([g.text]),
                    }
                    for s, g, j in zip(scenarios, generations, judgements, strict=True)
                ],
            )

    # ------------------------------------------------------------------ pairwise
    def compare(self) -> None:
        if not hasattr(self.judge, "compare_batch"):
            print("pairwise comparisons skipped: the judge cannot compare pairs", file=sys.stderr)
            return
        records = self._records("records.jsonl")
        by_key = {
            (
                r["agent"] if r["kind"] == "negotiated" else f"{r['agent']} (direct)",
                r["seed"],
                r["decoding"],
                r["scenario_id"],
            ): r
            for r in records
        }
        done = {
            (r["agent_a"], r["agent_b"], r["seed"], r["decoding"], r["scenario_id"], r["criterion"])
            for r in self._records("pairwise.jsonl")
        }
        names = list(dict.fromkeys(k[0] for k in by_key))
        pairs = [
            (a, b)
            for a, b in itertools.combinations(names, 2)
            if not (a.endswith("(direct)") and b.endswith("(direct)"))
        ]
        for criterion, judge in (("ca", self.judge), ("conflict", self.conflict_judge)):
            todo = []
            for a, b in pairs:
                for seed, decoding, scenario in itertools.product(
                    self.config.seeds, self.config.decodings, self.scenario_ids
                ):
                    first, second = (
                        by_key.get((a, seed, decoding, scenario)),
                        by_key.get((b, seed, decoding, scenario)),
                    )
                    if first is None:  # scripted agents ran with the first decoding only
                        first = by_key.get((a, seed, self.config.decodings[0], scenario))
                    if second is None:
                        second = by_key.get((b, seed, self.config.decodings[0], scenario))
                    if first and second and (a, b, seed, decoding, scenario, criterion) not in done:
                        todo.append((a, b, seed, decoding, scenario, first, second))
            if not todo:
                continue
            outcomes = judge.compare_batch(
                [
                    PairwiseRequest(
                        self.bank.get(t[4]), t[5]["resolution"] or "", t[6]["resolution"] or ""
                    )
                    for t in todo
                ]
            )
            self._append(
                "pairwise.jsonl",
                [
                    {
                        "agent_a": a,
                        "agent_b": b,
                        "seed": seed,
                        "decoding": decoding,
                        "scenario_id": scenario,
                        "criterion": criterion,
                        "preferred": o.preferred,
                        "p_a": o.p_a,
                        "position_consistent": o.position_consistent,
                        "error": o.error,
                    }
                    for (a, b, seed, decoding, scenario, _, _), o in zip(
                        todo, outcomes, strict=True
                    )
                ],
            )

    # ------------------------------------------------------------------ capability
    def capability(self) -> None:
        from benchmarks.capability.instructions import load_prompts, score_answers
        from benchmarks.capability.perplexity import load_passages, model_perplexity

        done = {
            r["agent"]
            for r in self._records("capability.jsonl")
            if r.get("scoring") == CAPABILITY_SCORING
        }
        passages = load_passages()[: self.config.setting("passages") or None]
        prompts = load_prompts()[: self.config.setting("instructions") or None]
        for agent_spec in self.agents:
            if not is_llm_spec(split_spec(agent_spec)[0]) or agent_spec in done:
                continue
            agent = load_agent(agent_spec)
            record: dict[str, Any] = {
                "agent": agent_spec,
                "scoring": CAPABILITY_SCORING,
                "passages": len(passages),
                "instructions": len(prompts),
            }
            if hasattr(agent.backend, "sequence_logprobs"):
                record.update(model_perplexity(agent.backend, passages))
            answers = agent.backend.generate(
                [[{"role": "user", "content": p.prompt}] for p in prompts],
                GenerationSettings(max_new_tokens=256, temperature=0.0),
            )
            scores = score_answers(prompts, [a.text for a in answers])
            record.update(
                {k: scores[k] for k in ("prompt_level_accuracy", "instruction_level_accuracy")}
            )
            self._append("capability.jsonl", [record])

    # ------------------------------------------------------------------ whole run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.negotiate()
        if self.config.direct:
            self.answer_directly()
        self.compare()
        if self.config.capability:
            self.capability()
        results = self.aggregate()
        results["seconds"] = round(time.perf_counter() - started, 1)
        from benchmarks.report import write_report

        write_report(results, self.out)
        return results

    def aggregate(self) -> dict[str, Any]:
        records = self._records("records.jsonl")
        pairwise = self._records("pairwise.jsonl")
        capability = {r["agent"]: r for r in self._records("capability.jsonl")}
        rows = []
        names = self.agents + (
            [f"{a} {OBSERVED}" for a in self.agents] if self.observer is not None else []
        )
        for agent in names:
            negotiated = [r for r in records if r["agent"] == agent and r["kind"] == "negotiated"]
            direct = [r for r in records if r["agent"] == agent and r["kind"] == "direct"]
            row = {"agent": agent, "ca": score_summary(negotiated), **efficiency(negotiated)}
            if direct:
                row["direct_ca"] = score_summary(direct)
                row["negotiated_vs_direct"] = {
                    c: win_rates(pairwise, agent, f"{agent} (direct)", c)
                    for c in ("ca", "conflict")
                }
            if agent in capability:
                row["capability"] = capability[agent]
            observed = [r["observer"] for r in negotiated if "observer" in r]
            if observed:
                row["observer"] = observer_summary(observed)
            rows.append(row)
        names = list(
            dict.fromkeys([*(r["agent_a"] for r in pairwise), *(r["agent_b"] for r in pairwise)])
        )
        matrices = {
            c: {a: {b: win_rates(pairwise, a, b, c) for b in names if b != a} for a in names}
            for c in ("ca", "conflict")
        }
        return {
            "command": " ".join(sys.argv),
            "config": dataclasses.asdict(self.config),
            "machine": describe_machine(),
            "judge": self.judge_id(),
            "agreement_detector": getattr(self.agreement, "name", type(self.agreement).__name__),
            "scenarios": self.scenario_ids,
            "agents": rows,
            "win_rates": matrices,
            "records": len(records),
            "pairwise_records": len(pairwise),
            "judge_failures": sum(r.get("ca_score") is None for r in records)
            + sum(r.get("preferred") is None for r in pairwise),
            "agreement_check_failures": sum(r.get("agreement_check_failures", 0) for r in records),
        }


def observer_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Violations per episode by constraint, and interventions per episode by kind."""
    episodes = len(summaries)
    violations: dict[str, float] = {}
    interventions: dict[str, float] = {}
    for summary in summaries:
        for constraint, count in summary["violations_by_constraint"].items():
            violations[constraint] = violations.get(constraint, 0.0) + count / episodes
        for intervention in summary["interventions"]:
            interventions[intervention["kind"]] = (
                interventions.get(intervention["kind"], 0.0) + 1 / episodes
            )
    return {
        "episodes": episodes,
        "violations_per_episode": violations,
        "interventions_per_episode": interventions,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="standard", choices=["standard"], help="the suite to run"
    )
    parser.add_argument(
        "--agents",
        nargs="*",
        default=[],
        help="agent specs (models, adapters, servers, scripted, module:function)",
    )
    parser.add_argument("--tier", default="quick", choices=list(TIERS))
    parser.add_argument(
        "--scenarios", type=int, default=0, help="held-out scenarios (0 = the tier's number)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--decoding", nargs="+", default=["sampled"], choices=["greedy", "sampled"])
    parser.add_argument("--judge", default="default", help="evaluation judge spec")
    parser.add_argument(
        "--agreement",
        default="default",
        help="agreement detector spec ('marker' for the explicit marker)",
    )
    parser.add_argument("--max-turns", type=int, default=7)
    parser.add_argument(
        "--summary-no-repeat-ngram-size",
        type=int,
        default=0,
        metavar="N",
        help="no run of N tokens written twice in one resolution or direct answer (0: off)",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="do not add the base model and scripted agents"
    )
    parser.add_argument(
        "--no-direct", action="store_true", help="skip the single-agent direct answers"
    )
    parser.add_argument(
        "--no-capability", action="store_true", help="skip perplexity and instruction following"
    )
    parser.add_argument(
        "--run-dir", nargs="*", default=[], help="training runs whose curves to plot"
    )
    parser.add_argument("--out", default="results/bench", help="results folder (rerun to resume)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        agents=args.agents,
        tier=args.tier,
        scenarios=args.scenarios,
        seeds=args.seeds,
        decodings=args.decoding,
        judge=args.judge,
        agreement=args.agreement,
        baselines=not args.no_baselines,
        direct=not args.no_direct,
        capability=not args.no_capability,
        max_turns=args.max_turns,
        summary_no_repeat_ngram_size=args.summary_no_repeat_ngram_size,
        out=args.out,
        run_dirs=args.run_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    results = Suite(config_from_args(args)).run()
    print((Path(args.out) / "results.md").read_text())
    print(f"machine: {machine_line(results['machine'])}; {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("python -m benchmarks.suite", main))
