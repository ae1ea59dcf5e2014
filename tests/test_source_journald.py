"""The journald source: events from entry fields, matches, cursor restarts, no systemd-python.

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

from aisentinel.cli import config_warnings
from aisentinel.clock import FakeClock
from aisentinel.config import ConfigError, load_config, parse_config
from aisentinel.events import Batch, EventBatch, SshEvent, SshKind, XidEvent
from aisentinel.sources import REGISTRY, journald
from aisentinel.sources.journald import (
    JournaldSource,
    JournaldSourceConfig,
    entry_event,
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
    """A thread-safe ``emit`` that keeps every event and counts entries without one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[object] = []
        self.unparsed = 0
        self.sizes: list[int] = []
        """Entries in each batch handed on (events and unparsed)."""
        self.seqs: list[int] = []
        """The number of each batch (0 unless the source has acks)."""
        self.unrecognised = 0
        """Entries the source told it cannot read (not sshd's, nor the kernel's)."""
        self.judged: set[str] = set()

    def __call__(self, batch: Batch) -> None:
        assert isinstance(batch, EventBatch)
        assert batch.source == "ssh"
        with self._lock:
            self._events.extend(batch.events)
            self.unparsed += batch.unparsed
            self.unrecognised += batch.unrecognised
            self.judged.add(batch.judged)
            self.sizes.append(len(batch.events) + batch.unparsed)
            self.seqs.append(batch.seq)

    @property
    def lines(self) -> list[object]:
        with self._lock:
            return list(self._events)


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
        "_UID": "0",
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


def attempt(seq: int) -> str:
    """An sshd message about a failed login by user ``u<seq>`` from 198.51.100.<seq>."""
    return f"Invalid user u{seq} from 198.51.100.{seq} port 2222"


def expected(seq: int, pid: int = 4242) -> SshEvent:
    """The event the source makes of ``entry(seq, attempt(seq), pid=pid)``."""
    ts = (BASE_US + seq * 1_000_000) / 1e6
    return SshEvent(ts, "ssh", f"198.51.100.{seq}", SshKind.INVALID_USER, f"u{seq}", 2222, pid)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[JournaldSource, Collector]]]:
    started: list[JournaldSource] = []

    def start(*, acks: bool = False, **kw: Any) -> tuple[JournaldSource, Collector]:
        kw.setdefault("directory", str(tmp_path / "journal"))
        kw.setdefault("poll_interval", 0.1)
        cfg = JournaldSourceConfig(name="ssh", type="journald", **kw)
        source = JournaldSource(cfg, clock=FakeClock(), state_dir=tmp_path / "state")
        source.acks = acks
        out = Collector()
        source.start(out)
        started.append(source)
        wait_for(source.ready, "the journal to open")
        return source, out

    yield start
    for source in started:
        source.stop()


# ------------------------------------------------------------------ without a journal


def test_entry_event_from_fields() -> None:
    """An entry becomes an SshEvent with ts, client, kind, user, port and pid from its fields."""
    event = entry_event(
        {
            "__REALTIME_TIMESTAMP": 1_795_734_870_123_456,
            "_HOSTNAME": "web1",
            "_PID": "4242",
            "_UID": "0",
            "_SYSTEMD_UNIT": "ssh.service",
            "SYSLOG_IDENTIFIER": "sshd",
            "MESSAGE": "Failed password for root from 203.0.113.5 port 22 ssh2",
        },
        "ssh",
    )
    assert event == SshEvent(
        1_795_734_870.123456, "ssh", "203.0.113.5", SshKind.FAILED_PASSWORD, "root", 22, 4242
    )


def test_entry_event_fallbacks() -> None:
    """The unit or _COMM identifies sshd, SYSLOG_PID stands in for _PID, bytes/newlines are safe."""
    by_unit = entry_event(
        {
            "__REALTIME_TIMESTAMP": BASE_US,
            "_SYSTEMD_UNIT": "sshd@3-192.0.2.1:22-203.0.113.9:5000.service",
            "SYSLOG_PID": 77,
            "_UID": b"0",
            "MESSAGE": b"Accepted publickey for alice from 2001:db8::1 port 5000 ssh2",
        },
        "ssh",
    )
    assert by_unit is not None
    assert (by_unit.kind, by_unit.user, by_unit.client, by_unit.pid) == (
        SshKind.ACCEPTED,
        "alice",
        "2001:db8::1",
        77,
    )
    wrapped = entry_event(
        {
            "__REALTIME_TIMESTAMP": BASE_US,
            "_COMM": "sshd-session",
            "_UID": "0",
            "MESSAGE": "Connection closed by\n203.0.113.9 port 1 [preauth]",
        },
        "ssh",
    )
    assert wrapped is not None
    assert (wrapped.kind, wrapped.client, wrapped.pid) == (SshKind.PREAUTH, "203.0.113.9", None)


def test_entry_event_refuses_other_entries() -> None:
    """Another program, a message not about authentication or an absurd time give no event."""
    msg = "Failed password for root from 203.0.113.5 port 22 ssh2"
    base = {"__REALTIME_TIMESTAMP": BASE_US, "SYSLOG_IDENTIFIER": "sshd", "MESSAGE": msg}
    base["_UID"] = "0"
    assert entry_event(base, "ssh") is not None
    assert entry_event({**base, "SYSLOG_IDENTIFIER": "cron", "_COMM": "cron"}, "ssh") is None
    assert entry_event({**base, "MESSAGE": "Server listening on 0.0.0.0 port 22."}, "ssh") is None
    assert entry_event({**base, "__REALTIME_TIMESTAMP": 0}, "ssh") is None
    assert entry_event({**base, "MESSAGE": ""}, "ssh") is None


