"""``negotiate serve``: an OpenAI-compatible chat-completions server around a local model."""

from __future__ import annotations

import argparse

from agents.serve import serve_forever
from agents.specs import load_backend


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a local model as an OpenAI-compatible /v1/chat/completions endpoint",
        description="Serve a model (registry name, hf:PATH) so other processes reach it as "
        "openai:MODEL@http://HOST:PORT/v1, e.g. a judge kept apart from a training process.",
    )
    parser.add_argument("--model", default="smollm2", help="LLM spec of the served model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    backend = load_backend(args.model)
    serve_forever(
        backend, host=args.host, port=args.port, model_name=args.model, verbose=not args.quiet
    )
    return 0
