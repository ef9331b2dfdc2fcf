"""Writing JSON-lines files without losing data.

``write_jsonl`` replaces a file atomically (temporary file, fsync, rename): a crash leaves
the old file or the new one, never half of one. ``append_jsonl`` adds records to a log
(episode records, evaluation results) and syncs them, so finished work survives a kill;
a line cut off by a crash is the only thing that can be lost, and
:func:`read_jsonl_records` skips it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataFileError(ValueError):
    """A data file is malformed; the message names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


def read_jsonl(
    path: str | Path, error: type[DataFileError] = DataFileError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a data file; bad lines raise ``error``."""
    path = Path(path)
    if not path.is_file():
        raise error(path, None, None, "file not found")
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as decode_error:
                raise error(
                    path,
                    line_no,
                    None,
                    f"not valid JSON ({decode_error.msg} at column {decode_error.colno})",
                ) from None
            if not isinstance(record, dict):
                raise error(
                    path, line_no, None, f"expected a JSON object, got {type(record).__name__}"
                )
            yield line_no, record


def _lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Replace ``path`` with ``records``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            temp.write(_lines(records))
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def append_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Append ``records`` to ``path`` (created if missing) and sync them to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _lines(records)
    with path.open("a+", encoding="utf-8") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                text = "\n" + text  # a previous writer was cut off mid-line
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_jsonl_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a log written by :func:`append_jsonl`.

    A line that does not parse can only be the remains of a write cut off by a crash
    (appends start on a fresh line), so it is skipped with a warning naming its line.
    """
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(
                    f"{path}:{number}: skipped a line cut off by an interrupted write", stacklevel=2
                )
    return records
