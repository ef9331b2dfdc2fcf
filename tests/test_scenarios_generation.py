"""Generated data goes through parsing, validation, quality checks and deduplication."""

import json
import subprocess
import sys

from negotiation_env.scenarios import ScenarioBank
from negotiation_env.scenarios.dedup import DuplicateIndex, find_near_duplicates
from negotiation_env.scenarios.generation import (
    PROMPT_VERSION,
    generate_dilemmas,
    generate_pairs,
    write_generation,
)

NEW_DILEMMA = {
    "title": "The Lighthouse Keeper's Pension",
    "text": "A coastal town must decide whether to keep paying a retired lighthouse keeper a "
    "discretionary pension of $9,000 a year after automation ended his job in 1998. The fund "
    "is now needed for flood defences, and he is 91 with no other income. Should the council "
    "end the payment, keep it, or ask residents to fund it?",
}


class ScriptedGenerator:
    """Test double for an LLM: returns canned answers in order and records the prompts."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.answers.pop(0) if self.answers else ""


def test_generation_keeps_good_and_rejects_duplicate_broken_and_short(bank):
    shipped = bank.dilemmas(category="everyday")[0]
    answer = "\n".join(
        [
            "Here are your dilemmas:",
            json.dumps(NEW_DILEMMA),
            json.dumps({"title": "Copy", "text": shipped.text}),  # near-duplicate of shipped data
            '{"title": "Broken", "text": "unterminated',
            json.dumps({"title": "Too short", "text": "Should I?"}),
        ]
    )
    generator = ScriptedGenerator([answer])
    result = generate_dilemmas(generator, 1, "everyday", bank, "scripted-test", max_calls=1)
    assert [d.title for d in result.dilemmas] == [NEW_DILEMMA["title"]]
    reasons = " | ".join(r.reason for r in result.rejections)
    assert "near-duplicate" in reasons and "not valid JSON" in reasons and "words" in reasons
    dilemma = result.dilemmas[0]
    assert dilemma.category == "everyday"
    assert dilemma.source == {"generator": "scripted-test", "prompt_version": PROMPT_VERSION}
    assert dilemma.id.startswith("gen-eve-")
    assert "everyday micro-ethical" in generator.prompts[0]


def test_generation_dedups_within_its_own_output(bank):
    answer = json.dumps(NEW_DILEMMA) + "\n" + json.dumps(NEW_DILEMMA)
    result = generate_dilemmas(
        ScriptedGenerator([answer]), 2, "professional", bank, "x", max_calls=1
    )
    assert len(result.dilemmas) == 1
    assert any("near-duplicate" in r.reason for r in result.rejections)


def test_generated_files_load_back_through_the_same_loader(tmp_path, bank):
    pair = {
        "tension": "solitude vs belonging",
        "persona_a": {
            "id": "hermit",
            "name": "The Quiet Hermit",
            "core_values": ["solitude", "inner calm", "self-reliance"],
            "stance": "You believe people decide best alone, away from noise and pressure, and you push for "
            "time to reflect before any commitment. You can accept company when it is chosen freely.",
        },
        "persona_b": {
            "id": "host",
            "name": "The Warm Host",
            "core_values": ["belonging", "hospitality", "togetherness"],
            "stance": "You believe no one should face a hard choice alone, and you push for gathering "
            "everyone affected around the table. You can accept time apart when people return to talk.",
        },
    }
    dilemmas = generate_dilemmas(
        ScriptedGenerator([json.dumps(NEW_DILEMMA)]), 1, "everyday", bank, "g"
    )
    pairs = generate_pairs(ScriptedGenerator([json.dumps(pair)]), 1, bank, "g")
    assert len(pairs.pairs) == 1 and not pairs.rejections
    write_generation(dilemmas, tmp_path)
    write_generation(pairs, tmp_path)
    loaded = ScenarioBank.from_files(
        tmp_path / "dilemmas.jsonl", tmp_path / "personas.jsonl", tmp_path / "persona_pairs.jsonl"
    )
    assert [d.title for d in loaded.dilemmas()] == [NEW_DILEMMA["title"]]
    assert loaded.pairs()[0].persona_b.name == "The Warm Host"


def test_pair_repeating_an_existing_tension_is_rejected(bank):
    existing = bank.pairs()[0]
    pair = {
        "tension": existing.tension,
        "persona_a": {**existing.persona_a.to_record(), "id": "new_a", "name": "New A"},
        "persona_b": {**existing.persona_b.to_record(), "id": "new_b", "name": "New B"},
    }
    result = generate_pairs(ScriptedGenerator([json.dumps(pair)]), 1, bank, "g", max_calls=1)
    assert result.pairs == []
    assert "repeats an existing tension" in result.rejections[0].reason


def test_dedup_detects_paraphrase_and_copied_sentences_but_not_distinct_texts():
    base = (
        "A hospital must decide whether to delay a new records system by six months to train "
        "nurses, at a cost of $2 million, or launch now and risk errors."
    )
    paraphrase = (
        "A hospital must decide whether to delay the new records system six months to train "
        "its nurses, costing $2 million, or launch it now and risk errors."
    )
    distinct = (
        "Two neighbours argue about a tall hedge that blocks winter sun from a vegetable "
        "garden; should the owner trim it at his own expense?"
    )
    assert find_near_duplicates([("a", base), ("b", paraphrase)])
    assert not find_near_duplicates([("a", base), ("c", distinct)])
    index = DuplicateIndex()
    index.add("a", base)
    assert index.match("b", paraphrase).first_id == "a"
    assert index.match("c", distinct) is None


def test_cli_generate_with_a_user_function(tmp_path):
    module = tmp_path / "my_generator.py"
    module.write_text(
        f"import json\ndef generate(prompt):\n    return json.dumps({NEW_DILEMMA!r})\n"
    )
    out = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "negotiate",
            "scenarios",
            "generate",
            "--generator",
            f"{module}:generate",
            "--n",
            "1",
            "--category",
            "interpersonal",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "1 of 1 dilemmas accepted" in completed.stdout
    record = json.loads((out / "dilemmas.jsonl").read_text())
    assert record["category"] == "interpersonal" and record["source"]["generator"].endswith(
        ":generate"
    )
