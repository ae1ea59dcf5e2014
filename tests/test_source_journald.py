"""The journald source: entry formatting, matches, cursor restarts, missing systemd-python.

Real journal files are written with ``systemd-journal-remote`` from the journal export
format, so no running journald is needed.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from aisentinel.clock import FakeClock
from aisentinel.events import LineBatch
from aisentinel.sources import REGISTRY, journald
from aisentinel.sources.journald import (
    JournaldSource,
    JournaldSourceConfig,
    format_entry,
    journald_available,
)

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
BOOT_ID = "0123456789abcdef0123456789abcdef"
BASE_US = 1_795_734_870_123_456  # 2026-11-26T23:14:30.123456Z

needs_journal = pytest.mark.skipif(
    not journald_available() or not JOURNAL_REMOTE.exists(),
    reason="needs systemd-python (pip install systemd-python) and systemd-journal-remote",
)


class Collector:
    """A thread-safe ``emit`` that keeps every line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def __call__(self, batch: LineBatch) -> None:
        assert batch.source == "ssh"
        assert batch.parser == "sshd"
        with self._lock:
            self._lines.extend(batch.lines)

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def entry(seq: int, message: str, comm: str = "sshd", pid: int = 4242) -> dict[str, str]:
    return {
        "__REALTIME_TIMESTAMP": str(BASE_US + seq * 1_000_000),
        "__MONOTONIC_TIMESTAMP": str(1000 + seq * 1_000_000),
        "_BOOT_ID": BOOT_ID,
        "_HOSTNAME": "web1",
        "_PID": str(pid),
        "_COMM": comm,
        "SYSLOG_IDENTIFIER": comm,
        "MESSAGE": message,
    }


def write_journal(path: Path, entries: list[dict[str, str]]) -> None:
    """Write ``entries`` to a new journal file with systemd-journal-remote."""
    export = "".join("".join(f"{k}={v}\n" for k, v in e.items()) + "\n" for e in entries)
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={path}", "-"],
        input=export.encode(),
        check=True,
        capture_output=True,
        timeout=30,
    )


def expected(seq: int, message: str, pid: int = 4242) -> str:
    micros = BASE_US + seq * 1_000_000
    secs, frac = divmod(micros, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{stamp}.{frac:06d}+00:00 web1 sshd[{pid}]: {message}"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[JournaldSource, Collector]]]:
    started: list[JournaldSource] = []

    def start(**kw: Any) -> tuple[JournaldSource, Collector]:
        kw.setdefault("directory", str(tmp_path / "journal"))
        kw.setdefault("poll_interval", 0.1)
        cfg = JournaldSourceConfig(name="ssh", type="journald", parser="sshd", **kw)
        source = JournaldSource(cfg, clock=FakeClock(), state_dir=tmp_path / "state")
        out = Collector()
        source.start(out)
        started.append(source)
        wait_for(source.ready, "the journal to open")
        return source, out

    yield start
    for source in started:
        source.stop()


# ------------------------------------------------------------------ without a journal


def test_format_entry() -> None:
    """Entries become RFC 3339 UTC syslog-like lines the sshd parser reads."""
    line = format_entry(
        {
            "__REALTIME_TIMESTAMP": 1_795_734_870_123_456,
            "_HOSTNAME": "web1",
            "_PID": 4242,
            "_COMM": "sshd",
            "MESSAGE": "Failed password for root from 203.0.113.5 port 22 ssh2",
        }
    )
    assert line == (
        "2026-11-26T23:14:30.123456+00:00 web1 sshd[4242]: "
        "Failed password for root from 203.0.113.5 port 22 ssh2"
    )


def test_format_entry_fallbacks() -> None:
    """SYSLOG_IDENTIFIER wins over _COMM; no pid drops the brackets; bytes and newlines are safe."""
    line = format_entry(
        {
            "__REALTIME_TIMESTAMP": 0,
            "SYSLOG_IDENTIFIER": "sshd-session",
            "_COMM": "sshd",
            "MESSAGE": b"two\nlines \xff",
        }
    )
    assert line == "1970-01-01T00:00:00.000000+00:00 localhost sshd-session: two lines \ufffd"


def test_config_validation() -> None:
    """matches must be FIELD=value; defaults select sshd and OpenSSH 9.8's sshd-session."""
    base: dict[str, Any] = {"name": "ssh", "type": "journald", "parser": "sshd"}
    cfg = JournaldSourceConfig.model_validate(base)
    assert cfg.matches == [
        "_COMM=sshd",
        "SYSLOG_IDENTIFIER=sshd",
        "_COMM=sshd-session",
        "SYSLOG_IDENTIFIER=sshd-session",
    ]
    for bad in (["sshd"], ["comm=sshd"], ["=sshd"], ["__CURSOR=x"], []):
        with pytest.raises(ValidationError):
            JournaldSourceConfig.model_validate({**base, "matches": bad})
    assert REGISTRY.get("journald").factory is JournaldSource


def test_disabled_without_systemd_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without systemd-python, start() warns once, stays down and starts no thread."""
    monkeypatch.setattr(journald, "_journal", None)
    assert not journald_available()
    cfg = JournaldSourceConfig(name="ssh", type="journald", parser="sshd")
    source = JournaldSource(cfg, clock=FakeClock(), state_dir=tmp_path)
    with structlog.testing.capture_logs() as logs:
        source.start(Collector())
    assert [e["event"] for e in logs] == [
        "journald source ssh disabled: systemd-python not installed "
        "(pip install aisentinel[systemd])"
    ]
    assert not source.stats.up
    assert source.stats.state == "error"
    assert "systemd-python" in source.stats.reason
    assert source.ready()
    assert source._thread is None
    source.stop()


def test_journald_problem_names_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """journald_problem says what is missing: the library, or any journal directory."""
    monkeypatch.setattr(journald, "_journal", None)
    assert journald.journald_problem() == "systemd-python is not installed"
    monkeypatch.setattr(journald, "_journal", object())
    monkeypatch.setattr(journald, "JOURNAL_DIRS", (tmp_path / "nope",))
    assert "no journal directory" in (journald.journald_problem() or "")
    monkeypatch.setattr(journald, "JOURNAL_DIRS", (tmp_path,))
    assert journald.journald_problem() is None


# ------------------------------------------------------------------ real journal files


@needs_journal
def test_reads_and_filters_entries(make: Callable[..., Any], tmp_path: Path) -> None:
    """Matching entries are read and formatted; other programs' entries are filtered out."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(
        jdir / "a.journal",
        [
            entry(1, "Invalid user bob from 198.51.100.7 port 2222"),
            entry(2, "tick", comm="cron"),
            entry(3, "Connection closed by 198.51.100.7 port 2222 [preauth]", pid=7),
        ],
    )
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the sshd entries")
    assert out.lines == [
        expected(1, "Invalid user bob from 198.51.100.7 port 2222"),
        expected(3, "Connection closed by 198.51.100.7 port 2222 [preauth]", pid=7),
    ]
    assert source.stats.lines_read == 2
    assert source.stats.up


