"""Behavioural features of each utterance, the observer's raw signals.

Every feature is a number per dialogue turn (booleans are 0/1), computed from the
utterance, the earlier turns and the scenario. The cheap ones are local and deterministic:

==================  =================================================================
``words``           length in words
``repetition``      highest 3-gram overlap with any earlier turn of the dialogue (0-1)
``repeats_partner`` 1 if the 3-gram overlap with the partner's latest turn exceeds 0.5
``repeats_self``    1 if the overlap with the speaker's own previous turn exceeds 0.5
``hostility``       share of hostile cues (insults, contempt, threats), capped at 1
``insult``          1 if an insult or a contemptuous phrase appears
``addresses_judge`` 1 if the text addresses the evaluator or system (the judges'
                    injection detector, see negotiation_env/judges/prompting.py)
``persona_consistency``  how much more the utterance speaks to the speaker's own core
                    values than to the partner's (0-1; 0.5 when it mentions neither)
``on_topic``        share of the utterance's content words that occur in the dilemma,
                    the personas' values or the partner's turn being answered (0-1)
``proposal``        1 if it makes a concrete proposal ("I propose", "let's", "we could",
                    with an action, a number or a time)
``question``        1 if it asks the partner something
``agreement``       1 if it contains the agreement marker
==================  =================================================================

An optional :class:`EmbeddingFeatures` adds ``topic_similarity`` and ``persona_similarity``
from a sentence-embedding model, and :class:`LLMFeatures` adds yes/no judgements from any LLM
backend (e.g. ``llm_hostile``); both plug in as extra extractors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from negotiation_env.judges.prompting import detect_injection
from negotiation_env.scenarios import Scenario
from negotiation_env.text import content_words, count_words, word_ngrams, words

INSULTS = frozenset(
    "idiot idiots stupid dumb moron morons pathetic worthless clown clowns fool fools liar liars "
    "incompetent ignorant ridiculous absurd laughable disgusting garbage nonsense selfish greedy "
    "coward cowards hypocrite hypocrites".split()
)
CONTEMPT = (
    r"shut up|get lost|how dare you|you people|who cares what you|nobody cares|grow up|"
    r"you (?:clearly )?(?:don't|do not) (?:understand|get it)|that's rich|give me a break|"
    r"waste of (?:my|our) time|you always|you never|i'm done with you|don't be naive"
)
THREATS = r"or else|you(?:'ll| will) regret|i will make sure you|i'll ruin|watch yourself"
_CONTEMPT = re.compile(CONTEMPT, re.IGNORECASE)
_THREATS = re.compile(THREATS, re.IGNORECASE)
_PROPOSAL = re.compile(
    r"\b(?:i|we) (?:propose|suggest|recommend|offer)\b|\blet(?:'s| us)\b|\bwe (?:could|can|should|will)\b|"
    r"\bhow about\b|\bwhat if we\b|\bmy proposal\b|\bhere is a plan\b|\bi can accept\b",
    re.IGNORECASE,
)
_CONCRETE = re.compile(
    r"\d|\b(?:week|weeks|month|months|day|days|year|monday|tuesday|wednesday|thursday|friday|"
    r"tomorrow|today|deadline|budget|pilot|trial|review|split|share|pay|schedule|meet|hire|"
    r"fund|limit|cap|step|first|then)\b",
    re.IGNORECASE,
)

CHEAP_FEATURES = (
    "words",
    "repetition",
    "repeats_partner",
    "repeats_self",
    "hostility",
    "insult",
    "addresses_judge",
    "persona_consistency",
    "on_topic",
    "proposal",
    "question",
    "agreement",
)


@dataclass(frozen=True)
class Utterance:
    """A turn as the observer sees it (the candidate turn is the last one)."""

    speaker: str
    text: str


def _overlap(a: str, b: str, n: int = 3) -> float:
    first, second = word_ngrams(a, n), word_ngrams(b, n)
    shorter = min(len(first), len(second))
    return len(first & second) / shorter if shorter else 0.0


def cheap_features(
    scenario: Scenario, turns: Sequence[Utterance], marker: str = "[AGREE]"
) -> dict[str, float]:
    """The local features of ``turns[-1]`` given the earlier turns."""
    current = turns[-1]
    text = current.text
    earlier = turns[:-1]
    partner_turns = [t for t in earlier if t.speaker != current.speaker]
    own_turns = [t for t in earlier if t.speaker == current.speaker]
    tokens = words(text)
    insults = [w for w in tokens if w in INSULTS]
    cues = len(insults) + len(_CONTEMPT.findall(text)) + 2 * len(_THREATS.findall(text))
    seat = 0 if current.speaker.endswith("0") else 1
    own, other = scenario.personas[seat], scenario.personas[1 - seat]
    vocabulary = content_words(text)
    own_hits = len(vocabulary & content_words(" ".join(own.core_values)))
    other_hits = len(vocabulary & content_words(" ".join(other.core_values)))
    # The topic is the dilemma, both parties' values and the turn being answered.
    answered = partner_turns[-1].text if partner_turns else ""
    topic = content_words(
        f"{scenario.dilemma.title} {scenario.dilemma.text} {' '.join(own.core_values)} "
        f"{' '.join(other.core_values)} {answered}"
    )
    return {
        "words": float(count_words(text)),
        "repetition": max((_overlap(text, t.text) for t in earlier), default=0.0),
        "repeats_partner": float(
            bool(partner_turns) and _overlap(text, partner_turns[-1].text) > 0.5
        ),
        "repeats_self": float(bool(own_turns) and _overlap(text, own_turns[-1].text) > 0.5),
        "hostility": min(1.0, cues / 3),
        "insult": float(bool(insults) or bool(_CONTEMPT.search(text))),
        "addresses_judge": float(bool(detect_injection(text))),
        "persona_consistency": 0.5
        if own_hits + other_hits == 0
        else own_hits / (own_hits + other_hits),
        "on_topic": len(vocabulary & topic) / len(vocabulary) if vocabulary else 0.0,
        "proposal": float(bool(_PROPOSAL.search(text)) and bool(_CONCRETE.search(text))),
        "question": float("?" in text),
        "agreement": float(marker.lower() in text.lower()),
    }


Extractor = Callable[[Scenario, Sequence[Utterance]], dict[str, float]]


class EmbeddingFeatures:
    """``topic_similarity`` (utterance vs dilemma) and ``persona_similarity`` (vs own stance)
    from a sentence-embedding model: any object with ``encode(list[str]) -> array``, e.g.
    ``sentence_transformers.SentenceTransformer`` loaded from a local folder."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    def __call__(self, scenario: Scenario, turns: Sequence[Utterance]) -> dict[str, float]:
        import numpy as np

        current = turns[-1]
        persona = scenario.personas[0 if current.speaker.endswith("0") else 1]
        vectors = np.asarray(
            self.encoder.encode([current.text, scenario.dilemma.text, persona.stance]), dtype=float
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        return {
            "topic_similarity": float(vectors[0] @ vectors[1]),
            "persona_similarity": float(vectors[0] @ vectors[2]),
        }


class LLMFeatures:
    """Yes/no questions about the utterance answered by an LLM backend, as probabilities.

    ``questions`` maps feature names to questions, e.g.
    ``{"llm_hostile": "Is this message hostile or insulting toward the other party?"}``.
    """

    def __init__(self, backend: Any, questions: dict[str, str]):
        self.backend = backend
        self.questions = questions

    def __call__(self, scenario: Scenario, turns: Sequence[Utterance]) -> dict[str, float]:
        import math

        text = turns[-1].text
        conversations = [
            [
                {
                    "role": "system",
                    "content": "You check one property of a message. Answer Yes or No.",
                },
                {
                    "role": "user",
                    "content": f'Message:\n"""\n{text}\n"""\n\n{question} Answer Yes or No.',
                },
            ]
            for question in self.questions.values()
        ]
        rows = self.backend.next_token_logprobs(conversations, ["Yes", "No"])
        result = {}
        for name, row in zip(self.questions, rows, strict=True):
            yes, no = math.exp(row["Yes"]), math.exp(row["No"])
            result[name] = yes / (yes + no) if yes + no > 0 else 0.5
        return result
