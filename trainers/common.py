"""What both trainers share: the policy, TRL's arguments, checkpoints, logging and progress.

Checkpoints are written by TRL/transformers (adapter or weights, optimizer, scheduler, RNG
states, trainer state) into ``checkpoint-N``; a ``COMPLETE`` marker, fsynced, is written
last. Only marked checkpoints are ever resumed from or counted for rotation, and unmarked
ones (a process killed while writing) are removed, so a half-written checkpoint is never
used and never displaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from negotiation_env.jsonl import write_jsonl, write_text_atomic
from trainers.config import TrainConfig
from trainers.rollout import DialogueOutcome, RolloutStats

COMPLETE_MARKER = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- checkpoints
def checkpoints(output_dir: str | Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) of every checkpoint folder, oldest first."""
    root = Path(output_dir)
    found = []
    for path in root.glob("checkpoint-*") if root.is_dir() else ():
        match = _CHECKPOINT.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path, (path / COMPLETE_MARKER).is_file()))
    return sorted(found)


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    complete = [path for _, path, done in checkpoints(output_dir) if done]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(output_dir: str | Path) -> list[Path]:
    removed = []
    for _, path, done in checkpoints(output_dir):
        if not done:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mark_complete(path: Path, step: int) -> None:
    marker = path / COMPLETE_MARKER
    with marker.open("w") as handle:
        json.dump({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, handle)
        handle.flush()
        os.fsync(handle.fileno())


def rotate_checkpoints(output_dir: str | Path, keep: int) -> None:
    complete = [path for _, path, done in checkpoints(output_dir) if done]
    for path in complete[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


class CheckpointMixin:
    """Mixed into the GRPO trainer: marks a checkpoint complete only once all of it is written."""

    keep_checkpoints: int = 3

    def _save_checkpoint(self, model: Any, trial: Any) -> None:  # noqa: D401 - transformers hook
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        if self.args.should_save:  # type: ignore[attr-defined]
            step = self.state.global_step  # type: ignore[attr-defined]
            path = Path(self.args.output_dir) / f"checkpoint-{step}"  # type: ignore[attr-defined]
            mark_complete(path, step)
            rotate_checkpoints(self.args.output_dir, self.keep_checkpoints)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- policy
@contextlib.contextmanager
def policy_backend(trainer: Any) -> Iterator[Any]:
    """The policy being trained, in eval mode, as an LLM backend for the rollout."""
    from llm.transformers_backend import TransformersBackend

    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    model.eval()
    try:
        yield TransformersBackend.from_objects(model, trainer.processing_class, name="policy")
    finally:
        model.train(was_training)


def load_policy(config: TrainConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft LoraConfig or None) as the configuration asks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.models import resolve_model
    from llm.transformers_backend import pick_device, pick_dtype

    device = pick_device(config.model.device)
    dtype = pick_dtype(config.model.dtype, device)
    path = resolve_model(config.model.policy)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.model.qlora:
        if device.type != "cuda":
            raise ValueError(
                "model.qlora: 4-bit QLoRA needs a CUDA device; set qlora: false on CPU"
            )
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise ValueError(
                "model.qlora: needs the bitsandbytes package (pip install bitsandbytes)"
            ) from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        if not config.model.lora:
            raise ValueError("model.qlora: QLoRA trains a LoRA adapter; set model.lora: true")
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device.type == "cuda" and not config.model.qlora:
        model.to(device)
    peft_config = None
    if config.model.lora:
        from peft import LoraConfig

        targets: Any = config.model.lora_target_modules
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        peft_config = LoraConfig(
            r=config.model.lora_rank,
            lora_alpha=config.model.lora_alpha,
            lora_dropout=config.model.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
    return model, tokenizer, peft_config


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def grpo_arguments(
    config: TrainConfig, samples_per_scenario: int, samples_per_dialogue: int
) -> Any:
    """TRL's GRPOConfig for one optimisation step per ``scenarios_per_step`` scenarios."""
    from trl import GRPOConfig

    processes = world_size()
    per_step = config.rollout.scenarios_per_step * samples_per_scenario
    if per_step % processes:
        raise ValueError(
            f"rollout.scenarios_per_step x group_size x turns ({per_step} samples) must divide evenly "
            f"over {processes} processes"
        )
    per_process = per_step // processes
    micro = config.optim.micro_batch_size or per_process
    if micro % samples_per_dialogue or per_process % micro:
        raise ValueError(
            f"optim.micro_batch_size ({micro}) must be a multiple of the {samples_per_dialogue} samples of one "
            f"dialogue and divide the {per_process} samples per process and step"
        )
    on_cpu = config.model.device == "cpu" or (
        config.model.device == "auto" and not torch.cuda.is_available()
    )
    return GRPOConfig(
        output_dir=config.run.output_dir,
        seed=config.run.seed,
        num_generations=samples_per_scenario,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_process // micro,
        max_completion_length=max(config.rollout.max_new_tokens, 1),
        temperature=config.rollout.temperature,  # TRL scales logits by it when it recomputes log-probs
        top_p=config.rollout.top_p,
        learning_rate=config.optim.learning_rate,
        beta=config.optim.beta,
        loss_type=config.optim.loss_type,
        max_steps=config.optim.max_steps,
        warmup_steps=config.optim.warmup_steps,
        max_grad_norm=config.optim.max_grad_norm,
        bf16=config.optim.bf16,
        use_cpu=on_cpu,
        gradient_checkpointing=config.model.gradient_checkpointing,
        logging_steps=config.run.logging_steps,
        save_strategy="steps",
        save_steps=config.run.save_steps,
        save_total_limit=None,  # rotation happens after the COMPLETE marker (CheckpointMixin)
        report_to=[] if config.run.report_to == "none" else [config.run.report_to],
        disable_tqdm=True,
        scale_rewards="none" if config.rollout.per_seat_normalization else "group",
        log_completions=False,
        # playing ahead (Rollout.next_prompts) needs the dataset walked in its own order,
        # which scenario_dataset has already shuffled with run.seed
        shuffle_dataset=not config.rollout.max_staleness,
        # read only with the server engine (trainers/engine.py): TRL's truncated per-token
        # importance-sampling correction between the sampling and the trained policy
        vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=config.rollout.importance_sampling_cap,
    )


# ---------------------------------------------------------------------------- logging
def push_metrics(trainer: Any, metrics: dict[str, float]) -> None:
    """Add scalars to TRL's per-step metrics, logged (averaged) with its own at each log step."""
    for name, value in metrics.items():
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            trainer._metrics["train"][name].append(float(value))


class ProgressCallback(TrainerCallback):
    """One console line per step: step, reward, agreement, seconds per step and ETA."""

    def __init__(self, output: Any = None):
        self.output = output
        self.started = None
        self.last = None
        self.step_seconds: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last = time.perf_counter()
        self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.step_seconds.append(now - self.last)
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if (
            not state.is_world_process_zero
            or not logs
            or ("loss" not in logs and "reward" not in logs)
        ):
            return
        done = state.global_step - self.first_step
        per_step = (time.perf_counter() - self.started) / max(done, 1)
        remaining = (state.max_steps - state.global_step) * per_step
        parts = [f"step {state.global_step}/{state.max_steps}"]
        for key, label in (
            ("reward", "reward"),
            ("negotiation/ca_mean", "CA"),
            ("negotiation/agreement_rate", "agreement"),
            ("loss", "loss"),
        ):
            if key in logs:
                parts.append(f"{label} {logs[key]:.3f}")
        parts.append(f"{per_step:.0f} s/step, ETA {_duration(remaining)}")
        print(" | ".join(parts), file=self.output, flush=True)


class MetricsLog(TrainerCallback):
    """Every logged metrics dictionary as one JSON line in ``OUTPUT_DIR/metrics.jsonl`` (step
    and time added): the whole record of a run, beside TensorBoard, while the console shows
    only :class:`ProgressCallback`'s line."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "time": round(time.time(), 3), **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class StepTimer(TrainerCallback):
    """Logs ``time/step_seconds`` and ``time/training_seconds`` (the step minus its rollout)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer  # a NegotiationGRPOTrainer: its rollout says how long it took
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.started
        rollout = self.trainer.rollout.take_seconds()
        push_metrics(
            self.trainer,
            {"time/step_seconds": seconds, "time/training_seconds": max(seconds - rollout, 0.0)},
        )


# ---------------------------------------------------------------------------- rollouts
@dataclass
class RolloutResult:
    """What one call of a rollout produced: the trainer logs it, tests read it."""

    step: int
    outcomes: list[DialogueOutcome]
    stats: RolloutStats
    seconds: float


class Rollout:
    """Base of the TRL ``rollout_func`` of both trainers. A subclass generates and scores
    (:meth:`collect`); this base times the call, logs the step's metrics, writes sample
    dialogues, and keeps the result (``last``) and the rollout time of the current step
    (:meth:`take_seconds`, read by :class:`StepTimer`).

    With the server engine and ``rollout.max_staleness`` >= 1 it also plays one step ahead:
    after answering the prompts of step k, it starts the rollout of the prompts that step
    k+1 will ask for (the next scenarios of the dataset order) on the servers, with step
    k's adapter, while step k trains; step k+1 takes it if its prompts are those (else it
    plays them then). ``rollout/staleness`` logs how many steps old the sampling adapter was.
    """

    samples_per_dialogue: int = 1

    def __init__(self, config: TrainConfig):
        self.config = config
        self.last: RolloutResult | None = None
        self._seconds = 0.0
        # the server engine (trainers/engine.py); None: the policy in this process generates
        self.engine: Any = None
        self.scenario_order: list[str] = []  # the dataset's prompts, in order (playing ahead)
        self._cursor = 0  # where in scenario_order the last step's prompts were
        self._ahead: _Ahead | None = None
        self._background: ThreadPoolExecutor | None = None  # the thread that plays ahead

    def collect(
        self, prompts: list[str], backend: Any, trainer: Any
    ) -> tuple[dict[str, list[Any]], list[DialogueOutcome], RolloutStats, dict[str, float]]:
        """(TRL rollout fields, outcomes, timing statistics, metrics to log) for ``prompts``."""
        raise NotImplementedError

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        started = time.perf_counter()
        prompts = [str(p) for p in prompts]
        step = trainer.state.global_step
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.prompts == prompts:
            fields, outcomes, stats, metrics = ahead.future.result()
            staleness, hit = step - ahead.adapter_step, 1.0
        else:
            if ahead is not None:  # a wrong guess: let it end (it plays on the same envs)
                ahead.future.exception()
            if self.engine is None:
                with policy_backend(trainer) as backend:
                    fields, outcomes, stats, metrics = self.collect(prompts, backend, trainer)
                staleness = 0
            else:
                fields, outcomes, stats, metrics = self.collect(prompts, self.engine.pool, trainer)
                staleness = step - self.engine.loaded_step
            hit = 0.0
        self._play_ahead(prompts, trainer)
        seconds = time.perf_counter() - started
        self._seconds += seconds
        self.last = RolloutResult(step, outcomes, stats, seconds)
        if self.engine is not None:
            metrics = {**metrics, "rollout/staleness": staleness}
        if self.config.rollout.max_staleness:
            metrics = {**metrics, "rollout/played_ahead": hit}
        push_metrics(
            trainer,
            {
                **metrics,
                "time/generation_seconds": stats.generation_seconds,
                "time/judge_seconds": stats.judging_seconds,
                "time/rollout_seconds": seconds,
                "rollout/generated_tokens_per_second": stats.generated_tokens
                / max(stats.generation_seconds, 1e-9),
            },
        )
        if step % max(self.config.run.logging_steps, 1) == 0:
            write_samples(
                self.config.run.output_dir, step, outcomes, self.config.run.sample_dialogues
            )
        return fields

    def _play_ahead(self, prompts: list[str], trainer: Any) -> None:
        """Start the next step's rollout on the servers, with the adapter loaded now."""
        if not self.config.rollout.max_staleness or self.engine is None:
            return
        if trainer.state.global_step + 1 >= trainer.state.max_steps:
            return  # no step will take it
        upcoming = self.next_prompts(prompts)
        if upcoming is None:
            return
        pool = self.engine.pool.with_adapter(self.engine.pool.adapter)
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="rollout-ahead")
        future = self._background.submit(self.collect, upcoming, pool, trainer)
        self._ahead = _Ahead(upcoming, self.engine.loaded_step, future)

    def next_prompts(self, prompts: list[str]) -> list[str] | None:
        """The prompts the next step will bring, predicted from the dataset order (TRL
        walks it in order when ``shuffle_dataset`` is off, as it is when playing ahead, and
        :func:`~trainers.selfplay.scenario_dataset` then lays out one shuffled pass of the
        pool after another); None when ``prompts`` are not where the order says. A wrong
        guess costs only time: the next call checks its prompts against it."""
        order = self.scenario_order
        scenarios = list(dict.fromkeys(prompts))
        if not order or len(prompts) % len(scenarios):
            return None
        repeats = len(prompts) // len(scenarios)
        start = _find_run(order, scenarios, self._cursor)
        if start is None:
            return None
        step = len(scenarios) * world_size()  # every process takes its share of a step
        following = start + step
        self._cursor = following
        upcoming = order[following : following + len(scenarios)]
        if len(upcoming) < len(scenarios):
            return None  # past the end of the order: training ends before
        return [s for s in upcoming for _ in range(repeats)]

    def close(self) -> None:
        """Wait for a rollout still playing ahead (its result is not needed any more)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.future.exception()
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None

    def take_seconds(self) -> float:
        """The seconds spent in rollouts since the last call (one training step's share)."""
        seconds, self._seconds = self._seconds, 0.0
        return seconds


@dataclass
class _Ahead:
    """A rollout played ahead: for which prompts, with the adapter of which step."""

    prompts: list[str]
    adapter_step: int
    future: Future


def _find_run(order: list[str], run: list[str], cursor: int) -> int | None:
    """Where ``run`` stands in ``order`` contiguously, searching from ``cursor`` on (then
    from the start): the order repeats scenarios, one pass after another."""
    for begin in (cursor, 0):
        for start in range(begin, len(order) - len(run) + 1):
            if order[start : start + len(run)] == run:
                return start
    return None


def write_samples(
    output_dir: str | Path, step: int, outcomes: list[DialogueOutcome], count: int
) -> None:
    """A few dialogues of this step as readable text and as JSON lines (each file replaced
    atomically: a kill while writing leaves no half file)."""
    if count <= 0:
        return
    folder = Path(output_dir) / "samples"
    chosen = outcomes[:count]
    text = []
    for outcome in chosen:
        info = outcome.info
        text.append(
            f"=== {outcome.scenario_id}  reward={outcome.reward}  agreement={info['agreement']}\n"
        )
        text.extend(f"[{turn['speaker_name']}] {turn['text']}\n" for turn in info["transcript"])
        text.append(f"[resolution] {info['resolution']}\n\n")
    write_text_atomic(folder / f"step_{step:06d}.txt", "".join(text))
    write_jsonl(
        [{"scenario_id": o.scenario_id, "reward": o.reward, **o.info} for o in chosen],
        folder / f"step_{step:06d}.jsonl",
    )
