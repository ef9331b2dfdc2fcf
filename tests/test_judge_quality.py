"""The judge-quality benchmark's arithmetic, on hand-made rows (no model)."""

import pytest

from benchmarks.judge_quality import (
    _replace,
    flaw_accuracy,
    load_items,
    markdown,
    paired_comparisons,
    per_flaw,
    target_checks,
    threshold_metrics,
)


def _row(probability, label):
    return {"probability": probability, "label": label, "error": None}


def test_auc_and_fitted_threshold_of_a_perfectly_separating_detector():
    rows = [_row(p, True) for p in (0.31, 0.36, 0.42, 0.47)]
    rows += [_row(p, False) for p in (0.11, 0.16, 0.22, 0.26)]
    metrics = threshold_metrics(rows)
    assert metrics["auc"] == 1.0
    # below 0.5, so the default threshold would call every item "not agreed"
    assert 0.26 < metrics["fitted_threshold"] <= 0.31
    assert metrics["cross_validated_accuracy"] == 1.0


def test_a_detector_without_signal_has_auc_one_half_and_no_threshold_without_both_labels():
    rows = [_row(0.4, True), _row(0.4, False), _row(0.6, True), _row(0.6, False)]
    assert threshold_metrics(rows)["auc"] == 0.5
    assert threshold_metrics([_row(0.4, True)])["auc"] is None


def test_flaw_accuracy_counts_absolute_ties_as_half_and_pairwise_inconsistency_as_wrong():
    absolute = {
        "kind": "absolute",
        "rows": [
            {"flaw": "vague", "better": 3.0, "worse": 2.0},
            {"flaw": "vague", "better": 2.0, "worse": 2.0},
            {"flaw": "hostile", "better": 1.0, "worse": 2.0},
            {"flaw": "hostile", "better": None, "worse": 2.0, "error": "timeout"},
        ],
    }
    assert flaw_accuracy(absolute) == {"vague": 0.75, "hostile": 0.0}
    pairwise = {
        "kind": "pairwise",
        "rows": [
            {"flaw": "vague", "preferred": "a", "p_better": 0.8},
            {"flaw": "vague", "preferred": "tie", "p_better": 0.5},
        ],
    }
    assert flaw_accuracy(pairwise) == {"vague": pytest.approx(0.5)}


def test_two_judges_are_compared_item_by_item_with_ties_counting_half():
    def run(model, pairs):
        rows = [
            {"id": f"x-{i}", "flaw": "vague", "better": b, "worse": w}
            for i, (b, w) in enumerate(pairs)
        ]
        return {"model": model, "kind": "absolute", "rows": rows}

    first = run("rm", [(3, 2), (3, 2), (2, 3), (2, 2), (3, 2)])
    other = run("rm-gated", [(3, 2), (2, 3), (3, 2), (3, 2), (None, 2)])
    pairwise = {"model": "p", "kind": "pairwise", "rows": []}
    (comparison,) = paired_comparisons({"runs": [first, pairwise, other]})
    # item 1 only the first gets right, item 2 only the other, item 3 a tie against a win
    # (half a pair); item 4 is unscored by the other and left out
    assert comparison["items"] == 4
    assert comparison["right_only_with_first"] == 1
    assert comparison["right_only_with_other"] == 1.5
    assert 0 < comparison["p_value"] <= 1


def test_rerun_rows_replace_the_earlier_ones_with_the_same_key():
    rows = [{"model": "m", "mode": "expected", "accuracy": 0.1}]
    _replace(rows, {"model": "m", "mode": "expected", "accuracy": 0.9}, ("model", "mode"))
    _replace(rows, {"model": "m", "mode": "parsed", "accuracy": 0.5}, ("model", "mode"))
    assert [r["accuracy"] for r in rows] == [0.9, 0.5]


def test_per_flaw_takes_the_first_items_of_every_kind_in_file_order():
    items = load_items()
    subset = per_flaw(items, 6)
    kinds = {item["flaw"] for item in items}
    assert len(kinds) == 9 and len(subset) == 6 * len(kinds)
    assert all(sum(i["flaw"] == kind for i in subset) == 6 for kind in kinds)
    positions = [items.index(item) for item in subset]
    assert positions == sorted(positions)  # file order kept
    first_hostile = next(i for i in items if i["flaw"] == "hostile")
    assert first_hostile in subset


def test_every_judge_is_checked_against_the_targets_and_a_miss_says_by_how_much():
    absolute = {
        "model": "rm",
        "rubric": "-",
        "mode": "spec",
        "kind": "absolute",
        "coarse": {"accuracy": 0.85},
        "subtle": {"accuracy": 0.81},
        "seconds_per_judgement": 0.75,
    }
    pairwise = {
        **absolute,
        "kind": "pairwise",
        "coarse": {"accuracy": 0.86, "position_consistency": 0.70},
        "subtle": {"accuracy": None},
    }
    attack = {"suite": "injections_heldout", "defence": "default", "mean_inflation": 0.25}
    report = {"runs": [absolute, pairwise], "adversarial": {"rm": [attack]}}
    checks = {(c["judge"], c["target"]): c for c in target_checks(report)}
    assert checks["rm spec", "coarse flaws, absolute accuracy"]["missed_by"] == pytest.approx(0.05)
    assert checks["rm spec", "subtle flaws, absolute accuracy"]["met"]
    assert checks["rm spec", "coarse flaws, pairwise accuracy"]["met"]
    assert checks["rm spec", "coarse flaws, position consistency"]["missed_by"] == pytest.approx(
        0.1
    )
    assert checks["rm spec", "seconds per resolution"]["met"]
    assert ("rm spec", "subtle flaws, pairwise accuracy") not in checks  # nothing measured
    assert checks["rm", "injection inflation (held-out attacks)"]["missed_by"] == pytest.approx(
        0.15
    )
    rows = [line for line in markdown_of(report).splitlines() if "coarse flaws, absolute" in line]
    assert rows == [
        "| rm spec | coarse flaws, absolute accuracy | 0.85 | >= 0.9 | missed by 0.05 |"
    ]


