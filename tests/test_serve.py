"""The server's limits and authentication, against real sockets on 127.0.0.1.

The protocol itself (fields, errors, scoring) is tested with the client in
``test_openai_backend.py``; here: what a client that misbehaves, or leaves, or has no key,
can and cannot do to the server. The model is the tiny random Llama (fast, and it never
ends a turn by itself, so a generation runs as long as it is asked to).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from llm.interface import (
    ContextLengthError,
    GenerationCancelled,
    GenerationSettings,
)
from llm.openai_backend import OpenAIBackend
from llm.serve import ChatCompletionServer, exposure_warning
from llm.transformers_backend import TransformersBackend
from tests.test_openai_backend import CannedBackend, user

GUARD_SECONDS = 60  # only against a hang: every wait below ends long before when all is well


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


class RecordingBackend(TransformersBackend):
    """The tiny model, recording when each generation starts and how it ended."""

    def generate(self, conversations, settings):
        self.started.set()
        try:
            return super().generate(conversations, settings)
        except BaseException as error:
            self.raised.append(error)
            raise


@pytest.fixture(scope="module")
def tiny_objects(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny(tiny_objects):
    model, tokenizer = tiny_objects
    context = model.config.max_position_embeddings
    backend = RecordingBackend.from_objects(model, tokenizer)
    backend.stop_token_ids = []  # never ends early: a generation lasts max_new_tokens steps
    backend.started, backend.raised = threading.Event(), []
    yield backend
    model.config.max_position_embeddings = context  # tests shrink it


def request_bytes(body: dict[str, Any], announced_length: int | None = None) -> bytes:
    """A raw request; ``announced_length`` is the Content-Length it claims (default: true)."""
    data = json.dumps(body).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(data) if announced_length is None else announced_length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def connect(server: ChatCompletionServer) -> socket.socket:
    connection = socket.create_connection(server._httpd.server_address[:2])
    connection.settimeout(GUARD_SECONDS)
    return connection


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def post(
    url: str,
    body: dict[str, Any] | None,
    key: str | None = None,
    endpoint: str = "chat/completions",
) -> tuple[int, dict]:
    """(status, JSON answer) of a POST of ``body`` to ``endpoint`` (without a body: a GET)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/{endpoint}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=GUARD_SECONDS) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_a_client_that_disconnects_cancels_its_generation(tiny):
    with ChatCompletionServer(tiny, max_tokens=8000) as server:
        leaving = connect(server)
        leaving.sendall(request_bytes({"messages": user("talk forever"), "max_tokens": 8000}))
        assert tiny.started.wait(GUARD_SECONDS)
        leaving.close()
        # The next request gets the model only once the first generation has stopped.
        status, payload = post(server.url, {"messages": user("hi"), "max_tokens": 2})
    assert status == 200 and payload["usage"]["completion_tokens"] == 2
    assert [type(error) for error in tiny.raised] == [GenerationCancelled]


def test_a_prompt_longer_than_the_context_gets_400_before_any_generation(tiny):
    tiny.model.config.max_position_embeddings = 64  # a small context, to exceed it cheaply
    with ChatCompletionServer(tiny) as server:
        status, payload = post(server.url, {"messages": user("word " * 100), "max_tokens": 4})
        fits_status, _ = post(server.url, {"messages": user("hi"), "max_tokens": 4})
    assert status == 400
    message = payload["error"]["message"]
    assert message.startswith("messages:") and "context of 64 tokens" in message
    assert [type(error) for error in tiny.raised] == [ContextLengthError]
    assert fits_status == 200


def test_prompt_plus_max_tokens_beyond_the_context_is_refused_by_the_backend(tiny):
    [prompt] = tiny.encode([tiny.render(user("hi"))])
    tiny.model.config.max_position_embeddings = len(prompt) + 2
    fits = GenerationSettings(max_new_tokens=2, temperature=0.0)
    assert len(tiny.generate([user("hi")], fits)[0].token_ids) == 2
    one_more = GenerationSettings(max_new_tokens=3, temperature=0.0)
    with pytest.raises(ContextLengthError, match=f"{len(prompt)} tokens plus max_new_tokens=3"):
        tiny.generate([user("hi")], one_more)


def test_an_idle_connection_is_closed_after_the_socket_timeout():
    with ChatCompletionServer(CannedBackend(), socket_timeout=0.3) as server:
        idle = connect(server)
        assert read_all(idle) == b""  # closed by the server, without a request
        idle.close()


def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes():
    with ChatCompletionServer(CannedBackend(), socket_timeout=0.3) as server:
        connection = connect(server)
        connection.sendall(request_bytes({"messages": user("hi")}, announced_length=10_000))
        answer = read_all(connection)
        connection.close()
    assert answer.startswith(b"HTTP/1.0 408")
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]


