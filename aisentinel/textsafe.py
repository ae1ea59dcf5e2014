"""Untrusted text made safe to print on a terminal.

Log lines and config values can carry terminal escape sequences, newlines (a forged
second line of output) or Unicode bidirectional overrides (text shown in another
order than it is stored). :func:`escape` writes every such character as a visible
``\\xNN`` / ``\\uNNNN`` escape, and a backslash as ``\\\\``, so the output is one line
that shows exactly what was stored.
"""

from __future__ import annotations

import unicodedata

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Bidirectional marks, embeddings, overrides and isolates."""

_ELLIPSIS = "…"


def _visible(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"
    if ch in _BIDI or unicodedata.category(ch) in ("Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def escape(text: str, limit: int | None = None) -> str:
    """``text`` with control, format and bidi characters escaped; cut to ``limit`` characters.

    A cut string ends in ``…`` (counted in ``limit``); an escape is never cut in half.
    """
    if text.isprintable() and "\\" not in text:
        if limit is None or len(text) <= limit:
            return text
        return text[: max(0, limit - 1)] + _ELLIPSIS
    pieces = list(map(_visible, text))
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    room = max(0, limit - 1)
    kept: list[str] = []
    for piece in pieces:
        room -= len(piece)
        if room < 0:
            break
        kept.append(piece)
    return "".join(kept) + _ELLIPSIS
