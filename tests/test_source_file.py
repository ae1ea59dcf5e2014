"""The file source against real files, real threads and real inotify."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from aisentinel.clock import FakeClock, SystemClock
from aisentinel.events import Batch, CutLine, EventBatch, HttpRequest, LineBatch
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.sources import REGISTRY
from aisentinel.sources import file as file_module
from aisentinel.sources.file import ROTATE_GRACE, SAVE_INTERVAL, FileSource, FileSourceConfig

DEADLINE = 10.0


class Collector:
    """A thread-safe ``emit`` that keeps every batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: list[LineBatch] = []
        self.unparsed = 0
        self.unrecognised = 0

    def __call__(self, batch: Batch) -> None:
        with self._lock:
            if isinstance(batch, EventBatch):  # lines of no format known (parser = "auto")
                assert batch.events == []
                self.unparsed += batch.unparsed
                self.unrecognised += batch.unrecognised
            else:
                self._batches.append(batch)

    @property
    def batches(self) -> list[LineBatch]:
        with self._lock:
            return list(self._batches)

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch.lines]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until true; fail with ``what`` at the deadline."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def copytruncate(log: Path, copy: Path, *, compress: bool = False) -> None:
    """logrotate's copytruncate: copy the file (a new inode), then truncate it in place;
    with ``compress``, the copy is gzipped (``copy`` + ``.gz``) and removed."""
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    if compress:
        with gzip.open(f"{copy}.gz", "wb") as out:
            out.write(copy.read_bytes())
        copy.unlink()


def deny_open(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, bool]:
    """Make ``os.open`` of ``path`` fail with EACCES while the returned ``["on"]`` is true."""
    real_open = os.open
    denied = {"on": True}

    def fake_open(name: Any, flags: int, *args: Any) -> int:
        if denied["on"] and os.fspath(name) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", fake_open)
    return denied


class Harness:
    """Builds sources over ``tmp_path``, starts them and stops them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.started: list[FileSource] = []

    def config(self, paths: list[Path | str], **kw: Any) -> FileSourceConfig:
        kw.setdefault("poll_interval", 0.2)
        kw.setdefault("parser", "nginx")
        return FileSourceConfig(name="web", type="file", paths=[str(p) for p in paths], **kw)

    def start(
        self, paths: list[Path | str], clock: Any = None, **kw: Any
    ) -> tuple[FileSource, Collector]:
        source = FileSource(
            self.config(paths, **kw), clock=clock or SystemClock(), state_dir=self.state
        )
        out = Collector()
        source.start(out)
        self.started.append(source)
        wait_for(source.ready, "the source to be ready")
        return source, out

    def stop_all(self) -> None:
        for source in self.started:
            source.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop_all()


def expect(out: Collector, lines: list[str]) -> None:
    wait_for(lambda: len(out.lines) >= len(lines), f"lines {lines}")
    assert out.lines == lines


def start_polled(harness: Harness, log: Path) -> tuple[FileSource, Collector, FakeClock]:
    """Follow ``log`` from its beginning, polled every second of a fake clock (no
    inotify: nothing more is read until the test turns the clock); its first line,
    ``a1``, has been read."""
    clock = FakeClock()
    source, out = harness.start(
        [log], clock=clock, start_at="beginning", inotify=False, poll_interval=1.0
    )
    expect(out, ["a1"])
    return source, out, clock


COPIES = pytest.mark.parametrize(
    ("copy", "compress"),
    [(".1", False), ("-20261207", False), (".1", True)],
    ids=["numbered", "dateext", "compressed"],
)
"""The names and forms of a copytruncate copy: numbered, dateext, compressed."""


def one_gap(source: FileSource, logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one gap ``source`` counted, as logged (the one error in ``logs``)."""
    assert source.stats.gaps == 1
    (gap,) = [e for e in logs if e["log_level"] == "error"]
    return gap


def turn(clock: FakeClock, seconds: float) -> None:
    """Move ``clock`` on by ``seconds`` and wait until the reader (which waits on that
    clock) has done the turn it woke for and is waiting again: no sleep, no race."""
    wait_for(lambda: clock.waiting > 0, "the reader to wait")
    before = clock.waits
    clock.advance(seconds)
    wait_for(lambda: clock.waits > before and clock.waiting > 0, "the reader's turn")


# ------------------------------------------------------------------ lines


def test_reads_existing_and_appended_lines(harness: Harness, tmp_path: Path) -> None:
    """start_at=beginning reads what is there, then follows appends in order."""
    log = tmp_path / "access.log"
    log.write_bytes(b"one\ntwo\n")
    source, out = harness.start([log], start_at="beginning")
    expect(out, ["one", "two"])
    append(log, b"three\nfour\n")
    expect(out, ["one", "two", "three", "four"])
    assert source.stats.lines_read == 4
    assert source.stats.bytes_read == len(b"one\ntwo\nthree\nfour\n")
    assert source.stats.up
    assert all(b.source == "web" and b.parser == "nginx" for b in out.batches)


