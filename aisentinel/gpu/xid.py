"""Xid errors: the kernel log line parser and the NVML event thread.

The kernel (NVRM) writes one line per Xid error, for example::

    NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
    NVRM: Xid (PCI:0000:01:00): 31, pid=2245, name=python3, Ch 00000008, intr 10000000. ...

:func:`parse_xid_line` turns such a line into an :class:`XidEvent`. :class:`XidWatcher`
waits on an NVML event set for critical Xid events on its own thread; it keeps its own
NVML reference (``nvmlInit``/``nvmlShutdown`` are reference counted) and re-creates
the set with back-off after a failure such as a GPU falling off the bus.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import re
import threading
from collections.abc import Callable
from typing import Any, Final

import structlog

from aisentinel.clock import Clock
from aisentinel.events import XidEvent
from aisentinel.gpu import nvml
from aisentinel.gpu.nvml import error_code, error_text

_log = structlog.get_logger(__name__)

MAX_MESSAGE: Final = 256
MAX_NAME: Final = 64
XID_CRITICAL: Final = 0x8  # nvmlEventTypeXidCriticalError

_LINE = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2})"
    r"(?:\.[0-9A-Fa-f])?\): (?P<xid>\d{1,5})(?P<rest>.*)$"
)
_PID = re.compile(r",?\s*pid=(?:'?<unknown>'?|(?P<pid>\d{1,10}))")
_NAME = re.compile(r",?\s*name=(?P<name>[^,]*)")


def normalize_bus_id(text: str) -> str | None:
    """``00000000:3B:00.0`` or ``0000:3b:00`` -> ``0000:3b:00``; None if it is not one."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        domain = int(parts[0], 16)
        bus = int(parts[1], 16)
        device = int(parts[2].split(".", 1)[0], 16)
    except ValueError:
        return None
    if domain > 0xFFFF_FFFF or bus > 0xFF or device > 0x1F:
        return None
    return f"{domain & 0xFFFF:04x}:{bus:02x}:{device:02x}"


def parse_xid_line(line: str, ts: float) -> XidEvent | None:
    """An ``NVRM: Xid`` kernel line (any prefix) as an event at ``ts``; None otherwise."""
    at = line.find("NVRM: Xid (")
    if at < 0:
        return None
    m = _LINE.match(line, at)
    if m is None:
        return None
    bus = normalize_bus_id(m.group("bus"))
    rest = m.group("rest")
    pid: int | None = None
    name: str | None = None
    pm = _PID.match(rest)
    if pm is not None:
        if pm.group("pid") is not None:
            pid = int(pm.group("pid"))
        rest = rest[pm.end() :]
        nm = _NAME.match(rest)
        if nm is not None:
            value = nm.group("name").strip()
            name = None if value in ("", "<unknown>") else value[:MAX_NAME]
            rest = rest[nm.end() :]
    message = rest.lstrip(", ").strip()[:MAX_MESSAGE]
    return XidEvent(
        ts=ts,
        xid=int(m.group("xid")),
        source="kernel",
        pci_bus_id=bus,
        pid=pid,
        process_name=name,
        message=message,
    )


class WatcherState(enum.StrEnum):
    """What the Xid watcher is doing."""

    STOPPED = "stopped"
    STARTING = "starting"
    WATCHING = "watching"
    UNAVAILABLE = "unavailable"  # NVML, the driver, or Xid events are not available
    RETRYING = "retrying"


