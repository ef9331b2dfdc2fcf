"""Writing logs and data files without losing records."""

import json

import pytest

from negotiation_env.jsonl import (
    DataFileError,
    append_jsonl,
    read_jsonl,
    read_jsonl_records,
    write_atomic,
    write_jsonl,
    write_text_atomic,
)


def test_append_after_a_cut_off_line_keeps_every_complete_record(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl([{"a": 1}], path)
    with path.open("a") as handle:
        handle.write('{"b": ')  # a writer killed mid-line
    with pytest.warns(UserWarning, match="log.jsonl:2"):
        assert read_jsonl_records(path) == [{"a": 1}]
    append_jsonl([{"c": 3}], path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"a": 1} and json.loads(lines[-1]) == {"c": 3}
    with pytest.warns(UserWarning):
        assert read_jsonl_records(path) == [{"a": 1}, {"c": 3}]


def test_write_jsonl_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl([{"x": 1}], path)
    write_jsonl([{"x": 2}, {"x": 3}], path)
    assert read_jsonl_records(path) == [{"x": 2}, {"x": 3}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


# --- reading data files: what later stages could not handle is an error with file:line ---


def read_error(path, data: bytes) -> DataFileError:
    path.write_bytes(data)
    with pytest.raises(DataFileError) as raised:
        list(read_jsonl(path))
    return raised.value


def test_invalid_utf8_names_the_line_and_byte(tmp_path):
    error = read_error(tmp_path / "d.jsonl", b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    assert (error.line, error.field) == (2, None)
    assert str(error).startswith(f"{tmp_path / 'd.jsonl'}:2: not valid UTF-8 (byte 0xe9")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])  # with and without a BOM
def test_a_utf16_file_is_named_as_such(tmp_path, encoding):
    error = read_error(tmp_path / "d.jsonl", '{"a": "ok"}\n'.encode(encoding))
    assert error.line == 1 and "UTF-16; save it as UTF-8" in str(error)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (2, {"a": 2})]


def test_a_missing_closing_brace_is_named_as_such(tmp_path):
    error = read_error(tmp_path / "d.jsonl", b'{"a": 1}\n{"text": "fine", "n": 2\n')
    assert error.line == 2
    assert "ends at column 23 before its record is closed" in str(error)
    assert "missing '}'" in str(error)


def test_deeply_nested_json_is_an_error_not_a_recursion_error(tmp_path):
    depth = 100_000
    data = b'{"a": 1}\n{"deep": ' + b"[" * depth + b"]" * depth + b"}\n"
    error = read_error(tmp_path / "d.jsonl", data)
    assert error.line == 2 and "nested too deeply" in str(error)


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (r'{"text": "a\ud800b"}', "text", "lone surrogate"),
        (r'{"ok": "\ud83d\ude00", "list": ["x", "\udfff"]}', "list[1]", "lone surrogate"),
        (r'{"\udc00": 1}', r"\udc00", "the key holds a lone surrogate"),
        ('{"a": {"b": [1, NaN]}}', "a.b[1]", "NaN is not a JSON number"),
        ('{"score": -Infinity}', "score", "-Infinity is not a JSON number"),
        ('{"score": 1e999}', "score", "too large for a float"),
        ('{"id": "a", "text": "t", "id": "b"}', "id", "appears twice in one object"),
        ('{"source": {"model": "m", "model": "n"}}', "source.model", "appears twice"),
    ],
)
def test_values_json_forbids_or_no_file_can_hold_are_named(tmp_path, line, field, words):
    error = read_error(tmp_path / "d.jsonl", b'{"fine": 1}\n' + line.encode() + b"\n")
    assert (error.line, error.field) == (2, field)
    assert words in str(error)


def test_write_text_atomic_replaces_the_file_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "report.json"
    write_text_atomic(path, "old\n")
    inode = path.stat().st_ino
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and path.stat().st_ino != inode  # renamed in

    def half_then_crash(handle):
        handle.write("half of a rep")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_crash)
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "a lone surrogate \udc80")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
