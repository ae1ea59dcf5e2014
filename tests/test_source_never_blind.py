"""Issue 8: a file source never silently stops watching.

Position-store faults, missing logs, files new since the last run, rotations while
stopped, CR line ends and a prompt, lossless stop, each against real files and threads.
"""

from __future__ import annotations

import errno
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from test_source_file import (
    COPIES,
    Collector,
    Harness,
    append,
    copytruncate,
    deny_open,
    expect,
    one_gap,
    wait_for,
)

from aisentinel.clock import SystemClock
from aisentinel.config import default_sources, load_config
from aisentinel.daemon import Daemon
from aisentinel.events import LineBatch
from aisentinel.sources import file as file_source
from aisentinel.sources.file import FileSource, FileSourceConfig


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop_all()


def numbered(tag: str, count: int, first: int = 0) -> bytes:
    return b"".join(b"%s %d\n" % (tag.encode(), i) for i in range(first, first + count))


def events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


# ------------------------------------------------------------------ 1. position store faults


def test_unreadable_positions_file_still_follows_and_reports(
    harness: Harness, tmp_path: Path
) -> None:
    """positions.json being a directory: lines are still read; fault logged once, degraded."""
    (harness.state / "positions.json").mkdir(parents=True)
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    with capture_logs() as logs:
        source, out = harness.start([log], poll_interval=0.05)
        append(log, numbered("l", 100))
        wait_for(lambda: len(out.lines) == 100, "all 100 lines")
        wait_for(lambda: source.stats.position_errors >= 3, "repeated save failures")
    assert source.stats.up
    assert source.stats.state == "degraded"
    assert "positions.json" in source.stats.reason
    load = events(
        logs,
        "cannot load read positions; the logs are still followed, but a "
        "restart cannot resume where reading stopped (lines may be skipped or read twice)",
    )
    save = [e for e in logs if e["event"].startswith("cannot save read positions")]
    assert len(load) == 1  # once, however many retries
    assert len(save) == 1
    assert load[0]["log_level"] == "error"
    assert load[0]["path"] == str(harness.state / "positions.json")
    assert "positions.json is a directory: move it away" in load[0]["action"]


def test_positions_fault_clears_when_fixed(harness: Harness, tmp_path: Path) -> None:
    """Once the positions file can be written again, positions are saved and state recovers."""
    bad = harness.state / "positions.json"
    bad.mkdir(parents=True)
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    source, out = harness.start([log], start_at="beginning", poll_interval=0.05)
    expect(out, ["one"])
    wait_for(lambda: source.stats.state == "degraded", "the fault to show")
    bad.rmdir()
    wait_for(lambda: source.stats.state == "following", "the fault to clear")
    doc = json.loads(bad.read_text())
    assert doc["sources"]["web"][str(log)]["offset"] == 4