def test_entry_event_trusts_only_root_sshd_entries() -> None:
    """An sshd-looking entry written by another user (``logger -t sshd``, a binary named
    sshd) or without journald's _UID gives no event; sshd_uids widens the trusted users."""
    msg = "Failed password for root from 198.51.100.7 port 22 ssh2"
    root = {
        "__REALTIME_TIMESTAMP": BASE_US,
        "_UID": b"0",
        "_COMM": b"sshd",
        "SYSLOG_IDENTIFIER": b"sshd",
        "MESSAGE": msg.encode(),
    }
    assert entry_event(root, "ssh") is not None
    logger = {**root, "_UID": b"1000", "_COMM": b"logger", "_SYSTEMD_UNIT": b"session-7.scope"}
    renamed = {**root, "_UID": b"1000"}
    unit = {**root, "_UID": b"1000", "_SYSTEMD_UNIT": b"ssh.service"}
    untrusted = {k: v for k, v in root.items() if k != "_UID"}
    for forged in (logger, renamed, unit, untrusted):
        assert entry_event(forged, "ssh") is None, forged
    container = {**root, "_UID": b"100000"}
    assert entry_event(container, "ssh", frozenset({"0", "100000"})) is not None
    cfg = JournaldSourceConfig.model_validate({"name": "ssh", "type": "journald"})
    assert cfg.sshd_uids == [0]
    for bad in ([], [-1], ["root"]):
        with pytest.raises(ValidationError, match="sshd_uids"):
            JournaldSourceConfig.model_validate({"name": "s", "type": "journald", "sshd_uids": bad})


def test_a_source_rebuilt_at_a_reload_carries_on_its_counters_and_xid_counts(
    tmp_path: Path,
) -> None:
    """A journald source replacing one of the same name goes on from its line counters
    and its kernel Xid counts (aisentinel_gpu_kernel_xid_errors_total never goes back)."""
    cfg = JournaldSourceConfig(name="ssh", type="journald", kernel_xid=True)
    old = JournaldSource(cfg, clock=FakeClock(), state_dir=tmp_path)
    old.stats.lines_read = 7
    old._xids[("0000:01:00.0", "79")] = [2.0, 100.0]
    new = JournaldSource(cfg, clock=FakeClock(), state_dir=tmp_path)
    new._xids[("0000:01:00.0", "79")] = [1.0, 50.0]
    new.carry_over(old)
    assert new.stats.lines_read == 7
    assert new._xids == {("0000:01:00.0", "79"): [3.0, 100.0]}


def test_config_validation() -> None:
    """matches must be FIELD=value; defaults select sshd and OpenSSH 9.8's sshd-session;
    batch_entries is 512 unless set, within 1-65536; reopen_entries 5,000, within 100-1e7."""
    base: dict[str, Any] = {"name": "ssh", "type": "journald"}
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
    assert cfg.batch_entries == 512
    for size in (0, 65537):
        with pytest.raises(ValidationError):
            JournaldSourceConfig.model_validate({**base, "batch_entries": size})
    assert cfg.reopen_entries == 5000
    low = JournaldSourceConfig.model_validate({**base, "reopen_entries": 100})
    assert low.reopen_entries == 100
    for size in (0, 99, 10_000_001):
        with pytest.raises(ValidationError, match="reopen_entries"):
            JournaldSourceConfig.model_validate({**base, "reopen_entries": size})
    assert REGISTRY.get("journald").factory is JournaldSource


def test_a_fail2ban_journalmatch_is_refused_with_file_key_and_reason(tmp_path: Path) -> None:
    """fail2ban's journalmatch copied into matches (' + ' between alternatives, a space
    between fields after a unit) is refused naming the file, the key and one match per
    item; a value with spaces, ' + ' or NAME= of its own (a command line) is accepted."""
    for bad in ("_SYSTEMD_UNIT=sshd.service + _COMM=sshd", "_SYSTEMD_UNIT=sshd.service _COMM=sshd"):
        path = tmp_path / "c.toml"
        path.write_text(f'[[sources]]\nname = "j"\ntype = "journald"\nmatches = ["{bad}"]\n')
        with pytest.raises(ConfigError) as err:
            load_config(path)
        text = str(err.value)
        assert str(path) in text
        assert "matches" in text
        assert "holds several matches" in text
        assert "one FIELD=value per list item" in text
    spaced = [
        "_CMDLINE=sshd: root [priv]",
        "_CMDLINE=/usr/bin/env LANG=C.UTF-8 /usr/sbin/sshd -D",
        "_CMDLINE=sshd -D -oPort=22 -o X11=no",
        "MESSAGE=a + b",
    ]
    for match in spaced:
        cfg = JournaldSourceConfig.model_validate(
            {"name": "j", "type": "journald", "matches": [match]}
        )
        assert cfg.matches == [match]
    with pytest.raises(ValidationError, match="holds several matches"):
        JournaldSourceConfig.model_validate(
            {"name": "j", "type": "journald", "matches": ["SYSLOG_IDENTIFIER=sshd + _COMM=sshd"]}
        )


def _matches_warnings(**source: Any) -> list[str]:
    """check-config's warnings about a journald source named "j" with ``source``'s keys."""
    config = parse_config({"sources": [{"name": "j", "type": "journald", **source}]})
    return [w for w in config_warnings(config) if "key matches" in w]


def test_check_config_warns_of_matches_that_select_no_entry_it_can_read() -> None:
    """Matches of nginx's syslog identifier or a docker container's name: one warning
    naming the source and key and what a journald source reads; none for the default
    matches, an ssh unit, a field that may select sshd's entries, or kernel_xid."""
    for matches in (["SYSLOG_IDENTIFIER=nginx"], ["CONTAINER_NAME=sshd", "_COMM=dockerd"]):
        [warning] = _matches_warnings(matches=matches)
        assert warning.startswith(f"journald source 'j', key matches ({', '.join(matches)})")
        assert "reads sshd's entries only" in warning
        assert "nginx must log to a file" in warning
    assert _matches_warnings() == []
    for matches in (
        ["_SYSTEMD_UNIT=ssh.service"],
        ["SYSLOG_IDENTIFIER=nginx", "_EXE=/usr/sbin/sshd"],
        ["SYSLOG_FACILITY=10"],
    ):
        assert _matches_warnings(matches=matches) == []
    assert _matches_warnings(matches=["_TRANSPORT=kernel"], kernel_xid=True) == []
    assert len(_matches_warnings(matches=["_TRANSPORT=kernel"])) == 1


