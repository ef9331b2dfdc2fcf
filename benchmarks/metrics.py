"""Metric computations of the benchmark suite, on plain records (tested on hand-made ones).

An *episode record* (one negotiated, or directly answered, scenario) has at least
``agent``, ``scenario_id``, ``seed``, ``decoding``, ``agreement``, ``rounds_to_agreement``,
``generated_tokens`` and ``ca_score`` (None when the judge failed). A *pairwise record*
compares two agents' resolutions of the same scenario (same seed and decoding) and has
``agent_a``, ``agent_b``, ``criterion`` and ``preferred`` ("a", "b", "tie" or None when the
judge failed): the judge's position-free verdict (an LLM judge averages the two orders'
probabilities; see :mod:`negotiation_env.judges.pairwise`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    if not values:
        return (math.nan, math.nan)
    data = np.asarray(values, dtype=float)
    if len(data) == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def sign_flip_p_value(
    differences: Sequence[float], resamples: int = 100_000, seed: int = 0
) -> float:
    """Two-sided p-value of "the mean paired difference is zero" by a sign-flip permutation
    test: under no effect each difference is as likely to have the other sign, so the observed
    |mean| is compared with the |mean| of every assignment of signs (all 2^n of them up to
    n = 16, else ``resamples`` random ones). Unlike a percentile bootstrap interval it does not
    run liberal on few scenarios. Differences of zero carry no information either way."""
    data = np.asarray([d for d in differences if d != 0], dtype=float)
    if len(data) == 0:
        return 1.0
    observed = abs(data.mean()) - 1e-12  # a tolerance for float ties with the observed mean

    def extreme(signs: np.ndarray) -> np.ndarray:
        return np.abs((signs * data).mean(axis=1)) >= observed

    count = len(data)
    if count <= 16:  # exact: every sign pattern
        signs = 1 - 2 * ((np.arange(2**count)[:, None] >> np.arange(count)) & 1)
        return float(extreme(signs).mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, count))
    return float((extreme(signs).sum() + 1) / (resamples + 1))


def mean_with_interval(values: Sequence[float]) -> dict[str, Any]:
    low, high = bootstrap_interval(values)
    return {
        "mean": statistics.fmean(values) if values else math.nan,
        "ci95": [low, high],
        "n": len(values),
    }


def score_summary(records: Iterable[dict[str, Any]], field: str = "ca_score") -> dict[str, Any]:
    """Mean score with a 95% bootstrap interval; judge failures are counted, not scored 0."""
    records = list(records)
    scores = [r[field] for r in records if r.get(field) is not None]
    return {**mean_with_interval(scores), "judge_failures": len(records) - len(scores)}


def efficiency(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Agreement rate, mean rounds to agreement (agreed episodes only) and tokens per dialogue."""
    records = list(records)
    agreed = [r for r in records if r.get("agreement")]
    rounds = [r["rounds_to_agreement"] for r in agreed if r.get("rounds_to_agreement") is not None]
    tokens = [r["generated_tokens"] for r in records if r.get("generated_tokens") is not None]
    return {
        "episodes": len(records),
        "agreement_rate": len(agreed) / len(records) if records else math.nan,
        "rounds_to_agreement": statistics.fmean(rounds) if rounds else math.nan,
        "tokens_per_dialogue": statistics.fmean(tokens) if tokens else math.nan,
    }


def win_rates(
    pairwise: Iterable[dict[str, Any]], agent: str, opponent: str, criterion: str
) -> dict[str, Any]:
    """How often ``agent`` beat ``opponent`` on ``criterion``, by the judge's pairwise verdicts
    (position-free: see ``negotiation_env.judges.pairwise``).

    Returns wins, losses, ties (verdicts inside the judge's tie band), failures and
    ``win_rate = wins / judged`` (ties count as non-wins and are reported, not hidden).
    """
    wins = losses = ties = failures = 0
    for record in pairwise:
        if record["criterion"] != criterion or {record["agent_a"], record["agent_b"]} != {
            agent,
            opponent,
        }:
            continue
        preferred = record["preferred"]
        if preferred is None:
            failures += 1
            continue
        if preferred == "tie":
            ties += 1
            continue
        winner = record["agent_a"] if preferred == "a" else record["agent_b"]
        if winner == agent:
            wins += 1
        else:
            losses += 1
    judged = wins + losses + ties
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "judge_failures": failures,
        "judged": judged,
        "win_rate": wins / judged if judged else math.nan,
        "loss_rate": losses / judged if judged else math.nan,
        "tie_rate": ties / judged if judged else math.nan,
    }


def win_rate_matrix(
    pairwise: Sequence[dict[str, Any]], agents: Sequence[str], criterion: str
) -> list[list[float]]:
    """``matrix[i][j]`` = win rate of agent i against agent j (NaN on the diagonal or without data)."""
    return [
        [math.nan if a == b else win_rates(pairwise, a, b, criterion)["win_rate"] for b in agents]
        for a in agents
    ]


def perplexity(token_logprobs: Iterable[Sequence[float]]) -> float:
    """exp of the mean negative log-likelihood over all tokens of all passages."""
    total, count = 0.0, 0
    for values in token_logprobs:
        total -= sum(values)
        count += len(values)
    return math.exp(total / count) if count else math.nan
