"""Scripted baselines behave as documented; specs load agents or explain why not."""

import pytest

from agents import (
    AgentSpecError,
    ConcedingAgent,
    MediatorAgent,
    RandomAgent,
    StubbornAgent,
    act_batch,
    load_agent,
    play_episode,
)
from negotiation_env import raw_env

SCENARIO = "int-010/privacy_vs_safety"


def episode(first, second, **settings):
    return play_episode(
        raw_env(judge="keyword", **settings),  # the test double, named
        {"negotiator_0": first, "negotiator_1": second},
        scenario=SCENARIO,
    )


def test_stubborn_never_agrees():
    record = episode(StubbornAgent(), StubbornAgent(), max_turns=7)
    assert not record["agreement"] and len(record["transcript"]) == 7
    assert all("[AGREE]" not in turn["text"] for turn in record["transcript"])


def test_conceding_agrees_at_its_first_counted_turn():
    record = episode(StubbornAgent(), ConcedingAgent())
    assert record["agreement"] and record["rounds_to_agreement"] == 2


def test_mediator_names_both_sides_values_and_reaches_agreement(bank):
    scenario = bank.get(SCENARIO)
    record = episode(MediatorAgent(), MediatorAgent())
    opening = record["transcript"][0]["text"]
    assert scenario.pair.persona_a.core_values[0] in opening
    assert scenario.pair.persona_b.core_values[0] in opening
    assert record["agreement"]
    for value in (scenario.pair.persona_a.core_values[0], scenario.pair.persona_b.core_values[0]):
        assert value in record["resolution"]


def test_mediator_scores_higher_than_stubborn_under_the_rubric_stand_in():
    assert (
        episode(MediatorAgent(), MediatorAgent())["reward"]
        > episode(StubbornAgent(), StubbornAgent())["reward"]
    )


def test_random_agent_is_reproducible_per_seed_and_varies_across_seeds():
    first = [episode(RandomAgent(seed=1), RandomAgent(seed=2))["transcript"] for _ in range(2)]
    assert first[0] == first[1]
    other = episode(RandomAgent(seed=3), RandomAgent(seed=4))["transcript"]
    assert other != first[0]
    with pytest.raises(ValueError, match="agree_probability"):
        RandomAgent(agree_probability=1.5)


def test_random_agent_agrees_when_probability_is_one():
    assert episode(StubbornAgent(), RandomAgent(agree_probability=1.0))["rounds_to_agreement"] == 2


def test_act_batch_uses_batch_method_or_falls_back():
    observations = [
        {"turn": 0, "own_values": ("a",), "partner_values": ("b",), "phase": "dialogue"}
    ] * 3
    assert act_batch(StubbornAgent(), observations) == [StubbornAgent()(observations[0])] * 3
    assert act_batch(lambda observation: "hi", observations) == ["hi"] * 3

    class Broken:
        def act_batch(self, observations):
            return ["only one"]

        def __call__(self, observation):
            return "x"

    with pytest.raises(ValueError, match="1 utterances for 3 observations"):
        act_batch(Broken(), observations)


def test_load_agent_specs():
    assert isinstance(load_agent("scripted:mediator"), MediatorAgent)
    assert load_agent("scripted:random", seed=5).seed == 5
    assert load_agent("agents.scripted:StubbornAgent").name == "stubborn"
    with pytest.raises(AgentSpecError, match="unknown scripted agent 'sulky'"):
        load_agent("scripted:sulky")
    with pytest.raises(AgentSpecError, match="cannot import"):
        load_agent("no_such_module_xyz:agent")
    with pytest.raises(AgentSpecError, match="unknown agent spec"):
        load_agent("mediator")


def test_load_agent_from_a_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def agent(observation):\n    return 'from a file [AGREE]'\n")
    agent = load_agent(f"{path}:agent")
    assert agent({}) == "from a file [AGREE]"
