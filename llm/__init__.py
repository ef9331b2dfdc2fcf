"""The LLM runtime, the ground floor every other package may import.

- :mod:`llm.interface`: the backend protocol, generation settings and typed errors;
- :mod:`llm.transformers_backend`: local causal LMs, batched, with KV-cache prefix reuse
  (:mod:`llm.kv_cache`) and shared-prefix attention (:mod:`llm.shared_prefix`);
- :mod:`llm.openai_backend`: any OpenAI-compatible ``/v1/chat/completions`` server;
- :mod:`llm.reward_backend`: sequence-classification reward models (the shipped ``ca-rm-v2``);
- :mod:`llm.models`: the registry of embedded models, their fetcher and cache;
- :mod:`llm.serve`: any backend served as an OpenAI-compatible HTTP API (chat, completions
  on token ids, LoRA adapters loaded at run time);
- :mod:`llm.rollout_servers`: a pool of such servers (or vLLM) generating a trainer's
  rollouts from token ids, with the sampled ids and log-probabilities;
- :mod:`llm.specs`: backends from short specs (``smollm2``, ``hf:PATH``, ``openai:MODEL@URL``).

Importing this package loads no model library; the backends import torch and transformers
when they are built.
"""

from llm.interface import (
    BackendError,
    ContextLengthError,
    Conversation,
    Generation,
    GenerationCancelled,
    GenerationSettings,
    LLMBackend,
    LogprobsUnavailable,
    Message,
)

__all__ = [
    "BackendError",
    "ContextLengthError",
    "Conversation",
    "Generation",
    "GenerationCancelled",
    "GenerationSettings",
    "LLMBackend",
    "LogprobsUnavailable",
    "Message",
]
