"""The performance suite: every figure measured side by side in one run, on this machine.

    python -m benchmarks.perf                 # about 25 minutes on 2 CPU cores
    python -m benchmarks.perf --quick         # smaller sizes, for a smoke check

1. **Env overhead**: env steps per second with scripted agents; the env's share of wall time
   in a batched LLM rollout (everything but the model's generate calls).
2. **Rollout throughput**: generated tokens per second for G dialogues on one scenario,
   vectorized + batched vs a naive loop that plays them one by one; and transformers'
   ``model.generate`` on the same first-turn prompts at the same batch size, for reference.
3. **Training throughput**: trained tokens per second of one optimisation step of our
   self-play trainer vs TRL's plain ``GRPOTrainer`` on a single-turn task, same model, same
   number of sequences, similar tokens (both timed the same way: loss, backward, optimiser
   step on a prepared batch, in micro-batches of 4 sequences; the fastest of 3 steps after
   a warm-up); fp32 and, where the CPU has it, bf16 autocast.
4. **Utilisation**: achieved FLOP/s (2 x parameters x tokens for generation, 6 x for
   training, over every token processed) as a share of this machine's peak matmul FLOP/s,
   measured here in fp32 and bf16.
5. **Peak memory**: peak RSS (CPU) or allocated memory (CUDA) of a rollout and of a training
   step, each in its own process.
6. **Scaling**: rollout and training throughput at 1, 2, 4, 8, 16 parallel dialogues.

Writes ``perf.json``, ``perf.md`` and ``scaling.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import describe_machine, machine_line

SCENARIO = "pro-001/cost_vs_quality"
# sequences per forward/backward in the training figures: the whole batch at once would need
# the activations of 16 x ~600-token sequences (more than this machine's 24 GB)
MICRO_BATCH = 4
TIMED_STEPS = 3


# ---------------------------------------------------------------------------- peak
def peak_matmul_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """Best achieved FLOP/s of square matmuls in ``dtype`` over about ``seconds``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started))
    return best


# ---------------------------------------------------------------------------- env
def env_steps_per_second(episodes: int) -> dict[str, float]:
    from agents import MediatorAgent, StubbornAgent, play_episode
    from negotiation_env import raw_env

    env = raw_env()
    seats = {"negotiator_0": MediatorAgent(), "negotiator_1": StubbornAgent()}
    steps, started = 0, time.perf_counter()
    for seed in range(episodes):
        record = play_episode(env, seats, seed=seed)
        steps += len(record["transcript"]) + (record["resolution"] is not None)
    seconds = time.perf_counter() - started
    return {"episodes": episodes, "steps": steps, "steps_per_second": steps / seconds}


# ---------------------------------------------------------------------------- rollout
def settings(max_new_tokens: int) -> tuple[Any, Any]:
    from agents.backends.base import GenerationSettings

    return (
        GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.95, seed=0),
        GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.1, seed=0),
    )


def batched_rollout(
    backend: Any, dialogues: int, max_turns: int, max_new_tokens: int
) -> dict[str, float]:
    """G dialogues on one scenario, every round generated in one call (the trainer's rollout)."""
    from negotiation_env import NegotiationConfig
    from negotiation_env.vector import VectorNegotiationEnv
    from trainers.rollout import play_dialogues

    env = VectorNegotiationEnv(config=NegotiationConfig(mode="evaluation", max_turns=max_turns))
    dialogue, summary = settings(max_new_tokens)
    started = time.perf_counter()
    _, stats = play_dialogues(
        backend, env, [SCENARIO] * dialogues, dialogue, summary, ("negotiator_0",)
    )
    seconds = time.perf_counter() - started
    return {
        **_throughput(dialogues, seconds, stats.generated_tokens),
        "generation_seconds": stats.generation_seconds,
        "env_share": max(seconds - stats.generation_seconds, 0.0) / seconds,
    }


def _throughput(dialogues: int, seconds: float, tokens: int) -> dict[str, float]:
    return {
        "dialogues": dialogues,
        "seconds": seconds,
        "generated_tokens": tokens,
        "tokens_per_second": tokens / seconds,
    }


def naive_rollout(
    backend: Any, dialogues: int, max_turns: int, max_new_tokens: int
) -> dict[str, float]:
    """The same dialogues played one after the other, one turn per generate call."""
    from agents import LLMAgent, play_episode
    from negotiation_env import raw_env

    dialogue, summary = settings(max_new_tokens)
    agent = LLMAgent(backend, dialogue, summary)
    env = raw_env(mode="evaluation", max_turns=max_turns)
    started = time.perf_counter()
    for _ in range(dialogues):
        play_episode(env, {"negotiator_0": agent, "negotiator_1": agent}, scenario=SCENARIO)
    return _throughput(dialogues, time.perf_counter() - started, agent.generated_tokens)