@pytest.mark.parametrize("directory", ["", "journal", "./var/log/journal"])
def test_a_relative_journal_directory_is_refused(directory: str) -> None:
    """directory must be absolute, as a file source's paths: "" or "journal" would be read
    relative to where the daemon started (and the source would read nothing)."""
    with pytest.raises(ValidationError, match=r"directory\n.*must be an absolute path"):
        JournaldSourceConfig.model_validate(
            {"name": "s", "type": "journald", "directory": directory}
        )
    cfg = {"name": "s", "type": "journald", "directory": "/var/log/journal/remote"}
    assert JournaldSourceConfig.model_validate(cfg).directory == "/var/log/journal/remote"


def test_disabled_without_systemd_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without systemd-python, start() warns once, stays down and starts no thread."""
    monkeypatch.setattr(journald, "_journal", None)
    assert not journald_available()
    cfg = JournaldSourceConfig(name="ssh", type="journald")
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
    """journald_problem says what is missing: the library, any journal directory, or a
    system journal file in it."""
    monkeypatch.setattr(journald, "_journal", None)
    assert journald.journald_problem() == "systemd-python is not installed"
    monkeypatch.setattr(journald, "_journal", object())
    monkeypatch.setattr(journald, "JOURNAL_DIRS", (tmp_path / "nope",))
    assert "no journal directory" in (journald.journald_problem() or "")
    monkeypatch.setattr(journald, "JOURNAL_DIRS", (tmp_path,))
    assert "no system journal files" in (journald.journald_problem() or "")
    (tmp_path / "system.journal").write_bytes(b"")
    assert journald.journald_problem() is None


def test_journal_files_problem_says_when_a_reader_would_see_nothing(tmp_path: Path) -> None:
    """No journal file, only users' journals for the system journal, or no readable one:
    each named with where and what to do; a readable file is no problem."""
    problem = journald.journal_files_problem
    jdir = tmp_path / "journal"
    machine = jdir / "0123456789abcdef0123456789abcdef"
    machine.mkdir(parents=True)
    assert "no system journal files in" in (problem([jdir], system=True) or "")
    (machine / "user-1000.journal").write_bytes(b"")
    assert "no system journal files in" in (problem([jdir], system=True) or "")
    assert problem([jdir], system=False) is None  # a directory's own files: any name
    (machine / "system.journal").write_bytes(b"")
    assert problem([jdir], system=True) is None  # readable (root reads every file)
    denied = problem([jdir], system=True, readable=lambda path: False)
    assert denied is not None
    assert "none of the 1 system journal files" in denied
    assert "group systemd-journal or adm" in denied
    assert "no journal files in" in (problem([tmp_path / "nope"], system=False) or "")


# ------------------------------------------------------------------ real journal files


@needs_journal
def test_an_open_journal_without_files_is_down_until_entries_come(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A journal directory with no journal file opens without error but shows nothing:
    the source is down (error) with the reason until a journal file brings entries; then
    its last error (that reason) is cleared."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    source, out = make(start_at="beginning")
    assert source.stats.state == "error"
    assert not source.stats.up
    assert "no journal files in" in source.stats.reason
    assert source.stats.last_error == source.stats.reason
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])
    wait_for(lambda: len(out.lines) >= 1, "the entry of the new journal file")
    assert out.lines == [expected(1)]
    wait_for(lambda: source.stats.state == "following", "the source to be up again")
    assert source.stats.up
    assert source.stats.last_error == ""  # status shows no reason that is over
    assert source.stats.errors == 1  # the count stays


@needs_journal
def test_reads_and_filters_entries(make: Callable[..., Any], tmp_path: Path) -> None:
    """Matching entries become events in order; other programs' entries, and sshd-named
    entries a user wrote (``logger -t sshd``), are filtered out."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(
        jdir / "a.journal",
        [
            entry(1, attempt(1)),
            entry(2, "tick", comm="cron"),
            {**entry(5, attempt(5)), "_UID": "1000", "_COMM": "logger"},
            entry(3, attempt(3), pid=7),
            entry(4, "Server listening on :: port 22."),
        ],
    )
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2 and out.unparsed >= 2, "the sshd entries")
    assert out.lines == [expected(1), expected(3, pid=7)]
    assert out.unparsed == 2  # the forged one, and sshd's not about authentication
    assert source.stats.lines_read == 4
    assert source.stats.up


