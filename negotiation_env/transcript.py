"""Turns of a negotiation and the plain-text forms of a transcript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One utterance of the dialogue, or the final resolution when ``kind == "summary"``.

    ``flags`` records what the env did to the text the agent submitted: ``"empty"``,
    ``"truncated"`` (longer than the action space allows) or ``"sanitized"`` (characters
    that cannot be encoded were replaced).
    """

    index: int
    speaker: str
    speaker_name: str
    text: str
    kind: str = "dialogue"
    flags: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "speaker": self.speaker,
            "speaker_name": self.speaker_name,
            "text": self.text,
            "kind": self.kind,
            "flags": list(self.flags),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Turn:
        return cls(
            index=int(record["index"]),
            speaker=str(record["speaker"]),
            speaker_name=str(record.get("speaker_name", record["speaker"])),
            text=str(record["text"]),
            kind=str(record.get("kind", "dialogue")),
            flags=tuple(record.get("flags", ())),
        )


def format_transcript(turns: Sequence[Turn], empty: str = "(no turns)") -> str:
    """``Name: text`` paragraphs, one per turn, as shown to summarizers and judges."""
    if not turns:
        return empty
    return "\n\n".join(f"{turn.speaker_name}: {turn.text or '(said nothing)'}" for turn in turns)
