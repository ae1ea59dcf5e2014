"""The decision ledger: every ban and alert, persisted in SQLite.

It serves three purposes: restore the active bans after a restart, count earlier
offences for escalation, and keep an audit trail for ``ledger_retention``. The
database runs in WAL mode with ``synchronous=NORMAL`` (a power cut may lose the
last decisions, never corrupt the file). A file that is not a readable ledger is
moved aside (``<name>.corrupt-<epoch>``, :attr:`Ledger.recovered_from`) with an
error log and a fresh one is created: a bad file never keeps the daemon from
starting. Its bans are then unknown: the daemon runs with ``ledger`` degraded and
its reconciles only add (what the responders enforce stays), across restarts, until
``aisentinel ledger accept`` (the daemon's ``ledger-lost.json``). A symbolic link at
the ledger's path (or its ``-wal``/``-shm``) is refused (``OSError``), never followed.

A ban row is *open* until it is ended: by :meth:`Ledger.end` once its expiry was
handed to the responders, by a newer ban of the same target, or by a manual
:meth:`Ledger.remove`. Open bans whose ``expires_at`` passed while the daemon was
down are what a restarted engine reports as expired.

A write that fails for an operational reason (disk full, file system turned
read-only, I/O error) never raises: it is counted (:attr:`Ledger.write_errors`),
kept in a bounded backlog and written, in order, before the next write or at
:meth:`Ledger.flush` / :meth:`Ledger.close` once the disk takes it again. One error
line marks the start of such a streak and one line its end. A ledger that cannot be
opened at all is the caller's to replace with :meth:`Ledger.in_memory_copy`. A file
another process holds locked (:func:`is_busy`: someone's ``sqlite3`` shell with a
transaction open) gets a stand-in instead, :meth:`Ledger.stand_in`: an in-memory copy
that keeps every write it takes and, once :meth:`Ledger.adopt` can open the file,
writes them there in one transaction and goes on with the file.

Writes are batched: the pipeline holds (:meth:`~Ledger.hold`) the decisions of one batch of
lines and releases (:meth:`~Ledger.release`) them in one transaction at the end of that batch
(one commit per batch, not per decision). Crash window: a kill during a batch loses
that batch's decisions (milliseconds of work), never its lines. The daemon acknowledges
a batch to its source only after the pipeline processed it (and this ledger committed
its decisions), and a source saves its position (at most once a second, and at stop)
only past batches acknowledged, so the lines of that batch, of the batches still
queued and of up to a second of batches processed before the kill are read again at
the next start and decided again: nothing is lost, some lines are decided twice. A
finding made again from those lines is answered by the enforcement it got before the
restart (the engine's step 5), not counted as a new offence once that ban has ended.
A responder may have applied a ban of the batch before its row is committed; the
responders' reconcile at start lifts what the ledger does not hold.

One connection, guarded by a lock: the pipeline thread writes, other threads (the
exporter) may read counts.

Schema versions (``PRAGMA user_version``): 1 held address targets only; 2 adds
``target_kind`` (``address`` / ``workload``) and ``target_detail`` (a workload's
fields as JSON) and counts throttles and freezes as enforcements like bans. Version 2
also holds table ``allows``, the operators' runtime allowlist entries (``aisentinel
allow``) with their expiry, restored by a starting engine, and table ``brake``, the
storm brake's state (one row: when it tripped, when its calm began, when that was
written), restored too, and table ``ssh_logins``, the SSH connections sshd logged a
login on (one row per socket while it is open, so a restart does not stop protecting a
logged-in admin), and table ``seen``, the last wall time the engine looked (one row, on
the clock it follows: see :meth:`Ledger.cap_expiries`). They are created when missing
each time a ledger is opened, without a new version: the release before them ignores
tables it does not know, but moves a file whose ``user_version`` is newer than its own
aside (every ban with it), so a package rollback would lose them. A schema change that
older code cannot read bumps the version. A version 1 file is migrated in place when
opened, in one transaction: its rows become address targets and its open bans stay open.
"""

from __future__ import annotations

import errno
import json
import math
import sqlite3
import stat
import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from aisentinel.atomicfile import NOT_FOLLOWED, restrict
from aisentinel.clock import Clock
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Severity,
    Target,
    TargetKind,
    WorkloadTarget,
)

log = structlog.get_logger(__name__)

MEMORY = ":memory:"
"""Pass ``Path(MEMORY)`` for a ledger that lives in memory only (offline replay)."""

SCHEMA_VERSION = 2

