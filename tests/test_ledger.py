"""The SQLite decision ledger: persistence, offences, purge, corruption recovery."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from aisentinel.clock import FakeClock
from aisentinel.decisions.ledger import MEMORY, SCHEMA_VERSION, Ledger
from aisentinel.events import Action, Decision, Severity

T0 = 1_764_000_000.0


def ban(target: str, ts: float = T0, ttl: float = 3600.0, **kw: object) -> Decision:
    fields: dict[str, object] = {
        "ts": ts,
        "action": Action.BAN,
        "target": target,
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
        target=target,
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
    assert [d.target for d in ledger.active(T0 + 200)] == ["203.0.113.2"]
    assert [d.target for d in ledger.open_bans()] == ["203.0.113.1", "203.0.113.2"]


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
    assert [d.target for d in ledger.active(T0)] == ["198.51.100.1"]
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
    assert ledger.counts() == {Action.BAN: 1, Action.ALERT: 1, Action.NONE: 0}
    assert [d.target for d in ledger.open_bans()] == ["203.0.113.3"]


def test_data_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """A second ledger on the same file sees what the first recorded."""
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path, clock)
    first.record(ban("203.0.113.7"))
    first.record(alert(None))
    first.close()
    second = Ledger(path, clock)
    assert [d.target for d in second.active(T0)] == ["203.0.113.7"]
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
    assert seen == [{Action.BAN: 1, Action.ALERT: 0, Action.NONE: 0}]


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
    assert [d.target for d in ledger.active(T0 + 1)] == ["198.51.100.9"]
    ledger.close()
    assert list(tmp_path.iterdir()) == []
