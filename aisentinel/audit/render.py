"""Printing an audit report: a readable table (coloured on a terminal) or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TextIO

from aisentinel.audit.model import AuditReport, Status
from aisentinel.textsafe import escape

_COLOURS = {
    Status.PASS: "\033[32m",
    Status.FAIL: "\033[1;31m",
    Status.WARN: "\033[33m",
    Status.UNKNOWN: "\033[35m",
}
_RESET = "\033[0m"
_DIM = "\033[2m"


def render_json(report: AuditReport) -> str:
    """The report as indented JSON (stable keys; see ``AuditReport.to_dict``)."""
    return json.dumps(report.to_dict(), indent=2)


def render_table(report: AuditReport, *, colour: bool = False, verbose: bool = False) -> str:
    """One row per check (status, id, title); evidence and fix under non-passing rows.

    ``verbose`` also prints the evidence of passing checks. Evidence quotes the host
    (file contents, process and unit names, command output), so every item is
    escaped to one terminal-safe line; a remediation line is escaped when it holds an
    unsafe character.
    """
    width = max((len(r.id) for r in report.results), default=10)
    lines: list[str] = []
    for result in report.results:
        label = f"{result.status.value.upper():<7}"
        if colour:
            label = f"{_COLOURS[result.status]}{label}{_RESET}"
        lines.append(f"{label} {escape(result.id):<{width}}  {escape(result.title)}")
        if result.status is not Status.PASS or verbose:
            for item in result.evidence:
                lines.append("        - " + escape(item))
        if result.remediation and result.status is not Status.PASS:
            fix = _indent(result.remediation, "        fix: ", "             ")
            lines.append(f"{_DIM}{fix}{_RESET}" if colour else fix)
    counts = report.counts()
    summary = ", ".join(f"{counts[s]} {s.value}" for s in Status)
    lines.append(f"\n{len(report.results)} checks: {summary} ({report.duration_seconds:.2f}s)")
    return "\n".join(lines)


def _indent(text: str, first: str, rest: str | None = None) -> str:
    """``text`` indented line by line; a line with an unsafe character is escaped.

    Remediations are commands to copy (``printf 'a\\n'``): a printable line keeps its
    backslashes as they are.
    """
    rest = rest if rest is not None else " " * len(first)
    out = []
    for i, line in enumerate(text.rstrip("\n").split("\n")):
        safe = line if line.isprintable() else escape(line)
        out.append((first if i == 0 else rest) + safe)
    return "\n".join(out)


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour when writing to a terminal and ``NO_COLOR`` is not set."""
    return "NO_COLOR" not in environ and bool(getattr(stream, "isatty", lambda: False)())
