"""Operational faults: what went wrong, in one line, and what the operator can do.

The daemon does not stop for a fault in its surroundings (a full or read-only state
directory, a file where a directory belongs, a metrics port already taken): it runs
degraded and says so. These helpers find such faults before they turn into a
traceback and word the line: the path or port, the reason, and the command to run.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14

_STATE_FILES = ("positions.json", "journald-*.cursor", "throttle.json")
"""Files copied into a private state directory so a degraded run resumes where it was."""


def probe_dir(path: Path) -> OSError | None:
    """Create ``path`` if needed and prove a file can be written and synced in it.

    Returns the error when it cannot (read-only, not a directory, no space, no
    permission), None when the directory is usable.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd, name = tempfile.mkstemp(dir=path, prefix=".aisentinel-probe-")
        try:
            os.write(fd, b"aisentinel\n")
            os.fsync(fd)  # delayed allocation reports a full disk here, not at write()
        finally:
            os.close(fd)
            Path(name).unlink()
    except OSError as exc:
        return exc
    return None


def reason(exc: BaseException) -> str:
    """The error without its Python dressing (``No space left on device``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _owner() -> str:
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def looked_up(path: Path) -> os.stat_result | None:
    """``os.stat(path)``, or ``None`` where there is nothing to see: missing, or not to be
    looked at (a directory above it this user may not search). ``Path.exists()`` and
    ``is_dir()`` of Python 3.11 raise ``PermissionError`` there instead."""
    try:
        return path.stat()
    except (OSError, ValueError):
        return None


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory this user can see (never raises)."""
    st = looked_up(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def fix_hint(path: Path, exc: BaseException, *, directory: Path | None = None) -> str:
    """What to do about ``exc`` met at ``path`` (``directory``: the state dir holding it)."""
    where = directory or path
    code = getattr(exc, "errno", None)
    sqlite_code = getattr(exc, "sqlite_errorcode", None)
    sqlite_primary = sqlite_code & 0xFF if isinstance(sqlite_code, int) else None
    if code in (errno.ENOSPC, errno.EDQUOT) or sqlite_primary == _SQLITE_FULL:
        return f"free space on its file system (df -h {where}), then restart aisentinel"
    if code == errno.EROFS:
        return (
            f"{where} is on a read-only file system: remount it read-write or set "
            "[daemon] state_dir to a writable directory, then restart aisentinel"
        )
    if code == errno.ELOOP:
        link = getattr(exc, "filename", None) or path
        return (
            f"{link} is a symbolic link, which aisentinel does not follow in its state "
            f"directory: remove it (rm {link}), then restart aisentinel"
        )
    if is_dir(path) and directory is not None and path != directory:
        return f"{path} is a directory: move it away (mv {path} {path}.old), then restart"
    if code in (errno.EEXIST, errno.ENOTDIR) or (
        looked_up(where) is not None and not is_dir(where)
    ):
        return (
            f"{where} (or a directory above it) is not a directory: move it away or set "
            "[daemon] state_dir, "
            "then restart aisentinel"
        )
    if code in (errno.EACCES, errno.EPERM) or sqlite_primary in (
        _SQLITE_READONLY,
        _SQLITE_CANTOPEN,
    ):
        return (
            f"let aisentinel write there (chown -R {_owner()} {where}; chmod 750 {where}), "
            "then restart aisentinel"
        )
    return f"check {where} (ls -ld {where}; df -h {where}), then restart aisentinel"


def private_state_dir(configured: Path) -> tempfile.TemporaryDirectory[str] | None:
    """A private temporary state directory for a run whose own one is unusable.

    Read positions, journald cursors and the throttle's record of what it enforced,
    still readable in ``configured``, are copied in, so the degraded run resumes
    where the last one stopped (and can lift what it throttled or froze). The
    directory is removed when the process exits (systemd's ``PrivateTmp=`` also
    removes it). None when not even a temporary directory can be made.
    """
    try:
        tmp = tempfile.TemporaryDirectory(prefix="aisentinel-state-")
    except OSError:
        return None
    target = Path(tmp.name)
    with contextlib.suppress(OSError):
        for pattern in _STATE_FILES:
            for src in configured.glob(pattern):
                with contextlib.suppress(OSError):
                    shutil.copyfile(src, target / src.name)
    return tmp


def port_hint(listen: str, port: int, exc: OSError) -> str:
    """What to do when the metrics endpoint cannot listen on ``listen``:``port``."""
    change = "or set [exporter] port (or listen) in the config file and restart aisentinel"
    if exc.errno == errno.EADDRINUSE:
        return f"see who holds it: ss -ltnp 'sport = :{port}'; stop that service {change}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{listen} is not an address of this host: {change}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"ports below 1024 need privileges aisentinel does not have: {change}"
    return change


def describe(exc: OSError | sqlite3.Error) -> str:
    """``<what>: <reason>`` for a fault that ended a command."""
    if isinstance(exc, OSError):
        if exc.filename is not None:
            what = str(exc.filename)
            if exc.filename2 is not None:
                what += f" -> {exc.filename2}"
            return f"{what}: {reason(exc)}"
        return f"system error: {reason(exc)}"
    return f"database error: {exc}"