@needs_journal
def test_a_failure_within_a_batch_reopens_before_the_batch(
    make: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that fails mid-batch makes the source reopen at the cursor of the last
    batch handed on: the entries read before the failure in that batch are not lost."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(i, attempt(i)) for i in range(1, 6)])
    real = JournaldSource._next_entry
    failed = threading.Event()

    def flaky(self: JournaldSource, reader: Any) -> dict[str, Any] | None:
        item = real(self, reader)
        if item is not None and b"u3 " in item["MESSAGE"] and not failed.is_set():
            failed.set()
            raise OSError(5, "the journal could not be read")
        return item

    monkeypatch.setattr(JournaldSource, "_next_entry", flaky)
    source, out = make(start_at="beginning")
    wait_for(failed.is_set, "the failure")
    assert isinstance(source.clock, FakeClock)
    wait_for(lambda: source.clock.waiting >= 1, "the retry wait")
    source.clock.advance(1.0)
    wait_for(lambda: len(out.lines) >= 5, "every entry")
    assert out.lines == [expected(i) for i in range(1, 6)]


@needs_journal
@pytest.mark.parametrize("how", ["handling", "field"])
def test_an_entry_that_cannot_be_handled_is_counted_and_skipped(
    make: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """An entry whose handling raises every time (or a field of which the reader cannot
    read) is skipped, counted in the source's errors and logged once: every other entry
    is read, the source stays up, and it is not read again for ever."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(i, attempt(i)) for i in range(1, 6)])
    if how == "handling":
        real = journald.entry_event

        def bad(item: Any, source: str, uids: Any = journald.ROOT) -> SshEvent | None:
            if b"u3 " in item["MESSAGE"]:
                raise ValueError("one bad entry")
            return real(item, source, uids)

        monkeypatch.setattr(journald, "entry_event", bad)
    else:
        from systemd import journal

        real_get = journal.Reader._get

        def bad_get(self: Any, field: str) -> Any:
            value = real_get(self, field)
            if field == "MESSAGE" and b"u3 " in value:
                raise OSError(74, "Bad message")
            return value

        monkeypatch.setattr(journal.Reader, "_get", bad_get)
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at="beginning")
        wait_for(lambda: len(out.lines) >= 4, "the other entries")
        time.sleep(0.3)
    assert out.lines == [expected(i) for i in (1, 2, 4, 5)]
    assert out.unparsed == 1
    assert source.stats.errors == 1
    assert source.stats.up
    assert "journal entry skipped" in source.stats.last_error
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "journal entry could not be handled; skipped"
    ]


@needs_journal
def test_start_at_end_reads_only_new(make: Callable[..., Any], tmp_path: Path) -> None:
    """start_at=end skips entries already in the journal and follows new ones."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])
    _, out = make()
    write_journal(jdir / "b.journal", [entry(2, attempt(2))])
    wait_for(lambda: len(out.lines) >= 1, "the new entry")
    assert out.lines == [expected(2)]


@needs_journal
def test_cursor_restart_reads_only_new(make: Callable[..., Any], tmp_path: Path) -> None:
    """A restart resumes after the saved cursor: no replay, entries written meanwhile read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), entry(2, attempt(2))])
    first, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the first entries")
    first.stop()
    cursor_file = tmp_path / "state" / "journald-ssh.cursor"
    assert cursor_file.read_text().strip()
    write_journal(jdir / "b.journal", [entry(3, attempt(3))])
    _, out2 = make(start_at="beginning")
    wait_for(lambda: len(out2.lines) >= 1, "the entry written while stopped")
    assert out2.lines == [expected(3)]


@needs_journal
def test_cursor_saved_is_that_of_the_last_acknowledged_batch(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """With acks, stop() saves the cursor of the last batch acknowledged (processed), not
    of the last handed on: an entry not processed is read again after a restart."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), entry(2, attempt(2))])
    first, out = make(start_at="beginning", batch_entries=1, acks=True)
    wait_for(lambda: len(out.lines) >= 2, "both entries")
    assert len(out.seqs) == 2
    assert 0 < out.seqs[0] < out.seqs[1]
    first.ack(out.seqs[0])
    first.acks_end()  # the consumer closes without processing the second entry
    first.stop()
    _, again = make(start_at="beginning")
    wait_for(lambda: len(again.lines) >= 1, "the entry not processed")
    assert again.lines == [expected(2)]


@needs_journal
def test_reopens_at_the_cursor_in_batches(make: Callable[..., Any], tmp_path: Path) -> None:
    """Batches hold at most batch_entries; the reader is reopened every reopen_entries
    entries and goes on at its cursor: every entry once, in order, and it still follows."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(i, attempt(i)) for i in range(1, 231)])
    source, out = make(start_at="beginning", batch_entries=2, reopen_entries=100)
    wait_for(lambda: len(out.lines) >= 230, "the first 230 entries")
    write_journal(jdir / "b.journal", [entry(i, attempt(i)) for i in range(231, 234)])
    wait_for(lambda: len(out.lines) >= 233, "the entries written after the reopens")
    time.sleep(0.3)  # nothing more arrives: no entry is read twice
    assert out.lines == [expected(i) for i in range(1, 234)]
    assert max(out.sizes) == 2
    assert source.reopens >= 2  # after 100 and 200 entries at least
    assert source.stats.errors == 0
    assert source.stats.up


@needs_journal
def test_entries_it_cannot_read_are_told_unrecognised(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """Matches that select nginx's entries (access_log syslog:) hand them on as unparsed
    and unrecognised, so the pipeline can judge the source blind; sshd's entries that are
    not about authentication, and a non-root "sshd", are unparsed but recognised."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    nginx = [
        entry(i, f'203.0.113.7 - - "GET /.env HTTP/1.1" 404 {i}', comm="nginx") for i in (1, 2, 3)
    ]
    forged = entry(5, attempt(5))
    forged["_UID"] = "1000"
    closed = entry(6, "Server listening on 0.0.0.0 port 22.")
    write_journal(jdir / "a.journal", [*nginx, entry(4, attempt(4)), forged, closed])
    _, out = make(start_at="beginning", matches=["SYSLOG_IDENTIFIER=nginx", "_COMM=sshd"])
    wait_for(lambda: len(out.lines) + out.unparsed >= 6, "the six entries")
    assert out.lines == [expected(4)]
    assert out.unparsed == 5
    assert out.unrecognised == 3  # nginx's three
    assert out.judged == {"journald"}


@needs_journal
def test_sshds_entries_logged_as_a_login_user_are_recognised_never_events(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """With the default matches, sshd's post-login child (running as the user: its
    disconnects and each failed ssh -L forward) and a user's logger -t sshd are sshd's
    entries: none unrecognised (the source is not blind), none an event."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    as_user = {"_UID": "1000", "_SYSTEMD_UNIT": "session-5.scope"}
    child = [
        {**entry(i, "error: connect_to localhost port 8888: failed.", pid=950), **as_user}
        for i in range(2, 62)
    ]
    forged = {
        **entry(62, "Failed password for root from 203.0.113.9 port 22 ssh2", comm="logger"),
        **as_user,
        "SYSLOG_IDENTIFIER": "sshd",
    }
    bye = {**entry(63, "Received disconnect from 192.0.2.5 port 40000:11: bye"), **as_user}
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), *child, forged, bye])
    _, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) + out.unparsed >= 63, "the 63 entries")
    assert out.lines == [expected(1)]
    assert out.unparsed == 62
    assert out.unrecognised == 0


def _suppressed_notice(
    seq: int, unit: str, dropped: int | str, transport: str, said: int | str | None = None
) -> dict[str, str]:
    """journald's own entry saying it dropped ``dropped`` entries of ``unit`` (its message
    says ``said``, unless the same)."""
    said = dropped if said is None else said
    notice = entry(seq, f"Suppressed {said} messages from {unit}", comm="systemd-journal")
    notice.update(
        SYSLOG_IDENTIFIER="systemd-journald",
        MESSAGE_ID="fe6faa94e7774663a0da52717891d8ef",  # SD_MESSAGE_JOURNAL_DROPPED
        N_DROPPED=str(dropped),
        _TRANSPORT=transport,
        _PID="321",
    )
    return notice


@needs_journal
def test_entries_journald_dropped_from_sshd_are_counted_as_a_gap(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """journald's "Suppressed N messages from ssh.service" notice counts N entries lost and
    one gap, with a warning naming the unit; other units' notices, and one forged through
    syslog, count nothing; sshd entries are read as before."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    forged = _suppressed_notice(5, "ssh.service", 99, "syslog")
    forged.update(SYSLOG_IDENTIFIER="evil", _UID="1000")
    write_journal(
        jdir / "a.journal",
        [
            entry(1, attempt(1)),
            _suppressed_notice(2, "ssh.service", 7345, "driver"),
            _suppressed_notice(3, "nginx.service", 50, "driver"),
            entry(4, attempt(4)),
            forged,
        ],
    )
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at="beginning")
        wait_for(lambda: len(out.lines) >= 2, "the sshd entries")
        time.sleep(0.3)
    assert out.lines == [expected(1), expected(4)]
    assert out.unparsed == 2  # the two notices journald wrote; the forged one is not read
    assert source.entries_suppressed == 7345
    assert source.stats.gaps == 1
    warnings = [e for e in logs if e.get("unit") is not None]
    assert [(e["log_level"], e["unit"], e["dropped"]) for e in warnings] == [
        ("warning", "ssh.service", 7345)
    ]
    samples = {
        m.name: m.samples[0].value
        for m in source.collect()
        if m.name.startswith("aisentinel_source_")
    }
    assert samples["aisentinel_source_entries_suppressed"] == 7345
    assert samples["aisentinel_source_gaps"] == 1


