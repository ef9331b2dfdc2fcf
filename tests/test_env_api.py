"""PettingZoo's and Gymnasium's own conformance tests on our environments."""

import gymnasium
import pettingzoo
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test

import negotiation_env
from agents import MediatorAgent


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
