"""Writing logs and data files without losing records."""

import json

import pytest

from negotiation_env.jsonl import append_jsonl, read_jsonl_records, write_jsonl


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