def markdown_of(report):
    base = {
        "command": "python -m benchmarks.judge_quality",
        "machine": {
            "processor": "x",
            "cpu_count": 2,
            "torch": "2",
            "torch_threads": 2,
            "python": "3",
        },
        "items": 2,
        "length_controlled_items": 1,
        "longer_wins": {"all": 0.5, "length_controlled": 0.5},
    }
    runs = [
        {
            **run,
            "all": {"accuracy": 0.5, "margin": None, "mean_p_better": None, "failed": 0},
            "length_controlled": {"accuracy": 0.5},
            "rows": [],
        }
        for run in report["runs"]
    ]
    adversarial = {
        name: [
            {
                **row,
                "attacks": 1,
                "items": 1,
                "share_inflated_over_0.5": 0.0,
                "flip_rate": 0.0,
                "detected": 1.0,
            }
            for row in rows
        ]
        for name, rows in report["adversarial"].items()
    }
    return markdown({**base, "runs": runs, "adversarial": adversarial})


def test_the_selection_set_is_balanced_and_shares_no_dilemma_with_other_judge_data():
    """judge_select.jsonl measures judges on text nobody built or tuned one on: its dilemmas
    appear in no other labelled set and in none of the reward model's training sources."""
    import collections
    import json
    from pathlib import Path

    from trainers.preferences import SOURCE_SETS, source_set_path

    items = load_items(Path("benchmarks/data/judge_select.jsonl"))
    assert set(collections.Counter(i["flaw"] for i in items).values()) == {8}
    mine = {i["scenario_id"].split("/")[0] for i in items}
    assert len(mine) == len(items)
    others = set()
    labelled = ("benchmarks/data/judge_quality.jsonl", "benchmarks/data/judge_dev.jsonl")
    for path in [*labelled, *map(source_set_path, SOURCE_SETS)]:  # every reward-model source
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            others.add(json.loads(line)["scenario_id"].split("/")[0])
    assert not mine & others
    assert {i["length"] for i in items} == {"worse-longer", "worse-shorter", "similar"}


def checked_test_split_set(name: str) -> list[dict]:
    """benchmarks/data/NAME.jsonl, checked: 72 items with unique ids, 8 per kind of flaw, every
    scenario's dilemma and persona pair from the test split."""
    import collections
    from pathlib import Path

    items = load_items(Path(f"benchmarks/data/{name}.jsonl"))
    assert set(collections.Counter(i["flaw"] for i in items).values()) == {8}
    assert len(items) == len({i["id"] for i in items}) == 72
    assert {i["scenario"].dilemma.split for i in items} == {"test"}
    assert {i["scenario"].pair.split for i in items} == {"test"}
    return items


def test_the_fresh_set_is_balanced_and_on_test_split_scenarios_only():
    """judge_fresh.jsonl: another writers' set, kept for confirming a choice of judge; on
    test-split scenarios, which no training or tuning step may read."""
    import collections

    items = checked_test_split_set("judge_fresh")
    by_length = collections.Counter(i["length"] for i in items)
    assert min(by_length.values()) >= 20, by_length


# The labelled sets in the order they were written; each later one uses no earlier scenario.
LABELLED_SETS = (
    "judge_quality",
    "judge_dev",
    "judge_select",
    "judge_fresh",
    "judge_reserve",
    "judge_sixth",
    "judge_seventh",
    "judge_eighth",
)


def assert_balanced_on_scenarios_of_its_own(name: str) -> None:
    """benchmarks/data/NAME.jsonl passes checked_test_split_set, holds each length relation 24
    times, and uses no scenario of the labelled sets written before it."""
    import collections
    from pathlib import Path

    items = checked_test_split_set(name)
    assert set(collections.Counter(i["length"] for i in items).values()) == {24}
    others = {
        item["scenario_id"]
        for other in LABELLED_SETS[: LABELLED_SETS.index(name)]
        for item in load_items(Path(f"benchmarks/data/{other}.jsonl"))
    }
    assert not {i["scenario_id"] for i in items} & others


def test_the_reserve_set_is_balanced_and_on_scenarios_no_other_judge_set_uses():
    """judge_reserve.jsonl: a fifth writers' set, which decided the choice of docs/results/rm-qwen;
    test-split scenarios only, none of them in another labelled set."""
    assert_balanced_on_scenarios_of_its_own("judge_reserve")


def test_the_sixth_set_is_balanced_and_on_scenarios_no_other_judge_set_uses():
    """judge_sixth.jsonl: a sixth writers' set, kept unscored until it decided one choice of
    judge; test-split scenarios only, none of them in another labelled set."""
    assert_balanced_on_scenarios_of_its_own("judge_sixth")


def test_the_seventh_set_is_balanced_and_on_scenarios_no_other_judge_set_uses():
    """judge_seventh.jsonl: a seventh set by eight more writers, kept unscored until it
    decided one choice of judge; test-split scenarios only, none of them in another labelled
    set."""
    assert_balanced_on_scenarios_of_its_own("judge_seventh")


def test_the_eighth_set_is_balanced_and_on_scenarios_no_other_judge_set_uses():
    """judge_eighth.jsonl: an eighth set by eight more writers, kept unscored for the next
    choice of judge; test-split scenarios only, none of them in another labelled set."""
    assert_balanced_on_scenarios_of_its_own("judge_eighth")