@needs_journal
@pytest.mark.parametrize(
    ("n_dropped", "said", "counted"),
    [("\u00b2", 2, 2), ("9" * 5000, "9" * 5000, 0), ("-5", 5, 5), ("1" + "0" * 30, "x", 0)],
    ids=["superscript", "5000-digits", "negative", "1e30"],
)
def test_an_odd_dropped_count_is_a_gap_and_stops_nothing(
    make: Callable[..., Any], tmp_path: Path, n_dropped: str, said: int | str, counted: int
) -> None:
    """A notice whose N_DROPPED is not plain digits (at most ten) counts the message's N
    when that is, else no entry, and one gap either way; the entries around it are read
    and the source stays up."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    notice = _suppressed_notice(2, "ssh.service", n_dropped, "driver", said)
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), notice, entry(3, attempt(3))])
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the sshd entries")
    time.sleep(0.2)
    assert out.lines == [expected(1), expected(3)]
    assert source.entries_suppressed == counted
    assert source.stats.gaps == 1
    assert source.stats.errors == 0
    assert source.stats.up


@needs_journal
def test_a_source_that_reads_no_sshd_entry_counts_no_sshd_suppression(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A kernel-only Xid source counts journald's notices about ssh.service neither as
    entries it lost nor as a gap: it never reads sshd's entries."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    xid = {**entry(1, "NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.")}
    xid.update(_TRANSPORT="kernel", SYSLOG_IDENTIFIER="kernel", _COMM="kernel")
    notice = _suppressed_notice(2, "ssh.service", 7345, "driver")
    write_journal(jdir / "a.journal", [xid, notice])
    source, out = make(start_at="beginning", matches=["_TRANSPORT=kernel"], kernel_xid=True)
    wait_for(lambda: len(out.lines) + out.unparsed >= 2, "both entries")
    assert [type(e) for e in out.lines] == [XidEvent]
    assert source.entries_suppressed == 0
    assert source.stats.gaps == 0


def _readers_of_files_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the source's readers read the journal files there when each opens, and no
    file that comes later: as sd-journal's system journal reader, which watches only the
    directories (``/run/log/journal``, ``/var/log/journal``) that existed when it opened."""
    from systemd import journal  # needs_journal checked it is there

    class FilesAtOpen:
        @staticmethod
        def Reader(path: str) -> Any:  # noqa: N802 - systemd.journal's name
            files = journald._journal_files([Path(path)], system=False)
            return journal.Reader(files=[str(f) for f in files])

    monkeypatch.setattr(journald, "_journal", FilesAtOpen)


@needs_journal
def test_journal_files_moved_to_a_new_directory_are_followed(
    make: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persistent journal enabled while running (the files move to a directory the
    reader did not watch, numbered anew) is seen while idle: the reader reopens at its
    cursor and reads every later entry once, none twice, no cursor lost."""
    _readers_of_files_at_open(monkeypatch)
    jdir = tmp_path / "journal"
    jdir.mkdir()
    first = [entry(i, attempt(i)) for i in (1, 2)]
    write_journal(jdir / "system.journal", first)
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the entries of the volatile journal")
    persistent = jdir / "0123456789abcdef0123456789abcdef"
    persistent.mkdir()
    write_journal(
        persistent / "system.journal", [*first, *(entry(i, attempt(i)) for i in (3, 4, 5))]
    )
    (jdir / "system.journal").unlink()
    source.clock.advance(journald.BLIND_CHECK_INTERVAL)
    wait_for(lambda: len(out.lines) >= 5, "the entries of the persistent journal")
    time.sleep(0.3)  # nothing more arrives: no entry is read twice
    assert out.lines == [expected(i) for i in range(1, 6)]
    assert source.file_reopens == 1
    assert source.cursors_lost == 0
    assert source.stats.errors == 0
    assert source.stats.state == "following"


@needs_journal
def test_entries_read_prove_the_journal_readable_across_reopens(
    make: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once entries came, the source stays up through its reopens even if the file check
    says otherwise (journal files named in a way it does not know): entries win."""
    monkeypatch.setattr(journald, "journal_files_problem", lambda *a, **k: "odd file names")
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(i, attempt(i)) for i in range(1, 231)])
    source, out = make(start_at="beginning", batch_entries=50, reopen_entries=100)
    wait_for(lambda: len(out.lines) >= 230, "the 230 entries")
    assert source.reopens >= 2
    assert source.stats.state == "following"
    assert source.stats.up
    assert source.stats.errors == 1  # the check at the first open only, not at each reopen


