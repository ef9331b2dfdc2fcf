"""The transformers backend on the real embedded model: batching, limits, log-probabilities."""

import math

import pytest
import torch

from llm.interface import BackendError, GenerationSettings
from llm.transformers_backend import NgramBan, TransformersBackend
from tests.conftest import chat

QUESTIONS = [
    "Should a school ban phones in class?",
    "Is it fair to split a dinner bill evenly when one person only had soup and water?",
    "Hi",
    "Our team must choose between a cheaper vendor and a more reliable one. What matters most?",
    "Should I tell my friend that the cake she baked tasted burnt?",
]


def test_batched_generation_returns_one_output_per_input_within_the_token_limit(smollm2):
    settings = GenerationSettings(max_new_tokens=12, temperature=0.7, seed=0)
    generations = smollm2.generate([chat(q) for q in QUESTIONS], settings)
    assert len(generations) == len(QUESTIONS)
    for generation in generations:
        assert 1 <= len(generation.token_ids) <= 12
        assert len(generation.logprobs) == len(generation.token_ids)
        assert generation.finish_reason in ("stop", "length")
        assert generation.finish_reason == "stop" or len(generation.token_ids) == 12
        assert all(lp <= 0.0 for lp in generation.logprobs)
    assert smollm2.generate([], settings) == []


def test_sampled_logprobs_match_a_fresh_forward_pass(smollm2):
    settings = GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.95, seed=1)
    generations = smollm2.generate([chat(q) for q in QUESTIONS], settings)
    fresh = smollm2.sequence_logprobs(
        [g.prompt_token_ids for g in generations],
        [g.token_ids for g in generations],
        temperature=0.7,
    )
    for generation, expected in zip(generations, fresh, strict=True):
        assert generation.logprobs == pytest.approx(expected, abs=1e-3)


def test_greedy_batched_equals_one_by_one_despite_padding(smollm2):
    settings = GenerationSettings(max_new_tokens=10, temperature=0)
    batched = smollm2.generate([chat(q) for q in QUESTIONS], settings)
    for question, together in zip(QUESTIONS, batched, strict=True):
        alone = smollm2.generate([chat(question)], settings)[0]
        assert alone.token_ids == together.token_ids


def test_dropping_finished_rows_changes_no_token_and_no_logprob(smollm2):
    # The stop string ends rows at different steps, so rows leave the batch mid-way.
    settings = GenerationSettings(max_new_tokens=24, temperature=0, stop=(".",))
    plain = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    plain.drop_finished = False
    conversations = [chat(q) for q in QUESTIONS]
    dropped = smollm2.generate(conversations, settings)
    kept = plain.generate(conversations, settings)
    assert len({len(g.token_ids) for g in dropped}) > 1  # rows really did finish apart
    for fast, slow in zip(dropped, kept, strict=True):
        assert fast.token_ids == slow.token_ids
        assert fast.finish_reason == slow.finish_reason
        assert fast.logprobs == pytest.approx(slow.logprobs, abs=1e-4)


def test_sequence_logprobs_of_rows_shorter_than_the_longest_completion_are_their_own(smollm2):
    # A row whose prompt and completion together are shorter than another row's completion
    # (perplexity scores passages of different lengths after a one-token prompt) once read
    # zeros as its targets.
    prompts = smollm2.encode(["Hello there, how are you today my friend?", "Hi"])
    completions = smollm2.encode([" I am fine, thank you very much for asking. And you?", " Yes."])
    together = smollm2.sequence_logprobs(prompts, completions, temperature=0.7)
    for prompt, completion, batched in zip(prompts, completions, together, strict=True):
        alone = smollm2.sequence_logprobs([prompt], [completion], temperature=0.7)[0]
        assert batched == pytest.approx(alone, abs=1e-3)


def _repeated_ngrams(tokens: list[int], size: int) -> int:
    runs = [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]
    return len(runs) - len(set(runs))


