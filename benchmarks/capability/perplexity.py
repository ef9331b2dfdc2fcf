"""Perplexity on the held-out general-text set (``benchmarks/data/general_text.jsonl``).

Each passage is scored as plain text (no chat template) by one forward pass; the perplexity
is exp of the mean negative log-likelihood over every predicted token of every passage. A
rise after alignment training means the model's general language modelling degraded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.metrics import perplexity

GENERAL_TEXT = Path(__file__).resolve().parents[1] / "data" / "general_text.jsonl"


def load_passages(path: str | Path = GENERAL_TEXT) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def model_perplexity(backend: Any, passages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Perplexity of a transformers backend's model on the passages (needs ``sequence_logprobs``)."""
    passages = passages if passages is not None else load_passages()
    tokenizer = backend.tokenizer
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = [tokenizer(p["text"], add_special_tokens=False)["input_ids"] for p in passages]
    # With a BOS token every passage token is predicted; without one, the first token is context.
    prompts = [bos or ids[:1] for ids in encoded]
    targets = [ids if bos else ids[1:] for ids in encoded]
    logprobs = backend.sequence_logprobs(prompts, targets)
    return {
        "perplexity": perplexity(logprobs),
        "passages": len(passages),
        "tokens": sum(len(t) for t in targets),
    }