def test_start_at_end_skips_existing_lines(harness: Harness, tmp_path: Path) -> None:
    """start_at=end ignores complete old lines but finishes a partial last line."""
    log = tmp_path / "access.log"
    log.write_bytes(b"old\nhalf")
    _, out = harness.start([log])
    append(log, b"-line\nnew\n")
    expect(out, ["half-line", "new"])


def test_partial_line_held_until_newline(harness: Harness, tmp_path: Path) -> None:
    """A line without its newline is not emitted until the newline arrives."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"first\npart")
    wait_for(lambda: source.stats.bytes_read == 10, "the partial line to be read")
    assert out.lines == ["first"]
    append(log, b"ial\n")
    expect(out, ["first", "partial"])


def test_crlf_and_invalid_utf8(harness: Harness, tmp_path: Path) -> None:
    """CRLF endings lose the CR; invalid UTF-8 becomes U+FFFD; a lone CR ends a line."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    _, out = harness.start([log])
    append(log, b"dos\r\ncaf\xe9 ok\nin\rside\n\r\n")
    expect(out, ["dos", "caf\ufffd ok", "in", "side", ""])


def test_crlf_split_across_writes(harness: Harness, tmp_path: Path) -> None:
    """A CR at the end of one write and its LF in the next still end one line."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"abc\r")
    wait_for(lambda: source.stats.bytes_read == 4, "the first half")
    append(log, b"\n")
    expect(out, ["abc"])


def test_overlong_lines_are_cut(harness: Harness, tmp_path: Path) -> None:
    """Lines over max_line_bytes are cut at the cap, counted, and their rest discarded."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log], max_line_bytes=64)
    append(log, b"x" * 200 + b"\nok\n")
    expect(out, ["x" * 64, "ok"])
    append(log, b"y" * 100)  # no newline yet: cut now, not buffered forever
    expect(out, ["x" * 64, "ok", "y" * 64])
    append(log, b"y" * 5000 + b"\nnext\n")
    expect(out, ["x" * 64, "ok", "y" * 64, "next"])
    assert source.stats.lines_truncated == 2


def test_a_cut_line_is_handed_on_marked_cut_and_logged_once(
    harness: Harness, tmp_path: Path
) -> None:
    """A line cut at the cap is handed on as a CutLine (whole lines stay plain str), and
    the first cut of a file is logged once, with the path and the cap."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    with structlog.testing.capture_logs() as logs:
        source, out = harness.start([log], max_line_bytes=64)
        append(log, b"x" * 200 + b"\nok\n")
        expect(out, ["x" * 64, "ok"])
        append(log, b"y" * 100)  # cut with no line end yet
        expect(out, ["x" * 64, "ok", "y" * 64])
    assert [type(line) for line in out.lines] == [CutLine, str, CutLine]
    cuts = [e for e in logs if e["event"].startswith("log line longer than max_line_bytes")]
    assert [(e["path"], e["max_line_bytes"], e["log_level"]) for e in cuts] == [
        (str(log), 64, "warning")
    ]
    assert source.stats.lines_truncated == 2


def _json_request(ip: str, body: str) -> str:
    """An nginx-json (aisentinel_prompts) line from ``ip`` with ``body`` as its body."""
    return json.dumps(
        {
            "time": "1764112470.250",
            "remote_addr": ip,
            "request_method": "POST",
            "request_uri": "/v1/chat/completions",
            "status": "200",
            "request_body": body,
        }
    )


def _requests(out: Collector) -> list[HttpRequest]:
    """The requests the batches' parsers make of them, as the daemon's pipeline does."""
    found: list[HttpRequest] = []
    for batch in out.batches:
        parser = build_parser(batch.parser, ParserContext(source=batch.source))
        found.extend(e for e in parser.parse_many(batch.lines) if isinstance(e, HttpRequest))
    return found


@pytest.mark.parametrize("parser", ["nginx-json", "auto"])
def test_nginx_json_lines_with_long_bodies_reach_the_parser(
    harness: Harness, tmp_path: Path, parser: str
) -> None:
    """An nginx-json source reads lines of up to 1 MiB whole (a 200 KB prompt body: once
    cut at 64 KiB and lost), and a longer line cut at 1 MiB still gives its request,
    with the body up to the cut; with auto, once the file's format is told."""
    log = tmp_path / "aisentinel.json.log"
    log.write_text(_json_request("192.0.2.1", "hi") + "\n")
    source, out = harness.start([log], start_at="beginning", parser=parser)
    expect(out, [_json_request("192.0.2.1", "hi")])
    long_body = "Ignore all previous instructions. " + "x" * 200_000
    huge_body = "Ignore all previous instructions. " + "y" * 1_100_000
    append(log, (_json_request("192.0.2.2", long_body) + "\n").encode())
    append(log, (_json_request("192.0.2.3", huge_body) + "\n").encode())
    wait_for(lambda: len(out.lines) == 3, "the long lines")
    assert [type(line) for line in out.lines] == [str, str, CutLine]
    assert source.stats.lines_truncated == 1
    assert len(out.lines[2].encode()) == 1 << 20
    requests = _requests(out)
    assert [r.client for r in requests] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert requests[1].body == long_body
    assert requests[2].body is not None
    assert huge_body.startswith(requests[2].body)
    assert len(requests[2].body) > 1_000_000


