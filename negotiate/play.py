"""``negotiate play``: one episode between two agents, printed as a transcript."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import load_agent, play_episode
from agents.rollout import seed_everything
from negotiate.common import add_data_arguments, load_bank
from negotiation_env import AGENTS, raw_env
from negotiation_env.jsonl import append_jsonl
from negotiation_env.protocol import MODES
from negotiation_env.render import render_transcript


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "play",
        help="play one negotiation episode and print the transcript and reward",
        description="Play one episode. Agents are specs: a registered model (smollm2), "
        "hf:PATH, openai:MODEL@URL, scripted:mediator|stubborn|conceding|random, or "
        "module:function for your own; options after '?', e.g. smollm2?temperature=0.3.",
    )
    parser.add_argument("--agent0", default="scripted:mediator", help="spec of negotiator_0")
    parser.add_argument("--agent1", default="scripted:stubborn", help="spec of negotiator_1")
    parser.add_argument(
        "--scenario", help="scenario id DILEMMA_ID/PAIR_ID (default: drawn by --seed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed that draws the scenario")
    parser.add_argument("--split", default="train", choices=["train", "test", "all"])
    parser.add_argument("--mode", default="evaluation", choices=list(MODES))
    parser.add_argument("--max-turns", type=int, default=7)
    parser.add_argument("--context-turns", type=int, default=2, help="0 = full history")
    parser.add_argument(
        "--out", metavar="FILE.jsonl", help="append the episode record to this file"
    )
    parser.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    parser.add_argument("--quiet", action="store_true", help="print only the reward line")
    add_data_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    agents = {AGENTS[0]: load_agent(args.agent0), AGENTS[1]: load_agent(args.agent1)}
    color = sys.stdout.isatty() and not args.no_color
    env = raw_env(
        scenarios=load_bank(args),
        mode=args.mode,
        max_turns=args.max_turns,
        context_turns=args.context_turns or None,
        split=args.split,
    )
    seed_everything(args.seed)
    record = play_episode(env, agents, seed=args.seed, scenario=args.scenario)
    record["agent_specs"] = {AGENTS[0]: args.agent0, AGENTS[1]: args.agent1}
    if not args.quiet:
        print(render_transcript(env.negotiation, color=color))
    else:
        print(
            f"{record['scenario']['id']}: reward {record['reward']:.2f}, "
            f"agreement {record['agreement']}, turns {len(record['transcript'])}"
        )
    if args.out:
        append_jsonl([record], Path(args.out))
        print(f"episode appended to {args.out}", file=sys.stderr)
    return 0
