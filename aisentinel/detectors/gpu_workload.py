"""``gpu_workload``: a process on a GPU that is not a known AI service; mining raises it.

Each process of each :class:`~aisentinel.events.GpuSample` is checked against the
workload allowlist: its systemd unit (``units``), its container's name
(``containers``), its executable's name (``exes``) or, for a Python interpreter, the
program it runs (``programs``), as shell-style patterns. The executable is the real
one, the ``/proc/PID/exe`` link, or where that cannot be read (another user's process
under the shipped unit) the command name from ``/proc/PID/stat``, which the kernel sets
to the executed file's name (15 characters at most: a pattern matches a 15-character
name by its first 15); never ``argv[0]``, which the process chooses. A Python program is
its ``-m`` module, its script (patterns with a ``/`` match the script as written, the
others its file name) or the title it gave itself (vLLM's ``VLLM::EngineCore``): all of
that is what the process says of itself, like a script's name. A process that matches
none is an unknown GPU workload: a MEDIUM finding about the workload
(``Finding.target`` is a :class:`~aisentinel.events.WorkloadTarget`: the container,
the service, or the process), with the GPU, its attribution and command line.

Signs of cryptocurrency mining make it HIGH, and they are looked for in every process,
allowed or not: a miner inside an allowed unit or container (what a remote code
execution in Ollama would start) is reported, about that unit or container, with what
allowed it. The signs: a known miner's name (``miner_names``) as the executable, its
command name or first argument, a mining argument (``--algo``, ``--coin``, a
``stratum+tcp://`` URL, a pool host name from ``pool_hosts``) in
``/proc/PID/cmdline``, or an established or opening TCP connection from the process to
a mining-pool port (``pool_ports``), found by matching the process's socket inodes
(``/proc/PID/fd`` -> ``socket:[inode]``) with ``/proc/PID/net/tcp`` and ``tcp6``
(the process's own network namespace); for an allowed process, connections to a
loopback address do not count (its own helpers talk to each other there, on ports
that may be a pool's). Where ``/proc/PID/fd`` cannot be read (another user's process,
the daemon not root), a connection from a socket of the process's user may be any of
that user's processes (``ollama serve`` pulling from a URL a client gave it): it is
never a sign, nothing for an allowed process, and for an unknown one a hint told in its
MEDIUM finding. ``proc_root`` points elsewhere in tests.

A process is reported once per ``refire`` (keyed by pid and start time); one not seen
mining, allowed or not, is looked at again every ``recheck`` for a connection opened
later, and reported (HIGH) once it shows one. A process whose attribution changes (an
exec, even into a program of the same name, or a rewritten command line: the
attributor reads them at every sample) is judged again at once: a mining sign is
reported then, and so is an allowed process that is no longer allowed (once per
``refire``: a title that keeps changing is not a finding per change). At most
``max_keys`` processes are remembered.

A process without an attribution (its ``/proc/PID`` cannot be read: the daemon runs in
another pid namespace, ``/proc`` is mounted with ``hidepid``, the unit hides other
users' processes, or the process is gone while its GPU context is held) is an unknown
workload the daemon cannot name: listed by NVML in a later sample too (not a process
that exited in between), it is a MEDIUM finding keyed ``pid:N`` with no target (an
alert; nothing can be frozen by a pid the daemon cannot see), once per ``refire``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Annotated, Final, NamedTuple

from prometheus_client.core import Metric
from pydantic import Field

from aisentinel.detectors.base import REGISTRY, Detector, DetectorConfigBase
from aisentinel.detectors.common import MaxKeys, Window
from aisentinel.detectors.gpu_common import (
    base_name,
    command_line,
    describe,
    gpu_evidence,
    real_exe,
    workload_target,
)
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Event,
    Finding,
    GpuProcessSample,
    GpuSample,
    ProcessAttribution,
    Severity,
)
from aisentinel.metrics import counter
from aisentinel.textsafe import escape

DEFAULT_EXES: Final = (
    "ollama",
    "ollama_llama_server",
    "ollama-runner",
    "vllm",
    "VLLM::*",
    "sglang::*",
    "llama-server",
    "llama-cli",
    "llama.cpp*",
    "text-generation-launcher",
    "text-generation-server",
    "text-generation-router",
    "local-ai",
    "localai",
    "llama-cpp-*",
    "comfyui",
    "tritonserver",
    "triton_python_backend_stub",
    "nvidia-smi",
    "nvidia-persistenced",
    "Xorg",
    "Xwayland",
    "gnome-shell",
)
"""Executable names; ``VLLM::*`` and ``sglang::*`` are the command names vLLM's and
SGLang's engine processes give themselves, seen where the executable cannot be read."""
DEFAULT_PROGRAMS: Final = (
    "vllm",
    "vllm.*",
    "VLLM::*",
    "sglang",
    "sglang.*",
    "sglang::*",
    "text-generation-server",
    "llama_cpp.server",
    "open-webui",
    "*/[Cc]omfy[Uu][Ii]/main.py",
)
"""What a Python interpreter runs: ``vllm serve`` (the ``vllm`` script), ``python -m
vllm.entrypoints.openai.api_server``, vLLM's engine and workers (``VLLM::EngineCore``),
``python -m sglang.launch_server`` and its ``sglang::scheduler``, TGI's shards
(``text-generation-server serve``), ``python -m llama_cpp.server``, ``open-webui serve``,
and ComfyUI by its path (``python /opt/ComfyUI/main.py``): a bare ``main.py`` could be
anything, so ``cd ComfyUI && python main.py`` needs ``extra_programs = ["main.py"]``, or
better a ``comfyui*`` unit or container."""
INTERPRETERS: Final = ("python", "python[0-9]*", "pypy*")
"""Executables whose program is read from their command line, in Python's syntax."""
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
COMM_MAX: Final = 15
"""Longest command name (``TASK_COMM_LEN`` - 1): a longer executable's name is cut."""
MAX_FDS: Final = 4096
"""Most file descriptors of one process looked at for sockets."""
MAX_NET_BYTES: Final = 4 << 20
"""Most bytes of /proc/PID/net/tcp{,6} read."""

