"""structlog configuration: JSON under systemd or in pipes, readable console on a terminal.

``log_format = "auto"`` picks journald (structured fields) when stdout is connected to
the journal and systemd-python is present, JSON lines when stdout is not a terminal,
and coloured console output on a terminal.

A log line that cannot be written (stdout redirected to a full disk, a closed pipe,
journald gone) never stops the daemon: :class:`LogOutput` swallows the error, the daemon reports the
component ``log`` degraded (``aisentinel_degraded``, the systemd STATUS line, ``aisentinel
status``) until a line is written again, and one line says so on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from aisentinel.faults import reason
from aisentinel.textsafe import escape, escape_lines

_OUTPUT: LogOutput | None = None
"""The stream :func:`configure_logging` set up last (see :func:`log_output_failing`)."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


# Multi-line by design (format_exc_info, StackInfoRenderer): escaped line by line.
_MULTI_LINE = frozenset({"exception", "stack"})
_PLAIN = (int, float, bool, type(None))


class _Shown(str):
    """Text the console renderer shows exactly as it is (its ``repr`` is itself)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str.__str__(self)


def _console_value(key: str, value: object) -> object:
    """``value`` as the console shows it, with nothing that can act on a terminal."""
    if isinstance(value, str):
        if value.isprintable() and "\\" not in value:
            return value  # the renderer's own choice (bare, or repr when it has spaces)
        if key == "event":  # shown bare, never repr-ed
            return escape(value)
        if key in _MULTI_LINE:
            return escape_lines(value)
        # repr() escapes every non-printable character and the backslash, quoted:
        # what the renderer shows for a value with spaces, now for every unsafe one.
        return _Shown(repr(value))
    if isinstance(value, _PLAIN):
        return value
    # The renderer would print repr(value); repr escapes the strings inside lists,
    # tuples and dicts, but a custom __repr__ may not: check the text it gives.
    text = repr(value)
    return _Shown(text if text.isprintable() else escape(text))


def escape_for_console(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every key and value made safe for one terminal line.

    Runs just before the console renderer (never before JSON or journald, which keep
    values exact): attacker text in a field (a username with ``ESC [2J``, a
    ``$remote_user`` with a newline, a bidi override) shows as escapes instead of
    acting on the terminal or forging a log line. Safe values are left as they are,
    so ordinary lines look as before.
    """
    return {
        (escape(key) if isinstance(key, str) else key): _console_value(key, value)
        for key, value in event_dict.items()
    }


class LogOutput:
    """The stream log lines are printed to, made unable to stop the daemon.

    A write or flush that fails (``OSError``: no space, a broken pipe, an I/O error;
    ``ValueError``: the stream was closed) is dropped: detection and bans go on without
    that line. :attr:`failing` says why from the first failure until a flush succeeds
    again (space freed, say); the first failure of each such spell writes one line to
    stderr (itself allowed to fail: it is often the same stream). Printing a line is
    writes then one flush, so a line counts as written when its flush succeeds and none
    of its writes failed.
    """

    __slots__ = ("__weakref__", "_lost", "_stream", "failing", "failures")  # weakref: structlog

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lost = False
        """A write failed since the last flush (so that flush succeeding proves nothing)."""
        self.failing: str | None = None
        """Why log lines are being lost now, or ``None``."""
        self.failures = 0
        """Writes and flushes that failed, in all."""

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:
            self._lost = True
            self.lost(exc)
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self.lost(exc)
            return
        if self._lost:
            self._lost = False
        else:
            self.sent()

    def sent(self) -> None:
        """A whole line went out: the output works (again)."""
        self.failing = None

    def lost(self, exc: Exception) -> None:
        """A line was lost to ``exc`` (also told by the journal renderer)."""
        self.failures += 1
        if self.failing is not None:
            return
        why = reason(exc)
        self.failing = f"log lines cannot be written: {why}"
        try:
            sys.stderr.write(
                f"aisentinel: log output failing ({why}); detection and bans go on, "
                "their log lines are lost until it can be written again\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def log_output_failing() -> str | None:
    """Why log lines are being lost now (the daemon reports ``log`` degraded), or ``None``."""
    return None if _OUTPUT is None else _OUTPUT.failing


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
    global _OUTPUT  # noqa: PLW0603 - structlog's configuration is process-wide too
    out = stream if stream is not None else sys.stdout
    chosen = resolve_format(fmt, out)
    output = LogOutput(out)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if chosen == "journal":
        from aisentinel.journal import JournalRenderer  # noqa: PLC0415 - optional

        processors.append(JournalRenderer(on_sent=output.sent, on_lost=output.lost))
    elif chosen == "console":
        processors.append(escape_for_console)
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors.append(structlog.processors.JSONRenderer())
    _OUTPUT = output
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(cast("TextIO", output)),
        cache_logger_on_first_use=False,
    )
    return chosen


def set_level(level: str) -> None:
    """Change the level below which log calls are dropped, live (a reload's
    ``[daemon] log_level``). Loggers are not cached on first use, so every logger,
    those already bound included, filters at ``level`` from its next call."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]))
