"""The reward model: its preference data (length-balanced, train split only), a short real
training run on CPU, and the shipped adapter as a judge."""

import json
import random

import pytest

from negotiation_env.jsonl import DataFileError
from trainers.preferences import (
    AUTHORED_FLAWS,
    FLAWS,
    build_pairs,
    default_sources_path,
    insert_evaluator_line,
    length_report,
    load_source_list,
    load_sources,
    load_written_off_topic,
    repeat,
    source_set_path,
    split_pairs,
    truncate,
)


@pytest.fixture(scope="module")
def sources():
    return load_sources()


def test_pairs_are_length_balanced_within_every_flaw(sources):
    pairs = build_pairs(sources, seed=0, flaws=FLAWS, written=load_written_off_topic("written"))
    report = length_report(pairs)
    assert set(report["by_flaw"]) == set(FLAWS)
    for flaw, row in report["by_flaw"].items():
        assert row["longer_wins"] == pytest.approx(0.5), flaw
        assert row["pairs"] >= 40, flaw
    relations = {p.length for p in pairs}
    assert relations == {"rejected-longer", "rejected-shorter", "similar"}


def test_every_source_is_a_training_scenario(sources, bank):
    train = bank.scenario_ids("train")
    assert all(s.scenario.id in train for s in sources)
    assert len({s.scenario.dilemma.id for s in sources}) >= 100


def test_the_other_authors_add_hands_not_dilemmas(sources, bank):
    """The second source set: 16 writers in 8 styles, on dilemmas the shipped set already
    has (so every judge set's dilemmas stay apart from all training data), with lengths
    that leave "the longer one wins" near chance before any balancing."""
    records = [json.loads(line) for line in open(source_set_path("other-authors"))]
    others = load_source_list("other-authors", bank=bank)
    assert len(others) == len(records) == 80
    assert len({r["writer"] for r in records}) == 16 and len({r["style"] for r in records}) == 8
    shipped = {s.scenario.id for s in sources}
    assert {s.scenario.id for s in others} <= shipped
    good_longer = [
        len(good.split()) > len(s.flawed[flaw].split())
        for s in others
        for good in (s.good_long, s.good_short)
        for flaw in AUTHORED_FLAWS
    ]
    assert 0.35 < sum(good_longer) / len(good_longer) < 0.65


def test_the_second_other_authors_set_covers_the_dilemmas_the_first_did_not(sources, bank):
    first = {s.scenario.id for s in load_source_list("other-authors", bank=bank)}
    records = [json.loads(line) for line in open(source_set_path("other-authors-2"))]
    second = load_source_list("other-authors-2", bank=bank)
    assert len(second) == 40 and len({r["writer"] for r in records}) == 8
    assert {s.scenario.id for s in second} == {s.scenario.id for s in sources} - first
    styles = {json.loads(line)["style"] for line in open(source_set_path("other-authors"))}
    assert not styles & {r["style"] for r in records}  # eight further styles


def test_a_test_split_scenario_is_refused(tmp_path, sources):
    record = json.loads(
        next(open(__import__("trainers.preferences").preferences.default_sources_path()))
    )
    record["scenario_id"] = "pro-005/mercy_vs_accountability"  # a test dilemma and pair
    path = tmp_path / "sources.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"sources.jsonl:1: field 'scenario_id'.*test split"):
        load_sources(path)


def test_a_source_list_joins_named_sets_and_files_in_order(tmp_path, sources, bank):
    first = json.loads(next(open(default_sources_path())))
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(first) + "\n", encoding="utf-8")
    joined = load_source_list(f"shipped, {path}", bank=bank)
    assert len(joined) == len(sources) + 1
    assert joined[-1].scenario.id == joined[0].scenario.id  # a scenario may recur
    assert len(load_source_list("", bank=bank)) == len(sources)
    with pytest.raises(DataFileError, match=r"nowhere.jsonl.*file not found"):
        load_source_list("shipped,nowhere.jsonl", bank=bank)