class XidWatcher:
    """Waits for critical Xid events on an NVML event set; ``emit`` gets each one.

    ``start()`` returns at once; ``stop()`` returns within about ``wait_ms``.
    Failures never leave the thread: one log line per change of state, a counter, and
    a retry with back-off (``retry_initial`` doubling to ``retry_max`` seconds).
    """

    def __init__(
        self,
        emit: Callable[[XidEvent], None],
        clock: Clock,
        *,
        wait_ms: int = 500,
        retry_initial: float = 1.0,
        retry_max: float = 300.0,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._wait_ms = wait_ms
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = WatcherState.STOPPED
        self.reason = ""
        self.events_total = 0
        self.failures_total = 0
        self.emit_errors = 0

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._set(WatcherState.STARTING, "")
        self._thread = threading.Thread(target=self._run, name="gpu-xid", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the event set and NVML."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _log.warning("gpu xid watcher did not stop in time")
            self._thread = None
        self._set(WatcherState.STOPPED, "")

    def _set(self, state: WatcherState, reason: str) -> None:
        if (state, reason) != (self.state, self.reason) and state in (
            WatcherState.UNAVAILABLE,
            WatcherState.RETRYING,
        ):
            _log.warning("gpu xid events unavailable", state=state.value, reason=reason)
        elif state is WatcherState.WATCHING and self.state is not WatcherState.WATCHING:
            _log.info("gpu xid events watched", reason=reason)
        self.state = state
        self.reason = reason

    def _run(self) -> None:
        delay = self._retry_initial
        if nvml.pynvml is None:
            self._set(WatcherState.UNAVAILABLE, "pynvml (nvidia-ml-py) is not installed")
            return
        while not self._stop.is_set():
            started = self._session()
            if self._stop.is_set():
                break
            self.failures_total += 1
            delay = self._retry_initial if started else min(delay * 2, self._retry_max)
            self._stop.wait(delay)

    def _session(self) -> bool:
        """One init .. shutdown; returns True if it got as far as watching."""
        try:
            nvml.pynvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._set(WatcherState.UNAVAILABLE, f"nvmlInit: {error_text(exc)}")
            return False
        event_set: Any = None
        watching = False
        try:
            event_set = nvml.pynvml.nvmlEventSetCreate()
            devices = self._register(event_set)
            if not devices:
                self._set(WatcherState.UNAVAILABLE, "no GPU supports Xid events")
                return False
            self._set(WatcherState.WATCHING, f"{len(devices)} GPU(s)")
            watching = True
            self._wait_loop(event_set, devices)
        except nvml.NVMLError as exc:
            self._set(WatcherState.RETRYING, error_text(exc))
        finally:
            if event_set is not None:
                with contextlib.suppress(nvml.NVMLError):
                    nvml.pynvml.nvmlEventSetFree(event_set)
            with contextlib.suppress(nvml.NVMLError):
                nvml.pynvml.nvmlShutdown()
        return watching

    def _register(self, event_set: Any) -> dict[int, tuple[int, str | None, str | None]]:
        devices: dict[int, tuple[int, str | None, str | None]] = {}
        for index in range(nvml.pynvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.pynvml.nvmlDeviceGetHandleByIndex(index)
                if not nvml.pynvml.nvmlDeviceGetSupportedEventTypes(handle) & XID_CRITICAL:
                    continue
                nvml.pynvml.nvmlDeviceRegisterEvents(handle, XID_CRITICAL, event_set)
                uuid = _text(nvml.pynvml.nvmlDeviceGetUUID(handle))
                try:
                    bus = normalize_bus_id(_text(nvml.pynvml.nvmlDeviceGetPciInfo(handle).busId))
                except nvml.NVMLError:
                    bus = None
            except nvml.NVMLError as exc:
                _log.warning("gpu xid events not registered", gpu=index, reason=error_text(exc))
                continue
            devices[_address(handle)] = (index, uuid, bus)
        return devices

    def _wait_loop(
        self, event_set: Any, devices: dict[int, tuple[int, str | None, str | None]]
    ) -> None:
        timeout = nvml.pynvml.NVML_ERROR_TIMEOUT
        while not self._stop.is_set():
            try:
                data = nvml.pynvml.nvmlEventSetWait_v2(event_set, self._wait_ms)
            except nvml.NVMLError as exc:
                if error_code(exc) == timeout:
                    continue
                raise
            if not data.eventType & XID_CRITICAL:
                continue
            index, uuid, bus = devices.get(_address(data.device), (None, None, None))
            event = XidEvent(
                ts=self._clock.now(),
                xid=int(data.eventData),
                source="nvml",
                gpu_index=index,
                gpu_uuid=uuid,
                pci_bus_id=bus,
            )
            self.events_total += 1
            try:
                self._emit(event)
            except Exception:  # noqa: BLE001 - the consumer's fault must not stop the watcher
                self.emit_errors += 1


def _address(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
