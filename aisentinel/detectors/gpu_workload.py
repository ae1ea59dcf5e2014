"""``gpu_workload``: a process on a GPU that is not a known AI service; mining raises it.

Each process of each :class:`~aisentinel.events.GpuSample` is checked against the
workload allowlist: its executable's name (``exes``), its systemd unit (``units``) or
its container's name (``containers``), as shell-style patterns. A process that matches
none is an unknown GPU workload: a MEDIUM finding about the workload
(``Finding.target`` is a :class:`~aisentinel.events.WorkloadTarget`: the container,
the service, or the process), with the GPU, its attribution and command line.

Signs of cryptocurrency mining make it HIGH: a known miner's name (``miner_names``) as
the executable or first argument, a mining argument (``--algo``, ``--coin``, a
``stratum+tcp://`` URL, a pool host name from ``pool_hosts``) in
``/proc/PID/cmdline``, or an established or opening TCP connection from the process to
a mining-pool port (``pool_ports``), found by matching the process's socket inodes
(``/proc/PID/fd`` -> ``socket:[inode]``) with ``/proc/PID/net/tcp`` and ``tcp6``
(the process's own network namespace). ``proc_root`` points elsewhere in tests.

A process is reported once per ``refire`` (keyed by pid and start time); an unknown one
not seen mining is looked at again every ``recheck`` for a connection opened later, and
reported again (HIGH) once it shows one. At most ``max_keys`` processes are remembered.
Processes without an attribution (gone, or in another pid namespace) are skipped.
"""

from __future__ import annotations

import fnmatch
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Final

from pydantic import Field

from aisentinel.detectors.base import REGISTRY, Detector, DetectorConfigBase
from aisentinel.detectors.common import MaxKeys, Window
from aisentinel.detectors.gpu_common import (
    base_name,
    command_line,
    describe,
    gpu_evidence,
    workload_target,
)
from aisentinel.events import Event, Finding, GpuProcessSample, GpuSample, Severity
from aisentinel.textsafe import escape

DEFAULT_EXES: Final = (
    "ollama",
    "ollama_llama_server",
    "ollama-runner",
    "vllm",
    "llama-server",
    "llama-cli",
    "llama.cpp*",
    "text-generation-launcher",
    "text-generation-server",
    "text-generation-router",
    "local-ai",
    "localai",
    "comfyui",
    "tritonserver",
    "nvidia-smi",
    "nvidia-persistenced",
    "Xorg",
    "Xwayland",
    "gnome-shell",
)
DEFAULT_UNITS: Final = (
    "ollama*.service",
    "vllm*.service",
    "llama*.service",
    "text-generation-inference*.service",
    "tgi*.service",
    "localai*.service",
    "local-ai*.service",
    "comfyui*.service",
    "open-webui*.service",
    "triton*.service",
    "display-manager.service",
    "gdm*.service",
)
DEFAULT_CONTAINERS: Final = (
    "ollama*",
    "vllm*",
    "tgi*",
    "text-generation-inference*",
    "localai*",
    "local-ai*",
    "comfyui*",
    "open-webui*",
    "llama*",
    "triton*",
)
DEFAULT_MINERS: Final = (
    "xmrig*",
    "t-rex",
    "trex",
    "lolminer",
    "nbminer",
    "gminer",
    "miner",
    "phoenixminer",
    "ethminer",
    "nanominer",
    "teamredminer",
    "bzminer",
    "rigel",
    "srbminer*",
    "ccminer",
    "cpuminer*",
    "bminer",
    "claymore*",
    "excavator",
    "kawpowminer",
    "onezerominer",
)
DEFAULT_POOL_HOSTS: Final = (
    "nanopool.org",
    "2miners.com",
    "ethermine.org",
    "f2pool.com",
    "nicehash.com",
    "hashvault.pro",
    "supportxmr.com",
    "minexmr.com",
    "moneroocean.stream",
    "herominers.com",
    "unmineable.com",
    "flypool.org",
    "woolypooly.com",
    "c3pool.com",
    "kryptex.network",
    "miningpoolhub.com",
    "hiveon.net",
    "zergpool.com",
    "viabtc.com",
    "antpool.com",
)
DEFAULT_POOL_PORTS: Final = (3333, 4444, 5555, 6666, 7777, 8888, 9999, 14433, 14444, 45560, 45700)
MINING_ARGS: Final = ("--algo", "-algo", "--coin", "--pool", "--donate-level", "--worker")
STRATUM: Final = ("stratum+tcp://", "stratum+ssl://", "stratum1+tcp://", "stratum2+tcp://")
MAX_FDS: Final = 4096
"""Most file descriptors of one process looked at for sockets."""
MAX_NET_BYTES: Final = 4 << 20
"""Most bytes of /proc/PID/net/tcp{,6} read."""

