"""The decision ledger: every ban and alert, persisted in SQLite.

It serves three purposes: restore the active bans after a restart, count earlier
offences for escalation, and keep an audit trail for ``ledger_retention``. The
database runs in WAL mode with ``synchronous=NORMAL`` (a power cut may lose the
last decisions, never corrupt the file). A file that is not a readable ledger is
moved aside (``<name>.corrupt-<epoch>``) with an error log and a fresh one is
created: a bad file never keeps the daemon from starting.

A ban row is *open* until it is ended: by :meth:`Ledger.end` once its expiry was
handed to the responders, by a newer ban of the same target, or by a manual
:meth:`Ledger.remove`. Open bans whose ``expires_at`` passed while the daemon was
down are what a restarted engine reports as expired.

One connection, guarded by a lock: the pipeline thread writes, other threads (the
exporter) may read counts.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from aisentinel.clock import Clock
from aisentinel.events import Action, Decision, Severity

log = structlog.get_logger(__name__)

MEMORY = ":memory:"
"""Pass ``Path(MEMORY)`` for a ledger that lives in memory only (offline replay)."""

SCHEMA_VERSION = 1

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
    forgiven INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_target_ts ON decisions (target, ts);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (expires_at)
    WHERE action = 'ban' AND ended_at IS NULL;
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
"""

_COLUMNS = (
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

_SELECT = (
    "SELECT ts, action, target, detector, severity, reason, ttl, expires_at, offence, "
    "simulated, evidence_count FROM decisions"
)

_Row = tuple[float, str, str | None, str, int, str, float | None, float | None, int, int, int]


_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class LedgerCorruptError(Exception):
    """The file is not a ledger this version can use."""


def _is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, LedgerCorruptError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


class Ledger:
    """Decisions in a SQLite file at ``path`` (``":memory:"`` is not supported)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = Path(path)
        self.clock = clock
        self.in_memory = str(path) == MEMORY
        """A throw-away ledger held in memory (``replay``): nothing is written to disk."""
        self.recovered_from: Path | None = None
        """Where a corrupt file was moved to at open, if one was."""
        self._lock = threading.Lock()
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, LedgerCorruptError) as exc:
            if not _is_corrupt(exc) or not self.path.exists():
                raise
            self.recovered_from = self._move_aside()
            log.error(  # noqa: TRY400 - the reason is the message; a traceback adds nothing
                "ledger unreadable, moved aside and started afresh; active bans were lost",
                path=str(self.path),
                moved_to=str(self.recovered_from),
                error=str(exc),
            )
            self._db = self._open()

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Set the pragmas, check the file and create or verify the schema."""
        if not self.in_memory:
            try:
                self.path.chmod(0o600)  # it holds addresses and reasons: owner only
            except OSError as exc:
                log.warning(
                    "cannot restrict ledger permissions", path=str(self.path), error=str(exc)
                )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerCorruptError(
                f"ledger schema version {version} is newer than this aisentinel "
                f"understands ({SCHEMA_VERSION})"
            )
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise LedgerCorruptError("integrity check failed")
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(decisions)"))
        if columns and columns != _COLUMNS:
            raise LedgerCorruptError(f"unexpected columns in table decisions: {columns}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One locked write transaction: committed on success, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record(self, decision: Decision) -> int:
        """Store a decision and return its row id.

        A BAN ends any still-open ban of the same target (only the newest counts).
        """
        d = decision
        with self._write():
            if d.action is Action.BAN:
                self._db.execute(
                    "UPDATE decisions SET ended_at = ? WHERE action = 'ban' AND target = ? "
                    "AND ended_at IS NULL",
                    (d.ts, d.target),
                )
            cur = self._db.execute(
                "INSERT INTO decisions (ts, action, target, detector, severity, reason, ttl, "
                "expires_at, offence, simulated, evidence_count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d.ts,
                    d.action.value,
                    d.target,
                    d.detector,
                    int(d.severity),
                    d.reason,
                    d.ttl,
                    d.expires_at,
                    d.offence,
                    int(d.simulated),
                    d.evidence_count,
                ),
            )
            return int(cur.lastrowid or 0)

    def end(self, targets: Iterable[str], at: float) -> int:
        """Close the open bans of ``targets`` (their expiry was handled); returns rows closed."""
        with self._write():
            closed = 0
            for target in targets:
                cur = self._db.execute(
                    "UPDATE decisions SET ended_at = ? WHERE action = 'ban' AND target = ? "
                    "AND ended_at IS NULL",
                    (at, target),
                )
                closed += cur.rowcount
            return closed

    def remove(self, target: str) -> int:
        """Manual unban: close the open ban of ``target`` and forgive its history.

        Forgiven bans no longer count as offences. Returns how many open bans were
        closed (0 when ``target`` was not banned).
        """
        now = self.clock.now()
        with self._write():
            cur = self._db.execute(
                "UPDATE decisions SET ended_at = ? WHERE action = 'ban' AND target = ? "
                "AND ended_at IS NULL",
                (now, target),
            )
            self._db.execute(
                "UPDATE decisions SET forgiven = 1 WHERE action = 'ban' AND target = ?",
                (target,),
            )
            return cur.rowcount

    def purge(self, before: float) -> int:
        """Delete history older than ``before``; open bans are kept. Returns rows deleted."""
        with self._write():
            cur = self._db.execute(
                "DELETE FROM decisions WHERE ts < ? AND (action != 'ban' OR ended_at IS NOT NULL)",
                (before,),
            )
            return cur.rowcount

    # ------------------------------------------------------------------ reading

    def active(self, now: float) -> list[Decision]:
        """Open bans with ``expires_at > now``, soonest expiry first."""
        return self._bans("AND expires_at > ?", (now,))

    def open_bans(self) -> list[Decision]:
        """Every open ban, expired or not (what a starting engine restores)."""
        return self._bans("", ())

    def offences(self, target: str, since: float) -> int:
        """Bans of ``target`` decided at or after ``since``, forgiven ones excluded."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM decisions WHERE action = 'ban' AND target = ? "
                "AND ts >= ? AND forgiven = 0",
                (target, since),
            ).fetchone()
        return int(row[0])

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
        """The newest ``limit`` decisions about ``target``, newest first."""
        with self._lock:
            rows = self._db.execute(
                _SELECT + " WHERE target = ? ORDER BY ts DESC, id DESC LIMIT ?", (target, limit)
            ).fetchall()
        return [_decision(row) for row in rows]

    def close(self) -> None:
        """Checkpoint and close; further calls fail with ``sqlite3.ProgrammingError``."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("ledger checkpoint failed", path=str(self.path), error=str(exc))
            self._db.close()

    def _bans(self, where: str, params: tuple[float, ...]) -> list[Decision]:
        with self._lock:
            rows = self._db.execute(
                _SELECT
                + " WHERE action = 'ban' AND ended_at IS NULL "
                + where
                + " ORDER BY expires_at, id",
                params,
            ).fetchall()
        return [_decision(row) for row in rows]


def _decision(row: _Row) -> Decision:
    ts, action, target, detector, severity, reason, ttl, expires_at, offence, sim, evidence = row
    try:
        sev = Severity(severity)
    except ValueError:
        sev = Severity.INFO
    return Decision(
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
