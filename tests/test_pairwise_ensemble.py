"""Pairwise verdicts without position bias, and ensembles of judges."""

import math

import pytest

from negotiation_env.judges.base import Judgement, JudgeRequest
from negotiation_env.judges.ensemble import EnsembleJudge
from negotiation_env.judges.pairwise import (
    PairwiseJudgement,
    PairwiseRequest,
    calibration_report,
    combine_orders,
    decide,
    pairwise_from_scores,
)


def test_averaging_both_orders_cancels_a_constant_position_preference():
    # a judge that says "the first one" with 0.9 whatever it is shown
    p_a, preferred, consistent = combine_orders(0.9, 1 - 0.9)
    assert p_a == pytest.approx(0.5) and preferred == "tie" and not consistent
    # a real preference on top of the position bias survives the average
    p_a, preferred, consistent = combine_orders(0.95, 0.45)
    assert p_a == pytest.approx(0.7) and preferred == "a" and not consistent


def test_tie_band_decides_only_outside_it():
    assert decide(0.56, tie_band=0.05) == "a"
    assert decide(0.54, tie_band=0.05) == "tie"
    assert decide(0.40, tie_band=0.05) == "b"
    with pytest.raises(ValueError, match="tie_band"):
        decide(0.6, tie_band=0.5)


def test_pairwise_from_scores_is_symmetric_and_reports_failures():
    a, b = Judgement(4.0, "j"), Judgement(2.0, "j")
    forward, backward, failed = pairwise_from_scores(
        [a, b, b, a, a, Judgement(None, "j", error="no answer")], "j"
    )
    assert forward.preferred == "a" and backward.preferred == "b"
    assert forward.p_a == pytest.approx(1 - backward.p_a)
    assert failed.preferred is None and failed.error == "no answer"


def _pairs_calibrated_at(temperature, levels=(0.1, 0.5, 1.0, 2.0, 3.0, 4.0), n=2000):
    """Logits whose verdicts are right exactly as often as sigmoid(logit / temperature) says:
    at each level, a share of the pairs leans the right way (+level), the rest the wrong way."""
    logits = []
    for level in levels:
        right = round(n / (1 + math.exp(-level / temperature)))
        logits += [level] * right + [-level] * (n - right)
    return logits


def test_calibration_report_recovers_the_temperature_and_the_tie_band_accuracy():
    over = calibration_report(_pairs_calibrated_at(2.0))  # a judge twice too confident
    assert over["fitted_temperature"] == pytest.approx(2.0, rel=0.03)
    assert over["log_loss_fitted"] < over["log_loss"]
    calibrated = calibration_report(_pairs_calibrated_at(1.0))
    assert calibrated["fitted_temperature"] == pytest.approx(1.0, rel=0.03)
    # inside the default band (|P - 0.5| <= 0.05, i.e. |logit| <= 0.2) only the 0.1 level
    band = calibrated["inside_band"]
    assert band["pairs"] == 2000 and band["share"] == pytest.approx(1 / 6, abs=1e-3)
    assert band["accuracy"] == pytest.approx(1 / (1 + math.exp(-0.1)), abs=1e-3)
    assert sum(b["pairs"] for b in calibrated["by_confidence"]) == calibrated["pairs"]
    assert calibrated["by_confidence"][-1]["confidence"] == "0.95-1.00"
    assert calibration_report([0.0, 1.0])["accuracy"] == 0.75  # a zero logit counts half
    with pytest.raises(ValueError, match="at least one"):
        calibration_report([])
    with pytest.raises(ValueError, match="tie_band"):
        calibration_report([1.0], tie_band=0.5)


class FixedJudge:
    """Test double: scores each text by a lookup, optionally failing on some."""

    def __init__(self, name, scores):
        self.name = name
        self.scores = scores

    def score_batch(self, requests):
        return [
            Judgement(self.scores[r.resolution], self.name)
            if self.scores.get(r.resolution) is not None
            else Judgement(None, self.name, error="cannot judge")
            for r in requests
        ]

    def compare_batch(self, requests):
        scored = self.score_batch(
            [
                JudgeRequest(r.scenario, t)
                for r in requests
                for t in (r.resolution_a, r.resolution_b)
            ]
        )
        return pairwise_from_scores(scored, self.name)