def test_connections_beyond_the_limit_get_503_at_once_and_a_freed_slot_serves_again():
    with ChatCompletionServer(CannedBackend(), max_connections=2) as server:
        holders = [connect(server), connect(server)]  # idle: each holds a handler
        refused = connect(server)
        answer = read_all(refused)
        refused.close()
        assert answer.startswith(b"HTTP/1.0 503")
        assert b"max_connections" in answer
        for holder in holders:
            holder.close()
        # The handlers notice the closed connections on their own threads; until they
        # have, a new connection may still be refused.
        for _ in range(GUARD_SECONDS * 20):
            status, _ = post(server.url, {"messages": user("hi")})
            if status != 503:
                break
            time.sleep(0.05)
    assert status == 200


def test_a_refused_client_that_sends_its_request_after_the_503_still_reads_it():
    # A client may write its request after the server has answered 503. Had the server
    # closed at once, the kernel would answer those bytes with a reset, and the client's
    # next write would fail with a broken pipe instead of reading the 503.
    with ChatCompletionServer(CannedBackend(), max_connections=1) as server:
        holder = connect(server)
        refused = connect(server)
        assert refused.recv(1, socket.MSG_PEEK) == b"H"  # the answer is already there
        head, body = request_bytes({"messages": user("hi")}).split(b"\r\n\r\n", 1)
        refused.sendall(head + b"\r\n\r\n")
        time.sleep(0.2)  # time for a reset to come back, had the server closed
        refused.sendall(body)
        answer = read_all(refused)
        refused.close()
        holder.close()
    assert answer.startswith(b"HTTP/1.0 503") and b"max_connections" in answer


