"""A short GRPO run of the embedded model on a deterministic, easily learnable reward.

    python tests/scripts/learnability.py OUT SIGN [STEPS] [LR]

The reward (:class:`FirstPersonOpening`, a deterministic test double of a judge) is the
share of the trained seat's turns that open with the word "I" (times SIGN, +1 or -1). The
policy is SmolLM2 with a LoRA adapter, trained by the real self-play trainer on one short
scenario (short texts keep each step to seconds on a CPU). Prints one JSON line per step
with the mean reward and the share of opening "I"s; ``tests/test_learnability.py`` runs it
with both signs and checks that the share moves the way the sign asks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from negotiation_env.judges.base import Judgement
from negotiation_env.scenarios import ScenarioBank
from negotiation_env.scenarios.records import Dilemma, Persona, PersonaPair

OPENS_WITH_I = re.compile(r"^\W*I\b")


class FirstPersonOpening:
    """Test double of a judge: reward = SIGN x share of negotiator_0's turns opening with "I"."""

    name = "first-person-opening"

    def __init__(self, sign: float):
        self.sign = sign
        self.shares: list[float] = []  # per judged dialogue, in order

    def describe(self):
        return {"model": "-", "mode": "rule", "rubric": self.name}

    def score_batch(self, requests):
        judgements = []
        for request in requests:
            turns = [t.text for t in request.transcript if t.speaker == "negotiator_0"]
            share = sum(bool(OPENS_WITH_I.match(t)) for t in turns) / max(1, len(turns))
            self.shares.append(share)
            judgements.append(Judgement(self.sign * share, self.name, {"share": share}))
        return judgements


def small_bank() -> ScenarioBank:
    """One short scenario, so that prompts are short and steps fast."""
    a = Persona("saver", "Sam", ("thrift",), "Spend as little as possible.")
    b = Persona("spender", "Kim", ("comfort",), "Comfort is worth paying for.")
    dilemma = Dilemma("flat-heating", "everyday", "Heating", "Two flatmates share one bill.")
    return ScenarioBank([dilemma], [PersonaPair("thrift_vs_comfort", "thrift vs comfort", a, b)])


def main(out: str, sign: float, steps: int = 3, learning_rate: float = 1e-3) -> None:
    import torch

    from negotiation_env.judges.specs import load_agreement_detector
    from trainers import TrainConfig, train_selfplay

    torch.manual_seed(0)
    config = TrainConfig.from_dict(
        {
            "model": {"policy": "smollm2", "dtype": "float32", "gradient_checkpointing": False},
            "rollout": {
                "group_size": 8,
                "scenarios_per_step": 1,
                "max_new_tokens": 6,
                "summary_max_new_tokens": 1,
                "cut_turns": "keep",
            },
            "env": {"max_turns": 1, "min_turns_for_agreement": 1, "mode": "evaluation"},
            "optim": {"learning_rate": learning_rate, "max_steps": steps, "micro_batch_size": 8},
            "run": {
                "output_dir": out,
                "save_steps": 1000,
                "sample_dialogues": 0,
                "report_to": "none",
            },
        }
    )
    judge = FirstPersonOpening(sign)
    train_selfplay(
        config, judge=judge, agreement_detector=load_agreement_detector("marker"), bank=small_bank()
    )
    per_step = config.rollout.group_size * config.rollout.scenarios_per_step
    for step in range(steps):
        shares = judge.shares[step * per_step : (step + 1) * per_step]
        print(json.dumps({"step": step + 1, "share": sum(shares) / len(shares)}), flush=True)
    Path(out, "shares.json").write_text(json.dumps(judge.shares))


if __name__ == "__main__":
    main(
        sys.argv[1],
        float(sys.argv[2]),
        *(int(a) for a in sys.argv[3:4]),
        *(float(a) for a in sys.argv[4:5]),
    )