Port = Annotated[int, Field(ge=1, le=65535)]


class GpuWorkloadConfig(DetectorConfigBase):
    """``[detectors.gpu_workload]``."""

    max_keys: MaxKeys = 4096
    exes: tuple[str, ...] = DEFAULT_EXES
    """Executable names (shell patterns) of allowed GPU workloads."""
    units: tuple[str, ...] = DEFAULT_UNITS
    """systemd units (shell patterns) whose processes may use a GPU (e.g. python under them)."""
    containers: tuple[str, ...] = DEFAULT_CONTAINERS
    """Container names (shell patterns) that may use a GPU."""
    extra_exes: tuple[str, ...] = ()
    extra_units: tuple[str, ...] = ()
    extra_containers: tuple[str, ...] = ()
    miner_names: tuple[str, ...] = DEFAULT_MINERS
    pool_hosts: tuple[str, ...] = DEFAULT_POOL_HOSTS
    pool_ports: tuple[Port, ...] = DEFAULT_POOL_PORTS
    proc_root: str = "/proc"
    refire: Window = 3600.0
    """A process is reported again after this long if it is still on a GPU."""
    recheck: Window = 60.0
    """How often an unknown process's connections are looked at again for a pool."""


def _matches(patterns: Sequence[str], value: str | None) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


class _Seen:
    __slots__ = ("checked", "mining", "reported")

    def __init__(self, reported: float, checked: float, mining: bool) -> None:
        self.reported = reported
        self.checked = checked
        self.mining = mining


