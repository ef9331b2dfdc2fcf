"""``negotiate play``: one episode between two agents, printed as a transcript."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import load_agent, play_episodes
from agents.rollout import seed_everything
from agents.specs import check_agent_spec
from negotiate.common import add_data_arguments, load_bank
from negotiation_env import AGENTS, raw_env
from negotiation_env.jsonl import append_jsonl
from negotiation_env.judges.specs import NO_JUDGE, load_judge
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
    parser.add_argument(
        "--judge",
        default="default",
        help="judge spec that scores the resolution (default: the measured default CA judge, "
        "the shipped reward model; 'none' for no score; 'keyword' is a test double)",
    )
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
    bank = load_bank(args)
    if args.scenario:
        bank.get(args.scenario)  # an unknown id fails now, before any model is loaded
    for spec in (args.agent0, args.agent1):  # both, before either loads a model
        check_agent_spec(spec)
    agents = {AGENTS[0]: load_agent(args.agent0), AGENTS[1]: load_agent(args.agent1)}
    judge = None if args.judge == NO_JUDGE else load_judge(args.judge, role="evaluation")
    color = sys.stdout.isatty() and not args.no_color
    env = raw_env(
        judge=judge,
        scenarios=bank,
        mode=args.mode,
        max_turns=args.max_turns,
        context_turns=args.context_turns or None,
        split=args.split,
    )
    seed_everything(args.seed)
    record = play_episodes(
        [env], agents, seeds=[args.seed], scenarios=[args.scenario], progress="negotiating"
    )[0]
    record["agent_specs"] = {AGENTS[0]: args.agent0, AGENTS[1]: args.agent1}
    record["judge_spec"] = args.judge
    if not args.quiet:
        print(render_transcript(env.negotiation, color=color))
    judgement = record["judgement"] or {}
    if judgement.get("score") is not None:
        scored = (
            f"CA {judgement['score']:.2f} / 5 by judge {judgement['judge']} (--judge {args.judge})"
        )
    elif record["resolution"] is None:
        scored = "no resolution to judge"
    else:
        scored = f"not scored: {judgement.get('error') or 'no judge'}"
    print(
        f"{record['scenario']['id']}: reward {record['reward']:.2f} ({scored}), "
        f"agreement {record['agreement']}, turns {len(record['transcript'])}"
    )
    if args.out:
        append_jsonl([record], Path(args.out))
        print(f"episode appended to {args.out}", file=sys.stderr)
    return 0
