"""GPU process attribution: pid -> executable, command line, user, systemd unit, container
(and the workload's cgroup where the host's Docker engine or system manager cannot act).

Everything comes from ``<proc_root>/PID`` (``exe`` link, ``cmdline``, ``status``,
``stat``: the command name, ``cgroup``), so tests point ``proc_root`` at a fixture tree. An entry is
cached per pid together with what tells one program run from another: the process's
start time and command name (``stat`` fields 22 and 2), its executable (the ``exe``
link, where it may be read) and its command line, all read again at every call. A
reused pid, a process that exec'd another program (even one of the same name, or the
same executable with other arguments) or one that rewrote its command line is
attributed afresh. A process that is exiting (its memory released: a zombie, or a
multithreaded exit under way) reads an empty command line and no executable link while
NVML may still list it: with its command name and start time unchanged it keeps its
cached attribution (not a change of program). :meth:`ProcessAttributor.retain` drops
pids no longer seen on any GPU, which bounds the cache by the number of GPU processes.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final, NamedTuple

from aisentinel.events import ProcessAttribution


class ContainerInfo(NamedTuple):
    """What a resolver knows of a container: its name and its image (``None``: unknown)."""

    name: str | None
    image: str | None


ContainerResolver = Callable[[str, str], ContainerInfo | None]
"""``(runtime, container_id) -> its name and image`` (e.g. a Docker API lookup), or None.
Asked only about the host's own Docker containers (``runtime`` docker, no workload
cgroup): any user can name a cgroup of theirs ``docker-<id>.scope`` after one."""

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
_UNIT_SUFFIXES: Final = (".service", ".scope")


class CgroupInfo(NamedTuple):
    """What ``/proc/PID/cgroup`` says of a process's workload.

    ``unit``: the host's systemd unit (a ``.service`` or ``.scope`` under nothing but
    slices). ``runtime`` / ``container_id``: the container. ``cgroup``: the workload's
    own cgroup where neither the host's Docker engine nor its system manager can act on
    it: a container of another runtime, or of a Docker engine that is not the host's
    (rootless, in a machine), or a unit of a user's manager, a machine or a container
    (``/user.slice/user-1000.slice/user@1000.service/app.slice/ollama.service`` is not
    the host's ``ollama.service``)."""

    unit: str | None
    runtime: str | None
    container_id: str | None
    cgroup: str | None = None


def parse_cgroup(text: str) -> CgroupInfo:
    """The unit, container and workload cgroup from ``/proc/PID/cgroup`` (v1 or v2).

    Units come from the unified (``0::``) or ``name=systemd`` hierarchy: the host's unit
    is the first component below the slices; a deeper ``*.service`` or ``*.scope`` is
    delegated (a user's ``user@UID.service``, an nspawn machine, an LXC payload) and is
    identified by its cgroup path instead. The container is the outermost component that
    a runtime names: ``docker-<id>.scope``, ``cri-containerd-<id>.scope``,
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
    delegated: str | None = None
    for path in systemd_paths:
        unit, delegated = _unit_in([c for c in path.split("/") if c])
        if unit is not None or delegated is not None:
            break
    for path in systemd_paths + other_paths:
        comps = [c for c in path.split("/") if c]
        found = _container_in(comps)
        if found is not None:
            runtime, cid, start, end = found
            guest = any(not c.endswith(".slice") for c in comps[:start])
            host_docker = runtime == "docker" and not guest
            cgroup = None if host_docker else "/" + "/".join(comps[: end + 1])
            return CgroupInfo(unit, runtime, cid, cgroup)
    return CgroupInfo(unit, None, None, delegated)


def _unit_in(comps: list[str]) -> tuple[str | None, str | None]:
    """``(host unit, None)`` or ``(None, cgroup path of a delegated unit)`` or neither."""
    deepest = next(
        (i for i in range(len(comps) - 1, -1, -1) if comps[i].endswith(_UNIT_SUFFIXES)), None
    )
    if deepest is None:
        return None, None
    if all(c.endswith(".slice") for c in comps[:deepest]):
        return comps[deepest], None
    return None, "/" + "/".join(comps[: deepest + 1])


def _container_in(comps: list[str]) -> tuple[str, str, int, int] | None:
    """``(runtime, id, first, last)``: the container and the components that name it."""
    for i, comp in enumerate(comps):
        for pattern, runtime in _SCOPE_PATTERNS:
            m = pattern.match(comp)
            if m is not None:
                return runtime, m.group(1), i, i
        nxt = comps[i + 1] if i + 1 < len(comps) else ""
        if comp == "docker" and _FULL_ID.match(nxt):
            return "docker", nxt, i, i + 1
        if _POD.match(comp) and comps[0].startswith("kubepods") and _FULL_ID.match(nxt):
            return "kubernetes", nxt, 0, i + 1
    return None


_Identity = tuple[bytes, int | None, str | None, bytes]
"""``(comm, start time, exe link, raw command line)``: what a cached entry is valid for."""


def _identity(stat: bytes) -> tuple[bytes, int | None]:
    """``(comm, starttime)`` from ``/proc/PID/stat``: a new process changes it, an exec
    only the command name, and only when the new program's name differs."""
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
        # pid -> ((comm, start time, exe, raw cmdline), attribution)
        self._cache: dict[int, tuple[_Identity, ProcessAttribution]] = {}
        self._users: dict[int, str] = {}
        self.resolver_errors = 0

    def attribute(self, pid: int) -> ProcessAttribution | None:
        """The process's attribution, or None when it has gone (or is unreadable)."""
        base = f"{self._root}/{pid}"
        try:
            comm, start = _identity(_read(f"{base}/stat"))
        except OSError:
            self._cache.pop(pid, None)
            return None
        # An exec keeps the pid and start time and may keep the command name (a program
        # named like the one before): the executable and command line tell it.
        exe = _readlink(f"{base}/exe")
        try:
            raw = _read(f"{base}/cmdline")
        except OSError:
            raw = b""
        key: _Identity = (comm, start, exe, raw)
        cached = self._cache.get(pid)
        if cached is not None and (
            cached[0] == key or (not raw and exe is None and cached[0][:2] == (comm, start))
        ):
            # Unchanged; or exiting: a process whose memory is gone (a zombie, a
            # multithreaded exit) has an empty command line and no executable link,
            # and NVML may list it a while longer: it is still what it was.
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

    def _read(self, pid: int, base: str, identity: _Identity) -> ProcessAttribution:
        comm, start, exe, raw = identity
        args = raw.rstrip(b"\0").split(b"\0")[:MAX_CMDLINE_ARGS] if raw else []
        cmdline = tuple(a.decode("utf-8", "replace") for a in args)
        uid = self._uid(base)
        try:
            cgroup = _read(f"{base}/cgroup", 65536).decode("utf-8", "replace")
        except OSError:
            cgroup = ""
        unit, runtime, container, workload_cgroup = parse_cgroup(cgroup)
        info = None
        # Only the host's own (rootful) Docker containers are asked about: a guest's
        # cgroup may be named docker-<id>.scope after a host container (ids are in every
        # process's world-readable /proc/PID/cgroup), and the host's engine would lend it
        # that container's name and image. A guest container keeps its id alone.
        if (
            container is not None
            and runtime == "docker"
            and workload_cgroup is None
            and self._resolver is not None
        ):
            try:
                info = self._resolver(runtime, container)
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
            container_name=None if info is None else info.name,
            start_time=start,
            comm=comm.decode("utf-8", "replace") or None,
            container_image=None if info is None else info.image,
            cgroup=workload_cgroup,
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
