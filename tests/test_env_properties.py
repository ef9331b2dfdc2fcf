"""Property-based tests: arbitrary text through step() never breaks the env's invariants."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from negotiation_env import raw_env

MAX_CHARS = 300
utterances = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec=None), max_size=400),  # any code point, surrogates too
    st.just(""),
    st.just(" \n\t "),
    st.text(min_size=MAX_CHARS + 1, max_size=MAX_CHARS * 3),  # over-long
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(utterances, min_size=1, max_size=10), seed=st.integers(0, 10_000))
def test_any_text_keeps_the_env_consistent(actions, seed):
    env = raw_env(max_utterance_chars=MAX_CHARS, max_turns=5, context_turns=2)
    env.reset(seed=seed)
    steps = 0
    for action in actions:
        if not env.agents or env.terminations[env.agent_selection]:
            break
        agent = env.agent_selection
        before = len(env.negotiation.turns)
        phase = env.negotiation.phase
        env.step(action)
        steps += 1
        negotiation = env.negotiation
        if phase == "dialogue":
            assert len(negotiation.turns) == before + 1
            turn = negotiation.turns[-1]
            assert turn.speaker == agent
            assert len(turn.text) <= MAX_CHARS
            turn.text.encode("utf-8")  # always encodable
            assert ("empty" in turn.flags) == (turn.text == "")
        for seat in env.possible_agents:
            observation = env.observe(seat)
            assert env.observation_space(seat).contains(observation)
        assert env.negotiation.turns[: len(negotiation.turns)] == negotiation.turns
        assert len(env.infos[agent]["transcript"]) == len(negotiation.turns)
        assert len(negotiation.turns) <= 5
    assert steps >= 1


@settings(max_examples=25, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None), max_size=2000))
def test_summary_accepts_any_text_and_ends_with_a_float_reward(text):
    env = raw_env(max_utterance_chars=MAX_CHARS)
    env.reset(options={"scenario": "eve-001/privacy_vs_safety"})
    env.step("Let us agree on a plan.")
    env.step("Yes. [AGREE]")
    env.step(text)
    assert env.negotiation.done
    assert isinstance(env.rewards["negotiator_0"], float)
    assert 0.0 <= env.rewards["negotiator_0"] <= 5.0