def test_batches_respect_batch_lines(harness: Harness, tmp_path: Path) -> None:
    """No batch holds more than batch_lines lines."""
    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"l%d\n" % i for i in range(7)))
    _, out = harness.start([log], start_at="beginning", batch_lines=2)
    expect(out, [f"l{i}" for i in range(7)])
    assert max(len(b.lines) for b in out.batches) == 2


def test_large_file_read_in_chunks(harness: Harness, tmp_path: Path) -> None:
    """A file bigger than several read chunks is delivered completely and in order."""
    log = tmp_path / "big.log"
    count = 200_000
    log.write_bytes(b"".join(b"line %07d padding padding\n" % i for i in range(count)))
    _, out = harness.start([log], start_at="beginning")
    wait_for(lambda: len(out.lines) >= count, "all lines")
    lines = out.lines
    assert len(lines) == count
    assert lines[0] == "line 0000000 padding padding"
    assert lines[-1] == f"line {count - 1:07d} padding padding"


# ------------------------------------------------------------------ rotation


def test_rotated_file_is_read_for_the_grace_period_of_the_clock(
    harness: Harness, tmp_path: Path
) -> None:
    """After a rename rotation the old file is still read (its writer may not have
    reopened) until it has been idle for ROTATE_GRACE seconds of the source's clock."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    source, out, clock = start_polled(harness, log)
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "b1"]
    assert source.stats.rotations == 1
    append(tmp_path / "a.log.1", b"late\n")
    turn(clock, ROTATE_GRACE - 1.0)  # idle for less than the grace: still read
    assert out.lines == ["a1", "b1", "late"]
    turn(clock, ROTATE_GRACE - 1.0)  # idle for less than the grace again: still open
    append(tmp_path / "a.log.1", b"still read\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "b1", "late", "still read"]
    turn(clock, ROTATE_GRACE)  # idle for the whole grace: closed, never read again
    append(tmp_path / "a.log.1", b"too late\n")
    append(log, b"b2\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "b1", "late", "still read", "b2"]


def test_last_line_without_newline_of_a_rotated_file_is_handed_on(
    harness: Harness, tmp_path: Path
) -> None:
    """A rotated-away file that ends without a newline: its last line is handed on when
    the file is closed after ROTATE_GRACE, as for a file rotated while stopped."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\na2")
    _, out, clock = start_polled(harness, log)
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "b1"]
    turn(clock, ROTATE_GRACE)
    assert out.lines == ["a1", "b1", "a2"]


def test_rename_and_create_rotation(harness: Harness, tmp_path: Path) -> None:
    """logrotate's default: the old file is read to its end, then the new one from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"a1\n")
    expect(out, ["a1"])
    append(log, b"a2\n")
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    expect(out, ["a1", "a2", "b1"])
    append(tmp_path / "a.log.1", b"late\n")  # writer not yet reopened: still read
    append(log, b"b2\n")
    wait_for(lambda: len(out.lines) == 5, "the late line and b2")
    assert set(out.lines[3:]) == {"late", "b2"}
    assert source.stats.rotations == 1


def _hand_driven(
    harness: Harness, paths: list[Path | str], **kw: Any
) -> tuple[FileSource, Collector]:
    """A source on ``paths`` from their beginning, driven by hand one turn at a time (no
    reader thread)."""
    source = FileSource(
        harness.config(paths, start_at="beginning", inotify=False, **kw),
        clock=SystemClock(),
        state_dir=harness.state,
    )
    out = Collector()
    source._emit = out
    source._first_scan()
    return source, out


def _by_origin(out: Collector) -> dict[int, list[str]]:
    """The lines handed on, per batch origin, in order."""
    lines: dict[int, list[str]] = {}
    for batch in out.batches:
        assert batch.origin > 0
        lines.setdefault(batch.origin, []).extend(batch.lines)
    return lines


def test_rotations_while_behind_lose_no_generation_and_each_file_is_an_origin(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file rotated twice while its first generation's backlog is read: every
    generation is read whole (the files may interleave), each file's lines in order and
    under an origin of their own, so a parser joining records never joins across files."""
    monkeypatch.setattr(file_module, "READ_CHUNK", 16)
    monkeypatch.setattr(file_module, "CHUNKS_PER_TURN", 1)
    log = tmp_path / "c-json.log"
    old = [f"old{i:02d}" for i in range(20)]
    log.write_text("".join(f"{line}\n" for line in old))
    source, out = _hand_driven(harness, [log])
    assert 0 < len(out.lines) < len(old)
    log.rename(tmp_path / "c-json.log.1")
    log.write_text("new1\n")
    source._cycle(full=True)
    (tmp_path / "c-json.log.1").rename(tmp_path / "c-json.log.2")
    log.rename(tmp_path / "c-json.log.1")
    log.write_text("new2\n")
    for _ in range(50):
        source._cycle(full=True)
    source._close_all()
    assert sorted(_by_origin(out).values()) == [["new1"], ["new2"], old]
    assert source.stats.gaps == 0


