"""The daemon's lock on its state directory: who else is using it right now.

``aisentinel run`` holds an exclusive ``flock`` on ``state_dir/daemon.lock`` for as
long as it runs (the kernel drops it when the process ends, ``kill -9`` included), so
an offline command that must not work beside a running daemon (``aisentinel
withdraw``) can tell, even with the control socket off. Holding it is advisory: a
daemon that cannot take it (another process holds it, or the state directory is not
writable) logs one line and runs all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "daemon.lock"
"""In the state directory; empty, kept between runs."""


def take(path: Path, *, create: bool = True) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or ``None`` when
    another process holds it. ``create=False``: a missing file is nobody's lock (the
    descriptor is then ``-1``: nothing to release). Other faults raise ``OSError``."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
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


def release(fd: int | None) -> None:
    """Let go of a lock :func:`take` gave (``None`` or ``-1``: nothing held)."""
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
