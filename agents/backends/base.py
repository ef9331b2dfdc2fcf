"""The backend interface (defined in :mod:`negotiation_env.backend_interface`, re-exported here)."""

from negotiation_env.backend_interface import (
    BackendError,
    Conversation,
    Generation,
    GenerationSettings,
    LLMBackend,
    Message,
)

__all__ = [
    "BackendError",
    "Conversation",
    "Generation",
    "GenerationSettings",
    "LLMBackend",
    "Message",
]