def test_ngram_ban_forbids_the_token_that_would_repeat_a_run_of_the_same_row():
    ban = NgramBan(rows=3, size=2)
    every_row = torch.tensor([0, 1, 2])
    for step in ([5, 7, 1], [6, 7, 2], [5, 8, 3]):  # row 0: 5 6 5; row 1: 7 7 8; row 2: 1 2 3
        ban.add(every_row, torch.tensor(step))
    mask = ban.mask(every_row, vocabulary=10, device="cpu")
    assert mask[0].nonzero().flatten().tolist() == [6]  # "5 6" was written: 6 may not follow 5
    assert not mask[1].any() and not mask[2].any()  # 8 and 3 were never followed
    # rows that left the batch: mask positions follow the running rows, not row numbers
    reordered = ban.mask(torch.tensor([1, 0]), vocabulary=10, device="cpu")
    assert reordered[1].nonzero().flatten().tolist() == [6]
    assert NgramBan(rows=1, size=0).mask(torch.tensor([0]), 10, "cpu") is None


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_no_repeat_ngram_size_leaves_no_run_twice_and_reports_untruncated_logprobs(
    smollm2, temperature
):
    conversations = [chat(q) for q in QUESTIONS] + [chat("Say 'we share the water' 6 times.")]
    settings = GenerationSettings(max_new_tokens=64, temperature=temperature, seed=0)
    plain = smollm2.generate(conversations, settings)
    banned_settings = GenerationSettings(
        max_new_tokens=64, temperature=temperature, seed=0, no_repeat_ngram_size=3
    )
    banned = smollm2.generate(conversations, banned_settings)
    assert sum(_repeated_ngrams(g.token_ids, 3) for g in plain) > 0  # there is a run to ban
    assert [_repeated_ngrams(g.token_ids, 3) for g in banned] == [0] * len(conversations)
    # each token's log-probability is the model's own, before the ban (as before top-p)
    fresh = smollm2.sequence_logprobs(
        [g.prompt_token_ids for g in banned],
        [g.token_ids for g in banned],
        temperature=temperature,
    )
    for generation, expected in zip(banned, fresh, strict=True):
        assert generation.logprobs == pytest.approx(expected, abs=1e-3)
    # rows leaving the batch early (stop string) keep their own histories
    stopping = GenerationSettings(
        max_new_tokens=64, temperature=0, stop=("!",), no_repeat_ngram_size=3
    )
    kept_rows = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    kept_rows.drop_finished = False
    dropped = smollm2.generate(conversations, stopping)
    assert [g.token_ids for g in dropped] == [
        g.token_ids for g in kept_rows.generate(conversations, stopping)
    ]


def test_top_p_shortlist_keeps_exactly_what_a_full_sort_keeps(smollm2):
    backend = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    log_probs = torch.log_softmax(
        torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0, 0.9, 0.8]]), dim=-1
    )

    def kept(shortlist):  # {token: probability} of the tokens each row may draw
        backend.top_p_shortlist = shortlist
        probabilities, candidates = backend._nucleus(log_probs, 0.8)
        return [
            {t: round(p, 6) for t, p in zip(c.tolist(), q.tolist(), strict=True) if p > 0}
            for c, q in zip(candidates, probabilities, strict=True)
        ]

    full = kept(0)
    # row 0: the top 2 hold 0.87 >= 0.8, so tokens 2.. are dropped; row 1 is flat
    assert sorted(full[0]) == [0, 1] and len(full[1]) == 5
    for shortlist in (2, 3, 6):  # 2 and 3 are too short for row 1: the full sort decides
        assert kept(shortlist) == full
    # and on the real model, sampling with the shortlist gives the very same dialogue turns
    settings = GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.95, seed=3)
    sorted_everywhere = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    sorted_everywhere.top_p_shortlist = 0
    conversations = [chat(q) for q in QUESTIONS]
    fast = smollm2.generate(conversations, settings)
    slow = sorted_everywhere.generate(conversations, settings)
    assert [g.token_ids for g in fast] == [g.token_ids for g in slow]


