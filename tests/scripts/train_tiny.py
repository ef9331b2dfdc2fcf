"""Self-play training of a tiny model with deterministic test doubles, as a real process.

    python tests/scripts/train_tiny.py MODEL_DIR OUTPUT_DIR MAX_STEPS [--resume]

Used by tests/test_trainer_e2e.py to kill a run with SIGKILL and resume it.
"""

import sys

from tiny import always_agree, tiny_config

from negotiation_env.judges import Judgement
from trainers.selfplay import train_selfplay


class LengthJudge:
    """Test double: the score grows with the resolution's length (distinct rewards in a group)."""

    name = "length"

    def score_batch(self, requests):
        return [Judgement(min(5.0, len(r.resolution) / 10), self.name) for r in requests]


if __name__ == "__main__":
    model_dir, output_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = tiny_config(
        model_dir,
        output_dir,
        **{
            "model.lora": True,
            "model.lora_rank": 4,
            "rollout.scenarios_per_step": 1,
            "rollout.max_new_tokens": 6,
            "rollout.summary_max_new_tokens": 6,
            "env.max_turns": 2,
            "env.mode": "evaluation",
            "optim.max_steps": steps,
            "run.report_to": "tensorboard",
            "run.sample_dialogues": 1,
            "run.save_steps": 1,
            "run.save_total_limit": 2,
        },
    )
    result = train_selfplay(
        config, resume="--resume" in sys.argv, judge=LengthJudge(), agreement_detector=always_agree
    )
    print(f"RESULT steps={result.steps} resumed_from={result.resumed_from}", flush=True)
