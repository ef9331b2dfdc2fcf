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
        ({"text": "Fine.\x1b[2J\x1b[31mFAKE\x1b[0m"}, "text", "control character U+001B"),
        ({"title": "A \x9b31m title"}, "title", "control character U+009B"),
        ({"text": "a\rb"}, "text", "control character U+000D"),
        ({"id": "pro/001"}, "id", "holds '/'"),  # scenario ids could never reach it
        ({"id": "d" * 101}, "id", "101 characters, more than the 100 allowed"),
        ({"id": "d" * 1_000_000}, "id", "more than the 100 allowed"),
        ({"title": "t" * 101}, "title", "more than the 100 allowed"),
        ({"text": "t" * 4001}, "text", "more than the 4000 allowed"),
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


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"core_values": ["ok", "v" * 101]}, "core_values[1]", "more than the 100 allowed"),
        ({"core_values": [f"value {i}" for i in range(11)]}, "core_values", "11 items"),
        ({"name": "Alpha\x07"}, "name", "control character U+0007"),
        ({"stance": "s" * 4001}, "stance", "more than the 4000 allowed"),
        ({"id": "a/b"}, "id", "holds '/'"),
    ],
)
def test_bad_persona_fields_are_named(tmp_path, change, field, words):
    error = error_of(
        load_personas, write(tmp_path / "p.jsonl", [PERSONA_B, {**PERSONA_A, **change}])
    )
    assert (error.line, error.field) == (2, field) and words in str(error)


@pytest.mark.parametrize("tension", ["cost versus quality", "cost vs ", "a vs b vs c"])
def test_a_tension_not_of_the_form_x_vs_y_is_named(tmp_path, tension):
    personas = load_personas(write(tmp_path / "p.jsonl", [PERSONA_A, PERSONA_B]))
    pair = {"id": "x", "tension": tension, "persona_a": "a", "persona_b": "b"}
    error = error_of(load_pairs, write(tmp_path / "pairs.jsonl", [pair]), personas)
    assert error.field == "tension" and "'X vs Y'" in str(error)


def test_a_slash_in_a_pair_id_is_rejected(tmp_path):
    personas = load_personas(write(tmp_path / "p.jsonl", [PERSONA_A, PERSONA_B]))
    pair = {"id": "a/b", "tension": "a vs b", "persona_a": "a", "persona_b": "b"}
    error = error_of(load_pairs, write(tmp_path / "pairs.jsonl", [pair]), personas)
    assert error.field == "id" and "holds '/'" in str(error)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"id": "d-1", "title": "\xff"}\n', "not valid UTF-8"),
        ('{"id": "d-1"}\n'.encode("utf-16"), "UTF-16"),
        (b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested too deeply"),
        (b'{"id": "d-1", "text": "\\udfff"}\n', "lone surrogate"),
    ],
)
def test_unreadable_files_are_one_line_errors_on_the_command_line(tmp_path, capsys, data, words):
    from negotiate.cli import main

    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    assert main(["scenarios", "validate", "--dilemmas", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"negotiate scenarios: error: {path}:1: ") and words in error
    assert len(error.strip().splitlines()) == 1


def test_every_field_at_its_bound_keeps_observations_in_the_declared_space(tmp_path):
    import negotiation_env
    from negotiation_env.scenarios import records

    long_text = "Ünïcødé text, \t with\n lines. " * 200
    dilemma = {
        "id": "d" * records.MAX_ID_CHARS,
        "category": "everyday",
        "title": "T" * records.MAX_NAME_CHARS,
        "text": long_text[: records.MAX_TEXT_CHARS].strip(),
        "split": "test",
    }
    personas = [
        {
            "id": side * records.MAX_ID_CHARS,
            "name": side.upper() * records.MAX_NAME_CHARS,
            "core_values": [side * records.MAX_VALUE_CHARS] * records.MAX_VALUES,
            "stance": long_text[: records.MAX_TEXT_CHARS].strip(),
        }
        for side in "ab"
    ]
    pair = {
        "id": "p" * records.MAX_ID_CHARS,
        # the longest tension allowed, in the 'X vs Y' form
        "tension": "x" * ((records.MAX_NAME_CHARS - 4) // 2)
        + " vs "
        + "y" * (records.MAX_NAME_CHARS - 4 - (records.MAX_NAME_CHARS - 4) // 2),
        "persona_a": "a" * records.MAX_ID_CHARS,
        "persona_b": "b" * records.MAX_ID_CHARS,
        "split": "test",
    }
    bank = ScenarioBank.from_files(
        write(tmp_path / "d.jsonl", [dilemma]),
        write(tmp_path / "p.jsonl", personas),
        write(tmp_path / "pairs.jsonl", [pair]),
    )
    env = negotiation_env.env(scenarios=bank, split="test", max_turns=2, mode="evaluation")
    env.reset(seed=0)
    for agent in env.agent_iter():
        observation, _, termination, truncation, _ = env.last()
        assert env.observation_space(agent).contains(observation)
        env.step(None if termination or truncation else "w" * 10_000)  # past the action limit


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