def test_save_failure_does_not_kill_the_reader(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that raises OSError is counted; the reader keeps delivering new lines."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log], poll_interval=0.05)

    def broken(*_args: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(source._store, "save", broken)
    append(log, b"one\n")
    expect(out, ["one"])
    wait_for(lambda: source.stats.position_errors >= 1, "the failure to be counted")
    append(log, b"two\n")
    expect(out, ["one", "two"])
    assert source.stats.state == "degraded"


def test_a_full_disk_at_a_positions_save_says_to_free_space(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save refused for space (ENOSPC) logs the fix for a full disk (df -h), not the
    one for a file of the wrong kind."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log], poll_interval=0.05)

    def full(*_args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(source._store, "save", full)
    with capture_logs() as logs:
        append(log, b"one\n")
        expect(out, ["one"])
        wait_for(lambda: source.stats.position_errors >= 1, "the failure to be counted")
    (save,) = [e for e in logs if e["event"].startswith("cannot save read positions")]
    assert save["reason"] == "No space left on device"
    assert save["action"].startswith(f"free space on its file system (df -h {harness.state})")


# ------------------------------------------------------------------ 2. and 3. missing logs, state


def test_missing_path_is_waiting_and_warned_once(harness: Harness, tmp_path: Path) -> None:
    """A missing literal path: one warning naming it, state waiting, not up, until it appears."""
    present, missing = tmp_path / "a.log", tmp_path / "typo.log"
    present.write_bytes(b"")
    with capture_logs() as logs:
        source, out = harness.start([present, missing], poll_interval=0.05)
        time.sleep(0.3)  # several polls: still only the one warning
    warned = events(logs, "log file missing; waiting for it to appear")
    assert [e["path"] for e in warned] == [str(missing)]
    assert warned[0]["log_level"] == "warning"
    assert not source.stats.up
    assert source.stats.state == "waiting"
    assert str(missing) in source.stats.reason
    assert source.stats.detail == {str(present): "open", str(missing): "waiting"}
    missing.write_bytes(b"here\n")
    expect(out, ["here"])
    wait_for(lambda: source.stats.up, "up once every path is open")
    assert source.stats.state == "following"


def test_glob_without_match_is_waiting(harness: Harness, tmp_path: Path) -> None:
    """A pattern with no match is waiting (down); one match makes it up."""
    with capture_logs() as logs:
        source, out = harness.start([tmp_path / "*.log"], poll_interval=0.05)
    assert events(logs, "no log file matches the pattern yet; waiting for one")
    assert source.stats.state == "waiting"
    assert not source.stats.up
    (tmp_path / "b.log").write_bytes(b"b1\n")
    expect(out, ["b1"])
    wait_for(lambda: source.stats.up, "up with one match")


def _default_sshd_missing_warning(tmp_path: Path) -> dict[str, Any]:
    """The warning the default sshd file source logs at start when its file is missing
    (``tmp_path/auth.log`` stands for /var/log/auth.log)."""
    (table,) = [s for s in default_sources(journald=False) if s["parser"] == "sshd"]
    table["paths"] = [str(tmp_path / "auth.log")]
    source = FileSource(
        FileSourceConfig.model_validate(table), clock=SystemClock(), state_dir=tmp_path / "s"
    )
    with capture_logs() as logs:
        source.start(Collector())
        wait_for(source.ready, "the source to be ready")
    source.stop()
    (warned,) = events(logs, "log file missing; waiting for it to appear")
    return warned


def test_default_sshd_fallback_says_why_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default sshd file source, file missing: the warning says why journald is not used."""
    monkeypatch.setattr(file_source, "journald_problem", lambda: "systemd-python is not installed")
    monkeypatch.setattr(file_source, "journald_available", lambda: False)
    warned = _default_sshd_missing_warning(tmp_path)
    assert warned["path"] == str(tmp_path / "auth.log")
    assert "systemd-python is not installed" in warned["hint"]
    assert "python3-systemd" in warned["hint"]


def test_default_sshd_fallback_without_journal_files_does_not_ask_for_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With systemd-python present but no system journal file to read, the warning names
    that reason and does not tell the operator to install the library."""
    problem = "no system journal files in /var/log/journal, /run/log/journal"
    monkeypatch.setattr(file_source, "journald_problem", lambda: problem)
    monkeypatch.setattr(file_source, "journald_available", lambda: True)
    warned = _default_sshd_missing_warning(tmp_path)
    assert problem in warned["hint"]
    assert "python3-systemd" not in warned["hint"]
    assert "rsyslog" in warned["hint"]


def test_non_sshd_missing_path_has_no_journal_hint(harness: Harness, tmp_path: Path) -> None:
    """The journal hint is only given for sshd sources."""
    with capture_logs() as logs:
        harness.start([tmp_path / "nginx.log"])
    (warned,) = events(logs, "log file missing; waiting for it to appear")
    assert "hint" not in warned


def test_stopped_state(harness: Harness, tmp_path: Path) -> None:
    """Before start and after stop a source is stopped and not up."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, _ = harness.start([log])
    assert source.stats.state == "following"
    source.stop()
    assert source.stats.state == "stopped"
    assert not source.stats.up


# ------------------------------------------------------------------ 4. new since the last run


def test_log_appearing_while_down_is_read_from_start(harness: Harness, tmp_path: Path) -> None:
    """Missing in the last run and created while down: all 100 lines are read (start_at=end)."""
    log = tmp_path / "a.log"
    first, _ = harness.start([log])
    first.stop()
    log.write_bytes(numbered("l", 100))
    _, out = harness.start([log])
    wait_for(lambda: len(out.lines) == 100, "all 100 lines")
    assert out.lines == numbered("l", 100).decode().splitlines()


def test_glob_match_appearing_while_down_is_read_from_start(
    harness: Harness, tmp_path: Path
) -> None:
    """A new match of a pattern since the last run is read whole; a known match resumes."""
    (tmp_path / "a.log").write_bytes(b"a0\n")
    first, _ = harness.start([tmp_path / "*.log"])
    first.stop()
    append(tmp_path / "a.log", b"a1\n")
    (tmp_path / "b.log").write_bytes(b"b0\nb1\n")
    _, out = harness.start([tmp_path / "*.log"])
    wait_for(lambda: len(out.lines) == 3, "three lines")
    assert sorted(out.lines) == ["a1", "b0", "b1"]


def test_start_at_end_still_skips_a_file_present_when_first_configured(
    harness: Harness, tmp_path: Path
) -> None:
    """A path added to the config whose file already exists is read from its end."""
    old, added = tmp_path / "old.log", tmp_path / "added.log"
    old.write_bytes(b"")
    first, _ = harness.start([old])
    first.stop()
    added.write_bytes(b"history\n")
    _, out = harness.start([old, added])
    append(added, b"new\n")
    expect(out, ["new"])


@pytest.mark.parametrize("pattern", ["a.log", "*.log"])
def test_start_at_end_applies_to_a_log_unreadable_at_start(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    """A log there at start but unreadable (no permission yet) is read from the end it
    had at start once it can be opened, not from 0: its history is not replayed."""
    log = tmp_path / "a.log"
    log.write_bytes(numbered("history", 20))
    denied = deny_open(monkeypatch, log)
    source, out = harness.start([tmp_path / pattern], poll_interval=0.05)
    wait_for(lambda: source.stats.errors >= 1, "the open failure to be counted")
    append(log, b"while denied\n")
    denied["on"] = False
    expect(out, ["while denied"])
    append(log, b"after\n")
    expect(out, ["while denied", "after"])


def test_a_log_unreadable_at_start_is_not_new_at_the_next_start(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped while a log there at start is still unreadable: it is not recorded as
    waited for, so the next start (it readable now) does not read its history."""
    log = tmp_path / "a.log"
    log.write_bytes(numbered("history", 20))
    denied = deny_open(monkeypatch, log)
    first, _ = harness.start([log], poll_interval=0.05)
    wait_for(lambda: first.stats.errors >= 1, "the open failure to be counted")
    first.stop()
    doc = json.loads((harness.state / "positions.json").read_text())
    assert str(log) not in doc.get("watched", {}).get("web", [])
    denied["on"] = False
    _, out = harness.start([log])
    append(log, b"new\n")
    expect(out, ["new"])


# ------------------------------------------------------------------ 5. rotated while stopped


def _rotate_plain(log: Path, keep: int = 5) -> None:
    """logrotate without compression: name.N -> name.N+1, name -> name.1."""
    for n in range(keep, 0, -1):
        src = Path(f"{log}.{n}")
        if src.exists():
            src.rename(f"{log}.{n + 1}")
    log.rename(f"{log}.1")


def _gzip(path: Path, dest: Path) -> None:
    with gzip.open(dest, "wb") as out:
        out.write(path.read_bytes())
    path.unlink()


def _rotate_compress(log: Path, *, delay: bool, keep: int = 5) -> None:
    """logrotate with compress (and optionally delaycompress)."""
    for n in range(keep, 0, -1):
        for ext in ("", ".gz"):
            src = Path(f"{log}.{n}{ext}")
            if src.exists():
                src.rename(f"{log}.{n + 1}{ext}")
    log.rename(f"{log}.1")
    if not delay:
        _gzip(Path(f"{log}.1"), Path(f"{log}.1.gz"))
    elif Path(f"{log}.2").exists():
        _gzip(Path(f"{log}.2"), Path(f"{log}.2.gz"))


def _first_run(harness: Harness, log: Path) -> None:
    log.write_bytes(b"g0 0\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["g0 0"])
    first.stop()
    append(log, numbered("g0", 99, first=1))


@pytest.mark.parametrize(
    "rotate",
    [
        pytest.param(_rotate_plain, id="plain"),
        pytest.param(lambda log: _rotate_compress(log, delay=True), id="delaycompress"),
        pytest.param(lambda log: _rotate_compress(log, delay=False), id="compress"),
    ],
)
def test_two_rotations_while_stopped_read_every_line(
    harness: Harness, tmp_path: Path, rotate: Any
) -> None:
    """Two rotations while down: rest of the saved file, the middle one, then the new file."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    rotate(log)
    log.write_bytes(numbered("g1", 100))
    rotate(log)
    log.write_bytes(numbered("g2", 100))
    source, out = harness.start([log])
    wait_for(lambda: len(out.lines) >= 299, "299 lines")
    expected = (numbered("g0", 99, first=1) + numbered("g1", 100) + numbered("g2", 100)).decode()
    assert out.lines == expected.splitlines()
    assert source.stats.gaps == 0
    append(log, b"after\n")
    wait_for(lambda: out.lines[-1:] == ["after"], "the new file to be followed")


def test_dateext_generations_read_in_order(harness: Harness, tmp_path: Path) -> None:
    """dateext names (name-YYYYMMDD[.gz]) are read oldest first too."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    log.rename(tmp_path / "a.log-20260101")
    _gzip(tmp_path / "a.log-20260101", tmp_path / "a.log-20260101.gz")
    log.write_bytes(numbered("g1", 100))
    log.rename(tmp_path / "a.log-20260102")
    log.write_bytes(numbered("g2", 100))
    _, out = harness.start([log])
    wait_for(lambda: len(out.lines) >= 299, "299 lines")
    expected = (numbered("g0", 99, first=1) + numbered("g1", 100) + numbered("g2", 100)).decode()
    assert out.lines == expected.splitlines()


@COPIES
def test_copytruncate_while_stopped_resumes_in_the_copy(
    harness: Harness, tmp_path: Path, copy: str, *, compress: bool
) -> None:
    """copytruncate while down: the copy (a new inode) is found by its first bytes and
    read from the saved offset, then the truncated file; nothing twice, no gap."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    copytruncate(log, tmp_path / f"a.log{copy}", compress=compress)
    log.write_bytes(numbered("g1", 100))
    with capture_logs() as logs:
        source, out = harness.start([log])
        wait_for(lambda: len(out.lines) >= 199, "199 lines")
    assert out.lines == (numbered("g0", 99, first=1) + numbered("g1", 100)).decode().splitlines()
    assert source.stats.gaps == 0
    assert not [e for e in logs if e["log_level"] == "error"]


def test_gone_generation_is_a_logged_gap(harness: Harness, tmp_path: Path) -> None:
    """The saved file deleted while down: one error naming the gap, counted; newer ones read."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    time.sleep(0.05)  # the newer generations' mtimes are after the last save
    _rotate_plain(log)
    log.write_bytes(numbered("g1", 100))
    _rotate_plain(log)
    Path(f"{log}.2").unlink()  # the generation holding the saved position is gone
    log.write_bytes(numbered("g2", 100))
    with capture_logs() as logs:
        source, out = harness.start([log])
        wait_for(lambda: len(out.lines) >= 200, "the two newer generations")
    assert out.lines == (numbered("g1", 100) + numbered("g2", 100)).decode().splitlines()
    gap = one_gap(source, logs)
    assert "the rest of it was not read" in gap["event"]
    assert gap["path"] == str(log)
    assert "after byte 5" in gap["unread"]


def test_unreadable_generation_is_a_logged_gap(harness: Harness, tmp_path: Path) -> None:
    """A corrupt compressed generation is skipped with an error naming it; the rest is read."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    _rotate_compress(log, delay=True)
    log.write_bytes(numbered("g1", 100))
    _rotate_compress(log, delay=True)
    log.write_bytes(numbered("g2", 100))
    middle = Path(f"{log}.1")
    middle.rename(f"{log}.1.gz")
    Path(f"{log}.1.gz").write_bytes(b"\x1f\x8b not really gzip")
    with capture_logs() as logs:
        source, out = harness.start([log])
        wait_for(lambda: len(out.lines) >= 199, "the readable lines")
    assert out.lines == (numbered("g0", 99, first=1) + numbered("g2", 100)).decode().splitlines()
    gap = one_gap(source, logs)
    assert gap["path"] == f"{log}.1.gz"


# ------------------------------------------------------------------ 6. CR line ends


def test_cr_only_line_ends(harness: Harness, tmp_path: Path) -> None:
    """60 records ended by a lone CR are 60 lines, not one."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"".join(b"rec %d\r" % i for i in range(60)))
    wait_for(lambda: len(out.lines) == 60, "60 lines")
    assert out.lines == [f"rec {i}" for i in range(60)]
    assert source.stats.lines_read == 60


def test_cr_then_lf_in_the_next_write_is_one_line_end(harness: Harness, tmp_path: Path) -> None:
    """A CR ending one write and an LF starting the next make one line end, not two."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    _, out = harness.start([log])
    append(log, b"abc\r")
    expect(out, ["abc"])
    append(log, b"\ndef\r\n")
    expect(out, ["abc", "def"])


def test_restart_between_cr_and_lf_adds_no_line(harness: Harness, tmp_path: Path) -> None:
    """Stopped right after a CR: the LF that follows is not read as an empty line."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    first, out = harness.start([log])
    append(log, b"abc\r")
    expect(out, ["abc"])
    first.stop()
    append(log, b"\ndef\n")
    _, out2 = harness.start([log])
    expect(out2, ["def"])


# ------------------------------------------------------------------ 7. stop with a backlog


class SlowEmit(Collector):
    """An emit that takes a while per batch (a pipeline under load)."""

    def __call__(self, batch: LineBatch) -> None:
        time.sleep(0.01)
        super().__call__(batch)


def test_stop_mid_chunk_saves_the_last_line_handed_on(harness: Harness, tmp_path: Path) -> None:
    """stop() between batches of one chunk: the next start delivers the rest, none twice."""
    log = tmp_path / "a.log"
    count = 100_000
    log.write_bytes(b"".join(b"line %06d\r\n" % i for i in range(count)))
    cfg = harness.config([log], start_at="beginning", batch_lines=100)
    source = FileSource(cfg, clock=SystemClock(), state_dir=harness.state)
    slow = SlowEmit()
    source.start(slow)
    wait_for(lambda: len(slow.lines) >= 1000, "some lines")
    source.stop()
    first = slow.lines
    assert 0 < len(first) < count
    _, out = harness.start([log], start_at="beginning")
    wait_for(lambda: len(first) + len(out.lines) >= count, "every line")
    assert first + out.lines == [f"line {i:06d}" for i in range(count)]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_stop_while_reading_a_rotated_generation_resumes_there(
    harness: Harness, tmp_path: Path, compressed: bool
) -> None:
    """Stopped while catching up on a rotated file: the next start goes on from that line."""
    log = tmp_path / "a.log"
    _first_run(harness, log)
    append(log, b"".join(b"big %06d\n" % i for i in range(50_000)))
    _rotate_compress(log, delay=not compressed)
    log.write_bytes(b"current\n")
    cfg = harness.config([log], batch_lines=100)
    source = FileSource(cfg, clock=SystemClock(), state_dir=harness.state)
    slow = SlowEmit()
    source.start(slow)
    wait_for(lambda: len(slow.lines) >= 500, "some of the rotated file")
    source.stop()
    first = slow.lines
    assert len(first) < 50_000
    _, out = harness.start([log])
    expected = numbered("g0", 99, first=1).decode().splitlines()
    expected += [f"big {i:06d}" for i in range(50_000)] + ["current"]
    wait_for(lambda: len(first) + len(out.lines) >= len(expected), "every line")
    assert first + out.lines == expected


DAEMON_CONFIG = """
[daemon]
state_dir = "{state}"
log_level = "warning"

[exporter]
enabled = false

[[sources]]
name = "web"
type = "file"
parser = "nginx"
start_at = "beginning"
paths = ["{log}"]
"""


def test_daemon_stop_with_backlog_is_prompt_and_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop mid-backlog (slow pipeline): run() returns within 5 s; two runs read each line once."""
    count = 300_000
    log = tmp_path / "access.log"
    log.write_bytes(
        b"".join(
            b'198.51.100.%d - - [25/Nov/2026:23:14:30 +0000] "GET /p%d HTTP/1.1" 200 5 "-" "c"\n'
            % (i % 200, i % 50)
            for i in range(count)
        )
    )
    path = tmp_path / "aisentinel.toml"
    path.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", log=log))

    def start(slow: bool) -> tuple[Daemon, threading.Thread]:
        daemon = Daemon(load_config(path), config_path=path)
        if slow:
            real = daemon.pipeline.process

            def process(batch: LineBatch) -> None:
                time.sleep(0.1)  # a pipeline busy with an attack: ~20k lines/s
                real(batch)

            monkeypatch.setattr(daemon.pipeline, "process", process)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        assert daemon.started.wait(10)
        return daemon, thread

    def processed(daemon: Daemon) -> int:
        return sum(c.lines for c in daemon.pipeline.sources.values())

    first, thread = start(slow=True)
    wait_for(lambda: processed(first) >= 10_000, "the first run to be busy")
    first.request_stop()
    thread.join(5.0)
    assert not thread.is_alive(), "still running 5 s after the stop request"
    done = processed(first)
    assert done < count
    second, thread2 = start(slow=False)
    try:
        wait_for(lambda: done + processed(second) >= count, "the rest", timeout=60)
        time.sleep(0.3)  # a replayed line would show up now
        assert done + processed(second) == count
    finally:
        second.request_stop()
        thread2.join(10)


# ------------------------------------------------------------------ 3. exported state


def test_exported_state_and_up(tmp_path: Path, now_epoch: float) -> None:
    """A missing log exports up 0 and state waiting; once it appears, up 1 and following."""
    from test_daemon import Running, _metric, _write_config

    (tmp_path / "logs").mkdir()
    running = Running(_write_config(tmp_path))
    try:
        wait_for(running.daemon.sources["auth"].ready, "the source to look")
        text = running.scrape()
        assert _metric(text, "aisentinel_source_up", 'source="auth"') == 0
        assert _metric(text, "aisentinel_source_state", 'source="auth",state="waiting"') == 1
        assert _metric(text, "aisentinel_source_state", 'source="auth",state="following"') == 0
        assert _metric(text, "aisentinel_source_position_errors_total", 'source="auth"') == 0
        assert _metric(text, "aisentinel_source_gaps_total", 'source="auth"') == 0
        (tmp_path / "logs" / "auth.log").write_text("hello\n")
        wait_for(
            lambda: _metric(running.scrape(), "aisentinel_source_up", 'source="auth"') == 1,
            "auth to be up",
        )
        text = running.scrape()
        assert _metric(text, "aisentinel_source_state", 'source="auth",state="following"') == 1
        assert _metric(text, "aisentinel_source_state", 'source="auth",state="waiting"') == 0
        assert str(tmp_path) not in text  # no path in any label
    finally:
        running.stop()
