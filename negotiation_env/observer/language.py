"""A small constraint language over the sequence of per-turn features.

A constraint is a formula that must hold at every turn; it is checked when a turn is about
to be added (the candidate turn is "now"). Past-time temporal operators look back over the
dialogue so far:

===========================  =====================================================
``once(F)``                  F held at some turn up to now
``historically(F)``          F held at every turn up to now
``historically(F, k)``       F held at each of the last k turns (false before k turns)
``previously(F)``            F held at the previous turn (false at the first turn)
``within(k, F)``             F held at some of the last k turns
``F since G``                G held at some turn, and F at every turn after it
``count(F)``, ``count(F, k)``  number of turns (of the last k) where F held
``avg(x, k)``, ``max(x, k)``,  aggregate of feature x over the last k turns
``min(x, k)``, ``sum(x, k)``
===========================  =====================================================

Atoms are feature names (``hostility``, ``proposal``...; see features.py), numbers, ``turn``
(the 0-based index of the turn being checked) and ``speaker`` (0 or 1). Comparisons use
``< <= > >= == !=``; a bare number or feature is true when non-zero. Connectives, loosest
first: ``->`` (implies, right-associative), ``or``, ``and``, ``not``. Examples::

    not addresses_judge                               # never address the judge
    turn >= 3 -> once(proposal)                       # a concrete proposal by the 4th turn
    previously(once(proposal)) -> not insult          # no insult once a proposal was made
    not historically(repeats_partner, 3)              # no 3 turns in a row echoing the partner
    avg(hostility, 3) < 0.2                           # moving average of hostility stays low

Errors name the line and column of the offending token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

History = Sequence[dict[str, float]]  # features of turns 0..now, each with "turn" and "speaker"


class ConstraintSyntaxError(ValueError):
    def __init__(self, message: str, source: str, line: int, column: int):
        self.source, self.line, self.column = source, line, column
        super().__init__(f"{source}:{line}:{column}: {message}")


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<op><=|>=|==|!=|->|<|>)|(?P<punct>[(),])|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))"
)
KEYWORDS = {
    "not",
    "and",
    "or",
    "since",
    "once",
    "historically",
    "previously",
    "within",
    "count",
    "avg",
    "max",
    "min",
    "sum",
    "turn",
    "speaker",
    "true",
    "false",
}


@dataclass
class Token:
    kind: str
    text: str
    offset: int


# ---------------------------------------------------------------------------- syntax tree
class Node:
    def value(self, history: History, now: int) -> float:
        raise NotImplementedError

    def holds(self, history: History, now: int) -> bool:
        return bool(self.value(history, now))

    def features(self) -> set[str]:
        return set()


@dataclass
class Number(Node):
    number: float

    def value(self, history, now):
        return self.number


@dataclass
class Feature(Node):
    name: str
    token: Token

    def value(self, history, now):
        return float(history[now].get(self.name, 0.0))

    def features(self):
        return {self.name}


@dataclass
class Not(Node):
    operand: Node

    def value(self, history, now):
        return float(not self.operand.holds(history, now))

    def features(self):
        return self.operand.features()


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node

    def value(self, history, now):
        if self.op == "and":
            return float(self.left.holds(history, now) and self.right.holds(history, now))
        if self.op == "or":
            return float(self.left.holds(history, now) or self.right.holds(history, now))
        if self.op == "->":
            return float(not self.left.holds(history, now) or self.right.holds(history, now))
        if self.op == "since":
            for start in range(now, -1, -1):
                if self.right.holds(history, start):
                    return float(
                        all(self.left.holds(history, t) for t in range(start + 1, now + 1))
                    )
            return 0.0
        left, right = self.left.value(history, now), self.right.value(history, now)
        return float(
            {
                "<": left < right,
                "<=": left <= right,
                ">": left > right,
                ">=": left >= right,
                "==": left == right,
                "!=": left != right,
            }[self.op]
        )

    def features(self):
        return self.left.features() | self.right.features()


@dataclass
class Temporal(Node):
    op: str  # once, historically, previously, within, count
    operand: Node
    window: int | None = None

    def _turns(self, now: int) -> range:
        start = 0 if self.window is None else max(0, now - self.window + 1)
        return range(start, now + 1)

    def value(self, history, now):
        if self.op == "previously":
            return float(now > 0 and self.operand.holds(history, now - 1))
        held = [self.operand.holds(history, t) for t in self._turns(now)]
        if self.op == "once" or self.op == "within":
            return float(any(held))
        if self.op == "historically":
            return float(all(held) and (self.window is None or now + 1 >= self.window))
        return float(sum(held))  # count

    def features(self):
        return self.operand.features()


@dataclass
class Aggregate(Node):
    op: str  # avg, max, min, sum
    feature: Feature
    window: int

    def value(self, history, now):
        values = [
            float(history[t].get(self.feature.name, 0.0))
            for t in range(max(0, now - self.window + 1), now + 1)
        ]
        return {
            "avg": sum(values) / len(values),
            "max": max(values),
            "min": min(values),
            "sum": sum(values),
        }[self.op]

    def features(self):
        return {self.feature.name}


# ---------------------------------------------------------------------------- parser
class Parser:
    """Recursive-descent parser; ``line`` and ``column`` place the text in its file."""

    def __init__(self, text: str, source: str = "<constraint>", line: int = 1, column: int = 1):
        self.text, self.source, self.line, self.column = text, source, line, column
        self.tokens = self._tokenize()
        self.position = 0

    def error(self, message: str, offset: int) -> ConstraintSyntaxError:
        before = self.text[:offset]
        line = self.line + before.count("\n")
        column = (offset - before.rfind("\n")) if "\n" in before else self.column + offset
        return ConstraintSyntaxError(message, self.source, line, column)

    def _tokenize(self) -> list[Token]:
        tokens, offset = [], 0
        while offset < len(self.text):
            match = _TOKEN.match(self.text, offset)
            if not match or match.end() == offset:
                break
            kind = match.lastgroup
            start = match.start(kind)
            if kind == "bad":
                raise self.error(f"unexpected character {match.group(kind)!r}", start)
            tokens.append(Token(kind, match.group(kind), start))
            offset = match.end()
        tokens.append(Token("end", "", len(self.text.rstrip())))
        return tokens

    def peek(self) -> Token:
        return self.tokens[self.position]

    def advance(self) -> Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.advance()
        if token.text != text:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise self.error(f"expected {text!r}, found {found}", token.offset)
        return token

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty constraint", 0)
        node = self.implies()
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"unexpected {token.text!r} after a complete formula", token.offset)
        return node

    def implies(self) -> Node:
        left = self.disjunction()
        if self.peek().text == "->":
            self.advance()
            return Binary("->", left, self.implies())
        return left

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek().text == "or":
            self.advance()
            node = Binary("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.since()
        while self.peek().text == "and":
            self.advance()
            node = Binary("and", node, self.since())
        return node

    def since(self) -> Node:
        node = self.unary()
        if self.peek().text == "since":
            self.advance()
            node = Binary("since", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek().text == "not":
            self.advance()
            return Not(self.unary())
        left = self.term()
        if self.peek().kind == "op" and self.peek().text != "->":
            op = self.advance().text
            return Binary(op, left, self.term())
        return left

    def integer(self) -> int:
        token = self.advance()
        if token.kind != "number" or "." in token.text or int(token.text) < 1:
            raise self.error(
                f"expected a positive whole number of turns, found {token.text or 'the end'!r}",
                token.offset,
            )
        return int(token.text)

    def feature(self) -> Feature:
        token = self.advance()
        if token.kind != "name" or token.text in KEYWORDS:
            raise self.error(
                f"expected a feature name, found {token.text or 'the end'!r}", token.offset
            )
        return Feature(token.text, token)

    def term(self) -> Node:
        token = self.advance()
        if token.kind == "number":
            return Number(float(token.text))
        if token.text == "(":
            node = self.implies()
            self.expect(")")
            return node
        if token.text in ("true", "false"):
            return Number(1.0 if token.text == "true" else 0.0)
        if token.text in ("turn", "speaker"):
            return Feature(token.text, token)
        if token.text in ("once", "previously"):
            self.expect("(")
            node = Temporal(token.text, self.implies())
            self.expect(")")
            return node
        if token.text in ("historically", "count"):
            self.expect("(")
            operand = self.implies()
            window = None
            if self.peek().text == ",":
                self.advance()
                window = self.integer()
            self.expect(")")
            return Temporal(token.text, operand, window)
        if token.text == "within":
            self.expect("(")
            window = self.integer()
            self.expect(",")
            operand = self.implies()
            self.expect(")")
            return Temporal("within", operand, window)
        if token.text in ("avg", "max", "min", "sum"):
            self.expect("(")
            feature = self.feature()
            self.expect(",")
            window = self.integer()
            self.expect(")")
            return Aggregate(token.text, feature, window)
        if token.kind == "name" and token.text not in KEYWORDS:
            return Feature(token.text, token)
        found = "the end" if token.kind == "end" else repr(token.text)
        raise self.error(
            f"expected a feature, number, '(' or a temporal operator, found {found}", token.offset
        )


def parse(text: str, source: str = "<constraint>", line: int = 1, column: int = 1) -> Node:
    return Parser(text, source, line, column).parse()


def check_features(node: Node, known: set[str], parser_source: tuple[str, str, int, int]) -> None:
    """Every feature the formula reads must be one an extractor provides."""
    text, source, line, column = parser_source
    for feature in _feature_nodes(node):
        if feature.name not in known and feature.name not in ("turn", "speaker"):
            raise Parser(text, source, line, column).error(
                f"unknown feature {feature.name!r}; known: {sorted(known)}", feature.token.offset
            )


def _feature_nodes(node: Any) -> list[Feature]:
    if isinstance(node, Feature):
        return [node]
    found = []
    for child in ("operand", "left", "right", "feature"):
        if hasattr(node, child):
            found += _feature_nodes(getattr(node, child))
    return found


def apply_rigidity(node: Node, rigidity: float) -> Node:
    """Scale numeric thresholds compared with features: stricter as rigidity grows.

    ``x < c`` / ``x <= c`` (an upper bound) becomes ``c * (1.5 - r)``; ``x > c`` / ``x >= c``
    (a lower bound) becomes ``c * (0.5 + r)``; at ``r = 0.5`` thresholds stay as written.
    Comparisons with ``turn`` or ``speaker``, and equalities, are left alone.
    """
    if (
        isinstance(node, Binary)
        and node.op in ("<", "<=", ">", ">=")
        and isinstance(node.right, Number)
    ):
        left_names = {f.name for f in _feature_nodes(node.left)}
        if left_names and not left_names & {"turn", "speaker"}:
            factor = (1.5 - rigidity) if node.op in ("<", "<=") else (0.5 + rigidity)
            return Binary(node.op, node.left, Number(node.right.number * factor))
    for child in ("operand", "left", "right"):
        if hasattr(node, child):
            setattr(node, child, apply_rigidity(getattr(node, child), rigidity))
    return node
