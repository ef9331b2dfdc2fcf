"""The backend interface (defined in :mod:`negotiation_env.backend_interface`, re-exported here)."""

from negotiation_env.backend_interface import (
    BackendError,
    ContextLengthError,
    Conversation,
    Generation,
    GenerationCancelled,
    GenerationSettings,
    LLMBackend,
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
    "Message",
]
