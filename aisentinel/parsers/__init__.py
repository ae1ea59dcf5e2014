"""Parsers: one log line in, one typed event (or ``None``) out.

Plug-ins (each registers itself in :data:`REGISTRY`): ``nginx`` (combined access
log), ``nginx-json`` (the ``aisentinel`` JSON access log), ``nginx-error`` (auth_basic
failures, request limiting) and ``sshd`` (OpenSSH via syslog or the journal).
:func:`sniff` picks one of them from sample lines for ``--format auto``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from aisentinel.parsers import nginx_access, nginx_error, nginx_json, sshd
from aisentinel.parsers.base import REGISTRY, Parser, ParserContext, ParsersConfig

__all__ = ["REGISTRY", "Parser", "ParserContext", "ParsersConfig", "build_parser", "sniff"]

_SNIFF_ORDER = ("nginx-json", "nginx-error", "nginx", "sshd")
"""Formats tried on each sample line, most specific first."""


def build_parser(name: str, ctx: ParserContext) -> Parser:
    """A parser of the registered format ``name``; ``KeyError`` names the known ones."""
    return REGISTRY.get(name).factory(ctx)


def sniff(lines: Sequence[str]) -> str:
    """The format (``nginx``, ``nginx-json``, ``nginx-error``, ``sshd``) of sample lines.

    Each non-blank line votes for the first format whose parser recognises it as
    a line of that format (for sshd and nginx-error, a line that merely is not
    about authentication still counts); the format with most votes wins, ties going
    to the earlier one in that order. Raises ``ValueError`` when no line is
    recognised, since guessing would silently drop every line.
    """
    ctx = ParserContext(source="sniff")
    parsers = {name: build_parser(name, ctx) for name in _SNIFF_ORDER}
    votes: Counter[str] = Counter()
    for line in lines:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        for name in _SNIFF_ORDER:
            if _looks_like(name, parsers[name], text):
                votes[name] += 1
                break
    if not votes:
        raise ValueError(
            "cannot tell the log format from the sample lines "
            f"(expected one of: {', '.join(_SNIFF_ORDER)}); name it explicitly"
        )
    best = max(votes.values())
    return next(name for name in _SNIFF_ORDER if votes[name] == best)


def _looks_like(name: str, parser: Parser, line: str) -> bool:
    if parser.parse(line) is not None:
        return True
    if name == "sshd":
        return sshd.SshdParser.is_sshd_line(line)
    if name == "nginx-error":
        return nginx_error.NginxErrorParser.is_error_line(line)
    return False


PLUGINS = (nginx_access, nginx_error, nginx_json, sshd)
"""The plug-in modules, imported for their one-line registration in ``REGISTRY``."""
