"""Reading data files strictly, and writing files without losing data.

:func:`read_jsonl` reads a data file (scenarios, inputs to judge) and rejects, naming the
file, the line and the field, whatever would fail or mislead later: bytes that are not
UTF-8 (a UTF-16 file among them), nesting deeper than Python can parse, duplicate keys
(JSON readers silently keep one of the values), ``NaN`` and ``Infinity`` (not JSON), and
strings with a lone surrogate escape such as ``"\\ud800"`` (no UTF-8 file can hold one,
so writing results would fail at the end of a run).

``write_jsonl`` and :func:`write_text_atomic` replace a file atomically (temporary file,
fsync, rename): a crash leaves the old file or the new one, never half of one.
``append_jsonl`` adds records to a log (episode records, evaluation results) and syncs
them, so finished work survives a kill; a line cut off by a crash is the only thing that
can be lost, and :func:`read_jsonl_records` skips it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
UTF8_MARK = b"\xef\xbb\xbf"


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
    """Yield (line number, object) for each non-blank line of a UTF-8 data file; bad lines
    raise ``error`` (see the module docstring for what counts as bad)."""
    path = Path(path)
    if not path.is_file():
        raise error(path, None, None, "file not found")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1:
                if raw.startswith(UTF16_MARKS):
                    raise error(path, 1, None, "the file is UTF-16; save it as UTF-8")
                raw = raw.removeprefix(UTF8_MARK)  # harmless: some editors write one
            try:
                line = _decoded(raw)
                if not line.strip():
                    continue
                record = _parsed(line)
            except _BadLine as bad:
                raise error(path, line_no, bad.field, bad.message) from None
            yield line_no, record


class _BadLine(Exception):
    def __init__(self, field: str | None, message: str):
        self.field, self.message = field, message


def _decoded(raw: bytes) -> str:
    if b"\x00" in raw:
        column = raw.index(b"\x00") + 1
        raise _BadLine(
            None, f"a NUL byte at byte {column}: the file looks like UTF-16; save it as UTF-8"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        byte = raw[decode_error.start]
        raise _BadLine(
            None,
            f"not valid UTF-8 (byte 0x{byte:02x} at byte {decode_error.start + 1}); "
            "save the file as UTF-8",
        ) from None


class _WithDuplicate(dict):
    """An object that named ``duplicate`` twice, kept until its field is known."""

    duplicate = ""


class _NonFinite:
    """Stands for a ``NaN`` / ``Infinity`` literal until its field is known."""

    def __init__(self, literal: str):
        self.literal = literal


def _marking_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    duplicate = None
    for key, value in pairs:
        if key in record and duplicate is None:
            duplicate = key
        record[key] = value
    if duplicate is None:
        return record
    marked = _WithDuplicate(record)
    marked.duplicate = duplicate
    return marked


def _parsed(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line, object_pairs_hook=_marking_duplicates, parse_constant=_NonFinite)
    except json.JSONDecodeError as decode_error:
        end = len(line.rstrip())
        if decode_error.pos >= end and line.lstrip()[:1] in ("{", "["):
            raise _BadLine(
                None,
                f"not valid JSON: the line ends at column {end} before its record is "
                "closed (a missing '}' or ']', or a string left open)",
            ) from None
        raise _BadLine(
            None, f"not valid JSON ({decode_error.msg} at column {decode_error.colno})"
        ) from None
    except RecursionError:
        raise _BadLine(None, "nested too deeply to read; flatten the record") from None
    if not isinstance(record, dict):
        raise _BadLine(None, f"expected a JSON object, got {type(record).__name__}")
    problem = _first_unwritable(record)
    if problem is not None:
        raise _BadLine(*problem)
    return record


def _first_unwritable(record: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what is wrong) for the first problem, in file order: a key given twice in
    one object, a value that is NaN or infinite, a key or string with a lone surrogate;
    None when there is none."""
    pending: list[tuple[str, Any]] = [("", record)]
    while pending:  # a loop, not recursion: the record may be as deep as json could parse
        where, value = pending.pop()
        if isinstance(value, _WithDuplicate):
            key = _printable(value.duplicate)
            field = f"{where}.{key}" if where else key
            return field, "appears twice in one object (a reader keeps only one); give it once"
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                field = f"{where}.{_printable(key)}" if where else _printable(key)
                if not _encodable(key):
                    return field, "the key holds a lone surrogate escape (\\ud800-\\udfff)"
                pending.append((field, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, str) and not _encodable(value):
            return where, (
                "holds a lone surrogate escape (\\ud800-\\udfff without its pair), which "
                "no UTF-8 file can hold; remove it"
            )
        elif isinstance(value, _NonFinite):
            return where, f"{value.literal} is not a JSON number; write a number or null"
        elif isinstance(value, float) and not math.isfinite(value):
            return where, "a number too large for a float; write a smaller number"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: str) -> str:
    return key if _encodable(key) else ascii(key)[1:-1]


def _lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Replace ``path`` with ``records``, atomically."""
    return write_text_atomic(path, _lines(records))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8), atomically: readers, and a crash, see the
    old file or the new one, never a part of one. Text that cannot be encoded (a lone
    surrogate) raises before anything is replaced."""
    return write_atomic(path, lambda handle: handle.write(text))


def write_atomic(path: str | Path, write: Callable[[TextIO], Any], binary: bool = False) -> Path:
    """Replace ``path`` with what ``write(handle)`` writes to a temporary file beside it,
    then sync and rename it over ``path``; on any error the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = "wb" if binary else "w"
        with os.fdopen(handle, mode, **({} if binary else {"encoding": "utf-8"})) as temp:
            write(temp)
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
