"""Read positions of file sources, kept across restarts in ``state_dir/positions.json``.

One JSON file holds the positions of every file source, each under its own name::

    {"version": 1,
     "sources": {"nginx": {"/var/log/nginx/access.log":
         {"dev": 64768, "ino": 1312, "offset": 8812, "head_len": 128, "head_sha256": "..."}}},
     "watched": {"nginx": ["/var/log/nginx/error.log", "/var/log/nginx/*.log"]}}

``watched`` lists, per source, the configured paths that were missing (being waited
for) and the glob patterns, as of the last save: a file that appears under one of them
while the daemon is down is new since then, so the next start reads it from its
beginning rather than from ``start_at = "end"``.

``offset`` is the byte offset just past the last line handed to ``emit``; the head
hash (sha256 of the file's first ``head_len`` <= 128 bytes) tells a file that was
truncated and rewritten, or a new file that reused the inode number, from the one
that was being read. Writes are atomic (temp file, fsync, ``os.replace``, fsync of the
directory), so a crash leaves the old or the new file, never half of one. A file that
cannot be parsed is logged, moved aside to ``positions.json.corrupt`` and treated as
empty: the sources start as if fresh rather than crash. A file that cannot be read at
all (a directory, no permission) raises :class:`OSError` from ``load`` and ``save``: the
caller reports it and goes on reading without saved positions.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from aisentinel.atomicfile import atomic_write, read_state

_log = structlog.get_logger(__name__)

HEAD_BYTES = 128
"""How many leading bytes of a file the head hash covers (at most)."""

POSITIONS_FILE = "positions.json"
_VERSION = 1
_FIELDS = ("dev", "ino", "offset", "head_len")

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock_for(path: Path) -> threading.Lock:
    """One lock per positions file, shared by every source of this process."""
    key = str(path.absolute())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def head_sha256(head: bytes) -> str:
    """Hex sha256 of a file's head bytes."""
    return hashlib.sha256(head).hexdigest()


def read_head(fd: int, length: int = HEAD_BYTES) -> bytes:
    """The first ``length`` bytes of an open file (fewer if it is shorter)."""
    return os.pread(fd, length, 0)


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading of one file stopped: its identity, offset and head hash."""

    dev: int
    ino: int
    offset: int
    head_len: int
    head_sha256: str

    def head_matches(self, fd: int) -> bool:
        """True if the open file starts with the same ``head_len`` bytes as when saved."""
        head = read_head(fd, self.head_len)
        return len(head) == self.head_len and head_sha256(head) == self.head_sha256

    @classmethod
    def from_json(cls, value: Any) -> FilePosition:
        """Parse one entry; ``ValueError`` when a field is missing or has the wrong type."""
        if not isinstance(value, dict):
            raise ValueError("a position is an object")
        ints = []
        for name in _FIELDS:
            item = value.get(name)
            if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            ints.append(item)
        digest = value.get("head_sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError("head_sha256 must be a sha256 hex digest")
        if ints[3] > HEAD_BYTES:
            raise ValueError(f"head_len is at most {HEAD_BYTES}")
        return cls(ints[0], ints[1], ints[2], ints[3], digest)


@dataclass(frozen=True, slots=True)
class Saved:
    """What one source saved: positions by path, and the paths/patterns it waited for."""

    positions: dict[str, FilePosition]
    watched: frozenset[str]
    saved_at: float = 0.0
    """When the positions file was last written (its mtime; 0 when there is none)."""


class PositionStore:
    """Load and save the positions of one named source in a shared positions file."""

    def __init__(self, state_dir: Path, source: str) -> None:
        self.path = state_dir / POSITIONS_FILE
        self.source = source
        self._lock = _lock_for(self.path)

    def load(self) -> dict[str, FilePosition]:
        """This source's saved positions by path; empty when none or the file is corrupt."""
        return self.load_saved().positions

    def load_saved(self) -> Saved:
        """This source's positions and watched paths; ``OSError`` if the file is unreadable."""
        with self._lock:
            data, watched = self._read_all()
            try:
                saved_at = self.path.stat().st_mtime
            except OSError:
                saved_at = 0.0
        section = data.get(self.source, {})
        out: dict[str, FilePosition] = {}
        for path, value in section.items():
            try:
                out[path] = FilePosition.from_json(value)
            except ValueError as exc:
                _log.warning(
                    "ignoring bad saved position", source=self.source, path=path, reason=str(exc)
                )
        return Saved(out, frozenset(watched.get(self.source, ())), saved_at)

    def save(
        self, positions: Mapping[str, FilePosition], watched: frozenset[str] = frozenset()
    ) -> None:
        """Replace this source's positions and watched paths, keeping the other sources'."""
        with self._lock:
            data, watching = self._read_all()
            data[self.source] = {path: asdict(pos) for path, pos in sorted(positions.items())}
            if watched:
                watching[self.source] = sorted(watched)
            else:
                watching.pop(self.source, None)
            doc: dict[str, Any] = {"version": _VERSION, "sources": data}
            if watching:
                doc["watched"] = watching
            text = json.dumps(doc, indent=1, sort_keys=True)
            atomic_write(self.path, text.encode() + b"\n")

    def _read_all(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """Every source's raw section and watched list; a corrupt file reads as empty.

        A corrupt file is moved aside first; ``OSError`` when the file (or the move) fails.
        """
        try:
            raw = read_state(self.path)  # never through a symbolic link
        except FileNotFoundError:
            return {}, {}
        try:
            sources, watched = _parse_document(raw)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            aside = self.path.with_name(self.path.name + ".corrupt")
            _log.error(
                "corrupt positions file moved aside; file sources start as if fresh",
                path=str(self.path),
                moved_to=str(aside),
                reason=str(exc),
            )
            self.path.replace(aside)
            return {}, {}
        return sources, watched


def _parse_document(raw: bytes) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The ``sources`` and ``watched`` mappings of a document; ``ValueError`` if malformed.

    A malformed ``watched`` part is dropped on its own (it only refines ``start_at``).
    """
    doc = json.loads(raw)  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise ValueError(f"not a version {_VERSION} positions document")
    sources = doc.get("sources")
    if not isinstance(sources, dict) or not all(isinstance(v, dict) for v in sources.values()):
        raise ValueError("'sources' must map source names to objects")
    watched = doc.get("watched", {})
    if not isinstance(watched, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in watched.values()
    ):
        watched = {}
    return sources, watched
