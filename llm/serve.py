"""Serve any :class:`~llm.interface.LLMBackend` as an OpenAI-compatible HTTP API.

Useful to run a local model in one process and use it from others, e.g. a judge when GPU
memory is short: the other processes talk to it with
:class:`~llm.openai_backend.OpenAIBackend`.

>>> from llm.openai_backend import OpenAIBackend
>>> with ChatCompletionServer(my_backend) as server:  # doctest: +SKIP
...     remote = OpenAIBackend(server.url, server.model_name)
...     remote.generate([[{"role": "user", "content": "Hi"}]], GenerationSettings())

Endpoints:

- ``POST /v1/chat/completions`` reads ``messages`` (required), ``max_tokens`` (or
  ``max_completion_tokens``), ``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``,
  ``logprobs``, ``top_logprobs`` and the extension ``candidates``. Omitted sampling fields
  take :class:`~llm.interface.GenerationSettings`' defaults; fields not listed here are
  ignored; ``stream`` and ``n`` > 1 are refused.
- ``POST /v1/completions`` (what a trainer's rollout uses, see :mod:`llm.rollout_servers`)
  reads ``prompt`` (token ids, text, or a list of either: one choice each), the same
  sampling fields, ``logprobs`` (an integer: the sampled tokens' log-probabilities, under
  logits / temperature as :class:`~llm.interface.Generation` defines them; only the
  sampled token is listed in ``top_logprobs``), and vLLM's ``return_tokens_as_token_ids``
  (tokens spelt ``token_id:N``) and ``return_token_ids`` (``token_ids`` and
  ``prompt_token_ids`` in each choice). Token ids are used as given, never re-tokenised.
  ``stop_token_ids`` may name only the model's own end-of-turn tokens, where every
  generation stops anyway (HTTP 400 for any other: it would not be honoured).
- ``POST /v1/load_lora_adapter`` (``lora_name``, ``lora_path``) and
  ``POST /v1/unload_lora_adapter`` (``lora_name``), as vLLM names them: several adapters
  stay resident, and a request whose ``model`` is an adapter's name is answered with that
  adapter (requests for different adapters are never batched together). Loading and
  unloading run between batches. A ``model`` that is neither the served model nor a
  loaded adapter gets HTTP 404, so a client never gets the base model in place of an
  adapter it asked for (e.g. from a server restarted since it was loaded).
- ``GET /v1/models`` lists the served model, named ``model_name``, and the loaded adapters.

``top_logprobs`` (with ``logprobs``): the first generated position lists the model's most
likely tokens there (a backend with ``next_token_top_logprobs``, as the local transformers
backend has), so a judge's client can rank its answer candidates without any extension;
later positions list none.

Scoring requests: when ``max_tokens`` is 1, ``top_logprobs`` > 0 and the request lists
``candidates`` (strings; :class:`~llm.openai_backend.OpenAIBackend` sends them
when created with ``send_candidates=True``), the answer comes from ``backend.next_token_logprobs`` alone: the
reply is the most likely candidate and ``top_logprobs`` of the first position lists the
candidates by log-probability (those the backend cannot score are left out). A final
assistant message is passed as ``assistant_prefix``.

JSON has no infinity, so a log-probability of ``-inf`` is sent as -9999.0 (vLLM's
convention). Requests are read on threads; one batching thread calls the backend (a local
model is not safe to drive from several threads at once). Requests that arrive while it is
busy are answered together: all waiting requests with the same sampling settings (up to
``max_batch_size``) in one batched call, the group of the oldest request first, so a request
waits for at most the batch that was running when it came. A seeded request is answered on
its own (its sample must not depend on who else was waiting); a request that fails in a
batch is retried alone, so it cannot fail the others. There is no continuous batching: a
short request that arrives during a long generation waits for that generation.
Bad requests get HTTP 400 (413 for a body over the limit) and backend exceptions HTTP 500,
all with ``{"error": {"message": ...}}``.

Limits, so that no client can hold the server:

- ``max_tokens`` above ``max_tokens`` (the server's; never above the model's context) gets
  HTTP 400 before anything is computed or reserved;
- a body over ``max_body_bytes`` gets HTTP 413; JSON nested too deeply to read, a lone
  surrogate in a string (which no tokenizer can encode) and any other malformed field get
  HTTP 400 naming the field;
- a prompt that does not fit the model's context with ``max_tokens`` gets HTTP 400
  (:class:`~llm.interface.ContextLengthError`) before anything is computed;
- a client that disconnects while its answer is generated cancels the generation (with a
  backend that offers ``cancelled_by``, as the local transformers backend does), so the
  next request does not wait for an answer nobody will read;
- each connection has ``socket_timeout`` seconds for every read and write: a connection
  that sends nothing, or a body shorter than its ``Content-Length``, is closed (HTTP 408
  for the latter) instead of holding a thread;
- at most ``max_connections`` connections are served at once; more get HTTP 503 at once.

Authentication: with ``api_key`` set, every request must carry
``Authorization: Bearer <api_key>`` (as with vLLM's ``--api-key``), else HTTP 401. Without
one, anyone who can reach the port can use the model: the server warns when it listens
beyond the loopback interface without a key.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import math
import selectors
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from llm.interface import (
    ContextLengthError,
    Generation,
    GenerationCancelled,
    GenerationSettings,
    LLMBackend,
    Message,
)

ROLES = ("system", "user", "assistant")
MAX_TOP_LOGPROBS = 20
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the default request body limit (--max-body-bytes)
MAX_TOKENS = 4096  # the default limit on a request's max_tokens (--max-tokens)
MAX_BATCH_SIZE = 32  # concurrent requests answered by one batched backend call, at most
NEG_INF_LOGPROB = -9999.0  # what vLLM sends for -inf, which JSON cannot carry
SEED_RANGE = (-(2**63), 2**63 - 1)  # a 64-bit signed integer, as OpenAI's API and vLLM take
SOCKET_TIMEOUT = 30.0
MAX_CONNECTIONS = 32
# Refused connections are answered on threads of their own, each reading the client's
# request for at most REFUSAL_LINGER_SECONDS so that the 503 is not lost to a reset.
REFUSALS_AT_ONCE = 16
REFUSAL_LINGER_SECONDS = 1.0
DISCONNECT_POLL_SECONDS = 0.1  # how soon a client that left is noticed during a generation
CHAT_ROUTE = "/v1/chat/completions"
ADAPTER_ROUTES = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
POST_ROUTES = (CHAT_ROUTE, "/v1/completions", *ADAPTER_ROUTES)


class BadRequest(ValueError):
    """A request the server cannot serve; the message names the field and what is accepted."""


class UnknownModel(BadRequest):
    """A request names a model that is neither the served one nor a loaded adapter (404)."""


@dataclass(frozen=True)
class ChatRequest:
    """A parsed ``/v1/chat/completions`` request."""

    messages: list[Message]
    settings: GenerationSettings
    top_logprobs: int = 0
    candidates: tuple[str, ...] = ()
    model: str | None = None  # the request's ``model``: the served model or a loaded adapter

    def split_prefix(self) -> tuple[list[Message], str]:
        """(the conversation, the final assistant message's text as the assistant prefix, or
        "" without one)."""
        if self.messages[-1]["role"] == "assistant":
            return self.messages[:-1], self.messages[-1]["content"]
        return self.messages, ""

    @property
    def is_scoring(self) -> bool:
        return bool(self.candidates) and self.top_logprobs > 0 and self.settings.max_new_tokens == 1


def parse_chat_request(payload: Any, max_tokens: int = MAX_TOKENS) -> ChatRequest:
    """Check a request body and turn it into messages and settings; raises :class:`BadRequest`.
    ``max_tokens`` is the most new tokens a request may ask for."""
    _check_object(payload)
    settings = _sampling(payload, max_tokens, logprobs=_boolean(payload, "logprobs", False))
    return ChatRequest(
        messages=_messages(payload.get("messages")),
        settings=settings,
        top_logprobs=_integer(payload, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS),
        candidates=tuple(_strings(payload.get("candidates"), "candidates")),
        model=_model(payload),
    )


@dataclass(frozen=True)
class CompletionRequest:
    """A parsed ``/v1/completions`` request: prompts as token ids (or text), answered with
    the sampled token ids and their log-probabilities, as a trainer needs them."""

    prompts: tuple[tuple[int, ...] | str, ...]
    names: tuple[str, ...]  # how error messages name each prompt: "prompt" or "prompt[i]"
    settings: GenerationSettings
    logprobs: int | None = None  # None: no log-probabilities in the answer
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids: "token_id:N"
    return_token_ids: bool = False  # vLLM's return_token_ids: token_ids, prompt_token_ids
    model: str | None = None
    stop_token_ids: tuple[int, ...] = ()  # vLLM's: only the model's own end-of-turn tokens


def parse_completion_request(payload: Any, max_tokens: int = MAX_TOKENS) -> CompletionRequest:
    """Check a ``/v1/completions`` body; raises :class:`BadRequest` naming the field."""
    _check_object(payload)
    logprobs = _integer(payload, "logprobs", None, 0, 20)
    settings = _sampling(payload, max_tokens, logprobs=logprobs is not None)
    if payload.get("echo"):
        raise BadRequest("echo: returning the prompt is not supported; leave echo out")
    if payload.get("suffix") is not None:
        raise BadRequest("suffix: not supported; leave suffix out")
    prompts, names = _prompts(payload.get("prompt"))
    stop_token_ids = payload.get("stop_token_ids") or []
    if not isinstance(stop_token_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in stop_token_ids
    ):
        raise BadRequest(
            f"stop_token_ids: expected a list of token ids, got {payload['stop_token_ids']!r:.80}"
        )
    return CompletionRequest(
        stop_token_ids=tuple(stop_token_ids),
        prompts=prompts,
        names=tuple(names),
        settings=settings,
        logprobs=logprobs,
        tokens_as_ids=_boolean(payload, "return_tokens_as_token_ids", False),
        return_token_ids=_boolean(payload, "return_token_ids", False),
        model=_model(payload),
    )


def _sampling(payload: Any, max_tokens: int, logprobs: bool) -> GenerationSettings:
    """The sampling fields both endpoints share, checked."""
    if payload.get("stream"):
        raise BadRequest("stream: streaming is not supported; send stream=false or leave it out")
    if payload.get("n") not in (None, 1):
        raise BadRequest(f"n: only 1 choice per request is supported, got {payload['n']!r}")
    defaults = GenerationSettings()
    max_tokens_field = "max_tokens" if "max_tokens" in payload else "max_completion_tokens"
    stop = payload.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    try:
        return GenerationSettings(
            max_new_tokens=_integer(
                payload, max_tokens_field, min(defaults.max_new_tokens, max_tokens), 1, max_tokens
            ),
            temperature=_number(payload, "temperature", defaults.temperature, 0.0),
            top_p=_number(payload, "top_p", defaults.top_p, 0.0, 1.0, open_below=True),
            top_k=_integer(payload, "top_k", defaults.top_k, 0),
            no_repeat_ngram_size=_integer(payload, "no_repeat_ngram_size", 0, 0),
            seed=_integer(payload, "seed", None, *SEED_RANGE),
            stop=tuple(_strings(stop, "stop")),
            logprobs=logprobs,
        )
    except ValueError as error:  # GenerationSettings' own checks, in case ours missed one
        raise BadRequest(str(error)) from None


@dataclass
class _Job:
    """One request waiting for, or being answered by, the batching thread."""

    request: ChatRequest | CompletionRequest | _AdapterChange
    cancelled: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None  # the response body, or the exception to raise

    def finish(self, result: Any) -> None:
        self.result = result
        self.done.set()


def _batch_key(request: ChatRequest | CompletionRequest | _AdapterChange) -> Any:
    """Requests with equal keys can share one backend call. A seeded request is never
    batched with others: its sample must not depend on who else was waiting; neither is a
    change of the loaded adapters."""
    if isinstance(request, _AdapterChange) or request.settings.seed is not None:
        return ("alone", id(request))
    if isinstance(request, CompletionRequest):
        return ("tokens", request.model, request.settings)
    if request.is_scoring:
        return (
            "score",
            request.model,
            request.candidates,
            request.top_logprobs,
            request.split_prefix()[1],
        )
    return ("generate", request.model, request.settings, request.top_logprobs)


@dataclass(frozen=True)
class _AdapterChange:
    """A load or unload of an adapter, run by the batching thread between batches."""

    name: str
    path: str | None  # None: unload


class _AllSet:
    """Set when every one of ``events`` is set: a batch is cancelled only when no client
    still wants an answer from it."""

    def __init__(self, events: Sequence[threading.Event]):
        self.events = list(events)

    def is_set(self) -> bool:
        return all(event.is_set() for event in self.events)


class ChatCompletionServer:
    """An OpenAI-compatible HTTP server around ``backend``, on a background thread.

    ``port=0`` picks a free port; :attr:`url` tells which. The server listens from
    construction on; :meth:`start` begins answering, :meth:`stop` waits for requests in
    progress and closes the port (a stopped server cannot be started again).

    ``api_key``: the Bearer token every request must carry (None: no authentication; a
    warning if ``host`` is beyond loopback). ``socket_timeout``: seconds each read or write
    on a connection may take. ``max_connections``: connections served at once.

    >>> with ChatCompletionServer(my_backend, port=8000) as server:  # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:8000/v1
    """

    def __init__(
        self,
        backend: LLMBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str | None = None,
        verbose: bool = False,
        api_key: str | None = None,
        socket_timeout: float = SOCKET_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_tokens: int = MAX_TOKENS,
        max_body_bytes: int = MAX_REQUEST_BYTES,
        max_batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        for name, value in (
            ("max_tokens", max_tokens),
            ("max_body_bytes", max_body_bytes),
            ("max_batch_size", max_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if socket_timeout <= 0:
            raise ValueError(f"socket_timeout: expected seconds > 0, got {socket_timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections: expected an integer >= 1, got {max_connections}")
        warning = exposure_warning(host, api_key)
        if warning:
            warnings.warn(warning, stacklevel=2)
        self.backend = backend
        self.model_name = model_name or backend.name
        self.verbose = verbose
        self.api_key = api_key or None
        context = getattr(backend, "context_length", None)
        # no request may reserve room for more tokens than the model has positions
        self.max_tokens = min(max_tokens, context) if isinstance(context, int) else max_tokens
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        self._closed = False
        self._jobs: list[_Job] = []
        self._jobs_changed = threading.Condition()
        self._worker = threading.Thread(
            target=self._serve_jobs, name=f"serve-batches-{self.model_name}", daemon=True
        )
        self._worker.start()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self
        self._httpd.socket_timeout = float(socket_timeout)
        self._httpd.connection_slots = threading.BoundedSemaphore(max_connections)
        self._httpd.refusal_slots = threading.BoundedSemaphore(REFUSALS_AT_ONCE)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root to give clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        host, port = self._httpd.server_address[:2]
        if host in ("", "0.0.0.0"):  # listening everywhere; this machine reaches it here
            host = "127.0.0.1"
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatCompletionServer:
        if self._closed:
            raise RuntimeError("this server was stopped; create a new ChatCompletionServer")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # how soon stop() is noticed
                name=f"serve-{self.model_name}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        if not self._closed:
            self._httpd.server_close()
            self._closed = True
            with self._jobs_changed:
                self._jobs_changed.notify_all()

    def __enter__(self) -> ChatCompletionServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value grants access."""
        if self.api_key is None:
            return True
        expected = f"Bearer {self.api_key}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def complete(
        self,
        request: ChatRequest | CompletionRequest,
        cancelled: threading.Event | None = None,
    ) -> dict[str, Any]:
        """The response body for ``request``, in the OpenAI ``chat.completion`` shape.

        Requests that arrive while the backend is busy wait in a queue and are answered
        together: one batched backend call for all waiting requests with the same sampling
        settings (up to ``max_batch_size``), the oldest request's group first, so a request
        waits for at most the batch running when it arrived. Setting ``cancelled`` drops the
        request (raising :class:`~llm.interface.GenerationCancelled`); a running batch stops
        early only when every request in it is cancelled, and only with a backend that
        supports it."""
        job = _Job(request, cancelled or threading.Event())
        self._enqueue(job)
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def _enqueue(self, job: _Job) -> None:
        """Queue ``job`` for the batching thread and wait until it is answered."""
        with self._jobs_changed:
            if self._closed:
                raise RuntimeError("the server was stopped")
            self._jobs.append(job)
            self._jobs_changed.notify_all()
        job.done.wait()

    def _serve_jobs(self) -> None:
        """The one thread that calls the backend: batches of waiting requests, in turn."""
        while True:
            with self._jobs_changed:
                while not self._jobs and not self._closed:
                    self._jobs_changed.wait()
                if self._closed and not self._jobs:
                    return
                key = _batch_key(self._jobs[0].request)
                batch = [job for job in self._jobs if _batch_key(job.request) == key]
                batch = batch[: self.max_batch_size]
                for job in batch:
                    self._jobs.remove(job)
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        waiting = []
        for job in batch:
            if job.cancelled.is_set():  # its client left while it queued
                job.finish(GenerationCancelled("the client disconnected"))
            else:
                waiting.append(job)
        if not waiting:
            return
        try:
            with _cancellable(self.backend, _AllSet([job.cancelled for job in waiting])):
                results = self._answer([job.request for job in waiting])
        except Exception as error:  # noqa: BLE001 - each client gets the reason
            if len(waiting) > 1 and not isinstance(error, GenerationCancelled):
                for job in waiting:  # one request's fault must not fail the others
                    self._run([job])
                return
            for job in waiting:
                job.finish(error)
            return
        for job, result in zip(waiting, results, strict=True):
            job.finish(result)

    # ------------------------------------------------------------------ models and adapters
    def check_model(self, name: str | None) -> str | None:
        """The adapter that a request's ``model`` selects (None: the served model); raises
        :class:`UnknownModel` for a name that is neither."""
        if name in (None, self.model_name, getattr(self.backend, "name", None)):
            return None
        if name in getattr(self.backend, "adapters", {}):
            return name
        adapters = sorted(getattr(self.backend, "adapters", {}))
        raise UnknownModel(
            f"model: {name!r} is not served here; this server serves {self.model_name!r}"
            + (f" and the adapters {adapters}" if adapters else "")
        )

    def check_stop_token_ids(self, request: ChatRequest | CompletionRequest) -> None:
        """Raise :class:`BadRequest` for ``stop_token_ids`` this server would not stop at: it
        ends a generation at its model's end-of-turn tokens only (which a trainer's rollout
        sends), never silently ignoring one it was asked to stop at."""
        asked = set(getattr(request, "stop_token_ids", ()))
        own = set(getattr(self.backend, "stop_token_ids", None) or ())
        if asked - own:
            raise BadRequest(
                f"stop_token_ids: this server stops at its model's end-of-turn tokens "
                f"{sorted(own)} only; {sorted(asked - own)} would be ignored"
            )

    def change_adapter(self, name: str, path: str | None) -> None:
        """Load the adapter in ``path`` as ``name`` (or unload ``name`` when ``path`` is
        None), between batches. Raises :class:`BadRequest` (or :class:`UnknownModel` for
        unloading a name that is not loaded)."""
        if not hasattr(self.backend, "load_adapter"):
            raise BadRequest(
                f"lora_name: this server's backend ({type(self.backend).__name__}) cannot "
                "load adapters; serve a local model"
            )
        job = _Job(_AdapterChange(name, path), threading.Event())
        self._enqueue(job)
        if isinstance(job.result, BaseException):
            raise job.result

    def _change_adapter(self, change: _AdapterChange) -> dict[str, Any]:
        if change.path is None:
            if change.name not in self.backend.adapters:
                raise UnknownModel(f"lora_name: no adapter named {change.name!r} is loaded")
            self.backend.unload_adapter(change.name)
            return {"message": f"unloaded adapter {change.name!r}"}
        if change.name in (self.model_name, getattr(self.backend, "name", None)):
            raise BadRequest(f"lora_name: {change.name!r} is the served model's name")
        try:
            self.backend.load_adapter(change.name, change.path)
        except (ValueError, OSError) as error:
            raise BadRequest(f"lora_path: {error}") from None
        return {"message": f"loaded adapter {change.name!r} from {change.path}"}

    def _using(self, model: str | None) -> Any:
        adapter = self.check_model(model)
        if adapter is None:
            return contextlib.nullcontext()
        return self.backend.using_adapter(adapter)

    # ------------------------------------------------------------------ answers
    def _answer(self, requests: list[Any]) -> list[dict[str, Any]]:
        """Responses for requests that share a batch key, from one backend call."""
        first = requests[0]
        if isinstance(first, _AdapterChange):
            return [self._change_adapter(first)]
        with self._using(first.model):
            if isinstance(first, CompletionRequest):
                return self._complete_tokens(requests)
            if first.is_scoring:
                return self._score(requests)
            return self._chat(requests)

    def _chat(self, requests: list[ChatRequest]) -> list[dict[str, Any]]:
        first = requests[0]
        messages = [r.messages for r in requests]
        generations = self.backend.generate(messages, first.settings)
        if len(generations) != len(requests):
            raise RuntimeError(
                f"backend returned {len(generations)} generations for {len(requests)} requests"
            )
        top = self._top_logprobs(requests)
        responses = []
        for request, generation, first_top in zip(requests, generations, top, strict=True):
            logprobs = None
            if request.settings.logprobs and generation.logprobs is not None:
                names = _token_names(generation)
                content = [
                    {"token": name, "logprob": _json_logprob(value), "top_logprobs": []}
                    for name, value in zip(names, generation.logprobs, strict=True)
                ]
                if content and first_top:
                    content[0]["top_logprobs"] = first_top
                logprobs = {"content": content}
            responses.append(
                self._completion(
                    generation.text, generation.finish_reason, logprobs, _usage(generation)
                )
            )
        return responses

    def _complete_tokens(self, requests: list[CompletionRequest]) -> list[dict[str, Any]]:
        """``/v1/completions`` answers: every prompt of every request in one batched call."""
        first = requests[0]
        if not hasattr(self.backend, "generate_from_ids"):
            raise BadRequest(
                f"prompt: this server's backend ({type(self.backend).__name__}) cannot "
                "generate from token ids; use /v1/chat/completions"
            )
        prompts = [
            self._prompt_ids(prompt, name)
            for request in requests
            for prompt, name in zip(request.prompts, request.names, strict=True)
        ]
        generations = iter(self.backend.generate_from_ids(prompts, first.settings))
        tokenizer = getattr(self.backend, "tokenizer", None)
        responses = []
        for request in requests:
            choices = []
            for index in range(len(request.prompts)):
                generation = next(generations)
                choice: dict[str, Any] = {
                    "index": index,
                    "text": generation.text,
                    "finish_reason": generation.finish_reason,
                    "logprobs": None,
                }
                if request.logprobs is not None and generation.logprobs is not None:
                    if request.tokens_as_ids or tokenizer is None:
                        names = [f"token_id:{t}" for t in generation.token_ids]
                    else:
                        names = [tokenizer.decode([t]) for t in generation.token_ids]
                    values = [_json_logprob(v) for v in generation.logprobs]
                    choice["logprobs"] = {
                        "tokens": names,
                        "token_logprobs": values,
                        # only the sampled token is known at each position
                        "top_logprobs": [{n: v} for n, v in zip(names, values, strict=True)]
                        if request.logprobs
                        else None,
                    }
                if request.return_token_ids:
                    choice["token_ids"] = list(generation.token_ids)
                    choice["prompt_token_ids"] = list(generation.prompt_token_ids or [])
                choices.append((choice, _usage(generation)))
            usage = {
                key: sum(u.get(key, 0) for _, u in choices)
                for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
            responses.append(
                {
                    "id": f"cmpl-{uuid.uuid4().hex}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": request.model or self.model_name,
                    "choices": [choice for choice, _ in choices],
                    "usage": usage,
                }
            )
        return responses

    def _prompt_ids(self, prompt: tuple[int, ...] | str, field: str) -> list[int]:
        """A prompt's token ids, checked against the vocabulary (text is tokenised as is,
        without special tokens)."""
        if isinstance(prompt, str):
            encode = getattr(self.backend, "encode", None)
            if encode is None:
                raise BadRequest(f"{field}: this backend takes token ids only")
            return encode([prompt])[0]
        size = getattr(self.backend, "vocabulary_size", None)
        if size is not None:
            for position, token in enumerate(prompt):
                if token >= size:
                    raise BadRequest(
                        f"{field}[{position}]: token id {token} is outside the vocabulary "
                        f"(ids below {size})"
                    )
        return list(prompt)

    def _top_logprobs(self, requests: list[ChatRequest]) -> list[list[dict[str, Any]]]:
        """The first generated position's ``top_logprobs`` of each request that asks for them
        (with a backend that can rank the whole vocabulary; empty lists otherwise)."""
        first = requests[0]
        rank = getattr(self.backend, "next_token_top_logprobs", None)
        if not (first.settings.logprobs and first.top_logprobs and rank is not None):
            return [[] for _ in requests]
        rows = rank([r.messages for r in requests], first.top_logprobs)
        return [
            [{"token": token, "logprob": _json_logprob(value)} for token, value in row]
            for row in rows
        ]

    def _score(self, requests: list[ChatRequest]) -> list[dict[str, Any]]:
        first = requests[0]
        conversations = [request.split_prefix()[0] for request in requests]
        prefix = first.split_prefix()[1]  # the same for the batch: it is in the batch key
        rows = self.backend.next_token_logprobs(conversations, first.candidates, prefix)
        responses = []
        for scores in rows:
            ranked = sorted(
                ((c, scores.get(c, -math.inf)) for c in dict.fromkeys(first.candidates)),
                key=lambda pair: pair[1],
                reverse=True,
            )
            top = [
                {"token": token, "logprob": value}
                for token, value in ranked[: first.top_logprobs]
                if math.isfinite(value)
            ]
            best, best_logprob = ranked[0]
            head = {"token": best, "logprob": _json_logprob(best_logprob), "top_logprobs": top}
            responses.append(
                self._completion(best, "length", {"content": [head]}, {"completion_tokens": 1})
            )
        return responses

    def _completion(
        self, text: str, finish_reason: str, logprobs: dict | None, usage: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": logprobs,
                }
            ],
            "usage": usage,
        }

    def models(self) -> dict[str, Any]:
        """The served model and each loaded adapter (with ``parent``, as vLLM lists them)."""
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "local"}
        adapters = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "local",
                "root": path,
                "parent": self.model_name,
            }
            # a copy: the batching thread may load or unload one meanwhile
            for name, path in list(getattr(self.backend, "adapters", {}).items())
        ]
        return {"object": "list", "data": [model, *adapters]}


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A warning when ``host`` lets other machines reach a server without a key, else None."""
    if api_key or _is_loopback(host):
        return None
    return (
        f"serving on {host or 'all interfaces'} without an API key: anyone who can reach this "
        "port can use the model; pass --api-key (api_key=...), or listen on 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (all interfaces) or a host name that may resolve anywhere
        return False


def serve_forever(
    backend: LLMBackend, port: int = 8000, verbose: bool = True, **options: Any
) -> None:
    """Serve ``backend`` until Ctrl-C; for a command-line entry point. ``options`` are
    :class:`ChatCompletionServer`'s (host, model_name, api_key and the limits)."""
    server = ChatCompletionServer(backend, port=port, verbose=verbose, **options)
    access = "Bearer key required" if server.api_key else "no authentication"
    print(f"serving {server.model_name} at {server.url} ({access}; Ctrl-C stops)", file=sys.stderr)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.stop()


