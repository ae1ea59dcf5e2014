"""State files: replace one atomically and durably (positions, cursors, records), and
open one without following a symbolic link.

The state directory is aisentinel's own; a symbolic link in it is never followed: the
daemon may run as root (the fail2ban, ufw and throttle drop-ins), and a link planted
at ``decisions.sqlite3`` or ``daemon.lock`` would have it chmod or create the file the
link names. :func:`open_state` and :func:`read_state` refuse one (``OSError`` with
errno ``ELOOP`` and :data:`NOT_FOLLOWED` as its reason); :func:`atomic_write` replaces
the link itself, never what it names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

NOT_FOLLOWED = "a symbolic link (aisentinel does not follow links in its state directory)"
"""The reason given for a state file that is a symbolic link."""


def open_state(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open(path, flags)`` that never follows a symbolic link at ``path`` (and never
    waits on a FIFO there): a link raises ``OSError(ELOOP, NOT_FOLLOWED)``."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, NOT_FOLLOWED, str(path)) from None
        raise


def read_state(path: Path) -> bytes:
    """The bytes of the state file ``path``; a symbolic link there is refused
    (:func:`open_state`), and so is anything but a regular file (``OSError``)."""
    fd = open_state(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read()


def restrict(path: Path, mode: int) -> None:
    """Set the permission bits of the state file ``path`` to ``mode``, never through a
    symbolic link (``OSError``: :func:`open_state`)."""
    fd = open_state(path, os.O_RDONLY)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file + fsync + rename).

    The new file keeps the owner of the one it replaces where this process may give it
    (root: `aisentinel withdraw` rewrites the daemon's records, which the daemon, as
    its own user, must still read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        was: os.stat_result | None = path.lstat()
    except OSError:
        was = None
    if was is not None and stat.S_ISLNK(was.st_mode):
        was = None  # the link is replaced; neither its owner nor its target's is kept
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if was is not None and (was.st_uid, was.st_gid) != (os.geteuid(), os.getegid()):
            with contextlib.suppress(PermissionError):
                os.fchown(fd, was.st_uid, was.st_gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
