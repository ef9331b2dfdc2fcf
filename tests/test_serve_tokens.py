"""The server's trainer-facing protocol, over real sockets on 127.0.0.1: ``/v1/completions``
on token ids, and LoRA adapters loaded, used and unloaded at run time. The model is the
tiny random Llama; adapters are random LoRA weights made for each test."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from llm.interface import GenerationSettings
from llm.serve import ChatCompletionServer
from llm.transformers_backend import TransformersBackend
from tests.test_openai_backend import CannedBackend
from tests.test_serve import post

GUARD_SECONDS = 60
GREEDY = GenerationSettings(max_new_tokens=6, temperature=0.0)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def backend(tiny_model_dir):
    """A fresh backend on the tiny model: loading adapters changes the model it holds."""
    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> list[Path]:
    """Two LoRA adapters of the tiny model with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        folder = tmp_path_factory.mktemp(f"adapter{seed}")
        get_peft_model(model, lora).save_pretrained(folder)
        folders.append(folder)
    return folders


def call(server: ChatCompletionServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """(status, JSON answer) of a POST (or, without a body, a GET) to ``path``."""
    return post(server.url, body, endpoint=path)


def close(values: list[float], expected: list[float], tolerance: float) -> bool:
    return len(values) == len(expected) and all(
        math.isclose(a, b, abs_tol=tolerance) for a, b in zip(values, expected, strict=True)
    )


def prompt_ids(backend: TransformersBackend, text: str) -> list[int]:
    return backend.encode([backend.render([{"role": "user", "content": text}])])[0]


def completion(prompt: Any, model: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 0, **fields}
    return body if model is None else {**body, "model": model}


def test_token_id_prompts_get_the_sampled_ids_and_logprobs_the_backend_gives(backend):
    prompts = [prompt_ids(backend, "Hello there"), prompt_ids(backend, "Split the bill?")]
    expected = backend.generate_from_ids(prompts, GREEDY)
    with ChatCompletionServer(backend) as server:
        status, answer = call(server, "completions", completion(prompts, return_token_ids=True))
        assert status == 200, answer
        assert answer["object"] == "text_completion" and len(answer["choices"]) == 2
        for index, (choice, generation) in enumerate(zip(answer["choices"], expected, strict=True)):
            assert choice["index"] == index
            assert choice["token_ids"] == generation.token_ids
            assert choice["prompt_token_ids"] == prompts[index]
            assert choice["text"] == generation.text
            assert choice["finish_reason"] == generation.finish_reason
            logprobs = choice["logprobs"]["token_logprobs"]
            assert close(logprobs, generation.logprobs, 1e-5)
        assert answer["usage"]["completion_tokens"] == sum(len(g.token_ids) for g in expected)


def test_tokens_can_be_spelt_as_token_ids_as_vllm_does(backend):
    prompt = prompt_ids(backend, "Hello there")
    [generation] = backend.generate_from_ids([prompt], GREEDY)
    with ChatCompletionServer(backend) as server:
        _, answer = call(server, "completions", completion(prompt, return_tokens_as_token_ids=True))
    [choice] = answer["choices"]
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in generation.token_ids]
    assert "token_ids" not in choice  # only with return_token_ids


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ([1, 2, -3], "prompt[2]"),
        ([[1, 2], "x", []], "prompt[2]"),
        ([[1, 2], [3, -1]], "prompt[1][1]"),
        ([1, True], "prompt[1]"),
        ({"ids": [1]}, "prompt"),
        ([], "prompt"),
    ],
)
def test_malformed_prompts_get_400_naming_the_prompt(backend, prompt, named):
    with ChatCompletionServer(backend) as server:
        status, answer = call(server, "completions", completion(prompt))
    assert status == 400
    assert answer["error"]["message"].startswith(f"{named}:")


def test_a_token_id_outside_the_vocabulary_gets_400_naming_its_position(backend):
    size = backend.vocabulary_size
    with ChatCompletionServer(backend) as server:
        status, answer = call(server, "completions", completion([[1, 2], [5, size]]))
        assert status == 400
        assert answer["error"]["message"].startswith("prompt[1][1]: token id")
        assert call(server, "completions", completion([5, 6]))[0] == 200  # serves on


def test_a_text_prompt_is_tokenised_without_special_tokens(backend):
    text = backend.render([{"role": "user", "content": "Hello there"}])
    [generation] = backend.generate_from_ids([prompt_ids(backend, "Hello there")], GREEDY)
    with ChatCompletionServer(backend) as server:
        _, answer = call(server, "completions", completion(text, return_token_ids=True))
    assert answer["choices"][0]["token_ids"] == generation.token_ids


def test_an_unknown_model_name_gets_404_listing_what_is_served(backend):
    with ChatCompletionServer(backend, model_name="tiny") as server:
        assert call(server, "completions", completion([1, 2], model="tiny"))[0] == 200
        status, answer = call(server, "completions", completion([1, 2], model="policy-7"))
        assert status == 404 and "'tiny'" in answer["error"]["message"]
        chat = {"model": "other", "messages": [{"role": "user", "content": "Hi"}]}
        assert call(server, "chat/completions", chat)[0] == 404


