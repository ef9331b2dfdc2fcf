"""Rollouts on inference servers, end to end: ``negotiate serve`` processes on 127.0.0.1 and
the pool that spreads a rollout's generations over them (``llm/rollout_servers.py``), and
self-play training with ``rollout.engine: server`` (``trainers/engine.py``), staleness 0
and 1. The model is the tiny random Llama (fast, and it never ends a turn by itself)."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.perf_servers import free_port
from llm.interface import BackendError, GenerationSettings
from llm.openai_backend import ServerUnavailable
from llm.rollout_servers import ServerPool, _generation
from llm.transformers_backend import TransformersBackend

ROOT = Path(__file__).resolve().parents[1]
NEGOTIATE = Path(sys.executable).with_name("negotiate")
GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


class Server:
    """A ``negotiate serve`` process on the tiny model."""

    def __init__(self, model_dir: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = subprocess.Popen(
            [str(NEGOTIATE), "serve", "--model", f"hf:{model_dir}?device=cpu&dtype=float32"]
            + ["--port", str(self.port), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            cwd=ROOT,
        )
        self.log = log

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300  # only against a hang
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def start(model_dir: Path, folder: Path, count: int) -> list[Server]:
    servers = [Server(model_dir, folder / f"server{i}.log") for i in range(count)]
    for server in servers:
        server.wait_ready()
    return servers


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    running = start(tiny_model_dir, tmp_path_factory.mktemp("servers"), 2)
    yield running
    for server in running:
        server.kill()


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32")


def chats(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Proposal number {i}: who pays?"}] for i in range(count)]


def assert_same(generations, expected) -> None:
    assert len(generations) == len(expected)
    for got, want in zip(generations, expected, strict=True):
        assert got.prompt_token_ids == want.prompt_token_ids
        assert got.token_ids == want.token_ids
        assert got.text == want.text and got.finish_reason == want.finish_reason
        assert all(
            math.isclose(a, b, abs_tol=1e-4)
            for a, b in zip(got.logprobs, want.logprobs, strict=True)
        )


def test_a_batch_spread_over_two_servers_equals_the_local_engine(servers, local):
    pool = ServerPool([s.url for s in servers], local.tokenizer)
    assert all(c.model.startswith("hf:") for c in pool.clients)  # read from /v1/models
    expected = local.generate(chats(5), GREEDY)
    assert_same(pool.generate(chats(5), GREEDY), expected)


def test_sampled_tokens_come_back_with_their_logprobs_under_the_sampling_temperature(
    servers, local
):
    pool = ServerPool([s.url for s in servers], local.tokenizer)
    settings = GenerationSettings(max_new_tokens=8, temperature=0.7, top_p=0.95)
    generations = pool.generate(chats(4), settings)
    prompts = [g.prompt_token_ids for g in generations]
    # the trainer's recomputation: log p(token) under logits / temperature
    for generation, prompt in zip(generations, prompts, strict=True):
        recomputed = local.sequence_logprobs([prompt], [generation.token_ids], temperature=0.7)[0]
        assert all(
            math.isclose(a, b, abs_tol=1e-4)
            for a, b in zip(generation.logprobs, recomputed, strict=True)
        )


def test_a_server_killed_mid_rollout_loses_and_duplicates_no_sample(
    tiny_model_dir, tmp_path, local
):
    victim, survivor = start(tiny_model_dir, tmp_path, 2)
    try:
        pool = ServerPool([victim.url, survivor.url], local.tokenizer, max_retries=0)
        # a server that stops answering: its share times out and the other server answers
        # it (the stopped one cannot have)
        impatient = ServerPool(
            [victim.url, survivor.url], local.tokenizer, max_retries=0, timeout=2.0
        )
        victim.process.send_signal(signal.SIGSTOP)
        try:
            assert_same(impatient.generate(chats(4), GREEDY), local.generate(chats(4), GREEDY))
        finally:
            victim.process.send_signal(signal.SIGCONT)
        long = GenerationSettings(max_new_tokens=200, temperature=0.0)
        expected = local.generate(chats(8), long)
        # the victim dies while its share is generated (or before it starts: either way
        # its share must be answered by the survivor, once)
        killer = threading.Timer(0.5, victim.kill)
        killer.start()
        generations = pool.generate(chats(8), long)
        killer.join()
        assert_same(generations, expected)
        assert victim.process.poll() is not None
        survivor.kill()
        with pytest.raises(BackendError) as failure:
            pool.generate(chats(2), GREEDY)
        message = str(failure.value)
        assert message.startswith("no rollout server could generate")
        assert victim.url in message and survivor.url in message
    finally:
        victim.kill()
        survivor.kill()


def test_an_adapter_loaded_on_the_servers_is_used_until_unloaded(
    servers, local, tiny_model_dir, tmp_path
):
    random_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    adapted = TransformersBackend(
        str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu", dtype="float32"
    )
    pool = ServerPool([s.url for s in servers], local.tokenizer)
    pool.load_adapter("policy-test", str(tmp_path / "adapter"))
    try:
        assert pool.adapter == "policy-test"
        assert_same(pool.generate(chats(4), GREEDY), adapted.generate(chats(4), GREEDY))
        base = pool.with_adapter(None).generate(chats(1), GREEDY)[0]
        assert base.logprobs != pool.generate(chats(1), GREEDY)[0].logprobs
    finally:
        pool.unload_adapter("policy-test")
    assert pool.adapter is None
    assert_same(pool.generate(chats(2), GREEDY), local.generate(chats(2), GREEDY))
    with pytest.raises(BackendError, match="could not load adapter 'x' from /no/such"):
        pool.load_adapter("x", "/no/such")


def test_a_generation_that_neither_stopped_nor_hit_its_limit_fails_over():
    aborted = {
        "index": 0,
        "text": "Hi",
        "finish_reason": "abort",  # vLLM's, for a request it gave up on
        "token_ids": [5],
        "logprobs": {"token_logprobs": [-0.5]},
    }
    with pytest.raises(ServerUnavailable, match="finish_reason 'abort'"):
        _generation(aborted, [1, 2], "http://x/v1")
    with pytest.raises(ServerUnavailable, match="finish_reason None"):
        _generation({**aborted, "finish_reason": None}, [1, 2], "http://x/v1")


def test_a_server_that_returns_no_token_ids_is_refused_not_worked_around():
    text_only = {"index": 0, "text": "Hi", "finish_reason": "stop", "logprobs": None}
    with pytest.raises(BackendError, match="returned no token ids"):
        _generation(text_only, [1, 2], "http://x/v1")
    no_logprobs = {**text_only, "token_ids": [5, 6]}
    with pytest.raises(BackendError, match="returned NoneType log-probabilities for 2 tokens"):
        _generation(no_logprobs, [1, 2], "http://x/v1")
    spelt = {
        **text_only,
        "logprobs": {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.5, -1.0]},
    }
    generation = _generation(spelt, [1, 2], "http://x/v1")
    assert generation.token_ids == [5, 6] and generation.logprobs == [-0.5, -1.0]


def train_on_servers(model_dir: Path, out: Path, staleness: int, servers: list[Server]) -> dict:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "server_engine.py"), str(model_dir)]
        + [str(out), str(staleness), *(s.url for s in servers)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests" / "scripts")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def random_adapter(model_dir: Path, folder: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora).save_pretrained(folder)
    return folder


def test_training_on_servers_samples_with_the_current_adapter_at_staleness_0(
    servers, tiny_model_dir, tmp_path, local
):
    import hashlib

    # a killed launch of this run left its first adapter (other weights) on a server
    digest = hashlib.sha256(str((tmp_path / "run").resolve()).encode()).hexdigest()[:8]
    stale = random_adapter(tiny_model_dir, tmp_path / "stale", seed=5)
    ServerPool([servers[0].url], local.tokenizer).load_adapter(
        f"policy-{digest}-step-0", str(stale)
    )
    run = train_on_servers(tiny_model_dir, tmp_path / "run", 0, servers)
    assert run["steps"] == 3
    names = sorted(set(run["adapters"]), key=run["adapters"].index)
    assert [n.rsplit("-", 1)[1] for n in names] == ["0", "1", "2"]  # a new adapter each step
    steps = [m for m in run["metrics"] if "sampling/sampling_logp_difference/max" in m]
    assert len(steps) == 3
    # the servers' log-probabilities are the trainer's own, within float error
    assert all(m["sampling/sampling_logp_difference/max"] < 1e-3 for m in steps)
    # the weights did change between the steps (the loss itself can be exactly 0 on-policy:
    # advantages sum to zero within a group, and the tiny model's turns are all equally long)
    assert all(m["grad_norm"] > 0 for m in steps)
    # the servers hold none of this run's adapters any more
    listed = json.load(urllib.request.urlopen(f"{servers[0].url}/models", timeout=30))
    assert [m["id"] for m in listed["data"]][1:] == []
    # the trained adapter, loaded on the servers, answers as it does locally
    final = tmp_path / "run" / "final"
    pool = ServerPool([s.url for s in servers], local.tokenizer)
    pool.load_adapter("final", str(final))
    try:
        trained = TransformersBackend(
            str(tiny_model_dir), adapter=str(final), device="cpu", dtype="float32"
        )
        on_servers = pool.generate(chats(3), GREEDY)
        assert_same(on_servers, trained.generate(chats(3), GREEDY))
        # and training changed what the servers generate
        base = pool.with_adapter(None).generate(chats(3), GREEDY)
        assert [g.logprobs for g in base] != [g.logprobs for g in on_servers]
    finally:
        pool.unload_adapter("final")


def test_training_one_step_ahead_takes_the_rollout_played_during_the_previous_step(
    servers, tiny_model_dir, tmp_path
):
    run = train_on_servers(tiny_model_dir, tmp_path / "run", 1, servers)
    assert run["steps"] == 3
    steps = [m for m in run["metrics"] if "rollout/staleness" in m]
    assert [m["rollout/played_ahead"] for m in steps] == [0.0, 1.0, 1.0]
    assert [m["rollout/staleness"] for m in steps] == [0.0, 1.0, 1.0]
    # played ahead with the previous step's adapter: the importance ratios are not all 1
    assert any(abs(m["sampling/sampling_logp_difference/max"]) > 1e-3 for m in steps[1:])
    # each rollout named one adapter throughout: step 0's for the rollouts of steps 0 and 1
    # (the latter played while step 0 trained), step 1's for step 2's
    used = run["adapters"]
    per_rollout = len(used) // 3
    first, second = sorted(set(used), key=used.index)
    assert used == [first] * 2 * per_rollout + [second] * per_rollout
    assert first.endswith("-step-0") and second.endswith("-step-1")


class VllmLikeAdapters(http.server.BaseHTTPRequestHandler):
    """Test double of vLLM's adapter endpoints: a load or unload answers in plain text (as
    vLLM does), loading a name twice gets HTTP 400, ``/v1/models`` lists what is loaded.
    Records each POST's path and Authorization header."""

    loaded: dict[str, str] = {}
    posts: list[str] = []
    keys: list[str | None] = []

    def do_GET(self):
        names = ["base", *self.loaded]
        self._answer(200, json.dumps({"data": [{"id": n} for n in names]}), "application/json")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append(self.path)
        self.keys.append(self.headers.get("Authorization"))
        name = body["lora_name"]
        if self.path.endswith("/load_lora_adapter"):
            if name in self.loaded:
                error = {
                    "error": {"message": f"The lora adapter '{name}' has already been loaded."}
                }
                self._answer(400, json.dumps(error), "application/json")
                return
            self.loaded[name] = body["lora_path"]
            self._answer(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")
        else:
            self.loaded.pop(name)
            self._answer(200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain")

    def _answer(self, status, text, kind):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class UnreadableAdapters(VllmLikeAdapters):
    """Test double of a server that cannot read the adapter folder: every load gets 500."""

    loaded: dict[str, str] = {}
    posts: list[str] = []
    keys: list[str | None] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append(self.path)
        error = {"error": {"message": "No such file or directory: adapter_config.json"}}
        self._answer(500, json.dumps(error), "application/json")


@contextlib.contextmanager
def serving(handler):
    """The URL of ``handler`` served on 127.0.0.1 for the duration."""
    handler.loaded, handler.posts, handler.keys = {}, [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_load_refused_by_one_server_is_undone_on_those_that_took_it(local):
    with serving(VllmLikeAdapters) as good, serving(UnreadableAdapters) as bad:
        pool = ServerPool([good, bad], local.tokenizer, max_retries=0)
        with pytest.raises(BackendError, match=f"rollout server {bad} could not load"):
            pool.load_adapter("policy-1", "/adapters/1")
        assert VllmLikeAdapters.loaded == {}  # loaded there first, then unloaded again
        assert VllmLikeAdapters.posts == ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"]
        assert pool.adapter is None


def test_the_rollout_servers_key_is_not_the_judges(local, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "judge-key-0123")
    monkeypatch.delenv("ROLLOUT_API_KEY", raising=False)
    with serving(VllmLikeAdapters) as url:
        ServerPool([url], local.tokenizer).load_adapter("a", "/adapters/a")
        monkeypatch.setenv("ROLLOUT_API_KEY", "rollout-key-4567")
        ServerPool([url], local.tokenizer).load_adapter("b", "/adapters/b")
    assert VllmLikeAdapters.keys == [None, "Bearer rollout-key-4567"]


def test_adapter_endpoints_that_answer_in_plain_text_as_vllm_does_work(local):
    with serving(VllmLikeAdapters) as url:
        pool = ServerPool([url], local.tokenizer)
        assert pool.clients[0].model == "base"
        pool.load_adapter("policy-1", "/adapters/1")
        assert VllmLikeAdapters.posts == ["/v1/load_lora_adapter"]  # once: the text answer is fine
        # a load retried after its first attempt went through (e.g. a timeout) is not an error
        pool.load_adapter("policy-1", "/adapters/1")
        assert pool.adapter == "policy-1" and VllmLikeAdapters.loaded == {"policy-1": "/adapters/1"}
        pool.load_adapter("policy-2", "/adapters/2")
        assert pool.unload_matching("policy-") == ["policy-1", "policy-2"]
        assert VllmLikeAdapters.loaded == {}


def test_runs_that_share_an_adapter_folder_save_into_folders_of_their_own(tmp_path):
    from tests.test_trainer import tiny_config
    from trainers.engine import ServerEngine

    def engine(run: str) -> ServerEngine:
        config = tiny_config(
            "unused",
            tmp_path / run,
            **{
                "model.lora": True,
                "rollout.engine": "server",
                "rollout.servers": ["http://127.0.0.1:1/v1"],
                "rollout.adapter_dir": str(tmp_path / "shared"),
            },
        )
        return ServerEngine(config, tokenizer=None, pool=object())  # the pool is not used

    first, second = engine("a"), engine("b")
    assert first.prefix != second.prefix
    assert first.folder == (tmp_path / "shared" / first.prefix).resolve()
    assert second.folder.parent == first.folder.parent != second.folder
