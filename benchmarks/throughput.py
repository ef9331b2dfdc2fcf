"""Rollout throughput: G dialogues generated together versus the same dialogues one by one.

    python -m benchmarks.throughput --model smollm2 --dialogues 8

Both runs use the same model, sampling settings, scenario and number of turns. The batched
run plays G envs in lockstep (one backend call per turn for all of them, as the trainer
does); the sequential run plays them one after the other at batch size 1 (the loop most
examples use). Prints generated tokens per second for each and the ratio, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from agents.llm import LLMAgent
from agents.rollout import play_episode, play_episodes, seed_everything
from benchmarks.command import run_main
from benchmarks.machine import describe_machine, machine_line
from llm.interface import GenerationSettings
from llm.specs import load_backend
from negotiation_env import raw_env
from negotiation_env.jsonl import write_text_atomic


def measure(agent: LLMAgent, envs: list, scenario: str, batched: bool, seed: int) -> dict:
    seats = {"negotiator_0": agent, "negotiator_1": agent}
    seed_everything(seed)
    agent.generated_tokens = 0
    started = time.perf_counter()
    if batched:
        play_episodes(envs, seats, scenarios=[scenario] * len(envs))
    else:
        for env in envs:
            play_episode(env, seats, scenario=scenario)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "generated_tokens": agent.generated_tokens,
        "tokens_per_second": round(agent.generated_tokens / seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="LLM spec (registry name, hf:PATH, ...)")
    parser.add_argument("--dialogues", type=int, default=8, help="G: dialogues per group")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--scenario", default="pro-001/cost_vs_quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/throughput.json")
    args = parser.parse_args(argv)

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95)
    agent = LLMAgent(
        load_backend(args.model),
        dialogue=settings,
        summary=GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.1),
    )
    envs = [raw_env(max_turns=args.max_turns, mode="evaluation") for _ in range(args.dialogues)]
    measure(agent, envs[:1], args.scenario, batched=False, seed=args.seed)  # warm-up
    sequential = measure(agent, envs, args.scenario, batched=False, seed=args.seed)
    batched = measure(agent, envs, args.scenario, batched=True, seed=args.seed)
    ratio = batched["tokens_per_second"] / sequential["tokens_per_second"]
    machine = describe_machine()
    report = {
        "command": "python -m benchmarks.throughput "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "settings": vars(args),
        "one_by_one": sequential,
        "batched": batched,
        "speedup": round(ratio, 2),
    }
    print(f"machine: {machine_line(machine)}")
    print(
        f"{args.dialogues} dialogues x {args.max_turns} turns + resolution, {args.model}, "
        f"<= {args.max_new_tokens} new tokens per turn"
    )
    for label, figures in (("one by one", sequential), ("batched", batched)):
        print(
            f"  {label:11} {figures['generated_tokens']:6d} tokens in {figures['seconds']:7.1f} s "
            f"= {figures['tokens_per_second']:7.1f} tokens/s"
        )
    print(f"  speedup     {ratio:.2f}x")
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(run_main("python -m benchmarks.throughput", main))
