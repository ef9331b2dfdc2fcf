"""LLM agents in the env: real episodes on the embedded model, batching, specs, serving."""

import json
import subprocess
import sys

import pytest

from agents import load_agent, play_episode
from agents.llm import LLMAgent
from agents.rollout import play_episodes
from agents.specs import AgentSpecError
from llm.interface import Generation, GenerationSettings
from llm.serve import ChatCompletionServer
from llm.specs import load_backend, load_text_generator
from negotiation_env import raw_env

SCENARIO = "pro-001/cost_vs_quality"
SHORT = GenerationSettings(max_new_tokens=20, temperature=0.7, top_p=0.95, seed=0)
SHORT_SUMMARY = GenerationSettings(max_new_tokens=24, temperature=0.1)


class RecordingBackend:
    """Test double: answers each conversation with its index and records every call."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def generate(self, conversations, settings):
        self.calls.append((len(conversations), settings))
        return [
            Generation(text=f"reply {i}", finish_reason="stop", token_ids=[1, 2])
            for i in range(len(conversations))
        ]


def test_full_episode_between_two_llm_agents(smollm2):
    agent = LLMAgent(smollm2, dialogue=SHORT, summary=SHORT_SUMMARY)
    record = play_episode(
        raw_env(max_turns=3), {"negotiator_0": agent, "negotiator_1": agent}, scenario=SCENARIO
    )
    assert len(record["transcript"]) in (2, 3)  # at most 3 turns; fewer if the model wrote [AGREE]
    assert all(turn["text"] for turn in record["transcript"])
    assert record["resolution"] and isinstance(record["reward"], float)
    generation = agent.last_generations[0]
    assert generation.token_ids and len(generation.logprobs) == len(generation.token_ids)


def test_batched_rollout_calls_the_backend_once_per_round_for_all_envs():
    backend = RecordingBackend()
    agent = LLMAgent(backend)
    envs = [raw_env(max_turns=3) for _ in range(4)]
    records = play_episodes(
        envs, {"negotiator_0": agent, "negotiator_1": agent}, scenarios=[SCENARIO] * 4
    )
    assert [len(r["transcript"]) for r in records] == [3, 3, 3, 3]
    # 3 dialogue rounds + 1 summary round, each one call with all 4 envs
    assert [n for n, _ in backend.calls] == [4, 4, 4, 4]
    assert [s.temperature for _, s in backend.calls] == [0.7, 0.7, 0.7, 0.1]
    assert all(r["scenario"]["id"] == SCENARIO for r in records)


def test_mixed_phases_in_one_batch_use_each_phases_settings():
    backend = RecordingBackend()
    agent = LLMAgent(backend)
    observations = [
        {"phase": "dialogue", "messages": ()},
        {"phase": "summary", "messages": ()},
        {"phase": "dialogue", "messages": ()},
    ]
    assert agent.act_batch(observations) == ["reply 0", "reply 0", "reply 1"]
    assert [(n, s.temperature) for n, s in backend.calls] == [(2, 0.7), (1, 0.1)]
    assert agent.generated_tokens == 6


def test_llm_specs_share_backends_and_apply_options(smollm2):
    agent = load_agent(
        "smollm2?temperature=0.2&max_new_tokens=12&summary_max_new_tokens=30&seed=4"
        "&summary_no_repeat_ngram_size=6"
    )
    assert agent.backend is smollm2  # loaded once per process
    assert (agent.dialogue.temperature, agent.dialogue.max_new_tokens, agent.dialogue.seed) == (
        0.2,
        12,
        4,
    )
    assert (agent.summary.max_new_tokens, agent.summary.temperature, agent.summary.seed) == (
        30,
        0.1,
        4,
    )
    assert (agent.summary.no_repeat_ngram_size, agent.dialogue.no_repeat_ngram_size) == (6, 0)
    with pytest.raises(AgentSpecError, match="unknown option"):
        load_agent("smollm2?colour=blue")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("smollm2?temperature=hot", "option temperature must be a number, got 'hot'"),
        ("smollm2?top_k=2.5", "option top_k must be a whole number"),
        ("smollm2?temperature=-1", "temperature: must be >= 0"),
        ("smollm2?summary_no_repeat_ngram_size=-2", "no_repeat_ngram_size: must be >= 0"),
        ("smollm2?temprature=0.3", "sampling options: \\['temperature'"),
        ("smollm2?temprature=0.3", "backend options: \\['adapter'"),
        ("smollm2?a&&b", "malformed options after '\\?'"),
    ],
)
def test_bad_agent_options_are_one_clear_error_naming_the_spec(spec, message):
    with pytest.raises(AgentSpecError, match=message) as error:
        load_agent(spec)
    assert str(error.value).startswith(repr(spec)[:-1].split("?")[0])


def test_a_missing_model_folder_or_adapter_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder at ./no/such/model"):
        load_agent("hf:./no/such/model")
    with pytest.raises(FileNotFoundError, match=f"adapter: no folder at {tmp_path / 'gone'}"):
        load_agent(f"smollm2?adapter={tmp_path / 'gone'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json"):
        load_agent(f"smollm2?adapter={tmp_path / 'empty'}")
    with pytest.raises(AgentSpecError, match="openai:MODEL@URL"):
        load_backend("openai:just-a-model")


def test_episode_through_an_openai_compatible_server_driven_by_the_embedded_model(smollm2):
    with ChatCompletionServer(smollm2, model_name="smollm2") as server:
        agent = load_agent(
            f"openai:smollm2@{server.url}?max_new_tokens=16&summary_max_new_tokens=16"
        )
        record = play_episode(
            raw_env(max_turns=2), {"negotiator_0": agent, "negotiator_1": agent}, scenario=SCENARIO
        )
    assert len(record["transcript"]) == 2 and record["resolution"]
    assert agent.last_generations[0].logprobs  # the server reports token log-probabilities


def test_text_generator_from_an_llm_spec(smollm2):
    generate = load_text_generator("smollm2?max_new_tokens=8")
    text = generate("Write one word.")
    assert isinstance(text, str) and text


def test_cli_plays_an_llm_episode_and_saves_it(tmp_path):
    out = tmp_path / "episode.jsonl"
    spec = "smollm2?max_new_tokens=12&summary_max_new_tokens=16"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "negotiate",
            "play",
            "--agent0",
            spec,
            "--agent1",
            spec,
            "--max-turns",
            "2",
            "--seed",
            "5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Resolution by" in completed.stdout
    record = json.loads(out.read_text())
    assert record["agent_specs"]["negotiator_0"] == spec and len(record["transcript"]) == 2
