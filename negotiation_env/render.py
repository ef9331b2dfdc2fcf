"""Readable transcripts of an episode, plain or coloured with ANSI escapes."""

from __future__ import annotations

import textwrap

from negotiation_env.protocol import AGENTS, Negotiation, Phase

_COLORS = {AGENTS[0]: "\033[36m", AGENTS[1]: "\033[35m", "bold": "\033[1m", "dim": "\033[2m"}
_RESET = "\033[0m"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_COLORS[style]}{text}{_RESET}" if color else text


def _wrap(text: str, indent: str = "    ", width: int = 96) -> str:
    paragraphs = text.splitlines() or [""]
    return "\n".join(
        textwrap.fill(p, width=width, initial_indent=indent, subsequent_indent=indent) or indent
        for p in paragraphs
    )


def render_transcript(negotiation: Negotiation, color: bool = False) -> str:
    """The scenario, every turn, the resolution and the reward, as text."""
    scenario = negotiation.scenario
    lines = [
        _paint(f"Scenario {scenario.id} ({scenario.dilemma.category})", "bold", color),
        _paint(scenario.dilemma.title, "bold", color),
        _wrap(scenario.dilemma.text, indent="  "),
        "",
    ]
    for agent in AGENTS:
        persona = negotiation.persona(agent)
        lines.append(
            _paint(f"{agent}: {persona.name}", agent, color)
            + f" (values: {', '.join(persona.core_values)})"
        )
    lines.append("")
    for turn in negotiation.turns:
        flags = f" [{', '.join(turn.flags)}]" if turn.flags else ""
        lines.append(
            _paint(f"Turn {turn.index + 1} - {turn.speaker_name}{flags}", turn.speaker, color)
        )
        lines.append(_wrap(turn.text or "(said nothing)"))
    if negotiation.agreed:
        lines.append(
            _paint(f"Agreement after {negotiation.rounds_to_agreement} turns.", "dim", color)
        )
    elif negotiation.phase != Phase.DIALOGUE:
        lines.append(_paint(f"No agreement after {len(negotiation.turns)} turns.", "dim", color))
    if negotiation.resolution is not None:
        lines.append("")
        lines.append(_paint(f"Resolution by {negotiation.resolution.speaker_name}", "bold", color))
        lines.append(_wrap(negotiation.resolution.text or "(empty)"))
    if negotiation.done:
        lines.append("")
        judgement = negotiation.judgement
        if judgement is not None and judgement.score is None:
            verdict = f"judge failed ({judgement.error}); reward {negotiation.reward():.2f}"
        elif judgement is not None:
            verdict = f"reward {negotiation.reward():.2f} (judge: {judgement.judge})"
        else:
            verdict = f"reward {negotiation.reward():.2f} (no resolution to judge)"
        lines.append(_paint(verdict, "bold", color))
    return "\n".join(lines)
