"""What a judge is: the interface between the environment and anything that scores it.

Two questions are asked of judges during an episode:

- *reward*: how good is the final resolution? A :class:`Judge` turns a batch of
  :class:`JudgeRequest` into a batch of :class:`Judgement` (score 0-5, or ``None`` with an
  ``error`` when it could not judge: never a silent 0);
- *agreement*: do the parties agree yet? An :class:`AgreementDetector` turns a batch of
  :class:`AgreementRequest` into :class:`AgreementDecision`.

Both are batched (a list in, a list out) so a trainer can score many envs in one call. A
plain function works too: :func:`as_judge` and :func:`as_agreement_detector` wrap callables
of one item.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from negotiation_env.scenarios import Scenario
from negotiation_env.transcript import Turn


@dataclass(frozen=True)
class JudgeRequest:
    scenario: Scenario
    resolution: str
    transcript: tuple[Turn, ...] = ()


@dataclass
class Judgement:
    """A judge's verdict. ``score`` is None exactly when ``error`` says why."""

    score: float | None
    judge: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "judge": self.judge,
            "details": self.details,
            "error": self.error,
        }


@dataclass(frozen=True)
class AgreementRequest:
    scenario: Scenario
    transcript: tuple[Turn, ...]


@dataclass
class AgreementDecision:
    agreed: bool
    probability: float
    detector: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "agreed": self.agreed,
            "probability": self.probability,
            "detector": self.detector,
            "details": self.details,
        }


@runtime_checkable
class Judge(Protocol):
    name: str

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]: ...


@runtime_checkable
class AgreementDetector(Protocol):
    name: str

    def detect_batch(self, requests: Sequence[AgreementRequest]) -> list[AgreementDecision]: ...


def judge_safely(judge: Judge, requests: Sequence[JudgeRequest]) -> list[Judgement]:
    """``judge.score_batch(requests)``, but a judge that raises or miscounts yields failed
    judgements with the reason (and a warning) instead of losing the episodes."""
    name = getattr(judge, "name", type(judge).__name__)
    if not requests:
        return []
    try:
        results = list(judge.score_batch(requests))
    except Exception as error:  # noqa: BLE001 - a broken judge must not lose the episodes
        warnings.warn(
            f"judge {name} raised {error!r}; episodes recorded as judge_failed", stacklevel=2
        )
        return [
            Judgement(None, name, error=f"judge raised {type(error).__name__}: {error}")
            for _ in requests
        ]
    if len(results) != len(requests):
        message = f"judge returned {len(results)} results for {len(requests)} requests"
        return [Judgement(None, name, error=message) for _ in requests]
    for result in results:
        if result.score is None and not result.error:
            result.error = "judge returned no score and no reason"
    return results


def _callable_name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


def _call_with_request(function: Callable[..., Any], request: Any) -> Any:
    """Call ``function(request)`` or, for 3-argument callables, ``function(scenario, transcript, resolution)``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return function(request)
    positional = [
        p for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if isinstance(request, JudgeRequest) and len(positional) >= 3:
        return function(request.scenario, request.transcript, request.resolution)
    if isinstance(request, AgreementRequest) and len(positional) >= 2:
        return function(request.scenario, request.transcript)
    return function(request)


class _FunctionJudge:
    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.name = _callable_name(function)

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        results = []
        for request in requests:
            value = _call_with_request(self.function, request)
            if isinstance(value, Judgement):
                results.append(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                results.append(Judgement(float(value), self.name))
            else:
                raise TypeError(
                    f"reward function {self.name} returned {type(value).__name__}; "
                    "expected a number or a Judgement"
                )
        return results


class _FunctionDetector:
    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.name = _callable_name(function)

    def detect_batch(self, requests: Sequence[AgreementRequest]) -> list[AgreementDecision]:
        results = []
        for request in requests:
            value = _call_with_request(self.function, request)
            if isinstance(value, AgreementDecision):
                results.append(value)
            elif isinstance(value, bool):
                results.append(AgreementDecision(value, float(value), self.name))
            else:
                raise TypeError(
                    f"agreement detector {self.name} returned {type(value).__name__}; "
                    "expected a bool or an AgreementDecision"
                )
        return results


def as_judge(judge: Judge | Callable[..., Any]) -> Judge:
    """A batched judge from a judge object or a function of one request.

    The function may take ``(request: JudgeRequest)`` or ``(scenario, transcript, resolution)``
    and return a number (0-5) or a :class:`Judgement`.
    """
    if isinstance(judge, Judge):
        return judge
    if callable(judge):
        return _FunctionJudge(judge)
    raise TypeError(f"a judge must have score_batch() or be callable, got {type(judge).__name__}")


def as_agreement_detector(detector: AgreementDetector | Callable[..., Any]) -> AgreementDetector:
    """A batched detector from a detector object or a function ``(scenario, transcript) -> bool``."""
    if isinstance(detector, AgreementDetector):
        return detector
    if callable(detector):
        return _FunctionDetector(detector)
    raise TypeError(
        f"an agreement detector must have detect_batch() or be callable, got {type(detector).__name__}"
    )
