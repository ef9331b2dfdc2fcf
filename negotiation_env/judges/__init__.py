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
)
from negotiation_env.judges.rule_based import KeywordRubricJudge, MarkerAgreementDetector

__all__ = [
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
]
