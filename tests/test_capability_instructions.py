"""Instruction-following checks: each checker in both directions, spec validation, the shipped data."""

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.capability.instructions import (
    CHECK_PARAMETERS,
    CHECKERS,
    DEFAULT_PROMPTS_PATH,
    InstructionDataError,
    InstructionPrompt,
    check,
    load_prompts,
    score_answers,
)

GENERAL_TEXT_PATH = Path(DEFAULT_PROMPTS_PATH).parent / "general_text.jsonl"

# (spec, answer that satisfies it, answer that violates it)
CASES = [
    ({"type": "max_words", "n": 5}, "One two three four five.", "One two three four five six."),
    ({"type": "max_words", "n": 3}, "Don't over-think it.", "   "),
    ({"type": "min_words", "n": 4}, "We walked to town.", "We walked."),
    ({"type": "max_sentences", "n": 2}, "It rained. We stayed in!", "It rained. We stayed. Fun?"),
    ({"type": "max_sentences", "n": 1}, 'He said "hello." ', "First. Second."),
    ({"type": "max_sentences", "n": 1}, "Pi is 3.14 exactly", "Pi is 3. It is 14"),
    (
        {"type": "include_keywords", "keywords": ["Break", "sleep well"]},
        "Take a break; sleep\nwell.",
        "Take a breakfast and sleep well.",
    ),
    (
        {"type": "exclude_keywords", "keywords": ["red"]},
        "The sky was reddish and gold.",
        "The sky was RED.",
    ),
    ({"type": "exclude_keywords", "keywords": ["red"]}, "Calm blue water.", ""),
    (
        {"type": "keyword_frequency", "keyword": "coffee", "at_least": 2},
        "Coffee first, then more coffee.",
        "Coffee, then coffeehouse tea.",
    ),
    ({"type": "starts_with", "text": "Dear"}, "\n  dear Sam, hello.", "Hello, dear Sam."),
    (
        {"type": "ends_with", "text": "Enjoy your meal."},
        "Boil it. Enjoy your meal.  \n",
        "Enjoy your meal. Then wash up.",
    ),
    ({"type": "json_valid"}, '  {"a": [1, 2]}\n', "{'a': 1}"),
    ({"type": "json_valid"}, '```json\n{"a": 1}\n```', 'Here it is:\n```json\n{"a": 1}\n```'),
    (
        {"type": "json_valid", "required_keys": ["city", "country"]},
        '```\n{"city": "Oslo", "country": "Norway"}\n```',
        '{"city": "Oslo"}',
    ),
    ({"type": "json_valid", "required_keys": ["city"]}, '{"city": null}', '["city"]'),
    (
        {"type": "bullet_count", "n": 3},
        "Tips:\n- one\n* two\n  - three",
        "- one\n- two\n-three\n**bold**",
    ),
    ({"type": "bullet_count", "n": 2}, "- a\n- b", "- a\n- b\n- c"),
    ({"type": "numbered_list", "n": 3}, "1. a\n2) b\n3. c\n4. d", "1. a\n2. b\nStep 3 c"),
    ({"type": "all_lowercase"}, "quiet rain, soft light.", "quiet rain, Soft light."),
    ({"type": "all_lowercase"}, "ça va très bien", "123 !"),
    ({"type": "all_uppercase"}, "CAUTION: WET FLOOR!", "CAUTION: Wet floor!"),
    ({"type": "no_commas"}, "No commas here at all.", "One, two."),
    (
        {"type": "paragraph_count", "n": 2},
        "\nFirst part.\nStill first.\n \n\nSecond part.\n\n",
        "Only one\nparagraph here.",
    ),
    ({"type": "paragraph_count", "n": 1}, "One paragraph.", "One.\n\nTwo."),
    (
        {"type": "placeholder_count", "n": 2},
        "Dear [name], see you on [date].",
        "Dear [name], see [the docs](http://x) and [ ].",
    ),
    ({"type": "quoted"}, '  "Pack light and smile."\n', 'Pack "light" and smile.'),
    ({"type": "quoted"}, "“Be kind.”", '"'),
    ({"type": "title"}, "<<Autumn Walk>>\nLeaves fell.", "<< >> Leaves fell. <Autumn>"),
    (
        {"type": "language_english"},
        "Walking helps the heart, café or not.",
        "Прогулки полезны для сердца.",
    ),
    (
        {"type": "contains_question"},
        "Dinner on Friday? Let me know.",
        "Dinner on Friday. Let me know.",
    ),
    ({"type": "postscript"}, "Thanks!\n\np.s. Bring cake.", "Thanks! Also a P.S. inline."),
]


@pytest.mark.parametrize(("spec", "good", "bad"), CASES, ids=[c[0]["type"] for c in CASES])
def test_checker_accepts_satisfying_and_rejects_violating_answers(spec, good, bad):
    assert check(good, spec) is True
    assert check(bad, spec) is False


