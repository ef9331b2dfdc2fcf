"""Near-duplicate detection for dilemmas (shipped, user-supplied or generated).

Two texts are near-duplicates when either their content-word sets overlap heavily (Jaccard
similarity of the non-stopword vocabulary) or they share many word 4-grams (overlap relative
to the shorter text). The first catches paraphrases of the same situation, the second catches
copied sentences inside otherwise different texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from negotiation_env.text import content_words, jaccard, word_ngrams

JACCARD_THRESHOLD = 0.5
NGRAM_THRESHOLD = 0.25
NGRAM_SIZE = 4


@dataclass(frozen=True)
class NearDuplicate:
    first_id: str
    second_id: str
    jaccard: float
    ngram_overlap: float

    def __str__(self) -> str:
        return (
            f"{self.first_id} ~ {self.second_id} (content-word Jaccard {self.jaccard:.2f}, "
            f"{NGRAM_SIZE}-gram overlap {self.ngram_overlap:.2f})"
        )


@dataclass(frozen=True)
class _Features:
    item_id: str
    vocabulary: frozenset[str]
    ngrams: frozenset[tuple[str, ...]]


def _features(item_id: str, text: str) -> _Features:
    return _Features(
        item_id, frozenset(content_words(text)), frozenset(word_ngrams(text, NGRAM_SIZE))
    )


def _compare(a: _Features, b: _Features) -> tuple[float, float]:
    shorter = min(len(a.ngrams), len(b.ngrams))
    overlap = len(a.ngrams & b.ngrams) / shorter if shorter else 0.0
    return jaccard(a.vocabulary, b.vocabulary), overlap


class DuplicateIndex:
    """Texts seen so far; ``match`` finds the first one a new text nearly duplicates."""

    def __init__(
        self,
        jaccard_threshold: float = JACCARD_THRESHOLD,
        ngram_threshold: float = NGRAM_THRESHOLD,
    ) -> None:
        self.jaccard_threshold = jaccard_threshold
        self.ngram_threshold = ngram_threshold
        self._items: list[_Features] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item_id: str, text: str) -> None:
        self._items.append(_features(item_id, text))

    def match(self, item_id: str, text: str) -> NearDuplicate | None:
        candidate = _features(item_id, text)
        for other in self._items:
            similarity, overlap = _compare(candidate, other)
            if similarity > self.jaccard_threshold or overlap > self.ngram_threshold:
                return NearDuplicate(other.item_id, item_id, similarity, overlap)
        return None


def find_near_duplicates(
    items: Iterable[tuple[str, str]],
    jaccard_threshold: float = JACCARD_THRESHOLD,
    ngram_threshold: float = NGRAM_THRESHOLD,
) -> list[NearDuplicate]:
    """All pairs among (id, text) items above either threshold."""
    features = [_features(item_id, text) for item_id, text in items]
    found = []
    for i, first in enumerate(features):
        for second in features[i + 1 :]:
            similarity, overlap = _compare(first, second)
            if similarity > jaccard_threshold or overlap > ngram_threshold:
                found.append(NearDuplicate(first.item_id, second.item_id, similarity, overlap))
    return found
