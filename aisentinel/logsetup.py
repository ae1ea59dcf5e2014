"""structlog configuration: JSON under systemd or in pipes, readable console on a terminal.

``log_format = "auto"`` picks journald (structured fields) when stdout is connected to
the journal and systemd-python is present, JSON lines when stdout is not a terminal,
and coloured console output on a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def resolve_format(fmt: str, stream: TextIO) -> str:
    """The concrete format for ``auto`` on this stream and environment."""
    if fmt != "auto":
        return fmt
    from aisentinel.journal import journal_available, stderr_is_journal  # noqa: PLC0415

    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd >= 0 and stderr_is_journal(fd=fd):
        # stdout is connected to journald (systemd service): structured fields if we can.
        return "journal" if journal_available() else "json"
    return "console" if stream.isatty() else "json"


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Configure structlog process-wide; returns the format chosen."""
    out = stream if stream is not None else sys.stdout
    chosen = resolve_format(fmt, out)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if chosen == "journal":
        from aisentinel.journal import JournalRenderer  # noqa: PLC0415 - optional

        processors.append(JournalRenderer())
    elif chosen == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors.append(structlog.processors.JSONRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return chosen
