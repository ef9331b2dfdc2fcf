"""Pairwise verdicts without position bias, and ensembles of judges."""

import pytest

from negotiation_env.judges.base import Judgement, JudgeRequest
from negotiation_env.judges.ensemble import EnsembleJudge
from negotiation_env.judges.pairwise import (
    PairwiseJudgement,
    PairwiseRequest,
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
