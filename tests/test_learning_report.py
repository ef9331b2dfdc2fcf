"""The learning benchmark's statistics and report, on hand-made records."""

import math
import types

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


def test_several_seeds_of_a_scenario_are_averaged_into_one_paired_difference():
    scores = {
        ("base", 0, "s1"): 2.0,
        ("base", 1, "s1"): 2.0,
        ("trained", 0, "s1"): 3.0,
        ("trained", 1, "s1"): 4.0,
        ("base", 0, "s2"): 1.0,
        ("trained", 0, "s2"): 1.0,
    }
    assert learning.paired_differences(scores, "trained", "base") == [1.5, 0.0]


def _verdicts(*preferred: str | None) -> list[dict]:
    return [{"seed": 0, "scenario_id": f"s{i}", "preferred": p} for i, p in enumerate(preferred)]


def test_win_margins_count_ties_half_and_leave_failures_out():
    assert learning.win_margins(_verdicts("a", "b", "tie", None, "a")) == [0.5, -0.5, 0.0, 0.5]
    two_seeds = _verdicts("a") + [{"seed": 1, "scenario_id": "s0", "preferred": "tie"}]
    assert learning.win_margins(two_seeds) == [0.25]  # one scenario, its seeds averaged


def test_an_interval_says_whether_it_excludes_zero():
    assert learning.interval([1.0, 1.2, 0.9, 1.1])["excludes_zero"]
    assert not learning.interval([1.0, -1.0, 0.5, -0.5])["excludes_zero"]
    empty = learning.interval([])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and not empty["excludes_zero"]


def test_a_difference_needs_the_sign_flip_test_as_well_as_the_interval():
    # Four wins and a tie: the bootstrap interval is [+0.2, +0.5], but with four informative
    # scenarios every sign pattern is 1 in 16: p = 2/16, so no change is established.
    few = learning.interval([0.5, 0.5, 0.5, 0.5, 0.0], differences=True)
    assert few["ci95"][0] > 0 and few["p"] == pytest.approx(0.125)
    assert not few["excludes_zero"]
    six = learning.interval([0.5] * 6, differences=True)
    assert six["p"] == pytest.approx(2 / 64) and six["excludes_zero"]


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
    pairwise = _verdicts("a", "a", "a", "a", "a", "tie")
    block = learning.judge_block(records, pairwise, "trained", "base")
    assert block["ca"]["mean"] == 3.0
    assert (
        block["ca_minus_untrained"]["mean"] == 1.0 and block["ca_minus_untrained"]["excludes_zero"]
    )
    assert block["win_rate_minus_half"]["mean"] == pytest.approx(2.5 / 6)
    assert block["win_rate_minus_half"]["ties"] == 1
    assert block["win_rate_minus_half"]["p"] == pytest.approx(2 / 32)  # five informative
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
        block["ca_minus_untrained"] = learning.interval(difference, differences=True)
        block["win_rate_minus_half"] = {
            **learning.interval([0.5] * 6 + [0.0], differences=True),
            "ties": 1,
        }
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
            _row("self-play", [0.4, 0.5, 0.6, 0.5, 0.5, 0.5]),
            _row("single-agent", [0.4, -0.5, 0.1]),
        ],
    }
    text = learning.markdown(results)
    assert "- self-play, evaluation judge: CA +0.500, 95% CI [+0.450, +0.550], p=0.031 " in text
    assert "(6 scenarios): better than the untrained policy; win rate - 0.5 +0.429" in text
    assert "single-agent, evaluation judge: CA +0.000" in text
    assert "(3 scenarios): not told apart from the untrained policy; win rate" in text
    assert "training reward" not in text
    # a win rate established is said so, whatever the CA difference says
    results["policies"][2]["evaluation_judge"]["win_rate_minus_half"] = {
        **learning.interval([0.5, 0.4, 0.3, 0.5, 0.4, 0.3], differences=True),
        "ties": 0,
    }
    lines = learning.verdicts(results)
    assert lines[1].endswith(
        "win rate - 0.5 +0.400, 95% CI [+0.333, +0.467], p=0.031 (6 scenarios): better than "
        "the untrained policy."
    )
    assert "| concrete |" in text and "second judge" not in text.split("Differences")[1]
    results["evaluation_judge_is_reward"] = True
    assert "(the training reward:" in learning.markdown(results)


