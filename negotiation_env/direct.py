"""The direct-answer prompt: one turn in which a model resolves a dilemma for both parties,
with no negotiation. The single-agent baseline trains on it (``trainers.single_agent``) and
the evaluation suite asks it of every LLM agent (``benchmarks.suite``), so both read the same
words."""

from __future__ import annotations

from negotiation_env.scenarios import Scenario

DIRECT_SYSTEM = (
    "You are a wise advisor. Two parties with different core values face the dilemma below. "
    "Write the resolution you recommend: the decision and the concrete steps (who does what, "
    "and when), fair to the core values of both parties, in at most {words} words. Write only "
    "the resolution, as one plain paragraph."
)


def direct_messages(scenario: Scenario, words: int = 180) -> list[dict[str, str]]:
    """The single-agent prompt: the dilemma and both parties, answered in one turn."""
    a, b = scenario.personas
    user = (
        f"Dilemma: {scenario.dilemma.title}\n{scenario.dilemma.text}\n\n"
        f"Party A: {a.name} (core values: {', '.join(a.core_values)})\n"
        f"Party B: {b.name} (core values: {', '.join(b.core_values)})"
    )
    return [
        {"role": "system", "content": DIRECT_SYSTEM.format(words=words)},
        {"role": "user", "content": user},
    ]
