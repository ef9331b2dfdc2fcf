"""The negotiation protocol: agreement, turn limit, modes, context window, seeding, bad input."""

import pytest

import negotiation_env
from agents import ConcedingAgent, MediatorAgent, StubbornAgent, play_episode
from negotiation_env import NegotiationConfig, raw_env
from negotiation_env.judges import Judgement, KeywordRubricJudge

SCENARIO = "pro-001/cost_vs_quality"


def seats(first, second):
    return {"negotiator_0": first, "negotiator_1": second}


def say(env, text):
    env.step(text)


def test_agreement_ends_the_dialogue_early_and_triggers_the_summary():
    env = raw_env(max_turns=7, judge="keyword")
    env.reset(options={"scenario": SCENARIO})
    say(env, "I propose a pilot.")
    say(env, "Fine with me. [AGREE]")
    negotiation = env.negotiation
    assert negotiation.agreed and negotiation.rounds_to_agreement == 2
    assert negotiation.phase == "summary" and env.agent_selection == "negotiator_0"
    assert env.observe("negotiator_0")["phase"] == "summary"
    say(env, "We run a pilot for 30 days and review it together.")
    assert negotiation.done and env.terminations == {"negotiator_0": True, "negotiator_1": True}
    assert env.rewards["negotiator_0"] == env.rewards["negotiator_1"] > 0


def test_marker_before_both_parties_spoke_does_not_count():
    env = raw_env()
    env.reset(options={"scenario": SCENARIO})
    say(env, "[AGREE] with myself")
    assert not env.negotiation.agreed and env.negotiation.phase == "dialogue"


def test_turn_limit_triggers_summary_in_evaluation_mode():
    record = play_episode(
        raw_env(mode="evaluation", max_turns=4, judge="keyword"),
        seats(StubbornAgent(), StubbornAgent()),
        scenario=SCENARIO,
    )
    assert not record["agreement"] and len(record["transcript"]) == 4
    assert record["resolution"] and record["judgement"]["score"] is not None


def test_training_mode_without_agreement_gives_zero_and_no_summary():
    env = raw_env(mode="training", max_turns=3, no_agreement_reward=0.0)
    record = play_episode(env, seats(StubbornAgent(), StubbornAgent()), scenario=SCENARIO)
    assert record["resolution"] is None and record["judgement"] is None
    assert record["reward"] == 0.0 and len(record["transcript"]) == 3


def test_training_mode_with_agreement_is_judged():
    env = raw_env(mode="training", judge="keyword")
    record = play_episode(env, seats(MediatorAgent(), ConcedingAgent()), scenario=SCENARIO)
    assert record["agreement"] and record["reward"] > 0


def test_last_k_context_shows_only_k_turns():
    env = raw_env(context_turns=2, max_turns=7)
    env.reset(options={"scenario": SCENARIO})
    for i in range(5):
        say(env, f"utterance number {i}")
    messages = env.observe("negotiator_1")["messages"]  # negotiator_1 speaks turn 5
    contents = " ".join(m["content"] for m in messages)
    assert "utterance number 3" in contents and "utterance number 4" in contents
    assert "utterance number 2" not in contents and "not shown" in messages[1]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_full_history_context_shows_every_turn_with_alternating_roles():
    env = raw_env(context_turns=None)
    env.reset(options={"scenario": SCENARIO})
    for i in range(4):
        say(env, f"utterance number {i}")
    messages = env.observe("negotiator_0")["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert all(
        f"utterance number {i}" in " ".join(m["content"] for m in messages) for i in range(4)
    )
    partner_view = env.observe("negotiator_1")["messages"]
    # negotiator_1 sees the opener's first turn folded into the dilemma message
    assert partner_view[1]["role"] == "user" and "utterance number 0" in partner_view[1]["content"]


