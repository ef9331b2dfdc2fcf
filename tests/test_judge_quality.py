"""The judge-quality benchmark's arithmetic, on hand-made rows (no model)."""

import pytest

from benchmarks.judge_quality import (
    _replace,
    flaw_accuracy,
    load_items,
    per_flaw,
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
