"""benchmarks.reward_noise: how much of a group's reward spread comes from the dialogue and how
much from sampling the resolution (statistics on constructed scores; one short run with the
real embedded model and the deterministic rule judge)."""

import json
import math

import pytest

from benchmarks.reward_noise import (
    main,
    retest_correlation,
    spearman_brown,
    summarise,
    variance_parts,
)


def test_rewards_fixed_by_the_dialogue_are_all_dialogue():
    groups = {"s1": [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]], "s2": [[0.0, 0.0], [3.0, 3.0]]}
    parts = variance_parts(groups)
    assert parts["within_dialogue"] == 0.0
    assert parts["icc"] == 1.0
    assert retest_correlation(groups) == pytest.approx(1.0)


def test_rewards_that_differ_only_between_resolutions_are_all_noise():
    # every dialogue of a group has the same mean: the between part's estimate is negative
    groups = {"s1": [[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [1.5, 2.5]]}
    parts = variance_parts(groups)
    assert parts["within_dialogue"] > 0
    assert parts["between_dialogues"] < 0
    assert parts["icc"] == 0.0
    assert retest_correlation(groups) < 0


def test_variance_parts_by_hand():
    # dialogue means 1 and 3 (variance 2); within variances 2 and 0 (mean 1); k = 2:
    # between = 2 - 1/2 = 1.5; ICC = 1.5 / (1.5 + 1)
    parts = variance_parts({"s": [[0.0, 2.0], [3.0, 3.0]]})
    assert parts["within_dialogue"] == pytest.approx(1.0)
    assert parts["between_dialogues"] == pytest.approx(1.5)
    assert parts["icc"] == pytest.approx(0.6)


def test_spearman_brown_raises_the_reliability_of_a_mean():
    assert spearman_brown(0.25, 1) == pytest.approx(0.25)
    assert spearman_brown(0.25, 3) == pytest.approx(0.5)
    assert math.isnan(spearman_brown(math.nan, 2))


def test_summary_leaves_out_dialogues_with_a_missing_score_and_needs_two_per_group():
    records = [
        {"scenario_id": "a", "resolutions": ["x", "y"], "scores": [1.0, 2.0]},
        {"scenario_id": "a", "resolutions": ["x", "x"], "scores": [3.0, 3.0]},
        {"scenario_id": "a", "resolutions": ["z", "w"], "scores": [None, 1.0]},
    ]
    summary = summarise(records)
    assert summary["dialogues"] == 2
    assert summary["identical_resolutions"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="two dialogues"):
        summarise(records[1:])


def test_a_short_run_writes_every_resolution_scored_and_resumes(smollm2, tmp_path):
    out = tmp_path / "noise"
    argv = [
        "--config", "configs/cpu_smoke.yaml",
        "--set", "reward.judge=rule",
        "--set", "reward.agreement=marker",
        "--set", "reward.judge_cache=",
        "--set", "rollout.group_size=2",
        "--set", "env.max_turns=2",
        "--set", "rollout.max_new_tokens=12",
        "--set", "rollout.summary_max_new_tokens=32",
        "--set", "rollout.summary_temperature=1.0",
        "--scenarios", "2",
        "--resolutions", "2",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    assert len(records) == 4  # 2 scenarios x 2 dialogues
    assert len({r["scenario_id"] for r in records}) == 2
    for record in records:
        assert len(record["resolutions"]) == 2 and len(record["scores"]) == 2
        assert all(isinstance(s, float) for s in record["scores"])
        assert len(record["transcript"]) == 2
    # at temperature 1 the second resolution is a new sample, not a copy of the first
    assert any(r["resolutions"][0] != r["resolutions"][1] for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["dialogues"] == 4
    assert results["summary"]["resolutions_per_dialogue"] == 2
    # a rerun reads the records instead of playing again
    (out / "records.jsonl").write_text(
        "".join(json.dumps({**r, "scores": [1.0, 1.0]}) + "\n" for r in records)
    )
    assert main(argv) == 0
    rerun = json.loads((out / "results.json").read_text())["summary"]
    assert rerun["mean_reward"] == 1.0 and rerun["within_dialogue"] == 0.0
    with pytest.raises(ValueError, match="other settings"):
        main([*argv[:-2], "--seed", "1", "--out", str(out)])
    with pytest.raises(ValueError, match="--resolutions"):
        main(["--resolutions", "1"])
