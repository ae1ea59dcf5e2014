"""The ``throttle`` responder: lower a workload's CPU quota, or freeze it, until expiry.

It handles decisions about workloads (:class:`~aisentinel.events.WorkloadTarget`)
with the action ``throttle`` (the CPU quota drops to ``cpu_percent`` of one CPU) or
``freeze`` (every process of the workload is stopped), and lifts them when they end.
Kill is never done: a frozen workload is thawed on expiry, nothing is terminated.

How each kind of workload is acted on:

- a **container** (``container:<id or name>``): the Docker Engine API through the
  ``docker`` SDK (the ``docker`` extra, imported only when a container target comes):
  ``container.update(cpu_quota=..., cpu_period=...)``, ``container.pause()`` /
  ``unpause()``;
- a **systemd unit** (``unit:ollama.service``): ``systemctl set-property --runtime
  UNIT CPUQuota=N%`` (a runtime drop-in, gone at reboot) and ``systemctl freeze`` /
  ``thaw``, through the command runner (argument lists, never a shell);
- a **cgroup** (``cgroup:/system.slice/x.service``) or a **process**
  (``pid:1234``, resolved to its cgroups through ``/proc/PID/cgroup``): the cgroup
  files directly. cgroup v2: ``cpu.max`` (``"QUOTA PERIOD"``) and ``cgroup.freeze``;
  cgroup v1 (or the v1 controllers of a hybrid host): ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` and ``freezer.state``. v2 files are used where the cgroup
  has them, else the v1 controller's.

What was there before is remembered per target and written back when the decision
ends. After a restart the memory is gone: a reconcile re-applies the active
decisions and, when the value found is the one aisentinel writes (its own earlier
throttle), the undo goes to "no limit" / "thawed" instead of back to it.

Refused, whatever the decision says: the root cgroup, any cgroup that holds
aisentinel itself (its own, or one above it: freezing it would stop the daemon that
thaws), pid 1, systemd's top-level slices and ``init.scope``, and any text that is
not a plain unit name, container id or cgroup path (nothing from a log line becomes
an option or a path outside the cgroup tree).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandError, CommandRunner
from aisentinel.configtypes import Interval
from aisentinel.events import Action, Decision, WorkloadKey, WorkloadTarget
from aisentinel.responders.base import (
    REGISTRY,
    BufferedResponder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
)

log = structlog.get_logger(__name__)

Undo = Callable[[], object]
"""Puts back what an enforcement changed."""

_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]{1,255}\.(service|scope|slice|socket|mount|swap)")
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_REFUSED_UNITS = frozenset(
    {"-.slice", "system.slice", "user.slice", "machine.slice", "init.scope", "aisentinel.service"}
)
_UNDONE_KEEP = 4096
"""Lifted enforcements remembered, so a retried delete does not undo twice."""
_NO_QUOTA_V1 = "-1"
_DEFAULT_PERIOD_US = 100_000


class ThrottleConfig(ResponderConfigBase):
    """``[responders.throttle]``."""

    cpu_percent: int = Field(default=10, ge=1, le=10_000)
    """A throttled workload's CPU quota, in percent of one CPU; 1-10000."""
    cpu_period_us: int = Field(default=100_000, ge=1_000, le=1_000_000)
    """The CFS period the quota is measured in, microseconds; 1000-1000000."""
    cgroup_root: Path = Path("/sys/fs/cgroup")
    """Where the cgroup file systems are mounted (a v2 root, or v1 controllers and
    ``unified`` below it)."""
    proc_root: Path = Path("/proc")
    """procfs, where ``PID/cgroup`` says which cgroups a process is in."""
    docker_url: str = Field(default="unix:///var/run/docker.sock", min_length=1, max_length=512)
    """The Docker Engine API endpoint."""
    timeout: Interval = 10.0
    """Time limit of one ``systemctl`` call or Docker API request; 10ms-1h."""


@dataclass(frozen=True, slots=True)
class CgroupDirs:
    """The directories of one cgroup in each hierarchy that has it (``None``: absent)."""

    v2: Path | None
    cpu_v1: Path | None
    freezer_v1: Path | None