@needs_journal
def test_start_at_end_reads_only_new(make: Callable[..., Any], tmp_path: Path) -> None:
    """start_at=end skips entries already in the journal and follows new ones."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, "old")])
    _, out = make()
    write_journal(jdir / "b.journal", [entry(2, "new")])
    wait_for(lambda: len(out.lines) >= 1, "the new entry")
    assert out.lines == [expected(2, "new")]


@needs_journal
def test_cursor_restart_reads_only_new(make: Callable[..., Any], tmp_path: Path) -> None:
    """A restart resumes after the saved cursor: no replay, entries written meanwhile read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, "one"), entry(2, "two")])
    first, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the first entries")
    first.stop()
    cursor_file = tmp_path / "state" / "journald-ssh.cursor"
    assert cursor_file.read_text().strip()
    write_journal(jdir / "b.journal", [entry(3, "three")])
    _, out2 = make(start_at="beginning")
    wait_for(lambda: len(out2.lines) >= 1, "the entry written while stopped")
    assert out2.lines == [expected(3, "three")]


@needs_journal
def test_cursor_entry_gone(make: Callable[..., Any], tmp_path: Path) -> None:
    """If the saved entry was vacuumed, the first entry after it is still read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, "one")])
    first, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 1, "the first entry")
    first.stop()
    (jdir / "a.journal").unlink()
    write_journal(jdir / "b.journal", [entry(2, "two"), entry(3, "three")])
    _, out2 = make(start_at="beginning")
    wait_for(lambda: len(out2.lines) >= 2, "the entries after the vacuumed one")
    assert out2.lines == [expected(2, "two"), expected(3, "three")]


@needs_journal
def test_missing_directory_is_retried(make: Callable[..., Any], tmp_path: Path) -> None:
    """A journal directory that does not exist yet is retried, every poll_interval of the
    source's clock, not fatal."""
    jdir = tmp_path / "later"
    source, out = make(directory=str(jdir), start_at="beginning")
    clock = source.clock
    assert isinstance(clock, FakeClock)
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, "hello")])

    def retried() -> bool:
        clock.advance(0.1)  # the retry waits on the injected clock, not real time
        return len(out.lines) >= 1

    wait_for(retried, "the entry in the new directory")
    assert out.lines == [expected(1, "hello")]
    assert source.stats.up


@needs_journal
def test_stop_is_prompt(make: Callable[..., Any], tmp_path: Path) -> None:
    """stop() returns quickly even with a long poll_interval."""
    (tmp_path / "journal").mkdir()
    source, _ = make(poll_interval=120)
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 5.0
    assert not source.stats.up


@needs_journal
def test_state_follows_the_open_journal(make: Callable[..., Any], tmp_path: Path) -> None:
    """Up and following while the journal is open; stopped after stop()."""
    (tmp_path / "journal").mkdir()
    write_journal(tmp_path / "journal" / "a.journal", [entry(1, "one")])
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) == 1, "the entry")
    assert source.stats.state == "following"
    assert source.stats.up
    source.stop()
    assert source.stats.state == "stopped"
    assert not source.stats.up


@needs_journal
def test_cursor_save_failure_degrades_and_keeps_reading(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A cursor that cannot be saved: logged once, counted, degraded; entries still read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    (tmp_path / "state" / "journald-ssh.cursor").mkdir(parents=True)
    write_journal(jdir / "a.journal", [entry(1, "one")])
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at="beginning")
        wait_for(lambda: len(out.lines) == 1, "the first entry")
        write_journal(jdir / "b.journal", [entry(2, "two")])
        wait_for(lambda: len(out.lines) == 2, "the entry after the failed save")
        clock = source.clock
        assert isinstance(clock, FakeClock)

        def saved_again() -> bool:
            clock.advance(1.0)  # saves are tried every SAVE_INTERVAL of the source's clock
            return source.stats.position_errors >= 2

        wait_for(saved_again, "the failures to be counted")
    assert source.stats.state == "degraded"
    assert source.stats.up
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["path"] == str(tmp_path / "state" / "journald-ssh.cursor")