CACHE_KIB = 256
"""SQLite's page cache for a ledger file, in KiB (SQLite's default is 2 MiB). The hot
statements are index lookups and appends, whose pages the OS caches anyway; a full
default cache was 2 MB of the daemon's settled RSS in bench/rss.py."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detector TEXT NOT NULL,
    severity INTEGER NOT NULL,
    reason TEXT NOT NULL,
    ttl REAL,
    expires_at REAL,
    offence INTEGER NOT NULL,
    simulated INTEGER NOT NULL,
    evidence_count INTEGER NOT NULL,
    ended_at REAL,
    forgiven INTEGER NOT NULL DEFAULT 0,
    target_kind TEXT NOT NULL DEFAULT 'address',
    target_detail TEXT
);
CREATE INDEX IF NOT EXISTS decisions_target_ts ON decisions (target, ts);
CREATE INDEX IF NOT EXISTS decisions_enforced ON decisions (expires_at)
    WHERE action IN ('ban', 'throttle', 'freeze') AND ended_at IS NULL;
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE TABLE IF NOT EXISTS allows (
    network TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    expires_at REAL NOT NULL,
    who TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS brake (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tripped_since REAL,
    calm_since REAL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ssh_logins (
    socket TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ts REAL NOT NULL
);
"""

_MIGRATE_1_TO_2 = """
ALTER TABLE decisions ADD COLUMN target_kind TEXT NOT NULL DEFAULT 'address';
ALTER TABLE decisions ADD COLUMN target_detail TEXT;
DROP INDEX IF EXISTS decisions_open;
"""

_COLUMNS_V1 = (
    "id",
    "ts",
    "action",
    "target",
    "detector",
    "severity",
    "reason",
    "ttl",
    "expires_at",
    "offence",
    "simulated",
    "evidence_count",
    "ended_at",
    "forgiven",
)

_COLUMNS = (*_COLUMNS_V1, "target_kind", "target_detail")

_SELECT = (
    "SELECT ts, action, target, detector, severity, reason, ttl, expires_at, offence, "
    "simulated, evidence_count, target_kind, target_detail FROM decisions"
)

_Row = tuple[
    float,
    str,
    str | None,
    str,
    int,
    str,
    float | None,
    float | None,
    int,
    int,
    int,
    str,
    str | None,
]


_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_RETRYABLE = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
    }
)
"""Primary result codes of a write that may succeed later (space freed, remounted)."""

BACKLOG_MAX = 10_000
"""Writes kept while the ledger cannot be written; beyond that the oldest are dropped."""

BUSY_BACKOFF_SECONDS = 0.5
"""After a write found the file locked by another process, the writes of the next half
second go to the backlog without trying (:meth:`Ledger.flush` still tries): each try
waits the busy timeout, and the pipeline thread makes them."""

_Statement = tuple[str, tuple[object, ...]]


class LedgerCorruptError(Exception):
    """The file is not a ledger this version can use."""


def _is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, LedgerCorruptError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _keep(queue: deque[list[_Statement]], statements: list[_Statement]) -> bool:
    """Append ``statements`` to ``queue``, its oldest dropped past :data:`BACKLOG_MAX`;
    whether one was dropped."""
    full = len(queue) >= BACKLOG_MAX
    if full:
        queue.popleft()
    queue.append(statements)
    return full


def _refuse_links(path: Path) -> None:
    """Raise ``OSError(ELOOP, NOT_FOLLOWED)`` when the ledger ``path`` or its ``-wal`` or
    ``-shm`` file is a symbolic link: SQLite would follow it (and :meth:`Ledger._prepare`
    chmod what it names)."""
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        side = path.with_name(name)
        try:
            if stat.S_ISLNK(side.lstat().st_mode):
                raise OSError(errno.ELOOP, NOT_FOLLOWED, str(side))
        except FileNotFoundError:
            continue


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection holds the database locked (SQLITE_BUSY or
    SQLITE_LOCKED: "database is locked"), which passes when it lets go."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (5, 6)


def _retryable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_RETRYABLE


