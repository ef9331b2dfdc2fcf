"""Gymnasium spaces for the text LLMs actually write.

``gymnasium.spaces.Text`` checks every character against a finite charset (letters and
digits by default), so real sentences, with punctuation, accents, emoji or other scripts,
fall outside it. Listing all of Unicode as a charset would cost hundreds of megabytes.
:class:`UnicodeText` keeps ``Text``'s length bounds but accepts any string that can be
encoded as UTF-8 (everything except lone surrogates), and samples from a mixed charset so
random actions look like the text an environment must survive: ASCII, whitespace,
typographic punctuation, accented letters, other scripts and emoji.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

# What random samples are drawn from; contains() accepts far more than this.
SAMPLE_CHARSET = (
    string.ascii_letters
    + string.digits
    + string.punctuation
    + " \n\t"
    + "\u00a0’‘“”–—…«»¿¡€£°·"
    + "éèàçñöüßøåÉÀŁŒ"
    + "αβγδΩπЖжДдшЯ"
    + "中文日本語한국어"
    + "العربيةעבריתहिन्दी"
    + "🙂🤝✅🔥"
)


class UnicodeText(Text):
    """A ``Text`` space whose members are any UTF-8-encodable string within the length bounds."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        if not isinstance(x, str) or not self.min_length <= len(x) <= self.max_length:
            return False
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    __hash__ = Text.__hash__


def make_utf8_safe(text: str) -> str:
    """Replace lone surrogates (which cannot be encoded) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
