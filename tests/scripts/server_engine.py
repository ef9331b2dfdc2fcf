"""Self-play on the tiny model with ``rollout.engine: server`` (used by tests/test_rollout_servers.py).

    python tests/scripts/server_engine.py MODEL_DIR OUTPUT_DIR MAX_STALENESS URL [URL ...]

The judge is :class:`BatchOrder`, a deterministic test double whose rewards differ within
every group, so every step changes the weights. Every generation the pool sends is recorded
with the adapter it named. Prints one JSON line: the adapters used per rollout call (in
order), the metrics of each step, and the adapter names of the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny import tiny_config

from llm.rollout_servers import ServerPool
from negotiation_env.judges.base import Judgement
from trainers.selfplay import train_selfplay


class BatchOrder:
    """Test double of a judge: the i-th resolution of a batch of n scores i / n."""

    name = "batch-order"

    def describe(self):
        return {"model": "-", "mode": "rule", "rubric": self.name}

    def score_batch(self, requests):
        return [Judgement(i / len(requests), self.name, {}) for i in range(len(requests))]


def main() -> None:
    model_dir, output_dir, staleness, *urls = sys.argv[1:]
    used: list[str | None] = []
    generate = ServerPool.generate_from_ids

    def recording(self, prompts, settings):
        used.append(self.adapter)
        return generate(self, prompts, settings)

    ServerPool.generate_from_ids = recording  # records, then generates as usual
    config = tiny_config(
        model_dir,
        output_dir,
        **{
            "model.lora": True,
            "model.lora_rank": 4,
            # dropout would make the trainer's recomputed log-probabilities noisy (as with
            # vLLM in TRL); without it they must equal the servers' to float error
            "model.lora_dropout": 0.0,
            "rollout.engine": "server",
            "rollout.servers": urls,
            "rollout.max_staleness": int(staleness),
            "env.mode": "evaluation",
            "env.max_turns": 2,
            "optim.max_steps": 3,
            "optim.learning_rate": 0.05,
            "run.save_steps": 100,
        },
    )
    result = train_selfplay(config, judge=BatchOrder())
    metrics = [json.loads(line) for line in Path(output_dir, "metrics.jsonl").open()]
    print(json.dumps({"steps": result.steps, "adapters": used, "metrics": metrics}))


if __name__ == "__main__":
    main()