def test_same_seed_same_sample_and_small_micro_batches_change_nothing(smollm2):
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=7)
    first = smollm2.generate([chat(q) for q in QUESTIONS[:2]], settings)
    second = smollm2.generate([chat(q) for q in QUESTIONS[:2]], settings)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    greedy = GenerationSettings(max_new_tokens=6, temperature=0)
    small = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer, max_batch_size=2)
    assert [g.text for g in small.generate([chat(q) for q in QUESTIONS], greedy)] == [
        g.text for g in smollm2.generate([chat(q) for q in QUESTIONS], greedy)
    ]


def test_stop_strings_end_the_text(smollm2):
    prompt = [chat("Count from 1 to 20.")]
    free = smollm2.generate(prompt, GenerationSettings(max_new_tokens=24, temperature=0))[0]
    assert "\n" in free.text
    stopped = smollm2.generate(
        prompt, GenerationSettings(max_new_tokens=24, temperature=0, stop=("\n",))
    )[0]
    assert "\n" not in stopped.text and stopped.finish_reason == "stop"
    assert len(stopped.token_ids) < len(free.token_ids)
    assert free.text.startswith(stopped.text)


def test_next_token_logprobs_agree_with_continuation_scoring(smollm2):
    conversations = [chat("Rate this plan from 0 to 5: share the cost 50/50.")] * 2
    digits = [str(d) for d in range(6)]
    next_token = smollm2.next_token_logprobs(conversations, digits, assistant_prefix="Score: ")
    # the shared prompt is computed once and reused: the same numbers up to float rounding
    assert next_token[0] == pytest.approx(next_token[1], abs=1e-4)
    assert set(next_token[0]) == set(digits)
    total = sum(math.exp(v) for v in next_token[0].values())
    assert 0.0 < total <= 1.0 + 1e-6
    continuation = smollm2.continuation_logprobs(
        conversations[:1] * 6, digits, assistant_prefix="Score: "
    )
    assert continuation == pytest.approx([next_token[0][d] for d in digits], abs=1e-4)


