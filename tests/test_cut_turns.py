"""Turns stopped by the token limit end after their last complete sentence (text and tokens)."""

import pytest

from agents.llm import LLMAgent
from llm.interface import Generation, GenerationSettings, end_at_sentence
from trainers.config import TrainConfig


# A character-level "tokenizer" as a test double: token id i is the character chr(i).
def decode(ids):
    return "".join(chr(i) for i in ids)


def generation(text, reason="length"):
    ids = [ord(c) for c in text]
    return Generation(text.strip(), reason, ids, [-0.1 * (i + 1) for i in range(len(ids))])


def test_a_cut_turn_ends_after_its_last_sentence_with_the_matching_token_prefix():
    cut = end_at_sentence(generation(" We share the cost. You keep the stall! And then we"), decode)
    assert cut.text == "We share the cost. You keep the stall!"
    assert decode(cut.token_ids).strip() == cut.text
    assert len(cut.logprobs) == len(cut.token_ids) == len(" We share the cost. You keep the stall!")
    assert cut.logprobs == generation(" We share the cost. You keep the stall!").logprobs
    assert cut.finish_reason == "length"


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    cut = end_at_sentence(generation('She said "we agree." (Both sides.) Then the'), decode)
    assert cut.text == 'She said "we agree." (Both sides.)'


@pytest.mark.parametrize(
    "text, reason",
    [
        ("We share the cost. You keep the stall! And then we", "stop"),  # finished by itself
        ("no sentence has ended in this cut turn", "length"),
        ("Everything was said. All of it.", "length"),  # already ends a sentence
        ("A decimal like 3.5 is not an end and", "length"),
    ],
)
def test_finished_turns_and_turns_without_a_sentence_end_are_unchanged(text, reason):
    original = generation(text, reason)
    assert end_at_sentence(original, decode) == original


def test_without_token_ids_the_token_strings_or_the_text_are_cut():
    with_strings = Generation("One. Two and", "length", tokens=["One", ".", " Two", " and"])
    cut = end_at_sentence(with_strings, None)
    assert (cut.text, cut.tokens) == ("One.", ["One", "."])
    text_only = end_at_sentence(Generation("One. Two and", "length"), None)
    assert text_only.text == "One."
    # ids that cannot be decoded: cutting the text alone would train on unseen tokens
    undecodable = generation("One. Two and")
    assert end_at_sentence(undecodable, None) == undecodable


class ScriptedBackend:
    """Test double: answers every conversation with the same fixed generation, its token ids
    the characters of the text (decoded by ``tokenizer``)."""

    name = "scripted-backend"

    class tokenizer:  # noqa: N801 - stands in for the backend's tokenizer
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return decode(ids)

    def __init__(self, text):
        self.text = text

    def generate(self, conversations, settings):
        return [generation(self.text) for _ in conversations]


def test_the_llm_agent_ends_cut_turns_and_resolutions_after_their_last_sentence():
    backend = ScriptedBackend("We split it. Then")
    agent = LLMAgent(backend)
    assert agent.act({"phase": "dialogue", "messages": []}) == "We split it."
    assert agent.act({"phase": "summary", "messages": []}) == "We split it."
    assert LLMAgent(backend, cut_turns="keep").act({"phase": "dialogue", "messages": []}) == (
        "We split it. Then"
    )
    assert agent.generated_tokens == len("We split it. Then") * 2  # generated, not kept


def test_unknown_cut_policies_are_refused_by_name():
    with pytest.raises(ValueError, match="cut_turns"):
        LLMAgent(ScriptedBackend("x"), cut_turns="drop")
    with pytest.raises(ValueError, match="rollout.cut_turns"):
        TrainConfig.from_dict({"rollout": {"cut_turns": "drop"}})
    assert GenerationSettings().max_new_tokens > 0