def test_an_adapter_loaded_at_run_time_answers_as_that_adapter_loaded_at_start(
    backend, adapters, tiny_model_dir
):
    prompt = prompt_ids(backend, "Split the bill?")
    [base] = backend.generate_from_ids([prompt], GREEDY)
    references = [
        TransformersBackend(
            str(tiny_model_dir), adapter=str(a), device="cpu", dtype="float32"
        ).generate_from_ids([prompt], GREEDY)[0]
        for a in adapters
    ]
    with ChatCompletionServer(backend, model_name="tiny") as server:
        for name, folder in zip(("first", "second"), adapters, strict=True):
            body = {"lora_name": name, "lora_path": str(folder)}
            assert call(server, "load_lora_adapter", body)[0] == 200
        listed = [m["id"] for m in call(server, "models")[1]["data"]]
        assert listed == ["tiny", "first", "second"]

        def answer(model: str) -> dict[str, Any]:
            _, body = call(server, "completions", completion(prompt, model, return_token_ids=True))
            return body["choices"][0]

        for name, reference in zip(("first", "second", "tiny"), [*references, base], strict=True):
            choice = answer(name)
            assert choice["token_ids"] == reference.token_ids, name
            logprobs = choice["logprobs"]["token_logprobs"]
            assert close(logprobs, reference.logprobs, 1e-4)
        # the adapters differ from the base model and from each other
        assert (
            len(
                {
                    tuple(answer(n)["logprobs"]["token_logprobs"])
                    for n in ("first", "second", "tiny")
                }
            )
            == 3
        )

        assert call(server, "unload_lora_adapter", {"lora_name": "first"})[0] == 200
        assert call(server, "completions", completion(prompt, "first"))[0] == 404
        assert answer("second")["token_ids"] == references[1].token_ids
        assert call(server, "unload_lora_adapter", {"lora_name": "second"})[0] == 200
        assert answer("tiny")["token_ids"] == base.token_ids  # back to the plain model


def test_adapter_requests_that_cannot_be_served_get_a_clear_error(backend, adapters, tmp_path):
    with ChatCompletionServer(backend, model_name="tiny") as server:
        status, answer = call(
            server, "load_lora_adapter", {"lora_name": "a", "lora_path": str(tmp_path)}
        )
        assert status == 400 and answer["error"]["message"].startswith("lora_path:")
        assert "adapter_config.json" in answer["error"]["message"]
        assert call(server, "load_lora_adapter", {"lora_name": "a"})[0] == 400
        assert call(server, "load_lora_adapter", {"lora_path": str(adapters[0])})[0] == 400
        ok = {"lora_name": "a", "lora_path": str(adapters[0])}
        assert call(server, "load_lora_adapter", ok)[0] == 200
        status, answer = call(server, "load_lora_adapter", ok)
        assert status == 400 and "already loaded" in answer["error"]["message"]
        taken = {"lora_name": "tiny", "lora_path": str(adapters[0])}
        assert call(server, "load_lora_adapter", taken)[0] == 400
        status, answer = call(server, "unload_lora_adapter", {"lora_name": "b"})
        assert status == 404 and "'b'" in answer["error"]["message"]
    with ChatCompletionServer(CannedBackend()) as server:
        status, answer = call(server, "load_lora_adapter", ok)
        assert status == 400 and "cannot load adapters" in answer["error"]["message"]
        status, answer = call(server, "completions", completion([1, 2]))
        assert status == 400 and "cannot generate from token ids" in answer["error"]["message"]


@pytest.mark.parametrize("path", ["completions", "load_lora_adapter", "unload_lora_adapter"])
def test_a_body_that_is_not_an_object_gets_400(backend, path):
    with ChatCompletionServer(backend) as server:
        status, answer = call(server, path, [1, 2])  # type: ignore[arg-type]
        assert status == 400 and answer["error"]["message"].startswith("request body:")
        assert call(server, "completions", completion([5, 6]))[0] == 200  # serves on


def test_an_adapter_of_another_model_is_refused_and_changes_nothing(backend, adapters, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = LlamaConfig(
        vocab_size=backend.vocabulary_size,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(LlamaForCausalLM(wider), lora).save_pretrained(tmp_path / "other")
    prompt = prompt_ids(backend, "Split the bill?")
    [base] = backend.generate_from_ids([prompt], GREEDY)
    with ChatCompletionServer(backend, model_name="tiny") as server:
        body = {"lora_name": "other", "lora_path": str(tmp_path / "other")}
        status, answer = call(server, "load_lora_adapter", body)
        assert status == 400 and "trained on another model" in answer["error"]["message"]
        assert [m["id"] for m in call(server, "models")[1]["data"]] == ["tiny"]
        _, answer = call(server, "completions", completion(prompt, return_token_ids=True))
        assert answer["choices"][0]["token_ids"] == base.token_ids
        good = {"lora_name": "good", "lora_path": str(adapters[0])}
        assert call(server, "load_lora_adapter", good)[0] == 200  # the server loads on


def test_stop_token_ids_other_than_the_models_own_end_of_turn_get_400(backend):
    own = backend.stop_token_ids
    other = next(i for i in range(backend.vocabulary_size) if i not in own)
    prompt = [prompt_ids(backend, "Hello there")]
    with ChatCompletionServer(backend) as server:
        status, _ = call(server, "completions", completion(prompt, stop_token_ids=own))
        refused, answer = call(server, "completions", completion(prompt, stop_token_ids=[other]))
        malformed, named = call(server, "completions", completion(prompt, stop_token_ids="2"))
    assert status == 200
    assert refused == 400 and f"[{other}] would be ignored" in answer["error"]["message"]
    assert malformed == 400 and named["error"]["message"].startswith("stop_token_ids:")