def test_a_globs_files_and_a_truncated_file_are_origins_of_their_own(
    harness: Harness, tmp_path: Path
) -> None:
    """Each file of a glob hands its lines on under its own origin, and a file read
    again from 0 after a truncation under a new one: its lines continue none before."""
    a, b = tmp_path / "a-json.log", tmp_path / "b-json.log"
    a.write_text("a1\n")
    b.write_text("b1\n")
    source, out = _hand_driven(harness, [tmp_path / "*-json.log"])
    append(a, b"a2\n")
    append(b, b"b2\n")
    source._cycle(full=True)
    with structlog.testing.capture_logs():
        a.write_text("a3\n")  # truncated and rewritten in place
        source._cycle(full=True)
    source._close_all()
    assert sorted(_by_origin(out).values()) == [["a1", "a2"], ["a3"], ["b1", "b2"]]


def test_copytruncate_rotation(harness: Harness, tmp_path: Path) -> None:
    """A file shorter than the offset was truncated: read it again from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"old line one\nold line two\n")
    expect(out, ["old line one", "old line two"])
    with log.open("r+b") as handle:
        handle.truncate(0)
    append(log, b"new\n")
    expect(out, ["old line one", "old line two", "new"])
    assert source.stats.rotations >= 1


@COPIES
def test_copytruncate_reads_the_lines_only_its_copy_holds(
    harness: Harness, tmp_path: Path, copy: str, *, compress: bool
) -> None:
    """Lines written after the last read and before a copytruncate are read from the
    copy, from the read offset, before the truncated file is read again; no gap."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    source, out, clock = start_polled(harness, log)
    append(log, b"a2\na3\n")  # not read yet: the next poll is a second away
    copytruncate(log, tmp_path / f"a.log{copy}", compress=compress)
    append(log, b"b1\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "a2", "a3", "b1"]
    assert source.stats.gaps == 0
    assert source.stats.rotations == 1
    append(log, b"b2\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "a2", "a3", "b1", "b2"]


def test_copytruncate_never_reads_an_older_generation_named_as_newer(
    harness: Harness, tmp_path: Path
) -> None:
    """A dateext name sorting after the copy (day first) but older by mtime is an old
    generation, not a later copy: it is not read again."""
    log = tmp_path / "a.log"
    older = tmp_path / "a.log-30112026"
    older.write_bytes(b"old1\n")
    os.utime(older, (1_000_000_000, 1_000_000_000))
    log.write_bytes(b"a1\n")
    _, out, clock = start_polled(harness, log)
    append(log, b"a2\n")
    copytruncate(log, tmp_path / "a.log-07122026")
    append(log, b"b1\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "a2", "b1"]


def test_copytruncate_after_reading_past_the_copy_is_no_gap(
    harness: Harness, tmp_path: Path
) -> None:
    """Lines written between logrotate's copy and its truncation, read before the
    truncation: the copy, shorter than the read offset, holds nothing more; no gap."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    source, out, clock = start_polled(harness, log)
    shutil.copyfile(log, tmp_path / "a.log.1")
    append(log, b"a2\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "a2"]
    os.truncate(log, 0)
    append(log, b"b1\n")
    turn(clock, 1.0)
    assert out.lines == ["a1", "a2", "b1"]
    assert source.stats.gaps == 0


def test_truncation_without_a_copy_is_a_gap(harness: Harness, tmp_path: Path) -> None:
    """A truncated file with no copy among its rotated files may have lost lines: one
    error naming it, counted as a gap; the file is read again from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    source, out, clock = start_polled(harness, log)
    append(log, b"a2\n")
    os.truncate(log, 0)
    append(log, b"b1\n")
    with structlog.testing.capture_logs() as logs:
        turn(clock, 1.0)
    assert out.lines == ["a1", "b1"]
    gap = one_gap(source, logs)
    assert "no copy of it found" in gap["event"]
    assert gap["path"] == str(log)
    assert "after byte 3" in gap["unread"]


def test_stop_while_reading_a_copy_resumes_in_it(harness: Harness, tmp_path: Path) -> None:
    """A stop that comes while the copy of a truncated file is read: the next start
    goes on in the copy after the last line handed on, then reads the file from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    clock = FakeClock()
    source = FileSource(
        harness.config(
            [log], start_at="beginning", inotify=False, poll_interval=1.0, batch_lines=1
        ),
        clock=clock,
        state_dir=harness.state,
    )
    harness.started.append(source)
    out = Collector()

    def emit(batch: Batch) -> None:
        out(batch)
        if isinstance(batch, LineBatch) and batch.lines == ["a2"]:
            source.request_stop()

    source.start(emit)
    expect(out, ["a1"])
    append(log, b"a2\na3\n")
    copytruncate(log, tmp_path / "a.log.1")
    append(log, b"b1\n")
    wait_for(lambda: clock.waiting > 0, "the reader to wait")
    clock.advance(1.0)
    wait_for(lambda: source.stats.state == "stopped", "the reader to stop")
    source.stop()
    assert out.lines == ["a1", "a2"]
    _, again = harness.start([log])
    expect(again, ["a3", "b1"])


def test_rewrite_in_place_detected_by_head(harness: Harness, tmp_path: Path) -> None:
    """Same inode, size not smaller, but different first bytes: read again from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"aaaa\nbbbb\n")
    source, out = harness.start([log], start_at="beginning", inotify=False, poll_interval=0.05)
    expect(out, ["aaaa", "bbbb"])
    fd = os.open(log, os.O_WRONLY)
    try:
        os.pwrite(fd, b"cccc\ndddd\neeee\n", 0)
    finally:
        os.close(fd)
    expect(out, ["aaaa", "bbbb", "cccc", "dddd", "eeee"])
    assert source.stats.rotations == 1


def test_delete_and_recreate(harness: Harness, tmp_path: Path) -> None:
    """A deleted file that comes back (a new inode) is read from its beginning."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log])
    append(log, b"one\n")
    expect(out, ["one"])
    log.unlink()
    log.write_bytes(b"two\n")
    expect(out, ["one", "two"])
    assert source.stats.rotations == 1


def test_file_appears_later_in_missing_directory(harness: Harness, tmp_path: Path) -> None:
    """A missing log and directory are waited for (source down) and read from 0 on arrival."""
    log = tmp_path / "not" / "yet" / "a.log"
    source, out = harness.start([log])
    assert not source.stats.up
    assert source.stats.state == "waiting"
    assert out.lines == []
    log.parent.mkdir(parents=True)
    log.write_bytes(b"hello\n")
    expect(out, ["hello"])
    wait_for(lambda: source.stats.state == "following", "the source to be following")
    assert source.stats.up
    append(log, b"world\n")
    expect(out, ["hello", "world"])


def test_directory_removed_and_recreated(harness: Harness, tmp_path: Path) -> None:
    """The log's directory vanishing and coming back is followed, not fatal."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "a.log"
    log.write_bytes(b"")
    _, out = harness.start([log])
    append(log, b"one\n")
    expect(out, ["one"])
    log.unlink()
    logdir.rmdir()
    logdir.mkdir()
    log.write_bytes(b"two\n")
    expect(out, ["one", "two"])


def test_symlink_repointed(harness: Harness, tmp_path: Path) -> None:
    """A symlinked path follows its target; re-pointing the link is a rotation."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "t1.log").write_bytes(b"")
    link = tmp_path / "current.log"
    link.symlink_to(real / "t1.log")
    source, out = harness.start([link])
    append(real / "t1.log", b"from t1\n")
    expect(out, ["from t1"])
    (real / "t2.log").write_bytes(b"from t2\n")
    tmp_link = tmp_path / "current.tmp"
    tmp_link.symlink_to(real / "t2.log")
    tmp_link.replace(link)
    expect(out, ["from t1", "from t2"])
    append(real / "t2.log", b"more\n")
    expect(out, ["from t1", "from t2", "more"])
    assert source.stats.rotations == 1


def test_glob_pattern_picks_up_new_files(harness: Harness, tmp_path: Path) -> None:
    """Glob paths follow existing matches (start_at) and read new matches from 0."""
    (tmp_path / "a.log").write_bytes(b"old\n")
    _, out = harness.start([tmp_path / "*.log"])
    (tmp_path / "b.log").write_bytes(b"b1\n")
    expect(out, ["b1"])
    append(tmp_path / "a.log", b"a1\n")
    expect(out, ["b1", "a1"])
    (tmp_path / "c.txt").write_bytes(b"ignored\n")
    append(tmp_path / "a.log", b"a2\n")
    expect(out, ["b1", "a1", "a2"])


@pytest.mark.parametrize(
    "names",
    [
        ["{d}/a.log", "{d}/*.log"],
        ["{d}/*.log", "{d}/a.log"],
        ["{d}/a.log", "{d}//a.log"],
        ["{d}/a.log", "{d}/sub/../a.log"],
        ["{d}//a.log", "{d}/*.log"],
    ],
    ids=["literal-then-glob", "glob-then-literal", "double-slash", "dot-dot", "alias-and-glob"],
)
def test_a_file_named_twice_by_one_source_is_up_and_read_once(
    harness: Harness, tmp_path: Path, names: list[str]
) -> None:
    """A source naming one file twice is up, reads each line once, stays up on rotation."""
    (tmp_path / "sub").mkdir()
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([n.format(d=tmp_path) for n in names])
    assert (source.stats.state, source.stats.reason) == ("following", "following 2 path(s)")
    assert source.stats.up
    append(log, b"one\n")
    expect(out, ["one"])
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"two\n")
    expect(out, ["one", "two"])
    wait_for(lambda: source.stats.state == "following", "the source to be following")
    append(log, b"three\n")
    expect(out, ["one", "two", "three"])
    assert source.stats.state == "following"


def test_polling_fallback(harness: Harness, tmp_path: Path) -> None:
    """With inotify off, appends and a rename rotation are still followed."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log], inotify=False, poll_interval=0.05)
    assert source._observer is None
    append(log, b"one\n")
    expect(out, ["one"])
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"two\n")
    expect(out, ["one", "two"])


def test_inotify_unavailable_falls_back_to_polling(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer that cannot start (no inotify) means polling, not a crash."""
    import watchdog.observers

    class Broken:
        daemon = False

        def start(self) -> None:
            raise OSError(38, "inotify not supported")

    monkeypatch.setattr(watchdog.observers, "Observer", Broken)
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, out = harness.start([log], poll_interval=0.05)
    assert source._observer is None
    append(log, b"one\n")
    expect(out, ["one"])


# ------------------------------------------------------------------ parser = "auto"

NGINX = '192.0.2.1 - - [24/Nov/2025:16:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"'
SSHD = "Nov 25 23:14:30 host sshd[1]: Invalid user a from 192.0.2.9 port 22"


def test_auto_sniffs_each_file_and_logs_the_choice(harness: Harness, tmp_path: Path) -> None:
    """parser = "auto": each file gets the parser sniffed from its first lines, logged once."""
    web, auth = tmp_path / "access.log", tmp_path / "auth.log"
    web.write_text(f"{NGINX}\n{NGINX}\n")
    auth.write_text(f"{SSHD}\n")
    with structlog.testing.capture_logs() as logs:
        _, out = harness.start([web, auth], start_at="beginning", parser="auto")
        wait_for(lambda: len(out.lines) == 3, "the lines of both files")
        append(web, f"{NGINX}\n".encode())
        wait_for(lambda: len(out.lines) == 4, "the appended line")
    by_parser = {(b.parser, line) for b in out.batches for line in b.lines}
    assert by_parser == {("nginx", NGINX), ("sshd", SSHD)}
    chosen = [(e["path"], e["parser"]) for e in logs if e["event"] == "log format detected"]
    assert sorted(chosen) == [(str(web), "nginx"), (str(auth), "sshd")]


def test_auto_holds_lines_until_the_format_is_known(harness: Harness, tmp_path: Path) -> None:
    """Lines before the first recognisable one are held, then handed on with it, in order."""
    log = tmp_path / "auth.log"
    log.write_text("noise one\nnoise two\n")
    source, out = harness.start([log], start_at="beginning", parser="auto")
    wait_for(lambda: source.stats.bytes_read == 20, "the first lines to be read")
    assert out.batches == []
    append(log, f"{SSHD}\n".encode())
    expect(out, ["noise one", "noise two", SSHD])
    assert {b.parser for b in out.batches} == {"sshd"}
    assert out.unparsed == 0


def test_auto_holds_at_most_sniff_hold_bytes_of_unrecognised_lines(
    harness: Harness, tmp_path: Path
) -> None:
    """Lines held while a file's format is not told take at most SNIFF_HOLD_BYTES: past
    it (one astral character makes a line take 4 bytes a character), the held lines,
    none recognised, are handed on as unparsed, and sniffing goes on with the next."""
    log = tmp_path / "app.log"
    big = "\U0001f600" + "x" * (1 << 20)  # about 4 MiB as a str
    log.write_text(f"{big}\n{big}\n{big}\n")
    source, out = _hand_driven(harness, [log], parser="auto")
    for _ in range(3):
        source._cycle(full=True)
    handle = source._files[str(log)].handle
    assert handle is not None
    assert sum(map(sys.getsizeof, handle.held)) <= file_module.SNIFF_HOLD_BYTES
    assert out.unparsed >= 2
    append(log, f"{NGINX}\n".encode())
    source._cycle(full=True)
    source._close_all()
    assert out.unparsed + len(out.lines) == 4
    assert out.lines[-1] == NGINX


def test_auto_held_lines_survive_a_restart(harness: Harness, tmp_path: Path) -> None:
    """A stop while the format is unknown saves the position before the held lines."""
    log = tmp_path / "access.log"
    log.write_text("noise\n")
    first, out = harness.start([log], start_at="beginning", parser="auto")
    wait_for(lambda: first.stats.bytes_read == 6, "the first line to be read")
    first.stop()
    assert out.batches == []
    doc = json.loads((harness.state / "positions.json").read_text())
    assert doc["sources"]["web"][str(log)]["offset"] == 0
    append(log, f"{NGINX}\n".encode())
    _, out2 = harness.start([log], start_at="beginning", parser="auto")
    expect(out2, ["noise", NGINX])


def test_auto_counts_a_window_of_unknown_lines_as_unparsed(
    harness: Harness, tmp_path: Path
) -> None:
    """A full sniff window with no recognisable line is counted unparsed, and as lines of
    no format the source can tell (they count against it: a blind source); sniffing goes
    on."""
    log = tmp_path / "access.log"
    log.write_text("".join(f"junk {i}\n" for i in range(5)) + f"{NGINX}\n")
    source, out = harness.start([log], start_at="beginning", parser="auto", batch_lines=4)
    expect(out, ["junk 4", NGINX])
    assert out.unparsed == 4
    assert out.unrecognised == 4
    assert source.stats.lines_read == 6


def test_auto_reads_lines_whole_until_told_then_cuts_them_at_the_formats_cap(
    harness: Harness, tmp_path: Path
) -> None:
    """While the format is not told, lines are read up to the largest cap of any format
    (a container log's 98 KB record of a 16 KiB piece is not cut); once told, held lines
    longer than the format's cap are cut there, as if read with it (counted once)."""
    log, other = tmp_path / "error.log", tmp_path / "c-json.log"
    long = "x" * 100_000
    error = "2026/12/07 21:00:00 [notice] 1#1: start worker process 29"
    log.write_text(f"{long}\n{error}\n")
    record = (
        '{"log":"' + "\\u003c" * 16384 + '\\n","stream":"stdout","time":"2026-12-07T21:00:00Z"}'
    )
    other.write_text(record + "\n")
    source, out = harness.start([log, other], start_at="beginning", parser="auto")
    wait_for(lambda: len(out.lines) == 3, "the lines of both files")
    by_parser = {line[:8]: (b.parser, line) for b in out.batches for line in b.lines}
    fmt, cut = by_parser["x" * 8]
    assert fmt == "nginx-error"
    assert type(cut) is CutLine
    assert cut == long[:65536]
    assert by_parser["2026/12/"] == ("nginx-error", error)
    assert by_parser[record[:8]] == ("container", record)
    assert source.stats.lines_truncated == 1


# ------------------------------------------------------------------ restart and positions


def test_restart_resumes_without_replay_or_loss(harness: Harness, tmp_path: Path) -> None:
    """Lines written while stopped are read after a restart; none are read twice."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["one", "two"])
    first.stop()
    append(log, b"three\nfour\n")
    _, out2 = harness.start([log], start_at="beginning")
    expect(out2, ["three", "four"])


def test_positions_file_records_offset(harness: Harness, tmp_path: Path) -> None:
    """stop() saves dev, inode and the offset just past the last delivered line."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\npartial")
    source, out = harness.start([log], start_at="beginning")
    expect(out, ["one"])
    source.stop()
    doc = json.loads((harness.state / "positions.json").read_text())
    entry = doc["sources"]["web"][str(log)]
    st = log.stat()
    assert (entry["dev"], entry["ino"], entry["offset"]) == (st.st_dev, st.st_ino, 4)
    assert entry["head_len"] == len(b"one\npartial")


def test_positions_saved_while_running(harness: Harness, tmp_path: Path) -> None:
    """Positions reach disk while the source runs, not only at stop() (crash safety):
    at most every SAVE_INTERVAL seconds of the source's clock."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    clock = FakeClock()
    _, out = harness.start(
        [log], clock=clock, start_at="beginning", inotify=False, poll_interval=0.25
    )
    expect(out, ["one"])
    turn(clock, 0.25)
    path = harness.state / "positions.json"

    def saved_offset() -> int:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return -1
        offset: int = doc["sources"]["web"][str(log)]["offset"]
        return offset

    assert saved_offset() == 4
    append(log, b"two\n")
    turn(clock, 0.25)
    assert out.lines == ["one", "two"]
    assert saved_offset() == 4  # read, but the last save was less than SAVE_INTERVAL ago
    turn(clock, SAVE_INTERVAL)
    assert saved_offset() == 8


def test_saved_position_waits_for_the_acks_of_the_batches_before_it(
    harness: Harness, tmp_path: Path
) -> None:
    """With acks, a position is saved only once the batches before it are acknowledged
    (processed), also at stop(): lines handed on but not processed are read again."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")
    clock = FakeClock()
    cfg = harness.config([log], start_at="beginning", inotify=False, poll_interval=0.25)
    source = FileSource(cfg, clock=clock, state_dir=harness.state)
    source.acks = True
    out = Collector()
    source.start(out)
    harness.started.append(source)
    expect(out, ["one", "two"])
    path = harness.state / "positions.json"

    def saved_offset() -> int:
        doc = json.loads(path.read_text()) if path.exists() else {"sources": {}}
        offset: int = doc["sources"].get("web", {}).get(str(log), {}).get("offset", -1)
        return offset

    turn(clock, SAVE_INTERVAL)
    assert saved_offset() == -1  # handed on, not processed: nothing saved past it
    (first,) = out.batches
    assert first.seq > 0
    source.ack(first.seq)
    turn(clock, SAVE_INTERVAL)
    assert saved_offset() == 8
    append(log, b"three\n")
    turn(clock, SAVE_INTERVAL)
    expect(out, ["one", "two", "three"])
    turn(clock, SAVE_INTERVAL)
    assert saved_offset() == 8
    source.acks_end()  # the consumer closes without processing "three"
    source.stop()
    assert saved_offset() == 8
    _, again = harness.start([log], start_at="beginning")
    expect(again, ["three"])


def test_rotated_while_stopped(harness: Harness, tmp_path: Path) -> None:
    """After a restart, the rest of the rotated file comes first, then the new file."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["a1"])
    first.stop()
    append(log, b"a2\n")
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"b1\n")
    source, out2 = harness.start([log])
    expect(out2, ["a2", "b1"])
    assert source.stats.rotations == 1


def test_rotated_while_stopped_found_by_inode(harness: Harness, tmp_path: Path) -> None:
    """A rotated file with an unusual name is found among the siblings by its inode."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["a1"])
    first.stop()
    append(log, b"a2\n")
    log.rename(tmp_path / "old-access")
    log.write_bytes(b"b1\n")
    _, out2 = harness.start([log])
    expect(out2, ["a2", "b1"])


def test_restart_with_path_missing_reads_rotated_tail(harness: Harness, tmp_path: Path) -> None:
    """Rotated while stopped and not recreated yet: the tail is read, then the new file."""
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["a1"])
    first.stop()
    append(log, b"a2\n")
    log.rename(tmp_path / "a.log.1")
    _, out2 = harness.start([log])
    expect(out2, ["a2"])
    log.write_bytes(b"b1\n")
    expect(out2, ["a2", "b1"])


