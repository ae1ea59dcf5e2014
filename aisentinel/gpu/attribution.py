"""GPU process attribution: pid -> executable, command line, user, systemd unit, container.

Everything comes from ``<proc_root>/PID`` (``exe`` link, ``cmdline``, ``status``,
``stat``: the command name, ``cgroup``), so tests point ``proc_root`` at a fixture tree. An entry is
cached per pid together with the process's start time and command name (``stat``
fields 22 and 2), so a reused pid, or a process that exec'd another program, is
attributed afresh; :meth:`ProcessAttributor.retain` drops pids no longer seen on
any GPU, which bounds the cache by the number of GPU processes.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from aisentinel.events import ProcessAttribution

ContainerResolver = Callable[[str, str], str | None]
"""``(runtime, container_id) -> container name`` (e.g. a Docker API lookup), or None."""

MAX_CMDLINE_BYTES: Final = 4096
MAX_CMDLINE_ARGS: Final = 64
MAX_USERS: Final = 1024

_HEX_ID = r"([0-9a-f]{12,64})"
_SCOPE_PATTERNS: Final = (
    (re.compile(rf"^docker-{_HEX_ID}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_HEX_ID}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_HEX_ID}\.scope$"), "cri-o"),
    (re.compile(rf"^libpod-{_HEX_ID}\.scope$"), "podman"),
)
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")
_POD = re.compile(r"^pod[0-9a-f_-]{8,}(\.slice)?$")


def parse_cgroup(text: str) -> tuple[str | None, str | None, str | None]:
    """``(unit, runtime, container_id)`` from ``/proc/PID/cgroup`` (cgroup v1 or v2).

    The unit is the deepest ``*.service`` or ``*.scope`` path component of the unified
    (``0::``) or ``name=systemd`` hierarchy. The container is the outermost component
    that a runtime names: ``docker-<id>.scope``, ``cri-containerd-<id>.scope``,
    ``crio-<id>.scope``, ``libpod-<id>.scope`` (systemd cgroup driver), or
    ``/docker/<id>`` and ``/kubepods/.../pod<uid>/<id>`` (cgroupfs driver).
    """
    systemd_paths: list[str] = []
    other_paths: list[str] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if (hierarchy == "0" and controllers == "") or controllers == "name=systemd":
            systemd_paths.append(path)
        else:
            other_paths.append(path)
    unit: str | None = None
    for path in systemd_paths:
        for comp in reversed(path.split("/")):
            if comp.endswith((".service", ".scope")):
                unit = comp
                break
        if unit is not None:
            break
    for path in systemd_paths + other_paths:
        found = _container_in(path)
        if found is not None:
            return unit, found[0], found[1]
    return unit, None, None


def _container_in(path: str) -> tuple[str, str] | None:
    comps = [c for c in path.split("/") if c]
    for i, comp in enumerate(comps):
        for pattern, runtime in _SCOPE_PATTERNS:
            m = pattern.match(comp)
            if m is not None:
                return runtime, m.group(1)
        nxt = comps[i + 1] if i + 1 < len(comps) else ""
        if comp == "docker" and _FULL_ID.match(nxt):
            return "docker", nxt
        if _POD.match(comp) and comps[0].startswith("kubepods") and _FULL_ID.match(nxt):
            return "kubernetes", nxt
    return None


def _identity(stat: bytes) -> tuple[bytes, int | None]:
    """``(comm, starttime)`` from ``/proc/PID/stat``: a new process or an exec changes it."""
    # The command name (field 2) may hold spaces and parentheses: split at the last ')'.
    close = stat.rfind(b")")
    comm = stat[stat.find(b"(") + 1 : close]
    fields = stat[close + 2 :].split()
    try:
        return comm, int(fields[19])  # field 22, starttime (clock ticks after boot)
    except (IndexError, ValueError):
        return comm, None


def _read(path: str, limit: int = MAX_CMDLINE_BYTES) -> bytes:
    """Up to ``limit`` bytes of a small file (os-level: a third of ``open()``'s cost)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)  # noqa: PTH115 - str paths, no Path per read
    except OSError:
        return None


class ProcessAttributor:
    """Attributes pids to executables, users, units and containers; cached per pid."""

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        resolver: ContainerResolver | None = None,
    ) -> None:
        self._root = str(proc_root)
        self._resolver = resolver
        # pid -> ((comm, start time), attribution)
        self._cache: dict[int, tuple[tuple[bytes, int | None], ProcessAttribution]] = {}
        self._users: dict[int, str] = {}
        self.resolver_errors = 0

    def attribute(self, pid: int) -> ProcessAttribution | None:
        """The process's attribution, or None when it has gone (or is unreadable)."""
        base = f"{self._root}/{pid}"
        try:
            key = _identity(_read(f"{base}/stat"))
        except OSError:
            self._cache.pop(pid, None)
            return None
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == key:
            return cached[1]
        found = self._read(pid, base, key)
        self._cache[pid] = (key, found)
        return found

    def retain(self, pids: Collection[int]) -> None:
        """Forget every cached pid not in ``pids`` (the processes still on a GPU)."""
        if len(self._cache) > len(pids) or any(p not in pids for p in self._cache):
            self._cache = {p: a for p, a in self._cache.items() if p in pids}

    def __len__(self) -> int:
        return len(self._cache)

    def _read(self, pid: int, base: str, identity: tuple[bytes, int | None]) -> ProcessAttribution:
        exe = _readlink(f"{base}/exe")
        cmdline: tuple[str, ...] = ()
        try:
            raw = _read(f"{base}/cmdline")
            args = raw.rstrip(b"\0").split(b"\0")[:MAX_CMDLINE_ARGS] if raw else []
            cmdline = tuple(a.decode("utf-8", "replace") for a in args)
        except OSError:
            pass
        uid = self._uid(base)
        try:
            cgroup = _read(f"{base}/cgroup", 65536).decode("utf-8", "replace")
        except OSError:
            cgroup = ""
        unit, runtime, container = parse_cgroup(cgroup)
        name = None
        if container is not None and runtime is not None and self._resolver is not None:
            try:
                name = self._resolver(runtime, container)
            except Exception:  # noqa: BLE001 - a resolver fault must not lose the sample
                self.resolver_errors += 1
        return ProcessAttribution(
            pid=pid,
            exe=exe,
            cmdline=cmdline,
            uid=uid,
            user=None if uid is None else self._user(uid),
            unit=unit,
            container_id=container,
            container_runtime=runtime,
            container_name=name,
            start_time=identity[1],
            comm=identity[0].decode("utf-8", "replace") or None,
        )

    @staticmethod
    def _uid(base: str) -> int | None:
        try:
            status = _read(f"{base}/status", 65536)
            at = status.index(b"\nUid:")
            return int(status[at + 5 :].split(None, 1)[0])  # the real uid
        except (OSError, ValueError, IndexError):
            return None

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            if len(self._users) >= MAX_USERS:
                self._users.clear()
            self._users[uid] = name
        return name
