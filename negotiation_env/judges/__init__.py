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
    """(judge, agreement detector) as batched objects. The judge: see
    :func:`~negotiation_env.judges.specs.judge_from` (None means no judge: resolutions are
    not scored). The detector: None means the explicit-marker rule."""
    from negotiation_env.judges.specs import judge_from

    return (
        judge_from(judge),
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
