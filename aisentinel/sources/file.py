"""The ``file`` source: follows log files through every kind of rotation.

One reader thread per source does all reading. It is woken by watchdog (inotify on
the parent directories) and, as a safety net, every ``poll_interval`` seconds; with
``inotify = false`` or where inotify is unavailable it simply polls.

Each configured path (absolute, glob patterns allowed) is checked on every wake-up:

* the open file is read to its end first, so the rest of a renamed file is never lost;
* the path now naming another file (rename+create, delete+recreate, a symlink
  re-pointed) is a rotation: the old file keeps being read for ``ROTATE_GRACE`` seconds
  after its last growth (writers that reopen late), the new one is read from offset 0;
* a file shorter than the read offset, or whose first bytes changed, was truncated
  (copytruncate) and is read again from 0, after the lines written before the
  truncation that were not read yet: they are read from the copy (the rotated
  generation that starts with the same first bytes), from the read offset; with no
  copy to be found they may be lost, a gap (logged, counted in ``stats.gaps``);
* a missing file or directory is waited for: the nearest existing ancestor directory is
  watched, and a file that appears later is read from its beginning. It is logged once
  (a warning) and the source reports ``waiting``, not up, until every literal path is
  open (a glob pattern needs one match). The positions store remembers what was waited
  for, so a file that appears while the daemon is down is read from its beginning too;
* a file there at start that cannot be opened (no permission yet) is an error, retried;
  with ``start_at = "end"`` it is read, once it opens, from the end it had at start, as
  if it had opened then, and it is not remembered as waited for;
* a path naming a file the source already follows under another of its names (the same
  device and inode: ``a//x.log`` or ``a/b/../x.log`` beside ``a/x.log``, a glob that
  matches a literal path) counts as open; the file is read once.

After a restart, a path that names another file than the saved one was rotated while
stopped: the rotated generations still there (``name.1``, ``name.2.gz``, ...,
``name-DATE[.gz]``) are read oldest first, from the saved offset in the generation that
holds the saved position (found by inode; a copy, copytruncate's, or a compressed one
by the hash of its first bytes), the newer ones whole, then the current file. A generation that is
gone or unreadable is a gap: logged with the file and bytes, counted in ``stats.gaps``.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``; they are decoded as UTF-8 with
``errors="replace"`` (invalid bytes become U+FFFD). A partial last line is held until its
line end. A line longer than ``max_line_bytes`` (unset: the parser's cap, 1 MiB for the
nginx access-log formats, 1 MiB + 4 KiB for ``container``, 64 KiB for the others; for a
file whose format is not told yet the largest of them, and once it is told the held
lines longer than its cap are cut there) is cut at the cap, counted in
``stats.lines_truncated`` (logged once per file)
and handed on as a :class:`~aisentinel.events.CutLine`, whose fields before the cut the
parser reads; the rest of it, up to its line end, is discarded. Memory stays bounded by
the cap: a line holds at most ``max_line_bytes`` bytes (up to 4 bytes a character once
decoded), and the lines of one read at most ``READ_CHUNK`` bytes plus one line.

Delivery is at-least-once: the saved position (see :mod:`.positions`) is the offset just
past the last line processed: with :attr:`~.base.Source.acks` (the daemon), a position is
taken between two batches and saved once the batches before it are acknowledged
(:class:`~.base.Checkpoints`); without, once ``emit`` returned. Lines are only duplicated
after a crash between their processing and the next save (saves happen at most every
``SAVE_INTERVAL`` seconds and at ``stop()``, which waits for the acknowledgements).
``stop()`` takes effect between two batches: the rest of a chunk already read
is left for the next start. If the process dies while the rest of an over-long line is
being discarded, that rest is read as a line after the restart. An ``emit`` that raises
is logged and counted in ``stats.errors``; the lines of that batch are not retried.

With ``parser = "auto"`` each file's format is sniffed from its first lines
(:func:`aisentinel.parsers.sniff`, up to ``SNIFF_LINES`` at a time), then fixed for that
file; the choice is logged. Lines read before the decision are held (at most
``SNIFF_LINES`` lines and ``SNIFF_HOLD_BYTES`` of memory, and the saved position stays
before them) and handed on once it is made; a window of ``SNIFF_LINES`` lines none of
which is recognised, or of fewer lines that take more memory than that, is counted as
unparsed (and, after a restart in the middle of sniffing, may be counted again).

Each batch of lines carries the number of the byte stream it was read from
(:attr:`~aisentinel.events.LineBatch.origin`): one per file opened, and a new one when a
file is read again from its start (truncated, rewritten); lines of one number continue
each other, in order. A parser that joins records (``container``) keeps what it joins
per number, so the files of a glob, a rotated file read beside its successor, or a file
truncated while lines of it were not read are never joined across.

A positions file that cannot be loaded or saved never stops the reading: it is logged
(once per distinct fault) and counted in ``stats.position_errors``, and the source
reports ``degraded``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import gzip
import itertools
import os
import re
import stat
import sys
import threading
import zlib
from pathlib import Path
from typing import Annotated, Literal

import structlog
from pydantic import AfterValidator, Field, field_validator
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from aisentinel.clock import Clock
from aisentinel.configtypes import Interval, TimeZoneName
from aisentinel.events import CutLine, EventBatch, LineBatch
from aisentinel.faults import fix_hint
from aisentinel.parsers import AUTO, line_cap, sniff
from aisentinel.parsers.base import MAX_LINE_BYTES
from aisentinel.sources.base import (
    REGISTRY,
    Checkpoints,
    Emit,
    Source,
    SourceConfigBase,
    SourceState,
    parser_name,
)
from aisentinel.sources.journald import journald_available, journald_problem
from aisentinel.sources.positions import (
    HEAD_BYTES,
    FilePosition,
    PositionStore,
    head_sha256,
    read_head,
)

_log = structlog.get_logger(__name__)

READ_CHUNK = 1 << 20
"""Bytes read per system call."""

CHUNKS_PER_TURN = 32
"""Chunks read from one file before the others get a turn (the thread comes straight back)."""

ROTATE_GRACE = 5.0
"""Seconds a rotated-away file is still read after it last grew."""

SAVE_INTERVAL = 1.0
"""Positions are saved at most this often (seconds) while running."""

SNIFF_LINES = 64
"""With ``parser = "auto"``: most lines looked at (and held) at once to tell a file's format."""

SNIFF_HOLD_BYTES = 4 << 20
"""With ``parser = "auto"``: most memory held in a file's lines while its format is not
told (``sys.getsizeof``: a decoded line takes up to 4 bytes a character); past it, the
held lines, none recognised, are handed on as unparsed, as a full window would be."""

_ORIGINS = itertools.count(1)
"""Numbers for :attr:`_Lines.origin`, never reused in a process."""