class GpuWorkloadDetector(Detector):
    """MEDIUM for an unknown GPU workload, HIGH when it shows signs of mining."""

    name = "gpu_workload"
    consumes = (GpuSample,)

    def __init__(self, config: GpuWorkloadConfig) -> None:
        super().__init__(config)
        self._cfg = config
        self._exes = (*config.exes, *config.extra_exes)
        self._units = (*config.units, *config.extra_units)
        self._containers = (*config.containers, *config.extra_containers)
        self._ports = frozenset(config.pool_ports)
        self._root = config.proc_root
        self._seen: OrderedDict[tuple[int, int | None], _Seen] = OrderedDict()
        self.evicted = 0

    # ------------------------------------------------------------------ rule

    def observe(self, event: Event) -> Finding | None:
        found = self.observe_many((event,))
        return found[0][1] if found else None

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        for i, event in enumerate(events):
            if not isinstance(event, GpuSample) or not event.processes:
                continue
            for proc in event.processes:
                found = self._check(event, proc)
                if found is not None:
                    out.append((i, found))
                    break  # one finding per event; the next sample reports the next process
        return out

    def allowed(self, proc: GpuProcessSample) -> bool:
        """Whether the process belongs to an allowed AI workload."""
        a = proc.attribution
        if a is None:
            return True  # cannot tell: not reported
        names = (base_name(a.exe), base_name(a.cmdline[0]) if a.cmdline else "")
        if any(_matches(self._exes, n) for n in names if n):
            return True
        if _matches(self._units, a.unit):
            return True
        return a.container_id is not None and _matches(
            self._containers, a.container_name or a.container_id
        )

    def _check(self, sample: GpuSample, proc: GpuProcessSample) -> Finding | None:
        a = proc.attribution
        if a is None or proc.count > 1 or self.allowed(proc):
            return None
        key = (proc.pid, a.start_time)
        ts = sample.ts
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            if ts - seen.reported < self._cfg.refire and (
                seen.mining or ts - seen.checked < self._cfg.recheck
            ):
                return None
            if ts - seen.reported < self._cfg.refire:
                seen.checked = ts
                signs = self.mining_signs(proc)
                if not signs:
                    return None
                seen.mining = True
                seen.reported = ts
                return self._finding(sample, proc, signs)
        signs = self.mining_signs(proc)
        if seen is None:
            self._seen[key] = _Seen(ts, ts, bool(signs))
            while len(self._seen) > self._cfg.max_keys:
                self._seen.popitem(last=False)
                self.evicted += 1
        else:
            seen.reported = seen.checked = ts
            seen.mining = bool(signs)
        return self._finding(sample, proc, signs)

    def _finding(self, sample: GpuSample, proc: GpuProcessSample, signs: list[str]) -> Finding:
        target = workload_target(proc)
        a = proc.attribution
        what = "cryptocurrency miner" if signs else "unknown GPU workload"
        message = f"{what} on GPU {sample.index}: {describe(proc)}"
        if signs:
            message += f" ({signs[0]})"
        evidence = [
            gpu_evidence(sample),
            f"process {describe(proc)}",
            f"cmdline {command_line(a)}",
            *signs[:4],
        ]
        if proc.used_memory_bytes is not None:
            evidence.append(f"gpu memory {proc.used_memory_bytes} bytes")
        if proc.sm_util is not None:
            evidence.append(f"sm {proc.sm_util:.0%}")
        return Finding(
            ts=sample.ts,
            detector=self.name,
            severity=Severity.HIGH if signs else Severity.MEDIUM,
            client=None,
            key=target.text,
            count=1,
            window=0.0,
            message=message,
            evidence=tuple(evidence),
            target=target,
        )

    # ------------------------------------------------------------------ mining

    def mining_signs(self, proc: GpuProcessSample) -> list[str]:
        """What in the process looks like mining (empty: nothing)."""
        a = proc.attribution
        if a is None:
            return []
        signs: list[str] = []
        names = {base_name(a.exe).lower(), base_name(a.cmdline[0]).lower() if a.cmdline else ""}
        for name in sorted(n for n in names if n):
            if _matches(self._cfg.miner_names, name):
                signs.append(f"miner name {escape(name)[:64]}")
        args = a.cmdline[1:]
        for arg in args:
            low = arg.lower()
            if low.startswith(STRATUM) or "stratum+" in low:
                signs.append(f"pool URL argument {escape(arg)[:120]}")
            elif low.split("=", 1)[0] in MINING_ARGS:
                signs.append(f"mining argument {escape(arg)[:64]}")
            elif any(host in low for host in self._cfg.pool_hosts):
                signs.append(f"pool host argument {escape(arg)[:120]}")
        if not signs and self._ports:
            signs.extend(self._pool_connections(proc.pid))
        return signs

    def _pool_connections(self, pid: int) -> list[str]:
        """``connection to port 3333`` for each TCP connection of ``pid`` to a pool port."""
        base = f"{self._root}/{pid}"
        inodes: set[str] = set()
        try:
            with os.scandir(f"{base}/fd") as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_FDS:
                        break
                    try:
                        link = os.readlink(entry.path)  # noqa: PTH115 - str paths
                    except OSError:
                        continue
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        except OSError:
            return []
        if not inodes:
            return []
        out: list[str] = []
        for table in ("tcp", "tcp6"):
            for remote_port, inode in _tcp_connections(f"{base}/net/{table}"):
                if inode in inodes and remote_port in self._ports:
                    out.append(f"connection to mining-pool port {remote_port} ({table})")
        return sorted(set(out))

    # ------------------------------------------------------------------ upkeep

    def expire(self, now: float) -> int:
        """Forget processes not reported for ``refire``."""
        old = [k for k, s in self._seen.items() if now - s.reported > self._cfg.refire]
        for key in old:
            del self._seen[key]
        return len(old)

    def tracked_keys(self) -> int:
        return len(self._seen)

    def window_counts(self) -> tuple[int, int]:
        return self.evicted, 0


_ESTABLISHED_OR_OPENING: Final = frozenset({"01", "02"})  # ESTABLISHED, SYN_SENT


def _tcp_connections(path: str) -> list[tuple[int, str]]:
    """``(remote port, socket inode)`` of the established or opening connections in a
    ``/proc/net/tcp``-format table; empty when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks: list[bytes] = []
        size = 0
        while size < MAX_NET_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    out: list[tuple[int, str]] = []
    for line in b"".join(chunks).decode("ascii", "replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] not in _ESTABLISHED_OR_OPENING:
            continue
        _, _, port = fields[2].rpartition(":")
        try:
            out.append((int(port, 16), fields[9]))
        except ValueError:
            continue
    return out


REGISTRY.register("gpu_workload", GpuWorkloadConfig, GpuWorkloadDetector)
