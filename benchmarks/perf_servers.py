"""The server engine's figures for the performance suite (``python -m benchmarks.perf --servers``).

1. **Rollout throughput, local vs server engine**: the same batched rollout (G dialogues on
   one scenario) generated in this process, then on 1 and on 2 ``negotiate serve``
   processes through :class:`~llm.rollout_servers.ServerPool` (token ids in, sampled ids
   and log-probabilities out). On one machine the servers share its cores with each other,
   so this measures the protocol's overhead here, not the gain of more machines.
2. **Training step, staleness 0 vs 1**: wall time per self-play step with
   ``rollout.engine: server`` (one server process), on-policy against playing the next
   step's rollout while the current one trains (``rollout.max_staleness: 1``); the first
   step, which cannot overlap, is left out.

Writes ``servers.json`` and ``servers.md`` to ``--out``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_line
from negotiation_env.jsonl import write_text_atomic

MODEL = "smollm2?dtype=float32"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcesses:
    """``count`` ``negotiate serve`` processes of ``MODEL`` on 127.0.0.1, for a ``with``."""

    def __init__(self, count: int):
        self.count = count
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []

    def __enter__(self) -> ServeProcesses:
        negotiate = Path(sys.executable).with_name("negotiate")
        for _ in range(self.count):
            port = free_port()
            self.processes.append(
                subprocess.Popen(
                    [str(negotiate), "serve", "--model", MODEL, "--port", str(port), "--quiet"]
                    + ["--max-batch-size", "64"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}/v1")
        for url, process in zip(self.urls, self.processes, strict=True):
            deadline = time.monotonic() + 600
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"negotiate serve exited with status {process.returncode}")
                try:
                    urllib.request.urlopen(f"{url}/models", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} did not answer within 10 minutes") from None
                    time.sleep(0.5)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


def rollout_throughput(dialogues: int, turns: int, tokens: int) -> dict[str, Any]:
    """Tokens per second of the same rollout: local, on 1 server, on 2 servers."""
    from benchmarks.perf import batched_rollout
    from llm.rollout_servers import ServerPool
    from llm.specs import load_backend

    local = load_backend(MODEL)
    batched_rollout(local, 2, turns, tokens)  # warm-up
    figures = {"local": batched_rollout(local, dialogues, turns, tokens)}
    for count in (1, 2):
        with ServeProcesses(count) as servers:
            pool = ServerPool(servers.urls, local.tokenizer)
            batched_rollout(pool, 2, turns, tokens)  # warm-up
            figures[f"servers_{count}"] = batched_rollout(pool, dialogues, turns, tokens)
    return figures


def training_steps(steps: int, turns: int, tokens: int) -> dict[str, Any]:
    """Seconds per self-play step on one server, at max_staleness 0 and 1."""
    from trainers import TrainConfig, train_selfplay

    figures = {}
    with ServeProcesses(1) as servers, tempfile.TemporaryDirectory() as scratch:
        for staleness in (0, 1):
            out = Path(scratch) / f"staleness{staleness}"
            config = TrainConfig.from_dict(
                {
                    "model": {
                        "policy": "smollm2",
                        "dtype": "float32",
                        "gradient_checkpointing": False,
                    },
                    "rollout": {
                        "group_size": 8,
                        "scenarios_per_step": 1,
                        "max_new_tokens": tokens,
                        "summary_max_new_tokens": tokens,
                        "engine": "server",
                        "servers": servers.urls,
                        "max_staleness": staleness,
                    },
                    "env": {"max_turns": turns, "mode": "evaluation"},
                    "reward": {"judge": "rule", "agreement": "marker"},
                    "optim": {"max_steps": steps, "learning_rate": 5e-5, "micro_batch_size": 4},
                    "run": {"output_dir": str(out), "save_steps": 1000, "report_to": "none"},
                }
            )
            train_selfplay(config)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
            seconds = [r["time/step_seconds"] for r in rows if "time/step_seconds" in r]
            figures[f"staleness_{staleness}"] = {
                "step_seconds": seconds,
                "mean_after_first": statistics.fmean(seconds[1:]),
            }
    zero, one = (figures[f"staleness_{s}"]["mean_after_first"] for s in (0, 1))
    figures["speedup"] = zero / one
    return figures


def server_figures(quick: bool, command: str, machine: dict[str, Any], out: Path) -> dict:
    """Both figures, saved to ``out`` (servers.json, servers.md)."""
    dialogues, turns, tokens, steps = (4, 2, 16, 3) if quick else (32, 3, 48, 4)
    report = {
        "command": command,
        "machine": machine,
        "threads_per_process": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "rollout": rollout_throughput(dialogues, turns, tokens),
        "training": training_steps(steps, 2, tokens),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "servers.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "servers.md", markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    rollout, training = report["rollout"], report["training"]
    local = rollout["local"]["tokens_per_second"]
    lines = [
        "# Server engine",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {machine_line(report['machine'])}",
        "",
        f"Rollout: {rollout['local']['dialogues']} dialogues on one scenario, model {MODEL}.",
        "",
        "| engine | tokens/s | vs local |",
        "|---|---|---|",
    ]
    for key, label in (("local", "local"), ("servers_1", "1 server"), ("servers_2", "2 servers")):
        rate = rollout[key]["tokens_per_second"]
        lines.append(f"| {label} | {rate:.1f} | {rate / local:.2f}x |")
    lines += [
        "",
        "Training step on one server (seconds; first step left out of the mean):",
        "",
        "| max_staleness | seconds per step | mean after the first |",
        "|---|---|---|",
    ]
    for staleness in (0, 1):
        row = training[f"staleness_{staleness}"]
        steps = ", ".join(f"{s:.1f}" for s in row["step_seconds"])
        lines.append(f"| {staleness} | {steps} | {row['mean_after_first']:.1f} |")
    lines.append(f"\nStaleness 1 vs 0: {training['speedup']:.2f}x.")
    return "\n".join(lines) + "\n"
