"""Shared fixtures. HF_HUB_OFFLINE is set for the whole run: nothing may reach a model hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from negotiation_env.scenarios import ScenarioBank  # noqa: E402


@pytest.fixture(scope="session")
def bank() -> ScenarioBank:
    return ScenarioBank.default()


@pytest.fixture
def scenario(bank):
    return bank.get("pro-001/cost_vs_quality")


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (fetched once into the model cache, then shared).
    ``NEGOTIATION_TEST_BACKEND`` names another backend spec: the CUDA check runs these tests
    with ``smollm2?dtype=float32`` (the backend's default dtype on CUDA is bf16)."""
    from llm.specs import load_backend

    return load_backend(os.environ.get("NEGOTIATION_TEST_BACKEND", "smollm2"))


def chat(text: str, system: str = "You are a careful negotiator.") -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2):
    """A tiny random Llama with the embedded model's tokenizer (see tests/scripts/tiny.py)."""
    from tests.scripts.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), smollm2.tokenizer)