def test_ensemble_score_is_the_weighted_mean_and_skips_failed_members(scenario):
    first = FixedJudge("first", {"x": 4.0, "y": 1.0, "z": None})
    second = FixedJudge("second", {"x": 2.0, "y": 3.0, "z": 5.0})
    ensemble = EnsembleJudge([first, second], weights=[3, 1])
    x, y, z = ensemble.score_batch([JudgeRequest(scenario, t) for t in ("x", "y", "z")])
    assert x.score == pytest.approx((3 * 4 + 2) / 4)
    assert y.score == pytest.approx((3 * 1 + 3) / 4)
    assert z.score == 5.0  # the failing member is left out
    assert x.details["members"] == {"first": 4.0, "second": 2.0}
    both_fail = EnsembleJudge([first, FixedJudge("third", {})]).score_batch(
        [JudgeRequest(scenario, "z")]
    )[0]
    assert both_fail.score is None and "every member failed" in both_fail.error


def test_ensemble_pairwise_is_a_majority(scenario):
    judges = [
        FixedJudge("a-fan", {"x": 4.0, "y": 1.0}),
        FixedJudge("b-fan", {"x": 1.0, "y": 4.0}),
        FixedJudge("a-fan-too", {"x": 3.0, "y": 2.0}),
    ]
    verdict = EnsembleJudge(judges).compare_batch([PairwiseRequest(scenario, "x", "y")])[0]
    assert isinstance(verdict, PairwiseJudgement)
    assert verdict.preferred == "a"
    assert verdict.details["members"] == {"a-fan": "a", "b-fan": "b", "a-fan-too": "a"}
    split = EnsembleJudge(judges[:2]).compare_batch([PairwiseRequest(scenario, "x", "y")])[0]
    assert split.preferred == "tie"  # equally sure of opposite sides


def test_without_a_majority_the_mean_probability_decides(scenario):
    sure = FixedJudge("sure-of-a", {"x": 5.0, "y": 0.0})
    unsure = FixedJudge("barely-b", {"x": 2.4, "y": 2.6})
    request = [PairwiseRequest(scenario, "x", "y")]
    members = [judge.compare_batch(request)[0] for judge in (sure, unsure)]
    assert [m.preferred for m in members] == ["a", "b"]
    verdict = EnsembleJudge([sure, unsure]).compare_batch(request)[0]
    assert verdict.p_a == pytest.approx((members[0].p_a + members[1].p_a) / 2)
    assert verdict.p_a > 0.55 and verdict.preferred == "a"


def test_ensemble_needs_two_judges_and_valid_weights():
    judge = FixedJudge("only", {})
    with pytest.raises(ValueError, match="at least two"):
        EnsembleJudge([judge])
    with pytest.raises(ValueError, match="weights"):
        EnsembleJudge([judge, judge], weights=[1, -1])


def test_ensemble_spec_builds_each_member(scenario):
    from agents.specs import AgentSpecError
    from negotiation_env.judges.specs import load_judge, split_ensemble, with_option

    assert split_ensemble("ensemble:checklist+rm") == ["checklist", "rm"]
    assert split_ensemble("checklist") is None
    assert with_option("ensemble:rule+checklist?model=x", "judge_cache", "c.db") == (
        "ensemble:rule+checklist?model=x&judge_cache=c.db"
    )
    with pytest.raises(AgentSpecError, match="two or more"):
        split_ensemble("ensemble:rm")
    ensemble = load_judge("ensemble:rule+rule")
    assert isinstance(ensemble, EnsembleJudge) and len(ensemble.judges) == 2


class LookupScorer:
    """Test double for a reward-model backend: the reward of a conversation is looked up by
    the resolution it ends with."""

    name = "lookup"
    calibration = {"center": 0.0, "scale": 1.0}

    def __init__(self, rewards):
        self.rewards = rewards

    def score(self, conversations):
        return [
            next(v for k, v in self.rewards.items() if k in c[-1]["content"]) for c in conversations
        ]


def test_the_reward_model_judge_decides_ties_with_its_tie_band(scenario):
    from negotiation_env.judges.reward_model import RewardModelJudge

    scorer = LookupScorer({"Plan one.": 0.3, "Plan two.": 0.0})  # P(one better) = 0.574
    request = PairwiseRequest(scenario, "Plan one.", "Plan two.")
    narrow = RewardModelJudge(scorer).compare_batch([request])[0]
    wide = RewardModelJudge(scorer, tie_band=0.1).compare_batch([request])[0]
    assert narrow.p_a == pytest.approx(wide.p_a) == pytest.approx(1 / (1 + math.exp(-0.3)))
    assert (narrow.preferred, wide.preferred) == ("a", "tie")
    with pytest.raises(ValueError, match="tie_band"):
        RewardModelJudge(scorer, tie_band=0.5)
