"""Benchmark metrics on hand-made records with known answers."""

import math

import pytest

from benchmarks.metrics import (
    bootstrap_interval,
    efficiency,
    perplexity,
    score_summary,
    win_rate_matrix,
    win_rates,
)


def pair(a, b, preferred, criterion="ca"):
    return {"agent_a": a, "agent_b": b, "preferred": preferred, "criterion": criterion}


def test_a_win_counts_only_when_both_orders_agree():
    records = [
        pair("x", "y", "a"),
        pair("x", "y", "tie"),
        pair("y", "x", "a"),
        pair("x", "y", "b"),
        pair("x", "y", None),
        pair("x", "y", "a", criterion="conflict"),
    ]
    result = win_rates(records, "x", "y", "ca")
    assert (result["wins"], result["losses"], result["ties"], result["judge_failures"]) == (
        1,
        2,
        1,
        1,
    )
    assert result["win_rate"] == pytest.approx(0.25) and result["tie_rate"] == pytest.approx(0.25)
    mirror = win_rates(records, "y", "x", "ca")
    assert (mirror["wins"], mirror["losses"]) == (2, 1)
    assert win_rates(records, "x", "y", "conflict")["win_rate"] == 1.0


def test_win_rate_matrix_is_nan_on_the_diagonal_and_without_data():
    matrix = win_rate_matrix([pair("x", "y", "a")], ["x", "y", "z"], "ca")
    assert (
        math.isnan(matrix[0][0])
        and matrix[0][1] == 1.0
        and matrix[1][0] == 0.0
        and math.isnan(matrix[0][2])
    )


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    values = [1.0, 2.0, 2.5, 3.0, 4.5, 5.0, 0.5, 3.5]
    low, high = bootstrap_interval(values)
    mean = sum(values) / len(values)
    assert low < mean < high
    wide = bootstrap_interval(values[:4])
    narrow = bootstrap_interval(values * 25)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert bootstrap_interval([2.0]) == (2.0, 2.0) and all(
        math.isnan(v) for v in bootstrap_interval([])
    )


def test_score_summary_counts_judge_failures_instead_of_scoring_zero():
    summary = score_summary([{"ca_score": 4.0}, {"ca_score": None}, {"ca_score": 2.0}])
    assert summary["mean"] == 3.0 and summary["n"] == 2 and summary["judge_failures"] == 1


def test_efficiency_averages_rounds_over_agreed_episodes_only():
    records = [
        {"agreement": True, "rounds_to_agreement": 2, "generated_tokens": 100},
        {"agreement": True, "rounds_to_agreement": 4, "generated_tokens": 300},
        {"agreement": False, "rounds_to_agreement": None, "generated_tokens": 500},
    ]
    result = efficiency(records)
    assert result["agreement_rate"] == pytest.approx(2 / 3)
    assert result["rounds_to_agreement"] == 3 and result["tokens_per_dialogue"] == 300


def test_perplexity_of_known_log_probabilities():
    assert perplexity([[math.log(0.5)] * 4]) == pytest.approx(2.0)
    assert perplexity([[math.log(0.25)], [math.log(0.25)] * 3]) == pytest.approx(4.0)
