"""Attacker-controlled text made safe for a terminal and for one line of a log.

Usernames, paths, user agents and ``$remote_user`` come from the network. Printed
raw they can clear the screen (``ESC [2J``), start a forged line (``\\n`` or U+2028),
or reorder what the reader sees (bidi overrides). :func:`escape` turns every
character that is not plainly printable into a visible escape, and escapes the
backslash itself, so the result is unambiguous: each ``\\`` in it starts one of
``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN`` (or the
truncation marker, ``\\…``).

"Plainly printable" is :meth:`str.isprintable`: it is false for the C0 and C1
controls, DEL, line and paragraph separators, format characters (category Cf: the
bidi embeddings, overrides and isolates, LRM/RLM, ALM, zero-width spaces and joiners,
the BOM, soft hyphen), lone surrogates, private-use and unassigned code points, and
every space but U+0020. Text made only of printable characters and no backslash,
which is nearly all text, is returned as it is after two C-level scans.

Machine-readable outputs (JSON lines, journald fields other than ``MESSAGE``) keep
values exact and do not use this module: their encoders already escape.
"""

from __future__ import annotations

import re

__all__ = ["TRUNCATED", "escape", "escape_lines"]

TRUNCATED = "\\…"
"""Starts the marker of a cut text (``\\…[+12]``: 12 more characters not shown).

It starts with a backslash that is not an escape, so attacker text cannot spell it."""

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Every character but printable ASCII other than the backslash: candidates only; a
# run of them is kept when it is all printable (accented letters, CJK, emoji).
_CANDIDATES = re.compile(r"[^\x20-\x5b\x5d-\x7e]+")


def _char(ch: str) -> str:
    """The escape for one character that needs one (or ``ch`` when it does not)."""
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _run(match: re.Match[str]) -> str:
    text = match.group()
    if text.isprintable() and "\\" not in text:
        return text
    return "".join([_char(ch) for ch in text])


def _marker(dropped: int) -> str:
    return f"{TRUNCATED}[+{dropped}]"


def escape(text: str, limit: int | None = None) -> str:
    """``text`` with every unsafe character (and ``\\``) written as a visible escape.

    The result holds no control, separator, format or surrogate character, so it
    stays one line and cannot move the cursor or reorder the display. With
    ``limit``, at most ``limit`` characters of escaped text are kept (an escape is
    never split) and the marker ``\\…[+N]`` says how many characters of ``text``
    were dropped. ``ValueError`` for a negative ``limit``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    if text.isprintable() and "\\" not in text:  # the fast path: nothing to escape
        if limit is None or len(text) <= limit:
            return text
        return text[:limit] + _marker(len(text) - limit)
    if limit is None:
        return _CANDIDATES.sub(_run, text)
    pieces: list[str] = []
    size = 0
    # Each character gives at least one character: no more than limit + 1 are looked at.
    for index, ch in enumerate(text[: limit + 1]):
        piece = _char(ch)
        if size + len(piece) > limit:
            return "".join(pieces) + _marker(len(text) - index)
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def escape_lines(text: str) -> str:
    """``text`` escaped line by line: its ``\\n`` stay line breaks, nothing else unsafe.

    For text meant to span lines (a traceback, a multi-line remediation) whose lines
    may still carry hostile characters.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "\n".join([escape(line) for line in text.split("\n")])