Port = Annotated[int, Field(ge=1, le=65535)]


class GpuWorkloadConfig(DetectorConfigBase):
    """``[detectors.gpu_workload]``."""

    max_keys: MaxKeys = 4096
    exes: tuple[str, ...] = DEFAULT_EXES
    """Executable names (shell patterns) of allowed GPU workloads: the real executable's
    name, or its command name where the executable cannot be read; never ``argv[0]``."""
    programs: tuple[str, ...] = DEFAULT_PROGRAMS
    """What a Python interpreter may run (shell patterns): its ``-m`` module, its script
    (as written with a ``/`` in the pattern, else by file name) or its process title."""
    units: tuple[str, ...] = DEFAULT_UNITS
    """systemd units (shell patterns) whose processes may use a GPU (e.g. python under them)."""
    containers: tuple[str, ...] = DEFAULT_CONTAINERS
    """Container names (shell patterns) that may use a GPU."""
    extra_exes: tuple[str, ...] = ()
    extra_programs: tuple[str, ...] = ()
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


def _name_matches(patterns: Sequence[str], name: str, cut: bool) -> bool:
    """Whether an executable's ``name`` matches; a command name ``cut`` at 15 characters
    matches a pattern by the pattern's first 15 characters too."""
    return _matches(patterns, name) or (
        cut and any(fnmatch.fnmatchcase(name, p[:COMM_MAX]) for p in patterns)
    )


def _program_matches(patterns: Sequence[str], program: str) -> bool:
    """A pattern with a ``/`` matches a script's path as written; one without, a module,
    a title or a script's file name (but not a path)."""
    return any(fnmatch.fnmatchcase(program, p) for p in patterns if ("/" in p) == ("/" in program))


def executable_name(a: ProcessAttribution) -> tuple[str, bool]:
    """``(name, cut)``: the real executable's file name (``/proc/PID/exe``, without the
    `` (deleted)`` of a replaced file), else the command name (``cut`` when it may be
    the first 15 characters of a longer one); ``""`` when neither is known."""
    if a.exe:
        return base_name(real_exe(a.exe)), False
    comm = a.comm or ""
    return comm, len(comm) >= COMM_MAX