def plain_generate(backend: Any, dialogues: int, max_new_tokens: int) -> dict[str, float]:
    """transformers' model.generate on the first-turn prompts, left-padded, same sampling."""
    from negotiation_env import NegotiationConfig
    from negotiation_env.vector import VectorNegotiationEnv

    env = VectorNegotiationEnv(config=NegotiationConfig())
    env.reset([SCENARIO] * dialogues)
    texts = [backend.render(list(o["messages"])) for _, _, o in env.pending()]
    tokenizer = backend.tokenizer
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
        backend.device
    )

    def run(new_tokens: int) -> Any:
        with torch.inference_mode():
            return backend.model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                do_sample=True,
                temperature=0.7,
                top_p=0.95,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=backend.stop_token_ids,
            )

    run(2)  # warm-up: generate's first call sets up its generation config and processors
    started = time.perf_counter()
    output = run(max_new_tokens)
    seconds = time.perf_counter() - started
    new = output[:, inputs["input_ids"].shape[1] :]
    tokens = int(sum((row != tokenizer.pad_token_id).sum() for row in new))
    return _throughput(dialogues, seconds, tokens)


# ---------------------------------------------------------------------------- training
def _timed_step(trainer: Any, inputs: dict[str, Any], bf16: bool, micro_batch: int) -> float:
    """Seconds of one optimisation step on a prepared batch: loss and backward per
    micro-batch of ``micro_batch`` sequences (as gradient accumulation does), then the
    optimiser step. The same for both trainers."""
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-6)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    rows = inputs["completion_ids"].shape[0]
    started = time.perf_counter()
    for start in range(0, rows, micro_batch):
        chunk = {
            key: value[start : start + micro_batch]
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows
            else value
            for key, value in inputs.items()
        }
        with torch.autocast(
            "cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16, enabled=bf16
        ):
            loss = trainer.compute_loss(trainer.model, chunk)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def _tokens(inputs: dict[str, Any]) -> tuple[int, int]:
    mask = inputs["completion_mask"] * inputs.get(
        "tool_mask", torch.ones_like(inputs["completion_mask"])
    )
    processed = int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    return int(mask.sum()), processed