class Ledger:
    """Decisions in a SQLite file at ``path`` (``":memory:"`` is not supported)."""

    def __init__(self, path: Path, clock: Clock, *, busy_timeout: float = 5.0) -> None:
        """Open (or create) the ledger at ``path``; a lock another connection holds is
        waited for ``busy_timeout`` seconds, then raised (``sqlite3.OperationalError``,
        :func:`is_busy`)."""
        self.path = Path(path)
        self.clock = clock
        self._busy_timeout = busy_timeout
        self.standing_in_for: Path | None = None
        """The file this in-memory ledger stands in for until :meth:`adopt` opens it."""
        self._journal: deque[list[_Statement]] | None = None
        """A stand-in's writes, in order, for the file (``None``: not a stand-in)."""
        self.journal_dropped = 0
        self.in_memory = str(path) == MEMORY
        """A throw-away ledger held in memory (``replay``): nothing is written to disk."""
        self.recovered_from: Path | None = None
        """Where a corrupt file was moved to at open, if one was."""
        self.unread: str | None = None
        """An in-memory copy (:meth:`in_memory_copy`, :meth:`stand_in`): why the file's
        decisions could not be copied in (``None``: they were, or there is no file)."""
        self.write_errors = 0
        """Writes that failed when asked for (each is kept in the backlog and retried)."""
        self.dropped = 0
        """Failed writes given up because the backlog was full."""
        self.failing: str | None = None
        """Why writes fail now (the first error of the current streak); None when healthy."""
        self._backlog: deque[list[_Statement]] = deque()
        self._busy_until = -math.inf
        """Until when (monotonic) :meth:`_write` does not try the backlog: the file was
        locked by another process (:data:`BUSY_BACKOFF_SECONDS`)."""
        self._held: list[_Statement] | None = None
        """Statements of :meth:`record` kept for one transaction (see :meth:`hold`)."""
        self._held_enforced: dict[str, int] = {}
        """Enforcements per target among the held statements (for :meth:`offences`)."""
        self._lock = threading.Lock()
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _refuse_links(self.path)
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, LedgerCorruptError) as exc:
            if not _is_corrupt(exc) or not self.path.exists():
                raise
            self.recovered_from = self._move_aside()
            log.error(  # noqa: TRY400 - the reason is the message; a traceback adds nothing
                "ledger unreadable, moved aside and started afresh; the bans it held are "
                "unknown to this run (the daemon keeps what its responders enforce)",
                path=str(self.path),
                moved_to=str(self.recovered_from),
                error=str(exc),
            )
            self._db = self._open()

    @classmethod
    def in_memory_copy(cls, path: Path, clock: Clock) -> tuple[Ledger, str | None]:
        """A ledger in memory, seeded with the decisions of ``path`` when it can be read.

        For a state directory that cannot be written: bans decided now are enforced
        but not persisted. Returns the ledger and why the file could not be copied
        (None when it was, or when there is no file).
        """
        ledger = cls(Path(MEMORY), clock)
        ledger.unread = ledger._copy(Path(path).absolute())
        return ledger, ledger.unread

    def _copy(self, path: Path) -> str | None:
        """Copy the decisions of the ledger file ``path`` into this in-memory ledger;
        why they could not be (``None``: copied, or no file)."""
        try:  # never through a link; Path.exists() raises where a directory is unsearchable
            _refuse_links(path)
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
        if not stat.S_ISREG(mode):
            return "not a regular file"
        problem = "unreadable"
        # mode=ro reads the WAL too; immutable=1 also works where no -shm can be created.
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                src = sqlite3.connect(f"{path.as_uri()}?{query}", uri=True)
                try:
                    src.backup(self._db)
                finally:
                    src.close()
                self._prepare(self._db)
            except (sqlite3.Error, LedgerCorruptError) as exc:
                problem = str(exc)
                self._db.close()
                self._db = self._open()
                continue
            return None
        return problem

    @classmethod
    def stand_in(cls, path: Path, clock: Clock) -> Ledger:
        """An in-memory copy of the locked ledger at ``path`` that keeps its writes for
        the file (:meth:`adopt` writes them there once the lock is gone)."""
        ledger, _unread = cls.in_memory_copy(path, clock)
        ledger.standing_in_for = Path(path)
        ledger._journal = deque()
        return ledger

    def adopt(self, busy_timeout: float = 0.05) -> bool:
        """A stand-in: open the file it stands in for, write the decisions taken meanwhile
        into it in one transaction and use the file from now on. ``True`` when it did (or
        this is no stand-in); ``False`` while the file is still locked. Any other fault of
        the file is raised (``sqlite3.Error``, :class:`LedgerCorruptError`, ``OSError``)."""
        path = self.standing_in_for
        if path is None or self._journal is None:
            return True
        try:
            found = Ledger(path, self.clock, busy_timeout=busy_timeout)
        except sqlite3.Error as exc:
            if is_busy(exc):
                return False
            raise
        with self._lock:
            journal = self._journal
            try:  # all or nothing: a partial journal would be written twice by the next try
                found._execute([s for statements in journal for s in statements])
            except sqlite3.Error as exc:
                found._db.close()
                if is_busy(exc):
                    return False
                raise
            old, self._db = self._db, found._db
            old.close()
            self.path, self.in_memory, self.recovered_from = path, False, found.recovered_from
            self.standing_in_for, self._journal = None, None
        log.info(
            "ledger file opened; the decisions taken while it was locked are written to it",
            path=str(path),
            writes=len(journal),
            dropped=self.journal_dropped,
        )
        return True

    def set_busy_timeout(self, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock another process holds, from now on (the
        daemon waits long at start, then briefly: a write it cannot make waits in the
        backlog, and the pipeline thread must not stall on an admin's open transaction)."""
        self._busy_timeout = seconds
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout, check_same_thread=False, isolation_level=None
        )
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Set the pragmas, check the file and create or verify the schema."""
        if not self.in_memory:
            try:  # it holds addresses and reasons: owner only (never through a link)
                restrict(self.path, 0o600)
            except OSError as exc:
                log.warning(
                    "cannot restrict ledger permissions", path=str(self.path), error=str(exc)
                )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if not self.in_memory:  # a :memory: ledger's pages live in the cache itself
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerCorruptError(
                f"ledger schema version {version} is newer than this aisentinel "
                f"understands ({SCHEMA_VERSION})"
            )
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise LedgerCorruptError("integrity check failed")
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(decisions)"))
        if columns == _COLUMNS_V1 and version <= 1:
            self._migrate_v1(db)
        elif columns and columns != _COLUMNS:
            raise LedgerCorruptError(f"unexpected columns in table decisions: {columns}")
        # Tables added within version 2 (allows, brake, ssh_logins, seen) are created when
        # missing, the version left as it is: see the module docstring (downgrade safety).
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate_v1(self, db: sqlite3.Connection) -> None:
        """Schema 1 -> 2 in one transaction: every existing row is an address target."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATE_1_TO_2.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("PRAGMA user_version=2")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        log.info("ledger migrated", path=str(self.path), from_version=1, to_version=2)

    def _move_aside(self) -> Path:
        stamp = int(self.clock.now())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        self.path.replace(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        return target

    # ------------------------------------------------------------------ writing

    def _execute(self, statements: list[_Statement]) -> list[sqlite3.Cursor]:
        """Run ``statements`` in one transaction (lock held): all or nothing."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cursors = [db.execute(sql, params) for sql, params in statements]
            db.execute("COMMIT")  # a failed COMMIT (disk full) leaves the transaction open
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        # A stand-in: the same writes go to the file later.
        if self._journal is not None and _keep(self._journal, statements):
            self.journal_dropped += 1
            self._first_drop(
                self.journal_dropped,
                "ledger stand-in full; the oldest decisions will not reach the file",
                self.standing_in_for,
            )
        return cursors

    def _write(self, statements: list[_Statement]) -> list[sqlite3.Cursor] | None:
        """Write ``statements`` after any backlog; None when they went to the backlog.

        Errors that may pass (disk full, read-only, I/O) are counted and kept for a
        retry; any other error is raised. Statements held for :meth:`release` go
        first, in the same transaction (the cursors returned are those of ``statements``).
        """
        held = self._held
        first = 0
        if held:
            self._held = []
            self._held_enforced.clear()
            first = len(held)
            statements = held + statements
        with self._lock:
            if self._backlog and self.clock.monotonic() >= self._busy_until:
                self._flush_locked()
            if not self._backlog:
                try:
                    return self._execute(statements)[first:]
                except sqlite3.Error as exc:
                    if not _retryable(exc):
                        raise
                    self._failed(exc)
            self.write_errors += 1
            if _keep(self._backlog, statements):
                self.dropped += 1
                self._first_drop(
                    self.dropped,
                    "ledger backlog full; the oldest unwritten decisions are dropped",
                    self.path,
                )
            return None

    @staticmethod
    def _first_drop(dropped: int, message: str, path: Path | None) -> None:
        """One error line at the first write dropped from a full queue of a streak."""
        if dropped == 1:
            log.error(message, path=str(path), kept=BACKLOG_MAX)

    def _failed(self, exc: sqlite3.Error) -> None:
        busy = is_busy(exc)
        if busy:
            self._busy_until = self.clock.monotonic() + BUSY_BACKOFF_SECONDS
        if self.failing is not None:
            return
        self.failing = f"writes failing since {_iso(self.clock.now())}: {exc}"
        if busy:
            until = "the other process lets go of its lock"
            fix = f"fuser -v {self.path} (an open sqlite3 session or a VACUUM holds it)"
        else:
            until = "the disk takes them again"
            fix = f"df -h {self.path.parent}; ls -ld {self.path.parent} {self.path}"
        log.error(
            "ledger writes failing; decisions are enforced and kept in memory, written when "
            + until,
            path=str(self.path),
            error=str(exc),
            fix=fix,
        )

    def _flush_locked(self) -> int:
        written = 0
        while self._backlog:
            try:
                self._execute(self._backlog[0])
            except sqlite3.Error as exc:
                if not _retryable(exc):
                    # It can never be written: drop it rather than block the others.
                    log.error(  # noqa: TRY400 - the reason is the message
                        "ledger write dropped", path=str(self.path), error=str(exc)
                    )
                    self._backlog.popleft()
                    self.dropped += 1
                    continue
                self._failed(exc)
                return written
            self._backlog.popleft()
            written += 1
        if self.failing is not None:
            log.info(
                "ledger writes recovered",
                path=str(self.path),
                written=written,
                failed_writes=self.write_errors,
                dropped=self.dropped,
            )
            self.failing = None
            self.dropped = 0
        return written

    def hold(self) -> None:
        """Keep the next :meth:`record` calls for one transaction, written by
        :meth:`release` (or before any other write). The pipeline holds the
        decisions of one batch: one commit per batch instead of one per decision.
        :meth:`offences` counts held enforcements; the other reads see them once
        released."""
        if self._held is None:
            self._held = []

    def release(self) -> int:
        """Write what was held since :meth:`hold` in one transaction (or into the
        backlog, like any write); returns how many statements were held."""
        held = self._held
        self._held = None
        if not held:
            return 0
        self._held_enforced.clear()
        self._write(held)
        return len(held)

    def flush(self) -> int:
        """Write the backlog if the disk takes it now; returns how many writes went in."""
        if not self._backlog:
            return 0
        with self._lock:
            return self._flush_locked()

    @property
    def backlog(self) -> int:
        """Writes waiting for the disk."""
        return len(self._backlog)

    def record(self, decision: Decision) -> int:
        """Store a decision and return its row id (0 when the write waits in the backlog,
        or is held for :meth:`release`).

        A ban, throttle or freeze ends any still-open one of the same target (only
        the newest counts).
        """
        d = decision
        text, kind, detail = _target_columns(d.target)
        statements: list[_Statement] = []
        if d.action.enforces:
            statements.append(
                (
                    "UPDATE decisions SET ended_at = ? "
                    "WHERE action IN ('ban', 'throttle', 'freeze') "
                    "AND target = ? AND ended_at IS NULL",
                    (d.ts, text),
                )
            )
        statements.append(
            (
                "INSERT INTO decisions (ts, action, target, detector, severity, reason, ttl, "
                "expires_at, offence, simulated, evidence_count, target_kind, target_detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d.ts,
                    d.action.value,
                    text,
                    d.detector,
                    int(d.severity),
                    d.reason,
                    d.ttl,
                    d.expires_at,
                    d.offence,
                    int(d.simulated),
                    d.evidence_count,
                    kind,
                    detail,
                ),
            )
        )
        held = self._held
        if held is not None:
            held.extend(statements)
            if d.action.enforces and text is not None:
                self._held_enforced[text] = self._held_enforced.get(text, 0) + 1
            return 0
        cursors = self._write(statements)
        return int(cursors[-1].lastrowid or 0) if cursors else 0

    def end(self, targets: Iterable[str], at: float) -> int:
        """Close the open enforcements of ``targets`` (target texts; their expiry was
        handled); returns rows closed."""
        sql = (
            "UPDATE decisions SET ended_at = ? WHERE action IN ('ban', 'throttle', 'freeze') "
            "AND target = ? "
            "AND ended_at IS NULL"
        )
        cursors = self._write([(sql, (at, target)) for target in targets])
        return sum(c.rowcount for c in cursors) if cursors else 0

    def shift_expiries(self, seconds: float) -> int:
        """Move the expiry of every open enforcement by ``seconds`` (the wall clock
        stepped; see :meth:`DecisionEngine._follow_clock_step`); returns rows moved."""
        sql = (
            "UPDATE decisions SET expires_at = expires_at + ? "
            "WHERE action IN ('ban', 'throttle', 'freeze') AND ended_at IS NULL "
            "AND expires_at IS NOT NULL"
        )
        cursors = self._write([(sql, (seconds,))])
        return cursors[0].rowcount if cursors else 0

    def shift_allows(self, seconds: float, after: float) -> int:
        """Move the runtime allowlist entries that end after ``after`` (when each was made,
        and its expiry) by ``seconds`` (the wall clock stepped; see
        :meth:`DecisionEngine._follow_clock_step`); returns rows moved."""
        sql = "UPDATE allows SET ts = ts + ?, expires_at = expires_at + ? WHERE expires_at > ?"
        cursors = self._write([(sql, (seconds, seconds, after))])
        return cursors[0].rowcount if cursors else 0

    def mark_seen(self, at: float) -> None:
        """Store ``at`` as the last wall time the engine looked, on the clock its expiries
        follow (see :meth:`cap_expiries`). Not kept for a retry while writes fail: a mark
        a minute must not push the backlog's decisions out."""
        if self._backlog or self._held:
            return
        self._write([("INSERT OR REPLACE INTO seen (id, ts) VALUES (1, ?)", (at,))])

    def seen(self) -> float | None:
        """The last wall time :meth:`mark_seen` stored (``None``: never)."""
        with self._lock:
            row = self._db.execute("SELECT ts FROM seen WHERE id = 1").fetchone()
        return None if row is None else float(row[0])

    def forget_allows(self, at: float) -> int:
        """Delete the runtime allowlist entries that ended at or before ``at`` (the
        engine's allowlist dropped them): an ended allow never comes back at a start.
        Returns rows deleted."""
        cursors = self._write([("DELETE FROM allows WHERE expires_at <= ?", (at,))])
        return cursors[0].rowcount if cursors else 0

    def cap_expiries(self, now: float, slack: float) -> int:
        """Put the open enforcements and runtime allows on the wall clock of ``now`` when
        it is behind the ledger (stepped back while the daemon was down; see
        :meth:`DecisionEngine._restore`). Returns rows moved or capped.

        The last time the engine looked (:meth:`mark_seen`) later than ``now`` by over
        ``slack`` seconds: every open enforcement and allow is moved back by the
        difference, so it keeps the time it had left then (one that had ended by then,
        its row not closed yet, ends at once). Then each keeps at most its TTL from
        ``now`` (a ledger without that mark: made "in the future" tells the step).
        Allows that have ended by ``now`` are deleted. ``now`` is stored as the mark."""
        seen = self.seen()
        statements: list[_Statement] = []
        if seen is not None and seen > now + slack:
            shift = now - seen
            statements += [
                (
                    "UPDATE decisions SET expires_at = expires_at + ? "
                    "WHERE action IN ('ban', 'throttle', 'freeze') AND ended_at IS NULL "
                    "AND expires_at IS NOT NULL",
                    (shift,),
                ),
                ("UPDATE allows SET ts = ts + ?, expires_at = expires_at + ?", (shift, shift)),
            ]
        counted = len(statements) + 2
        statements += [
            (
                "UPDATE decisions SET expires_at = ? + ttl "
                "WHERE action IN ('ban', 'throttle', 'freeze') AND ended_at IS NULL "
                "AND ttl IS NOT NULL AND expires_at > ? + ttl + ?",
                (now, now, slack),
            ),
            (
                "UPDATE allows SET expires_at = ? + (expires_at - ts), ts = ? WHERE ts > ? + ?",
                (now, now, now, slack),
            ),
            ("DELETE FROM allows WHERE expires_at <= ?", (now,)),
            ("INSERT OR REPLACE INTO seen (id, ts) VALUES (1, ?)", (now,)),
        ]
        cursors = self._write(statements)
        return sum(c.rowcount for c in cursors[:counted]) if cursors else 0

    def remove(self, target: str) -> int:
        """Manual unban: close the open ban of ``target`` and forgive its history.

        Forgiven bans no longer count as offences. Returns how many open bans were
        closed (0 when ``target`` was not banned).
        """
        now = self.clock.now()
        cursors = self._write(
            [
                (
                    "UPDATE decisions SET ended_at = ? "
                    "WHERE action IN ('ban', 'throttle', 'freeze') "
                    "AND target = ? AND ended_at IS NULL",
                    (now, target),
                ),
                (
                    "UPDATE decisions SET forgiven = 1 "
                    "WHERE action IN ('ban', 'throttle', 'freeze') "
                    "AND target = ?",
                    (target,),
                ),
            ]
        )
        return cursors[0].rowcount if cursors else 0

    def size_bytes(self) -> int:
        """Bytes the ledger takes on disk: its file and its write-ahead log (0 in memory,
        or where they cannot be read)."""
        if self.in_memory:
            return 0
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.lstat().st_size
            except OSError:
                continue
        return total

    def purge(self, before: float, limit: int | None = None) -> int:
        """Delete history older than ``before``; open bans are kept, and so are runtime
        allow entries that had not ended by then. Returns rows deleted.

        With ``limit``, at most that many rows of each table, in one short transaction:
        the engine purges a large history in such batches over its ticks, so no purge
        holds the daemon's loop (and systemd's watchdog) for seconds. Fewer rows than
        ``limit`` deleted means the history is purged."""
        rows = -1 if limit is None else limit  # SQLite: a negative LIMIT is none
        cursors = self._write(
            [
                (
                    "DELETE FROM decisions WHERE rowid IN (SELECT rowid FROM decisions "
                    "WHERE ts < ? AND (action NOT IN ('ban', 'throttle', 'freeze') "
                    "OR ended_at IS NOT NULL) LIMIT ?)",
                    (before, rows),
                ),
                (
                    "DELETE FROM allows WHERE rowid IN "
                    "(SELECT rowid FROM allows WHERE expires_at < ? LIMIT ?)",
                    (before, rows),
                ),
                (
                    "DELETE FROM ssh_logins WHERE rowid IN "
                    "(SELECT rowid FROM ssh_logins WHERE ts < ? LIMIT ?)",
                    (before, rows),
                ),
            ]
        )
        return sum(c.rowcount for c in cursors) if cursors else 0

    def record_allow(
        self, network: str, ts: float, expires_at: float, who: str, reason: str = ""
    ) -> None:
        """Store a runtime allowlist entry for ``network`` (its canonical text) until
        ``expires_at``; a later one for the same network replaces it."""
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO allows (network, ts, expires_at, who, reason) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (network, ts, expires_at, who, reason),
                )
            ]
        )

    def save_brake(self, tripped_since: float | None, calm_since: float | None, at: float) -> None:
        """Store the storm brake's state as of ``at`` (both ``None``: not tripped, since
        ``at`` when it was released then)."""
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO brake (id, tripped_since, calm_since, ts) "
                    "VALUES (1, ?, ?, ?)",
                    (tripped_since, calm_since, at),
                )
            ]
        )

    def record_ssh_login(self, sockets: Iterable[str], client: str, ts: float) -> None:
        """Store that sshd logged a login from ``client`` at ``ts`` on the connections
        ``sockets`` (their keys in the socket table): restored at start."""
        sql = "INSERT OR REPLACE INTO ssh_logins (socket, client, ts) VALUES (?, ?, ?)"
        self._write([(sql, (key, client, ts)) for key in sockets])

    def forget_ssh_logins(self, sockets: Iterable[str]) -> None:
        """Drop the logins of connections that are closed now."""
        self._write([("DELETE FROM ssh_logins WHERE socket = ?", (key,)) for key in sockets])

    def ssh_logins(self) -> list[tuple[str, float]]:
        """The stored logins: (socket key, when sshd logged it)."""
        with self._lock:
            rows = self._db.execute("SELECT socket, ts FROM ssh_logins ORDER BY ts").fetchall()
        return [(str(key), float(ts)) for key, ts in rows]

    def brake(self) -> tuple[float | None, float | None, float] | None:
        """The stored storm brake state (tripped_since, calm_since, written at), or
        ``None`` when none was ever stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT tripped_since, calm_since, ts FROM brake WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        tripped, calm, at = row
        return (
            None if tripped is None else float(tripped),
            None if calm is None else float(calm),
            float(at),
        )

    def enforcement_times(self, since: float, exclude_detector: str) -> list[tuple[float, str]]:
        """When the enforcements decided after ``since`` were decided (forgiven, ended
        and simulated ones included), but for those of ``exclude_detector``, with their
        target's text."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, target FROM decisions WHERE action IN ('ban', 'throttle', 'freeze') "
                "AND ts > ? AND detector != ? ORDER BY ts",
                (since, exclude_detector),
            ).fetchall()
        return [(float(ts), str(target)) for ts, target in rows]

    def allows(self, now: float) -> list[tuple[str, float, str, str]]:
        """The runtime allowlist entries that end after ``now``: (network text,
        expires_at, who, reason), soonest expiry first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT network, expires_at, who, reason FROM allows WHERE expires_at > ? "
                "ORDER BY expires_at, network",
                (now,),
            ).fetchall()
        return [(str(n), float(e), str(w), str(r)) for n, e, w, r in rows]

    # ------------------------------------------------------------------ reading

    def active(self, now: float) -> list[Decision]:
        """Open enforcements (bans, throttles, freezes) with ``expires_at > now``,
        soonest expiry first."""
        return self._bans("AND expires_at > ?", (now,))

    def open_bans(self) -> list[Decision]:
        """Every open enforcement, expired or not (what a starting engine restores).

        A row whose target cannot be read back (not an address, a bad workload
        record) is logged, ended and left out: it never stops a start.
        """
        return self._bans("", ())

    def offences(self, target: str, since: float) -> int:
        """Enforcements of ``target`` (its text) decided at or after ``since``, forgiven
        ones excluded; enforcements held for :meth:`release` count too (decided now)."""
        held = self._held_enforced.get(target, 0) if self._held else 0
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM decisions WHERE action IN ('ban', 'throttle', 'freeze') "
                "AND target = ? "
                "AND ts >= ? AND forgiven = 0",
                (target, since),
            ).fetchone()
        return int(row[0]) + held

    def counts(self) -> dict[Action, int]:
        """Rows held per action (for metrics and ``status``)."""
        out = dict.fromkeys(Action, 0)
        with self._lock:
            rows = self._db.execute("SELECT action, COUNT(*) FROM decisions GROUP BY action")
            for action, count in rows:
                try:
                    out[Action(action)] = int(count)
                except ValueError:
                    continue
        return out

    def history(self, target: str, limit: int = 100) -> list[Decision]:
        """The newest ``limit`` decisions about ``target`` (its text), newest first."""
        with self._lock:
            rows = self._db.execute(
                _SELECT + " WHERE target = ? ORDER BY ts DESC, id DESC LIMIT ?", (target, limit)
            ).fetchall()
        return [d for d, _bad in map(_decision, rows)]

    def close(self) -> None:
        """Write what is held and the backlog, checkpoint, close; later calls raise
        ``sqlite3.ProgrammingError``."""
        self.release()
        with self._lock:
            if self._backlog:
                self._flush_locked()
            if self._backlog:
                log.error(
                    "ledger closed with unwritten decisions; they are lost",
                    path=str(self.path),
                    unwritten=len(self._backlog),
                    error=self.failing,
                )
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("ledger checkpoint failed", path=str(self.path), error=str(exc))
            self._db.close()

    def _bans(self, where: str, params: tuple[float, ...]) -> list[Decision]:
        with self._lock:
            rows = self._db.execute(
                _SELECT + " WHERE action IN ('ban', 'throttle', 'freeze') "
                "AND ended_at IS NULL " + where + " ORDER BY expires_at, id",
                params,
            ).fetchall()
        out: list[Decision] = []
        unreadable: list[str] = []
        for row in rows:
            decision, bad = _decision(row)
            if bad is None:
                out.append(decision)
                continue
            unreadable.append(row[2] or "")
            log.error("restored ban of an unreadable target dropped", target=row[2], error=bad)
        if unreadable:
            self.end(unreadable, self.clock.now())
        return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _target_columns(target: Target | None) -> tuple[str | None, str, str | None]:
    """``(target, target_kind, target_detail)`` column values for a decision's target."""
    if target is None:
        return None, TargetKind.ADDRESS.value, None
    if isinstance(target, WorkloadTarget):
        return target.text, target.kind.value, json.dumps(target.fields(), sort_keys=True)
    return target.text, target.kind.value, None


