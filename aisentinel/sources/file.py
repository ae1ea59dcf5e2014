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
  (copytruncate) and is read again from 0;
* a missing file or directory is waited for: the nearest existing ancestor directory is
  watched, and a file that appears later is read from its beginning.

Lines: split on ``\\n``, a trailing ``\\r`` removed, decoded as UTF-8 with
``errors="replace"`` (invalid bytes become U+FFFD). A partial last line is held until its
newline. A line longer than ``max_line_bytes`` is cut at the cap (counted in
``stats.lines_truncated``) and the rest of it, up to its newline, is discarded.

Delivery is at-least-once: the saved position (see :mod:`.positions`) is the offset just
past the last line handed to ``emit``; lines are only duplicated after a crash between an
``emit`` and the next save (saves happen at most every ``SAVE_INTERVAL`` seconds and at
``stop()``). If the process dies while the rest of an over-long line is being
discarded, that rest is read as a line after the restart. An ``emit`` that raises is
logged and counted in ``stats.errors``; the lines of that batch are not retried.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import stat
import threading
import time
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field, field_validator
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
from aisentinel.configtypes import Interval
from aisentinel.events import LineBatch
from aisentinel.sources.base import REGISTRY, Emit, Source, SourceConfigBase
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


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


class FileSourceConfig(SourceConfigBase):
    """``[[sources]]`` with ``type = "file"``."""

    type: Literal["file"]
    paths: list[str] = Field(min_length=1)
    start_at: Literal["end", "beginning"] = "end"
    inotify: bool = True
    poll_interval: Interval = 1.0
    """Safety-net stat (and, without inotify, polling) period; 10ms-1h."""
    max_line_bytes: int = Field(default=65536, ge=64, le=1 << 20)
    """Longer lines are truncated; 64 B - 1 MiB (a batch holds ``batch_lines`` of them)."""
    batch_lines: int = Field(default=2048, ge=1, le=65536)
    """Most lines handed on at once; 1-65536."""

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path or not Path(path).is_absolute():
                raise ValueError(f"log path {path!r} must be absolute")
            if path.endswith("/"):
                raise ValueError(f"log path {path!r} names a directory, not a file")
        return value


