"""A backend for any OpenAI-compatible ``/v1/chat/completions`` server.

vLLM, the llama.cpp server, Ollama, hosted APIs and this project's own
:mod:`llm.serve` all speak this protocol. Only the standard library is used for HTTP.

>>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-0.5B-Instruct")
>>> [reply] = backend.generate(
...     [[{"role": "user", "content": "Say hello."}]], GenerationSettings(max_new_tokens=16)
... )  # doctest: +SKIP
>>> reply.text, reply.finish_reason  # doctest: +SKIP
('Hello!', 'stop')

Failures:

- HTTP 429, 500, 502, 503, 504, connection errors and timeouts are retried up to
  ``max_retries`` times, with exponential backoff and jitter (or the server's
  ``Retry-After`` on 429/503), each pause at most ``max_wait`` seconds.
- A 200 answer whose body is unusable (not JSON, no choices, ``content`` null, not a
  string, empty or only whitespace, log-probabilities that are not numbers, NaN or
  positive) is retried as well: a proxy can glitch, and a sampled answer can differ.
- Any other status (400, 401, 404, redirects, ...) fails at once: repeating the same
  request cannot succeed. So does an answer larger than ``max_response_bytes``.

Every failure ends in :class:`~llm.interface.BackendError`; none returns an empty
utterance. Each attempt, from connecting to the last byte of the answer (headers
included), is bounded by ``timeout``, so a call ends after at most about
``(max_retries + 1) * timeout`` seconds plus the pauses.

The API key is read from the environment variable ``api_key_env`` at each request and sent
as ``Authorization: Bearer``; no header is sent when the variable is unset. The key never
appears in ``repr``, in :attr:`OpenAIBackend.name` or in error messages: text from a
server that echoes it has it replaced by ``[redacted]`` (as written, or \\u-escaped as
JSON allows) before it is shortened for the message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from llm.interface import (
    BackendError,
    Conversation,
    Generation,
    GenerationSettings,
    LogprobsUnavailable,
)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
TOP_LOGPROBS = 20  # the most that OpenAI's API and vLLM's default configuration allow
SHOWN_BODY_CHARS = 200
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # far above a long answer with log-probabilities
LOGPROB_ROUNDING = 1e-4  # servers computing log(p) in float32 can report log(1) as +1e-7
_READ_CHUNK = 64 * 1024
_USER_AGENT = "negotiation-alignment-openai-backend"  # some proxies refuse "Python-urllib"


class MalformedResponse(Exception):
    """A 200 answer whose body we cannot use; the message says which part was wrong."""


class RequestRejected(BackendError):
    """The server refused the request with a status that retrying cannot change
    (``status``: 400, 401, 404, a redirect, ...)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ServerUnavailable(BackendError):
    """The server did not answer usably within the retries (connection refused or reset,
    timeouts, 429 or 5xx, malformed answers): another server may."""


class _Rejected(Exception):
    """An error status; ``detail`` is the server's own words, already redacted and cut."""

    def __init__(self, code: int, headers: Any, detail: str):
        super().__init__(f"HTTP {code}: {detail}")
        self.code, self.headers, self.detail = code, headers, detail


