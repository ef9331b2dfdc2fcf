"""``negotiate serve``: an OpenAI-compatible server around a local model (chat, completions on
token ids, LoRA adapters loaded at run time)."""

from __future__ import annotations

import argparse
import os

from llm.serve import (
    MAX_BATCH_SIZE,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    MAX_TOKENS,
    SOCKET_TIMEOUT,
    serve_forever,
)
from llm.specs import load_backend

API_KEY_ENV = "NEGOTIATION_SERVE_API_KEY"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a local model as an OpenAI-compatible endpoint (chat, token-id completions, "
        "LoRA adapters loaded at run time)",
        description="Serve a model (registry name, hf:PATH) so other processes reach it as "
        "openai:MODEL@http://HOST:PORT/v1, e.g. a judge kept apart from a training process, "
        "or as a rollout server of a trainer (docs/scale-out.md). Limits and authentication: "
        "docs/agents.md.",
    )
    parser.add_argument("--model", default="smollm2", help="LLM spec of the served model")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: loopback only; 0.0.0.0 exposes the server, "
        "so give it an --api-key)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help="require 'Authorization: Bearer KEY' on every request, like vLLM's --api-key "
        f"(default: ${API_KEY_ENV}, which keeps the key out of the process list; "
        "clients read it from the variable named by their api_key_env)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=SOCKET_TIMEOUT,
        help="seconds a connection may take for each read or write before it is closed "
        f"(default {SOCKET_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"connections served at once; more get HTTP 503 (default {MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help="most new tokens a request may ask for; more gets HTTP 400 (default "
        f"{MAX_TOKENS}, and never above the model's context)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_REQUEST_BYTES,
        help=f"largest request body; larger gets HTTP 413 (default {MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=MAX_BATCH_SIZE,
        help="concurrent requests answered by one batched generation, at most "
        f"(default {MAX_BATCH_SIZE})",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    backend = load_backend(args.model)
    serve_forever(
        backend,
        host=args.host,
        port=args.port,
        model_name=args.model,
        verbose=not args.quiet,
        api_key=args.api_key,
        socket_timeout=args.timeout,
        max_connections=args.max_connections,
        max_tokens=args.max_tokens,
        max_body_bytes=args.max_body_bytes,
        max_batch_size=args.max_batch_size,
    )
    return 0