def test_lora_adapter_is_loaded_and_changes_the_model(smollm2, tmp_path):
    from peft import LoraConfig, get_peft_model

    copy = TransformersBackend("smollm2")  # a second copy: peft modifies the model in place
    peft_model = get_peft_model(
        copy.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    adapted = TransformersBackend("smollm2", adapter=str(tmp_path / "adapter"))
    conversation = [chat("Should we buy the cheaper laptop?")]
    base_scores = smollm2.next_token_logprobs(conversation, ["Yes", "No"])[0]
    adapted_scores = adapted.next_token_logprobs(conversation, ["Yes", "No"])[0]
    assert str(tmp_path / "adapter") in adapted.name
    assert adapted_scores != pytest.approx(base_scores, abs=1e-4)


def test_unknown_model_fails_fast_offline_with_a_clear_error():
    with pytest.raises(BackendError, match="cannot load model 'no-such-org/no-such-model'"):
        TransformersBackend("no-such-org/no-such-model")


def test_bad_settings_are_rejected_naming_the_field():
    for bad, field in (
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ):
        with pytest.raises(ValueError, match=field):
            GenerationSettings(**bad)
    with pytest.raises(ValueError, match="dtype"):
        TransformersBackend("smollm2", dtype="float13")


def test_bf16_backend_generates(smollm2):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no bf16 support")
    bf16 = TransformersBackend("smollm2", dtype="bfloat16")
    generation = bf16.generate(
        [chat("Say hello.")], GenerationSettings(max_new_tokens=5, temperature=0)
    )[0]
    assert generation.token_ids and bf16.model.dtype == torch.bfloat16


def two_turns(backend, openings, settings):
    """Each chat's first answer, then its answer to "Why?" (the chat continued)."""
    first = backend.generate(openings, settings)
    follow = [
        c + [{"role": "assistant", "content": g.text}, {"role": "user", "content": "Why?"}]
        for c, g in zip(openings, first, strict=True)
    ]
    return first + backend.generate(follow, settings)


def test_prefix_caching_changes_no_token_across_turns_and_reuses_the_shared_prefix(smollm2):
    # Turn 1: two identical prompts (a group's opening) and two that share the system text;
    # turn 2 continues each chat, so its prompt begins with turn 1's prompt and answer.
    # Rows finish apart (stop string), so they are stored as they leave the batch.
    settings = GenerationSettings(max_new_tokens=20, temperature=0, logprobs=True, stop=("!",))
    system = "You are a careful negotiator. You value fairness, honesty and keeping promises."
    openings = [
        chat(QUESTIONS[0], system),
        chat(QUESTIONS[0], system),
        chat(QUESTIONS[1], system),
        chat(QUESTIONS[3]),
    ]
    plain = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    plain.shared_prefix_attention = False
    with smollm2.prefix_caching() as store:
        fast = two_turns(smollm2, openings, settings)
    assert smollm2.prefix_store is None  # the scope empties the store on exit
    slow = two_turns(plain, openings, settings)
    for quick, reference in zip(fast, slow, strict=True):
        assert quick.token_ids == reference.token_ids
        assert quick.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
    assert store.prompt_tokens == sum(len(g.prompt_token_ids) for g in slow)
    # the identical openings and the shared system text are computed once, and turn 2 only
    # computes the new turns: the model processes well under half of the prompt tokens
    assert store.computed_tokens < 0.5 * store.prompt_tokens


def test_shared_prefix_attention_changes_no_token_and_no_logprob(smollm2):
    # Three rows share a long system text (two of them the whole prompt), one shares
    # nothing; rows finish apart (stop string) and leave the batch mid-way, and the second
    # turn starts from the keys and values the first one stored.
    settings = GenerationSettings(max_new_tokens=24, temperature=0, logprobs=True, stop=(".",))
    system = (
        "You are a careful negotiator for a small town council. You value fairness, honesty, "
        "keeping promises and the welfare of the people who will live with the decision."
    )
    openings = [chat(q, system) for q in (QUESTIONS[0], QUESTIONS[0], QUESTIONS[4])]
    openings.append(chat(QUESTIONS[3]))
    shared = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    shared.shared_prefix_attention = True
    plain = TransformersBackend.from_objects(smollm2.model, smollm2.tokenizer)
    plain.shared_prefix_attention = False
    plan = shared._group_plan(shared.encode([shared.render(c) for c in openings]))
    assert plan is not None and plan.sizes == [3, 1] and plan.lengths[0] >= 40
    with shared.prefix_caching():
        fast = two_turns(shared, openings, settings)
    with plain.prefix_caching():
        slow = two_turns(plain, openings, settings)
    assert len({len(g.token_ids) for g in slow}) > 1  # rows really did finish apart
    for quick, reference in zip(fast, slow, strict=True):
        assert quick.token_ids == reference.token_ids
        assert quick.finish_reason == reference.finish_reason
        assert quick.logprobs == pytest.approx(reference.logprobs, abs=1e-3)
    # a group's identical openings: the whole prompt is shared and each row starts with
    # nothing of its own
    identical = [openings[0]] * 3
    assert shared._group_plan(shared.encode([shared.render(c) for c in identical])).sizes == [3]
    for quick, reference in zip(
        shared.generate(identical, settings), plain.generate(identical, settings), strict=True
    ):
        assert quick.token_ids == reference.token_ids


def test_continuation_scoring_with_shared_prompts_equals_scoring_alone(smollm2):
    dilemma = "A library must choose between longer opening hours and a new children's room. "
    conversations = [
        chat(dilemma + instruction) for instruction in ("Write a plan.", "Write a poem.")
    ]
    texts = ["Open until nine on weekdays and fund the room next year.", "Books at night."]
    together = smollm2.continuation_logprobs(conversations * 2, texts + texts[::-1])
    budget = smollm2.prefix_cache_bytes
    smollm2.prefix_cache_bytes = 0  # no reuse: every sequence computed whole
    try:
        alone = [
            smollm2.continuation_logprobs([c], [t])[0]
            for c, t in zip(conversations * 2, texts + texts[::-1], strict=True)
        ]
    finally:
        smollm2.prefix_cache_bytes = budget
    assert together == pytest.approx(alone, abs=1e-3)
    assert together[0] != pytest.approx(together[2], abs=1e-3)  # the text matters
