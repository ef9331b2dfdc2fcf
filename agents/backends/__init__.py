"""LLM backends shared by agents and judges: a local transformers model or an OpenAI-compatible server."""

from agents.backends.base import BackendError, Generation, GenerationSettings, LLMBackend

__all__ = ["BackendError", "Generation", "GenerationSettings", "LLMBackend"]
