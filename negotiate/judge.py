"""``negotiate judge``: score resolutions from a JSONL file (absolute or pairwise).

Absolute input lines: ``dilemma``, ``persona_a``, ``persona_b``, ``resolution`` (optional
``transcript``). Pairwise input lines: ``resolution_a`` and ``resolution_b`` instead of
``resolution``. ``dilemma`` is a string or ``{"title", "text"}``; a persona is a string
(its name) or ``{"name", "core_values", "stance"}``; a ``scenario_id`` from the data set
may replace the three. Each output line repeats the input and adds:

- absolute: ``score`` (0-5, or null with ``error`` when the judge failed after retries);
- pairwise: ``preferred`` ("a", "b" or "tie"; null with ``error`` on failure), ``p_a``
  (probability that a is better, combined over both orders), ``position_consistent``;
- both: ``judge`` (model, mode, rubric) and ``injection`` (signals found in the text).

Each output line also names its ``input_line`` (the line number in the input) and the
``criterion``. Results are appended as each batch finishes, and the file is sorted by input
line at the end. Rerunning with the same output resumes: lines already judged by the same
judge are kept, lines whose judgement failed are judged again (their failed records are
dropped), and an output written by a different judge is refused rather than mixed or
overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from negotiation_env.jsonl import (
    DataFileError,
    append_jsonl,
    read_jsonl,
    read_jsonl_records,
    write_jsonl,
)
from negotiation_env.judges.base import JudgeRequest
from negotiation_env.judges.pairwise import PairwiseRequest
from negotiation_env.judges.specs import load_judge
from negotiation_env.scenarios import Dilemma, Persona, PersonaPair, Scenario, ScenarioBank
from negotiation_env.transcript import Turn


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "judge",
        help="score resolutions in a JSONL file with a judge",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--judge", default="default", help="judge spec: default, rule, a model spec with options"
    )
    parser.add_argument("--input", required=True, metavar="IN.jsonl")
    parser.add_argument("--output", required=True, metavar="OUT.jsonl")
    parser.add_argument(
        "--pairwise", action="store_true", help="compare resolution_a with resolution_b"
    )
    parser.add_argument("--criterion", default="ca", choices=["ca", "conflict"])
    parser.add_argument(
        "--batch-size", type=int, default=16, help="lines judged (and saved) together"
    )
    parser.set_defaults(run=run)


def _persona(value: Any, path: str, line: int, field: str) -> Persona:
    if isinstance(value, str) and value.strip():
        return Persona(id=field, name=value.strip(), core_values=(), stance="")
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        values = value.get("core_values") or ()
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise DataFileError(path, line, f"{field}.core_values", "expected a list of strings")
        return Persona(
            id=field,
            name=value["name"],
            core_values=tuple(values),
            stance=str(value.get("stance", "")),
        )
    raise DataFileError(path, line, field, 'expected a name or {"name", "core_values", "stance"}')


def scenario_of(
    record: dict[str, Any], path: str, line: int, bank: ScenarioBank | None
) -> Scenario:
    if "scenario_id" in record:
        try:
            return (bank or ScenarioBank.default()).get(record["scenario_id"])
        except (KeyError, ValueError) as error:
            raise DataFileError(path, line, "scenario_id", str(error)) from None
    for field in ("dilemma", "persona_a", "persona_b"):
        if field not in record:
            raise DataFileError(path, line, field, "missing (or give scenario_id)")
    dilemma = record["dilemma"]
    if isinstance(dilemma, str) and dilemma.strip():
        title, text = "", dilemma
    elif isinstance(dilemma, dict) and isinstance(dilemma.get("text"), str):
        title, text = str(dilemma.get("title", "")), dilemma["text"]
    else:
        raise DataFileError(path, line, "dilemma", 'expected a string or {"title", "text"}')
    pair = PersonaPair(
        f"line-{line}",
        "",
        _persona(record["persona_a"], path, line, "persona_a"),
        _persona(record["persona_b"], path, line, "persona_b"),
    )
    return Scenario(Dilemma(f"line-{line}", "everyday", title, text), pair)


def _text(record: dict[str, Any], field: str, path: str, line: int) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise DataFileError(path, line, field, "missing or not a string")
    return value


def _transcript(record: dict[str, Any], path: str, line: int) -> tuple[Turn, ...]:
    value = record.get("transcript")
    if value is None:
        return ()
    if isinstance(value, str):
        return (Turn(0, "negotiator_0", "Dialogue", value),)
    if isinstance(value, list):
        turns = []
        for index, turn in enumerate(value):
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise DataFileError(
                    path, line, f"transcript[{index}]", 'expected {"speaker", "text"}'
                )
            speaker = str(turn.get("speaker_name") or turn.get("speaker") or f"Party {index % 2}")
            turns.append(Turn(index, str(turn.get("speaker", speaker)), speaker, turn["text"]))
        return tuple(turns)
    raise DataFileError(path, line, "transcript", "expected a string or a list of turns")


def _judged(record: dict[str, Any], pairwise: bool) -> bool:
    return record.get("preferred" if pairwise else "score") is not None


def previous_results(
    args: argparse.Namespace, lines: list[tuple[int, dict]], judge_description: dict
) -> dict[int, dict[str, Any]]:
    """The records of ``args.output`` worth keeping, by input line: those the same judge
    judged successfully. A record by another judge (or criterion, or kind) is an error."""
    try:
        records = read_jsonl_records(args.output)
    except FileNotFoundError:
        return {}
    # in file order: an old record without input_line is matched by its position
    numbers = [n for n, _ in lines]
    known = set(numbers)
    kept = {}
    for position, record in enumerate(records):
        line = record.get("input_line", numbers[position] if position < len(numbers) else None)
        same = (
            record.get("judge") == judge_description
            and record.get("criterion", args.criterion) == args.criterion
            and ("preferred" in record) == args.pairwise
        )
        if not same:
            raise ValueError(
                f"{args.output}: line {position + 1} was written by another judge, criterion "
                f"or kind ({record.get('judge')}); write to another --output (this one is "
                "left as it is)"
            )
        if line not in known:
            raise ValueError(
                f"{args.output}: line {position + 1} refers to input line {line}, which "
                f"{args.input} does not have: a different input?"
            )
        if _judged(record, args.pairwise):
            kept[line] = record
    return kept


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    lines = list(read_jsonl(args.input))  # validates JSON first: fail before any judging
    judge = load_judge(args.judge, criterion=args.criterion)
    describe = getattr(
        judge, "describe", lambda: {"model": judge.name, "mode": "rule", "rubric": judge.name}
    )
    if args.pairwise and not hasattr(judge, "compare_batch"):
        raise ValueError(f"judge {args.judge!r} cannot compare pairs; use an LLM judge")
    kept = previous_results(args, lines, describe())
    output = Path(args.output)
    if output.exists():  # keep the good records; failed ones are judged again below
        write_jsonl([kept[n] for n, _ in lines if n in kept], output)
    todo = [(n, r) for n, r in lines if n not in kept]
    failures = 0
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start : start + args.batch_size]
        outputs = []
        common = {"criterion": args.criterion, "judge": describe()}
        if args.pairwise:
            requests = [
                PairwiseRequest(
                    scenario_of(r, args.input, n, None),
                    _text(r, "resolution_a", args.input, n),
                    _text(r, "resolution_b", args.input, n),
                )
                for n, r in batch
            ]
            for (n, record), result in zip(batch, judge.compare_batch(requests), strict=True):
                outputs.append(
                    {
                        **record,
                        "input_line": n,
                        "preferred": result.preferred,
                        "p_a": result.p_a,
                        "position_consistent": result.position_consistent,
                        **common,
                        "injection": result.details.get("injection"),
                        **({"error": result.error} if result.error else {}),
                    }
                )
                failures += result.preferred is None
        else:
            requests = [
                JudgeRequest(
                    scenario_of(r, args.input, n, None),
                    _text(r, "resolution", args.input, n),
                    _transcript(r, args.input, n),
                )
                for n, r in batch
            ]
            for (n, record), result in zip(batch, judge.score_batch(requests), strict=True):
                outputs.append(
                    {
                        **record,
                        "input_line": n,
                        "score": result.score,
                        **common,
                        "injection": result.details.get("injection"),
                        **({"error": result.error} if result.error else {}),
                    }
                )
                failures += result.score is None
        append_jsonl(outputs, output)
        print(f"judged {start + len(batch)}/{len(todo)}", file=sys.stderr)
    results = read_jsonl_records(output) if output.exists() else []
    write_jsonl(sorted(results, key=lambda r: r["input_line"]), output)
    print(
        f"{len(todo)} lines judged ({len(kept)} kept from before), {failures} failed; "
        f"results in {args.output}"
    )
    return 0 if failures == 0 else 1
