"""The SQLite decision ledger: persistence, offences, purge, corruption recovery."""

from __future__ import annotations

import ctypes
import errno
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.decisions import ledger as ledger_module
from aisentinel.decisions.ledger import MEMORY, SCHEMA_VERSION, Ledger
from aisentinel.events import Action, AddressTarget, Decision, Severity

T0 = 1_764_000_000.0


def text(decision: Decision) -> str:
    """The decision's target as text ("" when it has none)."""
    return decision.target.text if decision.target is not None else ""


def ban(target: str, ts: float = T0, ttl: float = 3600.0, **kw: object) -> Decision:
    fields: dict[str, object] = {
        "ts": ts,
        "action": Action.BAN,
        "target": AddressTarget.parse(target),
        "detector": "ssh_bruteforce",
        "severity": Severity.HIGH,
        "reason": "test ban",
        "ttl": ttl,
        "expires_at": ts + ttl,
        "offence": 1,
        "evidence_count": 7,
    }
    fields.update(kw)
    return Decision(**fields)  # type: ignore[arg-type]


def alert(target: str | None, ts: float = T0) -> Decision:
    return Decision(
        ts=ts,
        action=Action.ALERT,
        target=None if target is None else AddressTarget.parse(target),
        detector="http_scan",
        severity=Severity.MEDIUM,
        reason="test alert",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ledger(tmp_path: Path, clock: FakeClock) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.sqlite", clock)


def test_record_and_active_round_trip(ledger: Ledger) -> None:
    """A recorded ban comes back from ``active`` with every field intact."""
    d = ban("203.0.113.7", offence=3, simulated=True)
    assert ledger.record(d) > 0
    assert ledger.active(T0) == [d]


def test_active_excludes_expired_ended_and_alerts(ledger: Ledger) -> None:
    """Only open bans whose expiry is after ``now`` are active."""
    ledger.record(ban("203.0.113.1", ttl=100))
    ledger.record(ban("203.0.113.2", ttl=1000))
    ledger.record(ban("203.0.113.3", ttl=1000))
    ledger.record(alert("203.0.113.4"))
    assert ledger.end(["203.0.113.3"], T0 + 1) == 1
    assert [text(d) for d in ledger.active(T0 + 200)] == ["203.0.113.2"]
    assert [text(d) for d in ledger.open_bans()] == ["203.0.113.1", "203.0.113.2"]


def test_new_ban_closes_the_previous_open_ban(ledger: Ledger) -> None:
    """Recording a ban of a target ends that target's older open ban."""
    ledger.record(ban("203.0.113.7", ts=T0, ttl=60))
    ledger.record(ban("203.0.113.7", ts=T0 + 120, ttl=3600, offence=2))
    bans = ledger.open_bans()
    assert len(bans) == 1
    assert bans[0].offence == 2


def test_offences_count_bans_in_window_only(ledger: Ledger) -> None:
    """Offences are bans of the target since ``since``; alerts and other targets do not count."""
    ledger.record(ban("203.0.113.7", ts=T0 - 10 * 86400))
    ledger.record(ban("203.0.113.7", ts=T0 - 3 * 86400))
    ledger.record(ban("203.0.113.7", ts=T0 - 86400))
    ledger.record(alert("203.0.113.7"))
    ledger.record(ban("198.51.100.1"))
    assert ledger.offences("203.0.113.7", T0 - 7 * 86400) == 2
    assert ledger.offences("203.0.113.7", T0 - 30 * 86400) == 3
    assert ledger.offences("192.0.2.1", 0) == 0


def test_remove_lifts_and_forgives(ledger: Ledger) -> None:
    """A manual unban closes the open ban and its history stops counting as offences."""
    ledger.record(ban("203.0.113.7", ts=T0 - 86400))
    ledger.record(ban("203.0.113.7"))
    ledger.record(ban("198.51.100.1"))
    assert ledger.remove("203.0.113.7") == 1
    assert [text(d) for d in ledger.active(T0)] == ["198.51.100.1"]
    assert ledger.offences("203.0.113.7", 0) == 0
    assert ledger.remove("203.0.113.7") == 0
    assert len(ledger.history("203.0.113.7")) == 2


def test_purge_drops_old_history_but_keeps_open_bans(ledger: Ledger) -> None:
    """Purging removes old alerts and ended bans; an open ban survives however old."""
    old = T0 - 40 * 86400
    ledger.record(alert("203.0.113.1", ts=old))
    ledger.record(ban("203.0.113.2", ts=old))
    ledger.end(["203.0.113.2"], old + 3600)
    ledger.record(ban("203.0.113.3", ts=old, ttl=90 * 86400))
    ledger.record(alert("203.0.113.4"))
    assert ledger.purge(T0 - 30 * 86400) == 2
    assert ledger.counts() == {**dict.fromkeys(Action, 0), Action.BAN: 1, Action.ALERT: 1}
    assert [text(d) for d in ledger.open_bans()] == ["203.0.113.3"]


def test_purge_with_limit_deletes_a_batch_per_call(ledger: Ledger) -> None:
    """purge with a limit deletes at most that many rows of a table per call, the oldest
    history first and open bans never; calls until fewer come back purge it all."""
    old = T0 - 40 * 86400
    for i in range(5):
        ledger.record(alert(f"203.0.113.{i + 1}", ts=old + i))
    ledger.record(ban("198.51.100.1", ts=old, ttl=90 * 86400))
    ledger.record(alert("192.0.2.1"))
    assert [ledger.purge(T0 - 86400, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert ledger.counts() == {**dict.fromkeys(Action, 0), Action.BAN: 1, Action.ALERT: 1}
    assert [text(d) for d in ledger.open_bans()] == ["198.51.100.1"]


def test_size_bytes_counts_the_file_and_its_wal(ledger: Ledger, clock: FakeClock) -> None:
    """size_bytes is the ledger file's size plus its WAL's, and 0 for one in memory."""
    for i in range(200):
        ledger.record(alert(f"203.0.113.{i}"))
    wal = ledger.path.with_name(ledger.path.name + "-wal")
    expected = ledger.path.stat().st_size + wal.stat().st_size
    assert wal.stat().st_size > 0
    assert ledger.size_bytes() == expected
    assert Ledger(Path(MEMORY), clock).size_bytes() == 0


def test_runtime_allows_are_kept_until_they_end_and_purged_after(ledger: Ledger) -> None:
    """allows(now) lists the entries not ended yet (a newer one for a network replaces
    it); purge drops those that ended before its horizon."""
    ledger.record_allow("198.51.100.0/24", T0, T0 + 3600, "root", "vpn")
    ledger.record_allow("198.51.100.0/24", T0, T0 + 7200, "alice")
    ledger.record_allow("2001:db8::/64", T0, T0 + 60, "root")
    assert ledger.allows(T0) == [
        ("2001:db8::/64", T0 + 60, "root", ""),
        ("198.51.100.0/24", T0 + 7200, "alice", ""),
    ]
    assert ledger.allows(T0 + 60) == [("198.51.100.0/24", T0 + 7200, "alice", "")]
    assert ledger.purge(T0 + 61) == 1
    assert ledger.allows(T0) == [("198.51.100.0/24", T0 + 7200, "alice", "")]


def test_shift_allows_moves_only_the_entries_still_in_force(ledger: Ledger) -> None:
    """shift_allows(seconds, after) moves the expiry of the entries ending after
    ``after`` and leaves the ended ones (history) as they were."""
    ledger.record_allow("198.51.100.0/24", T0, T0 + 3600, "root")
    ledger.record_allow("2001:db8::/64", T0 - 600, T0 - 60, "root")
    assert ledger.shift_allows(-86400, T0) == 1
    assert ledger.allows(T0 - 86400) == [
        ("198.51.100.0/24", T0 + 3600 - 86400, "root", ""),
        ("2001:db8::/64", T0 - 60, "root", ""),
    ]


def test_cap_expiries_leaves_at_most_the_ttl_from_now(ledger: Ledger) -> None:
    """cap_expiries(now, slack) ends a ban or allow made "in the future" (more than its
    whole TTL left, by over slack) its TTL after now, and leaves the others alone."""
    ledger.record(ban("203.0.113.7", ts=T0, ttl=3600))
    ledger.record(ban("203.0.113.8", ts=T0 - 86400, ttl=3600))
    ledger.record_allow("198.51.100.0/24", T0, T0 + 3600, "root")
    ledger.record_allow("2001:db8::/64", T0 - 86400, T0 - 86400 + 7200, "root")
    now = T0 - 86400 + 60
    assert ledger.cap_expiries(now, 5.0) == 2
    assert [(text(d), d.expires_at) for d in ledger.open_bans()] == [
        ("203.0.113.8", T0 - 86400 + 3600),
        ("203.0.113.7", now + 3600),
    ]
    assert ledger.allows(now) == [
        ("198.51.100.0/24", now + 3600, "root", ""),
        ("2001:db8::/64", T0 - 86400 + 7200, "root", ""),
    ]
    assert ledger.cap_expiries(now, 5.0) == 0


def test_ledger_without_allows_and_brake_gets_them_and_stays_version_2(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A ledger written before the allows and brake tables opens in place: its bans stay,
    the tables are added and user_version stays 2, so the release before still reads it."""
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path, clock)
    first.record(ban("203.0.113.7"))
    first.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE allows")  # what aisentinel wrote before these tables
    db.execute("DROP TABLE brake")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    second = Ledger(path, clock)
    assert second.recovered_from is None
    assert [text(d) for d in second.active(T0)] == ["203.0.113.7"]
    second.record_allow("198.51.100.0/24", T0, T0 + 60, "root")
    second.save_brake(T0, None, T0)
    assert [a[0] for a in second.allows(T0)] == ["198.51.100.0/24"]
    second.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_data_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """A second ledger on the same file sees what the first recorded."""
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path, clock)
    first.record(ban("203.0.113.7"))
    first.record(alert(None))
    first.close()
    second = Ledger(path, clock)
    assert [text(d) for d in second.active(T0)] == ["203.0.113.7"]
    assert second.counts()[Action.ALERT] == 1
    assert second.recovered_from is None


def test_wal_mode_schema_version_and_permissions(ledger: Ledger) -> None:
    """The file is in WAL mode, carries the schema version and is readable by its owner only."""
    ledger.record(ban("203.0.113.7"))
    db = sqlite3.connect(ledger.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
    assert ledger.path.stat().st_mode & 0o777 == 0o600


def test_corrupt_file_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    """A file that is not a database is kept under another name and a fresh ledger starts."""
    path = tmp_path / "ledger.sqlite"
    garbage = b"this is not sqlite at all\x00" * 200
    path.write_bytes(garbage)
    ledger = Ledger(path, clock)
    assert ledger.recovered_from == tmp_path / f"ledger.sqlite.corrupt-{int(T0)}"
    assert ledger.recovered_from.read_bytes() == garbage
    ledger.record(ban("203.0.113.7"))
    assert len(ledger.active(T0)) == 1


def test_second_corrupt_file_gets_its_own_name(tmp_path: Path, clock: FakeClock) -> None:
    """Moving aside never overwrites an earlier moved-aside file."""
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"garbage one" * 100)
    first = Ledger(path, clock)
    first.close()
    path.unlink()
    path.write_bytes(b"garbage two" * 100)
    second = Ledger(path, clock)
    assert first.recovered_from is not None
    assert second.recovered_from is not None
    assert second.recovered_from != first.recovered_from
    assert first.recovered_from.read_bytes() == b"garbage one" * 100


def test_newer_schema_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    """A ledger from a newer aisentinel is not misread: it is moved aside."""
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    ledger = Ledger(path, clock)
    assert ledger.recovered_from is not None
    assert ledger.open_bans() == []


def test_foreign_table_layout_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    """A database whose ``decisions`` table has other columns is treated as corrupt."""
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY, what TEXT)")
    db.commit()
    db.close()
    ledger = Ledger(path, clock)
    assert ledger.recovered_from is not None
    ledger.record(ban("203.0.113.7"))
    assert len(ledger.open_bans()) == 1


def test_unopenable_path_raises_and_moves_nothing(tmp_path: Path, clock: FakeClock) -> None:
    """A path that cannot hold a database is an error, not a reason to move files."""
    path = tmp_path / "a-directory"
    path.mkdir()
    with pytest.raises(sqlite3.OperationalError):
        Ledger(path, clock)
    assert path.is_dir()


def test_counts_readable_from_another_thread(ledger: Ledger) -> None:
    """The exporter thread can read counts while the pipeline thread owns the ledger."""
    ledger.record(ban("203.0.113.7"))
    seen: list[dict[Action, int]] = []
    reader = threading.Thread(target=lambda: seen.append(ledger.counts()))
    reader.start()
    reader.join(timeout=10)
    assert seen == [{**dict.fromkeys(Action, 0), Action.BAN: 1}]


def test_failed_write_rolls_back(ledger: Ledger) -> None:
    """A write that fails half-way leaves the previous ban open."""
    ledger.record(ban("203.0.113.7"))
    bad = ban("203.0.113.7", ts=T0 + 10, detector=None)
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record(bad)
    assert len(ledger.open_bans()) == 1


def test_memory_ledger_writes_nothing_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger at ':memory:' records and answers within the process and creates no file."""
    monkeypatch.chdir(tmp_path)
    clock = FakeClock(T0)
    ledger = Ledger(Path(MEMORY), clock)
    assert ledger.in_memory
    ledger.record(ban("198.51.100.9"))
    assert [text(d) for d in ledger.active(T0 + 1)] == ["198.51.100.9"]
    ledger.close()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- disk full at run time

BIG = "x" * 8192
"""A reason long enough to need new pages, so a capped database cannot take it."""


def _cap(ledger: Ledger, pages: int | None) -> None:
    """Cap the file at its current size (None: lift the cap): sqlite's own 'disk is full'."""
    ledger._db.execute(f"PRAGMA max_page_count = {pages or 1_000_000}")


def test_full_disk_keeps_writes_and_flushes_them_in_order(ledger: Ledger) -> None:
    """Writes refused for space are counted, kept in order and written once space is back."""
    ledger.record(ban("203.0.113.1"))
    _cap(ledger, 1)
    with capture_logs() as logs:
        assert ledger.record(ban("203.0.113.2", ts=T0 + 1, reason=BIG)) == 0
        assert ledger.record(ban("203.0.113.2", ts=T0 + 2, reason=BIG)) == 0
        assert ledger.end(["203.0.113.1"], T0 + 3) == 0
    assert ledger.write_errors == 3
    assert ledger.backlog == 3
    assert ledger.failing is not None
    assert "database or disk is full" in ledger.failing
    assert [e["event"] for e in logs].count(logs[0]["event"]) == 1
    assert logs[0]["log_level"] == "error"
    assert "df -h" in logs[0]["fix"]
    assert ledger.flush() == 0  # still full: nothing written, nothing logged again
    _cap(ledger, None)
    with capture_logs() as logs:
        assert ledger.flush() == 3
    assert [e["event"] for e in logs] == ["ledger writes recovered"]
    assert ledger.failing is None
    assert ledger.backlog == 0
    assert [(text(d), d.ts) for d in ledger.open_bans()] == [("203.0.113.2", T0 + 2)]


def test_next_write_flushes_the_backlog_first(ledger: Ledger) -> None:
    """Once space is back, the next write goes in after the ones that waited."""
    _cap(ledger, 1)
    ledger.record(ban("203.0.113.3", reason=BIG))
    _cap(ledger, None)
    assert ledger.record(ban("203.0.113.3", ts=T0 + 5)) > 0
    assert [(text(d), d.ts) for d in ledger.open_bans()] == [("203.0.113.3", T0 + 5)]
    assert ledger.failing is None


def test_backlog_is_bounded(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond BACKLOG_MAX waiting writes the oldest are dropped and counted."""
    monkeypatch.setattr(ledger_module, "BACKLOG_MAX", 2)
    _cap(ledger, 1)
    for i in range(4):
        ledger.record(ban(f"203.0.113.{10 + i}", reason=BIG))
    assert ledger.backlog == 2
    assert ledger.dropped == 2
    assert ledger.write_errors == 4
    _cap(ledger, None)
    ledger.flush()
    assert sorted(text(d) for d in ledger.open_bans()) == ["203.0.113.12", "203.0.113.13"]


def test_the_seen_mark_never_waits_in_the_backlog(ledger: Ledger) -> None:
    """While writes fail, the engine's minutely wall-time mark is not kept for a retry
    (the backlog's decisions are not pushed out by it); once they pass, it is stored."""
    _cap(ledger, 1)
    ledger.record(ban("203.0.113.21", reason=BIG))
    for i in range(3):
        ledger.mark_seen(T0 + 60 * i)
    assert ledger.backlog == 1
    _cap(ledger, None)
    ledger.flush()
    assert ledger.seen() is None
    ledger.mark_seen(T0 + 600)
    assert ledger.seen() == T0 + 600


def test_close_writes_the_backlog(tmp_path: Path, clock: FakeClock) -> None:
    """Closing writes what waited when the disk takes it again."""
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, clock)
    _cap(ledger, 1)
    ledger.record(ban("203.0.113.20", reason=BIG))
    _cap(ledger, None)
    ledger.close()
    again = Ledger(path, clock)
    assert [text(d) for d in again.open_bans()] == ["203.0.113.20"]


def test_other_errors_still_raise(ledger: Ledger) -> None:
    """Only errors that may pass are kept for later; a closed ledger still raises."""
    ledger.close()
    with pytest.raises(sqlite3.ProgrammingError):
        ledger.record(ban("203.0.113.21"))
    assert ledger.backlog == 0


def _fill(fd: int) -> None:
    """Write to ``fd`` until the file system is full (raises OSError ENOSPC)."""
    for _ in range(1024):
        os.write(fd, b"\0" * 4096)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_real_full_file_system_is_survived(tmp_path: Path, clock: FakeClock) -> None:
    """On a file system that fills up, writes wait and go in once a file is deleted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        check=False,
        capture_output=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        ledger = Ledger(mnt / "ledger.sqlite", clock)
        ledger.record(ban("203.0.113.30"))
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space"):
                _fill(fd)
        finally:
            os.close(fd)
        for i in range(3):
            ledger.record(ban(f"203.0.114.{i}", reason=BIG))
        assert ledger.failing is not None
        assert ledger.write_errors > 0
        filler.unlink()
        ledger.flush()
        assert ledger.failing is None
        assert len(ledger.open_bans()) == 4
        ledger.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --------------------------------------------------------------------------- in-memory copy


def test_in_memory_copy_keeps_the_files_bans(tmp_path: Path, clock: FakeClock) -> None:
    """A copy in memory starts with the file's open bans and never writes the file."""
    path = tmp_path / "ledger.sqlite"
    original = Ledger(path, clock)
    original.record(ban("203.0.113.40"))
    original.close()
    before = path.read_bytes()
    copy, problem = Ledger.in_memory_copy(path, clock)
    assert problem is None
    assert copy.in_memory
    assert [text(d) for d in copy.open_bans()] == ["203.0.113.40"]
    copy.record(ban("203.0.113.41"))
    assert len(copy.open_bans()) == 2
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["directory", "garbage", "missing"])
def test_in_memory_copy_of_an_unusable_file_starts_empty(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    """A directory, a non-database or no file at all gives an empty, working ledger."""
    path = tmp_path / "ledger.sqlite"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    copy, problem = Ledger.in_memory_copy(path, clock)
    assert (problem is None) == (kind == "missing")
    assert copy.open_bans() == []
    copy.record(ban("203.0.113.42"))
    assert len(copy.open_bans()) == 1


def test_held_records_wait_for_release(ledger: Ledger) -> None:
    """Records between hold and release are written together at release, in order:
    the later ban of a target still ends the earlier one."""
    ledger.hold()
    assert ledger.record(ban("203.0.113.7", ttl=60)) == 0
    ledger.record(ban("203.0.113.7", ts=T0 + 1, offence=2))
    ledger.record(alert("203.0.113.8"))
    assert ledger.active(T0) == []
    assert ledger.offences("203.0.113.7", T0) == 2
    assert ledger.release() == 5  # statements: an update and an insert per ban
    assert [d.offence for d in ledger.active(T0)] == [2]
    assert (ledger.counts()[Action.BAN], ledger.counts()[Action.ALERT]) == (2, 1)
    assert ledger.release() == 0


def test_other_writes_and_close_write_what_is_held(tmp_path: Path, clock: FakeClock) -> None:
    """A write that is not a record (end) goes after the held records, in one
    transaction; close writes what is still held."""
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, clock)
    ledger.hold()
    ledger.record(ban("203.0.113.7"))
    assert ledger.end(["203.0.113.7"], T0 + 5) == 1
    ledger.hold()
    ledger.record(ban("203.0.113.9"))
    ledger.close()
    again = Ledger(path, clock)
    assert [text(d) for d in again.active(T0)] == ["203.0.113.9"]
    again.close()


def _sqlite_memory_used() -> int:
    """Bytes SQLite holds in this process (its own counter, all connections)."""
    lib = ctypes.CDLL("libsqlite3.so.0")  # the library the sqlite3 module is linked to
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


def test_page_cache_of_a_ledger_file_stays_small(tmp_path: Path, clock: FakeClock) -> None:
    """A ledger file larger than SQLite's default 2 MiB cache is read with at most
    CACHE_KIB of cached pages, and its answers stay right."""
    base = _sqlite_memory_used()
    ledger = Ledger(tmp_path / "ledger.db", clock)
    targets = [f"198.51.{i >> 8}.{i & 255}" for i in range(12_000)]
    for start in range(0, len(targets), 500):
        ledger.hold()
        for i, target in enumerate(targets[start : start + 500], start):
            ledger.record(ban(target, ts=T0 + i))
        ledger.release()
    assert (tmp_path / "ledger.db").stat().st_size + (tmp_path / "ledger.db-wal").stat().st_size > (
        3 << 20
    )
    assert all(ledger.offences(t, T0) == 1 for t in targets[::7])
    assert len(ledger.active(T0)) == len(targets)
    grown = _sqlite_memory_used() - base
    assert grown < (ledger_module.CACHE_KIB + 512) * 1024, grown
    ledger.close()


def _lock(path: Path) -> sqlite3.Connection:
    """Another connection holding a write transaction on the ledger (an open sqlite3 shell)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO decisions (ts, action, target, detector, severity, reason, offence, "
        "simulated, evidence_count) VALUES (0, 'alert', 'x', 'x', 1, 'x', 0, 0, 0)"
    )
    return holder


def test_a_stand_in_writes_its_decisions_into_the_file_once_the_lock_is_gone(
    tmp_path: Path,
) -> None:
    """A ledger locked by another process is refused with a busy error; its stand-in (an
    in-memory copy) holds the file's bans and its own, and once the lock is gone adopt()
    writes them into the file, which a restart then reads."""
    clock = FakeClock(T0)
    path = tmp_path / "l.sqlite"
    first = Ledger(path, clock)
    first.record(ban("203.0.113.1"))
    first.close()
    holder = _lock(path)
    with pytest.raises(sqlite3.OperationalError) as info:
        Ledger(path, clock, busy_timeout=0.05)
    assert ledger_module.is_busy(info.value)
    stand_in = Ledger.stand_in(path, clock)
    assert [d.target.text for d in stand_in.open_bans() if d.target] == ["203.0.113.1"]
    stand_in.record(ban("203.0.113.2"))
    stand_in.end(["203.0.113.1"], T0 + 1)
    assert not stand_in.adopt()
    holder.execute("ROLLBACK")
    holder.close()
    assert stand_in.adopt()
    assert stand_in.standing_in_for is None
    assert stand_in.path == path
    stand_in.record(ban("203.0.113.3"))  # written to the file directly now
    stand_in.close()
    again = Ledger(path, clock)
    assert [d.target.text for d in again.open_bans() if d.target] == ["203.0.113.2", "203.0.113.3"]
    again.close()


def test_a_stand_in_adopted_after_a_failed_try_writes_each_decision_once(
    tmp_path: Path,
) -> None:
    """adopt() writes the stand-in's journal in one transaction: a try that fails part way
    writes nothing, so the next try does not write the decisions before the fault twice."""
    clock = FakeClock(T0)
    path = tmp_path / "l.sqlite"
    Ledger(path, clock).close()
    holder = _lock(path)
    stand_in = Ledger.stand_in(path, clock)
    holder.execute("ROLLBACK")
    holder.close()
    stand_in.record(ban("203.0.113.2"))
    assert stand_in._journal is not None
    stand_in._journal.append([("INSERT INTO no_such_table VALUES (1)", ())])  # the fault
    with pytest.raises(sqlite3.OperationalError):
        stand_in.adopt()
    stand_in._journal.pop()
    assert stand_in.adopt()
    stand_in.close()
    again = Ledger(path, clock)
    assert again.offences("203.0.113.2", T0 - 1) == 1
    again.close()


# --------------------------------------------------------------------------- locked, links


def test_a_write_that_finds_the_file_locked_waits_in_the_backlog_without_stalling(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the file locked (an admin's sqlite3 shell with a
    transaction open), a write goes to the backlog, the writes of the back-off that
    follows do not even try (each try waits the busy timeout on the pipeline thread), and
    all are written in order once the lock is gone."""
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, clock)
    ledger.set_busy_timeout(0.0)
    tries: list[int] = []
    execute = ledger._execute

    def counted(statements: list[tuple[str, tuple[object, ...]]]) -> list[sqlite3.Cursor]:
        tries.append(len(statements))
        return execute(statements)

    monkeypatch.setattr(ledger, "_execute", counted)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with capture_logs() as logs:
            assert ledger.record(ban("203.0.113.60")) == 0
            assert ledger.record(ban("203.0.113.61", ts=T0 + 1)) == 0
        assert len(tries) == 1  # the second write waited in the backlog, untried
        assert ledger.backlog == 2
        assert ledger.failing is not None
        assert "locked" in ledger.failing
        assert [e["log_level"] for e in logs] == ["error"]
        assert "fuser" in logs[0]["fix"]
        clock.advance(ledger_module.BUSY_BACKOFF_SECONDS)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ledger.record(ban("203.0.113.62", ts=T0 + 2)) > 0
    assert ledger.backlog == 0
    assert ledger.failing is None
    assert [text(d) for d in ledger.open_bans()] == ["203.0.113.60", "203.0.113.61", "203.0.113.62"]
    ledger.close()


def test_the_busy_timeout_can_be_shortened_after_opening(tmp_path: Path, clock: FakeClock) -> None:
    """set_busy_timeout changes how long the open connection waits for another's lock."""
    ledger = Ledger(tmp_path / "ledger.sqlite", clock, busy_timeout=5.0)
    ledger.set_busy_timeout(0.02)
    assert ledger._db.execute("PRAGMA busy_timeout").fetchone()[0] == 20
    ledger.close()


@pytest.mark.parametrize("name", ["ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"])
def test_a_symbolic_link_in_place_of_the_ledger_is_refused_and_never_followed(
    tmp_path: Path, clock: FakeClock, name: str
) -> None:
    """A link at the ledger's path (or its -wal/-shm) is refused with ELOOP before SQLite
    opens anything: the file it names keeps its mode and bytes (a root daemon would have
    made /etc/passwd 0600), and the link stays for the operator to see."""
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    (tmp_path / name).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link") as raised:
        Ledger(tmp_path / "ledger.sqlite", clock)
    assert raised.value.errno == errno.ELOOP
    assert victim.stat().st_mode & 0o777 == 0o644
    assert victim.read_text() == "precious\n"
    assert (tmp_path / name).is_symlink()
    copy, problem = Ledger.in_memory_copy(tmp_path / "ledger.sqlite", clock)
    assert problem is not None
    assert "symbolic link" in problem
    assert copy.open_bans() == []


def test_in_memory_copy_of_a_file_that_cannot_be_looked_at_says_why(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger in a directory this user may not search (Path.exists() raises there in
    Python 3.11) gives an empty copy and the reason, never an exception."""
    path = tmp_path / "locked" / "ledger.sqlite"
    real_stat, real_lstat = Path.stat, Path.lstat

    def refused(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self.parent == path.parent:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self) if follow_symlinks else real_lstat(self)

    monkeypatch.setattr(Path, "stat", refused)
    monkeypatch.setattr(Path, "lstat", lambda self: refused(self, follow_symlinks=False))
    copy, problem = Ledger.in_memory_copy(path, clock)
    assert problem == "Permission denied"
    assert copy.unread == "Permission denied"
    assert copy.open_bans() == []
