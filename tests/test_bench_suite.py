"""The evaluation suite end to end (quick tier, scripted agents, the deterministic judge)."""

import json

import pytest

from benchmarks.perf_servers import free_port
from benchmarks.suite import CAPABILITY_SCORING, BenchConfig, Suite, held_out_scenarios, sampling
from negotiation_env.judges import Judgement, KeywordRubricJudge
from negotiation_env.scenarios import ScenarioBank


def quick(tmp_path, **changes):
    values = dict(
        agents=["scripted:mediator", "scripted:stubborn", "scripted:conceding"],
        scenarios=3,
        judge="rule",
        agreement="marker",
        baselines=False,
        capability=False,
        out=str(tmp_path),
    )
    values.update(changes)
    return BenchConfig(**values)


def test_quick_tier_with_scripted_agents_produces_every_output(tmp_path):
    results = Suite(quick(tmp_path)).run()
    for name in (
        "records.jsonl",
        "pairwise.jsonl",
        "results.json",
        "results.md",
        "scores.png",
        "win_rates_ca.png",
        "win_rates_conflict.png",
        "rounds.png",
    ):
        assert (tmp_path / name).is_file(), name
    rows = {row["agent"]: row for row in results["agents"]}
    assert (
        rows["scripted:mediator"]["agreement_rate"] == 1.0
        and rows["scripted:stubborn"]["agreement_rate"] == 0.0
    )
    assert rows["scripted:mediator"]["ca"]["mean"] > rows["scripted:stubborn"]["ca"]["mean"]
    mediator_vs_stubborn = results["win_rates"]["ca"]["scripted:mediator"]["scripted:stubborn"]
    assert mediator_vs_stubborn["judged"] == 3 and mediator_vs_stubborn["win_rate"] == 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["judge"]["model"] == "keyword-rubric-v1" and len(saved["episodes"]) == 9
    assert saved["scenarios"] == held_out_scenarios(3)
    assert "| scripted:mediator |" in (tmp_path / "results.md").read_text()


def test_held_out_scenarios_are_test_split_and_fixed():
    bank = ScenarioBank.default()
    first, again = held_out_scenarios(10), held_out_scenarios(10)
    assert first == again and len(set(first)) == 10
    assert all(
        bank.get(s).dilemma.split == "test" and bank.get(s).pair.split == "test" for s in first
    )
    # skipping the head of the order gives the next, fresh scenarios
    assert held_out_scenarios(6, skip=4) == first[4:10]
    with pytest.raises(ValueError, match="needs 1000 held-out scenarios"):
        held_out_scenarios(10, skip=990)


def test_an_interrupted_run_resumes_without_recomputing(tmp_path):
    Suite(quick(tmp_path)).run()
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    (tmp_path / "records.jsonl").write_text(
        "\n".join(lines[:-2]) + "\n"
    )  # lose the last two episodes

    class CountingJudge(KeywordRubricJudge):
        calls = 0

        def score_batch(self, requests):
            CountingJudge.calls += len(requests)
            return super().score_batch(requests)

    Suite(quick(tmp_path), judge=CountingJudge()).run()
    assert CountingJudge.calls == 2  # only the two lost episodes were played and judged again
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == len(lines)


def test_a_judge_failure_is_recorded_and_counted_not_a_crash(tmp_path):
    class FailsOnce(KeywordRubricJudge):
        def score_batch(self, requests):
            results = super().score_batch(requests)
            results[0] = Judgement(None, self.name, error="server said 503")
            return results

    results = Suite(quick(tmp_path, agents=["scripted:mediator"]), judge=FailsOnce()).run()
    row = results["agents"][0]
    assert row["ca"]["judge_failures"] == 1 and row["ca"]["n"] == 2
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert (
        sum(r["ca_score"] is None and r["judge_error"] == "server said 503" for r in records) == 1
    )


def server_that_is_down() -> str:
    """An OpenAI-compatible URL on a port that was free a moment ago and has no listener."""
    return f"http://127.0.0.1:{free_port()}/v1"


def test_agreement_checks_that_failed_are_counted_not_taken_as_disagreement(tmp_path):
    detector = f"openai:m@{server_that_is_down()}?max_retries=0&timeout=2"
    config = quick(tmp_path, agents=["scripted:mediator"], scenarios=1, agreement=detector)
    results = Suite(config).run()
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert record["agreement"] is False and record["agreement_check_failures"] >= 1
    assert results["agreement_check_failures"] == record["agreement_check_failures"]
    failed = f"agreement checks failed: {record['agreement_check_failures']}"
    assert failed in (tmp_path / "results.md").read_text()


def test_observer_metrics_with_and_without_the_observer(tmp_path):
    config = quick(
        tmp_path,
        agents=["scripted:insulting", "scripted:mediator"],
        observer="default",
        direct=False,
    )
    results = Suite(config).run()
    rows = {row["agent"]: row for row in results["agents"]}
    assert set(rows) == {
        "scripted:insulting",
        "scripted:mediator",
        "scripted:insulting +observer",
        "scripted:mediator +observer",
    }
    insulting = rows["scripted:insulting +observer"]["observer"]
    assert insulting["violations_per_episode"]["no_insults"] >= 1
    assert insulting["interventions_per_episode"]["blocked"] >= 2
    assert rows["scripted:mediator +observer"]["observer"]["violations_per_episode"] == {}
    assert "observer" not in rows["scripted:insulting"]
    assert "Runtime constraints (observer)" in (tmp_path / "results.md").read_text()