_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
_CONTENT_EVENTS = (FileModifiedEvent, FileClosedEvent)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_NUMBERED = re.compile(r"\.([0-9]{1,6})(\.gz)?")
_DATED = re.compile(r"-([0-9][0-9_.-]*?)(\.gz)?")


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


class FileSourceConfig(SourceConfigBase):
    """``[[sources]]`` with ``type = "file"``."""

    type: Literal["file"]
    parser: Annotated[str, AfterValidator(parser_name)]
    """A registered parser's name, or ``auto`` (sniffed per file from its first lines)."""
    paths: list[str] = Field(min_length=1)
    start_at: Literal["end", "beginning"] = "end"
    inotify: bool = True
    poll_interval: Interval = 1.0
    """Safety-net stat (and, without inotify, polling) period; 10ms-1h."""
    max_line_bytes: int | None = Field(default=None, ge=64, le=1 << 20)
    """Longer lines are cut here and the rest discarded (the part before the cut is still
    parsed); 64 B - 1 MiB. Unset: the parser's cap (``aisentinel replay`` cuts at the same
    length, so both see the same lines): 1 MiB for ``nginx`` and ``nginx-json``, whose
    lines carry long client fields and request bodies, 1 MiB + 4 KiB for ``container``,
    64 KiB for the others (and, with ``auto``, the largest until a file's format is told:
    a line cut then would be cut shorter than its format reads it). Below
    102400 with ``container`` (or ``auto``), a Docker record of a split line can be cut
    (``check-config`` warns)."""
    timezone: TimeZoneName | None = None
    """The zone the log's writer stamps its local times in, for formats whose stamps
    carry no offset (classic syslog, the nginx error log): an IANA name
    (``Europe/Berlin``) or ``UTC``, e.g. ``UTC`` for the logs of a container whose
    image runs in UTC, bind-mounted on a host in another zone. Unset: the daemon's own
    local zone. Formats whose stamps carry an offset or are UTC (nginx ``$time_local``,
    RFC 3339, JSON, container records) do not need it."""
    batch_lines: int = Field(default=512, ge=1, le=65536)
    """Most lines handed on at once; 1-65536. Small batches keep few short-lived objects
    (lines, events) among the long-lived window keys, so the heap stays less fragmented:
    100,000 new clients left the daemon 6 MB smaller with 512 than with 2048, at the same
    throughput (bench/rss.py, bench/latency.py)."""

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path or not Path(path).is_absolute():
                raise ValueError(f"log path {path!r} must be absolute")
            if path.endswith("/"):
                raise ValueError(f"log path {path!r} names a directory, not a file")
        return value


class _Lines:
    """Line-splitting state of one byte stream: the incomplete tail and the line-end state."""

    __slots__ = (
        "discarding",
        "fmt",
        "held",
        "held_from",
        "offset",
        "origin",
        "partial",
        "skip_lf",
    )

    def __init__(self, offset: int) -> None:
        self.offset = offset
        """Bytes of the stream consumed (read and split)."""
        self.origin = next(_ORIGINS)
        """The :attr:`~aisentinel.events.LineBatch.origin` of its lines: a number of its
        own, taken anew when the reading starts again elsewhere than where it stopped
        (:meth:`_Handle.restart`), so that no line is taken to continue the lines before."""
        self.fmt: str | None = None
        """With ``parser = "auto"``: the parser chosen for this stream, once sniffed."""
        self.held: list[str] = []
        """With ``parser = "auto"``: lines read before the format is known."""
        self.held_from: int | None = None
        """Offset where the held lines start (the saved position stays there)."""
        self.partial = b""
        """An incomplete last line (no line end yet)."""
        self.discarding = False
        """Discarding the rest of an over-long line, up to its line end."""
        self.skip_lf = False
        """The last byte was a ``\\r`` that ended a line: a ``\\n`` next is part of it."""

    @property
    def committed(self) -> int:
        """Offset just past the last complete line handed on."""
        if self.held_from is not None:
            return self.held_from
        return self.offset if self.discarding else self.offset - len(self.partial)


class _Handle(_Lines):
    """One open file being read: identity, read offset and the undelivered tail."""

    __slots__ = ("dev", "fd", "head", "idle_since", "ino", "path")

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int) -> None:
        super().__init__(offset)
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.head = read_head(fd)
        self.idle_since = 0.0
        """When the handle last read data while rotated away (set by ``_retire``)."""
        if offset > 0 and os.pread(fd, 2, offset - 1) == b"\r\n":
            self.skip_lf = True  # resuming between the two bytes of one line end

    def position(self) -> FilePosition:
        return FilePosition(
            self.dev, self.ino, self.committed, len(self.head), head_sha256(self.head)
        )

    def restart(self) -> None:
        """Read again from offset 0 (the file was truncated or rewritten): its lines no
        longer continue those read before (a new :attr:`origin`)."""
        self.offset = 0
        self.origin = next(_ORIGINS)
        self.partial = b""
        self.discarding = False
        self.skip_lf = False
        self.fmt = None
        self.held = []
        self.held_from = None
        self.head = read_head(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _Tracked:
    """A path being followed; ``explicit`` paths were configured literally (kept while missing).

    ``alias`` is the (device, inode) of the file this path names when that file is
    already followed under another of the source's names (``a//x.log`` beside
    ``a/x.log``, a glob matching a literal path): the path has no handle of its own,
    yet the file it names is read, so it counts as open.
    """

    __slots__ = ("alias", "explicit", "handle", "mtime", "path", "size")

    def __init__(self, path: str, *, explicit: bool) -> None:
        self.path = path
        self.explicit = explicit
        self.handle: _Handle | None = None
        self.alias: tuple[int, int] | None = None
        self.size = 0
        self.mtime = 0.0


class _Wakeup(FileSystemEventHandler):
    """Wakes the reader thread on filesystem events that concern the followed files."""

    def __init__(self, source: FileSource) -> None:
        self._source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = self._source
        paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path)]
        if not event.is_directory and not any(p and src.concerns(p) for p in paths):
            return
        src.wake(structural=not isinstance(event, _CONTENT_EVENTS))


