"""Scripted baselines: deterministic negotiators that need no model.

They bracket what an LLM negotiator can do and give the benchmark suite fixed reference
points. Each reads only the observation (its own and the partner's core values, the turn,
the phase and the messages) and is deterministic given it; :class:`RandomAgent` draws from
phrase banks with a generator seeded by (seed, scenario, turn), so it too replays exactly.

=============  ==============================================================
``stubborn``   restates its own values every turn, never agrees; its
               resolution favours its own side only
``conceding``  accepts at once (writes the agreement marker every turn); its
               resolution adopts the partner's priorities
``random``     random sentences from phrase banks, agrees with probability
               ``agree_probability`` per turn
``mediator``   proposes a compromise naming both sides' core values, then
               accepts once the partner has answered without hostility; its
               resolution is a concrete, phased plan honouring both
=============  ==============================================================
"""

from __future__ import annotations

import hashlib

import numpy as np

from agents.base import NegotiationAgent, Observation
from negotiation_env.protocol import DEFAULT_AGREEMENT_MARKER as AGREE
from negotiation_env.text import words

_HOSTILE = frozenset("idiot stupid ridiculous pathetic hate worthless absurd nonsense".split())


def _values(observation: Observation, key: str, fallback: str) -> list[str]:
    values = [str(v) for v in observation.get(key) or ()]
    return values or [fallback]


def _last_partner_message(observation: Observation) -> str:
    for message in reversed(observation.get("messages") or ()):
        if message["role"] == "user":
            return message["content"]
    return ""


def _is_summary(observation: Observation) -> bool:
    return observation.get("phase") == "summary"


class StubbornAgent(NegotiationAgent):
    """Never agrees; argues only for its own values."""

    name = "stubborn"
    _lines = (
        "My position is firm: {own} must come first, and I will not trade it away.",
        "I have heard your view, but nothing you said changes the fact that {own} matters most.",
        "I still cannot accept a plan that weakens {own}. We should do it my way.",
        "Let me repeat: {own} is not negotiable for me.",
    )

    def act(self, observation: Observation) -> str:
        own = _values(observation, "own_values", "my priorities")
        if _is_summary(observation):
            return (
                f"Resolution: we follow the approach that protects {own[0]}"
                + (f" and {own[1]}" if len(own) > 1 else "")
                + ". Other concerns are set aside."
            )
        line = self._lines[int(observation.get("turn", 0)) // 2 % len(self._lines)]
        return line.format(own=own[0])


class ConcedingAgent(NegotiationAgent):
    """Accepts whatever the partner proposes, from its first turn on."""

    name = "conceding"

    def act(self, observation: Observation) -> str:
        partner = _values(observation, "partner_values", "your priorities")
        if _is_summary(observation):
            return (
                f"Resolution: we adopt the other side's proposal, putting {partner[0]} first. "
                "I will go along with the plan as they described it."
            )
        if int(observation.get("turn", 0)) == 0:
            return f"I am happy to follow your lead; {partner[0]} sounds right to me. {AGREE}"
        return f"You are right, I accept your proposal as it stands. {AGREE}"


class MediatorAgent(NegotiationAgent):
    """Proposes a compromise naming both sides' core values, then seals it."""

    name = "mediator"

    def act(self, observation: Observation) -> str:
        own = _values(observation, "own_values", "what I care about")
        partner = _values(observation, "partner_values", "what you care about")
        if _is_summary(observation):
            return self._resolution(own, partner)
        turn = int(observation.get("turn", 0))
        proposal = (
            f"I propose a phased plan: we start with a small pilot that protects {own[0]} "
            f"and builds in {partner[0]} from day one, review the results together after "
            f"30 days, and only then decide on the full rollout."
        )
        if turn == 0:
            return f"I care about {own[0]}, and I know {partner[0]} matters to you. {proposal}"
        reply = set(words(_last_partner_message(observation)))
        if turn >= 2 and not reply & _HOSTILE:
            return (
                f"Thank you. With the pilot, the joint review and clear safeguards for both "
                f"{own[0]} and {partner[0]}, I can accept this. {AGREE}"
            )
        return (
            f"I hear your concern about {partner[0]}; it is legitimate. {proposal} "
            f"Would that work for you?"
        )

    @staticmethod
    def _resolution(own: list[str], partner: list[str]) -> str:
        return (
            f"Resolution: both sides agree to a phased plan that honours {own[0]} and "
            f"{partner[0]}. Step 1: a small pilot starts within two weeks, designed so that "
            f"{own[0]} is protected and {partner[0]} is built in from the start. Step 2: after "
            f"30 days both parties review the results together against criteria agreed in "
            f"advance. Step 3: if the pilot meets them, the plan is extended; if not, it is "
            f"adjusted before any wider change. Either side may raise concerns at the review."
        )


class RandomAgent(NegotiationAgent):
    """Random sentences from phrase banks; agrees with probability ``agree_probability``."""

    name = "random"
    _openers = ("Well,", "Honestly,", "Look,", "I think", "From where I stand,", "Fair point, but")
    _claims = (
        "{own} has to be part of any answer",
        "we should not ignore {partner}",
        "the cost of waiting is real",
        "there is a middle ground here",
        "we need more information before deciding",
        "people affected deserve a say",
        "a trial period could help",
        "the simplest option may be best",
    )
    _closers = (
        "What do you think?",
        "Can we build on that?",
        "That is my view.",
        "Let us keep talking.",
    )

    def __init__(self, seed: int = 0, agree_probability: float = 0.2):
        if not 0.0 <= agree_probability <= 1.0:
            raise ValueError(f"agree_probability must be in [0, 1], got {agree_probability}")
        self.seed = seed
        self.agree_probability = agree_probability

    def _rng(self, observation: Observation) -> np.random.Generator:
        key = f"{self.seed}|{observation.get('scenario_id')}|{observation.get('turn')}|{observation.get('phase')}"
        return np.random.default_rng(
            int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
        )

    def act(self, observation: Observation) -> str:
        rng = self._rng(observation)
        own = _values(observation, "own_values", "my priorities")
        partner = _values(observation, "partner_values", "your priorities")
        fill = {
            "own": own[int(rng.integers(len(own)))],
            "partner": partner[int(rng.integers(len(partner)))],
        }
        claims = [
            self._claims[int(i)].format(**fill)
            for i in rng.choice(len(self._claims), 2, replace=False)
        ]
        if _is_summary(observation):
            return f"Resolution: we agree that {claims[0]}, and that {claims[1]}."
        text = (
            f"{self._openers[int(rng.integers(len(self._openers)))]} {claims[0]}, and {claims[1]}. "
            f"{self._closers[int(rng.integers(len(self._closers)))]}"
        )
        if rng.random() < self.agree_probability:
            text += f" {AGREE}"
        return text


SCRIPTED_AGENTS = {
    "stubborn": StubbornAgent,
    "conceding": ConcedingAgent,
    "random": RandomAgent,
    "mediator": MediatorAgent,
}
