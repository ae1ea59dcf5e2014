"""The ``nvml`` source: GPU samples and Xid errors as typed events, and the GPU metrics.

It samples every GPU through NVML (:class:`~aisentinel.gpu.sampler.GpuSampler`) every
``interval`` on its own thread, timed with the injected clock (``Clock.wait``), and
hands each reading on as one :class:`~aisentinel.events.EventBatch` of
:class:`~aisentinel.events.GpuSample` values (each holds its GPU's processes, with
their attribution) plus the :class:`~aisentinel.events.XidEvent` values the NVML event
watcher (:class:`~aisentinel.gpu.xid.XidWatcher`, its own thread) reported since the
previous sample. A full pipeline queue makes this thread wait, never the log readers.

Attribution reads ``proc_root`` (``/proc``) and, when the Docker engine's socket
exists, asks the Docker API for container names (:mod:`~aisentinel.gpu.dockernames`:
lazily imported, cached, bounded); without an engine a container is named by its id.

No NVML library, no driver, no GPU, or every GPU lost: the daemon keeps running, the
sampler logs the change once and retries with back-off, the source is not up
(``waiting`` for a missing library, driver or GPU; ``error`` for a lost GPU or a
fault) with the sampler's reason (``aisentinel status``), and
``aisentinel_gpu_collector_up`` is 0. Some GPUs lost (or gone from the driver's list):
``degraded``, the others sampled.

An NVML call that never returns (a wedged driver: ``nvidia-smi`` hangs too) holds the
sampler thread. A watchdog thread notices when the sample in progress began more than
:attr:`NvmlSource.stuck_after` ago (3 intervals, at least :data:`STUCK_MIN_SECONDS`):
it logs it once, the source is in ``error`` with the reason ``sampler stuck in NVML
since ...`` (the call named), the collector's state is ``stuck`` (down), and the
per-GPU values of the last sample are no longer served (only ``aisentinel_gpu_info``
and the last sample's timestamp stay). When the call returns, that is logged and
sampling goes on.

Values a GPU does not support (utilization on a MIG GPU...) are logged once by the
sampler, exported (``aisentinel_gpu_value_supported``) and listed as notes in
``aisentinel status`` (:meth:`NvmlSource.notes`). A value that keeps failing with another
error (``UNKNOWN`` from a wedged GPU, ``NO_PERMISSION``) is unreadable after
:data:`~aisentinel.gpu.sampler.UNREADABLE_AFTER` samples in a row: one a GPU detector
needs makes the source ``degraded`` with the GPU and the values in its reason (``aisentinel
status`` exits 1) and ``aisentinel_gpu_unreadable`` 1 for that GPU; any other is a note.
A process list not read in a sample gives no ``aisentinel_gpu_processes`` for that GPU
(never a count of 0 for processes that were not seen).

Metrics (:meth:`NvmlSource.collect`, at scrape time, from the last reading) follow
Prometheus conventions; per-process series are bounded: the top ``top_processes`` per
GPU (:func:`~aisentinel.gpu.topn.bound_processes`) labelled by workload
(``container:ollama``, ``unit:vllm.service``, ``pid:4242 xmrig``), the rest summed as
``other``. Xid errors are a counter and a last-seen timestamp by GPU and Xid code (at
most :data:`MAX_XID_SERIES` pairs, then ``xid="other"``).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.configtypes import Interval
from aisentinel.events import Event, EventBatch, GpuProcessSample, GpuSample, XidEvent
from aisentinel.gpu.attribution import ProcessAttributor
from aisentinel.gpu.dockernames import DockerNames
from aisentinel.gpu.sampler import (
    BLINDED,
    PROCESS_LISTS,
    UNREADABLE_AFTER,
    VALUES,
    GpuReading,
    GpuSampler,
    GpuState,
    blind_text,
    unreadable_text,
)
from aisentinel.gpu.topn import OTHER_KIND, bound_processes
from aisentinel.gpu.xid import XidWatcher
from aisentinel.metrics import counter, gauge
from aisentinel.sources.base import (
    REGISTRY,
    Emit,
    Source,
    SourceConfigBase,
    SourceState,
    merge_counts,
)
from aisentinel.textsafe import escape

_log = structlog.get_logger(__name__)

MAX_XID_SERIES: Final = 256
"""Most (GPU, Xid code) pairs exported; later pairs count under ``xid="other"``."""

MAX_PENDING_XIDS: Final = 1024
"""Most Xid events held between two samples (a storm beyond it is counted, not queued)."""

WORKLOAD_LABEL_MAX: Final = 80

STUCK_INTERVALS: Final = 3
STUCK_MIN_SECONDS: Final = 30.0
"""A sample that has not returned after ``STUCK_INTERVALS`` intervals, and at least this
long, is stuck in NVML (a wedged driver)."""

THROTTLE_REASONS: Final = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
"""NVML's clocks event (throttle) reason bits, as exported (a fixed, bounded set)."""

