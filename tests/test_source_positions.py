"""The positions store: atomic, shared between sources, robust to corrupt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aisentinel.atomicfile import atomic_write
from aisentinel.sources.positions import (
    HEAD_BYTES,
    FilePosition,
    PositionStore,
    head_sha256,
)


def pos(offset: int = 10, head: bytes = b"head") -> FilePosition:
    return FilePosition(
        dev=1, ino=2, offset=offset, head_len=len(head), head_sha256=head_sha256(head)
    )


def test_round_trip(tmp_path: Path) -> None:
    """What is saved for a source is loaded back unchanged."""
    store = PositionStore(tmp_path, "web")
    store.save({"/var/log/a.log": pos(10), "/var/log/b.log": pos(20)})
    assert PositionStore(tmp_path, "web").load() == {
        "/var/log/a.log": pos(10),
        "/var/log/b.log": pos(20),
    }


def test_missing_file_loads_empty(tmp_path: Path) -> None:
    """No positions file means no saved positions (and no error)."""
    assert PositionStore(tmp_path / "nope", "web").load() == {}


def test_sources_keep_their_own_sections(tmp_path: Path) -> None:
    """Saving one source leaves the other sources' positions in place."""
    PositionStore(tmp_path, "web").save({"/a": pos(1)})
    PositionStore(tmp_path, "ssh").save({"/b": pos(2)})
    PositionStore(tmp_path, "web").save({"/a": pos(3)})
    assert PositionStore(tmp_path, "ssh").load() == {"/b": pos(2)}
    assert PositionStore(tmp_path, "web").load() == {"/a": pos(3)}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 99, "sources": {}}',
        b'{"version": 1, "sources": []}',
        b'{"version": 1, "sources": {"web": 3}}',
    ],
)
def test_corrupt_file_moved_aside(tmp_path: Path, content: bytes) -> None:
    """A file that is not a valid positions document is moved to .corrupt and reads empty."""
    (tmp_path / "positions.json").write_bytes(content)
    assert PositionStore(tmp_path, "web").load() == {}
    assert (tmp_path / "positions.json.corrupt").read_bytes() == content
    assert not (tmp_path / "positions.json").exists()


def test_bad_entry_ignored_others_kept(tmp_path: Path) -> None:
    """One malformed entry is dropped; the valid ones of the same source still load."""
    good = {"dev": 1, "ino": 2, "offset": 3, "head_len": 4, "head_sha256": "0" * 64}
    doc = {
        "version": 1,
        "sources": {"web": {"/good": good, "/bad": {**good, "offset": -1}, "/worse": "x"}},
    }
    (tmp_path / "positions.json").write_text(json.dumps(doc))
    loaded = PositionStore(tmp_path, "web").load()
    assert list(loaded) == ["/good"]
    assert loaded["/good"].offset == 3


def test_from_json_rejects_bad_values() -> None:
    """Entries with missing fields, booleans, bad digests or a long head are rejected."""
    good = {"dev": 1, "ino": 2, "offset": 3, "head_len": 4, "head_sha256": "a" * 64}
    assert FilePosition.from_json(good).ino == 2
    for bad, reason in (
        ({**good, "dev": True}, "dev must be"),
        ({**good, "head_sha256": "abc"}, "sha256"),
        ({**good, "head_len": HEAD_BYTES + 1}, "head_len is at most"),
        ({k: v for k, v in good.items() if k != "ino"}, "ino must be"),
        ([], "an object"),
    ):
        with pytest.raises(ValueError, match=reason):
            FilePosition.from_json(bad)


def test_head_matches(tmp_path: Path) -> None:
    """head_matches compares the hash of the first head_len bytes of the open file."""
    path = tmp_path / "f"
    path.write_bytes(b"head and more")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pos(head=b"head").head_matches(fd)
        assert not pos(head=b"hexd").head_matches(fd)
        assert not pos(head=b"head and more and more").head_matches(fd)
    finally:
        os.close(fd)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    """atomic_write creates missing directories, replaces content and leaves no temp file."""
    target = tmp_path / "sub" / "file"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]


def test_watched_round_trip_per_source(tmp_path: Path) -> None:
    """Watched paths are saved per source, loaded back, and dropped when empty."""
    PositionStore(tmp_path, "web").save({"/a": pos(1)}, frozenset({"/b", "/logs/*.log"}))
    PositionStore(tmp_path, "ssh").save({}, frozenset({"/c"}))
    saved = PositionStore(tmp_path, "web").load_saved()
    assert saved.positions == {"/a": pos(1)}
    assert saved.watched == {"/b", "/logs/*.log"}
    assert saved.saved_at > 0
    PositionStore(tmp_path, "web").save({"/a": pos(2)})
    assert PositionStore(tmp_path, "web").load_saved().watched == frozenset()
    assert PositionStore(tmp_path, "ssh").load_saved().watched == {"/c"}


def test_malformed_watched_is_ignored_not_fatal(tmp_path: Path) -> None:
    """A bad 'watched' part is dropped alone; the positions still load."""
    good = {"dev": 1, "ino": 2, "offset": 10, "head_len": 4, "head_sha256": head_sha256(b"head")}
    doc = {"version": 1, "sources": {"web": {"/a": good}}, "watched": {"web": "/b"}}
    (tmp_path / "positions.json").write_text(json.dumps(doc))
    saved = PositionStore(tmp_path, "web").load_saved()
    assert saved.positions == {"/a": pos(10)}
    assert saved.watched == frozenset()


def test_unreadable_positions_file_raises_oserror(tmp_path: Path) -> None:
    """A positions path that is a directory raises OSError on load and save (caller reports)."""
    (tmp_path / "positions.json").mkdir()
    store = PositionStore(tmp_path, "web")
    with pytest.raises(OSError, match="Is a directory"):
        store.load()
    with pytest.raises(OSError, match="Is a directory"):
        store.save({"/a": pos(1)})