def test_rewritten_while_stopped_starts_over(harness: Harness, tmp_path: Path) -> None:
    """Same inode but a different head (reused or rewritten) means reading from 0."""
    log = tmp_path / "a.log"
    log.write_bytes(b"aaaa\nbbbb\n")
    first, out = harness.start([log], start_at="beginning")
    expect(out, ["aaaa", "bbbb"])
    first.stop()
    fd = os.open(log, os.O_WRONLY)
    try:
        os.pwrite(fd, b"cccc\ndddd\neeee\n", 0)
    finally:
        os.close(fd)
    _, out2 = harness.start([log])
    expect(out2, ["cccc", "dddd", "eeee"])


def test_unconfigured_saved_path_is_forgotten(harness: Harness, tmp_path: Path) -> None:
    """A saved position for a path no longer configured is neither read nor kept."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_bytes(b"o1\n")
    first, out = harness.start([old], start_at="beginning")
    expect(out, ["o1"])
    first.stop()
    append(old, b"o2\n")
    new.write_bytes(b"n1\n")
    second, out2 = harness.start([new], start_at="beginning")
    expect(out2, ["n1"])
    second.stop()
    doc = json.loads((harness.state / "positions.json").read_text())
    assert list(doc["sources"]["web"]) == [str(new)]
    assert out2.lines == ["n1"]


def test_corrupt_positions_file(harness: Harness, tmp_path: Path) -> None:
    """A corrupt positions file is moved aside and the source starts fresh."""
    harness.state.mkdir()
    (harness.state / "positions.json").write_text("{not json")
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    source, out = harness.start([log], start_at="beginning")
    expect(out, ["one"])
    assert (harness.state / "positions.json.corrupt").read_text() == "{not json"
    source.stop()
    doc = json.loads((harness.state / "positions.json").read_text())
    assert doc["sources"]["web"][str(log)]["offset"] == 4


# ------------------------------------------------------------------ stats, lifecycle, config


def test_lag_stats(harness: Harness, tmp_path: Path) -> None:
    """Undelivered bytes count as lag; lag_seconds is now minus the file's mtime."""
    log = tmp_path / "a.log"
    log.write_bytes(b"done\npending")
    clock = FakeClock()
    source, out = harness.start([log], clock=clock, start_at="beginning", poll_interval=0.05)
    expect(out, ["done"])
    clock.set(log.stat().st_mtime + 7.0)
    wait_for(lambda: source.stats.lag_seconds > 6.9, "lag_seconds to follow the clock")
    assert source.stats.lag_bytes == len(b"pending")
    append(log, b"\n")
    wait_for(lambda: source.stats.lag_bytes == 0, "lag to clear")
    assert source.stats.lag_seconds == 0.0