class FileSource(Source):
    """Follows the files named by ``paths``; see the module docstring for the behaviour."""

    config: FileSourceConfig

    def __init__(self, config: FileSourceConfig, *, clock: Clock, state_dir: Path) -> None:
        super().__init__(config, clock=clock, state_dir=state_dir)
        self.config = config
        self.parser = config.parser
        self._auto = config.parser == AUTO
        self._sniff_lines = min(SNIFF_LINES, config.batch_lines)
        self._store = PositionStore(state_dir, config.name)
        self._cap = config.max_line_bytes or (None if self._auto else line_cap(config.parser))
        """The line length cap; None: the sniffed format's (``auto``, see :meth:`_split`)."""
        self._cut_logged: set[str] = set()
        self._files: dict[str, _Tracked] = {}
        self._draining: list[_Handle] = []
        self._saved: dict[str, FilePosition] = {}
        self._last_saved: tuple[dict[str, FilePosition], frozenset[str]] | None = None
        self._checkpoints: Checkpoints[tuple[dict[str, FilePosition], frozenset[str]]] = (
            Checkpoints()
        )
        self._next_save = 0.0
        self._interest: frozenset[str] = frozenset()
        self._watches: dict[str, tuple[ObservedWatch, tuple[int, int]]] = {}
        self._observer: BaseObserver | None = None
        self._wake = threading.Event()
        self._structural = True
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit: Emit | None = None
        self._errors_seen: dict[str, str] = {}
        self._watched_before: frozenset[str] = frozenset()
        self._unopened: dict[str, tuple[int, int, int]] = {}
        """Paths there at start that could not be opened: (device, inode, size) then."""
        self._saved_at = 0.0
        self._store_fault = ""
        self._store_faults_logged: set[str] = set()
        self._failure = ""
        self._started = False

    # ------------------------------------------------------------------ public

    def start(self, emit: Emit) -> None:
        """Start the reader thread (and the inotify observer); returns at once."""
        if self._thread is not None:
            raise RuntimeError(f"file source {self.name!r} is already started")
        self._emit = emit
        if self.config.inotify:
            self._observer = self._make_observer()
        self._thread = threading.Thread(
            target=self._run, name=f"aisentinel-source-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the threads, save positions, close the files."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        observer = self._observer
        if observer is not None:
            observer.stop()
        thread.join(timeout=5.0)
        if observer is not None:
            observer.join(timeout=2.0)
        if thread.is_alive():
            # It saves when it ends; a position taken here could pass lines not handed on.
            _log.warning("file source reader did not stop in time", source=self.name)
        else:
            self._await_acks()
            self._save_settled()
        self._thread = None

    def request_stop(self) -> None:
        """Make the reader stop at the next batch boundary (see :meth:`Source.request_stop`)."""
        self._stopping.set()
        self._wake.set()

    def ready(self) -> bool:
        """True once every path has been looked at (opened or being waited for)."""
        return self._ready.is_set()

    def wake(self, *, structural: bool) -> None:
        """Ask the reader thread to look at the files now (called by the event handler)."""
        if structural:
            self._structural = True
        self._wake.set()

    def _configured(self, path: str) -> bool:
        return any(
            path == pattern or (_has_magic(pattern) and fnmatch.fnmatchcase(path, pattern))
            for pattern in self.config.paths
        )

    def concerns(self, path: str) -> bool:
        """True if a filesystem event on ``path`` may matter to this source."""
        if path in self._interest:
            return True
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.config.paths)

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        try:
            self._first_scan()
        except Exception as exc:  # noqa: BLE001 - a source never raises out of its thread
            self._fail("first scan failed", exc)
        self._started = True
        self._update_state()
        self._ready.set()
        clock = self.clock
        next_poll = clock.monotonic() + self.config.poll_interval
        while not self._stopping.is_set():
            clock.wait(self._wake, next_poll - clock.monotonic())
            self._wake.clear()
            if self._stopping.is_set():
                break
            full = clock.monotonic() >= next_poll
            if full:
                next_poll = clock.monotonic() + self.config.poll_interval
            structural, self._structural = self._structural, False
            try:
                self._cycle(full=full or structural)
                self._failure = ""
            except Exception as exc:  # noqa: BLE001 - keep the thread alive, retry on next wake
                self._fail("read cycle failed", exc)
                clock.wait(self._stopping, min(1.0, self.config.poll_interval))
            self._update_state()
        self._save(force=True)
        self._close_all()
        self.stats.set_state("stopped", "stopped")

    def _load_positions(self) -> None:
        """Saved positions and watched paths; an unreadable store means reading without."""
        try:
            saved = self._store.load_saved()
        except OSError as exc:
            self._store_error("cannot load read positions", exc)
            return
        self._saved = dict(saved.positions)
        self._watched_before = saved.watched
        self._saved_at = saved.saved_at

    def _first_scan(self) -> None:
        self._load_positions()
        for pattern in self.config.paths:
            if not _has_magic(pattern):
                self._files.setdefault(pattern, _Tracked(pattern, explicit=True))
        for path in self._expand():
            self._files.setdefault(path, _Tracked(path, explicit=False))
        for tracked in list(self._files.values()):
            self._service(tracked, structural=True, first=True)
        # Files whose path is gone since the last run: read the rest of the rotated file.
        for path, pos in list(self._saved.items()):
            if not self._configured(path):  # no longer configured: forget it
                del self._saved[path]
                continue
            seen = self._files.get(path)
            # Only a path that is gone: one that exists was opened, or failed to open.
            missing = (seen is None or seen.handle is None) and self._stat(path) is None
            if missing:
                resume = self._catch_up(path, pos)
                if resume is None:
                    del self._saved[path]  # now waited for: read from 0 when it comes back
                else:
                    self._saved[path] = resume  # stopped meanwhile: go on from there
            elif seen is None:
                del self._saved[path]
        for tracked in self._files.values():
            if tracked.explicit and tracked.handle is None and not Path(tracked.path).exists():
                self._warn_missing(tracked.path)
        for pattern in self.config.paths:
            if _has_magic(pattern) and not any(
                fnmatch.fnmatchcase(path, pattern) for path in self._files
            ):
                self._warn_missing(pattern)
        self._refresh_watches()
        self._update_lag()
        self._save(force=True)  # record what is waited for at once (see _watched)

    def _cycle(self, *, full: bool) -> None:
        changed = False
        for tracked in list(self._files.values()):
            if self._stopping.is_set():
                return
            changed |= self._service(tracked, structural=full, first=False)
            if tracked.handle is None and tracked.alias is None and not tracked.explicit:
                del self._files[tracked.path]
        self._service_draining()
        if full or changed:
            for path in self._expand():
                if path not in self._files:
                    tracked = _Tracked(path, explicit=False)
                    self._files[path] = tracked
                    self._service(tracked, structural=True, first=False)
                    if tracked.handle is None and tracked.alias is None:
                        del self._files[path]
            if self._refresh_watches():
                self._wake.set()  # a directory just got watched: look again for missed files
        self._update_lag()
        self._save(force=False)

    # ------------------------------------------------------------------ one path

    def _service(self, tracked: _Tracked, *, structural: bool, first: bool) -> bool:
        """Read what is new on one path and handle rotation; True if its file changed."""
        handle = tracked.handle
        if handle is not None:
            if self._truncated(handle, os.fstat(handle.fd)):
                self.stats.rotations += 1
                _log.info("log file truncated, reading from start", path=tracked.path)
                if not self._read_copy(tracked, handle):
                    return True  # stopped while reading the copy: resumed there at the next start
                handle.restart()
            self._drain(handle)
        elif not structural:
            return False
        st = self._stat(tracked.path)
        if handle is not None:
            if st is None:
                if not tracked.explicit:
                    self._retire(handle)
                    tracked.handle = None
                    return True
                return False  # deleted or renamed: keep reading it until a new file appears
            if (st.st_dev, st.st_ino) == (handle.dev, handle.ino):
                tracked.size, tracked.mtime = st.st_size, st.st_mtime
                return False
            _log.info("log file rotated", source=self.name, path=tracked.path)
            self.stats.rotations += 1
            self._retire(handle)
            tracked.handle = None
        if st is None:
            tracked.alias = None
            return handle is not None
        if not stat.S_ISREG(st.st_mode):
            self._note(tracked.path, "log path is not a regular file", "not a regular file")
            return handle is not None
        ident = (st.st_dev, st.st_ino)
        if ident == tracked.alias and self._followed(ident):
            return False  # still the file another of its names follows
        self._open(tracked, st, first=first)
        return True

    def _followed(self, ident: tuple[int, int]) -> bool:
        """Whether the file with (device, inode) ``ident`` is read under one of the
        source's names."""
        return any(
            t.handle is not None and (t.handle.dev, t.handle.ino) == ident
            for t in self._files.values()
        )

    def _open(self, tracked: _Tracked, st: os.stat_result, *, first: bool) -> None:
        path = tracked.path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if first:
                self._defer_start(path, st)
            self._path_error(path, "cannot open log file", exc)
            return
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if self._followed(ident):
                os.close(fd)  # the same file under another name is already followed
                tracked.alias = ident
                return
            for old in self._draining:
                if (old.dev, old.ino) == ident:  # a rotated file matched again: keep its offset
                    os.close(fd)
                    self._draining.remove(old)
                    old.path = path
                    tracked.handle = old
                    tracked.alias = None
                    return
            offset = self._initial_offset(path, fd, st, first=first)
            if offset is None:  # stopped while reading what was rotated before it
                os.close(fd)
                return
            handle = _Handle(path, fd, st, offset)
        except OSError as exc:
            os.close(fd)
            self._path_error(path, "cannot read log file", exc)
            return
        self._error_over(path)
        tracked.handle = handle
        tracked.alias = None
        tracked.size, tracked.mtime = st.st_size, st.st_mtime
        _log.debug("following log file", source=self.name, path=path, offset=offset)
        self._drain(handle)

    def _initial_offset(self, path: str, fd: int, st: os.stat_result, *, first: bool) -> int | None:
        """Where to start reading a newly opened file; None to leave it for the next start."""
        saved = self._saved.pop(path, None)
        if saved is not None:
            same = (saved.dev, saved.ino) == (st.st_dev, st.st_ino)
            if same and saved.offset <= st.st_size and saved.head_matches(fd):
                return saved.offset
            # Another file now, or the same inode number with other content: rewritten in
            # place, or rotated away and the number reused by the new file.
            self.stats.rotations += 1
            resume = self._catch_up(path, saved, reused=same)
            if resume is not None:
                self._saved[path] = resume
                return None
            return 0
        if first and self.config.start_at == "end" and not self._new_since_last_run(path):
            return _end_of_last_line(fd, st.st_size)
        unopened = self._unopened.pop(path, None)
        if unopened is not None:
            dev, ino, size = unopened
            if (dev, ino) == (st.st_dev, st.st_ino) and size <= st.st_size:
                return _end_of_last_line(fd, size)  # its end at start, as if it had opened
        return 0

    def _defer_start(self, path: str, st: os.stat_result) -> None:
        """A file there at start that cannot be opened (no permission yet): with
        ``start_at = "end"``, remember its size, so that once it opens it is read from
        the end it had at start, as if it had opened then, not from 0 (its history)."""
        if (
            self.config.start_at == "end"
            and path not in self._saved
            and not self._new_since_last_run(path)
        ):
            self._unopened[path] = (st.st_dev, st.st_ino, st.st_size)

    def _new_since_last_run(self, path: str) -> bool:
        """True if the last run was waiting for ``path``: it appeared while we were down."""
        watched = self._watched_before
        return path in watched or any(
            _has_magic(p) and fnmatch.fnmatchcase(path, p) for p in watched
        )

    def _watched(self) -> frozenset[str]:
        """Literal paths not open now, and the glob patterns (their new matches are new)."""
        out = {p for p in self.config.paths if _has_magic(p)}
        for path, tracked in self._files.items():
            if (
                tracked.explicit
                and tracked.handle is None
                and path not in self._saved
                and path not in self._unopened  # there at start: not new when it opens
            ):
                out.add(path)
        return frozenset(out)

    # ------------------------------------------------------------------ rotated while stopped

    def _catch_up(
        self, path: str, saved: FilePosition, *, reused: bool = False
    ) -> FilePosition | None:
        """Read what was written to ``path`` before its current file, since ``saved``.

        Returns None when done (gaps are logged and counted), or the position to resume
        from at the next start when ``stop()`` came first. ``reused``: the current file
        has the saved inode but other content (if no rotated file holds the position and
        none is newer than the save, it was rewritten in place: no gap).
        """
        generations = _generations(path)
        found = _holder(generations, saved)
        if found is None:
            fd = _find_by_inode(path, saved)  # renamed to an unusual name
            if fd is not None:
                return self._read_generation(path, path, saved.offset, fd=fd)
            newer = [g for g in generations if _mtime(g) > self._saved_at]
            if reused and not newer:  # nothing rotated since the save: rewritten in place
                _log.info("log file rewritten while stopped, reading from start", path=path)
            else:
                self._gap(
                    "log file rotated while stopped and the file holding the read position "
                    "is gone; the rest of it was not read",
                    path,
                    unread=f"after byte {saved.offset} of the file with inode {saved.ino}",
                )
            start, todo = 0, newer
        else:
            start, todo = saved.offset, generations[found:]
        return self._read_generations(path, todo, start)

    def _read_generations(
        self, path: str, todo: list[str], offset: int, *, why: str = ""
    ) -> FilePosition | None:
        """Read rotated generations, oldest first: the first from ``offset``, the others
        whole; as :meth:`_read_generation`, the resume position if stopped."""
        for generation in todo:
            resume = self._read_generation(path, generation, offset, why=why)
            if resume is not None:
                return resume
            offset = 0
        return None

    def _read_generation(
        self,
        path: str,
        generation: str,
        offset: int,
        *,
        fd: int | None = None,
        why: str = "",
    ) -> FilePosition | None:
        """Read one rotated generation from ``offset`` to its end (its last line included).

        None when done or unreadable (a gap, logged); the resume position if stopped.
        """
        _log.info(
            why or "reading a file rotated while stopped",
            source=self.name,
            path=path,
            file=generation,
            offset=offset,
        )
        handle = None
        try:
            if generation.endswith(".gz"):
                return self._read_compressed(generation, offset)
            if fd is None:
                fd = os.open(generation, os.O_RDONLY | os.O_CLOEXEC)
            handle = _Handle(generation, fd, os.fstat(fd), offset)
            while not self._drain(handle):
                if self._stopping.is_set():
                    return handle.position()
            self._flush(handle)
        except (OSError, EOFError, zlib.error) as exc:
            self._gap(
                "cannot read a rotated log file; its unread part is skipped",
                generation,
                unread=_unread(generation, offset),
                reason=str(exc),
            )
        finally:
            if handle is not None:
                handle.close()
            elif fd is not None:
                os.close(fd)
        return None

    def _read_compressed(self, generation: str, offset: int) -> FilePosition | None:
        """:meth:`_read_generation` for a gzip file: offsets count decompressed bytes."""
        with gzip.open(generation, "rb") as stream:
            head = stream.read(HEAD_BYTES)
            if stream.seek(offset) < offset:
                raise EOFError(f"decompressed, it is shorter than the saved offset {offset}")
            state = _Lines(offset)
            while chunk := stream.read(READ_CHUNK):
                self._consume(state, chunk, self.clock.monotonic())
                if self._stopping.is_set():
                    st = Path(generation).stat()
                    return FilePosition(
                        st.st_dev, st.st_ino, state.committed, len(head), head_sha256(head)
                    )
            self._flush(state)
        return None

    def _flush(self, state: _Lines) -> None:
        """Hand on the last line of a finished file even though it has no line end."""
        read_at = self.clock.monotonic()
        if state.partial:
            line, state.partial = state.partial.decode("utf-8", "replace"), b""
            if self._auto and state.fmt is None:
                rest = self._sniff(state, [line], state.committed, read_at)
                if state.fmt is not None:
                    self._deliver(rest, read_at, state.fmt, state.origin)
            else:
                self._deliver([line], read_at, state.fmt or self.parser, state.origin)
        if state.held:  # the file ended before its format could be told
            self._unparsed(state.held, read_at)
            state.held, state.held_from = [], None

    def _read_copy(self, tracked: _Tracked, handle: _Handle) -> bool:
        """The rest of a file truncated while it is followed, read from its copy.

        copytruncate copies the file to a rotated generation (``name.1``,
        ``name-DATE``), then truncates it: lines written after the last read are only
        in the copy, found by the hash of its first bytes (see :func:`_holds`) and read
        from the read offset, then the copies made after it whole (truncated again
        before this look: named as newer, and not older by mtime, so that dates that
        sort out of order are never read twice). A copy shorter than the read offset
        was read past before the truncation. Without a copy they may be lost: a
        gap. False when ``stop()`` came while reading the copies: the handle is closed
        and the position in the copy kept, to go on from at the next start.
        """
        path = tracked.path
        position = handle.position()
        generations = _generations(path)
        found = _holder(generations, position)
        if found is not None:
            copied = _mtime(generations[found])
            newer = [g for g in generations[found + 1 :] if _mtime(g) >= copied]
            resume = self._read_generations(
                path,
                [generations[found], *newer],
                position.offset,
                why="log file truncated; reading the rest of it from its copy",
            )
            if resume is None:
                return True
            self._saved[path] = resume
            handle.close()
            tracked.handle = None
            return False
        if any(_begins_like(g, handle.head) for g in generations):
            # A copy shorter than the read offset: read past it already (lines written
            # between logrotate's copy and its truncation); nothing left in it.
            return True
        self._gap(
            "log file truncated and no copy of it found among its rotated files; lines "
            "written after the last read and before the truncation, if any, were not read",
            path,
            unread=f"after byte {position.offset} of the file with inode {handle.ino}",
        )
        return True

    def _gap(self, what: str, path: str, *, unread: str, reason: str = "") -> None:
        self.stats.gaps += 1
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {path}"
        _log.error(what, source=self.name, path=path, unread=unread, reason=reason)

    def _truncated(self, handle: _Handle, st: os.stat_result) -> bool:
        if st.st_size < handle.offset:
            return True
        if not handle.head:
            handle.head = read_head(handle.fd)
            return False
        head = read_head(handle.fd)
        if head[: len(handle.head)] != handle.head:
            return True
        if len(head) > len(handle.head):
            handle.head = head
        return False

    def _retire(self, handle: _Handle) -> None:
        """Keep reading a rotated-away file for a while (its writer may not have reopened)."""
        handle.idle_since = self.clock.monotonic()
        self._draining.append(handle)

    def _service_draining(self) -> None:
        now = self.clock.monotonic()
        for handle in list(self._draining):
            before = handle.offset
            try:
                self._drain(handle)
            except OSError as exc:
                self._path_error(handle.path, "cannot read rotated file", exc)
            if handle.offset != before:
                handle.idle_since = now
            elif now - handle.idle_since >= ROTATE_GRACE or self._stopping.is_set():
                self._draining.remove(handle)
                self._flush(handle)  # its last line, if it has no line end: done with it
                handle.close()

    # ------------------------------------------------------------------ reading

    def _drain(self, handle: _Handle) -> bool:
        """Read up to ``CHUNKS_PER_TURN`` chunks; True once at end of file."""
        for _ in range(CHUNKS_PER_TURN):
            chunk = os.pread(handle.fd, READ_CHUNK, handle.offset)
            if not chunk:
                return True
            if not self._consume(handle, chunk, self.clock.monotonic()):
                return False
            if len(chunk) < READ_CHUNK:
                return True
            if self._stopping.is_set():
                return False
        self._wake.set()  # more to read: come straight back after the other files
        return False

    def _consume(self, state: _Lines, chunk: bytes, read_at: float) -> bool:
        """Split ``chunk`` and hand its lines on; False if ``stop()`` cut that short.

        When it is cut short, ``state`` is moved back to just past the last line handed
        on, so the saved position covers exactly what was delivered.
        """
        before = (state.partial, state.discarding, state.skip_lf)
        start = state.offset
        committed = state.committed
        state.offset += len(chunk)
        self.stats.bytes_read += len(chunk)
        lines = self._split(state, chunk)
        if not lines:
            return True
        if state.fmt is not None or not self._auto:
            sent = self._deliver(lines, read_at, state.fmt or self.parser, state.origin)
        else:
            rest = self._sniff(state, lines, committed, read_at)
            if state.fmt is None:
                return True  # held until the format is known
            # rest = the held lines not counted as unparsed, then the rest of this chunk
            sent = self._deliver(rest, read_at, state.fmt, state.origin)
            sent -= len(rest) - len(lines)
        if sent == len(lines):
            return True
        _rewind(state, start, chunk, before, sent)
        return False

    def _sniff(self, state: _Lines, lines: list[str], committed: int, read_at: float) -> list[str]:
        """Tell the format of a stream (``parser = "auto"``) from its held lines and ``lines``.

        Once told, ``state.fmt`` is set and the lines to hand on are returned (the held
        ones first); until then ``lines`` join the held ones (the saved position stays at
        ``committed``, before them). A full window of lines none of which is recognised
        is handed on as unparsed and sniffing goes on with the next lines.
        """
        pending = state.held + lines if state.held else lines
        size = self._sniff_lines
        start = 0
        while True:
            window = pending[start : start + size]
            try:
                fmt = sniff(window)
            except ValueError:
                if not window:  # the held lines were handed on as unparsed
                    state.held, state.held_from = [], None
                    return []
                if len(window) < size and _held_bytes(window) <= SNIFF_HOLD_BYTES:
                    if not state.held:
                        state.held_from = committed
                    state.held = window
                    return []
                self._unparsed(window, read_at)
                start += len(window)
                continue
            state.fmt = fmt
            state.held, state.held_from = [], None
            _log.info(
                "log format detected",
                source=self.name,
                path=getattr(state, "path", ""),
                parser=fmt,
                lines=len(window),
            )
            if self._cap is None and line_cap(fmt) < line_cap(None):
                return self._recut(state, pending[start:], line_cap(fmt))
            return pending[start:]

    def _recut(self, state: _Lines, lines: list[str], cap: int) -> list[str]:
        """``lines``, read before their format was told (cut at the largest cap of any
        format), each longer than the told format's ``cap`` cut there, as if read with it."""
        out = lines.copy()
        for i, line in enumerate(lines):
            if len(line) * 4 > cap and len(raw := line.encode("utf-8")) > cap:
                if type(line) is CutLine:  # cut already: counted and logged
                    out[i] = CutLine(raw[:cap].decode("utf-8", "replace"))
                else:
                    out[i] = self._cut(state, raw, cap)
        return out

    def _unparsed(self, lines: list[str], read_at: float) -> None:
        """Hand on lines of no recognisable format: counted as read, unparsed and not
        recognised (a source whose lines are nearly all so is blind)."""
        emit = self._emit
        assert emit is not None  # noqa: S101 - set by start() before the thread runs
        emit(EventBatch(self.name, [], read_at, len(lines), self._number(), len(lines)))
        self.stats.lines_read += len(lines)

    def _split(self, state: _Lines, chunk: bytes) -> list[str]:
        """Complete lines in ``state.partial + chunk``; keeps the incomplete tail."""
        cap = self._cap or line_cap(state.fmt)
        if state.skip_lf:
            state.skip_lf = False
            if chunk[:1] == b"\n":  # the second half of a \r\n split between two reads
                chunk = chunk[1:]
        if b"\r" in chunk:  # rare: make \r\n and a lone \r plain \n line ends
            state.skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if state.discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            chunk = chunk[newline + 1 :]
            state.discarding = False
        if state.partial:
            chunk = state.partial + chunk
            state.partial = b""
        end = chunk.rfind(b"\n") + 1
        lines: list[str]
        if end:
            block = chunk if end == len(chunk) else chunk[:end]
            lines = block.decode("utf-8", "replace").split("\n")
            lines.pop()
            # A line of n characters has at most 4n bytes: only look closer if one might be long.
            if end > cap and max(map(len, lines)) * 4 > cap:
                lines = self._split_capped(state, block, cap)
        else:
            lines = []
        rest = chunk[end:]
        if len(rest) > cap:
            lines.append(self._cut(state, rest, cap))
            state.discarding = True
            rest = b""
        state.partial = rest
        return lines

    def _split_capped(self, state: _Lines, block: bytes, cap: int) -> list[str]:
        """Slow path of :meth:`_split` for blocks holding a line that may exceed the cap."""
        return [
            self._cut(state, raw, cap) if len(raw) > cap else raw.decode("utf-8", "replace")
            for raw in block.split(b"\n")[:-1]
        ]

    def _cut(self, state: _Lines, raw: bytes, cap: int) -> CutLine:
        """``raw`` (longer than ``cap``) cut at the cap: counted, and logged once per file."""
        self.stats.lines_truncated += 1
        path = getattr(state, "path", "")
        if path not in self._cut_logged:
            self._cut_logged.add(path)
            _log.warning(
                "log line longer than max_line_bytes cut; its fields before the cut are "
                "still read (counted in aisentinel_source_lines_truncated_total)",
                source=self.name,
                path=path,
                max_line_bytes=cap,
            )
        return CutLine(raw[:cap].decode("utf-8", "replace"))

    def _deliver(self, lines: list[str], read_at: float, parser: str, origin: int) -> int:
        """Hand ``lines`` (of the stream numbered ``origin``, see :attr:`_Lines.origin`) on
        in batches for ``parser``; stops between two batches on ``stop()``.

        Returns how many lines were handed on (all of them unless stopping).
        """
        emit = self._emit
        assert emit is not None  # noqa: S101 - set by start() before the thread runs
        size = self.config.batch_lines
        name = self.name
        if len(lines) <= size:
            emit(LineBatch(name, parser, lines, read_at, self._number(), origin))
            self.stats.lines_read += len(lines)
            return len(lines)
        sent = 0
        stopping = self._stopping
        for i in range(0, len(lines), size):
            if i and stopping.is_set():
                break
            batch = lines[i : i + size]
            emit(LineBatch(name, parser, batch, read_at, self._number(), origin))
            sent += len(batch)
        self.stats.lines_read += sent
        return sent

    # ------------------------------------------------------------------ paths and watches

    def _expand(self) -> list[str]:
        """Current matches of the glob patterns (literal paths are tracked from the start)."""
        found: list[str] = []
        for pattern in self.config.paths:
            if _has_magic(pattern):
                found.extend(sorted(glob.glob(pattern)))  # noqa: PTH207 - absolute patterns
        return found

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            return Path(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._path_error(path, "cannot stat log file", exc)
            return None

    def _watch_dirs(self) -> tuple[set[str], set[str]]:
        """Directories to watch and file paths whose events matter."""
        dirs: set[str] = set()
        interest: set[str] = set()
        for pattern in self.config.paths:
            base = _parent(pattern)
            while _has_magic(base):
                base = _parent(base)
            dirs.add(_nearest_existing(base))
        for path in self._files:
            interest.add(path)
            dirs.add(_nearest_existing(_parent(path)))
            real = os.path.realpath(path)
            if real != path:
                interest.add(real)
                dirs.add(_nearest_existing(_parent(real)))
        return dirs, interest

    def _refresh_watches(self) -> bool:
        """Bring the inotify watches in line with the paths; True if one was added."""
        dirs, interest = self._watch_dirs()
        self._interest = frozenset(interest)
        observer = self._observer
        if observer is None:
            return False
        for path, (watch, known) in list(self._watches.items()):
            if path not in dirs or _dir_ident(path) != known:
                del self._watches[path]
                # KeyError etc.: its emitter already stopped (directory deleted)
                with contextlib.suppress(KeyError, OSError, RuntimeError):
                    observer.unschedule(watch)
        added = False
        for path in sorted(dirs - set(self._watches)):
            ident = _dir_ident(path)
            if ident is None:
                continue
            try:
                watch = observer.schedule(
                    _Wakeup(self), path, recursive=False, event_filter=_EVENTS
                )
            except OSError as exc:
                _log.warning(
                    "inotify unavailable, falling back to polling",
                    source=self.name,
                    directory=path,
                    reason=str(exc),
                    poll_interval=self.config.poll_interval,
                )
                self._stop_observer()
                return False
            self._watches[path] = (watch, ident)
            added = True
        return added

    def _make_observer(self) -> BaseObserver | None:
        try:
            from watchdog.observers import Observer  # noqa: PLC0415 - picks the platform's

            observer = Observer()
            observer.daemon = True
            observer.start()
        except (OSError, RuntimeError) as exc:
            _log.warning(
                "inotify unavailable, falling back to polling", source=self.name, reason=str(exc)
            )
            return None
        return observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            observer.stop()

    # ------------------------------------------------------------------ bookkeeping

    def _update_lag(self) -> None:
        lag_bytes = 0
        lag_seconds = 0.0
        now = self.clock.now()
        for tracked in self._files.values():
            handle = tracked.handle
            if handle is None:
                continue
            behind = tracked.size - handle.committed
            if behind > 0:
                lag_bytes += behind
                lag_seconds = max(lag_seconds, now - tracked.mtime)
        self.stats.lag_bytes = lag_bytes
        self.stats.lag_seconds = lag_seconds

    def _positions(self) -> dict[str, FilePosition]:
        out = dict(self._saved)  # not yet seen again (a literal path still missing)
        for path, tracked in self._files.items():
            if tracked.handle is not None:
                out[path] = tracked.handle.position()
        return out

    def _save(self, *, force: bool) -> None:
        """Take the positions (reader thread, between two batches; at most every
        ``SAVE_INTERVAL`` unless ``force``) and save the newest that is processed."""
        now = self.clock.monotonic()
        if force or now >= self._next_save:
            self._next_save = now + SAVE_INTERVAL
            self._checkpoints.add((self._positions(), self._watched()), self._emitted)
        self._save_settled()

    def _save_settled(self) -> None:
        """Save the newest positions taken whose batches are all processed, if new."""
        snapshot = self._checkpoints.settled(self._acked)
        if snapshot is None or snapshot == self._last_saved:
            return
        try:
            self._store.save(*snapshot)
        except OSError as exc:
            self._store_error("cannot save read positions", exc)
            return
        self._last_saved = snapshot
        if self._store_fault:
            self._store_fault = ""
            _log.info("read positions saved again", source=self.name, path=str(self._store.path))

    def _store_error(self, what: str, exc: OSError) -> None:
        """A positions file fault: counted, logged once per distinct fault, never fatal."""
        self.stats.position_errors += 1
        reason = exc.strerror or str(exc)
        self._store_fault = f"{what} from {self._store.path}: {reason}"
        if self._store_fault in self._store_faults_logged:
            return
        self._store_faults_logged.add(self._store_fault)
        _log.error(
            f"{what}; the logs are still followed, but a restart cannot resume where "
            "reading stopped (lines may be skipped or read twice)",
            source=self.name,
            path=str(self._store.path),
            reason=reason,
            action=fix_hint(self._store.path, exc, directory=self._store.path.parent),
        )

    def _path_error(self, path: str, what: str, exc: OSError) -> None:
        self._note(path, what, str(exc))

    def _note(self, path: str, what: str, reason: str) -> None:
        """A problem with one path: counted each time, logged when it changes."""
        self.stats.errors += 1
        self.stats.last_error = f"{what} {path}: {reason}"
        if self._errors_seen.get(path) != reason:
            self._errors_seen[path] = reason
            _log.warning(what, source=self.name, path=path, reason=reason)

    def _error_over(self, path: str) -> None:
        """``path`` opened: its problem (:meth:`_note`) is over, and no longer the last
        error when it still is (status shows an up source's last error)."""
        reason = self._errors_seen.pop(path, None)
        if reason is not None and self.stats.last_error.endswith(f" {path}: {reason}"):
            self.stats.last_error = ""

    def _warn_missing(self, path: str) -> None:
        """The one warning for a path (or a pattern without match) missing at start."""
        fields = {"source": self.name, "path": path}
        hint = self._missing_hint()
        if hint:
            fields["hint"] = hint
        if _has_magic(path):
            _log.warning("no log file matches the pattern yet; waiting for one", **fields)
        else:
            _log.warning("log file missing; waiting for it to appear", **fields)

    def _missing_hint(self) -> str:
        """What to do when an sshd log file is missing (often: sshd logs to the journal)."""
        if self.parser != "sshd":
            return ""
        problem = journald_problem()
        if problem is None:
            return 'if sshd logs to the journal only, read it with a type = "journald" source'
        fix = (
            "install python3-systemd (or pip install 'aisentinel[systemd]') so sshd is read "
            "from journald, or install rsyslog, or set this source's paths to sshd's log file"
            if not journald_available()
            else "install rsyslog (it writes this file), or set this source's paths to sshd's "
            "log file"
        )
        why = f"sshd is read from this file because the journal cannot be read here ({problem})"
        return f"{why}: {fix}"

    def _fail(self, what: str, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {exc}"
        self._failure = f"{what}: {exc}"
        self.stats.set_state("error", self._failure)
        _log.exception(what, source=self.name)

    def _open_paths(self) -> set[str]:
        """The tracked paths whose file is read: under that name, or under another
        name of the same file (``_Tracked.alias``) that the source follows."""
        files = self._files.values()
        if not any(t.alias is not None for t in files):
            return {t.path for t in files if t.handle is not None}
        followed = {(t.handle.dev, t.handle.ino) for t in files if t.handle is not None}
        return {t.path for t in files if t.handle is not None or t.alias in followed}

    def _update_state(self) -> None:
        """Work out ``stats.state``, ``reason`` and ``detail``; log a change of state."""
        detail: dict[str, str] = {}
        waiting: list[str] = []
        errors: list[str] = []
        open_paths = self._open_paths()
        for pattern in self.config.paths:
            if _has_magic(pattern):
                # Literal paths count too: a glob that matches one is satisfied by it.
                matches = [p for p in open_paths if fnmatch.fnmatchcase(p, pattern)]
                failed = [p for p in self._errors_seen if fnmatch.fnmatchcase(p, pattern)]
                if matches:
                    detail[pattern] = f"open ({len(matches)} files)"
                elif failed:
                    detail[pattern] = f"error: {failed[0]}: {self._errors_seen[failed[0]]}"
                    errors.append(f"{pattern}: {detail[pattern]}")
                else:
                    detail[pattern] = "waiting: no file matches"
                    waiting.append(pattern)
                continue
            if pattern in open_paths:
                detail[pattern] = "open"
            elif pattern in self._errors_seen:
                detail[pattern] = f"error: {self._errors_seen[pattern]}"
                errors.append(f"{pattern}: {self._errors_seen[pattern]}")
            else:
                detail[pattern] = "waiting"
                waiting.append(pattern)
        state: SourceState
        problems = list(errors)
        if waiting:
            problems.append("waiting for " + ", ".join(waiting))
        if self._failure:
            problems.insert(0, self._failure)
        if self._store_fault:
            problems.append(self._store_fault)
        if self._failure or errors:
            state = "error"
        elif waiting:
            state = "waiting"
        elif self._store_fault:
            state = "degraded"
        else:
            state = "following"
        reason = "; ".join(problems) if problems else f"following {len(self.config.paths)} path(s)"
        self.stats.detail = detail
        before = self.stats.state
        self.stats.set_state(state, reason)
        if before in (state, "stopped"):
            return
        if state == "following":
            _log.info("log source state changed", source=self.name, state=state, reason=reason)
        else:
            _log.warning("log source state changed", source=self.name, state=state, reason=reason)

    def _close_all(self) -> None:
        for tracked in self._files.values():
            if tracked.handle is not None:
                tracked.handle.close()
                tracked.handle = None
        for handle in self._draining:
            handle.close()
        self._draining.clear()


def _nearest_existing(directory: str) -> str:
    """``directory`` or its closest ancestor that exists."""
    while not Path(directory).is_dir():
        parent = _parent(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def _dir_ident(path: str) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _parent(path: str) -> str:
    return str(Path(path).parent)


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just past the last newline (within the last 64 KiB), else ``size``."""
    start = max(0, size - 65536)
    tail = os.pread(fd, size - start, start)
    newline = tail.rfind(b"\n")
    return size if newline < 0 else start + newline + 1


def _rewind(
    state: _Lines, start: int, chunk: bytes, before: tuple[bytes, bool, bool], sent: int
) -> None:
    """Move ``state`` back to just past the ``sent``-th line of ``chunk`` (read at ``start``).

    ``before`` is the state's (partial, discarding, skip_lf) before the chunk was split.
    Only on ``stop()``: the line ends are found again in the raw bytes.
    """
    partial, discarding, skip_lf = before
    raw = partial + chunk
    pos = 1 if skip_lf and raw[:1] == b"\n" else 0
    ends = _LINE_END.finditer(raw, pos)
    if discarding:
        next(ends)  # the end of the over-long line being discarded: not a line
    for _ in range(sent - 1):
        next(ends)
    state.offset = start - len(partial) + next(ends).end()
    state.partial = b""
    state.discarding = False
    state.skip_lf = False


def _generations(path: str) -> list[str]:
    """The rotated generations of ``path`` that exist, oldest first.

    logrotate's ``name.N`` and ``name.N.gz`` (higher N is older) and dateext's
    ``name-DATE[.gz]`` (ordered by name); a plain file is preferred to a ``.gz`` of the
    same generation (compression under way).
    """
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory)  # noqa: PTH208 - names only, no Path per entry
    except OSError:
        return []
    numbered: dict[int, str] = {}
    dated: dict[str, str] = {}
    for name in names:
        if not name.startswith(base) or name == base:
            continue
        full = os.path.join(directory, name)  # noqa: PTH118 - plain strings throughout
        rest = name[len(base) :]
        if match := _NUMBERED.fullmatch(rest):
            number = int(match[1])
            if number not in numbered or not match[2]:
                numbered[number] = full
        elif (match := _DATED.fullmatch(rest)) and (match[1] not in dated or not match[2]):
            dated[match[1]] = full
    ordered = [dated[k] for k in sorted(dated)]
    ordered += [numbered[n] for n in sorted(numbered, reverse=True)]
    return [p for p in ordered if Path(p).is_file()]


def _holder(generations: list[str], saved: FilePosition) -> int | None:
    """Index of the newest of ``generations`` (oldest first) that holds ``saved``."""
    for index in range(len(generations) - 1, -1, -1):
        if _holds(generations[index], saved):
            return index
    return None


def _holds(generation: str, saved: FilePosition) -> bool:
    """True if ``generation`` is the file of the saved position, or a copy of it.

    A plain file: the same inode (renamed), or another inode (copied: copytruncate)
    with the same first bytes, at least as long as the saved offset. A gzip file: the
    same first bytes once decompressed.
    """
    try:
        if generation.endswith(".gz"):
            with gzip.open(generation, "rb") as stream:
                head = stream.read(saved.head_len)
            return len(head) == saved.head_len and head_sha256(head) == saved.head_sha256
        st = Path(generation).stat()
        if (st.st_dev, st.st_ino) != (saved.dev, saved.ino) and not saved.head_len:
            return False  # no first bytes to tell a copy by
        fd = os.open(generation, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return saved.offset <= os.fstat(fd).st_size and saved.head_matches(fd)
        finally:
            os.close(fd)
    except (OSError, EOFError, zlib.error):
        return False


def _begins_like(generation: str, head: bytes) -> bool:
    """True if the plain file ``generation`` is not empty and starts like ``head`` for
    as much of it as it holds (a copy of a file that started with ``head``)."""
    if generation.endswith(".gz"):
        return False
    try:
        with Path(generation).open("rb") as stream:
            start = stream.read(len(head))
    except OSError:
        return False
    return bool(start) and head.startswith(start)


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _unread(path: str, offset: int) -> str:
    """How much of a rotated file was not read, in words."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return f"everything after byte {offset}"
    if path.endswith(".gz"):
        return f"everything after byte {offset} of {size} compressed bytes"
    return f"{max(0, size - offset)} bytes after byte {offset}"


def _find_by_inode(path: str, saved: FilePosition) -> int | None:
    """Open the file that has the saved identity: ``path.1``, ``path-*``, then any sibling."""
    directory = _parent(path)
    escaped = glob.escape(path)
    candidates = [
        path + ".1",
        *sorted(glob.glob(escaped + "-*")),  # noqa: PTH207 - absolute patterns
        *sorted(glob.glob(escaped + ".*")),  # noqa: PTH207
    ]
    try:
        with os.scandir(directory) as entries:
            candidates.extend(entry.path for entry in entries if entry.inode() == saved.ino)
    except OSError:
        pass
    for candidate in dict.fromkeys(candidates):
        try:
            st = Path(candidate).stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (saved.dev, saved.ino) or not stat.S_ISREG(st.st_mode):
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        fst = os.fstat(fd)
        if (
            (fst.st_dev, fst.st_ino) == (saved.dev, saved.ino)
            and saved.offset <= fst.st_size
            and saved.head_matches(fd)
        ):
            return fd
        os.close(fd)
    return None


REGISTRY.register("file", FileSourceConfig, FileSource)

__all__ = ["HEAD_BYTES", "MAX_LINE_BYTES", "FileSource", "FileSourceConfig"]


def _held_bytes(lines: list[str]) -> int:
    """The memory ``lines`` take (their ``str`` objects)."""
    return sum(map(sys.getsizeof, lines))
