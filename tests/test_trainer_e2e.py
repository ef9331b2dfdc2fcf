"""End-to-end training as real processes: the embedded model with the default judge, a run
killed with SIGKILL and resumed, and two processes under accelerate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainers.common import checkpoints

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "scripts"


def tensorboard_scalars(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def scalars(folder: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [event.value for event in accumulator.Scalars(tag)]
    return values


def test_two_steps_with_the_embedded_model_and_default_judge_then_resume(tmp_path):
    out = tmp_path / "run"
    common = [
        "--config",
        str(ROOT / "configs" / "cpu_smoke.yaml"),
        "--output-dir",
        str(out),
        "--set",
        "rollout.group_size=2",
        "--set",
        "env.max_turns=2",
        "--set",
        "rollout.max_new_tokens=8",
        "--set",
        "rollout.summary_max_new_tokens=8",
        "--set",
        "run.save_steps=1",
        "--set",
        "reward.judge_cache=",
    ]
    first = subprocess.run(
        [sys.executable, "-m", "negotiate", "train", *common, "--set", "optim.max_steps=2"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "step 2/2" in first.stdout and "trained 2 steps" in first.stdout
    assert [(step, done) for step, _, done in checkpoints(out)] == [(1, True), (2, True)]
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoint-2" / "optimizer.pt").is_file() and (
        out / "checkpoint-2" / "rng_state.pth"
    ).is_file()
    tags = tensorboard_scalars(out / "tensorboard")
    for tag in (
        "train/reward",
        "train/reward_std",
        "train/negotiation/agreement_rate",
        "train/negotiation/zero_advantage_group_fraction",
        "train/negotiation/failed_rollout_fraction",
        "train/negotiation/dialogue_tokens",
        "train/loss",
        "train/learning_rate",
        "train/time/generation_seconds",
        "train/time/training_seconds",
    ):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    # the smoke configuration judges every resolution, so each step has a CA mean
    assert len(scalars(out / "tensorboard", "train/negotiation/ca_mean")) == 2
    assert list((out / "samples").glob("step_*.txt"))
    config = (out / "train_config.yaml").read_text()
    assert "judge: default" in config
    # the console shows our progress line, never the metrics dictionaries, which go to
    # metrics.jsonl whole
    assert "{'loss'" not in first.stdout and "'learning_rate'" not in first.stdout
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    assert all("negotiation/agreement_rate" in r for r in logged if "loss" in r)

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "negotiate",
            "train",
            *common,
            "--set",
            "optim.max_steps=3",
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    assert "step 3/3" in resumed.stdout and "step 1/3" not in resumed.stdout
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_a_run_killed_with_sigkill_resumes_from_its_last_complete_checkpoint(
    tiny_model_dir, tmp_path
):
    out = tmp_path / "run"
    command = [sys.executable, str(SCRIPTS / "train_tiny.py"), str(tiny_model_dir), str(out), "6"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path
    )
    deadline = time.monotonic() + 600
    while not any(done for _, _, done in checkpoints(out)):  # wait for a first complete checkpoint
        assert process.poll() is None, "training ended before it wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    saved = [step for step, _, done in checkpoints(out) if done]
    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    line = [x for x in resumed.stdout.splitlines() if x.startswith("RESULT")][0]
    assert line == f"RESULT steps=6 resumed_from={out / f'checkpoint-{saved[-1]}'}"
    assert all(done for _, _, done in checkpoints(out))  # no half-written checkpoint left behind
    assert len(checkpoints(out)) <= 2  # save_total_limit


def test_two_processes_under_accelerate_complete_a_step(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    launcher = Path(sys.executable).with_name("accelerate")
    completed = subprocess.run(
        [
            str(launcher),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(SCRIPTS / "distributed_step.py"),
            str(tiny_model_dir),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["steps"] == 1 for r in ranks)
    played = [set(r["scenarios"]) for r in ranks]
    assert (
        all(len(p) == 1 for p in played) and played[0] != played[1]
    )  # each process played its own group
    assert (out / "checkpoint-1" / "COMPLETE").is_file()
