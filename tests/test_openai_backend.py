"""OpenAIBackend and ChatCompletionServer against real HTTP servers on 127.0.0.1.

Two servers: the project's own :class:`ChatCompletionServer` around a deterministic test
double, and :class:`FaultServer`, which answers each request by the next step of a script
(errors, delays, malformed bodies) and records what it received. Timeouts and backoffs
are small, so a hang or a missed retry shows up as a failure within seconds.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llm.interface import (
    BackendError,
    Generation,
    GenerationSettings,
    LLMBackend,
    LogprobsUnavailable,
)
from llm.openai_backend import SHOWN_BODY_CHARS, OpenAIBackend
from llm.serve import ChatCompletionServer

KEY_ENV = "NEGOTIATION_TEST_API_KEY"
FAKE_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def no_proxy_and_no_key(monkeypatch):
    # A proxy from the environment would intercept requests meant for 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def client(url: str, **overrides: Any) -> OpenAIBackend:
    options = {"api_key_env": KEY_ENV, "timeout": 2.0, "max_retries": 3, "backoff": 0.0}
    return OpenAIBackend(url, "test-model", **{**options, **overrides})


# --- the project's own server around a test double ------------------------------------


class CannedBackend:
    """Deterministic test double of an LLMBackend: replies ``"reply to: <last message>"``
    word by word with log-probability -0.25 per word, scores candidates from the fixed
    table ``SCORES`` (-inf for others), and records every call it receives."""

    name = "canned"
    LOGPROB = -0.25
    SCORES = {"1": -3.0, "2": -2.0, "3": -0.5, "4": -1.5}

    def __init__(self) -> None:
        self.settings_seen: list[GenerationSettings] = []
        self.scoring_calls: list[tuple[list, tuple[str, ...], str]] = []

    def generate(self, conversations, settings):
        self.settings_seen.append(settings)
        replies = []
        for conversation in conversations:
            words = f"reply to: {conversation[-1]['content']}".split(" ")
            tokens = [words[0]] + [" " + word for word in words[1:]]
            replies.append(
                Generation(
                    text="".join(tokens),
                    finish_reason="stop",
                    tokens=tokens,
                    logprobs=[self.LOGPROB] * len(tokens),
                    prompt_token_ids=[0] * len(conversation),
                )
            )
        return replies

    def next_token_logprobs(self, conversations, candidates, assistant_prefix=""):
        self.scoring_calls.append((list(conversations), tuple(candidates), assistant_prefix))
        return [{c: self.SCORES.get(c, -math.inf) for c in candidates} for _ in conversations]


class BrokenBackend(CannedBackend):
    """Test double whose every generation raises, as a crashed model would."""

    def generate(self, conversations, settings):
        raise RuntimeError("GPU on fire")


@pytest.fixture
def canned():
    backend = CannedBackend()
    with ChatCompletionServer(backend, model_name="test-model") as server:
        yield backend, server


def test_test_double_satisfies_the_backend_protocol():
    assert isinstance(CannedBackend(), LLMBackend)
    assert isinstance(client("http://127.0.0.1:1"), LLMBackend)


def test_batch_through_own_server_keeps_input_order_logprobs_and_settings(canned):
    double, server = canned
    backend = client(server.url, concurrency=4)
    settings = GenerationSettings(
        max_new_tokens=7,
        temperature=0.3,
        top_p=0.9,
        top_k=5,
        seed=11,
        stop=("END",),
        no_repeat_ngram_size=4,
    )
    generations = backend.generate([user(f"question {i}") for i in range(10)], settings)
    assert [g.text for g in generations] == [f"reply to: question {i}" for i in range(10)]
    for generation in generations:
        assert generation.finish_reason == "stop"
        assert "".join(generation.tokens) == generation.text
        assert generation.logprobs == [CannedBackend.LOGPROB] * len(generation.tokens)
    assert double.settings_seen == [settings] * 10


def test_unset_optional_settings_reach_the_backend_as_its_defaults(canned):
    double, server = canned
    settings = GenerationSettings(max_new_tokens=3, temperature=0.0, logprobs=False)
    [generation] = client(server.url).generate([user("hi")], settings)
    assert generation.text == "reply to: hi" and generation.logprobs is None
    assert double.settings_seen == [settings]


def test_next_token_logprobs_through_own_server_scores_every_candidate(canned):
    double, server = canned
    candidates = ["1", "2", "3", "4", "9"]
    scores = client(server.url, send_candidates=True).next_token_logprobs(
        [user("rate it"), user("rate this")], candidates, assistant_prefix="Score: "
    )
    expected = {**CannedBackend.SCORES, "9": -math.inf}
    assert scores == [expected, expected]
    # The two concurrent requests may reach the backend in one batched call or in two:
    # what each conversation was scored with is the same either way.
    scored = sorted(
        (
            (conversation, call_candidates, prefix)
            for conversations, call_candidates, prefix in double.scoring_calls
            for conversation in conversations
        ),
        key=lambda call: call[0][-1]["content"],
    )
    # The final assistant message came back out of the conversation as the prefix.
    assert scored == [
        (user("rate it"), tuple(candidates), "Score: "),
        (user("rate this"), tuple(candidates), "Score: "),
    ]


def test_scoring_own_server_without_send_candidates_raises_instead_of_guessing(canned):
    with pytest.raises(BackendError, match="send_candidates=True"):
        client(canned[1].url).next_token_logprobs([user("rate it")], ["1", "2"])


def test_backend_exception_becomes_http_500_and_then_a_backend_error():
    with ChatCompletionServer(BrokenBackend(), model_name="test-model") as server:
        with pytest.raises(BackendError, match="GPU on fire") as raised:
            client(server.url, max_retries=1).generate([user("hi")], GenerationSettings())
    assert "HTTP 500" in str(raised.value) and "2 attempts" in str(raised.value)


def post_raw(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": user("hi"), "max_tokens": -1}, "max_tokens"),
        ({"messages": user("hi"), "max_tokens": "ten"}, "max_tokens"),
        ({"messages": user("hi"), "temperature": -0.5}, "temperature"),
        ({"messages": user("hi"), "top_p": 0}, "top_p"),
        ({"messages": user("hi"), "stop": [3]}, "stop"),
        ({"messages": user("hi"), "top_logprobs": 50}, "top_logprobs"),
        ({"messages": user("hi"), "seed": 2**70}, "seed"),  # torch refused it with a 500
        ({"messages": user("hi"), "seed": -(2**63) - 1}, "seed"),
        ({"messages": user("hi"), "stream": True}, "stream"),
        ([1, 2], "request body"),
    ],
)
def test_own_server_answers_400_naming_the_bad_field(canned, body, field):
    double, server = canned
    status, payload = post_raw(server.url, json.dumps(body).encode())
    assert status == 400
    assert payload["error"]["message"].startswith(f"{field}:")
    assert double.settings_seen == []


def test_own_server_answers_400_to_a_body_that_is_not_json(canned):
    status, payload = post_raw(canned[1].url, b"{not json")
    assert status == 400 and "not valid JSON" in payload["error"]["message"]


def test_bad_request_fails_at_once_with_the_servers_reason(canned):
    double, server = canned
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"HTTP 400: messages\[0\]\.role") as raised:
        client(server.url, backoff=1.0).generate(
            [[{"role": "robot", "content": "hi"}]], GenerationSettings()
        )
    assert "not retried" in str(raised.value)
    assert time.monotonic() - started < 1.0  # no backoff pause: it was not retried


def test_models_endpoint_lists_the_served_model(canned):
    with urllib.request.urlopen(canned[1].url + "/models", timeout=5) as response:
        payload = json.load(response)
    assert [model["id"] for model in payload["data"]] == ["test-model"]


def test_server_url_works_with_or_without_v1_and_trailing_slash(canned):
    _, server = canned
    root = server.url.removesuffix("/v1")
    for url in (root, root + "/", server.url, server.url + "/"):
        backend = client(url)
        assert backend.name == f"openai:test-model@{server.url}"
        [generation] = backend.generate([user("ping")], GenerationSettings(max_new_tokens=2))
        assert generation.text == "reply to: ping"


# --- a server that misbehaves on purpose ----------------------------------------------


def completion(content: Any, finish_reason: str = "stop", logprobs: Any = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    return {"choices": [{**choice, "finish_reason": finish_reason, "logprobs": logprobs}]}


class FaultServer:
    """A chat-completions server that answers request k by ``steps[k]`` (the last step
    repeats) and records each request's headers and body and its arrival time.

    Steps: ``ok`` (echoes the last message, with logprobs), ``finish:REASON``,
    ``no-logprobs``, ``top-logprobs``, ``500``, ``429`` (with ``Retry-After: retry_after``),
    ``slow`` (answers after ``slow_seconds``, past the client's timeout), ``not-json``,
    ``null-content``, ``no-choices``, ``401`` (its message echoes the Authorization
    header, as a careless server might), ``redirect``, ``barrier`` (waits until
    ``barrier_parties`` requests are in flight together, then answers like ``ok``).
    Hostile ones: ``empty-content``, ``blank-content``, ``nan-logprob``,
    ``positive-logprob``, ``trickle-headers`` (a valid answer whose header lines arrive a
    byte every 0.05 s, about 10 s in all), ``huge-declared`` / ``huge-undeclared`` (a valid
    answer of ``HUGE_BYTES``, with or without ``Content-Length``), ``401-near-cut`` (the key
    echoed where the message is cut), ``401-escaped`` and ``200-escaped`` (the key echoed
    JSON-escaped in a body that does not parse).
    """

    HUGE_BYTES = 300_000

    def __init__(self, *steps: str, retry_after: str = "0", barrier_parties: int = 1):
        self.steps = steps
        self.retry_after = retry_after
        self.slow_seconds = 3.0
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.barrier = threading.Barrier(barrier_parties, timeout=3.0)
        self.released = threading.Event()
        self.trickled = threading.Event()  # a trickle-headers answer has ended, as below
        self.trickle_outcome = ""  # "delivered", "client left" or "released"
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FaultHandler)
        self._httpd.block_on_close = False  # do not wait for a "slow" answer nobody wants
        self._httpd.fault = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def arrive(self, headers: Any, body: dict) -> str:
        with self._lock:
            step = self.steps[min(len(self.requests), len(self.steps) - 1)]
            self.requests.append({"headers": dict(headers), "body": body})
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return step

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def answer(self, step: str, body: dict, authorization: str) -> tuple[int, dict, bytes]:
        echo = f"echo: {body['messages'][-1]['content']}"
        entries = [{"token": "echo", "logprob": -0.5}, {"token": ":", "logprob": -0.1}]
        if step == "barrier":
            self.barrier.wait()
            step = "ok"
        if step == "slow":
            self.released.wait(self.slow_seconds)
            step = "ok"
        if step in ("ok", "trickle-headers"):  # the handler trickles the latter's headers
            return 200, {}, completion(echo, logprobs={"content": entries})
        if step.startswith("finish:"):
            return 200, {}, completion(echo, finish_reason=step.removeprefix("finish:"))
        if step == "no-logprobs":
            return 200, {}, completion(echo)
        if step == "top-logprobs":
            top = [
                {"token": " 3", "logprob": -0.7},
                {"token": "3", "logprob": -1.2},
                {"token": "\n4", "logprob": -2.5},
                {"token": "5", "logprob": -9.0},
            ]
            first = {"token": "3", "logprob": -1.2, "top_logprobs": top}
            return 200, {}, completion("3", logprobs={"content": [first]})
        if step == "500":
            return 500, {}, {"error": {"message": "internal oops"}}
        if step == "429":
            return 429, {"Retry-After": self.retry_after}, {"error": {"message": "slow down"}}
        if step == "not-json":
            return 200, {}, b"<html>bad gateway from a proxy</html>"
        if step == "null-content":
            return 200, {}, completion(None)
        if step == "no-choices":
            return 200, {}, {"id": "chatcmpl-1", "object": "chat.completion"}
        if step == "401":
            return 401, {}, {"error": {"message": f"invalid api key: {authorization}"}}
        if step == "redirect":
            return 302, {"Location": "http://127.0.0.1:9/v1/chat/completions"}, {}
        if step == "empty-content":
            return 200, {}, completion("")
        if step == "blank-content":
            return 200, {}, completion(" \n\t ")
        if step in ("nan-logprob", "positive-logprob"):
            bad = math.nan if step == "nan-logprob" else 0.5
            return (
                200,
                {},
                completion(echo, logprobs={"content": [*entries, {"token": "!", "logprob": bad}]}),
            )
        if step.startswith("huge-"):
            return 200, {}, completion("x" * self.HUGE_BYTES)
        key = authorization.removeprefix("Bearer ")
        escaped = "".join(f"\\u{ord(c):04x}" for c in key)
        if step == "401-near-cut":
            padding = "p" * (SHOWN_BODY_CHARS - len("invalid api key: ") - 8)
            return 401, {}, {"error": {"message": f"invalid api key: {padding}{key}"}}
        if step == "401-escaped":
            return 401, {}, ('{"error": {"message": "invalid api key: ' + escaped).encode()
        if step == "200-escaped":
            return 200, {}, ("<html>proxy error for key " + escaped + "</html>").encode()
        raise AssertionError(f"unknown step {step!r}")


class _FaultHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fault: FaultServer = self.server.fault
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        step = fault.arrive(self.headers, body)
        try:
            status, headers, payload = fault.answer(
                step, body, self.headers.get("Authorization", "")
            )
        finally:
            fault.leave()
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            if step == "trickle-headers":
                self._trickle(raw, fault)
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if step != "huge-undeclared":  # HTTP/1.0: the body then ends where the connection does
                self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def _trickle(self, raw: bytes, fault: FaultServer) -> None:
        head = f"HTTP/1.0 200 OK\r\nX-Padding: {'p' * 200}\r\nContent-Length: {len(raw)}\r\n\r\n"
        fault.trickle_outcome = "client left"
        try:
            for byte in head.encode():
                if fault.released.wait(0.05):
                    fault.trickle_outcome = "released"
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.wfile.write(raw)
            fault.trickle_outcome = "delivered"
        finally:
            fault.trickled.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fault_server():
    servers: list[FaultServer] = []

    def start(*steps: str, **options: Any) -> FaultServer:
        servers.append(FaultServer(*steps, **options).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def generate_one(backend: OpenAIBackend, text: str = "hi", **settings: Any) -> Generation:
    [generation] = backend.generate([user(text)], GenerationSettings(**settings))
    return generation


@pytest.mark.parametrize(
    "failure",
    [
        "500",
        "429",
        "slow",
        "not-json",
        "null-content",
        "no-choices",
        "empty-content",
        "nan-logprob",
    ],
)
def test_one_failure_then_success_is_retried_and_returns_the_reply(fault_server, failure):
    server = fault_server(failure, "ok")
    started = time.monotonic()
    generation = generate_one(client(server.url, timeout=0.3), "hello")
    assert generation.text == "echo: hello"
    assert generation.tokens == ["echo", ":"] and generation.logprobs == [-0.5, -0.1]
    assert server.attempts == 2
    assert time.monotonic() - started < 2.0  # the slow answer was abandoned, not awaited


def test_persistent_500_raises_after_max_retries_plus_one_attempts(fault_server):
    server = fault_server("500")
    with pytest.raises(BackendError) as raised:
        generate_one(client(server.url, max_retries=3))
    message = str(raised.value)
    assert server.attempts == 4
    for part in ("/v1/chat/completions", "'test-model'", "4 attempts", "HTTP 500", "internal oops"):
        assert part in message


def test_persistent_timeout_raises_within_the_bounded_time(fault_server):
    server = fault_server("slow")
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        generate_one(client(server.url, timeout=0.2, max_retries=2))
    assert server.attempts == 3
    assert time.monotonic() - started < 2.5  # 3 attempts x 0.2 s, plus slack


@pytest.mark.parametrize(
    ("step", "what"),
    [
        ("null-content", "choices[0].message.content is null, expected a string"),
        ("not-json", "body is not JSON"),
        ("no-choices", "no choices"),
        ("empty-content", "choices[0].message.content is empty, expected text"),
        ("blank-content", "choices[0].message.content is only whitespace, expected text"),
        ("nan-logprob", "content[2].logprob is nan, not a log-probability"),
        ("positive-logprob", "content[2].logprob is 0.5, not a log-probability"),
    ],
)
def test_persistently_malformed_reply_raises_instead_of_an_empty_utterance(
    fault_server, step, what
):
    server = fault_server(step)
    with pytest.raises(BackendError) as raised:
        generate_one(client(server.url, max_retries=2))
    message = str(raised.value)
    assert "malformed response" in message and what in message
    assert server.attempts == 3
    if step == "not-json":
        assert "<html>bad gateway from a proxy</html>" in message  # the start of the body


def test_a_server_trickling_its_headers_is_cut_off_at_the_timeout(fault_server):
    # Every byte arrives well within the socket timeout; the whole answer, about 10 s later.
    server = fault_server("trickle-headers")
    with pytest.raises(BackendError, match="timed out after 0.5 s"):
        generate_one(client(server.url, timeout=0.5, max_retries=0))
    assert server.attempts == 1
    assert server.trickled.wait(30)
    assert server.trickle_outcome == "client left"  # not held until the headers ended


@pytest.mark.parametrize("step", ["huge-declared", "huge-undeclared"])
def test_an_answer_over_max_response_bytes_fails_at_once(fault_server, step):
    server = fault_server(step)
    with pytest.raises(BackendError, match="max_response_bytes=100000") as raised:
        generate_one(client(server.url, max_response_bytes=100_000))
    assert server.attempts == 1 and "not retried" in str(raised.value)
    big_enough = client(server.url, max_response_bytes=FaultServer.HUGE_BYTES + 1000)
    assert len(generate_one(big_enough).text) == FaultServer.HUGE_BYTES


@pytest.mark.parametrize("step", ["401-near-cut", "401-escaped", "200-escaped"])
def test_the_key_is_redacted_before_the_message_is_cut_and_when_escaped(
    fault_server, monkeypatch, step
):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    server = fault_server(step)
    with pytest.raises(BackendError) as raised:
        generate_one(client(server.url, max_retries=0))
    message = str(raised.value)
    assert "[redact" in message  # near the cut, the end of the placeholder is cut off
    assert FAKE_KEY[:6] not in message  # but not even the start of the key is shown
    assert "\\u0073\\u006b" not in message  # nor escaped ("sk")


def test_401_fails_at_once_with_the_servers_message(fault_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    server = fault_server("401")
    with pytest.raises(BackendError) as raised:
        generate_one(client(server.url))
    message = str(raised.value)
    assert server.attempts == 1
    assert "HTTP 401" in message and "invalid api key" in message and KEY_ENV in message
    assert FAKE_KEY not in message  # the server echoed it; the error must not


def test_api_key_is_sent_as_bearer_token_and_shown_nowhere(fault_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    server = fault_server("ok", "500")
    backend = client(server.url, max_retries=1)
    generate_one(backend)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {FAKE_KEY}"
    with pytest.raises(BackendError) as raised:
        generate_one(backend)
    for shown in (repr(backend), str(backend), backend.name, str(raised.value)):
        assert FAKE_KEY not in shown


def test_no_authorization_header_without_a_key(fault_server):
    server = fault_server("ok")
    generate_one(client(server.url))
    assert "Authorization" not in server.requests[0]["headers"]


def test_redirects_are_not_followed_so_the_key_goes_nowhere_else(fault_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    server = fault_server("redirect")
    with pytest.raises(BackendError, match="HTTP 302.*redirects are not followed"):
        generate_one(client(server.url))
    assert server.attempts == 1


def test_retry_after_zero_overrides_a_long_backoff(fault_server):
    server = fault_server("429", "ok", retry_after="0")
    started = time.monotonic()
    assert generate_one(client(server.url, backoff=5.0)).text == "echo: hi"
    assert time.monotonic() - started < 2.0 and server.attempts == 2


def test_retry_after_is_waited_for(fault_server):
    server = fault_server("429", "ok", retry_after="0.3")
    generate_one(client(server.url))
    assert server.arrivals[1] - server.arrivals[0] >= 0.3


def test_retry_after_is_capped_by_max_wait(fault_server):
    server = fault_server("429", "ok", retry_after="3600")
    started = time.monotonic()
    generate_one(client(server.url, max_wait=0.1))
    assert time.monotonic() - started < 2.0 and server.attempts == 2


def test_backoff_pauses_double_from_attempt_to_attempt(fault_server):
    server = fault_server("500")
    with pytest.raises(BackendError):
        generate_one(client(server.url, backoff=0.04, max_retries=3))
    assert server.attempts == 4
    gaps = [server.arrivals[retry] - server.arrivals[retry - 1] for retry in (1, 2, 3)]
    # Jitter draws each pause from [half, all] of backoff * 2**(retry - 1).
    assert [gap >= 0.02 * 2**index for index, gap in enumerate(gaps)] == [True] * 3


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendError, match="3 attempts.*connection failed"):
        generate_one(client(f"http://127.0.0.1:{port}", max_retries=2))


def test_batch_runs_concurrency_requests_at_once_and_keeps_input_order(fault_server):
    # Each request waits until 3 are in flight together, so a client that sent them one by
    # one would time out at the barrier; the client's bound keeps it from exceeding 3.
    server = fault_server("barrier", barrier_parties=3)
    backend = client(server.url, concurrency=3, max_retries=0)
    generations = backend.generate([user(f"q{i}") for i in range(9)], GenerationSettings())
    assert [g.text for g in generations] == [f"echo: q{i}" for i in range(9)]
    assert server.max_in_flight == 3 and server.attempts == 9


def test_request_carries_only_the_settings_that_are_set(fault_server):
    server = fault_server("ok")
    backend = client(server.url)
    generate_one(backend, max_new_tokens=5, temperature=0.0, logprobs=False)
    generate_one(
        backend,
        max_new_tokens=9,
        temperature=1.1,
        top_p=0.8,
        top_k=4,
        seed=3,
        stop=("x",),
        no_repeat_ngram_size=5,
    )
    plain, full = (request["body"] for request in server.requests)
    assert {key: value for key, value in plain.items() if key != "messages"} == {
        "model": "test-model",
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 0.95,
    }
    assert full["max_tokens"] == 9 and full["temperature"] == 1.1 and full["top_p"] == 0.8
    assert full["top_k"] == 4 and full["seed"] == 3 and full["stop"] == ["x"]
    assert full["no_repeat_ngram_size"] == 5
    assert full["logprobs"] is True and full["messages"] == user("hi")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("length", "length"), ("stop", "stop"), ("content_filter", "stop"), ("eos", "stop")],
)
def test_finish_reason_length_is_kept_and_any_other_becomes_stop(fault_server, reason, expected):
    server = fault_server(f"finish:{reason}")
    assert generate_one(client(server.url)).finish_reason == expected


def test_server_that_ignores_logprobs_gives_text_without_logprobs(fault_server):
    server = fault_server("no-logprobs")
    generation = generate_one(client(server.url), "plain")
    assert generation.text == "echo: plain"
    assert generation.logprobs is None and generation.tokens is None


def test_next_token_logprobs_asks_for_one_greedy_token_with_top_logprobs(fault_server):
    server = fault_server("top-logprobs")
    [scores] = client(server.url).next_token_logprobs(
        [user("rate")], ["3", "4", "7"], assistant_prefix="Score:"
    )
    # " 3" and "3" both match "3": the better one counts; "7" is not among the tokens.
    assert scores == {"3": -0.7, "4": -2.5, "7": -math.inf}
    body = server.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["messages"] == [*user("rate"), {"role": "assistant", "content": "Score:"}]


@pytest.mark.parametrize("step", ["no-logprobs", "ok"])  # none at all; no top_logprobs
def test_next_token_logprobs_without_server_top_logprobs_raises_at_once(fault_server, step):
    server = fault_server(step)
    with pytest.raises(LogprobsUnavailable, match="does not provide token log-probabilities"):
        client(server.url).next_token_logprobs([user("rate")], ["1", "2"])
    assert server.attempts == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"base_url": "ftp://127.0.0.1/v1"}, "base_url"),
        ({"base_url": "http://user:secret@127.0.0.1/v1"}, "base_url"),
        ({"model": ""}, "model"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_constructor_rejects_bad_settings_naming_the_field(options, field):
    arguments = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **options}
    with pytest.raises(ValueError, match=f"^{field}:"):
        OpenAIBackend(**arguments)
