"""Judges: the reward (resolution quality) and the agreement detector of an episode."""

from negotiation_env.judges.base import (
    AgreementDecision,
    AgreementDetector,
    AgreementRequest,
    Judge,
    Judgement,
    JudgeRequest,
    as_agreement_detector,
    as_judge,
    judge_safely,
)
from negotiation_env.judges.rule_based import KeywordRubricJudge, MarkerAgreementDetector


def default_components(judge=None, agreement_detector=None, marker: str = "[AGREE]"):
    """(judge, agreement detector) as batched objects; None means the deterministic defaults
    (the rubric stand-in and the explicit-marker detector)."""
    return (
        as_judge(judge) if judge is not None else KeywordRubricJudge(),
        as_agreement_detector(agreement_detector)
        if agreement_detector is not None
        else MarkerAgreementDetector(marker),
    )


__all__ = [
    "default_components",
    "AgreementDecision",
    "AgreementDetector",
    "AgreementRequest",
    "Judge",
    "JudgeRequest",
    "Judgement",
    "KeywordRubricJudge",
    "MarkerAgreementDetector",
    "as_agreement_detector",
    "as_judge",
    "judge_safely",
]
