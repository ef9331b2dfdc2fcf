"""benchmarks.resolution_loops: the same dialogues, resolutions written with and without the
no-repeat ban, compared pairwise (the real embedded model; short settings)."""

import json

import pytest

from benchmarks.resolution_loops import main, repeated_sentence_share


def test_repeated_sentence_share_counts_repeats_of_sentences_of_three_words_or_more():
    looping = "We share the well. We share the well.\nWe share the well. Fine. Fine."
    assert repeated_sentence_share(looping) == pytest.approx(2 / 3)  # "Fine." is too short
    assert repeated_sentence_share("Kim pays rent. Lee cooks on Sundays.") == 0.0
    assert repeated_sentence_share("") == 0.0


def _runs(records):
    return [r for r in records if r["kind"] == "negotiated"]


def test_ban_sizes_share_the_dialogues_and_only_the_resolution_changes(smollm2, tmp_path):
    out = tmp_path / "loops"
    argv = [
        "--config", "configs/cpu_smoke.yaml",
        "--set", "env.max_turns=2",
        "--set", "rollout.max_new_tokens=16",
        "--set", "rollout.summary_max_new_tokens=48",
        "--sizes", "0", "2",
        "--scenarios", "2",
        "--judge", "rule",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    plain, banned = (
        _runs(json.loads(line) for line in (out / f"n{n}/eval/records.jsonl").open())
        for n in (0, 2)
    )
    assert [r["transcript"] for r in plain] == [r["transcript"] for r in banned]
    for record in banned:  # no two-token run twice in the banned resolutions
        ids = smollm2.encode([record["resolution"]])[0]
        runs = list(zip(ids, ids[1:], strict=False))
        assert len(runs) == len(set(runs))
    settings = [json.loads((out / f"n{n}/eval/settings.json").read_text()) for n in (0, 2)]
    assert "summary_no_repeat_ngram_size" not in json.dumps(settings[0])
    assert '"summary_no_repeat_ngram_size": 2' in json.dumps(settings[1])
    results = json.loads((out / "results.json").read_text())
    assert set(results["sizes"]) == {"0", "2"}
    assert results["sizes"]["0"]["score_minus_no_ban"]["mean"] == 0.0  # paired with itself
    assert results["sizes"]["2"]["resolutions"] == 2
    assert "not_repetitive" in results["sizes"]["2"]["criteria"]  # the checklist judged them
    assert "| 2 |" in (out / "results.md").read_text()
    with pytest.raises(ValueError, match="must include 0"):
        main(["--sizes", "3"])
