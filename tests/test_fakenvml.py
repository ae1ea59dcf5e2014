"""The fake libnvidia-ml.so.1 driven through the real pynvml code, call by call."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
from fakenvml import FakeGpu, FakeProcess, Scenario


def _scenario() -> Scenario:
    return Scenario(
        gpus=[
            FakeGpu(
                uuid="GPU-11111111-2222-3333-4444-555555555555",
                name="NVIDIA H100 80GB HBM3",
                pci="00000000:3B:00.0",
                util_gpu=87,
                util_mem=41,
                mem_total=80 << 30,
                mem_used=30 << 30,
                mem_free=49 << 30,
                mem_reserved=1 << 30,
                temperature=71,
                power_mw=312_500,
                energy_mj=9_876_543_210,
                ecc=(3, 1),
                throttle=0x4,
                mig=(1, 0),
                processes=[
                    FakeProcess(4242, used_bytes=20 << 30, sm=55, mem=30),
                    FakeProcess(4343, used_bytes=None, sm=None, mem=None, kind="graphics"),
                    FakeProcess(4444, used_bytes=1 << 30, sm=5, mem=2, kind="both"),
                ],
            ),
            FakeGpu(uuid="GPU-second", pci="00000000:5E:00.0"),
        ]
    )


@pytest.fixture
def nvml(fake_nvml: Path) -> Iterator[Path]:
    """pynvml initialised against the fake with the standard two-GPU scenario."""
    _scenario().write(fake_nvml)
    pynvml.nvmlInit()
    yield fake_nvml
    pynvml.nvmlShutdown()


def test_identity_and_system_calls(nvml: Path) -> None:
    """Versions, count, handles, UUID, name, serial, index and PCI info come from the scenario."""
    assert pynvml.nvmlSystemGetDriverVersion() == "550.54.15"
    assert pynvml.nvmlSystemGetNVMLVersion() == "12.550.54.15"
    assert pynvml.nvmlDeviceGetCount() == 2
    h = pynvml.nvmlDeviceGetHandleByIndex(1)
    assert pynvml.nvmlDeviceGetUUID(h) == "GPU-second"
    assert pynvml.nvmlDeviceGetIndex(h) == 1
    h0 = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetName(h0) == "NVIDIA H100 80GB HBM3"
    assert pynvml.nvmlDeviceGetSerial(h0) == "FAKE00000000"
    pci = pynvml.nvmlDeviceGetPciInfo(h0)
    assert (pci.busId, pci.domain, pci.bus, pci.device) == ("00000000:3B:00.0", 0, 0x3B, 0)
    assert pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST) == "GPU is lost"
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetHandleByIndex(2)


def test_gauges(nvml: Path) -> None:
    """Utilization, memory v1/v2, temperature, power, energy, ECC, reasons and MIG mode."""
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    util = pynvml.nvmlDeviceGetUtilizationRates(h)
    assert (util.gpu, util.memory) == (87, 41)
    v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    assert (v2.total, v2.used, v2.free, v2.reserved) == (80 << 30, 30 << 30, 49 << 30, 1 << 30)
    v1 = pynvml.nvmlDeviceGetMemoryInfo(h)
    assert (v1.total, v1.used, v1.free) == (80 << 30, 31 << 30, 49 << 30)
    with pytest.raises(pynvml.NVMLError_ArgumentVersionMismatch):
        pynvml.nvmlDeviceGetMemoryInfo(h, version=0x01000028)
    assert pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) == 71
    assert pynvml.nvmlDeviceGetPowerUsage(h) == 312_500
    assert pynvml.nvmlDeviceGetTotalEnergyConsumption(h) == 9_876_543_210
    corrected = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert pynvml.nvmlDeviceGetTotalEccErrors(h, corrected, pynvml.NVML_VOLATILE_ECC) == 3
    assert pynvml.nvmlDeviceGetTotalEccErrors(h, uncorrected, pynvml.NVML_AGGREGATE_ECC) == 1
    assert pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h) == 0x4
    assert pynvml.nvmlDeviceGetCurrentClocksEventReasons(h) == 0x4
    assert pynvml.nvmlDeviceGetMigMode(h) == [1, 0]


def test_processes_and_process_utilization(nvml: Path) -> None:
    """Compute/graphics lists (v3 struct) and per-process utilization samples since a time."""
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    compute = {p.pid: p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)}
    assert compute == {4242: 20 << 30, 4444: 1 << 30}
    graphics = {p.pid: p.usedGpuMemory for p in pynvml.nvmlDeviceGetGraphicsRunningProcesses(h)}
    assert graphics == {4343: None, 4444: 1 << 30}  # "na" is NVML_VALUE_NOT_AVAILABLE
    samples = pynvml.nvmlDeviceGetProcessUtilization(h, 0)
    assert {(s.pid, s.smUtil, s.memUtil) for s in samples} == {(4242, 55, 30), (4444, 5, 2)}
    newest = max(s.timeStamp for s in samples)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetProcessUtilization(h, newest + 10**9)
    idle = pynvml.nvmlDeviceGetHandleByIndex(1)
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(idle) == []
    assert pynvml.nvmlDeviceGetGraphicsRunningProcesses(idle) == []


def test_device_errors(fake_nvml: Path) -> None:
    """Per-call and per-device ('*') error rules come back as pynvml's exception classes."""
    scenario = _scenario()
    scenario.gpus[0].errors = {
        "nvmlDeviceGetTotalEccErrors": "NOT_SUPPORTED",
        "nvmlDeviceGetPowerUsage": "NO_PERMISSION",
    }
    scenario.gpus[1].errors = {"*": "GPU_IS_LOST"}
    scenario.write(fake_nvml)
    pynvml.nvmlInit()
    try:
        h0 = pynvml.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetTotalEccErrors(h0, 0, 0)
        with pytest.raises(pynvml.NVMLError_NoPermission):
            pynvml.nvmlDeviceGetPowerUsage(h0)
        assert pynvml.nvmlDeviceGetTemperature(h0, 0) == 71
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetHandleByIndex(1)
    finally:
        pynvml.nvmlShutdown()


