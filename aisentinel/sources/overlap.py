"""Sources that read the same input: every line (or journal entry) counted twice.

Two ``[[sources]]`` that follow the same log file, or two journald sources that read
sshd's entries (or both the kernel's Xid lines) from the same journal, hand each line to
the detectors twice: a brute force of 3 attempts is counted as 6 and the
address is banned at about half its threshold. Within one source a file named twice is
read once (see :mod:`.file`); across sources nothing can tell, so ``check-config`` (and
``aisentinel run`` at start) warns with :func:`shared_inputs`.

Paths are compared as written (``os.path.normpath``, so ``a//x`` and ``a/b/../x`` are
``a/x``), through ``fnmatch`` for a literal path against another source's glob, and,
for files that exist now, by device and inode (a symlink, a bind mount, or a glob's
current matches). Journals are compared by the directories whose files each reader
reads (resolved): a ``directory`` and its machine-id subdirectories (32 hex digits, as
sd-journal reads them), and for the system journal (no ``directory``) this machine's
under ``/var/log/journal`` and ``/run/log/journal``, so ``directory =
"/var/log/journal"`` reads the system journal too.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from aisentinel.sources.base import SourceConfigBase
from aisentinel.sources.file import FileSourceConfig, _has_magic
from aisentinel.sources.journald import JOURNAL_DIRS, JournaldSourceConfig, may_read_sshd

SYSLOG_SSHD_FILES = ("/var/log/auth.log", "/var/log/secure")
"""Where rsyslog writes sshd's lines on Debian/Ubuntu and on RHEL-likes."""

_COUNTED_TWICE = "each line is counted twice, so an address is banned at about half its threshold"


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # noqa: PTH116 - a str path, compared by inode
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def _matches(pattern: str) -> dict[tuple[int, int], str]:
    """The files a glob matches now, by identity."""
    out: dict[tuple[int, int], str] = {}
    for path in sorted(glob.glob(pattern)):  # noqa: PTH207 - absolute patterns
        ident = _ident(path)
        if ident is not None:
            out.setdefault(ident, path)
    return out


def _same_file(a: str, b: str) -> str | None:
    """The file both paths or patterns name (literal or glob), or None."""
    na, nb = os.path.normpath(a), os.path.normpath(b)
    magic_a, magic_b = _has_magic(a), _has_magic(b)
    if na == nb:
        return na
    if not magic_a and not magic_b:
        ident = _ident(a)
        return na if ident is not None and ident == _ident(b) else None
    if magic_a and not magic_b:
        a, b, na, nb, magic_a, magic_b = b, a, nb, na, magic_b, magic_a
    if not magic_a:  # a literal against a glob
        if fnmatch.fnmatchcase(na, b) or fnmatch.fnmatchcase(a, b):
            return na
        ident = _ident(a)
        return na if ident is not None and ident in _matches(b) else None
    found_a = _matches(a)  # two globs: a file both match now
    common = found_a.keys() & _matches(b).keys()
    return found_a[min(common)] if common else None


def _file_overlaps(files: Sequence[FileSourceConfig]) -> Iterable[str]:
    for i, first in enumerate(files):
        for second in files[i + 1 :]:
            for a in first.paths:
                shared = next(
                    ((b, f) for b in second.paths if (f := _same_file(a, b)) is not None), None
                )
                if shared is None:
                    continue
                b, path = shared
                how = "" if a == b == path else f" (as {a} and {b})"
                yield (
                    f"sources {first.name!r} and {second.name!r} both read {path}{how}: "
                    f"{_COUNTED_TWICE}; keep each file in one source"
                )
                break


_ID128 = re.compile(r"[0-9a-f]{32}")
"""A machine id: the name of the subdirectory journald keeps a machine's files in."""

MACHINE_ID = Path("/etc/machine-id")