def test_written_off_topic_texts_keep_the_setting_and_add_pairs_only_of_their_kind(sources, bank):
    """The written off-topic set: two texts (short and long, about different issues) for
    every scenario of the shipped sources, by eight writers; as pairs, each is rejected
    against its scenario's good texts, and adding them leaves every other pair unchanged."""
    records = [
        json.loads(line)
        for line in open(source_set_path("shipped").parent / "rm_off_topic_written.jsonl")
    ]
    written = load_written_off_topic("written", bank=bank)
    assert len(written) == len(records) == 2 * len(sources)
    assert {t.scenario_id for t in written} == {s.scenario.id for s in sources}
    assert len({r["writer"] for r in records}) == 8
    for scenario_id in {t.scenario_id for t in written}:
        issues = [t.issue for t in written if t.scenario_id == scenario_id]
        assert len(set(issues)) == 2, scenario_id
    plain = build_pairs(sources, seed=0)
    both = build_pairs(sources, seed=0, written=written)
    added = both[len(plain) :]
    assert both[: len(plain)] == plain
    assert {p.flaw for p in added} == {"off_topic_written"}
    goods = {s.scenario.id: {s.good_long, s.good_short} for s in sources}
    texts = {(t.scenario_id, t.text) for t in written}
    assert all(p.chosen in goods[p.scenario_id] for p in added)
    assert all((p.scenario_id, p.rejected) in texts for p in added)
    assert length_report(added)["longer_wins"] == pytest.approx(0.5)
    assert len(added) >= len(written)
    assert build_pairs(sources, seed=0, flaws=AUTHORED_FLAWS, written=written) == build_pairs(
        sources, seed=0, flaws=AUTHORED_FLAWS
    )  # the kind must be asked for


def test_a_written_text_must_be_a_training_scenario_with_text_and_issue(tmp_path, bank):
    path = tmp_path / "written.jsonl"
    good = {"scenario_id": load_sources()[0].scenario.id, "issue": "parking", "text": "A plan."}
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "issue": " "}) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataFileError, match=r"written.jsonl:2: field 'issue'.*non-empty"):
        load_written_off_topic(str(path), bank=bank)
    path.write_text(json.dumps({**good, "scenario_id": "pro-005/mercy_vs_accountability"}) + "\n")
    with pytest.raises(DataFileError, match=r"written.jsonl:1: field 'scenario_id'.*test split"):
        load_written_off_topic(str(path), bank=bank)
    assert load_written_off_topic("", bank=bank) == []


def test_the_bottom_cache_computes_a_sequence_once_and_keys_by_base_and_split(tmp_path):
    import torch

    from trainers.reward_model import _BottomCache

    calls = []

    def compute(ids):
        calls.append(list(ids))
        return torch.tensor([[float(sum(ids))]])

    cache = _BottomCache(tmp_path / "c", "smollm2", 26)
    assert cache.get([1, 2], compute).item() == 3.0
    assert cache.get([1, 2], compute).item() == 3.0  # read back, not recomputed
    assert cache.get([2, 1], compute).item() == 3.0
    assert calls == [[1, 2], [2, 1]] and cache.hits == 1
    again = _BottomCache(tmp_path / "c", "smollm2", 26)  # another run: read from disk
    assert again.get([1, 2], compute).item() == 3.0 and again.hits == 1
    _BottomCache(tmp_path / "c", "smollm2", 22).get([1, 2], compute)  # another split point
    assert len(calls) == 3
    _BottomCache(tmp_path / "c", "smollm2", 26, "bfloat16").get([1, 2], compute)  # precision
    assert len(calls) == 4
    assert _BottomCache(tmp_path / "c", "smollm2", 26, "float32").get([1, 2], compute)
    assert len(calls) == 4  # float32 is the key the cache had before precisions existed
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_derived_flaws_are_what_they_claim():
    rng = random.Random(0)
    text = (
        "The council funds the repair this year. The school pays half of the cost. "
        "Parents volunteer on Saturdays. A review follows in June."
    )
    cut = truncate(text, rng)
    assert text.startswith(cut) and cut[-1] not in ".!?" and len(cut) < len(text)
    looped = repeat(text, rng, target_words=40)
    sentences = [s.strip() for s in looped.split(".") if s.strip()]
    assert max(sentences.count(s) for s in sentences) >= 3
    flagged = insert_evaluator_line(text, rng)
    from trainers.preferences import _EVALUATOR_LINES

    added = [line for line in _EVALUATOR_LINES if line in flagged]
    assert len(added) == 1 and flagged.replace(added[0], "").split() == text.split()


def test_off_topic_texts_come_from_other_dilemmas_and_near_ones_share_the_parties(sources):
    pairs = build_pairs(sources, seed=0, flaws=["off_topic", "off_topic_near"])
    by_text = {s.good_long: s for s in sources} | {s.good_short: s for s in sources}
    source_of = {s.scenario.id: s for s in sources}
    same_pair = 0
    for pair in pairs:
        record, other = source_of[pair.scenario_id], by_text[pair.rejected]
        assert other.scenario.dilemma.id != record.scenario.dilemma.id
        if pair.flaw == "off_topic":
            assert other.scenario.dilemma.category != record.scenario.dilemma.category
        else:
            same_pair += other.scenario.pair.id == record.scenario.pair.id
            assert (
                other.scenario.pair.id == record.scenario.pair.id
                or other.scenario.dilemma.category == record.scenario.dilemma.category
            )
    near = [p for p in pairs if p.flaw == "off_topic_near"]
    assert same_pair >= 0.9 * len(near)  # the persona pairs repeat across the sources
    single = build_pairs(sources[:1], seed=0, flaws=["off_topic", "off_topic_near"])
    assert single == []  # one dilemma has nothing to be off topic with