def test_hang_blocks_the_call_until_the_scenario_drops_it(nvml: Path) -> None:
    """A HANG rule blocks its call (other calls answer) until a scenario without it."""
    scenario = _scenario()
    scenario.gpus[0].errors = {"nvmlDeviceGetUtilizationRates": "HANG"}
    scenario.write(nvml)
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    answered: list[int] = []
    call = threading.Thread(
        target=lambda: answered.append(pynvml.nvmlDeviceGetUtilizationRates(h).gpu), daemon=True
    )
    call.start()
    call.join(0.3)
    assert call.is_alive()
    assert answered == []
    assert pynvml.nvmlDeviceGetTemperature(h, 0) == 71  # the library is not locked meanwhile
    scenario.gpus[0].errors = {}
    scenario.gpus[0].util_gpu = 12
    scenario.write(nvml)
    call.join(30)
    assert answered == [12]


def test_init_errors_and_uninitialized(fake_nvml: Path) -> None:
    """No scenario or init_error: nvmlInit fails; calls after shutdown are Uninitialized."""
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()
    Scenario(gpus=[FakeGpu()], init_error="NO_PERMISSION").write(fake_nvml)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlInit()
    Scenario(gpus=[FakeGpu()], errors={"nvmlDeviceGetCount_v2": "UNKNOWN"}).write(fake_nvml)
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlSystemGetDriverVersion()


def test_scenario_rewritten_mid_run(nvml: Path) -> None:
    """A rewritten scenario is seen by the next call, without re-initialising."""
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    h1 = pynvml.nvmlDeviceGetHandleByIndex(1)
    assert pynvml.nvmlDeviceGetUtilizationRates(h).gpu == 87
    scenario = _scenario()
    scenario.gpus[0].util_gpu = 3
    scenario.gpus[0].processes = []
    scenario.write(nvml)
    assert pynvml.nvmlDeviceGetUtilizationRates(h).gpu == 3
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(h) == []
    scenario.gpus = scenario.gpus[:1]
    scenario.write(nvml)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):  # a GPU gone from the scenario is lost
        pynvml.nvmlDeviceGetUtilizationRates(h1)
    assert pynvml.nvmlDeviceGetCount() == 1


def test_event_set_delivers_new_xids(nvml: Path) -> None:
    """Registered Xid events written after the set was made arrive once, with their device."""
    scenario = _scenario()
    scenario.gpus[1].xids = [(1, 13)]  # already there: not delivered
    scenario.write(nvml)
    event_set = pynvml.nvmlEventSetCreate()
    h1 = pynvml.nvmlDeviceGetHandleByIndex(1)
    supported = pynvml.nvmlDeviceGetSupportedEventTypes(h1)
    assert supported & pynvml.nvmlEventTypeXidCriticalError
    pynvml.nvmlDeviceRegisterEvents(h1, pynvml.nvmlEventTypeXidCriticalError, event_set)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set, 20)
    scenario.gpus[1].xids = [(1, 13), (2, 79), (3, 48)]
    scenario.gpus[0].xids = [(4, 31)]  # device 0 is not registered
    scenario.write(nvml)
    first = pynvml.nvmlEventSetWait_v2(event_set, 1000)
    second = pynvml.nvmlEventSetWait_v2(event_set, 1000)
    assert (first.eventType, first.eventData, second.eventData) == (0x8, 79, 48)
    address = ctypes.cast(first.device, ctypes.c_void_p).value
    assert address == ctypes.cast(h1, ctypes.c_void_p).value
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set, 20)
    scenario.gpus[1].errors = {"nvmlEventSetWait_v2": "GPU_IS_LOST"}
    scenario.write(nvml)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlEventSetWait_v2(event_set, 20)
    pynvml.nvmlEventSetFree(event_set)


def test_register_unsupported_event_type(nvml: Path) -> None:
    """Registering an event type the device does not support is NOT_SUPPORTED."""
    scenario = _scenario()
    scenario.gpus[0].events = 0x3
    scenario.write(nvml)
    event_set = pynvml.nvmlEventSetCreate()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, event_set)
    pynvml.nvmlEventSetFree(event_set)


def test_subprocess_finds_it_through_ld_library_path(fake_nvml_lib: Path, fake_nvml: Path) -> None:
    """A fresh process with LD_LIBRARY_PATH at the build dir gets the fake from pynvml."""
    _scenario().write(fake_nvml)
    code = (
        "import pynvml; pynvml.nvmlInit(); "
        "print(pynvml.nvmlDeviceGetCount(), pynvml.nvmlSystemGetDriverVersion())"
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_lib.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["2", "550.54.15"]