@needs_journal
def test_reads_the_fields_it_needs_from_real_entries(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """From a real journal: the pid falls back to SYSLOG_PID, and with kernel_xid a kernel
    NVRM Xid entry becomes an XidEvent (its _TRANSPORT is read); other kernel entries
    count as unparsed."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    no_pid = entry(1, attempt(1))
    del no_pid["_PID"]
    no_pid["SYSLOG_PID"] = "77"
    xid = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', GPU has fallen off the bus."
    kernel = {k: v for k, v in entry(2, xid, comm="kernel").items() if k not in ("_PID", "_COMM")}
    usb = {**entry(3, "usb 1-1: new device", comm="kernel"), "_TRANSPORT": "kernel"}
    del usb["_PID"], usb["_COMM"]
    write_journal(jdir / "a.journal", [no_pid, {**kernel, "_TRANSPORT": "kernel"}, usb])
    source, out = make(start_at="beginning", kernel_xid=True)
    wait_for(lambda: len(out.lines) >= 2 and out.unparsed >= 1, "the three entries")
    ssh, gpu = out.lines
    assert ssh == expected(1, pid=77)
    assert isinstance(gpu, XidEvent)
    assert (gpu.xid, gpu.pci_bus_id) == (79, "0000:3b:00")
    assert gpu.ts == (BASE_US + 2_000_000) / 1e6
    assert out.unparsed == 1
    assert source.stats.lines_read == 3


@needs_journal
def test_cursor_entry_gone(make: Callable[..., Any], tmp_path: Path) -> None:
    """If the saved entry was vacuumed, the first entry after it is still read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])
    first, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 1, "the first entry")
    first.stop()
    (jdir / "a.journal").unlink()
    write_journal(jdir / "b.journal", [entry(2, attempt(2)), entry(3, attempt(3))])
    second, out2 = make(start_at="beginning")
    wait_for(lambda: len(out2.lines) >= 2, "the entries after the vacuumed one")
    assert out2.lines == [expected(2), expected(3)]
    assert second.cursors_lost == 0  # placed after it by its boot's monotonic time: not lost


@needs_journal
def test_a_cursor_whose_entry_no_longer_matches_is_not_lost(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A saved cursor at a kernel Xid entry, restarted with kernel_xid off and nothing new
    since: the cursor is where it was (not lost), nothing is read again, and an entry
    written afterwards is read."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    xid = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', GPU has fallen off the bus."
    kernel = {k: v for k, v in entry(3, xid, comm="kernel").items() if k not in ("_PID", "_COMM")}
    kernel["_TRANSPORT"] = "kernel"
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), entry(2, attempt(2)), kernel])
    first, out = make(start_at="beginning", kernel_xid=True)
    wait_for(lambda: len(out.lines) >= 3, "the first entries")
    first.stop()
    second, out2 = make(start_at="beginning", kernel_xid=False)
    write_journal(jdir / "b.journal", [entry(4, attempt(4))])
    wait_for(lambda: len(out2.lines) >= 1, "the entry written after the restart")
    assert out2.lines == [expected(4)]
    assert second.cursors_lost == 0


def _other_boot(seq: int, shift_us: int) -> dict[str, str]:
    """``entry(seq, attempt(seq))`` of another boot, its wall-clock time moved by ``shift_us``
    (a volatile journal after a reboot with the clock behind, or a clock set back)."""
    e = entry(seq, attempt(seq))
    e["__REALTIME_TIMESTAMP"] = str(BASE_US + shift_us + seq * 1_000_000)
    e["_BOOT_ID"] = "fedcba9876543210fedcba9876543210"
    return e


def _lose_cursor(make: Callable[..., Any], jdir: Path) -> None:
    """Read entries 1-2 of a journal file, stop (saving the cursor), delete that file."""
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), entry(2, attempt(2))])
    first, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 2, "the first entries")
    first.stop()
    (jdir / "a.journal").unlink()


@needs_journal
@pytest.mark.parametrize("start_at", ["beginning", "end"])
def test_a_cursor_whose_files_are_gone_reads_the_journal_from_its_head(
    make: Callable[..., Any], tmp_path: Path, start_at: str
) -> None:
    """A saved cursor whose journal files are gone, with entries of another boot older in
    wall-clock time than it (sd-journal then seeks by time, past all of them): logged,
    counted in aisentinel_source_cursor_lost_total, and every entry is read from the head,
    whatever start_at says (it is for a first start, with no cursor)."""
    jdir = tmp_path / "journal"
    _lose_cursor(make, jdir)
    day = 86_400_000_000
    write_journal(jdir / "c.journal", [_other_boot(i, -day) for i in range(30, 40)])
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at=start_at)
        wait_for(lambda: len(out.lines) >= 10, "the entries of the new journal")
    assert [e.client for e in out.lines] == [f"198.51.100.{i}" for i in range(30, 40)]
    assert source.cursors_lost == 1
    assert source.stats.errors == 1
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == [
        "saved cursor not found in the journal; reading it from its head"
    ]
    lost = {m.name: m for m in source.collect()}["aisentinel_source_cursor_lost"]
    assert [s.value for s in lost.samples if s.name.endswith("_total")] == [1.0]