_STATE: Final[dict[GpuState, SourceState]] = {
    GpuState.UP: "following",
    GpuState.DEGRADED: "degraded",
    GpuState.NO_LIBRARY: "waiting",
    GpuState.NO_DRIVER: "waiting",
    GpuState.NO_GPU: "waiting",
    GpuState.LOST: "error",
    GpuState.STUCK: "error",
    GpuState.NO_PERMISSION: "error",
    GpuState.ERROR: "error",
    GpuState.STOPPED: "stopped",
}


class NvmlSourceConfig(SourceConfigBase):
    """``[[sources]]`` with ``type = "nvml"``."""

    type: Literal["nvml"]
    interval: Interval = 1.0
    """Time between two samples of every GPU; 10ms-1h."""
    top_processes: Annotated[int, Field(ge=1, le=64)] = 5
    """Processes per GPU with their own workload label in the metrics; the rest is ``other``."""
    xid_events: bool = True
    """Watch NVML's critical Xid events on a thread of their own."""
    docker_socket: str = "/var/run/docker.sock"
    """Container names come from this Docker engine socket when it exists; "" = never ask."""
    proc_root: str = "/proc"
    """Where process attribution reads ``PID/{stat,exe,cmdline,status,cgroup}``."""
    retry_max: Interval = 300.0
    """Longest wait between two tries to initialise NVML (the back-off doubles from 1s)."""


def workload_label(proc: GpuProcessSample) -> str:
    """The bounded, escaped workload label of one process (or ``other``) for metrics:
    what its workload target is (``container:ollama``, ``unit:vllm.service``,
    ``cgroup:/machine.slice/libpod-<id>.scope``, ``pid:4242 xmrig``). A cgroup path too
    long for the label keeps its end, the workload's own cgroup: ``cgroup:…<end>``."""
    if proc.kind == OTHER_KIND:
        return "other"
    a = proc.attribution
    cgroup = None if a is None else a.workload_cgroup()
    if a is None:
        text = f"pid:{proc.pid}"
    elif cgroup is not None:
        text = f"cgroup:{cgroup}"
        if len(text) > WORKLOAD_LABEL_MAX:
            text = "cgroup:…" + cgroup[len(text) - WORKLOAD_LABEL_MAX + 1 :]
    elif a.container_id is not None and a.cgroup is None:
        text = f"container:{a.container_name or a.container_id[:12]}"
    elif a.unit is not None and a.unit.endswith(".service"):
        text = f"unit:{a.unit}"
    else:
        what = a.exe or (a.cmdline[0] if a.cmdline else "?")
        text = f"pid:{proc.pid} {what.rsplit('/', 1)[-1] or what}"
    return escape(text)[:WORKLOAD_LABEL_MAX]


