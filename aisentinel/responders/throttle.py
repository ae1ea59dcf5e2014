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
ends. Enforcements that change the same setting (two ``pid:`` targets in one cgroup, a
process and its cgroup) share it: the later ones keep the value from before the first,
never one aisentinel wrote, and the setting is put back only when the last of them ends.
That memory (each enforcement's undo, as data: :class:`Step`) is also kept in
``state_dir/throttle.json``, written before an enforcement is applied and after it is
lifted, because nothing on the host says which quotas and freezes are aisentinel's.
A restarted daemon reads it back: its reconcile undoes every recorded enforcement the
ledger no longer holds (one that expired or was unbanned while the thaw never ran: the
daemon stopped or crashed first, or the thaw kept failing) and enforces the active
ones again, keeping their recorded undo; a responder removed from the config is
withdrawn the same way at the next start. Each record is checked as strictly as a
decision (only the cgroup files a throttle writes, under ``cgroup_root``, never in a
root cgroup or one that holds aisentinel; only
``systemctl thaw`` / ``set-property CPUQuota=``; only Docker ``unpause`` / ``update``;
refused units and odd container ids rejected); a workload gone since is nothing to
undo. A lift with no record (no state directory, or a decision from before this
record existed) writes "no limit" / "thawed", since the value found then is
aisentinel's own.

Refused, whatever the decision says: the root cgroup, any cgroup that holds
aisentinel itself (its own, or one above it: freezing it would stop the daemon that
thaws), pid 1, systemd's top-level slices and ``init.scope``, sshd's unit, and any text that is
not a plain unit name, container id or cgroup path (nothing from a log line becomes
an option or a path outside the cgroup tree).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from aisentinel.atomicfile import atomic_write, read_state
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

STATE_FILE = "throttle.json"
"""In the state directory: the enforcements in place and how to undo each."""
_STATE_VERSION = 1
_CGROUP_FILES = frozenset(
    {"cpu.max", "cgroup.freeze", "cpu.cfs_quota_us", "cpu.cfs_period_us", "freezer.state"}
)
"""The only files a throttle writes (and a record read back may name)."""
_VALUE = re.compile(r"[A-Za-z0-9 -]{1,64}")
_QUOTA = re.compile(r"CPUQuota=(\d{1,6}%)?")
_GONE = ("is gone", "not found", "not loaded", "No such file")
"""Words of an error that means the workload is gone: nothing left to undo."""

_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]{1,255}\.(service|scope|slice|socket|mount|swap)")
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_TOP_LEVEL = frozenset({"system.slice", "user.slice", "machine.slice", "init.scope"})
"""systemd's cgroups right below the root: never a workload, whatever names them."""
_SSHD_UNITS = frozenset({"ssh.service", "sshd.service"})
"""sshd's unit (Debian's name, and upstream's): freezing it would lock the admin out."""
_REFUSED_UNITS = _TOP_LEVEL | _SSHD_UNITS | {"-.slice", "aisentinel.service"}
_MAX_TOUCHES = 16
"""Most settings one recorded enforcement may say it changes."""
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


@dataclass(frozen=True, slots=True)
class Step:
    """One change to a workload's settings, as data: an enforcement and its undo are
    lists of steps, and the undo is kept in the state file so that a later run can
    run it. ``write``: (cgroup file, value); ``systemctl``: its arguments; ``docker``:
    (container, method, and for ``update`` the CPU quota and period)."""

    op: Literal["write", "systemctl", "docker"]
    args: tuple[str, ...]

    @property
    def subject(self) -> str:
        """What the step changes: a cgroup file, a unit or a container."""
        if self.op == "systemctl":
            return self.args[self.args.index("--") + 1]
        return self.args[0]

    @property
    def resource(self) -> str:
        """The one setting the step changes: a cgroup file, or a unit's or a container's
        freezer or CPU limit (``unit ollama.service cpu``). Enforcements that change the
        same setting share it: see :meth:`ThrottleResponder._inherit`."""
        if self.op == "write":
            return self.args[0]
        if self.op == "systemctl":
            return f"unit {self.subject} {'cpu' if self.args[0] == 'set-property' else 'freezer'}"
        return f"container {self.args[0]} {'cpu' if self.args[1] == 'update' else 'freezer'}"

    def json(self) -> dict[str, Any]:
        return {"op": self.op, "args": list(self.args)}


