"""The ``journald`` source: sshd (or other) entries from the systemd journal.

Needs the optional ``systemd-python`` package (``pip install aisentinel[systemd]``).
Without it the source logs one warning at ``start()``, reports state ``error`` (not up)
and does nothing else. It is up (``following``) only while the journal is open; a cursor
that cannot be saved makes it ``degraded`` (logged once, counted in
``stats.position_errors``). An open journal can still show nothing: sd-journal opens a
directory with no journal file, or none this user may read (not in group
``systemd-journal`` or ``adm``), without an error and then reads no entry. So the source
looks at the files (:func:`journal_files_problem`) when it opens the journal and, while
it reads nothing, every ``BLIND_CHECK_INTERVAL`` seconds: with no readable file it is
``error`` (not up), with the reason, logged once; the first entry read, or a readable
file, makes it up again. At those looks it also compares the journal files with those
there when the reader opened, and reopens the reader at its cursor when they differ
(:meth:`JournaldSource._files_changed`): sd-journal does not watch a journal directory
created after it opened, such as ``/var/log/journal`` when the persistent journal is
enabled while the daemon runs.

It is an event source: it names no parser and hands on
:class:`~aisentinel.events.EventBatch` values of :class:`~aisentinel.events.SshEvent`
made straight from each entry's fields (:func:`entry_event`), with the sshd parser's
message matcher (:func:`aisentinel.parsers.sshd.message_event`): time from
``__REALTIME_TIMESTAMP``, pid from ``_PID`` (else ``SYSLOG_PID``), the message from
``MESSAGE`` (newlines inside it become spaces). An entry counts as sshd's when its
``SYSLOG_IDENTIFIER`` (else ``_COMM``) starts with ``sshd`` or its ``_SYSTEMD_UNIT`` is
an ssh unit (``ssh.service``, ``sshd@...``), and journald's own ``_UID`` field (which the
logging process cannot set) is one of ``sshd_uids`` (root): any local user can write an
entry with ``SYSLOG_IDENTIFIER=sshd`` (``logger -t sshd "Failed password for root from
ADDR ..."``) or run a binary named ``sshd``, and would get ADDR banned, whereas sshd
logs every authentication message from its root monitor process (the unprivileged
pre-authentication child forwards its messages to it). Other entries, and sshd
messages that are not about authentication, are counted as unparsed. ``matches`` are
OR-ed, one ``FIELD=value`` per item: fail2ban's ``journalmatch`` syntax in one item
(``_SYSTEMD_UNIT=sshd.service + _COMM=sshd``), which sd-journal would take as one value
matching nothing, is refused. Each batch tells how many of its entries are not sshd's
program's (nor the kernel's with ``kernel_xid``) as ``unrecognised``, judged as format
``journald`` (:attr:`~aisentinel.events.EventBatch.judged`): a source whose entries are
nearly all another program's is blind (``aisentinel_source_blind``). That is judged by
the program alone (:func:`_is_sshd_program`), not by ``_UID``: sshd's
post-authentication child logs as the user who logged in (a disconnect, each failed
``ssh -L`` forward), and ``logger -t sshd`` as any user; both are sshd's entries that
give no event, and neither makes the source blind. :func:`matches_problem` tells
``check-config`` of matches that can select no entry the source reads. Handling one
entry that raises (a field that cannot be read) skips it, counted in ``stats.errors``
and logged once per reason: never the reopen before its batch, which would meet it again
for ever.

The source also reads journald's own notices that it dropped a unit's entries under its
rate limit (``MESSAGE_ID`` :data:`SUPPRESSED_ID` and ``_TRANSPORT=driver``, which only
journald sets): "Suppressed N messages from UNIT", ``N_DROPPED=N``. When UNIT is an sshd
unit (and the matches may select sshd's entries, :func:`may_read_sshd`) or one that
``matches`` names by ``_SYSTEMD_UNIT``, the N entries are counted
(``aisentinel_source_entries_suppressed_total``), the notice counts as a gap
(``stats.gaps``), and a warning names the unit and N; other notices are unparsed.

With ``kernel_xid = true`` the source also reads the kernel's entries
(``_TRANSPORT=kernel`` is added to the matches) and turns each ``NVRM: Xid`` line into
an :class:`~aisentinel.events.XidEvent` (:func:`aisentinel.gpu.xid.parse_xid_line`),
counted in ``aisentinel_gpu_kernel_xid_errors_total{pci_bus_id,xid}`` with its
last-seen time; other kernel entries are unparsed.

The cursor of the last entry processed is saved (atomically) in
``state_dir/journald-<name>.cursor`` at most every ``SAVE_INTERVAL`` seconds and at
``stop()``; a restart seeks to it and skips that entry, so nothing is replayed or missed
(entries are only duplicated after a crash between their processing and the next save).
A cursor whose entry is gone is placed by the entry's sequence number or its boot's
monotonic time; when neither is in the journal any more (its files vacuumed, a volatile
journal after a reboot), sd-journal falls back to wall-clock time and would skip every
entry older than the cursor's: the source logs ``saved cursor not found in the journal``,
counts it (``aisentinel_source_cursor_lost_total``) and reads from the journal's head.
When the journal then holds no matching entry, none can have been skipped: nothing is
counted, and the source goes on from the journal's end as a first start does (one that
shows no entry at all leaves the cursor file as it is). In a
directory holding several machines' journals (``systemd-journal-remote``), only the files
of the cursor's own seqnum id are placed by sequence number: another machine's files are
placed by wall-clock time, so its entries written before the saved cursor's time (its
clock behind) are skipped. A cursor file sd-journal cannot parse (or not UTF-8) is logged,
moved aside to ``<name>.cursor.corrupt`` and counted the same way; the journal is then
read as ``start_at`` says. A first start (no cursor) saves a cursor at once (see
:meth:`JournaldSource._first_position`), so a restart resumes there even when no entry
came during the first run. While nothing matches, that cursor is not moved on (a
journal-end cursor taken while running could pass a matching entry not yet handed on);
a restart finds it by sequence number even once its entry is vacuumed.
With :attr:`~.base.Source.acks` (the daemon) the cursor is taken between two batches and
saved once they are acknowledged (:class:`~.base.Checkpoints`); without, once ``emit``
returned.

Entries are handed on in batches of at most ``batch_entries`` (512, as the file
sources' ``batch_lines``). After every ``reopen_entries`` entries read (5,000 unless
set), the reader is closed and opened again at its cursor. sd-journal reads the journal
files through memory maps whose pages stay in the process's resident set for as long as the reader
is open, so VmRSS grew with every entry read: 213 MB after the 200,000 entries of
``bench/journal_rss.py``'s storm profile (168 MB of it journal file pages), 71 MB with
the reopens (fail2ban-server's systemd backend: 189 MB). A reopen opens every journal
file again: about 1 ms with 20 files, but 0.1-0.7 s with 2,000 (a long-kept persistent
journal; seconds when they are not in the page cache), against about 40 ms to read the
5,000 entries between two reopens: on such a host a storm is read several times slower,
and a higher ``reopen_entries`` (or a smaller journal, ``SystemMaxFiles=``) helps.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, field_validator

from aisentinel.atomicfile import atomic_write, read_state
from aisentinel.clock import Clock
from aisentinel.configtypes import Interval, absolute_path
from aisentinel.events import Event, EventBatch, SshEvent, XidEvent
from aisentinel.gpu.xid import parse_xid_line
from aisentinel.metrics import counter
from aisentinel.parsers.sshd import message_event
from aisentinel.parsers.timestamps import MAX_TS, MIN_TS
from aisentinel.sources.base import (
    REGISTRY,
    Checkpoints,
    Emit,
    Source,
    SourceConfigBase,
    merge_counts,
)

_UNLOADED: Any = object()
_journal: Any = _UNLOADED
"""``systemd.journal``, imported on first need (about 1 MB resident, and most daemons
read no journal); None without systemd-python."""


def _systemd_journal() -> Any:
    """``systemd.journal`` (imported on the first call), or None when it is missing."""
    global _journal  # noqa: PLW0603 - the one lazy import
    if _journal is _UNLOADED:
        try:
            from systemd import journal  # noqa: PLC0415
        except ImportError:  # optional dependency
            journal = None
        _journal = journal
    return _journal


_log = structlog.get_logger(__name__)

SAVE_INTERVAL = 1.0
"""The cursor is saved at most this often (seconds) while running."""

REOPEN_ENTRIES = 5_000
"""Default ``reopen_entries``: entries read between two reopens of the reader, which
drop the journal pages sd-journal has mapped (see the module doc). Reading 200,000
entries (a 67 MB journal) through readers of 1,000 / 5,000 / 20,000 entries each, or
through one: at most 7 / 14 / 32 / 84 MB of journal pages resident, in 2.23 / 1.82 /
1.78 / 1.77 s."""

MAX_XID_SERIES = 256
"""Most (PCI bus id, Xid code) pairs exported; later pairs count under ``xid="other"``."""

JOURNAL_DIRS = (Path("/var/log/journal"), Path("/run/log/journal"))
"""Where the systemd journal lives (persistent, volatile)."""

BLIND_CHECK_INTERVAL = 10.0
"""Seconds (of the source's clock) between two looks at the journal files while the
source reads nothing (see :func:`journal_files_problem`)."""


def _readable(path: Path) -> bool:
    return os.access(path, os.R_OK)


def _journal_files(directories: Sequence[Path], *, system: bool) -> list[Path]:
    """The journal files in ``directories`` (see :func:`journal_files_problem`)."""
    files: list[Path] = []
    for directory in directories:
        for pattern in ("*.journal", "*.journal~", "*/*.journal", "*/*.journal~"):
            try:
                files.extend(directory.glob(pattern))
            except OSError:
                continue
    if system:
        files = [f for f in files if f.name.startswith("system")]
    return files


def journal_files_problem(
    directories: Sequence[Path],
    *,
    system: bool,
    readable: Callable[[Path], bool] = _readable,
) -> str | None:
    """Why a journal reader of ``directories`` would see no entry, from the journal
    files there (``*.journal`` and ``*.journal~``, also one directory down, where
    journald keeps them per machine id); None when one of them can be read.

    ``system``: the reader reads the system journal (no ``directory`` configured), whose
    files are named ``system*``: users' own journals, which sshd never writes to, do
    not count. ``readable`` is ``os.access(path, R_OK)``; root passes it for any file.
    """
    files = _journal_files(directories, system=system)
    where = ", ".join(str(d) for d in directories)
    kind = "system journal files" if system else "journal files"
    if not files:
        return f"no {kind} in {where}: is systemd-journald running and keeping logs?"
    if any(readable(f) for f in files):
        return None
    return (
        f"none of the {len(files)} {kind} in {where} is readable by this user "
        f"(uid {os.getuid()}): add it to group systemd-journal or adm"
    )


_FIELDS = (
    "MESSAGE",
    "SYSLOG_IDENTIFIER",
    "_COMM",
    "_SYSTEMD_UNIT",
    "_UID",
    "_PID",
    "SYSLOG_PID",
    "_TRANSPORT",
)
"""The fields :func:`entry_event` and :func:`kernel_xid_event` read; journald's own
entries (``_TRANSPORT=driver``) also ``MESSAGE_ID`` and ``N_DROPPED``."""

SUPPRESSED_ID = "fe6faa94e7774663a0da52717891d8ef"
"""``MESSAGE_ID`` of journald's "Suppressed N messages from UNIT" (``N_DROPPED=N``):
entries of UNIT it dropped under its rate limit (``LogRateLimitBurst=``)."""

_SUPPRESSED = re.compile(r"Suppressed (\S+) messages from ([\w@.:\\-]+)")
_COUNT = re.compile(r"[0-9]{1,10}")
"""A count journald writes (``N_DROPPED``, the N of its message): ASCII digits, at most
ten (a 32-bit count has ten)."""


def _count(text: str | None) -> int | None:
    """The number ``text`` holds when it is one :data:`_COUNT` (not ``²``, ``-5`` nor a
    5,000-digit number, which ``int()`` refuses or turns into a count no rate limit
    drops); else None."""
    if text is None or not _COUNT.fullmatch(text):
        return None
    return int(text)


SSH_UNITS = ("ssh.", "sshd.", "ssh@", "sshd@")
"""How the systemd units of sshd start (``ssh.service``, ``sshd@...``)."""

ROOT = frozenset({"0"})
"""The default ``_UID`` values (as text) whose sshd entries count: root's."""

_MATCH = re.compile(r"^[A-Z0-9_]+=.*$", re.DOTALL)
_SEVERAL = re.compile(
    r"\s\+\s+[A-Z0-9_]+="
    r"|^(?:_SYSTEMD_(?:USER_)?UNIT|UNIT|USER_UNIT|_SYSTEMD_SLICE|_TRANSPORT|_UID|_GID|_PID"
    r"|SYSLOG_PID|PRIORITY|SYSLOG_FACILITY|MESSAGE_ID|_BOOT_ID|_MACHINE_ID)=\S*\s+[A-Z0-9_]+="
)
"""fail2ban's ``journalmatch`` syntax in one match, which sd-journal would take as one
value that matches nothing: `` + `` before another ``FIELD=`` (alternatives), or, after a
field whose values hold no whitespace (a unit, a number, an id), a space before another
``FIELD=`` (fields that must all match). Other values may hold spaces, ``+`` and
``NAME=`` (``_CMDLINE=/usr/bin/env LANG=C.UTF-8 /usr/sbin/sshd -D``, ``MESSAGE=a + b``)."""


def journald_available() -> bool:
    """True when ``systemd-python`` is importable."""
    return _systemd_journal() is not None


def journald_problem() -> str | None:
    """Why the journal cannot be read on this host, in words; None when it can (the
    library imports and a system journal file is readable)."""
    if _systemd_journal() is None:
        return "systemd-python is not installed"
    if not any(d.is_dir() for d in JOURNAL_DIRS):
        return "no journal directory (" + ", ".join(str(d) for d in JOURNAL_DIRS) + ")"
    return journal_files_problem(JOURNAL_DIRS, system=True)


class JournaldSourceConfig(SourceConfigBase):
    """``[[sources]]`` with ``type = "journald"``."""

    type: Literal["journald"]
    matches: list[str] = Field(
        default_factory=lambda: [
            "_COMM=sshd",
            "SYSLOG_IDENTIFIER=sshd",
            "_COMM=sshd-session",  # OpenSSH >= 9.8 logs auth from a per-session binary
            "SYSLOG_IDENTIFIER=sshd-session",
        ],
        min_length=1,
    )
    start_at: Literal["end", "beginning"] = "end"
    directory: str | None = None
    """A journal directory to read instead of the system journal; an absolute path."""
    batch_entries: int = Field(default=512, ge=1, le=65536)
    """Entries handed on in one batch at most (as ``batch_lines`` of a file source: a
    batch's events sit in memory among the state they leave behind)."""
    reopen_entries: int = Field(default=REOPEN_ENTRIES, ge=100, le=10_000_000)
    """Entries read between two reopens of the reader at its cursor, 100-10,000,000.
    Lower keeps fewer journal pages resident (RSS) at a little more CPU per entry."""
    poll_interval: Interval = 1.0
    """Longest wait between journal checks, and the retry delay after a failure; 10ms-1h."""
    kernel_xid: bool = False
    """Also read kernel entries and hand on GPU Xid errors (``NVRM: Xid`` lines)."""
    sshd_uids: list[Annotated[int, Field(ge=0, le=4_294_967_294)]] = Field(
        default_factory=lambda: [0], min_length=1
    )
    """The users (journald's trusted ``_UID``) whose sshd entries count; root unless set.
    A security boundary: any process of a uid listed can log ``Failed password ... from
    ADDR`` as sshd and get ADDR banned. Add a uid only for an sshd whose monitor really
    runs as it (a rootless container's), never a login user's: sshd's post-auth child
    logs as the user, and its entries are read (not blind) without being trusted."""

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # "" or "journal" would depend on where the daemon started (and "" reads nothing)
        return absolute_path(value)  # type: ignore[no-any-return]

    @field_validator("matches")
    @classmethod
    def _match_form(cls, value: list[str]) -> list[str]:
        for match in value:
            if not _MATCH.match(match) or match.startswith("__"):
                raise ValueError(
                    f"journal match {match!r} must be FIELD=value with an upper-case field name"
                )
            if _SEVERAL.search(match):
                raise ValueError(
                    f"journal match {match!r} holds several matches (fail2ban's journalmatch "
                    "syntax: ' + ' between alternatives, a space between fields), which the "
                    "journal would read as one value that matches nothing: give one "
                    "FIELD=value per list item; the items are OR-ed"
                )
        return value


_SSHD_NAMED_BY: dict[str, Callable[[str], bool]] = {
    "SYSLOG_IDENTIFIER": lambda v: v.startswith("sshd"),
    "_COMM": lambda v: v.startswith("sshd"),
    "_EXE": lambda v: v.rpartition("/")[2].startswith("sshd"),
    "_SYSTEMD_UNIT": lambda v: v.startswith(SSH_UNITS),
    "UNIT": lambda v: v.startswith(SSH_UNITS),
    "_SYSTEMD_USER_UNIT": lambda _: False,
    "CONTAINER_NAME": lambda _: False,
    "CONTAINER_ID": lambda _: False,
    "CONTAINER_ID_FULL": lambda _: False,
    "CONTAINER_TAG": lambda _: False,
    "IMAGE_NAME": lambda _: False,
    "_TRANSPORT": lambda v: v not in ("kernel", "driver", "audit"),
}
"""Fields that name the program an entry is from, and whether a match of one with a
value may select entries this source reads as sshd's (:func:`_is_sshd`): a container's
entries (docker's journald log driver) come from ``dockerd``, never as sshd's. A match
on any other field (``_UID``, ``PRIORITY``, ``SYSLOG_FACILITY``) may select sshd's."""


def may_read_sshd(config: JournaldSourceConfig) -> bool:
    """Whether one of the source's ``matches`` may select entries it reads as sshd's."""
    for match in config.matches:
        field_name, _, value = match.partition("=")
        named = _SSHD_NAMED_BY.get(field_name)
        if named is None or named(value):
            return True
    return False


def matches_problem(config: JournaldSourceConfig) -> str | None:
    """Why the source's ``matches`` select no entry it can read (none may be sshd's, and
    no ``kernel_xid``), for ``check-config`` and the start; None when one may."""
    if config.kernel_xid or may_read_sshd(config):
        return None
    return (
        f"journald source {config.name!r}, key matches ({', '.join(config.matches)}): "
        "selects no entry the source can read, so it reads and counts them unparsed and "
        "sees nothing: a journald source reads sshd's entries only (and the kernel's GPU "
        "Xid lines with kernel_xid = true); nginx must log to a file read by a file source "
        "(docs/nginx-log-format.md), and sshd in a container to a file (or to the host's "
        "journal as sshd)"
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return _text(value[0]) if value else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _cursor_fields(cursor: object) -> dict[str, str]:
    """The fields of a journal cursor (``s=<seqnum id>;i=<seqnum>;b=<boot id>;m=<monotonic>;
    t=<realtime>;x=<hash>``, numbers in hex); empty for anything else."""
    text = _text(cursor) or ""
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def _later(a: dict[str, str], b: dict[str, str], ident: str, number: str) -> bool:
    """Whether cursor fields ``a`` are past ``b`` on the counter ``number`` of the same
    ``ident`` (a sequence number of one seqnum id, a monotonic time of one boot)."""
    if not a.get(ident) or a.get(ident) != b.get(ident):
        return False
    try:
        return int(a[number], 16) > int(b[number], 16)
    except (KeyError, ValueError):
        return False


def _same_entry(found: object, saved: str) -> bool:
    """Whether cursor ``found`` names the entry of cursor ``saved`` copied to another
    journal file: same boot, monotonic and wall-clock time and hash of its fields, under
    another seqnum id (journald's flush of the volatile journal to ``/var/log/journal``
    may number the copies anew; sd-journal's test_cursor then says they differ)."""
    a, b = _cursor_fields(found), _cursor_fields(saved)
    keys = ("b", "m", "t", "x")
    return all(a.get(k) for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def _follows(found: object, saved: str) -> bool:
    """Whether the entry at cursor ``found`` comes after the one at cursor ``saved`` by a
    measure that orders entries for sure: a later sequence number of the same seqnum id,
    or a later monotonic time of the same boot. sd-journal seeks a cursor whose entry is
    gone by those, and by wall-clock time only when neither applies: such an entry may
    have older entries beside it that the seek skipped."""
    a, b = _cursor_fields(found), _cursor_fields(saved)
    return _later(a, b, "s", "i") or _later(a, b, "b", "m")


def _is_sshd_program(entry: Mapping[str, Any]) -> bool:
    """Whether the entry is from sshd's program (``SYSLOG_IDENTIFIER``, else ``_COMM``,
    or its systemd unit), whoever runs it: what a journald source can read. sshd's
    post-authentication child runs as the user who logged in (``_UID=1000``:
    "Received disconnect", "error: connect_to localhost port 8888: failed." for each
    forward to a stopped service), and a user can write an entry named sshd (``logger
    -t sshd``): recognised, never an event (:func:`_is_sshd`)."""
    ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM")) or ""
    if ident.startswith("sshd"):
        return True
    unit = _text(entry.get("_SYSTEMD_UNIT")) or ""
    return unit.startswith(SSH_UNITS)


def _is_sshd(entry: Mapping[str, Any], uids: Container[str] = ROOT) -> bool:
    """Whether the entry was logged by sshd (:func:`_is_sshd_program`) running as one
    of ``uids`` (journald's ``_UID``, as text): one whose messages may be events."""
    return _text(entry.get("_UID")) in uids and _is_sshd_program(entry)


def kernel_xid_event(entry: Mapping[str, Any]) -> XidEvent | None:
    """The Xid error of a kernel journal entry (``_TRANSPORT=kernel``), or ``None``."""
    if _text(entry.get("_TRANSPORT")) != "kernel":
        return None
    message = _text(entry.get("MESSAGE"))
    if not message or "NVRM: Xid" not in message:
        return None
    try:
        ts = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        return None
    if not MIN_TS <= ts < MAX_TS:
        return None
    return parse_xid_line(message, ts)


def entry_event(
    entry: Mapping[str, Any], source: str, uids: Container[str] = ROOT
) -> SshEvent | None:
    """The sshd authentication event of one journal entry, or ``None``.

    ``__REALTIME_TIMESTAMP`` is in microseconds (an ``int``, as the reader converts it);
    an entry from another program or another user than ``uids`` (``_UID`` as text),
    without a sane time, or whose message is not about authentication gives ``None``.
    """
    if not _is_sshd(entry, uids):
        return None
    message = _text(entry.get("MESSAGE"))
    if not message:
        return None
    if "\n" in message or "\r" in message:
        message = message.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    try:
        ts = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        return None
    if not MIN_TS <= ts < MAX_TS:
        return None
    pid_text = _text(entry.get("_PID")) or _text(entry.get("SYSLOG_PID")) or ""
    pid = int(pid_text) if pid_text.isdigit() else None
    return message_event(message, ts, source, pid)


class JournaldSource(Source):
    """Reads matching journal entries in a thread; see the module docstring."""

    config: JournaldSourceConfig

    def __init__(self, config: JournaldSourceConfig, *, clock: Clock, state_dir: Path) -> None:
        super().__init__(config, clock=clock, state_dir=state_dir)
        self.config = config
        self.cursor_path = state_dir / f"journald-{config.name}.cursor"
        self._cursor: str | None = None
        self._saved_cursor: str | None = None
        self._checkpoints: Checkpoints[str] = Checkpoints()
        self._next_save = 0.0
        self._stopping = threading.Event()
        self._tried = threading.Event()
        self._last_failure = ""
        self._entry_error = ""
        """The reason the last entry that could not be handled failed (logged once)."""
        self._pending: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._disabled = False
        self._cursor_fault = ""
        self._xids: dict[tuple[str, str], list[float]] = {}  # (bus, xid) -> [count, last ts]
        self._reads_sshd = may_read_sshd(config)
        """Whether the matches may select sshd's entries: only then do journald's notices
        of sshd's units (``ssh.service``) tell of entries this source lost."""
        self._units = frozenset(
            m.partition("=")[2] for m in config.matches if m.startswith("_SYSTEMD_UNIT=")
        )
        """Units the matches name: journald's rate-limit notices about them count."""
        self.entries_suppressed = 0
        """Entries journald dropped under its rate limit from a unit this source reads."""
        self._uids = frozenset(str(uid) for uid in config.sshd_uids)
        """``sshd_uids`` as text, as :func:`entry_event` compares them."""
        self.reopens = 0
        """Times the reader was reopened at its cursor after ``reopen_entries`` entries."""
        self._blind: str | None = None
        """Why the open journal shows nothing (no readable journal file), or None."""
        self._read_any = False
        """Entries were read (not ``stats.lines_read``: a reload carries that over)."""
        self._next_blind_check = 0.0
        self._files: frozenset[Path] = frozenset()
        """The journal files there when the reader opened (see :meth:`_files_changed`)."""
        self.file_reopens = 0
        """Times the reader was reopened because the journal files changed."""
        self.cursors_lost = 0
        """Times the saved cursor was not found in the journal (read from its head)."""
        self._lost_cursor: str | None = None
        self._from_head = False
        """A first start found no matching entry and sought the head: a reopen with no
        cursor yet (no entry read) seeks it again, not the tail."""

    def start(self, emit: Emit) -> None:
        """Start the reader thread; without systemd-python, warn once and stay down."""
        if self._thread is not None or self._disabled:
            raise RuntimeError(f"journald source {self.name!r} is already started")
        if _systemd_journal() is None:
            self._disabled = True
            self.stats.set_state("error", "systemd-python is not installed")
            _log.warning(
                f"journald source {self.name} disabled: systemd-python not installed "
                "(pip install aisentinel[systemd])",
                source=self.name,
            )
            return
        self._thread = threading.Thread(
            target=self._run, args=(emit,), name=f"aisentinel-source-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and save the cursor."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout=5.0)
        if thread.is_alive():
            # It saves when it ends; a cursor taken here could pass entries not handed on.
            _log.warning("journald reader did not stop in time", source=self.name)
        else:
            self._await_acks()
            self._save_settled()
        self._thread = None

    def request_stop(self) -> None:
        """Make the reader stop after the batch it is handing on."""
        self._stopping.set()

    def ready(self) -> bool:
        """True once opening the journal was tried (retries follow), or when disabled."""
        return self._disabled or self._tried.is_set()

    # ------------------------------------------------------------------ thread

    def _run(self, emit: Emit) -> None:
        wait = min(self.config.poll_interval, 0.5)
        while not self._stopping.is_set():
            try:
                reader = self._open()
            except Exception as exc:  # noqa: BLE001 - never raise out of the thread; retry
                self._fail("cannot open the journal", exc)
                self._tried.set()
                self.clock.wait(self._stopping, self.config.poll_interval)
                continue
            try:
                self._follow(reader, emit, wait)
            except Exception as exc:  # noqa: BLE001 - reopen and go on from the cursor
                self._fail("journal read failed", exc)
                self.clock.wait(self._stopping, self.config.poll_interval)
            finally:
                reader.close()
        self._save(force=True)
        self.stats.set_state("stopped", "stopped")

    def _reader(self, *, matched: bool = True) -> Any:
        """A new reader of ``directory`` (else the system journal), with the source's
        matches unless not ``matched``."""
        journal = _systemd_journal()
        assert journal is not None  # noqa: S101 - start() checked
        if self.config.directory is not None:
            reader = journal.Reader(path=self.config.directory)
        else:
            reader = journal.Reader()
        if not matched:
            return reader
        matches = list(self.config.matches)
        if self.config.kernel_xid and "_TRANSPORT=kernel" not in matches:
            matches.append("_TRANSPORT=kernel")
        for match in matches:
            reader.add_match(match)
            reader.add_disjunction()
        # journald's own notices of entries it dropped (both fields: an AND; _TRANSPORT is
        # set by journald, so no other process can write one)
        reader.add_match(f"MESSAGE_ID={SUPPRESSED_ID}")
        reader.add_match("_TRANSPORT=driver")
        reader.add_disjunction()
        return reader

    def _open(self) -> Any:
        dirs, system = self._journal_dirs()
        self._files = frozenset(_journal_files(dirs, system=system))  # before the reader
        reader = self._reader()
        try:
            self._position(reader)
        except BaseException:
            reader.close()
            raise
        self._last_failure = ""
        self._next_blind_check = 0.0
        self._check_blind()  # before _tried: ready() then reports the state it found
        self._set_open_state()
        self._tried.set()
        return reader

    def _set_open_state(self) -> None:
        if self._blind is not None:
            self.stats.set_state("error", self._blind)
        elif self._cursor_fault:
            self.stats.set_state("degraded", self._cursor_fault)
        else:
            self.stats.set_state("following", "the journal is open")

    def _check_blind(self) -> None:
        """Look at the journal files (at most every ``BLIND_CHECK_INTERVAL``): set or
        clear :attr:`_blind`, logging the change. Once entries were read the journal is
        known to be readable: the reopens every ``reopen_entries`` do not look again."""
        if self._read_any and self._blind is None:
            return
        now = self.clock.monotonic()
        if now < self._next_blind_check:
            return
        self._next_blind_check = now + BLIND_CHECK_INTERVAL
        dirs, system = self._journal_dirs()
        self._seen(journal_files_problem(dirs, system=system))

    def _files_changed(self) -> bool:
        """While the reader reads nothing, every ``BLIND_CHECK_INTERVAL``: whether the
                journal files differ from those there when it opened. sd-journal watches only
                the directories that existed then: a persistent journal enabled while the daemon
                runs (journald moves the files from ``/run/log/journal`` to a new
                ``/var/log/journal``) would leave the reader on deleted files, reading nothing
                for good. The caller reopens the reader at its cursor (every journal file opened
        again: 0.1-0.7 s with 2,000 files, see the module doc). Listing the files costs about
        10-20 ms with 2,000, once per ``BLIND_CHECK_INTERVAL`` while idle. While the
                source shows nothing (:attr:`_blind`), or read nothing yet, this also looks at
                the files as :meth:`_check_blind` does."""
        now = self.clock.monotonic()
        if now < self._next_blind_check:
            return False
        self._next_blind_check = now + BLIND_CHECK_INTERVAL
        dirs, system = self._journal_dirs()
        files = frozenset(_journal_files(dirs, system=system))
        if not self._read_any or self._blind is not None:
            self._seen(journal_files_problem(dirs, system=system))
        if files == self._files:
            return False
        _log.info(
            "journal files changed since the reader opened; reopening it at its cursor",
            source=self.name,
            added=len(files - self._files),
            removed=len(self._files - files),
        )
        self.file_reopens += 1
        return True

    def _seen(self, problem: str | None) -> None:
        """Record whether the journal shows nothing (``problem``) or can be read (None)."""
        if problem == self._blind:
            return
        was, self._blind = self._blind, problem
        if problem is None:
            _log.info("journal readable; the source reads it again", source=self.name)
            if self.stats.last_error == was:  # over: status shows no old reason
                self.stats.last_error = ""
        else:
            self.stats.errors += 1
            self.stats.last_error = problem
            _log.warning("journal source reads nothing", source=self.name, reason=problem)
        self._set_open_state()

    def _position(self, reader: Any) -> None:
        cursor = self._cursor or self._load_cursor()
        if cursor is not None:
            try:
                reader.seek_cursor(cursor)
            except ValueError as exc:  # python-systemd's "Invalid cursor"
                self._bad_cursor(cursor, exc)
                cursor = None
        if cursor is not None:
            entry = self._next_entry(reader)
            if entry is not None and (
                reader.test_cursor(cursor) or _same_entry(entry.get("__CURSOR"), cursor)
            ):
                self._cursor = cursor  # the saved entry (or its copy): reading goes on after it
                return
            if entry is not None and _follows(entry.get("__CURSOR"), cursor):
                self._pending = entry  # the saved entry was vacuumed: this one is next
                self._cursor = cursor
                return
            if entry is None and self._nothing_after(reader, cursor):
                self._cursor = cursor  # nothing new since: reading goes on from here
                return
            if self._seek_ordered(cursor):
                # Its entry is there (one that does not match: the end of the journal
                # taken at a first start, see _first_position), or the journal's next
                # entry follows it by sequence number or monotonic time (it was
                # vacuumed): the seek was exact in the files of the cursor's own seqnum
                # id. Files of other ids (other machines' in a journal-remote directory)
                # are placed by wall-clock time, as they always are.
                self._cursor = cursor
                self._pending = entry
                if entry is None:
                    reader.seek_cursor(cursor)  # nothing new since: go on from there
                return
            if entry is None:
                reader.seek_tail()
                if not reader._previous():  # no matching entry in the journal
                    self._nothing_skipped(cursor, reader)
                    return
            self._cursor_lost(cursor)
            reader.seek_head()
        elif self.config.start_at == "beginning" or self._from_head:
            reader.seek_head()
        else:
            self._first_position(reader)

    def _first_position(self, reader: Any) -> None:
        """``start_at = "end"`` with no cursor: after the last matching entry, whose cursor
        is taken and saved at once, so a restart resumes there even if no entry came
        meanwhile (entries written while the daemon is down are read then).

        With no matching entry the reader goes to the journal's head (sd-journal, sought
        to its tail, would hand on only the last of the entries that come next), and the
        cursor saved is that of the journal's last entry, matching or not: a restart
        seeks to it and reads every matching entry written since. A journal that shows
        no entry at all has no cursor to save; its files that cannot be read (the
        source is blind) are history, so the reader stays at their tail."""
        reader.seek_tail()
        if reader._previous():
            self._cursor = str(reader._get_cursor())  # the last matching entry
            self._save(force=True)
            return
        end = self._journal_end()
        if end is None and self._unreadable_files():
            reader.seek_tail()
            return
        self._from_journal_end(reader, end)

    def _from_journal_end(self, reader: Any, end: str | None) -> None:
        """No matching entry in the journal: the reader goes to its head (which yields
        only new ones), and ``end``, the cursor of the journal's last entry (None when it
        shows none), is taken and saved."""
        self._cursor = end
        reader.seek_head()
        self._from_head = True
        if end is not None:
            self._save(force=True)

    def _journal_end(self) -> str | None:
        """The cursor of the journal's last entry, matching or not; None when it shows none."""
        reader = self._reader(matched=False)
        try:
            reader.seek_tail()
            return str(reader._get_cursor()) if reader._previous() else None
        finally:
            reader.close()

    def _seek_ordered(self, cursor: str) -> bool:
        """Whether a reader of every entry, sought to ``cursor``, lands on its entry (in
        the journal, matching or not) or on one that :func:`_follows` it (its entry was
        vacuumed; sd-journal placed the reader by sequence number or monotonic time,
        not by wall-clock time)."""
        reader = self._reader(matched=False)
        try:
            reader.seek_cursor(cursor)
            if not reader._next():
                return False
            found = reader._get_cursor()
            return (
                bool(reader.test_cursor(cursor))
                or _same_entry(found, cursor)
                or _follows(found, cursor)
            )
        finally:
            reader.close()

    def _unreadable_files(self) -> bool:
        """Whether the journal has files and none of them can be read by this user."""
        dirs, system = self._journal_dirs()
        files = _journal_files(dirs, system=system)
        return bool(files) and not any(_readable(f) for f in files)

    def _journal_dirs(self) -> tuple[tuple[Path, ...], bool]:
        """Where the journal files are, and whether it is the system journal."""
        directory = self.config.directory
        if directory is None:
            return JOURNAL_DIRS, True
        return (Path(directory),), False

    @staticmethod
    def _nothing_after(reader: Any, cursor: str) -> bool:
        """After a seek to ``cursor`` found no entry: whether the last matching entry
        before that place is the cursor's own or one before it by sequence number or its
        boot's monotonic time. Then the cursor is in the journal and nothing came since
        (its entry may no longer match: ``kernel_xid`` turned off, other units); else
        sd-journal placed it by wall-clock time, past entries it skipped (lost)."""
        if not reader._previous():
            return False
        found = reader._get_cursor()
        return (
            bool(reader.test_cursor(cursor))
            or _same_entry(found, cursor)
            or _follows(cursor, found)
        )

    def _nothing_skipped(self, cursor: str, reader: Any) -> None:
        """The saved cursor is lost (see :meth:`_cursor_lost`), but the journal holds no
        matching entry, so none can have been skipped: not counted as lost; the reader
        goes on as at a first start that found no matching entry, from the journal's
        last entry, whose cursor is saved (a source whose matches never match would
        otherwise report the same lost cursor at every start). Logged once.

        A journal that shows no entry at all (no journal file, or none this user may
        read: see :meth:`_check_blind`) cannot tell whether the cursor's entry is gone:
        the cursor file keeps it, and the reader reads what comes from the head."""
        end = self._journal_end()
        if end is None:
            self._cursor = None
            reader.seek_head()
            return
        if cursor != self._lost_cursor:
            self._lost_cursor = cursor
            _log.info(
                "saved cursor not found in the journal, which holds no matching entry: "
                "none was skipped; going on from the journal's end",
                source=self.name,
                path=str(self.cursor_path),
                cursor=cursor,
            )
        self._from_journal_end(reader, end)

    def _cursor_lost(self, cursor: str) -> None:
        """The saved cursor's entry is not in the journal, no entry of its sequence or
        boot comes after it, and the journal holds matching entries: its journal files
        are gone (vacuumed, or a volatile journal after a reboot). sd-journal then places
        the reader by wall-clock time, which skips every entry older than the cursor's
        time (a clock set back, or a reboot with the clock behind). Logged and counted
        once per lost cursor; the caller reads the journal from its head."""
        self._cursor = None
        if cursor == self._lost_cursor:  # reopened before an entry moved the cursor on
            return
        self._lost_cursor = cursor
        self.cursors_lost += 1
        self.stats.errors += 1
        self.stats.last_error = "saved cursor not found in the journal"
        _log.warning(
            "saved cursor not found in the journal; reading it from its head",
            source=self.name,
            path=str(self.cursor_path),
            cursor=cursor,
            reason="its journal files are gone (vacuumed, or a volatile journal after a reboot)",
        )

    def _bad_cursor(self, cursor: str, exc: ValueError) -> None:
        """The cursor file holds text sd-journal cannot parse (edited by hand, another
        file restored in its place): moved aside to ``<name>.corrupt`` (or, if that
        fails, replaced at the next save), logged and counted as a lost cursor once; the
        caller reads the journal as at a first start (``start_at``)."""
        self._cursor = None
        if cursor == self._lost_cursor:  # could not be moved aside: reopened meanwhile
            return
        self._lost_cursor = cursor
        self.cursors_lost += 1
        self.stats.errors += 1
        self.stats.last_error = f"journal cursor file {self.cursor_path} cannot be parsed"
        aside = self.cursor_path.with_name(self.cursor_path.name + ".corrupt")
        try:
            self.cursor_path.replace(aside)
            moved = str(aside)
        except OSError as err:
            moved = f"not moved ({err.strerror or err}): the next save replaces it"
        _log.error(
            f"journal cursor file cannot be parsed; moved aside, the journal is read as "
            f'start_at = "{self.config.start_at}" says',
            source=self.name,
            path=str(self.cursor_path),
            moved_to=moved,
            reason=str(exc),
        )

    def _next_entry(self, reader: Any) -> dict[str, Any] | None:
        """The fields this source reads of the next matching entry (values as bytes,
        the time an int in microseconds), or None at the end of the journal.

        ``_next``, ``_get`` and the like are python-systemd's low-level reader calls,
        which ``Reader.get_next()`` itself is built on. ``get_next()`` decodes and
        converts every field of an entry (a Debian 12 sshd entry has 21: UUIDs,
        datetimes, ints): 14.3 microseconds an entry against 6.9 for these fields only
        (100,000 entries with the fields of a Debian 12 sshd entry, reader alone)."""
        if not reader._next():
            return None
        get = reader._get
        entry: dict[str, Any] = {}
        for field_name in _FIELDS:
            try:
                entry[field_name] = get(field_name)
            except KeyError:
                continue
            except (OSError, ValueError) as exc:  # a corrupt field: _follow skips the entry
                entry["__ERROR"] = exc
        if entry.get("_TRANSPORT") == b"driver":  # journald's own: a rate-limit notice?
            for field_name in ("MESSAGE_ID", "N_DROPPED"):
                try:
                    entry[field_name] = get(field_name)
                except KeyError:
                    continue
                except (OSError, ValueError) as exc:
                    entry["__ERROR"] = exc
        entry["__REALTIME_TIMESTAMP"] = reader._get_realtime()
        entry["__CURSOR"] = reader._get_cursor()
        return entry

    def _follow(self, reader: Any, emit: Emit, wait: float) -> None:
        """Hand on batches until stopped, or until ``reopen_entries`` entries were read
        (the caller then reopens the reader at the cursor)."""
        name = self.name
        xid = self.config.kernel_xid
        uids = self._uids
        batch = self.config.batch_entries
        reopen = self.config.reopen_entries
        since_open = 0
        while not self._stopping.is_set():
            if since_open >= reopen:
                self.reopens += 1
                return
            events: list[Event] = []
            read = 0
            unrecognised = 0
            size = 0
            last_ts = 0
            read_at = self.clock.monotonic()
            cursor = self._cursor  # moved on once the batch is handed on: a failure
            # within it reopens the reader before its first entry, not after its last
            while read < batch:
                entry, self._pending = self._pending or self._next_entry(reader), None
                if not entry:
                    break
                read += 1
                cursor = entry.get("__CURSOR") or cursor
                try:
                    event, known, length, last_ts = self._handle(entry, name, uids, xid)
                except Exception as exc:  # noqa: BLE001 - one entry must not stop the source
                    self._entry_failed(entry, exc)
                    continue
                if event is not None:
                    events.append(event)
                unrecognised += not known
                size += length
            if read:
                self._read_any = True
                if self._blind is not None:
                    self._seen(None)  # entries came: the journal can be read
                emit(
                    EventBatch(
                        name,
                        events,
                        read_at,
                        read - len(events),
                        self._number(),
                        unrecognised,
                        "journald",
                    )
                )
                self._cursor = cursor
                self.stats.lines_read += read
                self.stats.bytes_read += size
                since_open += read
                behind = self.clock.now() - last_ts / 1e6 if read == batch else 0.0
                self.stats.lag_seconds = max(0.0, behind)
                self._save(force=False)
                continue
            self._save(force=False)
            if self._files_changed():
                return
            reader.wait(wait)

    def _handle(
        self, entry: Mapping[str, Any], name: str, uids: Container[str], xid: bool
    ) -> tuple[Event | None, bool, int, int]:
        """One entry: its event (or None), whether the source can read it (sshd's, the
        kernel's with ``kernel_xid``, or journald's own), its message's length and its
        time (microseconds). Raises for an entry a field of which could not be read."""
        if "__ERROR" in entry:
            raise entry["__ERROR"]
        event: Event | None = entry_event(entry, name, uids)
        if event is None and xid:
            event = self._xid(entry)
        known = True
        if event is None:
            if "MESSAGE_ID" in entry:  # journald's own entry
                self._suppressed(entry)
            else:
                known = _is_sshd_program(entry) or (xid and entry.get("_TRANSPORT") == b"kernel")
        size = len(_text(entry.get("MESSAGE")) or "")
        return event, known, size, int(entry.get("__REALTIME_TIMESTAMP", 0))

    def _entry_failed(self, entry: Mapping[str, Any], exc: Exception) -> None:
        """Handling one entry raised: it is skipped (handed on as unparsed, the cursor
        moves past it), counted in ``stats.errors`` and logged once per reason. Left to
        :meth:`_run`, the error would reopen the reader before the entry's batch, which
        would fail on it again for ever."""
        self.stats.errors += 1
        reason = f"{type(exc).__name__}: {exc}"[:200]
        self.stats.last_error = f"journal entry skipped: {reason}"
        if reason != self._entry_error:
            self._entry_error = reason
            _log.warning(
                "journal entry could not be handled; skipped",
                source=self.name,
                cursor=_text(entry.get("__CURSOR")),
                reason=reason,
            )

    def _suppressed(self, entry: Mapping[str, Any]) -> None:
        """A journald entry (``_TRANSPORT=driver``): when it says journald dropped entries
        of a unit this source reads under its rate limit (an sshd unit when the matches
        may select sshd's entries, or one that ``matches`` names by ``_SYSTEMD_UNIT``),
        count them in :attr:`entries_suppressed` and the notice as a gap
        (``stats.gaps``), and log a warning naming the unit and how many. N is
        ``N_DROPPED``, else the message's; one that is not plain digits (at most ten) is
        not counted, the gap still is. The entries are gone: attacks in them are not
        seen."""
        if _text(entry.get("MESSAGE_ID")) != SUPPRESSED_ID:
            return
        found = _SUPPRESSED.search(_text(entry.get("MESSAGE")) or "")
        if found is None:
            return
        unit = found.group(2)
        if unit not in self._units and not (self._reads_sshd and unit.startswith(SSH_UNITS)):
            return
        dropped = _count(_text(entry.get("N_DROPPED")))
        if dropped is None:  # odd, or missing: the message's N, else the gap alone
            dropped = _count(found.group(1))
        if dropped is not None:
            self.entries_suppressed += dropped
        self.stats.gaps += 1
        _log.warning(
            "journald dropped entries of a unit this source reads (its rate limit): "
            "attacks in them were not seen",
            source=self.name,
            unit=unit,
            dropped=dropped if dropped is not None else "unknown",
            action=f"raise LogRateLimitBurst= for {unit} (see docs/install.md)",
        )

    def _xid(self, entry: Mapping[str, Any]) -> XidEvent | None:
        event = kernel_xid_event(entry)
        if event is None:
            return None
        key = (event.pci_bus_id or "unknown", str(event.xid))
        seen = self._xids.get(key)
        if seen is None:
            if len(self._xids) >= MAX_XID_SERIES:
                key = (key[0], "other")
                seen = self._xids.get(key)
            if seen is None:
                seen = self._xids[key] = [0.0, 0.0]
        seen[0] += 1
        seen[1] = max(seen[1], event.ts)
        return event

    def carry_over(self, old: Source) -> None:
        """The stats and the Xid counts of ``old`` (see :meth:`Source.carry_over`)."""
        super().carry_over(old)
        if isinstance(old, JournaldSource):
            merge_counts(self._xids, old._xids)
            self.cursors_lost += old.cursors_lost
            self.entries_suppressed += old.entries_suppressed

    def collect(self) -> Iterator[Metric]:
        """The source's families, plus the kernel Xid counts with ``kernel_xid``."""
        yield from super().collect()
        yield counter(
            "aisentinel_source_cursor_lost",
            "Times the saved journal cursor was not found in the journal (its files gone: "
            "the journal was read from its head) or could not be parsed (moved aside: read "
            "as start_at says).",
            {"source": self.name},
            self.cursors_lost,
        )
        yield counter(
            "aisentinel_source_entries_suppressed",
            "Entries journald dropped under its rate limit (its Suppressed N messages "
            "notices) from a unit this journald source reads; each notice is also a gap.",
            {"source": self.name},
            self.entries_suppressed,
        )
        if not self.config.kernel_xid:
            return
        count = CounterMetricFamily(
            "aisentinel_gpu_kernel_xid_errors",
            "GPU Xid errors in the kernel log (NVRM: Xid lines), by PCI bus id and Xid code.",
            labels=["source", "pci_bus_id", "xid"],
        )
        seen = GaugeMetricFamily(
            "aisentinel_gpu_kernel_xid_last_seen_timestamp_seconds",
            "When each Xid code was last logged by the kernel for each GPU (Unix time).",
            labels=["source", "pci_bus_id", "xid"],
        )
        for (bus, code), (n, ts) in sorted(dict(self._xids).items()):
            count.add_metric([self.name, bus, code], n)
            seen.add_metric([self.name, bus, code], ts)
        yield count
        yield seen

    # ------------------------------------------------------------------ cursor

    def _load_cursor(self) -> str | None:
        try:
            data = read_state(self.cursor_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning(
                "unreadable journal cursor ignored", path=str(self.cursor_path), reason=str(exc)
            )
            return None
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:  # no cursor: parsed as little as "garbage" is
            self._bad_cursor(data.decode("utf-8", "replace").strip(), exc)
            return None
        return text or None

    def _save(self, *, force: bool) -> None:
        """Take the cursor (reader thread, between two batches; at most every
        ``SAVE_INTERVAL`` unless ``force``) and save the newest that is processed."""
        now = self.clock.monotonic()
        cursor = self._cursor
        if cursor is not None and (force or now >= self._next_save):
            self._next_save = now + SAVE_INTERVAL
            self._checkpoints.add(cursor, self._emitted)
        self._save_settled()

    def _save_settled(self) -> None:
        """Save the newest cursor taken whose batches are all processed, if new."""
        cursor = self._checkpoints.settled(self._acked)
        if cursor is None or cursor == self._saved_cursor:
            return
        try:
            atomic_write(self.cursor_path, cursor.encode() + b"\n")
        except OSError as exc:
            self._cursor_error(exc)
            return
        self._saved_cursor = cursor
        if self._cursor_fault:
            self._cursor_fault = ""
            _log.info("journal cursor saved again", source=self.name)
            if self.stats.state == "degraded":
                self._set_open_state()

    def _cursor_error(self, exc: OSError) -> None:
        """The journal stays open; a restart cannot resume exactly: counted, logged once."""
        self.stats.position_errors += 1
        fault = f"cannot save the journal cursor to {self.cursor_path}: {exc.strerror or exc}"
        if fault != self._cursor_fault:
            _log.error(
                "cannot save the journal cursor; the journal is still read, but a restart "
                "cannot resume where reading stopped",
                source=self.name,
                path=str(self.cursor_path),
                reason=str(exc),
                action="make the state directory writable for aisentinel",
            )
        self._cursor_fault = fault
        if self.stats.state == "following":
            self._set_open_state()

    def _fail(self, what: str, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.set_state("error", f"{what}: {exc}")
        self.stats.last_error = f"{what}: {exc}"
        if self.stats.last_error != self._last_failure:  # log a failure once, not every retry
            self._last_failure = self.stats.last_error
            _log.warning(what, source=self.name, reason=str(exc))


REGISTRY.register("journald", JournaldSourceConfig, JournaldSource)

__all__ = [
    "JOURNAL_DIRS",
    "SUPPRESSED_ID",
    "JournaldSource",
    "JournaldSourceConfig",
    "entry_event",
    "journal_files_problem",
    "journald_available",
    "journald_problem",
    "kernel_xid_event",
    "matches_problem",
    "may_read_sshd",
]
