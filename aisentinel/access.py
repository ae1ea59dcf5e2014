"""Whether another account may read a file, judged without switching to it.

``sudo aisentinel check-config`` reads every file as root, which reads them all; the
service runs as ``aisentinel`` (the base unit), which may not. :func:`unreadable`
says why an account cannot read a file: the permission bits of the file and of every
directory on the way (search permission), chosen the way the kernel chooses them
(owner, else a group of the account, else others; uid 0 too, as the units that run
the daemon as root give it no ``CAP_DAC_*`` capability), and a POSIX access ACL
(``system.posix_acl_access``) when the file or directory has one: named users and
groups, the mask, in the kernel's order. Not judged (they can only refuse more, and
the service's own check before each start still sees them): mandatory access control
(AppArmor, SELinux), the unit's sandbox (``ProtectHome=``, ``InaccessiblePaths=``)
and read-only or ``noexec`` mounts. A file that does not exist is not judged: reading
it says why (when it matters).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READ = 4
SEARCH = 1
ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ENTRY = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the kernel sees it: uid, and every group it is in (``gid``: its primary
    one, what files it creates get)."""

    name: str
    uid: int
    gids: frozenset[int]
    gid: int = -1

    @classmethod
    def lookup(cls, name: str) -> Account:
        """The account ``name`` with its primary and supplementary groups (``KeyError``:
        no such user)."""
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        return cls(entry.pw_name, entry.pw_uid, frozenset(groups), entry.pw_gid)

    def group(self) -> str:
        """The name of the account's primary group (its number when it has no name)."""
        try:
            return grp.getgrgid(self.gid).gr_name
        except KeyError:
            return str(self.gid)


def _acl(path: Path) -> list[tuple[int, int, int]] | None:
    """The access ACL's entries (tag, permission bits, id), ``None`` without one."""
    try:
        raw = os.getxattr(path, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        raise OSError(errno.EINVAL, f"an access ACL of an unknown format ({len(raw)} bytes)")
    body = raw[4:]
    if len(body) % _ENTRY.size:
        raise OSError(errno.EINVAL, "an access ACL of an unknown format")
    return [_ENTRY.unpack_from(body, at) for at in range(0, len(body), _ENTRY.size)]


def allows(path: Path, account: Account, want: int) -> bool:
    """Whether ``account`` holds the ``want`` bits (:data:`READ`, :data:`SEARCH`) on
    ``path`` itself (``OSError`` when it cannot be looked at)."""
    st = path.stat()  # uid 0 too: the units that run as root hold no CAP_DAC_* at all
    acl = _acl(path)
    if acl is None:
        if st.st_uid == account.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in account.gids:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & want == want
    mask = next((perm for tag, perm, _ in acl if tag == _MASK), 7)
    if st.st_uid == account.uid:
        return all(perm & want == want for tag, perm, _ in acl if tag == _USER_OBJ)
    named = [perm for tag, perm, uid in acl if tag == _USER and uid == account.uid]
    if named:
        return named[0] & mask & want == want
    groups = [
        perm
        for tag, perm, gid in acl
        if (tag == _GROUP_OBJ and st.st_gid in account.gids)
        or (tag == _GROUP and gid in account.gids)
    ]
    if groups:  # one that matches and grants is enough; matching none of them, others
        return any(perm & mask & want == want for perm in groups)
    return all(perm & want == want for tag, perm, _ in acl if tag == _OTHER)


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def _ways(path: Path) -> Iterator[Path]:
    """Every directory the kernel searches to reach ``path``: those of the path as
    given and of its target when links lead elsewhere."""
    seen: set[Path] = set()
    for full in (path.absolute(), path.resolve()):
        for parent in reversed(full.parents):
            if parent not in seen:
                seen.add(parent)
                yield parent


def unreadable(path: Path, account: Account, *, directory: bool = False) -> str | None:
    """Why ``account`` cannot read ``path`` (list it, with ``directory``), or ``None``
    when it can, or when ``path`` does not exist."""
    try:
        path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be looked at ({exc.strerror})"
    try:
        for parent in _ways(path):
            if not allows(parent, account, SEARCH):
                return f"no search permission on {parent} ({_describe(parent)})"
        want = READ | SEARCH if directory else READ
        if not allows(path, account, want):
            return f"no {'list' if directory else 'read'} permission ({_describe(path)})"
    except OSError as exc:
        return f"its permissions cannot be read ({exc.strerror})"
    return None


def _describe(path: Path) -> str:
    st = path.stat()
    acl = " with an access ACL" if _acl(path) is not None else ""
    return f"mode {stat.filemode(st.st_mode)} {_owner(st)}{acl}"


UNIT = "aisentinel.service"
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
"""Where systemd looks for a system unit and its drop-ins, the first the strongest
(read at each call, so a test can point it elsewhere)."""


def _service_lines(path: Path) -> Iterator[tuple[str, str]]:
    """``(key, value)`` of the ``[Service]`` section of a unit file or drop-in."""
    section = ""
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            yield key.strip(), value.strip()


def unit_files(dirs: tuple[Path, ...] | None = None, unit: str = UNIT) -> list[Path]:
    """The unit file and its drop-ins as systemd reads them: the first directory's unit
    file, then every ``unit.d/*.conf`` by file name (one in an earlier directory hides
    one of the same name in a later one); empty when no unit file is found (or it is
    masked: a link to ``/dev/null``)."""
    dirs = UNIT_DIRS if dirs is None else dirs
    main = next((d / unit for d in dirs if (d / unit).is_file()), None)
    if main is None or main.resolve() == Path("/dev/null"):
        return []
    drop_ins: dict[str, Path] = {}
    for d in dirs:
        try:
            found = [p for p in (d / f"{unit}.d").iterdir() if p.suffix == ".conf"]
        except OSError:
            continue
        for path in found:
            drop_ins.setdefault(path.name, path)
    return [main, *(drop_ins[name] for name in sorted(drop_ins))]


def service_account(
    dirs: tuple[Path, ...] | None = None, unit: str = UNIT
) -> tuple[Account, list[Path]] | None:
    """The account ``unit`` runs as (``User=``, ``Group=``, ``SupplementaryGroups=`` of
    its unit file and drop-ins, as systemd applies them: the last ``User=`` and
    ``Group=`` win, an empty one resets) and the files read; ``None`` when there is no
    such unit or a file cannot be read. ``KeyError`` when the user or a group named
    does not exist."""
    files = unit_files(dirs, unit)
    if not files:
        return None
    user, group = "", ""
    extra: list[str] = []
    try:
        for path in files:
            for key, value in _service_lines(path):
                if key == "User":
                    user = value
                elif key == "Group":
                    group = value
                elif key == "SupplementaryGroups":
                    extra = [*extra, *value.split()] if value else []
    except OSError:
        return None
    account = Account.lookup(user or "root")
    gid = _gid(group) if group else pwd.getpwuid(account.uid).pw_gid
    gids = set(os.getgrouplist(account.name, gid)) | {_gid(g) for g in extra}
    return Account(account.name, account.uid, frozenset(gids), gid), files


def _gid(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
