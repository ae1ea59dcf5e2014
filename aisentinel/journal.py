"""structlog -> journald with structured fields.

:class:`JournalRenderer` is the last processor of a structlog chain: it turns the event
dict into one journal entry (``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER`` and every
other key as an upper-cased field, e.g. ``client_ip`` -> ``CLIENT_IP``) and sends it with
``systemd.journal.sendv`` (systemd-python), then raises ``structlog.DropEvent`` so the
wrapped logger prints nothing. ``MESSAGE`` is escaped to one terminal-safe line
(:mod:`aisentinel.textsafe`); the other fields keep their exact values. Query the
fields with ``journalctl -u aisentinel CLIENT_IP=203.0.113.7`` or ``journalctl -o json``.

Use it only where :func:`journal_available` is true (systemd-python importable and a
journald socket present); :func:`stderr_is_journal` tells whether systemd connected the
process's stderr to the journal (``JOURNAL_STREAM``), the usual signal to switch from
console rendering to journal fields.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import structlog

from aisentinel.textsafe import escape

__all__ = [
    "JOURNAL_SOCKET",
    "JournalRenderer",
    "field_name",
    "journal_available",
    "stderr_is_journal",
    "syslog_priority",
]

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

SendV = Callable[..., object]
"""``systemd.journal.sendv``: takes ``"FIELD=value"`` strings."""

_PRIORITIES: Mapping[str, int] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "err": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
_DEFAULT_PRIORITY = 6
_RESERVED = frozenset({"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"})
# structlog's CallsiteParameterAdder keys -> journald's source-location fields.
_CALLSITE = {"pathname": "CODE_FILE", "lineno": "CODE_LINE", "func_name": "CODE_FUNC"}
_DROPPED = frozenset({"level", "filename", "exc_info", "event", "timestamp"})
_INVALID_CHARS = re.compile(r"[^A-Z0-9_]")
_MAX_FIELD_NAME = 64

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _import_sendv() -> SendV | None:
    """``systemd.journal.sendv`` when systemd-python is importable, else ``None``."""
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    sendv: SendV = journal.sendv
    return sendv


def journal_available(socket_path: Path = JOURNAL_SOCKET) -> bool:
    """Whether entries can be sent: systemd-python is importable and journald listens."""
    return _import_sendv() is not None and socket_path.is_socket()


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd named in ``JOURNAL_STREAM``.

    ``JOURNAL_STREAM`` is ``<device>:<inode>`` of the stream systemd connected; it is
    inherited by children whose stderr may point elsewhere, hence the comparison.
    """
    env = os.environ if environ is None else environ
    device, sep, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def syslog_priority(level: str) -> int:
    """The syslog priority (0-7) for a structlog level name; unknown names are info (6)."""
    return _PRIORITIES.get(level.lower(), _DEFAULT_PRIORITY)


def field_name(key: str) -> str:
    """A valid journal field name for an event-dict key.

    Upper-cased, characters outside ``A-Z0-9_`` become ``_``, leading underscores are
    dropped (they mark fields only journald may set), a leading digit gets ``F_``, at
    most 64 characters; an empty result becomes ``FIELD``.
    """
    name = _INVALID_CHARS.sub("_", key.upper()).lstrip("_")
    if name[:1].isdigit():
        name = "F_" + name
    return name[:_MAX_FIELD_NAME] or "FIELD"


def _field_value(value: object) -> str:
    """Text for one field: strings as they are, containers as JSON, the rest via str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return json.dumps(items, default=str, sort_keys=True)
    return str(value)


def _exc_info(value: object) -> _ExcInfo | None:
    """Normalise structlog's ``exc_info`` (True, an exception or a tuple)."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if value is True:
        current = sys.exc_info()
        if current[0] is None or current[1] is None:
            return None
        return (current[0], current[1], current[2])
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return (type(value[1]), value[1], value[2])
    return None


class JournalRenderer:
    """Final structlog processor: sends the event to journald and drops it."""

    def __init__(
        self,
        syslog_identifier: str = "aisentinel",
        sendv: SendV | None = None,
        *,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[OSError], None] | None = None,
    ) -> None:
        """Entries carry ``SYSLOG_IDENTIFIER=syslog_identifier``.

        ``sendv`` defaults to ``systemd.journal.sendv``; raises ``RuntimeError`` when
        it is not given and systemd-python is missing. ``on_sent`` is called after each
        entry sent, ``on_lost`` with the error of each entry that could not be (see
        :class:`aisentinel.logsetup.LogOutput`).
        """
        if sendv is None:
            sendv = _import_sendv()
            if sendv is None:
                raise RuntimeError("journal logging needs systemd-python, which is missing")
        self._sendv = sendv
        self._identifier = syslog_identifier
        self._on_sent = on_sent
        self._on_lost = on_lost

    def fields(self, method_name: str, event_dict: Mapping[str, Any]) -> list[str]:
        """The ``FIELD=value`` strings one event becomes (``MESSAGE`` first)."""
        message = event_dict.get("event", event_dict.get("message", ""))
        level = str(event_dict.get("level", method_name))
        out = [
            # MESSAGE is what ``journalctl`` prints as the line: one line, nothing that
            # acts on a terminal. The other fields keep their exact values.
            f"MESSAGE={escape(_field_value(message))}",
            f"PRIORITY={syslog_priority(level)}",
            f"SYSLOG_IDENTIFIER={self._identifier}",
        ]
        if "event" not in event_dict:
            event_dict = {k: v for k, v in event_dict.items() if k != "message"}
        for key, value in event_dict.items():
            if key in _CALLSITE or (key == "filename" and "pathname" not in event_dict):
                out.append(f"{_CALLSITE.get(key, 'CODE_FILE')}={_field_value(value)}")
                continue
            if key in _DROPPED or value is None:
                continue
            name = field_name(key)
            if name in _RESERVED:
                name = "F_" + name
            out.append(f"{name}={_field_value(value)}")
        exc = _exc_info(event_dict.get("exc_info"))
        if exc is not None and "exception" not in event_dict:
            out.append("EXCEPTION=" + "".join(traceback.format_exception(*exc)).rstrip("\n"))
        return out

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> NoReturn:
        """Send ``event_dict`` as one journal entry, then raise ``structlog.DropEvent``.

        A failed send (journald gone) is swallowed: logging never takes the daemon down;
        ``on_lost`` hears of it.
        """
        try:
            self._sendv(*self.fields(method_name, event_dict))
        except OSError as exc:
            if self._on_lost is not None:
                self._on_lost(exc)
        else:
            if self._on_sent is not None:
                self._on_sent()
        raise structlog.DropEvent