def test_an_evaluation_judge_that_is_the_reward_is_recognised_through_default():
    assert learning.same_judge("default", "rm")
    assert learning.same_judge("rm?injection=strip", "default")
    assert not learning.same_judge("checklist", "rm")
    assert not learning.same_judge("default", "smollm2?mode=expected")


class RecordsOnDisk:
    """A test double of the suite for the report: its scenarios, seeds and record files."""

    def __init__(self, scenario_ids, seeds, files):
        from negotiation_env.scenarios import ScenarioBank

        self.scenario_ids = scenario_ids
        self.config = types.SimpleNamespace(seeds=seeds)
        self.files = files
        self.bank = ScenarioBank.default()

    def _records(self, name):
        return list(self.files.get(name, []))


def test_the_report_reads_only_this_runs_scenarios_and_seeds_once_each():
    episode = {"kind": "negotiated", "agent": "x", "decoding": "sampled", "ca_score": 1.0}
    records = [
        {**episode, "seed": 0, "scenario_id": "s1"},
        {**episode, "seed": 0, "scenario_id": "s1", "ca_score": 2.0},  # a repeated append
        {**episode, "seed": 0, "scenario_id": "old"},  # an earlier run's scenario
        {**episode, "seed": 7, "scenario_id": "s2"},  # an earlier run's seed
        {**episode, "kind": "direct", "seed": 0, "scenario_id": "s2"},
    ]
    verdict = {"agent_a": "x", "agent_b": "y", "seed": 0, "decoding": "sampled"}
    pairwise = [
        {**verdict, "scenario_id": "s1", "criterion": "ca", "preferred": "a"},
        {**verdict, "scenario_id": "s1", "criterion": "conflict", "preferred": "b"},
        {**verdict, "scenario_id": "old", "criterion": "ca", "preferred": "b"},
    ]
    suite = RecordsOnDisk(["s1", "s2"], [0], {"records.jsonl": records, "pairwise.jsonl": pairwise})
    kept = learning.run_records(suite, "records.jsonl")
    assert [(r["scenario_id"], r["ca_score"]) for r in kept] == [("s1", 2.0)]
    kept = learning.run_records(suite, "pairwise.jsonl")
    assert [(r["scenario_id"], r["preferred"]) for r in kept] == [("s1", "a")]


def test_second_judge_records_of_another_judge_are_judged_again(tmp_path):
    from negotiation_env.jsonl import append_jsonl, read_jsonl_records
    from negotiation_env.scenarios import ScenarioBank

    scenario = sorted(ScenarioBank.default().scenario_ids("test"))[0]
    episode = {"kind": "negotiated", "seed": 0, "scenario_id": scenario, "decoding": "sampled"}
    records = [
        {**episode, "agent": "base", "resolution": "We agree to share the costs fairly."},
        {**episode, "agent": "trained", "resolution": "You lose."},
    ]
    stale = {"kind": "absolute", "judge": "checklist", "agent": "base", "seed": 0}
    append_jsonl(
        [{**stale, "scenario_id": scenario, "ca_score": 9.9}], tmp_path / "second_judge.jsonl"
    )
    suite = RecordsOnDisk([scenario], [0], {"records.jsonl": records})
    second = learning.second_judging(suite, "keyword", {"untrained": "base"}, tmp_path)
    assert {(r["kind"], r["agent"], r["judge"]) for r in second} == {
        ("absolute", "base", "keyword"),
        ("absolute", "trained", "keyword"),
        ("pairwise", "trained", "keyword"),
    }
    assert all(r.get("ca_score") != 9.9 for r in second)
    assert len(read_jsonl_records(tmp_path / "second_judge.jsonl")) == 4  # nothing lost