def training_throughput(
    kind: str, sequences: int, max_new_tokens: int, bf16: bool, out: Path
) -> dict[str, Any]:
    """Trained tokens per second of one step: ``kind`` is "selfplay" or "trl-plain"."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from agents.models import resolve_model
    from negotiation_env.judges import AgreementDecision

    if kind == "selfplay":
        from trainers.config import TrainConfig
        from trainers.selfplay import build_trainer

        config = TrainConfig.from_dict(
            {
                "model": {
                    "policy": "smollm2",
                    "dtype": "float32",
                    "lora": True,
                    "gradient_checkpointing": False,
                },
                # one dialogue turn per sample: G dialogues of 2 turns, negotiator_0 trained -> G samples
                "rollout": {
                    "group_size": sequences,
                    "scenarios_per_step": 1,
                    "max_new_tokens": max_new_tokens,
                    "summary_max_new_tokens": 8,
                },
                "env": {"max_turns": 1, "min_turns_for_agreement": 1, "mode": "evaluation"},
                "reward": {"judge": "rule", "agreement": "marker"},
                "optim": {"max_steps": 1},
                "run": {
                    "output_dir": str(out / "selfplay"),
                    "report_to": "none",
                    "sample_dialogues": 0,
                },
            }
        )
        trainer = build_trainer(
            config, agreement_detector=lambda s, t: AgreementDecision(True, 1.0, "x")
        )
        batch = [{"prompt": SCENARIO}] * (sequences * config.turns_per_dialogue())
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import GRPOConfig, GRPOTrainer

        from negotiation_env import NegotiationConfig
        from negotiation_env.vector import VectorNegotiationEnv
        from trainers.config import ModelConfig

        lora = ModelConfig()  # the model section our trainer uses here: its defaults
        env = VectorNegotiationEnv(config=NegotiationConfig())
        env.reset([SCENARIO])
        prompt = list(env.pending()[0][2]["messages"])  # the same first-turn prompt, single-turn
        args = GRPOConfig(
            output_dir=str(out / "plain"),
            num_generations=sequences,
            per_device_train_batch_size=sequences,
            max_completion_length=max_new_tokens,
            temperature=0.7,
            top_p=0.95,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=False,
            bf16=False,
            disable_tqdm=True,
            max_steps=1,
        )
        trainer = GRPOTrainer(
            model=resolve_model("smollm2"),
            reward_funcs=lambda completions, **_: [
                float(len(c[0]["content"]) % 5) for c in completions
            ],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": [prompt]}),
            # the same adapter as our trainer's (its model defaults), dropout included
            peft_config=LoraConfig(
                r=lora.lora_rank,
                lora_alpha=lora.lora_alpha,
                lora_dropout=lora.lora_dropout,
                target_modules=lora.lora_target_modules,
                task_type="CAUSAL_LM",
            ),
        )
        batch = [{"prompt": prompt}] * sequences
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(batch)
    trained, processed = _tokens(inputs)
    _timed_step(trainer, inputs, bf16, MICRO_BATCH)  # warm-up (allocations, autocast caches)
    # the fastest of a few steps: one step's time on a shared machine varies by a quarter
    seconds = min(_timed_step(trainer, inputs, bf16, MICRO_BATCH) for _ in range(TIMED_STEPS))
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return {
        "kind": kind,
        "sequences": sequences,
        "bf16": bf16,
        "seconds": seconds,
        "trained_tokens": trained,
        "processed_tokens": processed,
        "trained_tokens_per_second": trained / seconds,
        "processed_tokens_per_second": processed / seconds,
        "parameters": parameters,
    }


# ---------------------------------------------------------------------------- memory
def peak_memory(stage: str, dialogues: int, max_new_tokens: int) -> float:
    """Peak memory in GiB of a fresh process that runs one rollout or one training step:
    peak RSS on CPU (``VmHWM``: ``ru_maxrss`` would carry over the parent's peak through
    fork and exec), peak allocated memory on CUDA."""
    code = (
        "import tempfile, torch\n"
        "from pathlib import Path\n"
        "from benchmarks import perf\n"
        f"stage, n, t = {stage!r}, {dialogues}, {max_new_tokens}\n"
        "if stage == 'rollout':\n"
        "    from agents.specs import load_backend\n"
        "    perf.batched_rollout(load_backend('smollm2'), n, 4, t)\n"
        "else:\n"
        "    perf.training_throughput('selfplay', n, t, False, Path(tempfile.mkdtemp()))\n"
        "if torch.cuda.is_available():\n"
        "    print(torch.cuda.max_memory_allocated() / 2**30)\n"
        "else:\n"
        "    status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "    print(int(status.split()[0]) / 2**20)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=1800
    )
    return float(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    r = report
    lines = [
        "# Performance",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {machine_line(r['machine'])}",
        "",
        f"Peak matmul: {r['peak_flops']['float32'] / 1e12:.3f} TFLOP/s fp32, "
        f"{r['peak_flops']['bfloat16'] / 1e12:.3f} TFLOP/s bf16.",
        "",
        "| figure | ours | baseline | ratio |",
        "|---|---|---|---|",
        f"| env steps/s (scripted agents) | {r['env']['steps_per_second']:.0f} | - | - |",
        f"| env share of LLM rollout wall time | {100 * r['rollout']['batched']['env_share']:.2f}% | target < 1% | - |",
        f"| rollout tokens/s, {r['rollout']['batched']['dialogues']} dialogues | "
        f"{r['rollout']['batched']['tokens_per_second']:.1f} (batched) | {r['rollout']['naive']['tokens_per_second']:.1f} "
        f"(one by one) | {r['rollout']['speedup_vs_naive']:.2f}x |",
        f"| generation tokens/s, same batch | {r['rollout']['batched']['tokens_per_second']:.1f} (our rollout) | "
        f"{r['rollout']['plain_generate']['tokens_per_second']:.1f} (model.generate, first turn) | "
        f"{r['rollout']['speedup_vs_generate']:.2f}x |",
    ]
    for precision in ("fp32", "bf16"):
        if precision in r["training"]:
            t = r["training"][precision]
            lines.append(
                f"| training trained tokens/s ({precision}) | {t['selfplay']['trained_tokens_per_second']:.1f} (self-play) | "
                f"{t['trl-plain']['trained_tokens_per_second']:.1f} (TRL plain) | {t['ratio']:.2f}x |"
            )
    if "bf16" in r["training"]:
        lines.append(
            f"| bf16 vs fp32 training (self-play) | - | - | {r['training']['bf16_speedup']:.2f}x |"
        )
    u = r["utilisation"]
    lines += [
        f"| generation utilisation | {100 * u['generation']:.2f}% of fp32 peak | - | - |",
        f"| training utilisation | {100 * u['training']:.2f}% of fp32 peak | - | - |",
        f"| peak memory, rollout / training step | {r['memory_gib']['rollout']:.2f} / {r['memory_gib']['training']:.2f} GiB | - | - |",
        "",
        "## Scaling",
        "",
        "| dialogues | rollout tokens/s | training trained tokens/s |",
        "|---|---|---|",
    ]
    for row in r["scaling"]:
        lines.append(
            f"| {row['dialogues']} | {row['rollout_tokens_per_second']:.1f} | "
            f"{_f(row['training_tokens_per_second'])} |"
        )
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot_scaling(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sizes = [row["dialogues"] for row in rows]
    for axis, key, title in (
        (axes[0], "rollout_tokens_per_second", "rollout: generated tokens/s"),
        (axes[1], "training_tokens_per_second", "training: trained tokens/s"),
    ):
        points = [(row["dialogues"], row[key]) for row in rows if row[key] is not None]
        axis.plot([x for x, _ in points], [y for _, y in points], marker="o")
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.set_xlabel("parallel dialogues")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke check)")
    parser.add_argument("--out", default="results/perf")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dialogues, tokens, turns = (4, 16, 2) if args.quick else (8, 48, 3)
    sizes = (1, 2, 4) if args.quick else (1, 2, 4, 8, 16)

    from agents.specs import load_backend

    backend = load_backend("smollm2")
    report: dict[str, Any] = {
        "command": "python -m benchmarks.perf " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "settings": {
            "dialogues": dialogues,
            "max_new_tokens": tokens,
            "max_turns": turns,
            "model": "smollm2",
        },
        "peak_flops": {
            "float32": peak_matmul_flops(torch.float32),
            "bfloat16": peak_matmul_flops(torch.bfloat16),
        },
        "env": env_steps_per_second(20 if args.quick else 200),
    }
    batched_rollout(backend, 1, 2, 4)  # warm-up
    batched = batched_rollout(backend, dialogues, turns, tokens)
    naive = naive_rollout(backend, dialogues, turns, tokens)
    plain = plain_generate(backend, dialogues, tokens)
    report["rollout"] = {
        "batched": batched,
        "naive": naive,
        "plain_generate": plain,
        "speedup_vs_naive": batched["tokens_per_second"] / naive["tokens_per_second"],
        "speedup_vs_generate": batched["tokens_per_second"] / plain["tokens_per_second"],
    }
    print(
        f"rollout: batched {batched['tokens_per_second']:.1f} tok/s, naive {naive['tokens_per_second']:.1f}, "
        f"generate {plain['tokens_per_second']:.1f}",
        flush=True,
    )
    report["training"] = {}
    precisions = [("fp32", False)] + ([("bf16", True)] if not args.quick else [])
    for label, bf16 in precisions:
        ours = training_throughput("selfplay", dialogues, tokens, bf16, out)
        plain_trl = training_throughput("trl-plain", dialogues, tokens, bf16, out)
        report["training"][label] = {
            "selfplay": ours,
            "trl-plain": plain_trl,
            "ratio": ours["trained_tokens_per_second"] / plain_trl["trained_tokens_per_second"],
        }
        print(
            f"training {label}: trained tokens/s ours {ours['trained_tokens_per_second']:.1f}, "
            f"TRL {plain_trl['trained_tokens_per_second']:.1f}; processed tokens/s ours "
            f"{ours['processed_tokens_per_second']:.1f}, TRL {plain_trl['processed_tokens_per_second']:.1f}",
            flush=True,
        )
        save(report, out)
    if "bf16" in report["training"]:
        report["training"]["bf16_speedup"] = (
            report["training"]["bf16"]["selfplay"]["processed_tokens_per_second"]
            / report["training"]["fp32"]["selfplay"]["processed_tokens_per_second"]
        )
    parameters = sum(p.numel() for p in backend.model.parameters())
    fp32_peak = report["peak_flops"]["float32"]
    ours = report["training"]["fp32"]["selfplay"]
    report["utilisation"] = {
        "generation": 2
        * parameters
        * batched["generated_tokens"]
        / batched["generation_seconds"]
        / fp32_peak,
        "training": 6 * parameters * ours["processed_tokens_per_second"] / fp32_peak,
    }
    report["memory_gib"] = {
        "rollout": peak_memory("rollout", dialogues, tokens),
        "training": peak_memory("training", dialogues, tokens),
    }
    save(report, out)
    report["scaling"] = []
    for size in sizes:
        rollout = batched_rollout(backend, size, turns, tokens)
        # a GRPO group needs two dialogues: one dialogue has no training figure
        training = training_throughput("selfplay", size, tokens, False, out) if size > 1 else None
        report["scaling"].append(
            {
                "dialogues": size,
                "rollout_tokens_per_second": rollout["tokens_per_second"],
                "training_tokens_per_second": training["trained_tokens_per_second"]
                if training
                else None,
            }
        )
        print(f"scaling {size}: {report['scaling'][-1]}", flush=True)
        save(report, out)
    plot_scaling(report["scaling"], out / "scaling.png")
    save(report, out)
    (out / "perf.md").write_text(markdown(report))
    print(markdown(report))
    return report


def save(report: dict[str, Any], out: Path) -> None:
    """Write what has been measured so far (a crash late in the run keeps the early figures)."""
    (out / "perf.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
