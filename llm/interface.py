"""The LLM backend interface that agents, judges and trainers share.

A backend turns chat conversations into generations. Two implementations ship:
:class:`~llm.transformers_backend.TransformersBackend` (a local causal LM, batched) and
:class:`~llm.openai_backend.OpenAIBackend` (any ``/v1/chat/completions`` server). Both take a
list of conversations and return a list of :class:`Generation`, one per conversation, in
order. Failures are typed (:class:`BackendError` and its subclasses) so that callers choose
a fallback by the error's type, never by its message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = Sequence[Message]


class BackendError(RuntimeError):
    """A backend could not produce a valid answer (after its retries); the message says why."""


class ContextLengthError(BackendError):
    """A prompt (with the tokens asked for) does not fit the model's context; retrying the
    same request cannot help, so a server answers it with HTTP 400."""


class LogprobsUnavailable(BackendError):
    """The backend cannot give token log-probabilities (e.g. a server that returns no
    ``top_logprobs``); a caller that can parse answer text instead falls back to that."""


class GenerationCancelled(BackendError):
    """A generation was stopped before it finished, because its caller no longer wants it
    (e.g. the client of :mod:`llm.serve` disconnected)."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0 disables top-k
    seed: int | None = None
    stop: tuple[str, ...] = ()  # extra stop strings besides the end-of-turn token
    logprobs: bool = True  # return per-token log-probabilities when the backend can
    # no run of this many tokens is generated twice in one answer (the prompt does not
    # count, so an answer may quote it); 0 disables. A guard against the loops small models
    # fall into at low temperature, like transformers' option of the same name.
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {self.top_k}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"no_repeat_ngram_size: must be >= 0 (0 disables), got {self.no_repeat_ngram_size}"
            )


@dataclass
class Generation:
    """One generated answer.

    ``token_ids`` and ``logprobs`` cover the generated tokens only (not the prompt), one
    entry per token; ``logprobs[i]`` is log p(token_i | prompt, tokens_<i) under the
    distribution the token was sampled from (logits / temperature; raw logits when greedy),
    before top-p/top-k truncation and the ``no_repeat_ngram_size`` ban. Remote backends fill
    ``tokens`` (token strings) instead of ``token_ids`` when the server does not report ids;
    ``logprobs`` is None when the backend cannot provide them.
    """

    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    tokens: list[str] | None = None
    prompt_token_ids: list[int] | None = None


@runtime_checkable
class LLMBackend(Protocol):
    name: str

    def generate(
        self, conversations: Sequence[Conversation], settings: GenerationSettings
    ) -> list[Generation]:
        """One generation per conversation, in order."""
        ...

    def next_token_logprobs(
        self,
        conversations: Sequence[Conversation],
        candidates: Sequence[str],
        assistant_prefix: str = "",
    ) -> list[dict[str, float]]:
        """For each conversation, log p(candidate) for the first token the assistant writes
        (after ``assistant_prefix``, where the backend supports a prefix). Candidates the
        backend cannot score get ``-inf``. Used by judges to read off expected scores."""
        ...


@contextmanager
def prefix_caching(backends: Iterable[object]) -> Iterator[None]:
    """Open the prefix-caching scope of every backend that offers one (an optional part of
    the interface: ``backend.prefix_caching()``, a context manager inside which prompts
    reuse the computation of prefixes already seen). Rollouts play their turns inside it;
    backends without it, or the same backend twice, are fine.

    >>> with prefix_caching([agent.backend for agent in seats.values()]):  # doctest: +SKIP
    ...     play_turns()
    """
    seen: set[int] = set()
    with ExitStack() as stack:
        for backend in backends:
            scope = getattr(backend, "prefix_caching", None)
            if scope is not None and id(backend) not in seen:
                seen.add(id(backend))
                stack.enter_context(scope())
        yield


# A sentence ends at . ! ? or an ellipsis, optionally followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
CUT_TURN_POLICIES = ("sentence", "keep")


def end_at_sentence(
    generation: Generation, decode: Callable[[list[int]], str] | None
) -> Generation:
    """A generation cut off by the token limit, ended after its last complete sentence.

    A turn that stopped at ``max_new_tokens`` mid-sentence reads as cut off to the partner
    and the judge. This returns the generation up to the end of its last complete sentence:
    the text, and the shortest prefix of ``token_ids`` (with its ``logprobs``) that decodes
    to it, so a trainer puts the gradient only on the tokens that were kept. The tokens
    sampled after that point were never seen by anyone and get no credit or blame.
    ``finish_reason`` stays ``"length"``. A generation that finished by itself, or holds no
    complete sentence, is returned unchanged. ``decode`` maps token ids to text (the
    tokenizer's); without token ids the token strings are joined, and without those only
    the text is cut. Token ids without ``decode`` leave the generation unchanged, since the
    kept tokens could not be told.
    """
    if generation.finish_reason != "length":
        return generation
    ends = list(_SENTENCE_END.finditer(generation.text))
    if not ends or ends[-1].end() == len(generation.text.rstrip()):
        return generation
    text = generation.text[: ends[-1].end()].rstrip()
    if generation.token_ids and decode is not None:
        pieces = lambda k: decode(generation.token_ids[:k])  # noqa: E731
        count = len(generation.token_ids)
    elif generation.tokens:
        pieces = lambda k: "".join(generation.tokens[:k])  # noqa: E731
        count = len(generation.tokens)
    elif generation.token_ids:  # ids that cannot be decoded: text and tokens must agree
        return generation
    else:
        return dataclasses.replace(generation, text=text)
    keep = count
    while keep > 1 and len(pieces(keep - 1).strip()) >= len(text):
        keep -= 1
    return dataclasses.replace(
        generation,
        text=text,
        token_ids=generation.token_ids[:keep],
        logprobs=None if generation.logprobs is None else generation.logprobs[:keep],
        tokens=None if generation.tokens is None else generation.tokens[:keep],
    )


def token_decoder(backend: object) -> Callable[[list[int]], str] | None:
    """The backend's token-ids-to-text function (its tokenizer's), or None if it has none."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return None
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