@needs_journal
def test_a_cursor_whose_files_are_gone_skips_no_entry_older_in_wall_clock_time(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """Entries of another boot on both sides of the lost cursor's wall-clock time: the
    seek lands on the first later one, and the earlier ones are read too (from the head)."""
    jdir = tmp_path / "journal"
    _lose_cursor(make, jdir)
    write_journal(jdir / "c.journal", [_other_boot(i, -5_000_000) for i in range(3, 11)])
    source, out = make(start_at="beginning")
    wait_for(lambda: len(out.lines) >= 8, "the entries of the new journal")
    time.sleep(0.3)  # nothing more arrives: no entry is read twice
    assert [e.client for e in out.lines] == [f"198.51.100.{i}" for i in range(3, 11)]
    assert source.cursors_lost == 1


@needs_journal
def test_missing_directory_is_retried(make: Callable[..., Any], tmp_path: Path) -> None:
    """A journal directory that does not exist yet is retried, every poll_interval of the
    source's clock, not fatal."""
    jdir = tmp_path / "later"
    source, out = make(directory=str(jdir), start_at="beginning")
    clock = source.clock
    assert isinstance(clock, FakeClock)
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])

    def retried() -> bool:
        clock.advance(0.1)  # the retry waits on the injected clock, not real time
        return len(out.lines) >= 1

    wait_for(retried, "the entry in the new directory")
    assert out.lines == [expected(1)]
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
    write_journal(tmp_path / "journal" / "a.journal", [entry(1, attempt(1))])
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
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at="beginning")
        wait_for(lambda: len(out.lines) == 1, "the first entry")
        write_journal(jdir / "b.journal", [entry(2, attempt(2))])
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


# ------------------------------------------------------------------ first start, bad cursor


def _cron(seq: int) -> dict[str, str]:
    """An entry of another program (not matched by the source)."""
    return entry(seq, "tick", comm="cron")