def _cancellable(backend: LLMBackend, event: threading.Event | None) -> Any:
    """The backend's cancellation scope for ``event``, where it offers one."""
    scope = getattr(backend, "cancelled_by", None)
    return scope(event) if scope is not None and event is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _watching_disconnect(connection: socket.socket, cancelled: threading.Event) -> Iterator[None]:
    """Set ``cancelled`` if the client closes ``connection`` while the body of this scope runs.

    While a request is served the client has nothing more to send, so the socket becomes
    readable only when the client closes it (a read then returns nothing)."""
    done = threading.Event()

    def watch() -> None:
        # a selector, not select.select, which fails on descriptors numbered above 1023
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(connection, selectors.EVENT_READ)
            except (OSError, ValueError):  # closed under us
                return
            while True:
                try:
                    ready = selector.select(DISCONNECT_POLL_SECONDS)
                    if done.is_set():
                        return
                    if not ready:
                        continue
                    gone = not connection.recv(1, socket.MSG_PEEK)
                except OSError:  # reset
                    gone = True
                if gone:
                    cancelled.set()
                return  # gone, or the client sent more (a pipelined request): stop watching

    # not joined: the answer need not wait for the watcher's next poll to end
    threading.Thread(target=watch, name="serve-disconnect-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


class _HTTPServer(ThreadingHTTPServer):
    app: ChatCompletionServer
    socket_timeout: float
    connection_slots: threading.BoundedSemaphore
    refusal_slots: threading.BoundedSemaphore

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connection_slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # the thread releases the slot
        except BaseException:
            self.connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 without taking a handler slot, and close without losing the answer.

        Closing a socket whose client has not yet sent its request makes the kernel answer
        that request with a reset, and the client sees a broken pipe instead of the 503. So
        the refusal reads what the client sends for a moment before closing, on a thread of
        its own (at most ``REFUSALS_AT_ONCE`` of them; beyond that, closed at once).
        """
        if not self.refusal_slots.acquire(blocking=False):
            self.shutdown_request(request)
            return

        def refuse() -> None:
            try:
                _refuse_busy(request)
            finally:
                self.shutdown_request(request)
                self.refusal_slots.release()

        threading.Thread(target=refuse, name="serve-refuse", daemon=True).start()


def _refuse_busy(connection: socket.socket) -> None:
    """Answer HTTP 503, then read what the client sends until it closes (at most a second)."""
    body = json.dumps(
        {
            "error": {
                "message": "too many connections: the server is at its max_connections; "
                "retry later",
                "type": "server_error",
            }
        }
    ).encode()
    head = (
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: 1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    deadline = time.monotonic() + REFUSAL_LINGER_SECONDS
    try:
        connection.settimeout(REFUSAL_LINGER_SECONDS)
        connection.sendall(head.encode() + body)
        connection.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            if not connection.recv(65536):
                break
    except OSError:
        pass


class _TooLarge(BadRequest):
    """A request body over the server's limit (HTTP 413)."""


class _ClientTimeout(Exception):
    """The client did not send what it announced within the socket timeout."""


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "negotiation-alignment"

    def setup(self) -> None:
        self.timeout = self.server.socket_timeout  # StreamRequestHandler applies it
        super().setup()

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self._route() == "/v1/models":
            self._send(200, self.server.app.models())
        else:
            self._send_error(404, f"no such endpoint: GET {self.path}; try GET /v1/models")

    def do_POST(self) -> None:
        if not self._authorized():
            return
        route = self._route()
        if route not in POST_ROUTES:
            self._send_error(
                404, f"no such endpoint: POST {self.path}; try one of {sorted(POST_ROUTES)}"
            )
            return
        app = self.server.app
        try:
            payload = self._read_json()
            if route in ADAPTER_ROUTES:
                try:
                    answer = self._change_adapter(route, payload)
                except BadRequest:
                    raise
                except Exception as error:  # the client gets the reason; the server serves on
                    self._send_error(500, f"adapter change failed: {type(error).__name__}: {error}")
                    return
                self._send(200, answer)
                return
            parse = parse_chat_request if route == CHAT_ROUTE else parse_completion_request
            request = parse(payload, app.max_tokens)
            app.check_model(request.model)
            app.check_stop_token_ids(request)
        except UnknownModel as error:
            self._send_error(404, str(error))
            return
        except _TooLarge as error:
            self._send_error(413, str(error))
            return
        except BadRequest as error:
            self._send_error(400, str(error))
            return
        except _ClientTimeout as error:
            self.close_connection = True
            self._send_error(408, str(error))
            return
        cancelled = threading.Event()
        try:
            with _watching_disconnect(self.connection, cancelled):
                response = app.complete(request, cancelled)
        except UnknownModel as error:  # its adapter was unloaded while it waited
            self._send_error(404, str(error))
            return
        except ContextLengthError as error:
            self._send_error(400, f"{'messages' if route == CHAT_ROUTE else 'prompt'}: {error}")
            return
        except BadRequest as error:  # found by the batching thread, e.g. a token id
            self._send_error(400, str(error))
            return
        except GenerationCancelled:
            self.close_connection = True
            self.log_message("client disconnected; its generation was cancelled")
            return
        except Exception as error:  # the client gets the reason; the server keeps serving
            self._send_error(500, f"backend failed: {type(error).__name__}: {error}")
            return
        self._send(200, response)

    def _change_adapter(self, route: str, payload: Any) -> dict[str, Any]:
        """``load_lora_adapter`` / ``unload_lora_adapter`` with vLLM's fields."""
        _check_object(payload)
        name = payload.get("lora_name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"lora_name: required, a non-empty string, got {name!r:.80}")
        path = None
        if route == "/v1/load_lora_adapter":
            path = payload.get("lora_path")
            if not isinstance(path, str) or not path:
                raise BadRequest(f"lora_path: required, a folder path, got {path!r:.80}")
        self.server.app.change_adapter(name, path)
        return {"object": "adapter", "lora_name": name, "loaded": path is not None}

    def _authorized(self) -> bool:
        if self.server.app.authorized(self.headers.get("Authorization")):
            return True
        self._discard_body()
        self._send_error(
            401, "Authorization: this server needs the header 'Authorization: Bearer <api key>'"
        )
        return False

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            super().log_message(format, *args)

    def _route(self) -> str:
        return urllib.parse.urlsplit(self.path).path.rstrip("/")

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("Content-Length: header required, with the body's size in bytes")
        limit = self.server.app.max_body_bytes
        if int(length) > limit:
            self._discard_body()
            raise _TooLarge(
                f"request body: {length} bytes, more than this server's limit of {limit} "
                "(negotiate serve --max-body-bytes)"
            )
        try:
            raw = self.rfile.read(int(length))
        except OSError:  # the socket timeout (or a reset) while the body was still due
            raw = b""
        if len(raw) < int(length):
            raise _ClientTimeout(
                f"request body: the {length} bytes announced by Content-Length did not all "
                f"arrive within {self.server.socket_timeout} s"
            )
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequest(f"request body: not valid JSON ({error})") from None
        except RecursionError:
            raise BadRequest("request body: JSON nested too deeply to read") from None

    def _discard_body(self) -> None:
        """Read a refused request's body, so that the client can read the answer."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.server.app.max_body_bytes:
            try:
                self.rfile.read(int(length))
            except OSError:
                pass
        self.close_connection = True

    def _send_error(self, status: int, message: str) -> None:
        kinds = {401: "authentication_error", 408: "timeout", 413: "request_too_large"}
        kind = kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
        self._send(status, {"error": {"message": message, "type": kind}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up, or stopped reading past the socket timeout


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise BadRequest("messages: required, a non-empty list of {role, content} objects")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}]: expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadRequest(f"messages[{index}].role: expected one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content: expected a string, got {content!r:.80}")
        _check_encodable(content, f"messages[{index}].content")
        messages.append({"role": role, "content": content})
    return messages


def _check_object(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise BadRequest("request body: expected a JSON object")


def _prompts(value: Any) -> tuple[tuple[tuple[int, ...] | str, ...], list[str]]:
    """``prompt``: token ids, text, or a list of either (one choice each); with the name
    of each prompt in error messages (``prompt`` or ``prompt[i]``)."""
    shape = "token ids (a list of integers), a string, or a non-empty list of those"
    single = isinstance(value, str) or (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)
    )
    if single:
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest(f"prompt: required, {shape}")
    prompts: list[tuple[int, ...] | str] = []
    names = []
    for index, prompt in enumerate(value):
        name = "prompt" if single else f"prompt[{index}]"
        if isinstance(prompt, str) and prompt:
            _check_encodable(prompt, name)
            prompts.append(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            for position, token in enumerate(prompt):
                if not _is_token_id(token):
                    raise BadRequest(
                        f"{name}[{position}]: a token id is an integer >= 0, got {token!r}"
                    )
            prompts.append(tuple(prompt))
        else:
            raise BadRequest(f"{name}: expected {shape}, got {prompt!r:.80}")
        names.append(name)
    return tuple(prompts), names


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _model(payload: dict[str, Any]) -> str | None:
    value = payload.get("model")
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"model: expected a string, got {value!r:.80}")
    return value or None


def _check_encodable(text: str, field: str) -> None:
    """JSON can carry a lone UTF-16 surrogate (``"\\ud800"``), which no tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadRequest(
            f"{field}: a lone surrogate {text[error.start]!r} at character {error.start}; "
            "send valid Unicode (surrogates only in pairs)"
        ) from None


def _integer(
    payload: dict[str, Any],
    field: str,
    default: int | None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> Any:
    value = payload.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{field}: expected an integer, got {value!r:.80}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise BadRequest(f"{field}: expected an integer {bounds}, got {value}")
    return value


def _number(
    payload: dict[str, Any],
    field: str,
    default: float,
    minimum: float,
    maximum: float | None = None,
    open_below: bool = False,
) -> float:
    value = payload.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{field}: expected a number, got {value!r:.80}")
    too_low = value <= minimum if open_below else value < minimum
    if too_low or (maximum is not None and value > maximum):
        low = "(" if open_below else "["
        bounds = f">= {minimum}" if maximum is None else f"in {low}{minimum}, {maximum}]"
        raise BadRequest(f"{field}: expected a number {bounds}, got {value}")
    return float(value)


def _boolean(payload: dict[str, Any], field: str, default: bool) -> bool:
    value = payload.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{field}: expected true or false, got {value!r:.80}")
    return value


def _strings(value: Any, field: str) -> Sequence[str]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise BadRequest(f"{field}: expected a list of non-empty strings, got {value!r:.80}")
    for index, item in enumerate(value):
        _check_encodable(item, f"{field}[{index}]")
    return value


def _token_names(generation: Generation) -> list[str]:
    count = len(generation.logprobs or ())
    if generation.tokens is not None and len(generation.tokens) == count:
        return list(generation.tokens)
    if len(generation.token_ids) == count:  # vLLM's spelling when token strings are unknown
        return [f"token_id:{token_id}" for token_id in generation.token_ids]
    return [""] * count


def _usage(generation: Generation) -> dict[str, int]:
    usage = {}
    if generation.prompt_token_ids is not None:
        usage["prompt_tokens"] = len(generation.prompt_token_ids)
    if generation.token_ids:
        usage["completion_tokens"] = len(generation.token_ids)
    elif generation.tokens is not None:
        usage["completion_tokens"] = len(generation.tokens)
    if len(usage) == 2:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def _json_logprob(value: float) -> float:
    return value if math.isfinite(value) else NEG_INF_LOGPROB