class CgroupTree:
    """The host's cgroup layout under ``root``: a v2 root, or v1 controllers (plus
    ``unified``, the v2 part of a hybrid host)."""

    def __init__(self, root: Path, proc: Path) -> None:
        self.root = root
        self.proc = proc
        self.v2: Path | None = None
        if (root / "cgroup.controllers").exists():
            self.v2 = root
        elif (root / "unified" / "cgroup.controllers").exists():
            self.v2 = root / "unified"
        self.cpu_v1 = next(
            (d for d in (root / "cpu", root / "cpu,cpuacct") if (d / "cpu.cfs_period_us").exists()),
            None,
        )
        freezer = root / "freezer"
        self.freezer_v1 = freezer if (freezer / "cgroup.procs").exists() else None

    def describe(self) -> str:
        """``cgroup v2 at /sys/fs/cgroup`` or the v1 controllers found."""
        parts = []
        if self.v2 is not None:
            parts.append(f"cgroup v2 at {self.v2}")
        if self.cpu_v1 is not None:
            parts.append(f"v1 cpu at {self.cpu_v1}")
        if self.freezer_v1 is not None:
            parts.append(f"v1 freezer at {self.freezer_v1}")
        return ", ".join(parts) or f"no cgroup hierarchy under {self.root}"

    def for_path(self, rel: str) -> CgroupDirs:
        """The directories of the cgroup ``rel`` (a path like ``/system.slice/x.service``)."""
        clean = _clean_cgroup_path(rel)
        return CgroupDirs(
            v2=_existing(self.v2, clean),
            cpu_v1=_existing(self.cpu_v1, clean),
            freezer_v1=_existing(self.freezer_v1, clean),
        )

    def for_pid(self, pid: int) -> CgroupDirs:
        """The cgroups process ``pid`` is in, from ``/proc/PID/cgroup``."""
        v2 = cpu = freezer = None
        for controllers, rel in self._membership(pid):
            if controllers == "" and self.v2 is not None:
                v2 = _existing(self.v2, _clean_cgroup_path(rel))
            names = controllers.split(",")
            if "cpu" in names and self.cpu_v1 is not None:
                cpu = _existing(self.cpu_v1, _clean_cgroup_path(rel))
            if "freezer" in names and self.freezer_v1 is not None:
                freezer = _existing(self.freezer_v1, _clean_cgroup_path(rel))
        return CgroupDirs(v2, cpu, freezer)

    def own(self) -> list[Path]:
        """The cgroup directories aisentinel itself is in (never acted on, nor above)."""
        out = []
        for controllers, rel in self._membership(os.getpid()):
            names = controllers.split(",") if controllers else []
            base = self.v2 if not controllers else None
            if "cpu" in names:
                base = self.cpu_v1
            elif "freezer" in names:
                base = self.freezer_v1
            if base is not None:
                try:
                    out.append(base / _clean_cgroup_path(rel).lstrip("/"))
                except ResponderError:
                    continue
        return out

    def _membership(self, pid: int) -> list[tuple[str, str]]:
        path = self.proc / str(pid) / "cgroup"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise ResponderError(f"process {pid} is gone") from None
        except OSError as exc:
            raise ResponderError(f"cannot read {path}: {exc.strerror or exc}") from None
        out = []
        for line in text.splitlines():
            _num, sep, rest = line.partition(":")
            controllers, sep2, rel = rest.partition(":")
            if sep and sep2:
                out.append((controllers, rel))
        return out


def _clean_cgroup_path(rel: str) -> str:
    """``rel`` as a normalised absolute cgroup path; ``ResponderError`` for anything
    that could leave the tree (``..``), is relative, or is not plain text."""
    if not rel.startswith("/") or "\x00" in rel or not rel.isprintable():
        raise ResponderError(f"not a cgroup path: {rel!r}")
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ResponderError(f"not a cgroup path: {rel!r}")
    return "/" + "/".join(parts)


def _existing(base: Path | None, clean: str) -> Path | None:
    if base is None:
        return None
    path = base / clean.lstrip("/")
    return path if path.is_dir() else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise ResponderError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, value: str) -> None:
    try:
        with path.open("w", encoding="ascii") as fh:
            fh.write(value)
    except OSError as exc:
        raise ResponderError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from None