def python_program(cmdline: Sequence[str]) -> tuple[str, ...]:
    """What a Python interpreter's command line runs: its title (``argv[0]`` when it is
    not an interpreter's path: vLLM's ``VLLM::EngineCore``), then its ``-m`` module or
    its script as written and by file name; nothing for ``-c``, stdin or an unparsable
    line."""
    if not cmdline:
        return ()
    out: list[str] = []
    if not _matches(INTERPRETERS, base_name(cmdline[0])):
        out.append(cmdline[0])
    args = cmdline[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            script = args[i + 1] if arg == "--" and i + 1 < len(args) else arg
            if script not in ("--", "-"):
                out += (script, base_name(script)) if "/" in script else (script,)
            break
        if arg == "-":
            break
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        flags = arg[1:]
        taken = False
        for j, flag in enumerate(flags):
            rest = flags[j + 1 :]
            if flag == "m":
                module = rest or (args[i + 1] if i + 1 < len(args) else "")
                return (*out, module) if module else tuple(out)
            if flag == "c":
                return tuple(out)
            if flag in "WX":
                taken = not rest  # -X dev, -Wignore
                break
        i += 2 if taken else 1
    return tuple(out)


def _own(patterns: tuple[str, ...], builtin: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in patterns if p not in builtin)


class _Patterns(NamedTuple):
    """Allowlist patterns of each kind: see :class:`GpuWorkloadConfig`."""

    units: tuple[str, ...]
    containers: tuple[str, ...]
    exes: tuple[str, ...]
    programs: tuple[str, ...]

    def match(self, a: ProcessAttribution) -> str | None:
        """What allows the process (``unit ollama.service``, ``executable ollama``,
        ``python3.11 program vllm``), escaped; None when nothing does."""
        if _matches(self.units, a.unit):
            return f"unit {escape(a.unit or '')[:120]}"
        if a.container_id is not None:
            name = a.container_name or a.container_id
            if _matches(self.containers, name):
                return f"container {escape(name)[:120]}"
        name, cut = executable_name(a)
        if not name:
            return None
        if _name_matches(self.exes, name, cut):
            return f"executable {escape(name)[:64]}"
        if self.programs and _name_matches(INTERPRETERS, name, cut):
            for program in python_program(a.cmdline):
                if _program_matches(self.programs, program):
                    return f"{escape(name)[:64]} program {escape(program)[:120]}"
        return None


class _Seen:
    __slots__ = ("allowed", "attribution", "checked", "hinted", "mining", "reported", "unknown")

    def __init__(
        self,
        reported: float,
        checked: float,
        mining: bool,
        attribution: ProcessAttribution,
        allowed: bool,
        *,
        hinted: bool,
    ) -> None:
        self.reported = reported
        self.checked = checked
        self.mining = mining
        self.attribution = attribution
        """What the process was when last judged: an exec (same pid and start time)
        gives another attribution, judged at once."""
        self.allowed = allowed
        self.hinted = hinted
        """Whether a pool connection of its user (not its own) was reported."""
        self.unknown = reported if not allowed else float("-inf")
        """When it was last reported as an unknown workload (-inf: never): an allowed
        process that becomes unknown is reported at once, but once per ``refire``."""


class GpuWorkloadDetector(Detector):
    """MEDIUM for an unknown GPU workload, HIGH when it shows signs of mining."""

    name = "gpu_workload"
    consumes = (GpuSample,)

    wants_shared = True

    def __init__(self, config: GpuWorkloadConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._allow = _Patterns(
            units=(*config.units, *config.extra_units),
            containers=(*config.containers, *config.extra_containers),
            exes=(*config.exes, *config.extra_exes),
            programs=(*config.programs, *config.extra_programs),
        )
        # The operator's own entries: not the built-in AI services, whose GPU time the
        # API they serve should explain.
        self._declared = _Patterns(
            units=_own(self._allow.units, DEFAULT_UNITS),
            containers=_own(self._allow.containers, DEFAULT_CONTAINERS),
            exes=_own(self._allow.exes, DEFAULT_EXES),
            programs=_own(self._allow.programs, DEFAULT_PROGRAMS),
        )
        self._ports = frozenset(config.pool_ports)
        self._root = config.proc_root
        self._seen: OrderedDict[tuple[int, int | None], _Seen] = OrderedDict()
        self._unseen: OrderedDict[int, list[float]] = OrderedDict()
        """pid -> [last seen, last reported (-inf: not yet)] of unattributed processes."""
        self.evicted = 0
        self.fd_denied = 0
        """Times a process's ``/proc/PID/fd`` could not be read (not root): its own
        pool connections unknown, its user's are a hint about an unknown workload."""
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        shared.gpu_expected = self.declared_by

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
        return a is not None and self.allowed_by(a) is not None

    def allowed_by(self, a: ProcessAttribution) -> str | None:
        """What allows the process (``unit ollama.service``, ``executable ollama``,
        ``python3.11 program vllm``), escaped; None when nothing does."""
        return self._allow.match(a)

    def declared_by(self, a: ProcessAttribution) -> str | None:
        """What allows the process among the operator's own entries (``extra_*``, or
        ``units``... where they are not the built-in ones); None for the built-in AI
        services and for a process nothing allows."""
        return self._declared.match(a)

    def _check(self, sample: GpuSample, proc: GpuProcessSample) -> Finding | None:
        a = proc.attribution
        if proc.count > 1:
            return None
        if a is None:
            return self._unattributed(sample, proc)
        allowed = self.allowed_by(a)
        key = (proc.pid, a.start_time)
        ts = sample.ts
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            changed = seen.attribution is not a and seen.attribution != a
            if changed:  # an exec, or a rewritten command line: another program now
                seen.attribution = a
            became_unknown = (
                changed
                and seen.allowed
                and allowed is None
                and not seen.mining
                and ts - seen.unknown >= self._cfg.refire
            )  # reported below, at once; a title that keeps changing, once per refire
            if ts - seen.reported < self._cfg.refire and not became_unknown:
                if seen.mining or (not changed and ts - seen.checked < self._cfg.recheck):
                    return None
                seen.checked = ts
                seen.allowed = allowed is not None
                signs, hints = self._judge(proc, allowed=allowed is not None)
                if signs:
                    seen.mining = True
                    seen.reported = ts
                    return self._finding(sample, proc, signs, allowed)
                if hints and not seen.hinted:
                    seen.hinted = True
                    return self._finding(sample, proc, [], allowed, hints)
                return None
        signs, hints = self._judge(proc, allowed=allowed is not None)
        if seen is None:
            self._seen[key] = _Seen(ts, ts, bool(signs), a, allowed is not None, hinted=bool(hints))
            while len(self._seen) > self._cfg.max_keys:
                self._seen.popitem(last=False)
                self.evicted += 1
        else:
            seen.reported = seen.checked = ts
            seen.mining = bool(signs)
            seen.allowed = allowed is not None
            seen.hinted = bool(hints)
            if allowed is None:
                seen.unknown = ts
        if allowed is not None and not signs:
            return None  # an allowed workload: its refire clock restarts, unreported
        return self._finding(sample, proc, signs, allowed, hints)

    def _unattributed(self, sample: GpuSample, proc: GpuProcessSample) -> Finding | None:
        """MEDIUM for a process whose ``/proc/PID`` cannot be read, from the second
        sample that lists it (one that exited in between is not reported), once per
        ``refire``."""
        ts = sample.ts
        seen = self._unseen.get(proc.pid)
        if seen is None:
            self._unseen[proc.pid] = [ts, float("-inf")]
            while len(self._unseen) > self._cfg.max_keys:
                self._unseen.popitem(last=False)
                self.evicted += 1
            return None
        self._unseen.move_to_end(proc.pid)
        last, reported = seen
        seen[0] = ts
        if ts <= last or ts - reported < self._cfg.refire:
            return None
        seen[1] = ts
        evidence = [
            gpu_evidence(sample),
            f"pid {proc.pid}: no readable /proc/{proc.pid} (another pid namespace, "
            "hidepid, or ProtectProc=invisible; or the process is gone and its GPU "
            "context is held: a leaked context, a zombie): executable, user, unit and "
            "container unknown",
        ]
        if proc.used_memory_bytes is not None:
            evidence.append(f"gpu memory {proc.used_memory_bytes} bytes")
        if proc.sm_util is not None:
            evidence.append(f"sm {proc.sm_util:.0%}")
        return Finding(
            ts=ts,
            detector=self.name,
            severity=Severity.MEDIUM,
            client=None,
            key=f"pid:{proc.pid}",
            count=1,
            window=0.0,
            message=(
                f"unknown GPU workload on GPU {sample.index}: pid {proc.pid}, which the "
                "daemon cannot see in /proc (nothing to allow it by, nothing to act on)"
            ),
            evidence=tuple(evidence),
        )

    def _finding(
        self,
        sample: GpuSample,
        proc: GpuProcessSample,
        signs: list[str],
        allowed: str | None,
        hints: Sequence[str] = (),
    ) -> Finding:
        """HIGH with mining ``signs``, else MEDIUM (an unknown workload); ``hints``
        (pool connections of its user, maybe not its own) are told, never more."""
        target = workload_target(proc)
        a = proc.attribution
        what = "cryptocurrency miner" if signs else "unknown GPU workload"
        message = f"{what} on GPU {sample.index}: {describe(proc)}"
        if signs:
            message += f" ({signs[0]})"
        elif hints:
            message += f" (maybe mining: {hints[0]})"
        if allowed is not None:
            message += f", inside a workload allowed by {allowed}"
        evidence = [
            gpu_evidence(sample),
            f"process {describe(proc)}",
            f"cmdline {command_line(a)}",
            *signs[:4],
            *([] if signs else hints[:4]),
        ]
        if a is not None:
            exe = escape(a.exe)[:200] if a.exe else "unreadable"
            comm = escape(a.comm)[: COMM_MAX * 4] if a.comm else "?"
            evidence.append(f"pid {proc.pid} executable {exe} command name {comm}")
        if allowed is not None:
            evidence.append(f"allowed by {allowed}; mining signs override it")
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

    def mining_signs(self, proc: GpuProcessSample, *, allowed: bool = False) -> list[str]:
        """What in the process looks like mining (empty: nothing); for an ``allowed``
        process, connections to loopback addresses do not count."""
        return self._judge(proc, allowed=allowed)[0]

    def _judge(self, proc: GpuProcessSample, *, allowed: bool) -> tuple[list[str], list[str]]:
        """``(signs, hints)``: what in the process looks like mining, and, where its
        sockets cannot be listed (another user's process, the daemon not root) and it is
        not ``allowed`` nor root's, the connections to a pool port from sockets of its
        user: any process of that user may hold them (a browser, a client that made a
        service fetch from a URL), so they are a hint about an unknown workload, never a
        sign, and nothing about an allowed one."""
        a = proc.attribution
        if a is None:
            return [], []
        signs: list[str] = []
        names = {
            base_name(a.exe).lower(),
            (a.comm or "").lower(),
            base_name(a.cmdline[0]).lower() if a.cmdline else "",
        }
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
        if signs or not self._ports:
            return signs, []
        found = self._pool_connections(proc.pid, loopback=not allowed)
        if found is not None:
            return found, []
        if allowed or a.uid is None or a.uid == 0:
            return [], []
        return [], self._pool_connections_of_user(f"{self._root}/{proc.pid}", a.uid)

    def _pool_connections(self, pid: int, *, loopback: bool = True) -> list[str] | None:
        """``connection to port 3333`` for each TCP connection of ``pid`` to a pool port
        (to a loopback address only when ``loopback``); None when its sockets cannot be
        listed.

        The process's sockets are its ``/proc/PID/fd`` links, which a daemon that is not
        root may not read for another user's process (the shipped unit)."""
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
        except PermissionError:
            self.fd_denied += 1
            return None
        except OSError:
            return []
        if not inodes:
            return []
        out: list[str] = []
        for table in ("tcp", "tcp6"):
            for remote_port, inode, local, _owner in _tcp_connections(f"{base}/net/{table}"):
                if inode in inodes and remote_port in self._ports and (loopback or not local):
                    out.append(f"connection to mining-pool port {remote_port} ({table})")
        return sorted(set(out))

    def _pool_connections_of_user(self, base: str, uid: int) -> list[str]:
        """Connections to a pool port (not on loopback) from sockets of ``uid`` in the
        network namespace of the process at ``base`` (the tables are world-readable and
        name each socket's owner)."""
        out: list[str] = []
        for table in ("tcp", "tcp6"):
            for remote_port, _inode, local, owner in _tcp_connections(f"{base}/net/{table}"):
                if owner == uid and remote_port in self._ports and not local:
                    out.append(
                        f"connection to mining-pool port {remote_port} ({table}) from a "
                        f"socket of its user (uid {uid}), maybe another process's: its "
                        "own sockets are unreadable"
                    )
        return sorted(set(out))

    # ------------------------------------------------------------------ upkeep

    def carry_over(self, old: Detector) -> None:
        super().carry_over(old)
        if isinstance(old, GpuWorkloadDetector):
            self.fd_denied += old.fd_denied

    def collect(self) -> Iterator[Metric]:
        yield from super().collect()
        yield counter(
            "aisentinel_gpu_socket_reads_denied",
            "Times gpu_workload could not list a GPU process's sockets (/proc/PID/fd of "
            "another user's process, the daemon not root): for an unknown workload, "
            "its user's pool connections were told as a hint; none for an allowed one.",
            {},
            self.fd_denied,
        )

    def expire(self, now: float) -> int:
        """Forget processes not reported for ``refire``."""
        old = [k for k, s in self._seen.items() if now - s.reported > self._cfg.refire]
        for key in old:
            del self._seen[key]
        gone = [pid for pid, (last, _) in self._unseen.items() if now - last > self._cfg.refire]
        for pid in gone:
            del self._unseen[pid]
        return len(old) + len(gone)

    def tracked_keys(self) -> int:
        return len(self._seen) + len(self._unseen)

    def window_counts(self) -> tuple[int, int]:
        return self.evicted, 0


_ESTABLISHED_OR_OPENING: Final = frozenset({"01", "02"})  # ESTABLISHED, SYN_SENT
_LISTEN: Final = "0A"


def _loopback(hex_address: str) -> bool:
    """Whether a ``/proc/net/tcp{,6}`` address (hex, 32-bit words in host byte order) is
    a loopback address (``127.0.0.0/8``, ``::1``, ``::ffff:127.0.0.0/104``)."""
    try:
        raw = bytes.fromhex(hex_address)
    except ValueError:
        return False
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _tcp_connections(path: str) -> list[tuple[int, str, bool, int | None]]:
    """``(remote port, socket inode, remote is loopback, socket's uid)`` of the
    established or opening outgoing connections in a ``/proc/net/tcp``-format table;
    empty when it cannot be read. A connection from a port something listens on is an
    accepted one: its remote port is a client's source port, any number (a pool port
    among them)."""
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
    listening: set[str] = set()
    connected: list[tuple[str, tuple[int, str, bool, int | None]]] = []
    for line in b"".join(chunks).decode("ascii", "replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_port = fields[1].rpartition(":")[2]
        if fields[3] == _LISTEN:
            listening.add(local_port)
        elif fields[3] in _ESTABLISHED_OR_OPENING:
            address, _, port = fields[2].rpartition(":")
            try:
                remote = int(port, 16)
            except ValueError:
                continue
            owner = int(fields[7]) if fields[7].isdigit() else None
            connected.append((local_port, (remote, fields[9], _loopback(address), owner)))
    return [conn for local, conn in connected if local not in listening]


REGISTRY.register("gpu_workload", GpuWorkloadConfig, GpuWorkloadDetector)
