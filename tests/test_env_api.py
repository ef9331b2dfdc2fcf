"""PettingZoo's and Gymnasium's own conformance tests on our environments."""

import gymnasium
import pettingzoo
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test

import negotiation_env
from agents import MediatorAgent
from negotiation_env import EpisodeOver
from negotiation_env.single_agent import SingleAgentNegotiationEnv


def test_aec_api_test_passes():
    api_test(pettingzoo.make("aec", negotiation_env.ENV_ID), num_cycles=30)


def test_parallel_api_test_passes():
    parallel_api_test(pettingzoo.make("parallel", negotiation_env.ENV_ID), num_cycles=30)


def test_seed_tests_pass():
    seed_test(negotiation_env.env, num_cycles=20)
    parallel_seed_test(negotiation_env.parallel_env, num_cycles=20)


def test_render_test_passes_in_both_modes(capsys):
    render_test(negotiation_env.env)
    assert "Scenario" in capsys.readouterr().out  # "human" printed the transcript


def test_gymnasium_single_agent_view_passes_check_env():
    env = gymnasium.make(negotiation_env.SINGLE_AGENT_ENV_ID, partner=MediatorAgent())
    check_env(env.unwrapped, skip_render_check=True)


def test_observation_space_is_the_same_object_per_agent():
    env = negotiation_env.raw_env()
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)


def _finished(env):
    env.reset(options={"scenario": "pro-001/cost_vs_quality"})
    for text in ("A pilot.", "Fine. [AGREE]", "We run a 30-day pilot."):
        env.step(text)
    return env


@pytest.mark.parametrize("make", [negotiation_env.raw_env, negotiation_env.env])
def test_stepping_a_finished_aec_episode_raises_the_same_error_in_both_forms(make):
    env = _finished(make(judge="keyword"))
    with pytest.raises(EpisodeOver, match="step it with None"):
        env.step("one more thing")  # a terminated agent gets only the dead step
    for _ in list(env.agents):
        env.step(None)
    assert env.agents == []
    for action in ("more", None):
        with pytest.raises(EpisodeOver, match="call reset"):
            env.step(action)
    with pytest.raises(EpisodeOver, match="call reset"):
        env.last()
    with pytest.raises(RuntimeError):  # also catchable as PettingZoo's error types
        env.step(None)
    with pytest.raises(ValueError):
        env.step(None)


def test_the_parallel_and_gymnasium_forms_raise_it_too():
    env = negotiation_env.parallel_env(judge="keyword")
    env.reset(options={"scenario": "pro-001/cost_vs_quality"})
    with pytest.raises(TypeError, match="action of negotiator_1 must be a str"):
        env.step({"negotiator_0": "A pilot.", "negotiator_1": 12})
    env.step({"negotiator_0": "A pilot."})
    env.step({"negotiator_1": "Fine. [AGREE]"})
    env.step({"negotiator_0": "We run a 30-day pilot."})
    with pytest.raises(EpisodeOver):
        env.step({"negotiator_0": "more"})
    single = SingleAgentNegotiationEnv(partner=MediatorAgent(), judge="keyword")
    single.reset(seed=0)
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = single.step("That works for me. [AGREE]")
    with pytest.raises(EpisodeOver):
        single.step("more")


def test_the_gymnasium_view_takes_its_partner_as_a_spec_through_agents():
    from agents import single_agent_env

    env = single_agent_env("scripted:mediator", learner="negotiator_1", judge="keyword")
    observation, _ = env.reset(seed=3)
    assert observation["acting"] == 1 and env.learner == "negotiator_1"
    assert type(env.partner).__name__ == "MediatorAgent"
    with pytest.raises(TypeError, match="agents.single_agent_env"):
        SingleAgentNegotiationEnv(partner="scripted:mediator")
