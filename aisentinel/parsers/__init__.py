"""Parsers: one log line in, one typed event (or ``None``) out.

Plug-ins (each registers itself in :data:`REGISTRY`): ``nginx`` (combined access
log), ``nginx-json`` (the ``aisentinel`` JSON access log), ``nginx-error`` (auth_basic
failures, request limiting), ``sshd`` (OpenSSH via syslog) and ``container`` (Docker
json-file and CRI container logs, each record's line handed to one of the others).
Every list of parser names (the file source's ``parser`` key, ``replay --format``, the
sniff order) comes from the registry: :func:`names`, :func:`sniff_order`. :func:`sniff`
picks one from sample lines for ``auto``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from aisentinel.events import CutLine
from aisentinel.parsers import container, nginx_access, nginx_error, nginx_json, sshd
from aisentinel.parsers.base import (
    MAX_LINE_BYTES,
    REGISTRY,
    Parser,
    ParserContext,
    ParsersConfig,
)

__all__ = [
    "AUTO",
    "REGISTRY",
    "Parser",
    "ParserContext",
    "ParsersConfig",
    "build_parser",
    "line_cap",
    "names",
    "sniff",
    "sniff_order",
]

AUTO = "auto"
"""The parser name that asks for the format to be sniffed from the first lines."""


def build_parser(name: str, ctx: ParserContext) -> Parser:
    """A parser of the registered format ``name``; ``KeyError`` names the known ones."""
    return REGISTRY.get(name).factory(ctx)


def line_cap(name: str | None) -> int:
    """The line length cap (bytes) for format ``name``: its parser's ``max_line_bytes``;
    for ``auto`` or ``None`` (a format not told yet), the largest of the formats it may
    turn out to be (:func:`sniff_order`'s): a line cut before its format is told would be
    handed to that format's parser cut shorter than its own cap would have it (a
    container log's record of a split line, cut, loses the line)."""
    if name is None or name == AUTO:
        return max(
            (e.factory.max_line_bytes for e in REGISTRY if e.factory.sniff is not None),
            default=MAX_LINE_BYTES,
        )
    return REGISTRY.get(name).factory.max_line_bytes


def names(*, auto: bool = False) -> list[str]:
    """The registered parser names, sorted; with ``auto`` last when asked for."""
    return [*REGISTRY.names(), AUTO] if auto else REGISTRY.names()


def sniff_order() -> list[str]:
    """Parsers tried on each sample line, in their ``sniff`` order (most specific first)."""
    ranked = [(e.factory.sniff, e.name) for e in REGISTRY if e.factory.sniff is not None]
    return [name for _, name in sorted(ranked)]


class UnknownFormatError(ValueError):
    """:func:`sniff` recognised no line: the caller should name the format."""


def sniff(lines: Sequence[str]) -> str:
    """The parser name for sample lines.

    Each non-blank line votes for the first format in :func:`sniff_order` whose parser
    says it :meth:`~Parser.looks_like` a line of that format (for sshd and nginx-error,
    a line that merely is not about authentication still counts); the format with most
    votes wins, ties going to the earlier one in that order. Raises ``ValueError`` when
    no line is recognised, since guessing would silently drop every line.

    Each parser is shown a line as its format's cap would cut it (:func:`line_cap`:
    the lines are read with the largest cap until the format is told).
    """
    order = sniff_order()
    ctx = ParserContext(source="sniff")
    parsers = [build_parser(name, ctx) for name in order]
    caps = [line_cap(name) for name in order]
    votes: Counter[str] = Counter()
    for line in lines:
        text = line.rstrip("\r\n")
        if type(line) is CutLine:
            text = CutLine(text)  # still cut: a parser may read what is before the cut
        if not text.strip():
            continue
        for name, parser, cap in zip(order, parsers, caps, strict=True):
            if parser.looks_like(_cut(text, cap)):
                votes[name] += 1
                break
    if not votes:
        raise UnknownFormatError(
            "cannot tell the log format from the sample lines "
            f"(expected one of: {', '.join(order)})"
        )
    best = max(votes.values())
    return next(name for name in order if votes[name] == best)


def _cut(text: str, cap: int) -> str:
    """``text`` cut at ``cap`` UTF-8 bytes (a :class:`CutLine`), or itself if not longer."""
    if len(text) * 4 <= cap:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= cap:
        return text
    return CutLine(raw[:cap].decode("utf-8", "ignore"))


PLUGINS = (nginx_access, nginx_error, nginx_json, sshd, container)
"""The plug-in modules, imported for their one-line registration in ``REGISTRY``."""
