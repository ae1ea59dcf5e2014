"""GPU sampling through NVML (pynvml): one :meth:`GpuSampler.sample` per interval.

Each call reads every GPU (utilization, memory through the v2 API where the driver has
it, temperature, power, energy counter, ECC counts, clocks throttle reasons, MIG mode)
and its processes (memory per process; SM and memory utilization from
``nvmlDeviceGetProcessUtilization``), attributed through an optional
:class:`~aisentinel.gpu.attribution.ProcessAttributor`.

It never raises for an operational fault. No library, no driver, no GPU: the reading
says so (``state``/``reason``) and initialisation is retried with back-off measured on
the injected clock. A value the GPU does not support is None (and not asked again until
the next initialisation); that is logged once per GPU and value, and the reading lists
it (``unsupported``): on a MIG GPU, for one, there is no utilization to watch.

A value that fails with any other code (``NVML_ERROR_UNKNOWN`` from a GPU wedged after
an Xid, ``NO_PERMISSION`` for the process lists of a MIG GPU read by a non-root user)
is None, counted (``field_errors``) and asked again at the next sample. Once it has
failed in :data:`UNREADABLE_AFTER` samples in a row it is unreadable: the reading lists
it (``unreadable``), and while a GPU detector needs one of its unreadable values
(:data:`BLINDED`) the collector is ``degraded`` with the GPU and the values in its
reason, logged once (``gpu values unreadable``, and ``gpu values readable again`` when
they are read again: then the state is ``up`` again by itself).

A GPU is lost (marked so and logged once; the others are still sampled) when it answers
``NVML_ERROR_GPU_IS_LOST``, when its handle or identity cannot be read at
initialisation (``NVML_ERROR_UNKNOWN`` after an Xid 79, ...), or when a GPU seen before
is no longer in the driver's list. GPUs are told apart by UUID: one that cannot be
identified takes the identity last seen at its index, and one gone from the list is
reported (``missing``) under its last index until it is back or the sampler is made
anew (a daemon restart). While any GPU is lost, NVML is shut down and initialised again
with back-off. Each change of state is one log line; the counters are attributes;
``calling`` names the NVML call in progress (what a sample stuck in the driver waits on).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from aisentinel.clock import Clock
from aisentinel.events import GpuProcessSample, GpuSample, ProcessAttribution
from aisentinel.gpu import nvml
from aisentinel.gpu.attribution import ProcessAttributor
from aisentinel.gpu.nvml import error_code, error_name
from aisentinel.gpu.xid import normalize_bus_id

_log = structlog.get_logger(__name__)

_UNSUPPORTED: Final = frozenset(
    {nvml.NOT_SUPPORTED, nvml.FUNCTION_NOT_FOUND, nvml.ARGUMENT_VERSION_MISMATCH}
)
_WHOLE_LIBRARY_GONE: Final = frozenset(
    {nvml.GPU_IS_LOST, nvml.UNINITIALIZED, nvml.DRIVER_NOT_LOADED}
)
_SYSTEM_WIDE: Final = frozenset(
    {nvml.UNINITIALIZED, nvml.DRIVER_NOT_LOADED, nvml.LIB_RM_VERSION_MISMATCH}
)
"""Codes that fail opening every GPU; any other code fails only the GPU that answers it."""
_MEMORY_V2: Final = 0x02000028  # nvmlMemory_v2: sizeof(nvmlMemory_v2_t) | 2 << 24
_ECC_CORRECTED: Final = 0
_ECC_UNCORRECTED: Final = 1
_ECC_VOLATILE: Final = 0
_TEMPERATURE_GPU: Final = 0

MAX_KNOWN_GPUS: Final = 256
"""Most GPU identities remembered (to report one gone from the driver's list)."""

VALUES: Final = (
    "utilization",
    "memory",
    "temperature",
    "power",
    "energy",
    "ecc",
    "throttle_reasons",
    "mig",
    "compute_processes",
    "graphics_processes",
    "process_utilization",
)
"""The values read per GPU, as named in the log and ``aisentinel_gpu_value_supported``
(the v2 memory and the clocks event reasons calls fall back to ``memory`` and
``throttle_reasons``: only those count)."""

BLINDED: Final[Mapping[str, tuple[str, ...]]] = {
    "utilization": ("gpu_theft", "gpu_spike"),
    "memory": ("gpu_memory", "gpu_spike"),
    "compute_processes": ("gpu_workload",),
    "graphics_processes": ("gpu_workload",),
}
"""The detectors that cannot watch a GPU without the value."""

UNREADABLE_AFTER: Final = 3
"""Samples in a row in which a value fails (unsupported aside) before it is unreadable:
one failed read is noise, three in a row a GPU that no longer answers for it."""

PROCESS_LISTS: Final = frozenset({"compute_processes", "graphics_processes"})

_VALUE_OF: Final = {"memory_v2": "memory", "event_reasons": "throttle_reasons"}
"""The call names counted under another of :data:`VALUES` (a fallback of the same value)."""


def unreadable_text(values: Mapping[str, str]) -> str:
    """``utilization, memory (UNKNOWN), compute_processes (NO_PERMISSION)``: ``values``
    (value -> NVML error name) in :data:`VALUES` order, grouped by error."""
    by_error: dict[str, list[str]] = {}
    for value in VALUES:
        if value in values:
            by_error.setdefault(values[value], []).append(value)
    return ", ".join(f"{', '.join(names)} ({error})" for error, names in by_error.items())


def blinded(values: Iterable[str]) -> list[str]:
    """The detectors that cannot watch a GPU without ``values``, sorted."""
    return sorted({d for v in values for d in BLINDED.get(v, ())})


def blind_text(values: Iterable[str]) -> str:
    """`` (gpu_spike, gpu_theft cannot watch it)``; "" when no detector needs ``values``."""
    blind = blinded(values)
    return f" ({', '.join(blind)} cannot watch it)" if blind else ""


class GpuState(enum.StrEnum):
    """The collector's state, for machines (``up`` and ``degraded`` are up)."""

    UP = "up"
    DEGRADED = "degraded"  # some GPUs lost (or gone from the driver's list), the others sampled
    LOST = "lost"  # every GPU lost
    STUCK = "stuck"  # set by the source: a sample has not returned from NVML for too long
    NO_LIBRARY = "no_library"  # libnvidia-ml.so.1 (or pynvml) not installed
    NO_DRIVER = "no_driver"  # the kernel driver is not loaded
    NO_GPU = "no_gpu"
    NO_PERMISSION = "no_permission"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class GpuReading:
    """What one :meth:`GpuSampler.sample` call saw."""

    ts: float
    state: GpuState
    reason: str
    gpus: tuple[GpuSample, ...] = ()
    missing: tuple[GpuSample, ...] = ()
    """GPUs seen before and gone from the driver's list: lost, under their last index
    (another GPU may have it now), not handed to the detectors."""
    unsupported: Mapping[int, frozenset[str]] = field(default_factory=dict)
    """GPU index -> the :data:`VALUES` NVML said it does not support (GPUs not lost)."""
    unreadable: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    """GPU index -> value -> NVML error name: the :data:`VALUES` that failed in each of
    the last :data:`UNREADABLE_AFTER` samples (GPUs not lost)."""
    failed: Mapping[int, frozenset[str]] = field(default_factory=dict)
    """GPU index -> the :data:`VALUES` that failed in this sample (unsupported aside)."""

    @property
    def up(self) -> bool:
        return self.state in (GpuState.UP, GpuState.DEGRADED)


class _GpuLostError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class _Device:
    index: int
    handle: Any
    uuid: str
    name: str
    bus: str | None
    lost: bool = False
    code: int = 0  # why it could not be opened (lost from the start)
    unsupported: set[str] = field(default_factory=set)
    last_util_ts: int = 0
    memory_v2: bool = True
    event_reasons: bool = True
    logged: set[tuple[str, int]] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)  # this sample's: value -> code

    @property
    def key(self) -> str:
        """Its UUID; ``#INDEX`` for a GPU that could not be identified."""
        return self.uuid or f"#{self.index}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class GpuSampler:
    """Samples every GPU per call; see the module docstring for the fault model."""

    def __init__(
        self,
        clock: Clock,
        *,
        attributor: ProcessAttributor | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 300.0,
    ) -> None:
        self._clock = clock
        self._attributor = attributor
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._delay = retry_initial
        self._retry_at = float("-inf")
        self._initialised = False
        self._devices: list[_Device] = []
        self._missing: list[_Device] = []  # seen before, gone from the driver's list
        self._lost: set[str] = set()  # keys of the GPUs lost now (logged once per loss)
        self._round: dict[int, ProcessAttribution | None] = {}  # this sample's attributions
        self._known: dict[str, tuple[int, str, str | None]] = {}  # uuid -> index, name, bus
        self._noted: set[tuple[str, str]] = set()  # (GPU key, value) logged as unsupported
        # GPU key -> value -> (samples in a row it failed in, its last code)
        self._failing: dict[str, dict[str, tuple[int, int]]] = {}
        self._blind: dict[str, str] = {}  # GPU key -> its needed values logged as unreadable
        self.calling: tuple[str, int | None] = ("", None)
        """The NVML call in progress (or the last one made) and its GPU index."""
        self.state = GpuState.STOPPED
        self.reason = "not started"
        self.driver_version: str | None = None
        self.init_failures = 0
        self.gpus_lost_total = 0
        self.field_errors = 0
        self.samples_total = 0

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if self._initialised:
            self._shutdown()
        self._set(GpuState.STOPPED, "stopped")

    def _set(self, state: GpuState, reason: str) -> None:
        if (state, reason) != (self.state, self.reason):
            if state in (GpuState.UP, GpuState.STOPPED):
                _log.info("gpu collector", state=state.value, reason=reason)
            else:
                _log.warning("gpu collector", state=state.value, reason=reason)
        self.state = state
        self.reason = reason

    def _backoff(self) -> None:
        self._retry_at = self._clock.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._retry_max)

    def _shutdown(self) -> None:
        self._initialised = False
        self._devices = []
        with contextlib.suppress(nvml.NVMLError):
            nvml.pynvml.nvmlShutdown()

    def _init(self) -> bool:
        if nvml.pynvml is None:
            self._fail(GpuState.NO_LIBRARY, "pynvml (nvidia-ml-py) is not installed")
            return False
        try:
            self.calling = ("nvmlInit", None)
            nvml.pynvml.nvmlInit()
        except nvml.NVMLError as exc:
            code = error_code(exc)
            if code == nvml.LIBRARY_NOT_FOUND:
                self._fail(GpuState.NO_LIBRARY, "libnvidia-ml.so.1 not found (no NVIDIA driver)")
            elif code == nvml.DRIVER_NOT_LOADED:
                self._fail(GpuState.NO_DRIVER, "the NVIDIA kernel driver is not loaded")
            elif code == nvml.NO_PERMISSION:
                self._fail(GpuState.NO_PERMISSION, "no permission to open /dev/nvidia*")
            else:
                self._fail(GpuState.ERROR, f"nvmlInit: {error_name(code)}")
            return False
        self._initialised = True
        try:
            self.driver_version = _text(nvml.pynvml.nvmlSystemGetDriverVersion())
            count = nvml.pynvml.nvmlDeviceGetCount()
            devices = [self._open(i) for i in range(count)]
        except nvml.NVMLError as exc:
            self._shutdown()
            self._fail(GpuState.ERROR, f"enumerating GPUs: {error_name(error_code(exc))}")
            return False
        if not devices:
            self._shutdown()
            self._fail(GpuState.NO_GPU, "the driver reports no GPU")
            return False
        self._identify(devices)
        self._devices = devices
        return True

    def _open(self, index: int) -> _Device:
        """GPU ``index``; lost (``code`` says why) if its handle or identity fails. Raises
        only for a code that fails every GPU (:data:`_SYSTEM_WIDE`)."""
        self.calling = ("nvmlDeviceGetHandleByIndex", index)
        try:
            handle = nvml.pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.pynvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.pynvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as exc:
            code = error_code(exc)
            if code in _SYSTEM_WIDE:
                raise
            return _Device(index, None, "", "", None, lost=True, code=code)
        try:
            bus = normalize_bus_id(_text(nvml.pynvml.nvmlDeviceGetPciInfo(handle).busId))
        except nvml.NVMLError:
            bus = None
        return _Device(index, handle, uuid, name, bus)

    def _identify(self, devices: list[_Device]) -> None:
        """Remember the identified GPUs; give each unidentified one the identity last seen
        at its index (when that GPU is not elsewhere now) and mark it lost; every GPU
        seen before and in neither case is missing (lost, under its last index)."""
        known = self._known
        present = {d.uuid for d in devices if d.uuid}
        absent = {index: uuid for uuid, (index, _, _) in known.items() if uuid not in present}
        for dev in devices:
            if dev.uuid:
                known[dev.uuid] = (dev.index, dev.name, dev.bus)
                if f"#{dev.index}" in self._lost:  # lost before it could be identified
                    self._lost.discard(f"#{dev.index}")
                    self._lost.add(dev.uuid)
                continue
            guess = absent.pop(dev.index, None)
            if guess is not None:
                dev.uuid = guess
                present.add(guess)
                _, dev.name, dev.bus = known[guess]
            self._mark_lost(dev, error_name(dev.code))
        while len(known) > MAX_KNOWN_GPUS:
            oldest = next((u for u in known if u not in present), None)
            if oldest is None:
                break
            del known[oldest]
        self._missing = [
            _Device(index, None, uuid, name, bus, lost=True)
            for uuid, (index, name, bus) in known.items()
            if uuid not in present
        ]
        for dev in self._missing:
            self._mark_lost(dev, "gone from the driver's list of GPUs")
        self._lost &= {d.key for d in devices} | {d.key for d in self._missing}
        keys = {d.key for d in devices if not d.lost}
        self._failing = {k: v for k, v in self._failing.items() if k in keys}
        self._blind = {k: v for k, v in self._blind.items() if k in keys}

    def _fail(self, state: GpuState, reason: str) -> None:
        self.init_failures += 1
        self._set(state, reason)
        self._backoff()

    # ------------------------------------------------------------------ sampling

    def sample(self) -> GpuReading:
        """Read every GPU now; never raises for an NVML fault."""
        ts = self._clock.now()
        if not self._initialised:
            if self._clock.monotonic() < self._retry_at or not self._init():
                return GpuReading(ts, self.state, self.reason)
        elif (self._missing or any(d.lost for d in self._devices)) and (
            self._clock.monotonic() >= self._retry_at
        ):
            self._shutdown()
            if not self._init():
                return GpuReading(ts, self.state, self.reason)
        gpus: list[GpuSample] = []
        pids: set[int] = set()
        unsupported: dict[int, frozenset[str]] = {}
        unreadable: dict[int, dict[str, str]] = {}
        failed: dict[int, frozenset[str]] = {}
        self._round.clear()
        for dev in self._devices:
            if not dev.lost:
                try:
                    sample = self._sample(dev, ts)
                except _GpuLostError as gone:
                    self._mark_lost(dev, error_name(gone.code))
                    self._failing.pop(dev.key, None)
                    self._blind.pop(dev.key, None)
                else:
                    gpus.append(sample)
                    pids.update(p.pid for p in sample.processes)
                    if dev.unsupported:
                        unsupported[dev.index] = frozenset(dev.unsupported.intersection(VALUES))
                    if dev.failed:
                        failed[dev.index] = frozenset(dev.failed)
                    if dev.failed or dev.key in self._failing:
                        values = self._tally(dev)
                        if values:
                            unreadable[dev.index] = values
                    if dev.key in self._lost:
                        self._lost.discard(dev.key)
                        _log.info("gpu back", gpu=dev.index, uuid=dev.uuid)
                    continue
            gpus.append(_lost_sample(dev, ts))
        if self._attributor is not None:
            self._attributor.retain(pids)
        self.samples_total += 1
        missing = tuple(_lost_sample(d, ts) for d in self._missing)
        self._settle(len(gpus) - sum(1 for g in gpus if g.lost), unreadable)
        return GpuReading(
            ts, self.state, self.reason, tuple(gpus), missing, unsupported, unreadable, failed
        )

    def _settle(self, live: int, unreadable: Mapping[int, Mapping[str, str]]) -> None:
        """The state after a sample in which ``live`` GPUs answered, with these values
        unreadable."""
        lost = [str(d.index) for d in self._devices if d.lost]
        gone = [f"{d.uuid} (was {d.index})" for d in self._missing]
        if (lost or gone) and self._clock.monotonic() >= self._retry_at:
            self._backoff()
        if not (lost or gone):
            self._delay = self._retry_initial
        elif not live:
            self._set(GpuState.LOST, "every GPU is lost; retrying")
            return
        what = [f"GPU(s) {','.join(lost)} lost"] if lost else []
        if gone:
            what.append(f"GPU(s) {', '.join(gone)} gone from the driver's list")
        if what:
            what.append("retrying")  # NVML is initialised again, with back-off
        blind = [
            f"GPU {index} values unreadable: {unreadable_text(needed)}" + blind_text(needed)
            for index, values in sorted(unreadable.items())
            if (needed := {v: e for v, e in values.items() if v in BLINDED})
        ]
        if blind:
            what += [*blind, "read again each sample"]  # no reinitialisation: the GPU answers
        if what:
            self._set(GpuState.DEGRADED, "; ".join(what))
        else:
            self._set(GpuState.UP, f"{live} GPU(s), driver {self.driver_version}")

    def _tally(self, dev: _Device) -> dict[str, str]:
        """Count this sample's failures of ``dev`` in the values' runs of failures (a value
        read ends its run); value -> NVML error name for the unreadable ones. A change in
        the unreadable values a detector needs is logged."""
        before = self._failing.get(dev.key, {})
        runs = {v: (before.get(v, (0, 0))[0] + 1, code) for v, code in dev.failed.items()}
        if runs:
            self._failing[dev.key] = runs
        else:
            self._failing.pop(dev.key, None)
        values = {v: error_name(code) for v, (n, code) in runs.items() if n >= UNREADABLE_AFTER}
        needed = {v: e for v, e in values.items() if v in BLINDED}
        was = self._blind.get(dev.key)
        now = unreadable_text(needed)
        if needed and now != was:
            self._blind[dev.key] = now
            _log.warning(
                "gpu values unreadable",
                gpu=dev.index,
                uuid=dev.uuid,
                values=now,
                blind=",".join(blinded(needed)),
            )
        elif not needed and was is not None:
            del self._blind[dev.key]
            _log.info("gpu values readable again", gpu=dev.index, uuid=dev.uuid, were=was)
        return values

    def _mark_lost(self, dev: _Device, reason: str) -> None:
        """Mark ``dev`` lost; logged and counted once per loss (by UUID), not per retry."""
        dev.lost = True
        if dev.key not in self._lost:
            self._lost.add(dev.key)
            self.gpus_lost_total += 1
            _log.warning("gpu lost", gpu=dev.index, uuid=dev.uuid or None, reason=reason)

    def _call(self, dev: _Device, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; None if unsupported or failed; raises _GpuLostError if the GPU is gone."""
        if what in dev.unsupported:
            return None
        self.calling = (what, dev.index)
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            self._failed(dev, what, error_code(exc))
            return None

    def _failed(self, dev: _Device, what: str, code: int) -> None:
        if code in _WHOLE_LIBRARY_GONE:
            raise _GpuLostError(code)
        if code in _UNSUPPORTED:
            dev.unsupported.add(what)
            if what in VALUES and (dev.key, what) not in self._noted:
                self._noted.add((dev.key, what))
                blinded = BLINDED.get(what, ())
                (_log.warning if blinded else _log.info)(
                    "gpu value not supported",
                    gpu=dev.index,
                    uuid=dev.uuid,
                    value=what,
                    reason=error_name(code),
                    blind=",".join(blinded) or None,
                )
            return
        self.field_errors += 1
        dev.failed[_VALUE_OF.get(what, what)] = code
        if (what, code) not in dev.logged:
            dev.logged.add((what, code))
            _log.warning("gpu value unreadable", gpu=dev.index, value=what, reason=error_name(code))

    def _sample(self, dev: _Device, ts: float) -> GpuSample:
        p = nvml.pynvml
        h = dev.handle
        if dev.failed:
            dev.failed = {}
        util = self._call(dev, "utilization", p.nvmlDeviceGetUtilizationRates, h)
        reserved: int | None = None
        mem: Any = None
        if dev.memory_v2:
            mem = self._call(dev, "memory_v2", p.nvmlDeviceGetMemoryInfo, h, _MEMORY_V2)
            if mem is None and "memory_v2" in dev.unsupported:
                dev.memory_v2 = False
            elif mem is not None:
                reserved = int(mem.reserved)
        if not dev.memory_v2:
            mem = self._call(dev, "memory", p.nvmlDeviceGetMemoryInfo, h)
        temp = self._call(dev, "temperature", p.nvmlDeviceGetTemperature, h, _TEMPERATURE_GPU)
        power = self._call(dev, "power", p.nvmlDeviceGetPowerUsage, h)
        energy = self._call(dev, "energy", p.nvmlDeviceGetTotalEnergyConsumption, h)
        ecc_c = self._call(
            dev, "ecc", p.nvmlDeviceGetTotalEccErrors, h, _ECC_CORRECTED, _ECC_VOLATILE
        )
        ecc_u = (
            None
            if ecc_c is None
            else self._call(
                dev, "ecc", p.nvmlDeviceGetTotalEccErrors, h, _ECC_UNCORRECTED, _ECC_VOLATILE
            )
        )
        throttle: Any = None
        event_reasons = getattr(p, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if event_reasons is None:  # pynvml older than the 535 drivers' rename
            dev.event_reasons = False
        if dev.event_reasons and event_reasons is not None:
            throttle = self._call(dev, "event_reasons", event_reasons, h)
            if throttle is None and "event_reasons" in dev.unsupported:
                dev.event_reasons = False
        if not dev.event_reasons:
            throttle = self._call(
                dev, "throttle_reasons", p.nvmlDeviceGetCurrentClocksThrottleReasons, h
            )
        mig = self._call(dev, "mig", p.nvmlDeviceGetMigMode, h)
        return GpuSample(
            ts=ts,
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            pci_bus_id=dev.bus,
            lost=False,
            utilization_gpu=None if util is None else util.gpu / 100.0,
            utilization_memory=None if util is None else util.memory / 100.0,
            memory_total_bytes=None if mem is None else int(mem.total),
            memory_used_bytes=None if mem is None else int(mem.used),
            memory_free_bytes=None if mem is None else int(mem.free),
            memory_reserved_bytes=reserved,
            temperature_celsius=None if temp is None else float(temp),
            power_watts=None if power is None else power / 1000.0,
            energy_joules=None if energy is None else energy / 1000.0,
            ecc_corrected=ecc_c,
            ecc_uncorrected=ecc_u,
            throttle_reasons=throttle,
            mig_enabled=None if mig is None else mig[0] == 1,
            processes=self._processes(dev),
        )

    def _processes(self, dev: _Device) -> tuple[GpuProcessSample, ...]:
        p = nvml.pynvml
        h = dev.handle
        compute = self._call(dev, "compute_processes", p.nvmlDeviceGetComputeRunningProcesses, h)
        graphics = self._call(dev, "graphics_processes", p.nvmlDeviceGetGraphicsRunningProcesses, h)
        procs: dict[int, list[Any]] = {}  # pid -> [kind, used memory]
        for kind, found in (("compute", compute), ("graphics", graphics)):
            for proc in found or ():
                pid = int(proc.pid)
                used = proc.usedGpuMemory
                entry = procs.get(pid)
                if entry is None:
                    procs[pid] = [kind, used]
                else:
                    entry[0] = "both"
                    if used is not None and (entry[1] is None or used > entry[1]):
                        entry[1] = used
        if not procs:
            return ()
        util = self._process_util(dev)
        attribute = self._attribute if self._attributor is not None else None
        out = []
        for pid, (kind, used) in procs.items():
            sm, mem = util.get(pid, (0.0, 0.0)) if util is not None else (None, None)
            out.append(
                GpuProcessSample(
                    gpu_index=dev.index,
                    gpu_uuid=dev.uuid,
                    pid=pid,
                    kind=kind,
                    used_memory_bytes=None if used is None else int(used),
                    sm_util=sm,
                    memory_util=mem,
                    attribution=None if attribute is None else attribute(pid),
                )
            )
        return tuple(out)

    def _attribute(self, pid: int) -> ProcessAttribution | None:
        """Once per pid per sample, however many GPUs it is on."""
        memo = self._round
        if pid in memo:
            return memo[pid]
        attributor = self._attributor
        found = memo[pid] = attributor.attribute(pid) if attributor is not None else None
        return found

    def _process_util(self, dev: _Device) -> dict[int, tuple[float, float]] | None:
        """pid -> (SM, memory) utilization since the last call; None if unsupported."""
        what = "process_utilization"
        if what in dev.unsupported:
            return None
        self.calling = (what, dev.index)
        try:
            samples = nvml.pynvml.nvmlDeviceGetProcessUtilization(dev.handle, dev.last_util_ts)
        except nvml.NVMLError as exc:
            code = error_code(exc)
            if code == nvml.NOT_FOUND:  # no sample since the last call: idle
                return {}
            self._failed(dev, what, code)
            return None
        # Each field read of a pynvml struct costs a Python __getattribute__: read once.
        latest: dict[int, tuple[int, float, float]] = {}
        newest = dev.last_util_ts
        for sample in samples:
            pid = sample.pid
            stamp = sample.timeStamp
            seen = latest.get(pid)
            if seen is None or stamp >= seen[0]:
                latest[pid] = (stamp, sample.smUtil / 100.0, sample.memUtil / 100.0)
            newest = max(newest, stamp)
        dev.last_util_ts = newest
        return {pid: (sm, mem) for pid, (_, sm, mem) in latest.items()}


def _lost_sample(dev: _Device, ts: float) -> GpuSample:
    return GpuSample(
        ts=ts,
        index=dev.index,
        uuid=dev.uuid,
        name=dev.name,
        pci_bus_id=dev.bus,
        lost=True,
        utilization_gpu=None,
        utilization_memory=None,
        memory_total_bytes=None,
        memory_used_bytes=None,
        memory_free_bytes=None,
        memory_reserved_bytes=None,
        temperature_celsius=None,
        power_watts=None,
        energy_joules=None,
        ecc_corrected=None,
        ecc_uncorrected=None,
        throttle_reasons=None,
        mig_enabled=None,
    )