class _TooLarge(Exception):
    """An answer larger than ``max_response_bytes``."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Following a redirect would turn the POST into a GET and could carry the key to another
    # host; returning None makes urllib raise the 3xx as an HTTPError, reported to the user.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Deadline:
    """Ends a request when its time is up, whatever stage it is in.

    A socket timeout bounds each read on its own: a server that sends a byte now and then,
    headers included, holds the call as long as it likes. At the deadline the sockets of
    the request's connections are shut down, which ends any read in progress."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:  # connecting took the whole time
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        # the plain socket's shutdown, also for TLS: SSLSocket.shutdown would unwrap the
        # TLS layer under a read in progress on another thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watched:
    """A connection whose socket its request's :class:`_Deadline` can shut down."""

    deadline: _Deadline | None = None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if self.deadline is not None:
            self.deadline.watch(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _DeadlineHandling:
    """Opens a request's connections as :class:`_Watched` ones, given ``request.deadline``."""

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        https = issubclass(http_class, http.client.HTTPSConnection)
        watched = _WatchedHTTPSConnection if https else _WatchedHTTPConnection

        def connection(*args: Any, **options: Any) -> http.client.HTTPConnection:
            opened = watched(*args, **options)
            opened.deadline = getattr(req, "deadline", None)
            return opened

        return super().do_open(connection, req, **kwargs)  # type: ignore[misc]


class _HTTPHandler(_DeadlineHandling, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineHandling, urllib.request.HTTPSHandler):
    pass


class OpenAIBackend:
    """An :class:`~llm.interface.LLMBackend` talking to a chat-completions server.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8000/v1``. A URL with no path
    (``http://127.0.0.1:8000``) gets ``/v1`` appended; a URL with a path is used as given
    (trailing slashes dropped), so ``https://host/openai/v1`` works too. Requests go to
    ``{base_url}/chat/completions``.

    ``concurrency`` bounds the requests in flight at once from this backend, across all
    threads that share it; ``generate`` sends a batch that many at a time. ``max_wait``
    caps each pause between attempts, the server's ``Retry-After`` included.

    ``send_candidates=True`` adds the candidates of :meth:`next_token_logprobs` to the
    request as the non-standard field ``candidates``, which this project's own server
    (:mod:`llm.serve`) needs in order to score them. Leave it off for other servers:
    OpenAI's hosted API rejects fields it does not know.

    ``max_response_bytes`` caps the size of an answer read into memory (32 MiB).

    >>> backend = OpenAIBackend("http://127.0.0.1:8000", "my-model", concurrency=4)
    >>> backend.name
    'openai:my-model@http://127.0.0.1:8000/v1'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        concurrency: int = 8,
        max_wait: float = 30.0,
        send_candidates: bool = False,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: expected a non-empty model name, got {model!r}")
        if timeout <= 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries: expected an integer >= 0, got {max_retries}")
        if backoff < 0 or max_wait < 0:
            raise ValueError(f"backoff, max_wait: expected seconds >= 0, got {backoff}, {max_wait}")
        if concurrency < 1:
            raise ValueError(f"concurrency: expected an integer >= 1, got {concurrency}")
        if max_response_bytes < 1:
            raise ValueError(
                f"max_response_bytes: expected an integer >= 1, got {max_response_bytes}"
            )
        self.base_url = _api_root(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.concurrency = int(concurrency)
        self.send_candidates = send_candidates
        self.max_response_bytes = int(max_response_bytes)
        self.name = f"openai:{model}@{self.base_url}"
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._opener = urllib.request.build_opener(_NoRedirects(), _HTTPHandler(), _HTTPSHandler())
        self._random = random.Random()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    def generate(
        self, conversations: Sequence[Conversation], settings: GenerationSettings
    ) -> list[Generation]:
        """One generation per conversation, in order; requests run ``concurrency`` at a time.

        ``top_k`` and ``no_repeat_ngram_size`` are sent (as non-standard fields; ``negotiate
        serve`` honours both, other servers may ignore them) only when above 0, ``seed`` only
        when set, ``stop`` only when non-empty. A server that ignores ``logprobs`` yields
        generations whose ``logprobs`` and ``tokens`` are None.
        """
        options: dict[str, Any] = {
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.top_k > 0:
            options["top_k"] = settings.top_k
        if settings.no_repeat_ngram_size > 0:
            options["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
        if settings.seed is not None:
            options["seed"] = settings.seed
        if settings.stop:
            options["stop"] = list(settings.stop)
        if settings.logprobs:
            options["logprobs"] = True
        bodies = [self._body(conversation, options) for conversation in conversations]
        return self._post_all(bodies, _parse_generation)

    def next_token_logprobs(
        self,
        conversations: Sequence[Conversation],
        candidates: Sequence[str],
        assistant_prefix: str = "",
    ) -> list[dict[str, float]]:
        """For each conversation, log p(candidate) for the first token of the answer.

        Asks for one greedy token with the top 20 log-probabilities and matches each
        candidate to the tokens there after stripping whitespace (so ``" 7"`` counts for
        ``"7"``), keeping the best match; candidates not among them get ``-inf``.

        A non-empty ``assistant_prefix`` is sent as a final assistant message. Servers differ
        in whether they continue that message or start a new turn after it (vLLM continues
        it only when started with ``continue_final_message``), so keep prefixes to what the
        scores do not depend on. Raises :class:`LogprobsUnavailable` at once when the server
        returns no top log-probabilities; callers can then parse the answer text instead.
        """
        if not candidates:
            return [{} for _ in conversations]
        options: dict[str, Any] = {
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if self.send_candidates:
            options["candidates"] = list(candidates)
        bodies = []
        for conversation in conversations:
            if assistant_prefix:
                conversation = [*conversation, {"role": "assistant", "content": assistant_prefix}]
            bodies.append(self._body(conversation, options))

        def parse(payload: Any) -> dict[str, float]:
            return self._candidate_logprobs(payload, candidates)

        return self._post_all(bodies, parse)

    def _body(self, conversation: Conversation, options: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "messages": [dict(m) for m in conversation], **options}

    def _post_all(self, bodies: list[dict[str, Any]], parse: Callable[[Any], T]) -> list[T]:
        if len(bodies) <= 1:
            return [self.post(body, parse) for body in bodies]
        workers = min(self.concurrency, len(bodies))
        with ThreadPoolExecutor(workers, thread_name_prefix="openai-backend") as pool:
            futures = [pool.submit(self.post, body, parse) for body in bodies]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:  # the batch has failed: send nothing more
                    future.cancel()
                raise

    def post(
        self,
        body: dict[str, Any],
        parse: Callable[[Any], T],
        endpoint: str = "chat/completions",
        json_answer: bool = True,
    ) -> T:
        """Send one request to ``endpoint`` of this API (relative to ``base_url``, e.g.
        ``completions`` or ``load_lora_adapter``) with the retries and limits described
        above, and return ``parse(response JSON)``; ``parse`` raises
        :class:`MalformedResponse` to have an answer retried. Failures:
        :class:`RequestRejected` (not retried), :class:`ServerUnavailable` (retries spent),
        or :class:`~llm.interface.BackendError`. ``json_answer=False``: ``parse`` gets the
        answer's text as it is (vLLM answers its adapter endpoints in plain text)."""
        return self._request(endpoint, json.dumps(body).encode("utf-8"), parse, json_answer)

    def get(self, endpoint: str, parse: Callable[[Any], T]) -> T:
        """``GET`` ``endpoint`` (e.g. ``models``), with the same retries as :meth:`post`."""
        return self._request(endpoint, None, parse)

    def _request(
        self, endpoint: str, data: bytes | None, parse: Callable[[Any], T], json_answer: bool = True
    ) -> T:
        url = f"{self.base_url}/{endpoint}"
        key = os.environ.get(self.api_key_env) or None
        attempts = self.max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            retry_after = None
            raw = b""
            try:
                with self._slots:
                    raw = self._send(url, data, key)
                return parse(_json(raw) if json_answer else raw.decode("utf-8", errors="replace"))
            except _Rejected as error:
                if error.code not in RETRYABLE_STATUSES:
                    raise RequestRejected(self._rejected(url, error, key), error.code) from None
                problem = str(error)
                if error.code in RETRY_AFTER_STATUSES:
                    retry_after = _retry_after_seconds(error.headers)
            except _TooLarge as error:
                raise BackendError(
                    _redact(
                        f"POST {url} (model {self.model!r}): {error}; not retried "
                        "(raise max_response_bytes if this server's answers are that large)",
                        key,
                    )
                ) from None
            except MalformedResponse as error:
                reason = _shown(str(error), key)
                shown = _shown(raw.decode("utf-8", errors="replace"), key)
                problem = f"malformed response: {reason}; body starts {shown!r}"
            except (OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)  # URLError wraps the socket error
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise BackendError(
                        _redact(f"POST {url}: TLS certificate rejected: {reason}", key)
                    ) from None
                problem = _connection_problem(reason, self.timeout)
            if attempt < attempts:
                time.sleep(self._pause(attempt, retry_after))
        raise ServerUnavailable(
            _redact(
                f"{'POST' if data else 'GET'} {url} (model {self.model!r}) failed after {attempts} "
                f"attempt{'s' if attempts > 1 else ''}; "
                f"last error: {problem}",
                key,
            )
        )

    def _send(self, url: str, data: bytes | None, key: str | None) -> bytes:
        request = urllib.request.Request(
            url,
            data=data,
            method="GET" if data is None else "POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
        )
        if key:
            request.add_unredirected_header("Authorization", f"Bearer {key}")
        with _Deadline(self.timeout) as deadline:
            request.deadline = deadline  # type: ignore[attr-defined]  # read by _DeadlineHandling
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = self._read_capped(response)
            except urllib.error.HTTPError as error:  # its body is read within the deadline too
                raise _Rejected(error.code, error.headers, _error_detail(error, key)) from None
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise TimeoutError("no complete response within the time limit") from None
                raise
            if deadline.expired:  # the shutdown can look like the end of a short body
                raise TimeoutError("no complete response within the time limit")
            return raw

    def _read_capped(self, response: Any) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge(
                f"the answer declares {declared} bytes, over max_response_bytes={limit}"
            )
        chunks, size = [], 0
        while chunk := response.read1(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"the answer exceeds max_response_bytes={limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number ``attempt`` (1-based): the server's ``Retry-After``
        when given, else ``backoff * 2**(attempt - 1)`` scaled by a random factor in
        [0.5, 1] so that clients that failed together do not retry together."""
        if retry_after is None:
            retry_after = self.backoff * 2 ** (attempt - 1) * self._random.uniform(0.5, 1.0)
        return min(retry_after, self.max_wait)

    def _rejected(self, url: str, error: _Rejected, key: str | None) -> str:
        message = (
            f"POST {url} (model {self.model!r}) was rejected with HTTP {error.code}: "
            f"{error.detail}; not retried, since the same request would fail again"
        )
        if error.code in (401, 403):
            state = "is set" if key else "is not set"
            message += f" (the API key is read from ${self.api_key_env}, which {state})"
        elif 300 <= error.code < 400:
            location = error.headers.get("Location", "?") if error.headers else "?"
            message += f" (redirects are not followed; use the final URL {location} as base_url)"
        return _redact(message, key)

    def _candidate_logprobs(self, payload: Any, candidates: Sequence[str]) -> dict[str, float]:
        choice = _first_choice(payload)
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        first = content[0] if isinstance(content, list) and content else None
        if first is not None and not isinstance(first, dict):
            raise MalformedResponse(f"choices[0].logprobs.content[0] is {_describe(first)}")
        top = first.get("top_logprobs") if first is not None else None
        if top is not None and not isinstance(top, list):
            raise MalformedResponse("choices[0].logprobs.content[0].top_logprobs is not a list")
        if not top:  # the chosen token alone cannot rank the candidates
            raise LogprobsUnavailable(
                f"{self.name}: the server does not provide token log-probabilities "
                "(no choices[0].logprobs.content[0].top_logprobs in its answer; "
                "llm.serve provides them with send_candidates=True); "
                "parse the answer text instead"
            )
        by_stripped: dict[str, list[str]] = {}
        for candidate in candidates:
            by_stripped.setdefault(candidate.strip(), []).append(candidate)
        scores = dict.fromkeys(candidates, -math.inf)
        # The chosen token counts too: some servers leave it out of top_logprobs.
        for index, entry in enumerate([first, *top]):
            where = "content[0]" if index == 0 else f"content[0].top_logprobs[{index - 1}]"
            token, logprob = _token_and_logprob(entry, where)
            for candidate in by_stripped.get(token.strip(), ()):
                scores[candidate] = max(scores[candidate], logprob)
        return scores


def _api_root(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base_url: expected http(s)://host[:port][/path], e.g. http://127.0.0.1:8000/v1, "
            f"got {base_url!r}"
        )
    if parts.username or parts.password:
        raise ValueError(
            "base_url: contains credentials, which would show in names and logs; "
            "put the key in the environment variable named by api_key_env instead"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"base_url: expected no query or fragment, got {base_url!r}")
    path = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedResponse(f"body is not JSON ({error})") from None


def _describe(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _first_choice(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedResponse(f"expected a JSON object, got {_describe(payload)}")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        error = payload.get("error")
        reported = f" (the server reported: {error})" if error else ""
        raise MalformedResponse(f"no choices: expected a non-empty list 'choices'{reported}")
    if not isinstance(choices[0], dict):
        raise MalformedResponse(f"choices[0] is {_describe(choices[0])}, expected an object")
    return choices[0]


def _token_and_logprob(entry: Any, where: str) -> tuple[str, float]:
    token = entry.get("token") if isinstance(entry, dict) else None
    logprob = entry.get("logprob") if isinstance(entry, dict) else None
    is_number = isinstance(logprob, (int, float)) and not isinstance(logprob, bool)
    if not isinstance(token, str) or not is_number:
        raise MalformedResponse(
            f"choices[0].logprobs.{where} needs a string 'token' and a number 'logprob', "
            f"got {entry!r}"
        )
    # -inf is a log-probability (of an impossible token); NaN and positive values are not
    if math.isnan(logprob) or logprob > LOGPROB_ROUNDING:
        raise MalformedResponse(
            f"choices[0].logprobs.{where}.logprob is {logprob}, not a log-probability (<= 0)"
        )
    return token, min(float(logprob), 0.0)


def _parse_generation(payload: Any) -> Generation:
    choice = _first_choice(payload)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedResponse(f"choices[0].message is {_describe(message)}, expected an object")
    text = message.get("content")
    if not isinstance(text, str):
        raise MalformedResponse(
            f"choices[0].message.content is {_describe(text)}, expected a string"
        )
    if not text.strip():  # would become a silent turn; a failure must not look like one
        raise MalformedResponse(
            f"choices[0].message.content is {'empty' if not text else 'only whitespace'}, "
            "expected text"
        )
    finish_reason = "length" if choice.get("finish_reason") == "length" else "stop"
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):  # the server ignored the request for log-probabilities
        return Generation(text=text, finish_reason=finish_reason)
    pairs = [_token_and_logprob(entry, f"content[{i}]") for i, entry in enumerate(content)]
    return Generation(
        text=text,
        finish_reason=finish_reason,
        tokens=[token for token, _ in pairs],
        logprobs=[logprob for _, logprob in pairs],
    )


def _error_detail(error: urllib.error.HTTPError, key: str | None) -> str:
    """The server's own words about an error status, redacted, then shortened."""
    try:
        raw = error.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        raw = b""
    finally:
        error.close()
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):  # {"error": {"message": ...}}, {"error": "..."}, {"detail": ...}
        found = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(found, dict):
            found = found.get("message", found)
        if found:
            text = str(found)
    return _shown(text or error.reason or "(no body)", key)


def _retry_after_seconds(headers: Any) -> float | None:
    """``Retry-After`` in seconds (given as seconds or as an HTTP date), None if absent."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return seconds if seconds >= 0 else 0.0  # also maps NaN to 0


def _connection_problem(reason: Any, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout} s ({reason})"
    return f"connection failed: {type(reason).__name__}: {reason}"


def _shown(text: str, key: str | None) -> str:
    """Server text for a message: the key redacted first, then cut to ``SHOWN_BODY_CHARS``
    (cutting first could leave the start of a key that straddles the cut)."""
    text = _redact(text, key)
    return text if len(text) <= SHOWN_BODY_CHARS else text[:SHOWN_BODY_CHARS] + "..."


def _redact(text: str, key: str | None) -> str:
    """``text`` with ``key`` replaced by ``[redacted]``, also where JSON escaped any of its
    characters (``\\u0073k-...``, ``\\/``)."""
    return _key_pattern(key).sub("[redacted]", text) if key else text


def _key_pattern(key: str) -> re.Pattern[str]:
    # each character as written or as JSON's \uXXXX escape of its UTF-16 code units;
    # case is ignored for the hex digits (and so for the key's letters: redacting more is safe)
    parts = []
    for char in key:
        units = char.encode("utf-16-be")
        escaped = "".join(rf"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        spellings = [re.escape(char), escaped, *([r"\\/"] if char == "/" else [])]
        parts.append("(?:" + "|".join(spellings) + ")")
    return re.compile("".join(parts), re.IGNORECASE)