Steps = tuple[Step, ...]


def _resources(steps: Steps) -> frozenset[str]:
    return frozenset(step.resource for step in steps)


@dataclass(frozen=True, slots=True)
class Held:
    """An enforcement in place: its action, the time of the decision that made it, the
    workload's name (for the log), how to undo it and the settings it changes
    (``touches``: :attr:`Step.resource` of its enforcing and undoing steps). ``restored``:
    read back from the state file at start, not enforced by this run yet."""

    action: Action
    ts: float
    name: str
    undo: Steps
    touches: frozenset[str]
    restored: bool = False


def _write_step(path: Path, value: str) -> Step:
    return Step("write", (str(path), value))


def _systemctl_step(*args: str) -> Step:
    return Step("systemctl", args)


def _docker_step(cid: str, method: str, *limits: int) -> Step:
    return Step("docker", (cid, method, *map(str, limits)))


def _gone(exc: ResponderError) -> bool:
    """Whether ``exc`` says the workload is gone (so is what was done to it)."""
    return any(word in str(exc) for word in _GONE)


class ThrottleResponder(BufferedResponder):
    """Throttles and freezes containers, units, cgroups and processes; see the module doc."""

    name = "throttle"
    handles = frozenset({Action.THROTTLE, Action.FREEZE})

    def __init__(
        self,
        config: ThrottleConfig,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self.cfg = config
        self.tree = CgroupTree(config.cgroup_root, config.proc_root)
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        """Where the enforcements in place are kept (``None``: in memory only)."""
        self.unsaved: str | None = None
        """Why the last write of :attr:`path` failed (``None``: it is up to date)."""
        self.held: dict[str, Held] = self._load()
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
        """Hold exactly ``active``: what is held (this run's, or an earlier run's from
        the state file) and not active is undone; what is active is enforced."""
        wanted = {
            d.target.text: d
            for d in active
            if isinstance(d.target, WorkloadTarget) and d.action in self.handles
        }
        errors: list[str] = []
        for text, held in list(self.held.items()):
            want = wanted.get(text)
            if want is None or want.action is not held.action:
                try:
                    self._release(text, held)
                except ResponderError as exc:
                    errors.append(str(exc))
        for decision in wanted.values():
            self._try(self._apply, decision, errors)
        log.info("throttle reconcile", active=len(wanted), held=len(self.held))
        if errors:
            raise ResponderError("; ".join(errors)[:1000])

    def withdraw(self) -> str:
        """Undo every enforcement held (this run's, or recorded by an earlier one)."""
        held = len(self.held)
        self.reconcile([])
        return f"{held} throttled or frozen workloads put back as they were"

    def health(self) -> ResponderHealth:
        tools = [self.tree.describe()]
        tools.append("systemctl" if self.commands.has("systemctl") else "no systemctl")
        has_sdk = importlib.util.find_spec("docker") is not None
        tools.append("docker SDK" if has_sdk else "no docker SDK")
        ok = self.tree.v2 is not None or self.tree.cpu_v1 is not None
        if self.unsaved is not None:
            tools.append(f"cannot record them in {self.path}: {self.unsaved}")
        detail = f"{len(self.held)} held; " + ", ".join(tools)
        return ResponderHealth(ok=ok and self.unsaved is None, detail=detail)

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
        text = target.text
        current = self.held.get(text)
        if current is not None and current.action is not decision.action:
            self._release(text, current)
            current = None
        if current is not None and not current.restored:
            if current.ts != decision.ts:  # a newer decision, same effect
                self.held[text] = replace(current, ts=decision.ts)
                self._save()
            return
        freeze = decision.action is Action.FREEZE
        do, undo = self._plan(target, freeze=freeze)
        touches = _resources(do + undo)
        if current is not None:
            # An earlier run's enforcement, read back at start: enforce it again (the
            # workload may have been restarted meanwhile) and keep the undo it recorded,
            # which holds the values from before it; the values read now are its own.
            if touches <= current.touches:
                undo, touches = current.undo, current.touches
            else:  # the workload is somewhere else now: lift the old place first
                self._release(text, current)
                current = None
        if current is None:
            undo = self._inherit(text, touches, undo)
        self.held[text] = Held(decision.action, decision.ts, target.display, undo, touches)
        self._save()  # before enforcing: a crash right after still knows what to undo
        try:
            self._run(do)
        except ResponderError:
            if current is None:
                del self.held[text]
            else:  # the earlier run's enforcement may still be in place: keep its undo
                self.held[text] = current
            self._save()
            raise
        log.info(
            "workload frozen" if freeze else "workload throttled",
            target=text,
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
        if current is not None and current.action is decision.action:
            self._release(target.text, current)
            return
        if key in self._undone or current is not None:
            return  # lifted already (a retried batch), or it holds another action now
        kept = self._reset(target, freeze=decision.action is Action.FREEZE)  # no record
        self._lifted(key, decision.action, target.text, target.display, kept)

    def _release(self, text: str, held: Held) -> None:
        """Undo ``held`` (the enforcement of ``text``) and forget it; a setting that another
        enforcement in place changes too stays as it is, for that one to undo."""
        undo, kept = self._unshared(text, held.undo)
        for step in undo:
            try:
                self._step(step)
            except ResponderError as exc:
                if not _gone(exc):
                    raise
        del self.held[text]
        self._save()
        self._lifted((text, held.ts), held.action, text, held.name, kept)

    def _lifted(
        self, key: tuple[str, float], action: Action, text: str, name: str, kept: list[str]
    ) -> None:
        self._undone[key] = None
        while len(self._undone) > _UNDONE_KEEP:
            self._undone.popitem(last=False)
        thawed = action is Action.FREEZE
        if kept:
            log.info(
                "workload decision ended; it stays frozen for another decision"
                if thawed
                else "workload decision ended; it stays throttled for another decision",
                target=text,
                name=name,
                held_for=kept[:8],
            )
            return
        log.info(
            "workload thawed" if thawed else "workload throttle lifted", target=text, name=name
        )

    def _sharers(self, text: str, touches: frozenset[str]) -> list[tuple[str, Held]]:
        """The enforcements in place, other than ``text``'s, that change one of ``touches``."""
        return [(t, h) for t, h in self.held.items() if t != text and h.touches & touches]

    def _inherit(self, text: str, touches: frozenset[str], undo: Steps) -> Steps:
        """``undo`` for a new enforcement of ``text``, where each setting that an
        enforcement already in place changes too is put back as that one would: to the
        value from before the first of them, never to one aisentinel wrote (two pid
        targets in one cgroup, a pid and its cgroup). The last of them to end undoes it."""
        taken: set[str] = set()
        inherited: list[Step] = []
        for _t, other in self._sharers(text, touches):
            shared = (other.touches & touches) - taken
            inherited += [step for step in other.undo if step.resource in shared]
            taken |= shared
        if not taken:
            return undo
        return (*inherited, *(step for step in undo if step.resource not in taken))

    def _unshared(self, text: str, undo: Steps) -> tuple[Steps, list[str]]:
        """The steps of ``undo`` that no enforcement in place other than ``text``'s still
        needs, and the targets of those that keep the rest."""
        sharers = self._sharers(text, _resources(undo))
        if not sharers:
            return undo, []
        kept = frozenset().union(*(held.touches for _t, held in sharers))
        return tuple(step for step in undo if step.resource not in kept), [t for t, _h in sharers]

    def _plan(
        self, target: WorkloadTarget, *, freeze: bool, unknown: bool = False
    ) -> tuple[Steps, Steps]:
        """The steps that enforce on ``target`` and those that undo them, from the values
        found now; ``unknown``: nothing to enforce, undo to "no limit" / "thawed"."""
        key = target.identified_by
        if key is WorkloadKey.CONTAINER:
            return self._container(target.id, freeze=freeze, unknown=unknown)
        if key is WorkloadKey.UNIT:
            return self._unit(target.id, freeze=freeze, unknown=unknown)
        dirs = self._dirs(target)
        if freeze:
            return self._cgroup_freeze(dirs, unknown=unknown)
        return self._cgroup_cpu(dirs, unknown=unknown)

    def _reset(self, target: WorkloadTarget, *, freeze: bool) -> list[str]:
        """Undo an enforcement whose earlier values are not known: no limit, thawed (but
        not a setting another enforcement in place needs: the targets of those)."""
        try:
            _do, undo = self._plan(target, freeze=freeze, unknown=True)
        except ResponderError as exc:
            if _gone(exc):
                return []  # nothing left to undo
            raise
        undo, kept = self._unshared(target.text, undo)
        self._run(undo)
        return kept

    def _run(self, steps: Steps) -> None:
        for step in steps:
            self._step(step)

    def _step(self, step: Step) -> None:
        if step.op == "write":
            _write(Path(step.args[0]), step.args[1])
        elif step.op == "systemctl":
            self._systemctl(*step.args)
        else:
            cid, method, *limits = step.args
            kwargs = dict(zip(("cpu_quota", "cpu_period"), map(int, limits), strict=False))
            self._docker_call(cid, method, kwargs)

    # ------------------------------------------------------------------ the state file

    def _save(self) -> None:
        """Write :attr:`held` to the state file; a failure is one error line (at the
        first of a streak) and an unhealthy responder, never a failed enforcement."""
        if self.path is None:
            return
        doc = {
            "version": _STATE_VERSION,
            "held": [
                {
                    "target": text,
                    "action": held.action.value,
                    "ts": held.ts,
                    "name": held.name,
                    "undo": [step.json() for step in held.undo],
                    "touches": sorted(held.touches),
                }
                for text, held in self.held.items()
            ],
        }
        try:
            atomic_write(self.path, json.dumps(doc, sort_keys=True).encode())
        except OSError as exc:
            if self.unsaved is None:
                log.error(  # noqa: TRY400 - an expected operational failure, not a bug
                    "cannot record the throttled and frozen workloads; a restart will not "
                    "lift what this run enforces",
                    path=str(self.path),
                    reason=exc.strerror or str(exc),
                )
            self.unsaved = exc.strerror or str(exc)
            return
        if self.unsaved is not None:
            log.info("throttled and frozen workloads recorded again", path=str(self.path))
        self.unsaved = None

    def _load(self) -> dict[str, Held]:
        """What an earlier run left in force (the state file), each entry checked."""
        if self.path is None:
            return {}
        try:
            doc = json.loads(read_state(self.path))
            entries = doc["held"] if doc.get("version") == _STATE_VERSION else None
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            entries, why = None, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        else:
            why = f"unknown version {doc.get('version')!r}"
        if not isinstance(entries, list):
            log.error(
                "cannot read the workloads an earlier run throttled or froze; they stay as "
                "they are: check them by hand",
                path=str(self.path),
                reason=why[:200],
            )
            return {}
        out: dict[str, Held] = {}
        for entry in entries:
            try:
                text, held = self._entry(entry)
            except (ValueError, TypeError, KeyError, OverflowError, ResponderError) as exc:
                log.error(  # noqa: TRY400 - a bad record, not a bug: no traceback
                    "record of a throttled or frozen workload refused; it stays as it is",
                    path=str(self.path),
                    reason=str(exc)[:200],
                )
                continue
            out[text] = held
        if out:
            log.info("throttled and frozen workloads of an earlier run", held=len(out))
        return out

    def _entry(self, entry: Any) -> tuple[str, Held]:
        """One record of the state file, checked as strictly as a decision: every step is
        one a throttle makes, on a target it may act on."""
        text = str(entry["target"])
        action = Action(entry["action"])
        if action not in self.handles:
            raise ValueError(f"{text}: not a throttle or freeze")
        steps = tuple(
            Step(op=str(s["op"]), args=tuple(str(a) for a in s["args"]))  # type: ignore[arg-type]
            for s in entry["undo"]
        )
        for step in steps:
            self._check_step(step)
        touches = entry.get("touches", [])  # not in the records of earlier versions
        if not isinstance(touches, list) or len(touches) > _MAX_TOUCHES:
            raise ValueError(f"{text}: not a list of settings: {str(touches)[:120]}")
        for touch in touches:
            self._check_touch(str(touch))
        name = str(entry.get("name") or text)[:512]
        held = Held(
            action,
            float(entry["ts"]),
            name,
            steps,
            _resources(steps) | frozenset(map(str, touches)),
            restored=True,
        )
        return text, held

    def _cgroup_file(self, text: str) -> bool:
        """Whether ``text`` names a file a throttle writes, under ``cgroup_root``."""
        path = Path(text)
        return (
            text.isprintable()
            and path.is_absolute()
            and ".." not in path.parts
            and path.name in _CGROUP_FILES
            and path.is_relative_to(self.cfg.cgroup_root)
        )

    def _check_touch(self, touch: str) -> None:
        """A setting a record says its enforcement changes: a cgroup file a throttle
        writes, under ``cgroup_root``, or a unit's or container's freezer or CPU limit.
        (It only keeps another record's undo from running early; it is never acted on.)"""
        if self._cgroup_file(touch):
            return
        kind, _sep, rest = touch.partition(" ")
        name, _sep, what = rest.rpartition(" ")
        if what in ("cpu", "freezer"):
            if kind == "unit" and _UNIT.fullmatch(name):
                return
            if kind == "container" and _CONTAINER.fullmatch(name):
                return
        raise ValueError(f"not a setting a throttle changes: {touch[:120]}")

    def _check_step(self, step: Step) -> None:
        args = step.args
        if step.op == "write" and len(args) == 2:
            if self._cgroup_file(args[0]) and _VALUE.fullmatch(args[1]):
                # Never a root cgroup nor one holding aisentinel, as for a decision.
                parent = Path(args[0]).parent
                self._refuse(parent, str(parent), self.tree.own())
                return
        elif step.op == "systemctl" and args[:1] == ("thaw",) and args[1:2] == ("--",):
            if len(args) == 3 and self._unit_name(args[2]):
                return
        elif step.op == "systemctl" and args[:3] == ("set-property", "--runtime", "--"):
            if len(args) == 5 and self._unit_name(args[3]) and _QUOTA.fullmatch(args[4]):
                return
        elif step.op == "docker" and args[1:2] == ("unpause",) and len(args) == 2:
            self._container_id(args[0])
            return
        elif step.op == "docker" and args[1:2] == ("update",) and len(args) == 4:
            self._container_id(args[0])
            if all(re.fullmatch(r"-?\d{1,9}", a) for a in args[2:]):
                return
        raise ValueError(f"not a step a throttle takes: {step.op} {' '.join(args)[:120]}")

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
            if d is not None:
                self._refuse(d, target.text, own)
        return dirs

    def _refuse(self, d: Path, what: str, own: list[Path]) -> None:
        """``ResponderError`` if cgroup directory ``d`` is a root cgroup, one of systemd's
        top-level slices or ``init.scope``, sshd's unit, or holds aisentinel itself (its own
        cgroup, or one above it). Whatever names it: a pid, a unit, a cgroup path, a
        record read back at start."""
        roots = (self.tree.root, self.tree.v2, self.tree.cpu_v1, self.tree.freezer_v1)
        if d in roots:
            raise ResponderError(f"refused: {what} is the root cgroup")
        if d.parent in roots and d.name in _TOP_LEVEL:
            raise ResponderError(f"refused: {what} is systemd's {d.name}")
        if d.name in _SSHD_UNITS:
            raise ResponderError(f"refused: {what} is sshd's unit (the admin's way in)")
        if any(mine == d or d in mine.parents for mine in own):
            raise ResponderError(f"refused: {what} holds aisentinel itself ({d})")

    def _cgroup_cpu(self, dirs: CgroupDirs, *, unknown: bool = False) -> tuple[Steps, Steps]:
        period = self.cfg.cpu_period_us
        if dirs.v2 is not None and (dirs.v2 / "cpu.max").exists():
            path = dirs.v2 / "cpu.max"
            mine = f"{self.quota_us} {period}"
            before = "max" if unknown else _read(path)
            if before == mine:
                before = "max"  # our own earlier throttle (no record of it): no limit
            enforce: Steps = () if unknown else (_write_step(path, mine),)
            return enforce, (_write_step(path, before),)
        if dirs.cpu_v1 is not None:
            quota = dirs.cpu_v1 / "cpu.cfs_quota_us"
            per = dirs.cpu_v1 / "cpu.cfs_period_us"
            old_q = _NO_QUOTA_V1 if unknown else _read(quota)
            old_p = str(period) if unknown else _read(per)
            if old_q == str(self.quota_us) and old_p == str(period):
                old_q = _NO_QUOTA_V1
            undo = (
                _write_step(quota, _NO_QUOTA_V1),  # a new period may be below the old quota
                _write_step(per, old_p),
                _write_step(quota, old_q),
            )
            do = (
                _write_step(quota, _NO_QUOTA_V1),
                _write_step(per, str(period)),
                _write_step(quota, str(self.quota_us)),
            )
            return (() if unknown else do), undo
        raise ResponderError("no cpu controller for this cgroup (cpu.max or cpu.cfs_quota_us)")

    def _cgroup_freeze(self, dirs: CgroupDirs, *, unknown: bool = False) -> tuple[Steps, Steps]:
        if dirs.v2 is not None and (dirs.v2 / "cgroup.freeze").exists():
            path = dirs.v2 / "cgroup.freeze"
            before = "0" if unknown else _read(path)
            return (() if unknown else (_write_step(path, "1"),)), (_write_step(path, before),)
        if dirs.freezer_v1 is not None:
            path = dirs.freezer_v1 / "freezer.state"
            was_frozen = not unknown and _read(path) != "THAWED"
            do = () if unknown else (_write_step(path, "FROZEN"),)
            return do, (() if was_frozen else (_write_step(path, "THAWED"),))
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

    def _unit(self, unit: str, *, freeze: bool, unknown: bool = False) -> tuple[Steps, Steps]:
        unit = self._unit_name(unit)
        if freeze:
            thaw = (_systemctl_step("thaw", "--", unit),)
            if unknown:
                return (), thaw
            state = self._systemctl("show", "--property=FreezerState", "--value", "--", unit)
            return (_systemctl_step("freeze", "--", unit),), (() if state == "frozen" else thaw)
        before = None
        if not unknown:
            quota = self._systemctl("show", "--property=CPUQuotaPerSecUSec", "--value", "--", unit)
            before = _systemd_percent(quota)
        if before == self.cfg.cpu_percent:
            before = None  # our own earlier throttle (no record of it): no limit
        value = "CPUQuota=" if before is None else f"CPUQuota={before}%"
        setp = ("set-property", "--runtime", "--", unit)
        do = () if unknown else (_systemctl_step(*setp, f"CPUQuota={self.cfg.cpu_percent}%"),)
        return do, (_systemctl_step(*setp, value),)

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

    def _container(self, cid: str, *, freeze: bool, unknown: bool = False) -> tuple[Steps, Steps]:
        cid = self._container_id(cid)
        if unknown:
            if freeze:
                return (), (_docker_step(cid, "unpause"),)
            return (), (_docker_step(cid, "update", -1, _DEFAULT_PERIOD_US),)
        attrs = self._inspect(cid).attrs or {}
        if freeze:
            paused = bool((attrs.get("State") or {}).get("Paused"))
            return (_docker_step(cid, "pause"),), (
                () if paused else (_docker_step(cid, "unpause"),)
            )
        host = attrs.get("HostConfig") or {}
        old_q = int(host.get("CpuQuota") or 0)
        old_p = int(host.get("CpuPeriod") or 0)
        period = self.cfg.cpu_period_us
        if old_q == self.quota_us and old_p == period:
            old_q = 0  # our own earlier throttle (no record of it): no limit
        restore = _docker_step(
            cid, "update", old_q if old_q > 0 else -1, old_p if old_p > 0 else _DEFAULT_PERIOD_US
        )
        return (_docker_step(cid, "update", self.quota_us, period),), (restore,)


REGISTRY.register("throttle", ThrottleConfig, ThrottleResponder)