def test_resuming_with_other_settings_is_refused_and_keeps_the_records(tmp_path):
    Suite(quick(tmp_path, max_turns=3)).run()
    records = (tmp_path / "records.jsonl").read_text()
    with pytest.raises(ValueError, match="max_turns 3 there, 7 now") as refused:
        Suite(quick(tmp_path, max_turns=7)).run()
    assert "another --out" in str(refused.value)
    assert (tmp_path / "records.jsonl").read_text() == records
    # what is part of a record's key may change: another seed adds records
    Suite(quick(tmp_path, max_turns=3, seeds=[0, 1])).run()
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2 * len(
        records.splitlines()
    )


def test_a_judge_change_is_refused_on_resume(tmp_path):
    class OtherJudge(KeywordRubricJudge):
        name = "another-judge"

    Suite(quick(tmp_path)).run()
    with pytest.raises(ValueError, match="judge .*keyword-rubric-v1.* there, .*another-judge"):
        Suite(quick(tmp_path), judge=OtherJudge())


def test_records_without_saved_settings_are_not_resumed(tmp_path):
    (tmp_path / "records.jsonl").write_text('{"kind": "negotiated"}\n')
    with pytest.raises(ValueError, match="no settings.json"):
        Suite(quick(tmp_path))


def test_the_bench_command_refuses_other_settings_in_one_line(tmp_path, capsys):
    from negotiate.cli import main

    common = ["bench", "--agents", "scripted:mediator", "--no-baselines", "--no-direct"]
    common += ["--no-capability", "--scenarios", "1", "--judge", "rule", "--agreement", "marker"]
    assert main([*common, "--out", str(tmp_path), "--max-turns", "3"]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path), "--max-turns", "7"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"negotiate bench: error: --out {tmp_path} holds records")
    assert len(error.strip().splitlines()) == 1


def test_report_files_are_replaced_atomically(tmp_path):
    from benchmarks.report import write_report

    results = Suite(quick(tmp_path)).run()
    before = {name: (tmp_path / name).stat().st_ino for name in ("results.md", "results.json")}
    plot_before = (tmp_path / "scores.png").stat().st_ino
    write_report(results, tmp_path)
    for name, inode in before.items():
        assert (tmp_path / name).stat().st_ino != inode, name  # a new file renamed in
    assert (tmp_path / "scores.png").stat().st_ino != plot_before
    # A report that cannot be written (a lone surrogate) leaves the previous one whole.
    markdown = (tmp_path / "results.md").read_text()
    with pytest.raises(UnicodeEncodeError):
        write_report({**results, "command": "bench \udc80"}, tmp_path)
    assert (tmp_path / "results.md").read_text() == markdown
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("scripted:medaitor", "unknown scripted agent 'medaitor'"),
        ("smollm2?temprature=0.3", "unknown option"),
        ("hf:./no/such/model", "no model folder"),
        ("openai:just-a-model", "openai:MODEL@URL"),
        ("no_such_module_xyz:agent", "cannot import"),
    ],
)
def test_every_agent_spec_is_checked_before_anything_runs(tmp_path, bad, message):
    config = quick(tmp_path, agents=["scripted:mediator", bad])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Suite(config)
    assert not (tmp_path / "records.jsonl").exists()


def test_the_no_repeat_ban_applies_to_resolutions_only_and_is_part_of_the_record_settings(
    tmp_path,
):
    config = quick(tmp_path, summary_no_repeat_ngram_size=6)
    for decoding in ("greedy", "sampled"):
        dialogue, summary = sampling(config, decoding, seed=0)
        assert (dialogue.no_repeat_ngram_size, summary.no_repeat_ngram_size) == (0, 6)
    settings = Suite(config, judge=KeywordRubricJudge()).record_settings()
    assert settings["summary_no_repeat_ngram_size"] == 6
    # off (the default): results recorded before the option existed still match
    plain = Suite(quick(tmp_path / "plain"), judge=KeywordRubricJudge()).record_settings()
    assert "summary_no_repeat_ngram_size" not in plain
    with pytest.raises(ValueError, match="summary_no_repeat_ngram_size: must be >= 0"):
        quick(tmp_path, summary_no_repeat_ngram_size=-1)


def test_capability_records_from_before_the_perplexity_fix_are_measured_again(
    tmp_path, tiny_model_dir
):
    spec = f"hf:{tiny_model_dir}"
    suite = Suite(quick(tmp_path, agents=[spec]))
    stale = {"agent": spec, "passages": 12, "instructions": 16, "perplexity": 1484.0}
    path = tmp_path / "capability.jsonl"
    path.write_text(json.dumps(stale) + "\n")
    suite.capability()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 and records[0] == stale  # the old record is kept, not rewritten
    assert records[1]["scoring"] == CAPABILITY_SCORING and records[1]["perplexity"] != 1484.0
    assert suite.aggregate()["agents"][0]["capability"] == records[1]  # the latest is reported
    suite.capability()  # a current record is not measured again
    assert len(path.read_text().splitlines()) == 2
