"""Loading user files: every malformed input is an error naming file, line and field."""

import json

import pytest

from negotiation_env.scenarios import (
    ScenarioBank,
    ScenarioDataError,
    load_dilemmas,
    load_pairs,
    load_personas,
)

GOOD_DILEMMA = {
    "id": "d-1",
    "category": "everyday",
    "title": "A found wallet",
    "text": "Sam finds a wallet with $200 and no ID except a gym card. Should Sam hand it to the gym or the police?",
}
PERSONA_A = {"id": "a", "name": "Alpha", "core_values": ["thrift"], "stance": "You save."}
PERSONA_B = {"id": "b", "name": "Beta", "core_values": ["quality"], "stance": "You build."}


def write(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def error_of(function, *args):
    with pytest.raises(ScenarioDataError) as raised:
        function(*args)
    return raised.value


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.jsonl", [GOOD_DILEMMA, '{"id": "d-2", "category": '])
    error = error_of(load_dilemmas, path)
    assert error.line == 2 and str(path) in str(error) and "not valid JSON" in str(error)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"text": "   "}, "text", "empty"),
        ({"category": "cosmic"}, "category", "not one of"),
        ({"title": 7}, "title", "expected a string"),
        ({"split": "dev"}, "split", "not one of"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_fields_are_named(tmp_path, change, field, words):
    path = write(tmp_path / "d.jsonl", [GOOD_DILEMMA, {**GOOD_DILEMMA, "id": "d-2", **change}])
    error = error_of(load_dilemmas, path)
    assert (error.line, error.field) == (2, field)
    assert words in str(error)


def test_missing_field_is_named(tmp_path):
    record = dict(GOOD_DILEMMA)
    del record["title"]
    error = error_of(load_dilemmas, write(tmp_path / "d.jsonl", [record]))
    assert (error.line, error.field) == (1, "title") and "missing" in str(error)


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write(tmp_path / "d.jsonl", [GOOD_DILEMMA, "", GOOD_DILEMMA])
    error = error_of(load_dilemmas, path)
    assert error.line == 3 and "first defined on line 1" in str(error)


def test_unknown_persona_id_in_pair(tmp_path):
    personas = load_personas(write(tmp_path / "p.jsonl", [PERSONA_A, PERSONA_B]))
    pairs = write(
        tmp_path / "pairs.jsonl",
        [{"id": "x", "tension": "a vs c", "persona_a": "a", "persona_b": "c"}],
    )
    error = error_of(load_pairs, pairs, personas)
    assert error.field == "persona_b" and "unknown persona id 'c'" in str(error)


def test_empty_core_values_rejected(tmp_path):
    path = write(tmp_path / "p.jsonl", [{**PERSONA_A, "core_values": ["ok", " "]}])
    error = error_of(load_personas, path)
    assert error.field == "core_values[1]"


def test_missing_file_is_named(tmp_path):
    error = error_of(load_dilemmas, tmp_path / "nope.jsonl")
    assert "file not found" in str(error)


def test_user_files_drive_the_env(tmp_path):
    import negotiation_env

    dilemmas = write(tmp_path / "d.jsonl", [{**GOOD_DILEMMA, "split": "test"}])
    personas = write(tmp_path / "p.jsonl", [PERSONA_A, PERSONA_B])
    pairs = write(
        tmp_path / "pairs.jsonl",
        [
            {
                "id": "ab",
                "tension": "thrift vs quality",
                "persona_a": "a",
                "persona_b": "b",
                "split": "test",
            }
        ],
    )
    bank = ScenarioBank.from_files(dilemmas, personas, pairs)
    env = negotiation_env.raw_env(scenarios=bank, split="test")
    env.reset(seed=0)
    assert env.negotiation.scenario.id == "d-1/ab"
    with pytest.raises(ValueError, match="no dilemmas in split 'train'"):
        env.reset(options={"split": "train"})
