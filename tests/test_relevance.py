"""The off-topic gate: the threshold fit, the relevance of real text under the real model,
and the reward-model judge that uses it."""

from __future__ import annotations

import math

import pytest

from llm.specs import SpecError
from negotiation_env.judges.base import JudgeRequest
from negotiation_env.judges.pairwise import PairwiseRequest
from negotiation_env.judges.relevance import FITTED_THRESHOLDS, RelevanceGate
from negotiation_env.judges.reward_model import RewardModelJudge
from negotiation_env.judges.specs import load_judge
from trainers.relevance_gate import threshold_for

VIAL = (
    "The physician gives the vial to the farmer now, since his damage is certain, and the "
    "clinic watches the child every 30 minutes with an ambulance on standby. The district "
    "pays a courier to bring a second vial from the regional hospital tonight, and next "
    "month both sides review stock levels so one delay never leaves a single vial again."
)
ELSEWHERE = (
    "The band rehearses on weekdays until eight, the neighbours get the schedule by email, "
    "and the landlord pays for foam panels on the shared wall; after a month the tenants' "
    "meeting checks whether the noise complaints have stopped."
)


def test_the_threshold_gates_at_most_the_allowed_share_of_good_texts():
    good = [float(v) for v in range(1, 11)]
    # 20% of ten texts: the two least relevant are gated, the third is not
    threshold = threshold_for(good, 0.2)
    assert threshold == pytest.approx(2.5)
    assert sum(v < threshold for v in good) == 2


def test_equal_relevances_are_gated_together_or_not_at_all():
    assert sum(v < threshold_for([1.0, 1.0, 1.0, 2.0], 0.5) for v in (1.0, 1.0, 1.0, 2.0)) == 0
    assert threshold_for([1.0, 2.0], 0.0) < 1.0
    with pytest.raises(ValueError, match="good-gated share"):
        threshold_for([1.0], 1.0)


@pytest.fixture(scope="module")
def gate():
    return RelevanceGate.load("smollm2")


@pytest.mark.slow
def test_a_resolution_of_another_dilemma_is_less_relevant_and_gated(gate, scenario):
    on_topic, off_topic = gate.relevance(
        [JudgeRequest(scenario, VIAL), JudgeRequest(scenario, ELSEWHERE)]
    )
    assert on_topic > off_topic
    assert not gate.off_topic(on_topic) and gate.off_topic(off_topic)
    hits = gate.cache.hits
    assert gate.relevance([JudgeRequest(scenario, ELSEWHERE)]) == [off_topic]
    assert gate.cache.hits == hits + 2  # both prompts' scores came from the cache


class ConstantScorer:
    """Test double for a reward-model backend: every conversation gets the same reward, so
    whatever separates two texts comes from the judge's penalties alone."""

    name = "constant"
    calibration = {"center": 0.0, "scale": 1.0}

    def score(self, conversations):
        return [0.0 for _ in conversations]


@pytest.mark.slow
def test_the_gated_judge_marks_the_off_topic_text_down_by_its_penalty(gate, scenario):
    judge = RewardModelJudge(ConstantScorer(), relevance=gate, off_topic_penalty=2.0)
    on_topic, off_topic = judge.score_batch(
        [JudgeRequest(scenario, VIAL), JudgeRequest(scenario, ELSEWHERE)]
    )
    assert on_topic.score == pytest.approx(2.5)
    assert off_topic.details["off_topic"] and not on_topic.details["off_topic"]
    assert off_topic.details["relevance"] < on_topic.details["relevance"]
    # 2 points in reward units near the middle of the scale: 5 * sigmoid(-1.6)
    assert off_topic.score == pytest.approx(5 / (1 + math.exp(1.6)), abs=1e-3)
    verdict = judge.compare_batch([PairwiseRequest(scenario, ELSEWHERE, VIAL)])[0]
    assert verdict.preferred == "b"
    ungated = RewardModelJudge(ConstantScorer()).score_batch([JudgeRequest(scenario, ELSEWHERE)])
    assert ungated[0].score == pytest.approx(2.5) and "relevance" not in ungated[0].details


def test_gate_options_without_a_gate_are_refused():
    with pytest.raises(SpecError, match="need relevance=MODEL"):
        load_judge("rm?relevance_threshold=0.1")
    with pytest.raises(SpecError, match="off_topic_penalty"):
        load_judge("rm?off_topic_penalty=3")


def test_a_gate_model_without_a_fitted_threshold_is_refused():
    assert "qwen2.5-coder-0.5b" not in FITTED_THRESHOLDS
    with pytest.raises(SpecError, match="no fitted threshold for 'qwen2.5-coder-0.5b'"):
        load_judge("rm?relevance=qwen2.5-coder-0.5b")


@pytest.mark.slow
def test_the_gate_spec_builds_the_fitted_gate():
    judge = load_judge("rm?relevance=smollm2&off_topic_penalty=1.5")
    assert judge.relevance.threshold == FITTED_THRESHOLDS["smollm2"]
    assert judge.off_topic_penalty == 1.5
    assert "relevance:hf:smollm2" in judge.name
    assert load_judge("rm?relevance=none").relevance is None


@pytest.mark.slow
def test_the_fit_command_writes_its_threshold_and_counts(tmp_path):
    import json

    from trainers.preferences import source_set_path
    from trainers.relevance_gate import main

    sources = tmp_path / "sources.jsonl"
    sources.write_text("".join(source_set_path("shipped").read_text().splitlines(True)[:4]))
    cache = tmp_path / "relevance.sqlite"
    arguments = ["--sources", str(sources), "--good-gated", "0.25", "--cache", str(cache)]
    assert main([*arguments, "--out", str(tmp_path / "fit")]) == 0
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert report["good_texts"] == 8  # two per record
    assert report["good_gated"] == 2  # 25% of them
    assert report["off_topic_texts"] > 0
    assert len(report["transfer_between_halves"]) == 2
    # a second fit over the same cache file agrees
    assert main([*arguments, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "fit.json").read_text())
    assert again["threshold"] == report["threshold"]
