"""The grounded observer: behavioural features, trajectory constraints and overlays.

    from negotiation_env.observer import Observer, ObserverWrapper
    env = ObserverWrapper(negotiation_env.env(), Observer.default())

See docs/observer.md for the constraint language and the overlays.
"""

from negotiation_env.observer.features import (
    CHEAP_FEATURES,
    EmbeddingFeatures,
    LLMFeatures,
    Utterance,
)
from negotiation_env.observer.language import ConstraintSyntaxError, parse
from negotiation_env.observer.observer import (
    OVERLAYS,
    Constraint,
    Decision,
    ObservedEpisode,
    Observer,
    Violation,
)
from negotiation_env.observer.wrapper import ObserverParallelWrapper, ObserverWrapper

__all__ = [
    "CHEAP_FEATURES",
    "OVERLAYS",
    "Constraint",
    "ConstraintSyntaxError",
    "Decision",
    "EmbeddingFeatures",
    "LLMFeatures",
    "ObservedEpisode",
    "Observer",
    "ObserverParallelWrapper",
    "ObserverWrapper",
    "Utterance",
    "Violation",
    "parse",
]