def test_every_checker_has_cases_and_a_parameter_schema():
    assert len(CHECKERS) >= 15
    assert set(CHECK_PARAMETERS) == set(CHECKERS)
    assert {spec["type"] for spec, _, _ in CASES} == set(CHECKERS)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"type": "max_wordz", "n": 5}, "max_wordz"),
        ({"n": 5}, "None"),
        ({"type": ["max_words"]}, "['max_words']"),
        ({"type": "max_words"}, "'n'"),
        ({"type": "max_words", "n": "5"}, "'n'"),
        ({"type": "max_words", "n": 0}, "positive integer"),
        ({"type": "max_words", "n": True}, "'n'"),
        ({"type": "max_words", "n": 5, "m": 1}, "'m'"),
        ({"type": "no_commas", "n": 1}, "'n'"),
        ({"type": "include_keywords", "keywords": "break"}, "'keywords'"),
        ({"type": "include_keywords", "keywords": []}, "'keywords'"),
        ({"type": "keyword_frequency", "keyword": "x"}, "'at_least'"),
        ({"type": "starts_with", "text": "  "}, "'text'"),
        ({"type": "json_valid", "required_keys": ["a", 1]}, "'required_keys'"),
    ],
)
def test_check_rejects_bad_specs_naming_what_is_wrong(spec, named):
    with pytest.raises(ValueError, match="check") as raised:
        check("Some answer.", spec)
    assert named in str(raised.value)


def test_check_rejects_a_spec_that_is_not_a_dict():
    with pytest.raises(ValueError, match="must be a dict"):
        check("Some answer.", ["max_words", 5])


def test_shipped_prompts_are_valid_and_use_every_check_type_twice():
    prompts = load_prompts()
    assert len(prompts) >= 48
    assert len({prompt.id for prompt in prompts}) == len(prompts)
    usage = Counter(spec["type"] for prompt in prompts for spec in prompt.checks)
    assert {kind: count for kind, count in usage.items() if count < 2} == {}
    assert set(usage) == set(CHECKERS)
    for prompt in prompts:
        assert 1 <= len(prompt.checks) <= 3, prompt.id
        for spec in prompt.checks:
            check("A plain answer.", spec)  # valid specs never raise


def write_lines(path, lines):
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    return path


GOOD_PROMPT = {"id": "p-1", "prompt": "Say hi.", "checks": [{"type": "max_words", "n": 3}]}


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        (
            {**GOOD_PROMPT, "checks": [{"type": "max_words", "n": 3}, {"type": "nope"}]},
            "checks[1].type",
            "unknown check type 'nope'",
        ),
        (
            {**GOOD_PROMPT, "checks": [{"type": "min_words"}]},
            "checks[0].n",
            "missing parameter 'n'",
        ),
        ({**GOOD_PROMPT, "checks": []}, "checks", "non-empty list"),
        ({**GOOD_PROMPT, "prompt": ""}, "prompt", "non-empty string"),
        ({**GOOD_PROMPT, "colour": "red"}, "colour", "unknown field"),
        ({**GOOD_PROMPT}, "id", "duplicate id 'p-1'"),
    ],
)
def test_load_prompts_names_file_line_and_field(tmp_path, record, field, words):
    path = write_lines(tmp_path / "p.jsonl", [GOOD_PROMPT, record])
    with pytest.raises(InstructionDataError) as raised:
        load_prompts(path)
    assert (raised.value.line, raised.value.field) == (2, field)
    assert f"{path}:2" in str(raised.value) and words in str(raised.value)


def test_load_prompts_reports_bad_json_and_missing_files(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [GOOD_PROMPT, '{"id": '])
    with pytest.raises(InstructionDataError, match=r"p\.jsonl:2: not valid JSON"):
        load_prompts(path)
    with pytest.raises(InstructionDataError, match="file not found"):
        load_prompts(tmp_path / "missing.jsonl")


def test_general_text_has_40_passages_of_120_to_220_words_with_unique_ids():
    records = [json.loads(line) for line in GENERAL_TEXT_PATH.read_text().splitlines() if line]
    assert len(records) >= 40
    assert len({record["id"] for record in records}) == len(records)
    assert len({record["domain"] for record in records}) >= 30
    for record in records:
        assert set(record) == {"id", "domain", "text"}
        assert 120 <= len(record["text"].split()) <= 220, record["id"]


def test_score_answers_computes_prompt_and_instruction_level_accuracy():
    prompts = [
        InstructionPrompt("a", "", [{"type": "all_lowercase"}, {"type": "max_words", "n": 3}]),
        InstructionPrompt("b", "", [{"type": "all_lowercase"}, {"type": "no_commas"}]),
        InstructionPrompt("c", "", [{"type": "contains_question"}]),
        InstructionPrompt("d", "", [{"type": "no_commas"}]),
    ]
    answers = {
        "a": "hi there",  # passes both
        "b": "Hi, there",  # fails both
        "c": "Why?",  # passes
        "d": "yes, no",  # fails
    }
    scores = score_answers(prompts, answers)
    assert scores["prompt_level_accuracy"] == pytest.approx(2 / 4)
    assert scores["instruction_level_accuracy"] == pytest.approx(3 / 6)
    assert scores["per_type_accuracy"] == {
        "all_lowercase": 0.5,
        "contains_question": 1.0,
        "max_words": 1.0,
        "no_commas": 0.0,
    }
    assert (scores["prompts"], scores["instructions"]) == (4, 6)
    assert scores["failed_checks"] == {"b": ["all_lowercase", "no_commas"], "d": ["no_commas"]}
    assert score_answers(prompts, [answers[p.id] for p in prompts]) == scores


def test_score_answers_rejects_missing_or_misaligned_answers():
    prompts = [InstructionPrompt("a", "", [{"type": "no_commas"}])]
    with pytest.raises(ValueError, match="no answer for prompt.*a"):
        score_answers(prompts, {"b": "x"})
    with pytest.raises(ValueError, match="2 answers for 1 prompts"):
        score_answers(prompts, ["x", "y"])
