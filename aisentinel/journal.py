"""structlog -> journald with structured fields.

:class:`JournalRenderer` is the last processor of a structlog chain: it turns the event
dict into one journal entry (``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER`` and every
other key as an upper-cased field, e.g. ``client_ip`` -> ``CLIENT_IP``) and sends it with
``systemd.journal.sendv`` (systemd-python), then raises ``structlog.DropEvent`` so the
wrapped logger prints nothing.

``MESSAGE``, the line ``journalctl`` prints and the only field ``journalctl -g`` greps, is
a one-line summary (:func:`summary`): the event, then its fields as ``key=value``, the
ones on-call looks for first (``decision detector=ssh_bruteforce action=ban
target=203.0.113.7 severity=high reason="..."``), each value escaped to terminal-safe text
(:mod:`aisentinel.textsafe`: attacker text cannot start a forged line or act on the
terminal) and cut at :data:`SUMMARY_VALUE_LIMIT` characters, the whole line at
:data:`SUMMARY_LIMIT`. The other fields keep their exact values: filter on them with
``journalctl -u aisentinel DETECTOR=ssh_bruteforce`` or ``TARGET=203.0.113.7``, or read
them all with ``journalctl -o json``.

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

from aisentinel.textsafe import TRUNCATED, escape

__all__ = [
    "JOURNAL_SOCKET",
    "SUMMARY_LIMIT",
    "SUMMARY_VALUE_LIMIT",
    "JournalRenderer",
    "field_name",
    "journal_available",
    "stderr_is_journal",
    "summary",
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

SUMMARY_LIMIT = 1024
"""Most characters of a ``MESSAGE`` (fields that do not fit are counted, not shown)."""
SUMMARY_VALUE_LIMIT = 160
"""Most characters of one value in a ``MESSAGE`` (escaped; the rest marked as cut)."""
_MAX_SUMMARY_ITEMS = SUMMARY_VALUE_LIMIT // 2
"""Most items of a list joined for one value (each takes at least 2 characters)."""
_SUMMARY_FIRST = ("detector", "action", "target", "client", "severity", "reason", "message")
"""The fields a ``MESSAGE`` names first, in this order: what a decision is about."""
_NOT_SUMMARISED = (
    _DROPPED | {"exception", "stack", "evidence", "excerpt", "clients"} | _CALLSITE.keys()
)
"""Left out of MESSAGE, which syslog forwarding and ``systemctl status`` show: besides
the traceback and call site, the log-derived evidence, excerpts and client lists
(prompt spans, request paths whose query may hold a token, raw lines). They stay in
their own fields (EVIDENCE, EXCERPT, CLIENTS)."""
_QUOTED = re.compile(r'[ "=]')
_MARKER_ROOM = 16
"""Characters kept free for the ``\\…[+N fields]`` marker at the end of a full summary."""

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


def _summary_text(value: object) -> str:
    """A value as the summary shows it: containers as ``a,b`` / ``k:v,k:v``, booleans
    in lower case, the rest as :func:`_field_value` gives it (before escaping)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{_summary_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        # At most as many items as could show in one cut value.
        return ",".join(_summary_text(v) for v in list(items)[:_MAX_SUMMARY_ITEMS])
    return _field_value(value)


def _summary_value(value: object) -> str:
    """One ``key=value``'s value: escaped, cut, and double-quoted when it holds a space,
    a quote or ``=`` (or is empty), with ``"`` written ``\\"``."""
    text = escape(_summary_text(value), SUMMARY_VALUE_LIMIT)
    if text and not _QUOTED.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def summary(event_dict: Mapping[str, Any]) -> str:
    """The ``MESSAGE`` of one event: a single terminal-safe line of at most
    :data:`SUMMARY_LIMIT` characters.

    The event (``event``, or ``message`` when there is none), then ``key=value`` for
    each field that has a value: ``detector``, ``action``, ``target``, ``client``,
    ``severity``, ``reason``, ``message`` first, the rest in the order they were
    logged. Tracebacks, the level, timestamp, call site and the log-derived evidence,
    excerpts and client lists are left out (:data:`_NOT_SUMMARISED`: they have their own
    fields). A field that no longer fits is left out and counted at the end
    (``\\…[+2 fields]``).
    """
    has_event = "event" in event_dict
    event = _field_value(event_dict.get("event", event_dict.get("message", "")))
    head = escape(event, SUMMARY_LIMIT // 2)
    first = [key for key in _SUMMARY_FIRST if key in event_dict]
    keys = first + [key for key in event_dict if key not in _SUMMARY_FIRST]
    parts = [head]
    size = len(head)
    left_out = 0
    for key in keys:
        value = event_dict[key]
        if key in _NOT_SUMMARISED or value is None or (key == "message" and not has_event):
            continue
        part = f"{escape(str(key), _MAX_FIELD_NAME)}={_summary_value(value)}"
        if size + 1 + len(part) > SUMMARY_LIMIT - _MARKER_ROOM:
            left_out += 1
            continue
        parts.append(part)
        size += 1 + len(part)
    if left_out:
        parts.append(f"{TRUNCATED}[+{left_out} field{'s' if left_out > 1 else ''}]")
    return " ".join(parts)


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
        level = str(event_dict.get("level", method_name))
        out = [
            # MESSAGE is what ``journalctl`` prints as the line (and what ``-g`` greps):
            # the event and its key fields, one line, nothing that acts on a terminal.
            # The other fields keep their exact values.
            f"MESSAGE={summary(event_dict)}",
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