@needs_journal
def test_a_first_start_with_no_matching_entry_reads_the_whole_first_burst(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """start_at=end, no matching entry in the journal yet: every entry of the first burst
    is read (sd-journal, left at its tail, handed on only the last one), and a cursor is
    saved at once, before any entry came."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [_cron(i) for i in range(1, 4)])
    _, out = make()
    assert (tmp_path / "state" / "journald-ssh.cursor").read_text().strip()
    write_journal(jdir / "b.journal", [entry(i, attempt(i)) for i in range(10, 16)])
    wait_for(lambda: len(out.lines) >= 6, "the six entries of the burst")
    time.sleep(0.3)  # nothing more arrives
    assert out.lines == [expected(i) for i in range(10, 16)]


@needs_journal
@pytest.mark.parametrize("matching", [True, False])
def test_entries_written_while_down_after_a_first_start_that_read_none_are_read(
    make: Callable[..., Any], tmp_path: Path, matching: bool
) -> None:
    """start_at=end: a first run that read no entry (the journal holding old matching
    entries, or none) still saved where it started, so the entries written while the
    daemon was down are read at the next start, and the old ones are not."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    old = [entry(1, attempt(1)), _cron(2)] if matching else [_cron(1), _cron(2)]
    write_journal(jdir / "a.journal", old)
    first, out = make()
    first.stop()
    assert out.lines == []
    write_journal(jdir / "b.journal", [entry(i, attempt(i)) for i in range(3, 6)])
    second, again = make()
    wait_for(lambda: len(again.lines) >= 3, "the entries written while stopped")
    time.sleep(0.3)  # nothing more arrives
    assert again.lines == [expected(i) for i in range(3, 6)]
    assert second.cursors_lost == 0


@needs_journal
def test_a_saved_end_of_journal_cursor_is_not_lost_across_a_boot(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """The cursor a first start saved at the journal's last (unmatched) entry, still in
    the journal, with entries of another boot written since: the seek to it was exact,
    so it is not counted lost, and every new entry is read once."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [_cron(1), _cron(2)])
    first, _ = make()
    first.stop()
    write_journal(jdir / "c.journal", [_other_boot(i, 86_400_000_000) for i in range(3, 6)])
    second, out = make()
    wait_for(lambda: len(out.lines) >= 3, "the entries of the other boot")
    time.sleep(0.3)  # nothing more arrives
    assert [e.client for e in out.lines] == [f"198.51.100.{i}" for i in range(3, 6)]
    assert second.cursors_lost == 0
    assert second.stats.errors == 0


@needs_journal
@pytest.mark.parametrize("text", ["garbage", "s=zz;i=1"])
@pytest.mark.parametrize("start_at", ["beginning", "end"])
def test_a_cursor_file_that_cannot_be_parsed_is_moved_aside(
    make: Callable[..., Any], tmp_path: Path, text: str, start_at: str
) -> None:
    """A cursor file sd-journal cannot parse: one error naming the file, moved aside to
    .corrupt, counted as a lost cursor; the source is up and reads as start_at says."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1)), entry(2, attempt(2))])
    path = tmp_path / "state" / "journald-ssh.cursor"
    path.parent.mkdir()
    path.write_text(text + "\n")
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at=start_at)
        write_journal(jdir / "b.journal", [entry(3, attempt(3))])
        wanted = [1, 2, 3] if start_at == "beginning" else [3]
        wait_for(lambda: len(out.lines) >= len(wanted), "the entries")
    assert out.lines == [expected(i) for i in wanted]
    assert source.stats.up
    assert source.cursors_lost == 1
    assert (tmp_path / "state" / "journald-ssh.cursor.corrupt").read_text() == text + "\n"
    errors = [e for e in logs if e["log_level"] in ("error", "warning")]
    assert [e["event"].split(";")[0] for e in errors] == ["journal cursor file cannot be parsed"]
    assert errors[0]["path"] == str(path)
    assert str(path) in source.stats.last_error


def _vacuum_saved_end(make: Callable[..., Any], jdir: Path) -> tuple[Path, str]:
    """A first start (start_at=end) over two unmatched entries in ``jdir`` saves the
    journal's end; that file is then deleted (vacuumed). The cursor file and its text."""
    jdir.mkdir()
    write_journal(jdir / "a.journal", [_cron(1), _cron(2)])
    first, _ = make()
    first.stop()
    path = first.cursor_path
    saved = path.read_text()
    (jdir / "a.journal").unlink()
    return path, saved


@needs_journal
def test_a_vacuumed_end_of_journal_cursor_is_not_lost(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """The journal-end cursor a first start saved with nothing matching, its file vacuumed
    and a later entry of the same boot left: found by monotonic time at every restart,
    not counted lost (no warning, no last_error), and the entries written after it are
    read once."""
    jdir = tmp_path / "journal"
    path, cursor = _vacuum_saved_end(make, jdir)
    write_journal(jdir / "b.journal", [_cron(3)])
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            again, none = make()
            again.stop()
            assert none.lines == []
            assert again.cursors_lost == 0
            assert again.stats.last_error == ""
        third, out = make()
        write_journal(jdir / "c.journal", [entry(i, attempt(i)) for i in range(4, 7)])
        wait_for(lambda: len(out.lines) >= 3, "the entries after the vacuumed cursor")
        time.sleep(0.3)  # nothing more arrives
    assert out.lines == [expected(i) for i in range(4, 7)]
    assert third.cursors_lost == 0
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    third.stop()
    assert path.read_text() != cursor  # moved on


@needs_journal
def test_a_vacuumed_cursor_followed_by_its_boot_is_not_lost_beside_another_machine(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A vacuumed journal-end cursor, a later unmatched entry of its boot, and a matching
    entry of another machine placed by wall-clock time after it (journal-remote): the
    seek was ordered, so the cursor is not counted lost, and that entry is read once."""
    jdir = tmp_path / "journal"
    _vacuum_saved_end(make, jdir)
    write_journal(jdir / "b.journal", [_cron(3)])
    write_journal(jdir / "o.journal", [_other_boot(4, 86_400_000_000)])
    with structlog.testing.capture_logs() as logs:
        source, out = make()
        wait_for(lambda: len(out.lines) >= 1, "the other machine's entry")
        time.sleep(0.3)  # nothing more arrives
    assert [e.client for e in out.lines] == ["198.51.100.4"]
    assert source.cursors_lost == 0
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []


@needs_journal
def test_a_lost_cursor_with_no_matching_entry_in_the_journal_is_not_counted(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A saved cursor whose files are gone, the journal holding only unmatched entries of
    another boot (nothing can have been skipped): not counted lost, the journal's last
    entry's cursor is saved in its place (the next start does not find it lost again),
    and the entries written afterwards are read."""
    jdir = tmp_path / "journal"
    path, lost = _vacuum_saved_end(make, jdir)
    other = [_other_boot(i, -86_400_000_000) for i in range(3, 5)]
    for e in other:
        e["_COMM"] = e["SYSLOG_IDENTIFIER"] = "cron"
    write_journal(jdir / "c.journal", other)
    with structlog.testing.capture_logs() as logs:
        second, out = make()
        assert path.read_text() != lost
        second.stop()
        third, out = make()
        write_journal(jdir / "d.journal", [_other_boot(i, -86_400_000_000) for i in range(5, 8)])
        wait_for(lambda: len(out.lines) >= 3, "the entries written afterwards")
        time.sleep(0.3)  # nothing more arrives
    assert [e.client for e in out.lines] == [f"198.51.100.{i}" for i in range(5, 8)]
    assert second.cursors_lost == third.cursors_lost == 0
    assert second.stats.errors == 0
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    infos = [e["event"] for e in logs if e["log_level"] == "info"]
    assert sum(event.startswith("saved cursor not found") for event in infos) == 1


@needs_journal
def test_a_cursor_in_a_journal_that_shows_no_entry_is_kept_not_counted(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    """A saved cursor and a journal directory holding no file (emptied, or not there yet):
    not counted lost, the cursor file is kept, and the entries that come are read."""
    jdir = tmp_path / "journal"
    path, saved = _vacuum_saved_end(make, jdir)
    with structlog.testing.capture_logs() as logs:
        source, out = make()
        assert path.read_text() == saved  # kept while the journal shows nothing
        write_journal(jdir / "b.journal", [_other_boot(i, 0) for i in range(3, 6)])
        wait_for(lambda: len(out.lines) >= 3, "the entries that came")
        time.sleep(0.3)  # nothing more arrives
    assert [e.client for e in out.lines] == [f"198.51.100.{i}" for i in range(3, 6)]
    assert source.cursors_lost == 0
    assert not [e for e in logs if e["event"].startswith("saved cursor not found")]
    source.stop()
    assert path.read_text() != saved  # moved on to the entries read


@needs_journal
@pytest.mark.parametrize("start_at", ["beginning", "end"])
def test_a_cursor_file_that_is_not_utf8_is_moved_aside(
    make: Callable[..., Any], tmp_path: Path, start_at: str
) -> None:
    """A cursor file that is not UTF-8: moved aside to .corrupt (not overwritten), one
    error naming it, counted as a lost cursor; the journal is read as start_at says."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    write_journal(jdir / "a.journal", [entry(1, attempt(1))])
    path = tmp_path / "state" / "journald-ssh.cursor"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfegarbage\n")
    with structlog.testing.capture_logs() as logs:
        source, out = make(start_at=start_at)
        write_journal(jdir / "b.journal", [entry(2, attempt(2))])
        wanted = [1, 2] if start_at == "beginning" else [2]
        wait_for(lambda: len(out.lines) >= len(wanted), "the entries")
    assert out.lines == [expected(i) for i in wanted]
    assert source.cursors_lost == 1
    assert (tmp_path / "state" / "journald-ssh.cursor.corrupt").read_bytes() == (
        b"\xff\xfegarbage\n"
    )
    errors = [e for e in logs if e["log_level"] in ("error", "warning")]
    assert [e["event"].split(";")[0] for e in errors] == ["journal cursor file cannot be parsed"]
    assert str(path) in source.stats.last_error