def test_read_at_uses_the_clock(harness: Harness, tmp_path: Path) -> None:
    """Batches carry the clock's monotonic reading at read time."""
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n")
    clock = FakeClock()
    clock.advance(42.0)
    _, out = harness.start([log], clock=clock, start_at="beginning")
    expect(out, ["x"])
    assert out.batches[0].read_at == 42.0


def test_stop_is_prompt(harness: Harness, tmp_path: Path) -> None:
    """stop() wakes the reader instead of waiting out a long poll_interval."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    source, _ = harness.start([log], poll_interval=120)
    thread = source._thread
    assert thread is not None
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 5.0
    assert not thread.is_alive()
    assert not source.stats.up


def test_unreadable_file_is_an_error_not_a_crash(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open failure is counted and retried; the source keeps running, and once the
    file opens its error is no longer the source's last error (the count stays)."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    denied = deny_open(monkeypatch, log)
    source, out = harness.start([log], start_at="beginning", poll_interval=0.05)
    wait_for(lambda: source.stats.errors >= 1, "the error to be counted")
    assert "Permission denied" in source.stats.last_error
    denied["on"] = False
    expect(out, ["one"])
    assert source.stats.last_error == ""
    assert source.stats.errors >= 1


def test_config_validation() -> None:
    """Relative paths, directories and a zero poll interval are config errors."""
    base: dict[str, Any] = {"name": "x", "type": "file", "parser": "nginx"}
    with pytest.raises(ValidationError, match="absolute"):
        FileSourceConfig.model_validate({**base, "paths": ["var/log/a.log"]})
    with pytest.raises(ValidationError, match="directory"):
        FileSourceConfig.model_validate({**base, "paths": ["/var/log/"]})
    with pytest.raises(ValidationError, match="poll_interval"):
        FileSourceConfig.model_validate({**base, "paths": ["/var/log/a.log"], "poll_interval": 0})
    with pytest.raises(ValidationError):
        FileSourceConfig.model_validate({**base, "paths": []})
    cfg = FileSourceConfig.model_validate(
        {**base, "paths": ["/var/log/a.log"], "poll_interval": "500ms"}
    )
    assert cfg.poll_interval == 0.5
    assert REGISTRY.get("file").factory is FileSource