def _machine_id(path: Path = MACHINE_ID) -> str | None:
    """This machine's id (the system journal's subdirectory), or None when unknown."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return text if _ID128.fullmatch(text) else None


def _journal(source: JournaldSourceConfig) -> str:
    """The journal a journald source reads, as a warning names it."""
    directory = source.directory
    return "the system journal" if directory is None else os.path.normpath(directory)


def _resolved(path: str | Path) -> str:
    return os.path.realpath(os.path.normpath(path))


def _reads(source: JournaldSourceConfig, directory: str, machine: str | None) -> bool:
    """Whether ``source`` reads the journal files in ``directory`` (resolved): its
    ``directory`` or a machine-id subdirectory of it; for the system journal, this
    ``machine``'s subdirectory of a :data:`JOURNAL_DIRS` (any machine id's when None)."""
    parent, name = os.path.split(directory)
    if source.directory is not None:
        own = _resolved(source.directory)
        return directory == own or (parent == own and bool(_ID128.fullmatch(name)))
    if parent not in {_resolved(d) for d in JOURNAL_DIRS}:
        return False
    return name == machine if machine is not None else bool(_ID128.fullmatch(name))


def _same_journal(
    first: JournaldSourceConfig, second: JournaldSourceConfig, machine: str | None
) -> bool:
    """Whether the two sources read journal files of one directory."""
    if first.directory is None and second.directory is None:
        return True
    candidates = {_resolved(s.directory) for s in (first, second) if s.directory is not None}
    if machine is not None:
        candidates.update(_resolved(Path(d, machine)) for d in JOURNAL_DIRS)
    return any(_reads(first, d, machine) and _reads(second, d, machine) for d in candidates)


def _journal_overlap(
    first: JournaldSourceConfig, second: JournaldSourceConfig, machine: str | None = None
) -> str | None:
    """Why two journald sources count the same entries twice, or None: both read the same
    journal (:func:`_same_journal`; ``machine`` is this machine's id), and both sshd's
    entries (matches that may select them), or both the kernel's Xid lines
    (``kernel_xid``). An sshd source beside a kernel-only one, or sources of different
    journal directories, read no entry in common that counts."""
    if not _same_journal(first, second, machine):
        return None
    where = _journal(first)
    if where != _journal(second):
        where = f"{where} and {_journal(second)}"
    what = [
        *(["sshd's entries"] if may_read_sshd(first) and may_read_sshd(second) else []),
        *(["the kernel's Xid lines"] if first.kernel_xid and second.kernel_xid else []),
    ]
    if not what:
        return None
    return (
        f"journald sources {first.name!r} and {second.name!r} both read the journal "
        f"({where}) for {' and '.join(what)}: the entries their matches share are counted "
        f"twice ({_COUNTED_TWICE}); use one journald source"
    )


def _sshd_file(source: FileSourceConfig) -> str | None:
    """The path by which a file source reads syslog's copy of sshd's log, or None."""
    for path in source.paths:
        for known in SYSLOG_SSHD_FILES:
            if _same_file(path, known) is not None:
                return path
    if source.parser == "sshd":
        return source.paths[0]
    return None


def shared_inputs(sources: Sequence[SourceConfigBase]) -> list[str]:
    """A warning for each pair of sources that read the same file or the same journal."""
    files = [s for s in sources if isinstance(s, FileSourceConfig)]
    journals = [s for s in sources if isinstance(s, JournaldSourceConfig)]
    out = list(_file_overlaps(files))
    machine = _machine_id() if len(journals) > 1 else None
    for i, first in enumerate(journals):
        for second in journals[i + 1 :]:
            overlap = _journal_overlap(first, second, machine)
            if overlap is not None:
                out.append(overlap)
    for journal in (j for j in journals if may_read_sshd(j)):
        for source in files:
            path = _sshd_file(source)
            if path is not None:
                out.append(
                    f"sources {journal.name!r} (journald) and {source.name!r} ({path}) both "
                    "read sshd's log where syslog copies the journal to that file: "
                    f"{_COUNTED_TWICE}; keep one of them"
                )
    return out
