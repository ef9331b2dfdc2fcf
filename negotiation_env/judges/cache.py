"""A content-addressed cache of judgements, so re-evaluations and resumed runs never pay twice.

The key is a SHA-256 of everything that determines the answer: the judge's model name, its
mode, the rubric id, the kind of question and the exact prompt. Entries live in memory and,
when a path is given, in a SQLite file that several processes may share (each write is its
own transaction, so a killed process loses at most the judgement it was writing).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


class JudgeCache:
    """``get(key)`` / ``put(key, value)`` for JSON-serialisable values."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._connection: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, value TEXT)"
            )
            self._connection.commit()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._memory:
                self.hits += 1
                return self._memory[key]
            if self._connection is not None:
                row = self._connection.execute(
                    "SELECT value FROM judgements WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    value = json.loads(row[0])
                    self._memory[key] = value
                    self.hits += 1
                    return value
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._memory[key] = value
            if self._connection is not None:
                self._connection.execute(
                    "INSERT OR REPLACE INTO judgements (key, value) VALUES (?, ?)",
                    (key, json.dumps(value)),
                )
                self._connection.commit()

    def get_or_compute(
        self,
        keys: Sequence[str],
        compute: Callable[[list[int]], Sequence[Any]],
        chunk_size: int = 0,
    ) -> list[Any]:
        """The value of every key: cached ones as they are, the others from
        ``compute(indices)`` (one index per distinct missing key, values in the same order),
        stored as they come; ``chunk_size`` indices at a time when given, so an interrupted run
        keeps what it finished."""
        values = [self.get(key) for key in keys]
        todo = list({keys[i]: i for i, value in enumerate(values) if value is None}.values())
        step = chunk_size or max(len(todo), 1)
        computed: dict[str, Any] = {}
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            for index, value in zip(chunk, compute(chunk), strict=True):
                computed[keys[index]] = value
                self.put(keys[index], value)
        return [
            computed[key] if value is None else value
            for key, value in zip(keys, values, strict=True)
        ]

    def __len__(self) -> int:
        with self._lock:
            if self._connection is not None:
                return self._connection.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
            return len(self._memory)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
