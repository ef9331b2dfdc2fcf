"""The learning benchmark's statistics and report, on hand-made records."""

import math

import pytest

from benchmarks import learning
from benchmarks.suite import BenchConfig


def test_paired_differences_pair_each_scenario_and_seed_with_the_untrained_policy():
    scores = {
        ("base", 0, "s1"): 2.0,
        ("base", 0, "s2"): 3.0,
        ("trained", 0, "s1"): 2.5,
        ("trained", 0, "s2"): 2.0,
        ("trained", 0, "s3"): 5.0,  # no untrained counterpart: left out
    }
    assert sorted(learning.paired_differences(scores, "trained", "base")) == [-1.0, 0.5]


def test_win_margins_count_ties_half_and_leave_failures_out():
    assert learning.win_margins(["a", "b", "tie", None, "a"]) == [0.5, -0.5, 0.0, 0.5]


def test_an_interval_says_whether_it_excludes_zero():
    assert learning.interval([1.0, 1.2, 0.9, 1.1])["excludes_zero"]
    assert not learning.interval([1.0, -1.0, 0.5, -0.5])["excludes_zero"]
    empty = learning.interval([])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and not empty["excludes_zero"]


def test_verdicts_are_read_from_the_agents_side():
    record = {"agent_a": "x", "agent_b": "y", "preferred": "a"}
    assert learning._from_agent(record, "x") == "a"
    assert learning._from_agent(record, "y") == "b"
    assert learning._from_agent({**record, "preferred": "tie"}, "y") == "tie"


def test_criterion_rates_read_checklists_also_inside_ensembles():
    checklist = {"checklist": {"concrete": {"p": 0.9}, "respectful": {"p": 0.2}}}
    records = [
        {"judgement": {"details": checklist}},
        {"judgement": {"details": {"member_details": [{"model": "rm"}, checklist]}}},
        {"judgement": {"details": {"checklist": {"concrete": {"p": 0.1}}}}},
    ]
    rates = learning.criterion_rates(records)
    assert rates == {"concrete": pytest.approx(2 / 3), "respectful": 0.0}


def test_the_judge_block_reports_the_difference_and_the_win_rate():
    records = [
        {"agent": "base", "seed": 0, "scenario_id": f"s{i}", "ca_score": 2.0} for i in range(6)
    ] + [{"agent": "trained", "seed": 0, "scenario_id": f"s{i}", "ca_score": 3.0} for i in range(6)]
    pairwise = [{"preferred": "a"}] * 5 + [{"preferred": "tie"}]
    block = learning.judge_block(records, pairwise, "trained", "base")
    assert block["ca"]["mean"] == 3.0
    assert (
        block["ca_minus_untrained"]["mean"] == 1.0 and block["ca_minus_untrained"]["excludes_zero"]
    )
    assert block["win_rate_minus_half"]["mean"] == pytest.approx(2.5 / 6)
    assert block["win_rate_minus_half"]["ties"] == 1
    assert "ca_minus_untrained" not in learning.judge_block(records, [], "base", "base")


def test_bench_config_takes_the_training_turn_settings_and_refuses_unknown_ones():
    config = BenchConfig(max_new_tokens=64, env={"turn_word_limit": 40})
    assert config.setting("max_new_tokens") == 64
    assert config.setting("summary_max_new_tokens") == 96  # the quick tier's
    assert config.negotiation_config().turn_word_limit == 40
    assert config.negotiation_config().mode == "evaluation"
    with pytest.raises(ValueError, match="turn_words"):
        BenchConfig(env={"turn_words": 40})
    with pytest.raises(ValueError, match="turn_word_limit"):
        BenchConfig(env={"turn_word_limit": 0})


def _row(policy, difference=None):
    block = {
        "ca": learning.interval([3.0, 3.2]),
        "criteria": {"concrete": 0.5},
        "judge_failures": 0,
    }
    if difference is not None:
        block["ca_minus_untrained"] = learning.interval(difference)
        block["win_rate_minus_half"] = {**learning.interval([0.5, 0.0]), "ties": 1}
    return {
        "policy": policy,
        "spec": policy,
        "agreement_rate": 0.5,
        "rounds_to_agreement": 2.0,
        "tokens_per_dialogue": 300.0,
        "evaluation_judge": block,
        "second_judge": None,
    }


def test_the_report_says_plainly_whether_the_interval_excludes_no_change():
    results = {
        "command": "python -m benchmarks.learning",
        "machine": {
            "processor": "x86_64",
            "cpu_count": 2,
            "torch": "2",
            "torch_threads": 2,
            "python": "3",
        },
        "evaluation_judge": "rm",
        "second_judge": "none",
        "scenarios": ["s1", "s2"],
        "seeds": [0],
        "policies": [
            _row("untrained"),
            _row("self-play", [0.4, 0.5, 0.6]),
            _row("single-agent", [0.4, -0.5, 0.1]),
        ],
    }
    text = learning.markdown(results)
    assert "self-play, evaluation judge (3 paired scenarios): CA +0.500" in text
    assert ": better than the untrained policy; win rate - 0.5 +0.250" in text
    assert "single-agent, evaluation judge (3 paired scenarios): CA" in text
    assert ": not told apart from the untrained policy; win rate" in text
    # a win rate whose interval excludes zero is said so, whatever the CA difference says
    results["policies"][2]["evaluation_judge"]["win_rate_minus_half"] = {
        **learning.interval([0.5, 0.4, 0.3]),
        "ties": 0,
    }
    lines = learning.verdicts(results)
    assert lines[1].endswith(
        "win rate - 0.5 +0.400, 95% CI [+0.300, +0.500]: better than the untrained policy."
    )
    assert "| concrete |" in text and "second judge" not in text.split("Differences")[1]