def _target(text: str | None, kind: str, detail: str | None) -> Target | None:
    """The target stored in a row; ``ValueError`` when it cannot be read back."""
    if text is None:
        return None
    if kind == TargetKind.WORKLOAD:
        try:
            fields = json.loads(detail or "")
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad workload record: {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError("bad workload record: not an object")
        try:
            return WorkloadTarget.from_fields(fields)
        except TypeError as exc:
            raise ValueError(f"bad workload record: {exc}") from None
    if kind != TargetKind.ADDRESS:
        raise ValueError(f"unknown target kind {kind!r}")
    return AddressTarget.parse(text)


def _decision(row: _Row) -> tuple[Decision, str | None]:
    """The decision a row holds, and why its target could not be read (else ``None``).

    An unreadable target leaves the decision's target ``None``.
    """
    ts, action, text, detector, severity, reason, ttl, expires_at, offence, sim, evidence = row[:11]
    bad: str | None = None
    try:
        target = _target(text, row[11], row[12])
    except ValueError as exc:
        target, bad = None, str(exc)
    try:
        sev = Severity(severity)
    except ValueError:
        sev = Severity.INFO
    decision = Decision(
        ts=ts,
        action=Action(action),
        target=target,
        detector=detector,
        severity=sev,
        reason=reason,
        ttl=ttl,
        expires_at=expires_at,
        offence=offence,
        simulated=bool(sim),
        evidence_count=evidence,
    )
    return decision, bad
