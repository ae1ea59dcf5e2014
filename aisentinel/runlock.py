"""The daemon's lock on its state directory: who else is using it right now.

``aisentinel run`` holds an exclusive ``flock`` on ``state_dir/daemon.lock`` for as
long as it runs (the kernel drops it when the process ends, ``kill -9`` included), so
an offline command that must not work beside a running daemon (``aisentinel
withdraw``) can tell, even with the control socket off, and a second daemon on the
same state directory refuses to start (exit 1, one line naming the lock and the
holder's pid): beside the first it would decide every attack twice. A daemon that
cannot take the lock at all (the state directory is not writable, a symbolic link in
its place) logs one line and runs all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from aisentinel.atomicfile import open_state

LOCK_FILE = "daemon.lock"
"""In the state directory; empty, kept between runs."""


def take(path: Path, *, create: bool = True) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or ``None`` when
    another process holds it. ``create=False``: a missing file is nobody's lock (the
    descriptor is then ``-1``: nothing to release). Other faults raise ``OSError``; a
    symbolic link at ``path`` is one (never followed, :func:`open_state`)."""
    flags = os.O_RDONLY | (os.O_CREAT if create else 0)
    try:
        fd = open_state(path, flags)
    except FileNotFoundError:
        if create:
            raise
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def holder(path: Path) -> int | None:
    """The pid of the process holding ``path``'s lock now, read from ``/proc/locks``
    (``None``: nobody, or it cannot be told). Takes no lock itself, so asking never
    keeps a starting daemon from taking it."""
    try:
        st = path.lstat()
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2163019 0 EOF" (a waiter has "->" after "1:")
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key and fields[4].isdigit():
            return int(fields[4])
    return None


def release(fd: int | None) -> None:
    """Let go of a lock :func:`take` gave (``None`` or ``-1``: nothing held)."""
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