def test_with_full_history_each_seats_chat_only_grows_by_the_turns_since(bank):
    # What a seat saw when it spoke, plus what it said, opens the chat of its next turn
    # (backends reuse the keys and values of the earlier prompt only when this holds).
    env = raw_env(context_turns=None, max_turns=7)
    env.reset(options={"scenario": SCENARIO})
    seen = {}
    for i in range(6):
        agent = env.agent_selection
        messages = list(env.observe(agent)["messages"])
        if agent in seen:
            assert messages[: len(seen[agent])] == seen[agent]
            assert len(messages) == len(seen[agent]) + 1  # the partner's turn since
        utterance = f"utterance number {i}"
        seen[agent] = messages + [{"role": "assistant", "content": utterance}]
        say(env, utterance)
    assert "You speak first" in seen["negotiator_0"][1]["content"]
    assert "You speak first" not in seen["negotiator_1"][1]["content"]


def test_persona_and_dilemma_are_in_the_system_and_user_messages(bank):
    env = raw_env()
    env.reset(options={"scenario": SCENARIO})
    scenario = bank.get(SCENARIO)
    observation = env.observe("negotiator_0")
    assert scenario.pair.persona_a.name in observation["messages"][0]["content"]
    assert scenario.dilemma.title in observation["messages"][1]["content"]
    assert observation["own_values"] == scenario.pair.persona_a.core_values
    assert observation["partner_values"] == scenario.pair.persona_b.core_values
    hidden = raw_env(reveal_partner_persona=False)
    hidden.reset(options={"scenario": SCENARIO})
    assert hidden.observe("negotiator_0")["partner_values"] == ()


def test_summary_prompt_contains_the_whole_transcript():
    env = raw_env(context_turns=1, max_turns=3)
    env.reset(options={"scenario": SCENARIO})
    for i in range(3):
        say(env, f"utterance number {i}")
    content = " ".join(m["content"] for m in env.observe("negotiator_0")["messages"])
    assert all(f"utterance number {i}" in content for i in range(3))
    assert "did not reach agreement" in content


def test_same_seed_gives_same_episode_and_different_seeds_vary():
    agents = seats(MediatorAgent(), StubbornAgent())
    first = play_episode(raw_env(), agents, seed=11)
    second = play_episode(raw_env(), agents, seed=11)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    ids = {play_episode(raw_env(), agents, seed=s)["scenario"]["id"] for s in range(8)}
    assert len(ids) > 1


def test_reset_with_explicit_scenario_and_split(bank):
    env = raw_env(split="test")
    env.reset(seed=0)
    assert env.negotiation.scenario.dilemma.split == "test"
    assert env.negotiation.scenario.pair.split == "test"
    env.reset(options={"scenario": bank.get(SCENARIO)})
    assert env.negotiation.scenario.id == SCENARIO
    env.reset(seed=3, options={"category": "everyday"})
    assert env.negotiation.scenario.dilemma.category == "everyday"
    with pytest.raises(TypeError, match="options\\['scenario'\\]"):
        env.reset(options={"scenario": 42})


def test_configurable_first_speaker_and_summarizer():
    env = raw_env(first_speaker="negotiator_1", summarizer="negotiator_1")
    env.reset(options={"scenario": SCENARIO})
    assert env.agent_selection == "negotiator_1"
    say(env, "Let's share the cost.")
    say(env, "Agreed. [AGREE]")
    assert env.agent_selection == "negotiator_1" and env.negotiation.phase == "summary"


def test_non_string_action_is_a_type_error_naming_the_agent():
    env = raw_env()
    env.reset(options={"scenario": SCENARIO})
    with pytest.raises(TypeError, match="negotiator_0"):
        env.step(123)
    assert env.negotiation.turns == []  # nothing was recorded


def test_over_long_empty_and_unencodable_actions_are_flagged_not_dropped():
    env = raw_env(max_utterance_chars=50)
    env.reset(options={"scenario": SCENARIO})
    say(env, "x" * 80)
    say(env, "   ")
    say(env, "bad \ud800 char")
    turns = env.negotiation.turns
    assert turns[0].text == "x" * 50 and "truncated" in turns[0].flags
    assert turns[1].text == "" and "empty" in turns[1].flags
    assert turns[2].text == "bad \ufffd char" and "sanitized" in turns[2].flags
    assert env.infos["negotiator_0"]["transcript"][0]["flags"] == ["truncated"]


