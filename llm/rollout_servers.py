"""Generation on inference servers, with the exact tokens a trainer needs.

A trainer's rollout (``rollout.engine: server``) hands its batched generations to
:class:`ServerPool` instead of its own decode loop. The pool renders each chat with the
trainer's own tokenizer, sends the *token ids* to the servers' ``/v1/completions``
endpoint, and takes back the sampled token ids and their log-probabilities. So the trainer
gets exactly the tokens that were sampled: no text is re-tokenised on the way back (which
can change a sample), and no log-probability is recomputed from text.

What a server must offer (all of it is what vLLM documents; ``negotiate serve`` offers the
same, so the whole path runs on a CPU):

- ``POST /v1/completions`` with ``prompt`` as token ids, answering with the sampled ids
  (``return_token_ids``, or ``return_tokens_as_token_ids`` with ``logprobs``) and their
  log-probabilities (``logprobs``). vLLM: start it with ``--enable-lora`` and
  ``--logprobs-mode processed_logprobs`` (log-probabilities after temperature, as the
  trainer computes them, though also renormalised over the top-p nucleus; TRL asks the
  same). A server whose answers lack token ids or
  log-probabilities is refused with a :class:`~llm.interface.BackendError`, never
  worked around.
- ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (``lora_name``,
  ``lora_path``): :meth:`ServerPool.load_adapter` loads the trainer's adapter on every
  server (vLLM needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); later requests name it.

A batch is split into one contiguous share per server, sent at once. A share whose server
fails (connection refused or reset, timeout, HTTP 5xx, or HTTP 404 because the server lost
the adapter, e.g. it restarted) is sent to the next server still up; each share is answered
once, so no sample is lost or duplicated. When no server is left, the call fails with the
reason of each.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llm.interface import BackendError, Conversation, Generation, GenerationSettings
from llm.openai_backend import (
    MalformedResponse,
    OpenAIBackend,
    RequestRejected,
    ServerUnavailable,
)


class ServerPool:
    """A backend that generates on one or more OpenAI-compatible servers from token ids.

    ``urls``: the servers' API roots (``http://host:port/v1``). ``tokenizer``: the trained
    model's (prompts are rendered and encoded with it, and :func:`~llm.interface.token_decoder`
    finds it here). ``model``: the name the servers serve the base model under (None: each
    server's first entry of ``GET /v1/models``). Requests name :attr:`adapter` once one is
    loaded. ``timeout`` and ``max_retries`` apply to each server before its share fails
    over to the next.

    >>> pool = ServerPool(["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"], tokenizer)
    >>> pool.load_adapter("policy-step-3", "/shared/adapters/step-3")  # doctest: +SKIP
    >>> pool.generate(chats, GenerationSettings(max_new_tokens=64))  # doctest: +SKIP
    """

    def __init__(
        self,
        urls: Sequence[str],
        tokenizer: Any,
        model: str | None = None,
        api_key_env: str = "ROLLOUT_API_KEY",
        timeout: float = 600.0,
        max_retries: int = 1,
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("rollout.servers: give at least one server URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"rollout.servers: a URL is listed twice: {list(urls)}")
        self.tokenizer = tokenizer
        self.clients = [
            OpenAIBackend(
                url,
                model or "?",
                api_key_env=api_key_env,
                timeout=timeout,
                max_retries=max_retries,
            )
            for url in urls
        ]
        if model is None:
            for client in self.clients:
                client.model = self._served_model(client)
        self.adapter: str | None = None
        self.name = "servers:" + ",".join(client.base_url for client in self.clients)
        self._lock = threading.Lock()
        # the tokens the local engine ends a turn at (end_of_turn_ids with the model adds
        # its generation config's end of sequence): vLLM stops at the model's own end of
        # sequence only, unless told (they go out as stop_token_ids)
        if stop_token_ids is None:
            from llm.transformers_backend import end_of_turn_ids

            stop_token_ids = end_of_turn_ids(tokenizer)
        self.stop_token_ids = sorted(set(stop_token_ids))

    def __repr__(self) -> str:
        return f"ServerPool({[c.base_url for c in self.clients]!r}, adapter={self.adapter!r})"

    @staticmethod
    def _served_model(client: OpenAIBackend) -> str:
        """The name a server serves its base model under: the first it lists."""
        try:
            names = ServerPool.listed(client)
        except BackendError as error:
            raise BackendError(f"rollout server {client.base_url} is not usable: {error}") from None
        if not names:
            raise BackendError(f"rollout server {client.base_url} is not usable: it lists no model")
        return names[0]

    def with_adapter(self, name: str | None) -> ServerPool:
        """A view of this pool whose requests always name ``name`` (the same servers),
        e.g. for a rollout that must keep one adapter while a newer one is loaded."""
        view = copy.copy(self)
        view.adapter = name
        return view

    # ------------------------------------------------------------------ adapters
    def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter folder ``path`` (which every server must be able to read) on
        every server as ``name``; later generations use it. Raises
        :class:`~llm.interface.BackendError` naming the server that failed: nothing is
        generated with a stale adapter, and the servers that had loaded it unload it again."""
        for index, client in enumerate(self.clients):
            try:
                client.post(
                    {"lora_name": name, "lora_path": path},
                    _text,
                    "load_lora_adapter",
                    json_answer=False,
                )
            except BackendError as error:
                # a load retried after a timeout finds its first attempt done: that is fine
                if isinstance(error, RequestRejected) and name in self.listed(client):
                    continue
                for loaded in self.clients[:index]:
                    self._unload(loaded, name)
                raise BackendError(
                    f"rollout server {client.base_url} could not load adapter {name!r} from "
                    f"{path}: {error}"
                ) from None
        self.adapter = name

    def unload_adapter(self, name: str) -> None:
        """Free ``name`` on every server; a server that fails to is only warned about."""
        for client in self.clients:
            self._unload(client, name)
        if self.adapter == name:
            self.adapter = None

    @staticmethod
    def _unload(client: OpenAIBackend, name: str) -> None:
        try:
            client.post({"lora_name": name}, _text, "unload_lora_adapter", json_answer=False)
        except BackendError as error:
            warnings.warn(
                f"rollout server {client.base_url}: unloading {name!r} failed: {error}",
                stacklevel=3,
            )

    @staticmethod
    def listed(client: OpenAIBackend) -> list[str]:
        """The model and adapter names ``client``'s server lists (``GET /v1/models``)."""

        def parse(payload: Any) -> list[str]:
            try:
                return [str(entry["id"]) for entry in payload["data"]]
            except (KeyError, TypeError):
                raise MalformedResponse("GET /v1/models: no data list of ids") from None

        return client.get("models", parse)

    def unload_matching(self, prefix: str) -> list[str]:
        """Unload every adapter whose name starts with ``prefix`` from every server (those a
        killed run left behind); the names unloaded."""
        gone = []
        for client in self.clients:
            for name in self.listed(client):
                if name.startswith(prefix):
                    client.post(
                        {"lora_name": name}, _text, "unload_lora_adapter", json_answer=False
                    )
                    gone.append(name)
        return gone

    # ------------------------------------------------------------------ generation
    def generate(
        self, conversations: Sequence[Conversation], settings: GenerationSettings
    ) -> list[Generation]:
        """One generation per conversation, in order, rendered with the chat template."""
        from llm.transformers_backend import encode_texts, render_chat

        texts = [render_chat(self.tokenizer, c) for c in conversations]
        return self.generate_from_ids(encode_texts(self.tokenizer, texts), settings)

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], settings: GenerationSettings
    ) -> list[Generation]:
        """Generations for prompts already tokenised, spread over the servers."""
        if not prompts:
            return []
        count = len(self.clients)
        size = math.ceil(len(prompts) / count)
        shares = [list(range(i, min(i + size, len(prompts)))) for i in range(0, len(prompts), size)]
        down: dict[int, str] = {}  # server index -> why it failed during this call
        results: list[Generation | None] = [None] * len(prompts)

        def run(first_server: int, indices: list[int]) -> None:
            body = self._body([prompts[i] for i in indices], settings, self.stop_token_ids)
            for step in range(count):
                server = (first_server + step) % count
                with self._lock:
                    if server in down:
                        continue
                client = self.clients[server]
                try:
                    body["model"] = self.adapter or client.model
                    answers = client.post(body, _choices(len(indices)), "completions")
                    generations = [
                        _generation(answer, prompts[index], client.base_url)
                        for index, answer in zip(indices, answers, strict=True)
                    ]
                except (ServerUnavailable, RequestRejected) as error:
                    if isinstance(error, RequestRejected) and error.status != 404:
                        raise  # the request itself is wrong: no server would take it
                    with self._lock:
                        down[server] = str(error)
                    continue
                for index, generation in zip(indices, generations, strict=True):
                    results[index] = self._as_local(generation, settings)
                return
            with self._lock:
                reasons = "; ".join(
                    f"{self.clients[s].base_url}: {why}" for s, why in sorted(down.items())
                )
            raise BackendError(
                f"no rollout server could generate ({len(indices)} prompts); {reasons}"
            )

        with ThreadPoolExecutor(len(shares), thread_name_prefix="rollout-servers") as pool:
            futures = [pool.submit(run, i, share) for i, share in enumerate(shares)]
            for future in futures:
                future.result()
        return results  # type: ignore[return-value]

    def _as_local(self, generation: Generation, settings: GenerationSettings) -> Generation:
        """The text made from the sampled ids as the local engine makes it (without the end
        of turn, special tokens skipped, stripped), so that the env reads the same text
        whichever engine sampled it; with stop strings, the server's text (it cut there)."""
        if settings.stop:
            return dataclasses.replace(generation, text=generation.text.strip())
        ids = generation.token_ids
        if generation.finish_reason == "stop" and ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return dataclasses.replace(generation, text=text)

    @staticmethod
    def _body(
        prompts: list[Sequence[int]], settings: GenerationSettings, stop_token_ids: list[int]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": [list(p) for p in prompts],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        if stop_token_ids:
            body["stop_token_ids"] = list(stop_token_ids)
        if settings.top_k:
            body["top_k"] = settings.top_k
        if settings.seed is not None:
            body["seed"] = settings.seed
        if settings.stop:
            body["stop"] = list(settings.stop)
        return body


def _text(answer: str) -> str:
    return answer


def _choices(count: int) -> Any:
    """A parser of a completions answer: its ``count`` choices, in prompt order."""

    def parse(payload: Any) -> list[dict[str, Any]]:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or len(choices) != count:
            raise MalformedResponse(f"expected {count} choices, got {_size(choices)}")
        try:
            return sorted(choices, key=lambda c: c["index"])
        except (KeyError, TypeError):
            raise MalformedResponse("a choice has no index") from None

    return parse


def _size(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else type(value).__name__


def _generation(choice: dict[str, Any], prompt: Sequence[int], server: str) -> Generation:
    """A completions choice as a :class:`Generation` with the sampled ids and log-probs."""
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    ids = choice.get("token_ids")
    if ids is None and isinstance(logprobs, dict) and logprobs.get("tokens") is not None:
        ids = [_token_id(token) for token in logprobs["tokens"]]
    if ids is None or None in ids:
        raise BackendError(
            f"rollout server {server} returned no token ids (needs return_token_ids, or "
            "return_tokens_as_token_ids with logprobs; vLLM >= 0.10.2 has both): the trainer "
            "must get the sampled tokens, not text to re-tokenise"
        )
    if not isinstance(values, list) or len(values) != len(ids):
        raise BackendError(
            f"rollout server {server} returned {_size(values)} log-probabilities for "
            f"{len(ids)} tokens (ask for logprobs; vLLM: --logprobs-mode processed_logprobs)"
        )
    finish_reason = choice.get("finish_reason")
    if finish_reason not in ("stop", "length"):
        # e.g. vLLM's "abort": the sample is not whole, and must not train as if it were
        raise ServerUnavailable(
            f"rollout server {server} ended a generation with finish_reason "
            f"{finish_reason!r}, not 'stop' or 'length'"
        )
    return Generation(
        text=str(choice.get("text") or ""),
        finish_reason=finish_reason,
        token_ids=[int(i) for i in ids],
        logprobs=[float("nan") if v is None else float(v) for v in values],
        prompt_token_ids=list(prompt),
    )


def _token_id(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith("token_id:"):
        value = token.removeprefix("token_id:")
        return int(value) if value.isdigit() else None
    return None
