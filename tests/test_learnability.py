"""Learnability: the real trainer on the real embedded model learns an easy, deterministic
reward, and unlearns it when the reward's sign is flipped.

A sign error, a broken completion mask or wrong log-probabilities can pass every unit test
and still leave training at chance; this catches them. Each run is a separate process
(``tests/scripts/learnability.py``): 3 GRPO steps of 8 one-turn dialogues on one short
scenario, rewarded by the share of turns that open with "I". Both runs use the same seed,
so their first steps sample the same dialogues; after two updates the rewarded run opens
with "I" far more often than the punished one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "learnability.py"


def shares(tmp_path: Path, sign: int) -> list[float]:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / f"run{sign}"), str(sign), "3"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"step"')]
    assert [r["step"] for r in rows] == [1, 2, 3]
    return [r["share"] for r in rows]


@pytest.mark.slow
def test_grpo_learns_an_easy_reward_and_its_opposite(tmp_path):
    rewarded, punished = shares(tmp_path, 1), shares(tmp_path, -1)
    assert rewarded[0] == punished[0]  # same seed, same weights: the same first dialogues
    assert 0.0 < rewarded[0] < 1.0  # there is room to move both ways
    assert rewarded[-1] > rewarded[0] and punished[-1] < punished[0]
    # after two updates the runs are far apart: 8 dialogues a step, so 0.5 is 4 of them
    assert rewarded[-1] - punished[-1] >= 0.5