class NvmlSource(Source):
    """Samples the GPUs on its own thread; see the module docstring."""

    config: NvmlSourceConfig

    def __init__(self, config: NvmlSourceConfig, *, clock: Clock, state_dir: Path) -> None:
        super().__init__(config, clock=clock, state_dir=state_dir)
        self.config = config
        self._docker = DockerNames(clock, config.docker_socket) if config.docker_socket else None
        self.attributor = ProcessAttributor(Path(config.proc_root), resolver=self._docker)
        self.sampler = GpuSampler(clock, attributor=self.attributor, retry_max=config.retry_max)
        self.watcher: XidWatcher | None = (
            XidWatcher(self._on_xid, clock) if config.xid_events else None
        )
        self._stopping = threading.Event()
        self._sampled = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self.stuck_after = max(STUCK_INTERVALS * config.interval, STUCK_MIN_SECONDS)
        """How long a sample may be inside NVML before the source says it is stuck."""
        self._busy: tuple[float, float] | None = None  # the sample in progress: monotonic, wall
        self._stuck_lock = threading.Lock()
        self.stuck_since: float | None = None
        """When (Unix time) the sample that is stuck began; None while samples return."""
        self._problem = ""
        """The reason last made the last error by :meth:`_set_state`."""
        self._pending: collections.deque[XidEvent] = collections.deque()
        self._pending_lock = threading.Lock()
        self.last: GpuReading | None = None
        self.last_duration = 0.0
        self.samples = 0
        self.xid_dropped = 0
        self._xids: dict[tuple[str, str], list[float]] = {}  # (gpu, xid) -> [count, last ts]

    # ------------------------------------------------------------------ lifecycle

    def start(self, emit: Emit) -> None:
        """Start the sampler thread (and the Xid watcher's); returns at once."""
        if self._thread is not None:
            raise RuntimeError(f"nvml source {self.name!r} is already started")
        self._thread = threading.Thread(
            target=self._run, args=(emit,), name=f"aisentinel-source-{self.name}", daemon=True
        )
        self._thread.start()
        self._watchdog = threading.Thread(
            target=self._watch, name=f"aisentinel-source-{self.name}-watchdog", daemon=True
        )
        self._watchdog.start()
        if self.watcher is not None:
            self.watcher.start()

    def request_stop(self) -> None:
        """Hand on no further sample."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop both threads and release NVML and the Docker client."""
        self._stopping.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5.0)
            self._watchdog = None
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                _log.warning("gpu sampler did not stop in time", source=self.name)
            self._thread = None
        if self._docker is not None:
            self._docker.close()
        self.stats.set_state("stopped", "stopped")

    def ready(self) -> bool:
        """True once the first sample was taken (whatever it found)."""
        return self._sampled.is_set()

    # ------------------------------------------------------------------ thread

    def _on_xid(self, event: XidEvent) -> None:
        """The watcher thread's callback: queue the event for the next batch."""
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING_XIDS:
                self.xid_dropped += 1
                return
            self._pending.append(event)

    def _run(self, emit: Emit) -> None:
        clock = self.clock
        interval = self.config.interval
        while not self._stopping.is_set():
            started = clock.monotonic()
            try:
                self._once(emit, started)
            except Exception as exc:  # noqa: BLE001 - never raise out of the thread; retry
                self.stats.errors += 1
                message = f"gpu sample failed: {type(exc).__name__}: {exc}"
                if message != self.stats.last_error:
                    self.stats.last_error = message
                    _log.warning("gpu sample failed", source=self.name, reason=str(exc))
            self._sampled.set()
            clock.wait(self._stopping, max(0.0, interval - (clock.monotonic() - started)))
        self.sampler.close()

    def _watch(self) -> None:
        """The watchdog thread: is the sample in progress stuck in NVML?"""
        tick = min(max(self.config.interval, 1.0), 5.0)
        while not self.clock.wait(self._stopping, tick):
            self.check_stuck()

    def check_stuck(self) -> None:
        """Say so (state, reason, one log line) once the sample in progress has been in
        NVML for :attr:`stuck_after`; the sampler thread clears it when the call returns."""
        with self._stuck_lock:
            busy = self._busy
            if busy is None or self.stuck_since is not None:
                return
            began, wall = busy
            waited = self.clock.monotonic() - began
            if waited < self.stuck_after:
                return
            self.stuck_since = wall
            what, index = self.sampler.calling
            call = what if index is None else f"{what}, GPU {index}"
            since = _iso(wall)
            self._set_state("error", f"sampler stuck in NVML since {since} ({call})")
        _log.warning(
            "gpu sampler stuck",
            source=self.name,
            since=since,
            call=call,
            waited_seconds=round(waited, 1),
        )

    def _set_state(self, state: SourceState, reason: str) -> None:
        """Set the source's state. While it is a problem (down, or degraded: some GPUs
        lost or unreadable) its reason is the last error, which status shows beside an
        up source too; once the source is up again that reason is over and cleared."""
        if not self.stats.set_state(state, reason):
            return
        if state == "following":
            if self.stats.last_error == self._problem:
                self.stats.last_error = ""
        elif state != "stopped":
            self.stats.last_error = self._problem = reason

    def _answered(self) -> None:
        """The sample in progress returned (sampler thread); log it if it was stuck."""
        with self._stuck_lock:
            self._busy = None
            since = self.stuck_since
            self.stuck_since = None
        if since is not None:
            _log.info(
                "gpu sampler answered again",
                source=self.name,
                stuck_since=_iso(since),
                stuck_seconds=round(self.clock.now() - since, 1),
            )

    def _once(self, emit: Emit, started: float) -> None:
        self._busy = (started, self.clock.now())
        try:
            reading = self.sampler.sample()
        finally:
            self._answered()
        self.last_duration = self.clock.monotonic() - started
        self.samples += 1
        self.last = reading
        self._set_state(_STATE.get(reading.state, "error"), reading.reason)
        with self._pending_lock:
            xids = list(self._pending)
            self._pending.clear()
        for xid in xids:
            self._count_xid(xid, reading)
        events: list[Event] = [*reading.gpus, *xids]
        if events and not self._stopping.is_set():
            emit(EventBatch(self.name, events, started))
            self.stats.lines_read += len(events)

    def _count_xid(self, event: XidEvent, reading: GpuReading) -> None:
        gpu = "unknown"
        if event.gpu_index is not None:
            gpu = str(event.gpu_index)
        elif event.pci_bus_id is not None:
            for sample in reading.gpus:
                if sample.pci_bus_id == event.pci_bus_id:
                    gpu = str(sample.index)
        key = (gpu, str(event.xid))
        entry = self._xids.get(key)
        if entry is None:
            if len(self._xids) >= MAX_XID_SERIES:
                key = (gpu, "other")
                entry = self._xids.get(key)
            if entry is None:
                entry = self._xids[key] = [0.0, 0.0]
        entry[0] += 1
        entry[1] = max(entry[1], event.ts)

    # ------------------------------------------------------------------ metrics

    def carry_over(self, old: Source) -> None:
        """The stats and the Xid counts of ``old`` (see :meth:`Source.carry_over`)."""
        super().carry_over(old)
        if isinstance(old, NvmlSource):
            merge_counts(self._xids, old._xids)

    def notes(self) -> list[str]:
        """What the last reading could not see: values the GPUs do not support, and
        unreadable values no detector needs (those a detector needs are in the reason of
        the ``degraded`` state)."""
        reading = self.last
        if reading is None:
            return []
        out = []
        for index, values in sorted(reading.unsupported.items()):
            if values:
                note = f"GPU {index}: NVML does not support {', '.join(sorted(values))}"
                out.append(note + blind_text(values))
        for index, failing in sorted(reading.unreadable.items()):
            others = {v: e for v, e in failing.items() if v not in BLINDED}
            if others:
                out.append(f"GPU {index}: cannot read {unreadable_text(others)}")
        for sample in reading.gpus:
            hidden = sum(1 for p in sample.processes if p.attribution and not p.attribution.exe)
            if hidden:
                out.append(
                    f"GPU {sample.index}: {hidden} process(es) whose executable and sockets the "
                    "daemon may not read (another user's, daemon not root): named by command "
                    "name, pool connections matched by their user"
                )
            pids = unattributed(sample)
            if pids:
                shown = ", ".join(map(str, pids[:5])) + (", ..." if len(pids) > 5 else "")
                out.append(
                    f"GPU {sample.index}: pid {shown} not in {self.config.proc_root}: "
                    "reported by pid only (another pid namespace, hidepid, "
                    "ProtectProc=invisible)"
                )
        return out

    def collect(self) -> Iterator[Metric]:  # noqa: PLR0915 - one family after another
        """The source's families plus the GPU metrics of the last reading (none of its
        values while a sample is stuck in NVML: they would be stale)."""
        yield from super().collect()
        src = {"source": self.name}
        reading = self.last
        sampler = self.sampler
        stuck = self.stuck_since is not None
        state = reading.state if reading is not None else sampler.state
        if stuck:
            state = GpuState.STUCK
        yield gauge(
            "aisentinel_gpu_collector_up",
            "1 when NVML answers and at least one GPU is sampled, else 0 (the reason is in "
            "aisentinel status and the log).",
            src,
            1 if state in (GpuState.UP, GpuState.DEGRADED) else 0,
        )
        states = GaugeMetricFamily(
            "aisentinel_gpu_collector_state",
            "1 for the GPU collector's current state, 0 for the others.",
            labels=["source", "state"],
        )
        for each in GpuState:
            states.add_metric([self.name, each.value], 1 if each is state else 0)
        yield states
        yield counter(
            "aisentinel_gpu_samples", "GPU samples taken (every GPU per sample).", src, self.samples
        )
        yield counter(
            "aisentinel_gpu_init_failures",
            "Failed NVML initialisations (no library, driver or GPU; retried with back-off).",
            src,
            sampler.init_failures,
        )
        yield counter(
            "aisentinel_gpu_lost_events",
            "Times a GPU was lost: fell off the bus, could not be opened or identified, or "
            "left the driver's list of GPUs.",
            src,
            sampler.gpus_lost_total,
        )
        yield counter(
            "aisentinel_gpu_value_errors",
            "GPU values that could not be read (not counting unsupported ones).",
            src,
            sampler.field_errors,
        )
        yield gauge(
            "aisentinel_gpu_sample_duration_seconds",
            "How long the last sample of every GPU and its processes took.",
            src,
            self.last_duration,
        )
        yield gauge(
            "aisentinel_gpu_last_sample_timestamp_seconds",
            "When the GPUs were last sampled (Unix time; 0 before the first sample).",
            src,
            reading.ts if reading is not None else 0.0,
        )
        gpus = (*reading.gpus, *reading.missing) if reading is not None else ()
        info = GaugeMetricFamily(
            "aisentinel_gpu_info",
            "1 per GPU: its identity (index, UUID, model name, driver version).",
            labels=["gpu", "uuid", "name", "driver"],
        )
        driver = sampler.driver_version or ""
        lost = GaugeMetricFamily(
            "aisentinel_gpu_lost",
            "1 while the GPU is lost: off the bus, not answering its handle or identity, or "
            "gone from the driver's list (then gpu is the index it last had).",
            labels=["gpu", "uuid"],
        )
        unreadable = GaugeMetricFamily(
            "aisentinel_gpu_unreadable",
            "1 while a value a GPU detector needs (utilization, memory, the process lists) "
            f"has failed to read in each of the last {UNREADABLE_AFTER} samples (e.g. "
            "NVML_ERROR_UNKNOWN from a wedged GPU): the detectors that need it cannot watch "
            "that GPU; else 0.",
            labels=["gpu", "uuid"],
        )
        supported = GaugeMetricFamily(
            "aisentinel_gpu_value_supported",
            "0 once NVML said the GPU does not support the value (e.g. utilization on a "
            "MIG GPU: the detectors that need it cannot watch that GPU), else 1.",
            labels=["gpu", "value"],
        )
        unsupported = reading.unsupported if reading is not None else {}
        failing = reading.unreadable if reading is not None else {}
        failed = reading.failed if reading is not None else {}
        gauges: dict[str, tuple[str, str, list[tuple[str, float]]]] = {
            "utilization_gpu": (
                "aisentinel_gpu_utilization_ratio",
                "Fraction of the last sample period a kernel ran on the GPU (0-1).",
                [],
            ),
            "utilization_memory": (
                "aisentinel_gpu_memory_utilization_ratio",
                "Fraction of the last sample period device memory was read or written (0-1).",
                [],
            ),
            "memory_used_bytes": ("aisentinel_gpu_memory_used_bytes", "GPU memory in use.", []),
            "memory_free_bytes": ("aisentinel_gpu_memory_free_bytes", "GPU memory free.", []),
            "memory_total_bytes": (
                "aisentinel_gpu_memory_total_bytes",
                "GPU memory installed.",
                [],
            ),
            "temperature_celsius": (
                "aisentinel_gpu_temperature_celsius",
                "GPU core temperature.",
                [],
            ),
            "power_watts": ("aisentinel_gpu_power_watts", "GPU power draw.", []),
        }
        energy = CounterMetricFamily(
            "aisentinel_gpu_energy_joules",
            "Energy the GPU consumed since the driver was loaded.",
            labels=["gpu"],
        )
        ecc = CounterMetricFamily(
            "aisentinel_gpu_ecc_errors",
            "Volatile ECC errors since the driver was loaded, by type (where supported).",
            labels=["gpu", "type"],
        )
        throttle = GaugeMetricFamily(
            "aisentinel_gpu_throttle_reason",
            "1 while the clocks are held down for this reason (NVML clocks event reasons).",
            labels=["gpu", "reason"],
        )
        proc_mem = GaugeMetricFamily(
            "aisentinel_gpu_process_memory_used_bytes",
            "GPU memory used by a workload: the top processes per GPU, the rest as 'other'.",
            labels=["gpu", "workload"],
        )
        proc_sm = GaugeMetricFamily(
            "aisentinel_gpu_process_sm_utilization_ratio",
            "Fraction of the GPU's SMs a workload kept busy (0-1): the top processes per "
            "GPU, the rest as 'other'.",
            labels=["gpu", "workload"],
        )
        procs = GaugeMetricFamily(
            "aisentinel_gpu_processes",
            "Processes on the GPU (none while a process list fails to read: not 0).",
            labels=["gpu"],
        )
        blind_procs = GaugeMetricFamily(
            "aisentinel_gpu_unattributed_processes",
            "Processes on the GPU whose /proc entry the daemon cannot read (another pid "
            "namespace, hidepid): no executable, unit or container to name them.",
            labels=["gpu"],
        )
        for sample in gpus:
            g = str(sample.index)
            info.add_metric([g, sample.uuid, escape(sample.name), driver], 1)
            if stuck:
                continue
            lost.add_metric([g, sample.uuid], 1 if sample.lost else 0)
            if sample.lost:
                continue
            blind = not BLINDED.keys().isdisjoint(failing.get(sample.index, ()))
            unreadable.add_metric([g, sample.uuid], 1 if blind else 0)
            absent = unsupported.get(sample.index, frozenset())
            for what in VALUES:
                supported.add_metric([g, what], 0 if what in absent else 1)
            for attr, (_name, _help, values) in gauges.items():
                value = getattr(sample, attr)
                if value is not None:
                    values.append((g, float(value)))
            if sample.energy_joules is not None:
                energy.add_metric([g], sample.energy_joules)
            if sample.ecc_corrected is not None:
                ecc.add_metric([g, "corrected"], sample.ecc_corrected)
            if sample.ecc_uncorrected is not None:
                ecc.add_metric([g, "uncorrected"], sample.ecc_uncorrected)
            if sample.throttle_reasons is not None:
                for bit, reason in THROTTLE_REASONS:
                    throttle.add_metric([g, reason], 1 if sample.throttle_reasons & bit else 0)
            if PROCESS_LISTS.isdisjoint(failed.get(sample.index, ())):
                procs.add_metric([g], sum(p.count for p in sample.processes))
                blind_procs.add_metric([g], len(unattributed(sample)))
            per: dict[str, list[float | None]] = {}
            for proc in bound_processes(sample.processes, self.config.top_processes):
                entry = per.setdefault(workload_label(proc), [None, None])
                if proc.used_memory_bytes is not None:
                    entry[0] = (entry[0] or 0) + proc.used_memory_bytes
                if proc.sm_util is not None:
                    entry[1] = (entry[1] or 0.0) + proc.sm_util
            for label, (mem, sm) in per.items():
                if mem is not None:
                    proc_mem.add_metric([g, label], mem)
                if sm is not None:
                    proc_sm.add_metric([g, label], min(sm, 1.0))
        yield info
        yield lost
        yield unreadable
        yield supported
        for name, help_text, values in gauges.values():
            family = GaugeMetricFamily(name, help_text, labels=["gpu"])
            for g, value in values:
                family.add_metric([g], value)
            yield family
        yield energy
        yield ecc
        yield throttle
        yield procs
        yield blind_procs
        yield proc_mem
        yield proc_sm
        xid_count = CounterMetricFamily(
            "aisentinel_gpu_xid_errors",
            "Xid errors the NVML event watcher reported, by GPU and Xid code.",
            labels=["gpu", "xid"],
        )
        xid_seen = GaugeMetricFamily(
            "aisentinel_gpu_xid_last_seen_timestamp_seconds",
            "When each Xid code was last reported on each GPU (Unix time).",
            labels=["gpu", "xid"],
        )
        for (g, code), (count, ts) in sorted(dict(self._xids).items()):
            xid_count.add_metric([g, code], count)
            xid_seen.add_metric([g, code], ts)
        yield xid_count
        yield xid_seen
        watcher = self.watcher
        yield gauge(
            "aisentinel_gpu_xid_watcher_up",
            "1 while the NVML Xid event watcher is watching at least one GPU.",
            src,
            1 if watcher is not None and watcher.state.value == "watching" else 0,
        )
        yield counter(
            "aisentinel_gpu_xid_dropped",
            "Xid events dropped because too many arrived between two samples.",
            src,
            self.xid_dropped,
        )
        resolver = self._docker
        yield counter(
            "aisentinel_gpu_attribution_errors",
            "Container name lookups (Docker API) that failed; the container id is kept.",
            src,
            (resolver.errors if resolver is not None else 0) + self.attributor.resolver_errors,
        )


def unattributed(sample: GpuSample) -> list[int]:
    """The pids on the GPU whose ``/proc/PID`` could not be read (no attribution)."""
    return [p.pid for p in sample.processes if p.attribution is None and p.count == 1]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


REGISTRY.register("nvml", NvmlSourceConfig, NvmlSource)

__all__ = ["NvmlSource", "NvmlSourceConfig", "workload_label"]