def test_judge_callables_and_objects_are_accepted(bank):
    def by_length(scenario, transcript, resolution):
        return min(5.0, len(resolution) / 10)

    for judge in (by_length, lambda request: 2.5, KeywordRubricJudge()):
        record = play_episode(
            raw_env(judge=judge), seats(MediatorAgent(), ConcedingAgent()), scenario=SCENARIO
        )
        assert record["judgement"]["score"] == record["reward"]


@pytest.mark.parametrize(
    "judge",
    [
        lambda request: Judgement(None, "flaky", error="server said 500"),
        lambda request: 1 / 0,
    ],
)
def test_judge_failure_is_recorded_not_a_silent_score(judge):
    env = raw_env(judge=judge, judge_failure_reward=-1.0)
    record = play_episode(env, seats(MediatorAgent(), ConcedingAgent()), scenario=SCENARIO)
    assert record["judge_failed"] and record["reward"] == -1.0
    assert record["judgement"]["score"] is None and record["judgement"]["error"]


def test_custom_agreement_detector_function():
    def after_three_turns(scenario, transcript):
        return len(transcript) >= 3

    record = play_episode(
        raw_env(agreement_detector=after_three_turns),
        seats(StubbornAgent(), StubbornAgent()),
        scenario=SCENARIO,
    )
    assert record["agreement"] and record["rounds_to_agreement"] == 3


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"mode": "train"}, "mode"),
        ({"max_turns": 0}, "max_turns"),
        ({"context_turns": 0}, "context_turns"),
        ({"summarizer": "judge"}, "summarizer"),
        ({"max_turns": "7"}, "max_turns"),
        ({"reveal_partner_persona": "yes"}, "reveal_partner_persona"),
        ({"min_turns_for_agreement": 9}, "min_turns_for_agreement"),
    ],
)
def test_bad_config_values_name_the_field(settings, field):
    with pytest.raises((ValueError, TypeError), match=field):
        NegotiationConfig(**settings)


def test_unknown_config_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="max_rounds"):
        NegotiationConfig.from_dict({"max_rounds": 3})
    with pytest.raises(ValueError, match="max_rounds"):
        negotiation_env.raw_env(max_rounds=3)


def test_parallel_env_uses_only_the_acting_agents_action():
    env = negotiation_env.parallel_env(judge="keyword")
    observations, _ = env.reset(options={"scenario": SCENARIO})
    assert (
        observations["negotiator_0"]["acting"] == 1 and observations["negotiator_1"]["acting"] == 0
    )
    observations, rewards, terminations, _, infos = env.step(
        {"negotiator_0": "Let us pilot it.", "negotiator_1": "ignored words"}
    )
    assert infos["negotiator_1"]["ignored_action"] is True
    assert [t["text"] for t in infos["negotiator_0"]["transcript"]] == ["Let us pilot it."]
    with pytest.raises(KeyError, match="negotiator_1"):
        env.step({"negotiator_0": "my turn?"})
    env.step({"negotiator_1": "Yes. [AGREE]"})
    _, rewards, terminations, _, _ = env.step(
        {"negotiator_0": "We pilot for 30 days and both review."}
    )
    assert all(terminations.values()) and rewards["negotiator_0"] > 0 and env.agents == []


def test_without_a_judge_no_reward_looks_real_and_info_says_why():
    env = raw_env(judge_failure_reward=0.0)
    with pytest.warns(UserWarning, match="no judge configured"):
        record = play_episode(env, seats(MediatorAgent(), ConcedingAgent()), scenario=SCENARIO)
    assert record["agreement"] and record["resolution"]
    assert record["reward"] == 0.0 and record["judge_failed"]
    assert record["judgement"]["score"] is None
    assert "no judge configured" in record["judgement"]["error"]
    assert "judge='default'" in record["judgement"]["error"]


def test_a_judge_spec_is_loaded_on_first_use_and_a_bad_one_fails_at_once():
    env = raw_env(judge="default")
    assert env.judge._judge is None and env.judge.name == "default"  # nothing loaded yet
    with pytest.raises(ValueError):
        raw_env(judge="rm?bad&&=")
    keyword = raw_env(judge="keyword").judge
    assert isinstance(keyword, KeywordRubricJudge)
