"""``python -m benchmarks...`` ends a failure in one line, as ``negotiate`` does."""

import subprocess
import sys
from pathlib import Path

from benchmarks.command import run_main
from tests.test_bench_suite import server_that_is_down

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_a_server_that_is_down_is_one_line_with_the_cause_and_what_to_do(tmp_path):
    agent = f"openai:m@{server_that_is_down()}?max_retries=0&timeout=2"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--agents", agent, "--no-baselines"]
        + ["--no-capability", "--scenarios", "1", "--judge", "rule", "--agreement", "marker"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCHMARKS.parent,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("python -m benchmarks: model backend failed: POST http://127.0.0.1:")
    assert "connection failed" in error and "server running" in error and "rerun" in error


def test_bad_input_is_one_line_and_exit_code_2(capsys):
    def main():
        raise FileNotFoundError("--items: no file no_such.jsonl")

    assert run_main("python -m benchmarks.judge_quality", main) == 2
    error = capsys.readouterr().err
    assert error == "python -m benchmarks.judge_quality: error: --items: no file no_such.jsonl\n"


def test_every_benchmark_entry_point_ends_through_run_main():
    entry_points = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        text = path.read_text()
        if path.name == "__main__.py":
            assert 'sys.exit(run_main("python -m benchmarks", main))' in text
        elif '\nif __name__ == "__main__":' in text:
            block = text.split('\nif __name__ == "__main__":', 1)[1]
            expected = f'sys.exit(run_main("python -m benchmarks.{path.stem}", main))'
            assert block.strip() == expected, path
            entry_points.append(path.stem)
    assert {"suite", "judge_quality", "learning", "perf", "throughput"} <= set(entry_points)