def test_with_an_api_key_requests_need_it_as_a_bearer_token(monkeypatch):
    key = "serve-test-key-0123"
    with ChatCompletionServer(CannedBackend(), api_key=key) as server:
        missing_status, missing = post(server.url, {"messages": user("hi")})
        wrong_status, _ = post(server.url, {"messages": user("hi")}, key="not-the-key")
        right_status, right = post(server.url, {"messages": user("hi")}, key=key)
        models = urllib.request.Request(server.url + "/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(models, timeout=GUARD_SECONDS)
        refused.value.close()
        monkeypatch.setenv("SERVE_TEST_KEY", key)
        client = OpenAIBackend(
            server.url, server.model_name, api_key_env="SERVE_TEST_KEY", max_retries=0
        )
        [generation] = client.generate([user("ping")], GenerationSettings(max_new_tokens=2))
    assert (missing_status, wrong_status, right_status) == (401, 401, 200)
    assert "Authorization: Bearer" in missing["error"]["message"]
    assert right["choices"][0]["message"]["content"] == "reply to: hi"
    assert refused.value.code == 401
    assert generation.text == "reply to: ping"


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.20", "my-host.example"])
def test_listening_beyond_loopback_without_a_key_is_warned_about(host):
    warning = exposure_warning(host, api_key=None)
    assert warning is not None and "--api-key" in warning
    assert exposure_warning(host, api_key="k") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_without_a_key_is_not_warned_about(host):
    assert exposure_warning(host, api_key=None) is None


def raw_post(server: ChatCompletionServer, data: bytes) -> bytes:
    """POST ``data`` as the body, byte for byte; the whole answer."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    connection = connect(server)
    try:
        connection.sendall(head.encode() + data)
        return read_all(connection)
    finally:
        connection.close()


def status_and_message(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]


def test_max_tokens_beyond_the_servers_limit_gets_400_and_the_server_serves_on():
    with ChatCompletionServer(CannedBackend(), max_tokens=256) as server:
        status, payload = post(server.url, {"messages": user("hi"), "max_tokens": 100_000})
        after, _ = post(server.url, {"messages": user("hi"), "max_tokens": 256})
    assert status == 400
    assert payload["error"]["message"] == "max_tokens: expected an integer in [1, 256], got 100000"
    assert after == 200


def test_the_limit_on_max_tokens_is_never_above_the_models_context(tiny):
    tiny.model.config.max_position_embeddings = 64
    with ChatCompletionServer(tiny, max_tokens=4096) as server:
        assert server.max_tokens == 64
        status, payload = post(server.url, {"messages": user("hi"), "max_tokens": 65})
    assert status == 400 and "[1, 64]" in payload["error"]["message"]
    assert not tiny.started.is_set()  # refused before the model was asked anything


def test_a_lone_surrogate_gets_400_naming_the_field_and_the_server_serves_on():
    backend = CannedBackend()
    with ChatCompletionServer(backend) as server:
        body = b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
        status, message = status_and_message(raw_post(server, body))
        stop = b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}'
        stop_status, stop_message = status_and_message(raw_post(server, stop))
        after, payload = post(server.url, {"messages": user("hi")})
    assert status == 400 and message.startswith("messages[0].content: a lone surrogate")
    assert stop_status == 400 and stop_message.startswith("stop[0]: a lone surrogate")
    assert after == 200 and payload["choices"][0]["message"]["content"] == "reply to: hi"
    assert len(backend.settings_seen) == 1  # the bad requests never reached the backend


def test_deeply_nested_json_gets_400_and_the_server_serves_on():
    with ChatCompletionServer(CannedBackend()) as server:
        nested = b"[" * 500_000 + b"]" * 500_000  # 1 MB
        status, message = status_and_message(raw_post(server, nested))
        after, _ = post(server.url, {"messages": user("hi")})
    assert status == 400 and "nested too deeply" in message
    assert after == 200


def test_a_body_over_the_limit_gets_413_and_the_server_serves_on():
    with ChatCompletionServer(CannedBackend(), max_body_bytes=1000) as server:
        answer = raw_post(server, json.dumps({"messages": user("x" * 2000)}).encode())
        after, _ = post(server.url, {"messages": user("hi")})
    status, message = status_and_message(answer)
    assert status == 413 and "limit of 1000" in message and "--max-body-bytes" in message
    assert after == 200


class GatedBackend(CannedBackend):
    """Test double: the first generation waits for ``gate``, so that requests queue behind
    it; records the number of conversations in each call."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.busy = threading.Event(), threading.Event()
        self.batch_sizes: list[int] = []

    def generate(self, conversations, settings):
        self.batch_sizes.append(len(conversations))
        self.busy.set()
        assert self.gate.wait(GUARD_SECONDS)
        return super().generate(conversations, settings)


def test_requests_that_arrive_while_the_backend_is_busy_are_answered_in_one_batch():
    backend = GatedBackend()
    results: dict[str, Any] = {}

    def ask(name: str, **fields: Any) -> None:
        results[name] = post(server.url, {"messages": user(name), **fields})

    with ChatCompletionServer(backend) as server:
        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert backend.busy.wait(GUARD_SECONDS)
        waiting = [threading.Thread(target=ask, args=(f"q{i}",)) for i in range(3)]
        waiting.append(threading.Thread(target=ask, args=("other",), kwargs={"temperature": 0.0}))
        for thread in waiting:
            thread.start()
        for _ in range(GUARD_SECONDS * 20):  # until all four wait in the queue
            with server._jobs_changed:
                if len(server._jobs) == 4:
                    break
            time.sleep(0.05)
        backend.gate.set()
        for thread in [first, *waiting]:
            thread.join(GUARD_SECONDS)
    # the first alone; then the three with the same settings together; then the other
    assert backend.batch_sizes == [1, 3, 1]
    for name in ("first", "q0", "q1", "q2", "other"):
        status, payload = results[name]
        assert status == 200 and payload["choices"][0]["message"]["content"] == f"reply to: {name}"


def test_a_failing_request_in_a_batch_does_not_fail_the_others(tiny):
    tiny.model.config.max_position_embeddings = 64
    results: dict[str, Any] = {}
    with ChatCompletionServer(tiny, max_tokens=4) as server:
        threads = [
            threading.Thread(
                target=lambda n=name, t=text: results.__setitem__(
                    n, post(server.url, {"messages": user(t), "max_tokens": 4, "temperature": 0})
                )
            )
            for name, text in (("long", "word " * 100), ("short", "hi"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD_SECONDS)
    assert results["long"][0] == 400 and results["short"][0] == 200


def test_top_logprobs_of_the_first_position_come_from_the_model(tiny):
    body = {
        "messages": user("rate it"),
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    with ChatCompletionServer(tiny) as server:
        status, payload = post(server.url, body)
        first = payload["choices"][0]["logprobs"]["content"][0]
        top = first["top_logprobs"]
        # a judge's client without the candidates extension can now rank its candidates
        client = OpenAIBackend(server.url, server.model_name, max_retries=0)
        [scores] = client.next_token_logprobs([user("rate it")], [top[0]["token"], top[1]["token"]])
    assert status == 200 and len(top) == 5
    values = [entry["logprob"] for entry in top]
    assert values == sorted(values, reverse=True) and values[0] <= 0.0
    # greedy: the one token generated is the most likely one
    assert payload["choices"][0]["message"]["content"] == top[0]["token"].strip()
    assert scores[top[0]["token"]] == pytest.approx(values[0], abs=1e-4)