def _systemd_percent(text: str) -> int | None:
    """``CPUQuotaPerSecUSec`` (``500ms``, ``1.500000s``, ``infinity``) as a percent, or
    ``None`` when there is no quota (or it cannot be read)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|min)", text.strip())
    if match is None:
        return None
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}[match.group(2)]
    return max(1, round(float(match.group(1)) * scale * 100))


class ThrottleResponder(BufferedResponder):
    """Throttles and freezes containers, units, cgroups and processes; see the module doc."""

    name = "throttle"
    handles = frozenset({Action.THROTTLE, Action.FREEZE})

    def __init__(
        self, config: ThrottleConfig, *, clock: Clock, commands: CommandRunner | None = None
    ) -> None:
        super().__init__(config, clock=clock, commands=commands)
        self.cfg = config
        self.tree = CgroupTree(config.cgroup_root, config.proc_root)
        self.held: dict[str, tuple[Decision, Undo]] = {}
        """Enforcements in place, by target text, with how to undo each."""
        self._undone: OrderedDict[tuple[str, float], None] = OrderedDict()
        self._docker: Any = None

    @property
    def quota_us(self) -> int:
        """The CPU quota a throttle writes, per period."""
        return max(1_000, self.cfg.cpu_period_us * self.cfg.cpu_percent // 100)

    # ------------------------------------------------------------------ contract

    def commit(self) -> None:
        adds, deletes = self.take()
        errors: list[str] = []
        for decision in deletes:
            self._try(self._lift, decision, errors)
        for decision in adds:
            self._try(self._apply, decision, errors)
        if errors:
            raise ResponderError("; ".join(errors)[:1000])

    def reconcile(self, active: Sequence[Decision]) -> None:
        wanted = {
            d.target.text: d
            for d in active
            if isinstance(d.target, WorkloadTarget) and d.action in self.handles
        }
        errors: list[str] = []
        for text, (held, _undo) in list(self.held.items()):
            want = wanted.get(text)
            if want is None or want.action is not held.action:
                self._try(self._lift, held, errors)
        for decision in wanted.values():
            self._try(self._apply, decision, errors)
        log.info("throttle reconcile", active=len(wanted), held=len(self.held))
        if errors:
            raise ResponderError("; ".join(errors)[:1000])

    def health(self) -> ResponderHealth:
        tools = [self.tree.describe()]
        tools.append("systemctl" if self.commands.has("systemctl") else "no systemctl")
        has_sdk = importlib.util.find_spec("docker") is not None
        tools.append("docker SDK" if has_sdk else "no docker SDK")
        ok = self.tree.v2 is not None or self.tree.cpu_v1 is not None
        return ResponderHealth(ok=ok, detail=f"{len(self.held)} held; " + ", ".join(tools))

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    # ------------------------------------------------------------------ one operation

    def _try(self, op: Callable[[Decision], None], decision: Decision, errors: list[str]) -> None:
        try:
            op(decision)
        except ResponderError as exc:
            errors.append(str(exc))

    def _apply(self, decision: Decision) -> None:
        target = decision.target
        if not isinstance(target, WorkloadTarget) or decision.action not in self.handles:
            return
        current = self.held.get(target.text)
        if current is not None:
            if current[0].action is decision.action:
                self.held[target.text] = (decision, current[1])  # a newer decision, same effect
                return
            self._lift(current[0])
        freeze = decision.action is Action.FREEZE
        undo = self._enforce(target, freeze=freeze)
        self.held[target.text] = (decision, undo)
        log.info(
            "workload frozen" if freeze else "workload throttled",
            target=target.text,
            name=target.display,
            **({} if freeze else {"cpu_percent": self.cfg.cpu_percent}),
            detector=decision.detector,
        )

    def _lift(self, decision: Decision) -> None:
        target = decision.target
        if not isinstance(target, WorkloadTarget):
            return
        key = (target.text, decision.ts)
        current = self.held.get(target.text)
        if current is not None and current[0].action is decision.action:
            current[1]()
            del self.held[target.text]
        elif key in self._undone:
            return  # a retried batch: this one was lifted already
        elif current is None:
            self._reset(target, freeze=decision.action is Action.FREEZE)  # not known: restart
        else:
            return  # it holds another action now; lifting this one has nothing to undo
        self._undone[key] = None
        while len(self._undone) > _UNDONE_KEEP:
            self._undone.popitem(last=False)
        log.info(
            "workload thawed" if decision.action is Action.FREEZE else "workload throttle lifted",
            target=target.text,
            name=target.display,
        )

    def _enforce(self, target: WorkloadTarget, *, freeze: bool) -> Undo:
        key = target.identified_by
        if key is WorkloadKey.CONTAINER:
            return self._container(target.id, freeze=freeze)
        if key is WorkloadKey.UNIT:
            return self._unit(target.id, freeze=freeze)
        return self._cgroup(self._dirs(target), freeze=freeze)

    def _reset(self, target: WorkloadTarget, *, freeze: bool) -> None:
        """Undo an enforcement whose earlier values are not known: no limit, thawed."""
        try:
            undo = self._enforce_unknown(target, freeze=freeze)
        except ResponderError as exc:
            if "is gone" in str(exc) or "not found" in str(exc):
                return  # nothing left to undo
            raise
        undo()

    def _enforce_unknown(self, target: WorkloadTarget, *, freeze: bool) -> Undo:
        key = target.identified_by
        if key is WorkloadKey.CONTAINER:
            cid = self._container_id(target.id)
            if freeze:
                return lambda: self._docker_call(cid, "unpause", {})
            limits = {"cpu_quota": -1, "cpu_period": _DEFAULT_PERIOD_US}
            return lambda: self._docker_call(cid, "update", limits)
        if key is WorkloadKey.UNIT:
            unit = self._unit_name(target.id)
            if freeze:
                return lambda: self._systemctl("thaw", "--", unit)
            return lambda: self._systemctl("set-property", "--runtime", "--", unit, "CPUQuota=")
        dirs = self._dirs(target)
        if freeze:
            return self._cgroup_freeze(dirs, unknown=True)
        return self._cgroup_cpu(dirs, unknown=True)

    # ------------------------------------------------------------------ cgroups

    def _dirs(self, target: WorkloadTarget) -> CgroupDirs:
        if target.identified_by is WorkloadKey.PID:
            pid = int(target.id)
            if pid <= 1 or pid == os.getpid():
                raise ResponderError(f"refused: pid {pid} is init or aisentinel itself")
            dirs = self.tree.for_pid(pid)
        else:
            dirs = self.tree.for_path(target.id)
        own = self.tree.own()
        for d in (dirs.v2, dirs.cpu_v1, dirs.freezer_v1):
            if d is None:
                continue
            if d in (self.tree.v2, self.tree.cpu_v1, self.tree.freezer_v1):
                raise ResponderError(f"refused: {target.text} is the root cgroup")
            if any(mine == d or d in mine.parents for mine in own):
                raise ResponderError(f"refused: {target.text} holds aisentinel itself ({d})")
        return dirs

    def _cgroup(self, dirs: CgroupDirs, *, freeze: bool) -> Undo:
        return self._cgroup_freeze(dirs) if freeze else self._cgroup_cpu(dirs)

    def _cgroup_cpu(self, dirs: CgroupDirs, *, unknown: bool = False) -> Undo:
        period = self.cfg.cpu_period_us
        if dirs.v2 is not None and (dirs.v2 / "cpu.max").exists():
            path = dirs.v2 / "cpu.max"
            mine = f"{self.quota_us} {period}"
            before = "max" if unknown else _read(path)
            if before == mine:
                before = "max"  # our own earlier throttle (a restart): undo means no limit
            if not unknown:
                _write(path, mine)
            return lambda: _write(path, before)
        if dirs.cpu_v1 is not None:
            quota = dirs.cpu_v1 / "cpu.cfs_quota_us"
            per = dirs.cpu_v1 / "cpu.cfs_period_us"
            old_q = _NO_QUOTA_V1 if unknown else _read(quota)
            old_p = str(period) if unknown else _read(per)
            if old_q == str(self.quota_us) and old_p == str(period):
                old_q = _NO_QUOTA_V1

            def undo() -> None:
                _write(quota, _NO_QUOTA_V1)
                _write(per, old_p)
                _write(quota, old_q)

            if not unknown:
                _write(quota, _NO_QUOTA_V1)  # a new period may be below the old quota
                _write(per, str(period))
                _write(quota, str(self.quota_us))
            return undo
        raise ResponderError("no cpu controller for this cgroup (cpu.max or cpu.cfs_quota_us)")

    def _cgroup_freeze(self, dirs: CgroupDirs, *, unknown: bool = False) -> Undo:
        if dirs.v2 is not None and (dirs.v2 / "cgroup.freeze").exists():
            path = dirs.v2 / "cgroup.freeze"
            before = "0" if unknown else _read(path)
            if not unknown:
                _write(path, "1")
            return lambda: _write(path, before)
        if dirs.freezer_v1 is not None:
            path = dirs.freezer_v1 / "freezer.state"
            was_frozen = not unknown and _read(path) != "THAWED"
            if not unknown:
                _write(path, "FROZEN")
            return (lambda: None) if was_frozen else (lambda: _write(path, "THAWED"))
        raise ResponderError("no freezer for this cgroup (cgroup.freeze or freezer.state)")

    # ------------------------------------------------------------------ systemd units

    def _unit_name(self, unit: str) -> str:
        if not _UNIT.fullmatch(unit) or unit.startswith("-"):
            raise ResponderError(f"not a systemd unit name: {unit!r}")
        if unit in _REFUSED_UNITS:
            raise ResponderError(f"refused: {unit} is never throttled or frozen")
        return unit

    def _systemctl(self, *args: str) -> str:
        argv = ["systemctl", *args]
        try:
            result = self.commands.run(argv, timeout=self.cfg.timeout)
        except CommandError as exc:
            raise ResponderError(str(exc)) from None
        if not result.ok:
            raise ResponderError(result.message())
        return result.stdout.strip()

    def _unit(self, unit: str, *, freeze: bool) -> Undo:
        unit = self._unit_name(unit)
        if freeze:
            state = self._systemctl("show", "--property=FreezerState", "--value", "--", unit)
            self._systemctl("freeze", "--", unit)
            if state == "frozen":
                return lambda: None
            return lambda: self._systemctl("thaw", "--", unit)
        quota = self._systemctl("show", "--property=CPUQuotaPerSecUSec", "--value", "--", unit)
        before = _systemd_percent(quota)
        if before == self.cfg.cpu_percent:
            before = None  # our own earlier throttle (a restart): undo means no limit
        self._systemctl(
            "set-property", "--runtime", "--", unit, f"CPUQuota={self.cfg.cpu_percent}%"
        )
        value = "CPUQuota=" if before is None else f"CPUQuota={before}%"
        return lambda: self._systemctl("set-property", "--runtime", "--", unit, value)

    # ------------------------------------------------------------------ containers

    def _container_id(self, cid: str) -> str:
        if not _CONTAINER.fullmatch(cid):
            raise ResponderError(f"not a container id or name: {cid!r}")
        return cid

    def _client(self) -> Any:
        if self._docker is not None:
            return self._docker
        try:
            import docker  # noqa: PLC0415 - optional: the `docker` extra
        except ImportError:
            raise ResponderError(
                "the docker SDK is not installed (the aisentinel[docker] extra, or Debian's "
                "python3-docker); container targets cannot be throttled"
            ) from None
        try:
            self._docker = docker.DockerClient(
                base_url=self.cfg.docker_url, timeout=max(1, round(self.cfg.timeout))
            )
        except docker.errors.DockerException as exc:
            raise ResponderError(f"Docker API at {self.cfg.docker_url}: {exc}") from None
        return self._docker

    def _inspect(self, cid: str) -> Any:
        client = self._client()
        import docker  # noqa: PLC0415 - imported by _client already

        try:
            return client.containers.get(cid)
        except docker.errors.NotFound:
            raise ResponderError(f"container {cid} not found") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise ResponderError(f"Docker API: cannot inspect {cid}: {exc}") from None

    def _docker_call(self, cid: str, method: str, kwargs: dict[str, int]) -> None:
        import docker  # noqa: PLC0415 - only reached after _client imported it

        container = self._inspect(cid)
        try:
            getattr(container, method)(**kwargs)
        except docker.errors.APIError as exc:
            if method == "unpause" and exc.status_code == 409:
                return  # not paused: nothing to undo
            raise ResponderError(f"Docker API: {method} {cid}: {exc}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise ResponderError(f"Docker API: {method} {cid}: {exc}") from None

    def _container(self, cid: str, *, freeze: bool) -> Undo:
        cid = self._container_id(cid)
        attrs = self._inspect(cid).attrs or {}
        if freeze:
            paused = bool((attrs.get("State") or {}).get("Paused"))
            self._docker_call(cid, "pause", {})
            return (lambda: None) if paused else (lambda: self._docker_call(cid, "unpause", {}))
        host = attrs.get("HostConfig") or {}
        old_q = int(host.get("CpuQuota") or 0)
        old_p = int(host.get("CpuPeriod") or 0)
        period = self.cfg.cpu_period_us
        if old_q == self.quota_us and old_p == period:
            old_q = 0  # our own earlier throttle (a restart): undo means no limit
        self._docker_call(cid, "update", {"cpu_quota": self.quota_us, "cpu_period": period})
        restore = {
            "cpu_quota": old_q if old_q > 0 else -1,
            "cpu_period": old_p if old_p > 0 else _DEFAULT_PERIOD_US,
        }
        return lambda: self._docker_call(cid, "update", restore)


REGISTRY.register("throttle", ThrottleConfig, ThrottleResponder)
