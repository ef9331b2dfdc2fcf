"""The README's promises: its quickstart runs as written; the CLI works as a real process."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "negotiate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_quickstart_runs_as_written(tmp_path, smollm2):
    quickstart = README.split("## Quickstart", 1)[1]
    code = python_blocks(quickstart)[0]
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert "Resolution by" in completed.stdout
    # scored by the real default judge, named in the printout
    assert re.search(
        r"CA \d\.\d\d / 5 by rm:smollm2\+ca-rm-v2\S*; agreement True", completed.stdout
    )


def test_llm_agents_example_runs_as_written(tmp_path, smollm2):
    code = python_blocks(README.split("## LLM agents", 1)[1])[0]
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count(": ") >= 3 and "resolution:" in completed.stdout


def test_runtime_constraints_example_runs_as_written(tmp_path):
    code = python_blocks(README.split("## Runtime constraints", 1)[1])[0]
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert "'no_insults': 3" in completed.stdout
    assert "[(1, 'blocked'), (1, 'blocked'), (1, 'fallback')" in completed.stdout
    assert "sent instead: Let me put this constructively" in completed.stdout


def test_readme_names_exactly_the_two_setup_commands_and_dev_sh_has_them():
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^\./dev\.sh (\w+)", setup, flags=re.M)
    assert commands == ["main", "test"]
    script = (ROOT / "dev.sh").read_text()
    assert "  main)" in script and "  test)" in script
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("./dev.sh test")


def test_play_prints_transcript_and_appends_a_record(tmp_path):
    out = tmp_path / "episodes.jsonl"
    for seed in (0, 1):
        completed = run_cli(
            "play",
            "--agent0",
            "scripted:mediator",
            "--agent1",
            "scripted:conceding",
            "--seed",
            str(seed),
            "--judge",
            "keyword",
            "--out",
            str(out),
        )
        assert completed.returncode == 0, completed.stderr
        assert "Turn 1" in completed.stdout and "reward" in completed.stdout
        assert "by judge keyword-rubric-v1 (--judge keyword)" in completed.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    assert records[0]["agent_specs"] == {
        "negotiator_0": "scripted:mediator",
        "negotiator_1": "scripted:conceding",
    }
    assert records[0]["agreement"] is True and records[0]["reward"] > 0
    assert records[0]["config"]["max_turns"] == 7


def test_play_with_a_user_function_and_explicit_scenario(tmp_path):
    module = tmp_path / "my_agent.py"
    module.write_text("def speak(observation):\n    return 'I hold my ground.'\n")
    completed = run_cli(
        "play",
        "--agent0",
        f"{module}:speak",
        "--agent1",
        f"{module}:speak",
        "--scenario",
        "eve-005/mercy_vs_accountability",
        "--mode",
        "training",
        "--judge",
        "none",
        "--quiet",
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(
        "eve-005/mercy_vs_accountability: reward 0.00 (no resolution to judge), "
        "agreement False, turns 7"
    )


def test_bad_input_gives_a_one_line_error_and_exit_code_2():
    completed = run_cli("play", "--scenario", "pro-001/no_such_pair")
    assert completed.returncode == 2
    assert "unknown persona pair id 'no_such_pair'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_backend_error_is_one_line_with_the_cause_and_what_to_do(capsys):
    import socket

    from negotiate.cli import main

    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = f"openai:m@http://127.0.0.1:{port}/v1?max_retries=0&timeout=2"
    assert main(["play", "--agent0", agent, "--quiet"]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert error.startswith("negotiate play: model backend failed: POST http://127.0.0.1:")
    assert "connection failed" in error and "server running" in error and "rerun" in error


def test_scenarios_commands(tmp_path):
    stats = run_cli("scenarios", "stats")
    assert "test : 66 dilemmas" in stats.stdout
    listing = run_cli(
        "scenarios", "list", "--split", "test", "--category", "professional", "--json"
    )
    records = [json.loads(line) for line in listing.stdout.splitlines()]
    assert len(records) == 22 and all(r["split"] == "test" for r in records)
    shown = json.loads(run_cli("scenarios", "show", "pro-001/cost_vs_quality").stdout)
    assert shown["persona_a"]["id"] == "cost_minimizer"
    assert run_cli("scenarios", "validate").returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "category": "everyday", "title": "t"}\n')
    failed = run_cli("scenarios", "validate", "--dilemmas", str(bad))
    assert failed.returncode == 2 and f"{bad}:1: field 'text': missing" in failed.stderr


def test_help_shows_each_options_default(capsys):
    from negotiate.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: results/bench)" in text and "(default: default)" in text
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 8000)" in text and "(default: loopback only" in text
