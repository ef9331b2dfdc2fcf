"""Is a reward model's pairwise probability calibrated? Measured on its recipe's held-out pairs.

    python -m trainers.reward_calibration --adapter ca-rm-v2 \\
        --out docs/results/rm-calibration/ca-rm-v2.json

The reward-model judge decides a pair with ``P(a better) = sigmoid(reward_a - reward_b)`` and
calls it a tie when ``P`` is within the tie band of 0.5 (``tie_band``, 0.05 by default). That
band means "cannot tell" only if ``P`` is calibrated. This command rebuilds the adapter's own
held-out pairs from the recipe recorded beside it (``reward_model.json``: whole dilemmas of the
training split kept out of its training, never a labelled evaluation set), scores them with
the judge (its injection defence included), and reports
:func:`negotiation_env.judges.pairwise.calibration_report`: accuracy by confidence, the
temperature that would calibrate ``P``, and how often a verdict inside the tie band is right.
Adapters trained from now on record the same report of the model's own rewards (before the
judge's injection defence) in ``reward_model.json`` (``held_out_pairwise``).

With ``--reports``, the same report on labelled pairs instead: the absolute rows of the
reward-model judge (``--judge``, ``rm`` by default) in judge-quality reports
(``python -m benchmarks.judge_quality ... --out DIR`` writes ``DIR/judge_quality.json``), each
0-5 score turned back into its reward with the adapter's calibration:

    python -m trainers.reward_calibration --adapter ca-rm-v2 --judge rm \
        --reports docs/results/rm-off-topic-written/{seventh,sixth}/judge_quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from negotiation_env.judges.pairwise import DEFAULT_TIE_BAND, calibration_report
from trainers.reward_model import RewardModelRecipe, recipe_pairs


def measure(adapter: str, tie_band: float = DEFAULT_TIE_BAND, max_pairs: int = 0) -> dict[str, Any]:
    """The calibration report of ``adapter`` (a folder or a shipped name) on its held-out
    pairs (the first ``max_pairs`` of them when positive)."""
    from llm.reward_backend import RewardModelBackend, adapter_folder, read_metadata
    from negotiation_env.judges.base import JudgeRequest
    from negotiation_env.judges.reward_model import RewardModelJudge
    from negotiation_env.scenarios import ScenarioBank

    folder = adapter_folder(adapter)
    metadata = read_metadata(folder)
    fields = RewardModelRecipe.__dataclass_fields__
    recorded = {k: v for k, v in metadata.get("recipe", {}).items() if k in fields}
    recorded["held_out_flaws"] = tuple(recorded.get("held_out_flaws", ()))
    recipe = RewardModelRecipe(**recorded)
    bank = ScenarioBank.default()
    _, held = recipe_pairs(recipe, bank)
    expected = (metadata.get("held_out") or {}).get("pairs")
    if expected is not None and expected != len(held):
        raise ValueError(
            f"{folder}: its recipe now gives {len(held)} held-out pairs, but it recorded "
            f"{expected}; this checkout cannot rebuild the pairs it was measured on"
        )
    held = held[:max_pairs] if max_pairs > 0 else held
    # the judge's rewards, its injection defence included: P is what its verdicts use
    judge = RewardModelJudge(RewardModelBackend(folder, dtype="float32"))
    keys = sorted({(p.scenario_id, text) for p in held for text in (p.chosen, p.rejected)})
    scored = judge.rewards([JudgeRequest(bank.get(sid), text) for sid, text in keys])
    rewards = {key: reward for key, (reward, *_) in zip(keys, scored, strict=True)}
    logits = [
        rewards[(p.scenario_id, p.chosen)] - rewards[(p.scenario_id, p.rejected)] for p in held
    ]
    return {
        "adapter": str(adapter),
        "judge": judge.name,
        "data": "held-out pairs of the adapter's recipe (training-split dilemmas kept out of "
        "its training)",
        **calibration_report(logits, tie_band),
    }


def measure_reports(
    adapter: str, reports: Sequence[str], judge: str = "rm", tie_band: float = DEFAULT_TIE_BAND
) -> dict[str, Any]:
    """The calibration report of ``adapter`` on the labelled pairs of judge-quality reports:
    the absolute rows of ``judge`` (which must be this adapter), scores turned back into
    rewards with its calibration, ``reward = center + scale * logit(score / 5)``."""
    from llm.reward_backend import adapter_folder, read_metadata
    from negotiation_env.judges.reward_model import Calibration

    reward = Calibration(**read_metadata(adapter_folder(adapter))["calibration"]).to_reward

    logits = []
    for path in reports:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            runs = [r for r in report["runs"] if r["model"] == judge and r["kind"] == "absolute"]
            rows = runs[0]["rows"] if runs else None
            pairs = [
                (row["better"], row["worse"]) for row in rows or () if row.get("error") is None
            ]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}: not a judge-quality report ({type(error).__name__}: {error})"
            ) from None
        if rows is None:
            raise ValueError(f"{path}: no absolute run of the judge {judge!r}")
        logits += [reward(better) - reward(worse) for better, worse in pairs]
    return {
        "adapter": str(adapter),
        "judge": judge,
        "data": f"labelled pairs of {len(reports)} judge-quality report(s): "
        + ", ".join(map(str, reports)),
        **calibration_report(logits, tie_band),
    }


def markdown(report: dict[str, Any]) -> str:
    band = report["inside_band"]
    lines = [
        f"{report['judge']}, {report['pairs']} {report['data']}.",
        f"Accuracy {report['accuracy']:.2f}; log loss {report['log_loss']:.3f} "
        f"(temperature 1), {report['log_loss_fitted']:.3f} at the fitted temperature "
        f"{report['fitted_temperature']:.2f}.",
        f"Inside the tie band ({report['tie_band']:g}): {band['pairs']} pairs "
        f"({band['share']:.1%}), right {'-' if band['accuracy'] is None else band['accuracy']}.",
        "",
        "| confidence max(P, 1-P) | pairs | accuracy |",
        "|---|---|---|",
        *(
            f"| {b['confidence']} | {b['pairs']} | {b['accuracy']:.2f} |"
            for b in report["by_confidence"]
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.reward_calibration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--adapter", default="ca-rm-v2", help="adapter folder or shipped name")
    parser.add_argument("--tie-band", type=float, default=DEFAULT_TIE_BAND)
    parser.add_argument("--max-pairs", type=int, default=0, help="first N held-out pairs (0 = all)")
    parser.add_argument(
        "--reports",
        nargs="+",
        default=None,
        help="judge-quality report files (JSON): measure on their labelled pairs instead",
    )
    parser.add_argument("--judge", default="rm", help="the reports' row of this adapter")
    parser.add_argument("--out", default=None, help="write the report here (JSON)")
    args = parser.parse_args(argv)
    try:
        report = (
            measure_reports(args.adapter, args.reports, args.judge, args.tie_band)
            if args.reports
            else measure(args.adapter, args.tie_band, args.max_pairs)
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"reward calibration: error: {error}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_suffix(out.suffix + ".tmp")
        temporary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        temporary.replace(out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