def test_held_out_split_keeps_whole_dilemmas_and_flaw_kinds_apart(sources):
    pairs = build_pairs(sources, seed=0)
    train, held = split_pairs(pairs, held_out_share=0.2, seed=1, held_out_flaws=["hostile"])
    dilemma = lambda p: p.scenario_id.split("/")[0]  # noqa: E731
    assert not {dilemma(p) for p in train} & {dilemma(p) for p in held if p.flaw != "hostile"}
    assert all(p.flaw != "hostile" for p in train)
    assert any(p.flaw == "hostile" for p in held)
    assert len(train) + len(held) == len(pairs)


def test_authored_flaws_pair_against_both_good_texts(sources):
    pairs = build_pairs(sources[:1], seed=0, flaws=AUTHORED_FLAWS)
    chosen = {p.chosen for p in pairs}
    assert chosen <= {sources[0].good_long, sources[0].good_short}


def test_the_recipe_refuses_an_unknown_bottom_precision():
    from trainers.reward_model import RewardModelRecipe, main

    with pytest.raises(ValueError, match=r"bottom_dtype: expected one of .*'float16'"):
        RewardModelRecipe(bottom_dtype="float16")
    assert main(["--out", "unused", "--bottom-dtype", "int8"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("bottom_dtype", ["float32", "bfloat16"])
def test_a_few_training_steps_on_cpu_lower_the_loss(tmp_path, bottom_dtype):
    from llm.reward_backend import RewardModelBackend, adapter_digest, read_metadata
    from trainers.reward_model import RewardModelRecipe, train_reward_model

    recipe = RewardModelRecipe(
        bottom_dtype=bottom_dtype,
        max_sources=2,
        max_steps=12,
        lora_layers=2,
        learning_rate=1e-3,
        held_out_share=0.5,  # one dilemma held out: its bottoms are computed when measuring
        log_every=4,
        calibration_pairs=8,
        checkpoint_every=6,
        near_off_topic=True,
        balance_flaws=True,
    )
    metadata = train_reward_model(tmp_path / "rm", recipe)
    losses = [row["loss"] for row in metadata["log"]]
    assert len(losses) == 12
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert "off_topic_near" in metadata["data"]["train"]["by_flaw"]
    assert metadata["held_out"]["pairs"] > 0 and metadata["held_out"]["accuracy"] is not None
    pairwise = metadata["held_out_pairwise"]  # is sigmoid(reward difference) calibrated?
    assert pairwise["pairs"] == metadata["held_out"]["pairs"]
    assert pairwise["accuracy"] == pytest.approx(metadata["held_out"]["accuracy"], abs=0.01)
    assert read_metadata(tmp_path / "rm")["calibration"]["scale"] > 0
    assert not (tmp_path / "rm" / "README.md").exists()  # peft's empty model card
    assert not (tmp_path / "rm" / ".bottom-cache").exists()  # removed when training ends
    assert read_metadata(tmp_path / "rm")["recipe"]["bottom_dtype"] == bottom_dtype
    scorer = RewardModelBackend(adapter=tmp_path / "rm", dtype=bottom_dtype)
    assert scorer.name == f"smollm2+ca-rm-v2@{adapter_digest(tmp_path / 'rm')}"
    assert len(scorer.score([[{"role": "user", "content": "hello"}]])) == 1
    head = scorer.model.get_base_model().score  # float32 whatever the body's precision
    assert {str(p.dtype) for p in head.parameters()} == {"torch.float32"}


@pytest.mark.slow
def test_calibration_of_the_shipped_adapter_rebuilds_its_held_out_pairs(tmp_path, capsys):
    import shutil

    from llm.reward_backend import adapter_folder
    from trainers.reward_calibration import main

    out = tmp_path / "calibration.json"
    assert main(["--adapter", "ca-rm-v2", "--max-pairs", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["pairs"] == 6 and report["judge"].startswith("rm:smollm2+ca-rm-v2@")
    assert 0.0 <= report["accuracy"] <= 1.0 and report["fitted_temperature"] > 0
    assert sum(b["pairs"] for b in report["by_confidence"]) == 6
    assert "| confidence max(P, 1-P) | pairs | accuracy |" in capsys.readouterr().out
    # an adapter whose recorded held-out pairs this checkout cannot rebuild is refused
    copy = tmp_path / "rm"
    shutil.copytree(adapter_folder("ca-rm-v2"), copy)
    metadata = json.loads((copy / "reward_model.json").read_text())
    metadata["held_out"]["pairs"] += 1
    (copy / "reward_model.json").write_text(json.dumps(metadata))
    assert main(["--adapter", str(copy), "--max-pairs", "6"]) == 2
    assert "cannot rebuild the pairs" in capsys.readouterr().err


def test_calibration_on_labelled_reports_turns_scores_back_into_rewards(tmp_path, capsys):
    import math

    from llm.reward_backend import adapter_folder, read_metadata
    from trainers.reward_calibration import main

    scale = read_metadata(adapter_folder("ca-rm-v2"))["calibration"]["scale"]
    five = lambda z: 5 / (1 + math.exp(-z))  # noqa: E731  score of a reward z scales from centre
    rows = [
        {"id": "1", "better": five(1.0), "worse": five(-1.0), "error": None},  # right, 2 scales
        {"id": "2", "better": five(0.0), "worse": five(0.02), "error": None},  # wrong, in band
        {"id": "3", "better": None, "worse": None, "error": "judge failed"},  # left out
    ]
    report = tmp_path / "judge_quality.json"
    runs = [
        {"model": "rm", "kind": "absolute", "rows": rows},
        {"model": "rm", "kind": "pairwise", "rows": []},
    ]
    report.write_text(json.dumps({"runs": runs}))
    out = tmp_path / "calibration.json"
    assert main(["--reports", str(report), "--out", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert measured["pairs"] == 2 and measured["accuracy"] == 0.5
    assert measured["inside_band"] == {"pairs": 1, "share": 0.5, "accuracy": 0.0}
    assert 1 / (1 + math.exp(-2 * scale)) > 0.95  # the first pair: two scales apart
    assert [(b["confidence"], b["pairs"]) for b in measured["by_confidence"]] == [
        ("0.50-0.55", 1),
        ("0.95-1.00", 1),
    ]
    assert main(["--reports", str(report), "--judge", "checklist"]) == 2
    assert "no absolute run of the judge 'checklist'" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"items": 3}')
    assert main(["--reports", str(tmp_path / "other.json")]) == 2
    assert "other.json: not a judge-quality report (KeyError" in capsys.readouterr().err


def test_an_adapter_is_a_folder_or_a_shipped_name(tmp_path, monkeypatch):
    from llm.reward_backend import (
        SHIPPED_ADAPTER,
        adapter_digest,
        adapter_folder,
        shipped_adapter,
        shipped_adapters,
    )

    assert {"ca-rm-v1", SHIPPED_ADAPTER} <= set(shipped_adapters())
    assert adapter_folder(None) == shipped_adapter() == adapter_folder(SHIPPED_ADAPTER)
    assert adapter_folder("ca-rm-v1").name == "ca-rm-v1"
    assert adapter_digest(adapter_folder("ca-rm-v1")) == "ef9d1c59"  # earlier results' judge
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca-rm-v1").mkdir()  # a folder of that name here wins, and must hold one
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        adapter_folder("ca-rm-v1")
    with pytest.raises(FileNotFoundError, match=r"no folder at nowhere.*ca-rm-v1"):
        adapter_folder("nowhere")


def test_the_adapter_digest_tells_weights_apart(tmp_path):
    from llm.reward_backend import adapter_digest

    for name, weights in (("one", b"\x00" * 64), ("same", b"\x00" * 64), ("other", b"\x01" * 64)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_model.safetensors").write_bytes(weights)
        (tmp_path / name / "reward_model.json").write_text(f'{{"name": "{name}"}}')
    digest = {name: adapter_digest(tmp_path / name) for name in ("one", "same", "other")}
    assert digest["one"] == digest["same"] != digest["other"]
    assert len(digest["one"]) == 8


@pytest.mark.slow
def test_shipped_reward_model_prefers_the_good_resolution(scenario):
    from negotiation_env.judges.base import JudgeRequest
    from negotiation_env.judges.pairwise import PairwiseRequest
    from negotiation_env.judges.specs import load_judge

    judge = load_judge("rm")
    assert judge.tie_band == 0.05 and load_judge("rm?tie_band=0.2").tie_band == 0.2
    good = (
        "The physician gives the vial to the farmer now, since his damage is certain, and the "
        "clinic watches the child every 30 minutes with an ambulance on standby. The district "
        "pays a courier to bring a second vial from the regional hospital tonight, and next "
        "month both sides review stock levels so one delay never leaves a single vial again."
    )
    cut = good[: good.index("standby") - 20]
    good_score, cut_score = judge.score_batch(
        [JudgeRequest(scenario, good), JudgeRequest(scenario, cut)]
    )
    assert 0 <= cut_score.score < good_score.score <= 5
    verdict = judge.compare_batch([PairwiseRequest(scenario, cut, good)])[0]
    assert verdict.preferred == "b" and verdict.position_consistent
