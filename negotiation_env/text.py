"""Small text utilities shared by the scenario checks, the rubric stand-in and the agents."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

STOPWORDS = frozenset(
    """a an the and or nor of to in on for with at by from is are be been being was were it its
    this that these those as has have had having will would should could can may might must shall
    their they them he she his her hers him you your yours we our ours i my me mine not no but if so
    do does did doing than then who whom whose which what when where why how into about over under
    after before up down out off also just only very more most some any each all both either neither
    there here own same such too s t one two""".split()
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes)."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    """The set of words in ``text`` that are not stopwords."""
    return {w for w in words(text) if w not in STOPWORDS}


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def count_words(text: str) -> int:
    return len(text.split())