class _Handle:
    """One open file being read: identity, read offset and the undelivered tail."""

    __slots__ = (
        "dev",
        "discarding",
        "fd",
        "head",
        "idle_since",
        "ino",
        "offset",
        "partial",
        "path",
    )

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.offset = offset
        self.partial = b""
        self.discarding = False
        self.head = read_head(fd)
        self.idle_since = time.monotonic()

    @property
    def committed(self) -> int:
        """Offset just past the last complete line handed on."""
        return self.offset if self.discarding else self.offset - len(self.partial)

    def position(self) -> FilePosition:
        return FilePosition(
            self.dev, self.ino, self.committed, len(self.head), head_sha256(self.head)
        )

    def restart(self) -> None:
        """Read again from offset 0 (the file was truncated or rewritten)."""
        self.offset = 0
        self.partial = b""
        self.discarding = False
        self.head = read_head(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _Tracked:
    """A path being followed; ``explicit`` paths were configured literally (kept while missing)."""

    __slots__ = ("explicit", "handle", "mtime", "path", "size")

    def __init__(self, path: str, *, explicit: bool) -> None:
        self.path = path
        self.explicit = explicit
        self.handle: _Handle | None = None
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
        self._store = PositionStore(state_dir, config.name)
        self._cap = config.max_line_bytes
        self._files: dict[str, _Tracked] = {}
        self._draining: list[_Handle] = []
        self._saved: dict[str, FilePosition] = {}
        self._last_saved: dict[str, FilePosition] | None = None
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
            _log.warning("file source reader did not stop in time", source=self.name)
            self._save(force=True)
        self._thread = None

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
        self._ready.set()
        self.stats.up = True
        next_poll = time.monotonic() + self.config.poll_interval
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, next_poll - time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                break
            full = time.monotonic() >= next_poll
            if full:
                next_poll = time.monotonic() + self.config.poll_interval
            structural, self._structural = self._structural, False
            try:
                self._cycle(full=full or structural)
                self.stats.up = True
            except Exception as exc:  # noqa: BLE001 - keep the thread alive, retry on next wake
                self._fail("read cycle failed", exc)
                self._stopping.wait(min(1.0, self.config.poll_interval))
        self._save(force=True)
        self._close_all()
        self.stats.up = False

    def _first_scan(self) -> None:
        self._saved = self._store.load()
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
            if missing and self._drain_rotated(path, pos):
                del self._saved[path]
            if seen is None:
                self._saved.pop(path, None)
        self._refresh_watches()
        self._update_lag()

    def _cycle(self, *, full: bool) -> None:
        changed = False
        for tracked in list(self._files.values()):
            if self._stopping.is_set():
                return
            changed |= self._service(tracked, structural=full, first=False)
            if tracked.handle is None and not tracked.explicit:
                del self._files[tracked.path]
        self._service_draining()
        if full or changed:
            for path in self._expand():
                if path not in self._files:
                    tracked = _Tracked(path, explicit=False)
                    self._files[path] = tracked
                    self._service(tracked, structural=True, first=False)
                    if tracked.handle is None:
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
        if st is None or not stat.S_ISREG(st.st_mode):
            return handle is not None
        self._open(tracked, first=first)
        return True

    def _open(self, tracked: _Tracked, *, first: bool) -> None:
        path = tracked.path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._path_error(path, "cannot open log file", exc)
            return
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            for other in self._files.values():
                if other.handle is not None and (other.handle.dev, other.handle.ino) == ident:
                    os.close(fd)  # the same file under another name is already followed
                    return
            for old in self._draining:
                if (old.dev, old.ino) == ident:  # a rotated file matched again: keep its offset
                    os.close(fd)
                    self._draining.remove(old)
                    old.path = path
                    tracked.handle = old
                    return
            offset = self._initial_offset(path, fd, st, first=first)
            handle = _Handle(path, fd, st, offset)
        except OSError as exc:
            os.close(fd)
            self._path_error(path, "cannot read log file", exc)
            return
        self._errors_seen.pop(path, None)
        tracked.handle = handle
        tracked.size, tracked.mtime = st.st_size, st.st_mtime
        _log.debug("following log file", source=self.name, path=path, offset=offset)
        self._drain(handle)

    def _initial_offset(self, path: str, fd: int, st: os.stat_result, *, first: bool) -> int:
        saved = self._saved.pop(path, None)
        if saved is not None:
            if (saved.dev, saved.ino) == (st.st_dev, st.st_ino):
                if saved.offset <= st.st_size and saved.head_matches(fd):
                    return saved.offset
                _log.info("log file rewritten while stopped, reading from start", path=path)
                self.stats.rotations += 1
                return 0
            self.stats.rotations += 1
            self._drain_rotated(path, saved)
            return 0
        if first and self.config.start_at == "end":
            return _end_of_last_line(fd, st.st_size)
        return 0

    def _drain_rotated(self, path: str, saved: FilePosition) -> bool:
        """Find the file ``path`` named when last saved, read its rest; True if found."""
        fd = _find_by_inode(path, saved)
        if fd is None:
            _log.warning(
                "log file rotated while stopped and its old file is gone; its unread tail is lost",
                source=self.name,
                path=path,
            )
            return False
        handle = _Handle(path, fd, os.fstat(fd), saved.offset)
        _log.info(
            "reading the rest of a file rotated while stopped", path=path, offset=saved.offset
        )
        self._draining.append(handle)
        while not self._drain(handle) and not self._stopping.is_set():
            pass
        return True

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
        handle.idle_since = time.monotonic()
        self._draining.append(handle)

    def _service_draining(self) -> None:
        now = time.monotonic()
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
                handle.close()

    # ------------------------------------------------------------------ reading

    def _drain(self, handle: _Handle) -> bool:
        """Read up to ``CHUNKS_PER_TURN`` chunks; True once at end of file."""
        for _ in range(CHUNKS_PER_TURN):
            chunk = os.pread(handle.fd, READ_CHUNK, handle.offset)
            if not chunk:
                return True
            read_at = self.clock.monotonic()
            handle.offset += len(chunk)
            self.stats.bytes_read += len(chunk)
            lines = self._split(handle, chunk)
            if lines:
                self._deliver(lines, read_at)
            if len(chunk) < READ_CHUNK:
                return True
            if self._stopping.is_set():
                return False
        self._wake.set()  # more to read: come straight back after the other files
        return False

    def _split(self, handle: _Handle, chunk: bytes) -> list[str]:
        """Complete lines in ``handle.partial + chunk``; keeps the incomplete tail."""
        cap = self._cap
        if handle.discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            chunk = chunk[newline + 1 :]
            handle.discarding = False
        if handle.partial:
            chunk = handle.partial + chunk
            handle.partial = b""
        end = chunk.rfind(b"\n") + 1
        lines: list[str]
        if end:
            block = chunk if end == len(chunk) else chunk[:end]
            text = block.decode("utf-8", "replace")
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            lines.pop()
            # A line of n characters has at most 4n bytes: only look closer if one might be long.
            if end > cap and max(map(len, lines)) * 4 > cap:
                lines = self._split_capped(block)
        else:
            lines = []
        rest = chunk[end:]
        if len(rest) > cap:
            lines.append(rest[:cap].decode("utf-8", "replace"))
            self.stats.lines_truncated += 1
            handle.discarding = True
            rest = b""
        handle.partial = rest
        return lines

    def _split_capped(self, block: bytes) -> list[str]:
        """Slow path of :meth:`_split` for blocks holding a line that may exceed the cap."""
        cap = self._cap
        out = []
        for raw in block.split(b"\n")[:-1]:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if len(line) > cap:
                line = line[:cap]
                self.stats.lines_truncated += 1
            out.append(line.decode("utf-8", "replace"))
        return out

    def _deliver(self, lines: list[str], read_at: float) -> None:
        emit = self._emit
        assert emit is not None  # noqa: S101 - set by start() before the thread runs
        size = self.config.batch_lines
        name, parser = self.name, self.parser
        if len(lines) <= size:
            emit(LineBatch(name, parser, lines, read_at))
        else:
            for i in range(0, len(lines), size):
                emit(LineBatch(name, parser, lines[i : i + size], read_at))
        self.stats.lines_read += len(lines)

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
        now = time.monotonic()
        if not force and now < self._next_save:
            return
        positions = self._positions()
        if positions == self._last_saved:
            return
        try:
            self._store.save(positions)
        except OSError as exc:
            self._fail("cannot save positions", exc)
            return
        self._last_saved = positions
        self._next_save = now + SAVE_INTERVAL

    def _path_error(self, path: str, what: str, exc: OSError) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{what} {path}: {exc}"
        if self._errors_seen.get(path) != str(exc):
            self._errors_seen[path] = str(exc)
            _log.warning(what, source=self.name, path=path, reason=str(exc))

    def _fail(self, what: str, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.up = False
        self.stats.last_error = f"{what}: {exc}"
        _log.exception(what, source=self.name)

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

__all__ = ["HEAD_BYTES", "FileSource", "FileSourceConfig"]
