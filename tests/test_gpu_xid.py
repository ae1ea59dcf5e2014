"""Xid errors: the kernel line parser and the NVML event watcher against the fake library."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import wait_for
from fakenvml import FakeGpu, Scenario

from aisentinel.clock import FakeClock
from aisentinel.events import XidEvent
from aisentinel.gpu.xid import WatcherState, XidWatcher, normalize_bus_id, parse_xid_line


@pytest.mark.parametrize(
    ("line", "xid", "bus", "pid", "name", "message"),  # expected fields, flat for reading
    [
        (
            "kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.",
            79,
            "0000:3b:00",
            None,
            None,
            "GPU has fallen off the bus.",
        ),
        (
            "[ 1234.5678] NVRM: Xid (PCI:0000:01:00): 31, pid=2245, name=python3, Ch 00000008, "
            "intr 10000000. MMU Fault: ENGINE GRAPHICS",
            31,
            "0000:01:00",
            2245,
            "python3",
            "Ch 00000008, intr 10000000. MMU Fault: ENGINE GRAPHICS",
        ),
        (
            "NVRM: Xid (PCI:0000:3B:00): 79, pid=0, GPU has fallen off the bus.",
            79,
            "0000:3b:00",
            0,
            None,
            "GPU has fallen off the bus.",
        ),
        (
            "NVRM: Xid (0000:02:00): 13, Graphics Exception: ESR 0x404490=0x80000001",
            13,
            "0000:02:00",
            None,
            None,
            "Graphics Exception: ESR 0x404490=0x80000001",
        ),
    ],
)
def test_parse_xid_line(  # noqa: PLR0917 - one parameter per expected field
    line: str, xid: int, bus: str, pid: int | None, name: str | None, message: str
) -> None:
    """Kernel NVRM Xid lines of each driver era give code, bus, pid, name and message."""
    event = parse_xid_line(line, 1000.0)
    assert event == XidEvent(
        ts=1000.0,
        xid=xid,
        source="kernel",
        pci_bus_id=bus,
        pid=pid,
        process_name=name,
        message=message,
    )


@pytest.mark.parametrize(
    "line",
    ["NVRM: loading NVIDIA UNIX x86_64 Kernel Module", "NVRM: Xid (PCI:zz): 79, x", "Xid 79", ""],
)
def test_parse_xid_line_ignores_other_lines(line: str) -> None:
    """Lines that are not Xid reports give None."""
    assert parse_xid_line(line, 0.0) is None


def test_parse_xid_line_caps_untrusted_text() -> None:
    """The process name and message (attacker-influenced) are truncated."""
    event = parse_xid_line(
        f"NVRM: Xid (PCI:0000:01:00): 43, pid=1, name={'n' * 500}, {'m' * 900}", 0
    )
    assert event is not None
    assert (len(event.process_name or ""), len(event.message)) == (64, 256)


def test_normalize_bus_id() -> None:
    """NVML's and the kernel's bus id forms normalise to the same text."""
    assert normalize_bus_id("00000000:3B:00.0") == normalize_bus_id("0000:3b:00") == "0000:3b:00"
    assert normalize_bus_id("nonsense") is None
    assert normalize_bus_id("0000:3b:zz") is None


def test_watcher_delivers_new_xids_and_recovers_from_a_lost_gpu(fake_nvml: Path) -> None:
    """Xids written after registration are emitted with their GPU; GPU_IS_LOST is retried."""
    scenario = Scenario(
        gpus=[
            FakeGpu(uuid="GPU-a", pci="00000000:3B:00.0"),
            FakeGpu(uuid="GPU-b", pci="00000000:5E:00.0", xids=[(1, 13)]),
        ]
    )
    scenario.write(fake_nvml)
    got: list[XidEvent] = []
    clock = FakeClock()
    watcher = XidWatcher(got.append, clock, wait_ms=20, retry_initial=0.02, retry_max=0.05)
    watcher.start()
    try:
        assert wait_for(lambda: watcher.state is WatcherState.WATCHING)
        scenario.gpus[1].xids = [(1, 13), (2, 79)]
        scenario.write(fake_nvml)
        assert wait_for(lambda: len(got) == 1)
        assert got[0] == XidEvent(
            ts=clock.now(),
            xid=79,
            source="nvml",
            gpu_index=1,
            gpu_uuid="GPU-b",
            pci_bus_id="0000:5e:00",
        )
        scenario.gpus[1].errors = {"nvmlEventSetWait_v2": "GPU_IS_LOST"}
        scenario.write(fake_nvml)
        assert wait_for(lambda: watcher.failures_total >= 1)
        scenario.gpus[1].errors = {}
        scenario.write(fake_nvml)
        assert wait_for(lambda: watcher.state is WatcherState.WATCHING)
        scenario.gpus[0].xids = [(3, 48)]
        scenario.write(fake_nvml)
        assert wait_for(lambda: len(got) == 2)
    finally:
        watcher.stop()
    assert (got[1].xid, got[1].gpu_index) == (48, 0)
    assert watcher.state is WatcherState.STOPPED
    assert watcher.events_total == 2


def test_watcher_without_driver_is_unavailable(fake_nvml: Path) -> None:
    """No driver: the watcher says unavailable with the reason and stops cleanly."""
    Scenario(gpus=[FakeGpu()], init_error="DRIVER_NOT_LOADED").write(fake_nvml)
    watcher = XidWatcher(lambda e: None, FakeClock(), wait_ms=20, retry_initial=0.02)
    watcher.start()
    try:
        assert wait_for(lambda: watcher.state is WatcherState.UNAVAILABLE)
        assert watcher.reason == "nvmlInit: DRIVER_NOT_LOADED"
    finally:
        watcher.stop()
    assert watcher.state is WatcherState.STOPPED


def test_watcher_survives_a_failing_consumer(fake_nvml: Path) -> None:
    """An emit callback that raises is counted; the watcher keeps delivering."""
    scenario = Scenario(gpus=[FakeGpu()])
    scenario.write(fake_nvml)

    def broken(event: XidEvent) -> None:
        raise ValueError(event.xid)

    watcher = XidWatcher(broken, FakeClock(), wait_ms=20)
    watcher.start()
    try:
        assert wait_for(lambda: watcher.state is WatcherState.WATCHING)
        scenario.gpus[0].xids = [(1, 79), (2, 79)]
        scenario.write(fake_nvml)
        assert wait_for(lambda: watcher.emit_errors == 2)
    finally:
        watcher.stop()
    assert watcher.state is WatcherState.STOPPED
