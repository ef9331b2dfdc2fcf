"""One self-play training step under ``accelerate launch`` (used by tests/test_trainer_e2e.py).

    accelerate launch --multi_gpu --num_processes 2 tests/scripts/distributed_step.py MODEL_DIR OUTPUT_DIR

Uses the deterministic rubric judge and an always-agree detector (test doubles) so that only
the distributed machinery is under test. Each process writes the scenarios it played.
"""

import json
import os
import sys
from pathlib import Path

from tiny import always_agree, tiny_config

from trainers.selfplay import train_selfplay


class RecordingDetector:
    """Always agrees (test double) and records the scenarios this process played."""

    name = "recording"

    def __init__(self):
        self.played = []

    def detect_batch(self, requests):
        self.played.extend(r.scenario.id for r in requests)
        return [always_agree(r.scenario, r.transcript) for r in requests]


def main() -> None:
    model_dir, output_dir = sys.argv[1], sys.argv[2]
    config = tiny_config(
        model_dir,
        output_dir,
        **{
            "model.lora": True,
            "model.lora_rank": 4,
            "rollout.max_new_tokens": 4,
            "rollout.summary_max_new_tokens": 4,
            "env.max_turns": 2,
            "env.mode": "evaluation",
            "run.save_steps": 1,
        },
    )
    detector = RecordingDetector()
    result = train_selfplay(config, agreement_detector=detector)
    rank = os.environ.get("RANK", "0")
    Path(output_dir, f"rank{rank}.json").write_text(
        json.dumps({"steps": result.steps, "scenarios": detector.played})
    )


if __name__ == "__main__":
    main()
