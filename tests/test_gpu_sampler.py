"""GpuSampler end to end: real pynvml against the fake library, real processes by pid."""

from __future__ import annotations

import ctypes.util
import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from fakenvml import FakeGpu, FakeProcess, Scenario
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.gpu.attribution import ContainerInfo, ProcessAttributor
from aisentinel.gpu.sampler import VALUES, GpuSampler, GpuState

DOCKER_ID = "4f1d0c3b9e2a" + "0" * 52


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two real processes (``sleep``) the scenario lists as GPU processes."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    procs = [subprocess.Popen([sleep, "300"]) for _ in range(2)]
    for proc in procs:  # exec'd: /proc shows sleep, not the forked python
        assert wait_for(
            lambda p=proc: Path(f"/proc/{p.pid}/cmdline").read_bytes().endswith(b"300\0")
        )
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _two_gpus(pids: list[int]) -> Scenario:
    return Scenario(
        gpus=[
            FakeGpu(
                uuid="GPU-aaaa",
                pci="00000000:3B:00.0",
                util_gpu=90,
                util_mem=40,
                mem_total=80 << 30,
                mem_used=60 << 30,
                mem_free=19 << 30,
                mem_reserved=1 << 30,
                temperature=77,
                power_mw=350_000,
                energy_mj=5_000_000,
                ecc=(2, 0),
                throttle=0x20,
                processes=[
                    FakeProcess(pids[0], used_bytes=40 << 30, sm=70, mem=35),
                    FakeProcess(pids[1], used_bytes=20 << 30, sm=None, mem=None, kind="both"),
                ],
            ),
            FakeGpu(uuid="GPU-bbbb", pci="00000000:5E:00.0", util_gpu=5),
        ]
    )


def test_samples_every_gpu_with_units_and_real_attribution(
    fake_nvml: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """Gauges in Prometheus units; processes carry their real /proc attribution."""
    pids = [p.pid for p in sleepers]
    _two_gpus(pids).write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock, attributor=ProcessAttributor())
    try:
        reading = sampler.sample()
    finally:
        sampler.close()
    assert reading.state is GpuState.UP
    assert reading.up
    gpu0, gpu1 = reading.gpus
    assert (gpu0.index, gpu0.uuid, gpu0.pci_bus_id, gpu0.lost) == (
        0,
        "GPU-aaaa",
        "0000:3b:00",
        False,
    )
    assert (gpu0.utilization_gpu, gpu0.utilization_memory) == (0.9, 0.4)
    assert gpu0.memory_used_bytes == 60 << 30
    assert gpu0.memory_reserved_bytes == 1 << 30
    assert (gpu0.temperature_celsius, gpu0.power_watts, gpu0.energy_joules) == (77.0, 350.0, 5000.0)
    assert (gpu0.ecc_corrected, gpu0.ecc_uncorrected, gpu0.throttle_reasons) == (2, 0, 0x20)
    assert gpu0.mig_enabled is False
    assert gpu0.ts == clock.now()
    by_pid = {p.pid: p for p in gpu0.processes}
    first, second = by_pid[pids[0]], by_pid[pids[1]]
    assert (first.kind, first.used_memory_bytes, first.sm_util, first.memory_util) == (
        "compute",
        40 << 30,
        0.7,
        0.35,
    )
    assert (second.kind, second.sm_util) == ("both", 0.0)  # no sample since last call: idle
    attribution = first.attribution
    assert attribution is not None
    assert attribution.exe == os.path.realpath(shutil.which("sleep") or "")
    assert attribution.cmdline[1:] == ("300",)
    assert (attribution.uid, attribution.user) == (os.getuid(), getpass.getuser())
    assert gpu1.processes == ()
    assert sampler.state is GpuState.STOPPED


def test_container_attribution_from_a_proc_root(
    fake_nvml: Path, tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """A GPU process whose cgroup is a docker scope is attributed to the named container."""
    pid = sleepers[0].pid
    proc = tmp_path / "proc" / str(pid)
    proc.mkdir(parents=True)
    for name in ("stat", "status", "cmdline"):
        (proc / name).write_bytes(Path(f"/proc/{pid}/{name}").read_bytes())
    (proc / "exe").symlink_to("/usr/bin/ollama")
    (proc / "cgroup").write_text(f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
    Scenario(gpus=[FakeGpu(processes=[FakeProcess(pid, sm=10, mem=5)])]).write(fake_nvml)
    asked: list[tuple[str, str]] = []

    def resolve(runtime: str, container_id: str) -> ContainerInfo:
        asked.append((runtime, container_id))
        return ContainerInfo("ollama", None)

    sampler = GpuSampler(
        FakeClock(), attributor=ProcessAttributor(tmp_path / "proc", resolver=resolve)
    )
    try:
        first = sampler.sample().gpus[0].processes[0].attribution
        again = sampler.sample().gpus[0].processes[0].attribution
    finally:
        sampler.close()
    assert first is not None
    assert (first.container_runtime, first.container_id, first.container_name) == (
        "docker",
        DOCKER_ID,
        "ollama",
    )
    assert first.label() == "container ollama"
    assert again is first
    assert asked == [("docker", DOCKER_ID)]


def test_not_supported_values_are_none(fake_nvml: Path) -> None:
    """NOT_SUPPORTED fields are None; memory falls back to v1, reasons to the throttle call."""
    gpu = FakeGpu(
        mem_used=10,
        mem_reserved=5,
        throttle=0x1,
        processes=[FakeProcess(1, sm=1, mem=1)],
        errors={
            "nvmlDeviceGetMemoryInfo_v2": "FUNCTION_NOT_FOUND",
            "nvmlDeviceGetCurrentClocksEventReasons": "FUNCTION_NOT_FOUND",
            "nvmlDeviceGetTemperature": "NOT_SUPPORTED",
            "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
            "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED",
            "nvmlDeviceGetTotalEccErrors": "NOT_SUPPORTED",
            "nvmlDeviceGetMigMode": "NOT_SUPPORTED",
            "nvmlDeviceGetProcessUtilization": "NOT_SUPPORTED",
            "nvmlDeviceGetUtilizationRates": "NO_PERMISSION",
        },
    )
    Scenario(gpus=[gpu]).write(fake_nvml)
    sampler = GpuSampler(FakeClock())
    try:
        sample = sampler.sample().gpus[0]
        sampler.sample()
    finally:
        sampler.close()
    assert sample.memory_used_bytes == 15  # v1 counts reserved memory as used
    assert sample.memory_reserved_bytes is None
    assert sample.throttle_reasons == 0x1
    assert (sample.temperature_celsius, sample.power_watts, sample.energy_joules) == (None,) * 3
    assert (sample.ecc_corrected, sample.ecc_uncorrected, sample.mig_enabled) == (None,) * 3
    assert (sample.utilization_gpu, sample.utilization_memory) == (None, None)
    assert (sample.processes[0].sm_util, sample.processes[0].memory_util) == (None, None)
    assert sampler.field_errors == 2  # NO_PERMISSION is an error (each sample), not unsupported


def test_gpu_lost_mid_run_backs_off_and_recovers(fake_nvml: Path) -> None:
    """GPU_IS_LOST marks that GPU lost, re-inits with doubling back-off, recovers when fixed."""
    scenario = Scenario(gpus=[FakeGpu(uuid="GPU-ok", util_gpu=10), FakeGpu(uuid="GPU-gone")])
    scenario.write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock, retry_initial=1.0, retry_max=8.0)
    try:
        assert sampler.sample().state is GpuState.UP
        scenario.gpus[1].errors = {"*": "GPU_IS_LOST"}
        scenario.write(fake_nvml)
        reading = sampler.sample()
        assert reading.state is GpuState.DEGRADED
        assert [(g.uuid, g.lost) for g in reading.gpus] == [("GPU-ok", False), ("GPU-gone", True)]
        assert reading.gpus[0].utilization_gpu == 0.1
        assert reading.gpus[1].utilization_gpu is None
        clock.advance(1.0)  # first retry: still lost, next one 2 s later
        assert sampler.sample().gpus[1].lost
        scenario.gpus[1].errors = {}
        scenario.write(fake_nvml)
        clock.advance(1.5)
        assert sampler.sample().gpus[1].lost  # fixed, but not retried yet
        clock.advance(0.5)
        recovered = sampler.sample()
    finally:
        sampler.close()
    assert recovered.state is GpuState.UP
    assert [(g.uuid, g.lost) for g in recovered.gpus] == [("GPU-ok", False), ("GPU-gone", False)]
    assert sampler.gpus_lost_total == 1


def _gpus(*uuids: str) -> Scenario:
    return Scenario(gpus=[FakeGpu(uuid=u, util_gpu=50) for u in uuids])


def test_a_gpu_whose_handle_fails_is_lost_and_the_others_sampled(fake_nvml: Path) -> None:
    """A handle answering UNKNOWN (after an Xid 79) loses that GPU only, under its UUID."""
    scenario = _gpus("GPU-0", "GPU-1", "GPU-2")
    scenario.write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock, retry_initial=1.0)
    try:
        assert sampler.sample().state is GpuState.UP
        scenario.gpus[1].errors = {"nvmlDeviceGetHandleByIndex_v2": "UNKNOWN", "*": "GPU_IS_LOST"}
        scenario.write(fake_nvml)
        with capture_logs() as logs:
            sampler.sample()  # lost mid-run
            clock.advance(1.0)
            reading = sampler.sample()  # initialised again: its handle answers UNKNOWN
        assert (reading.state, reading.reason) == (GpuState.DEGRADED, "GPU(s) 1 lost; retrying")
        assert [(g.index, g.uuid, g.lost) for g in reading.gpus] == [
            (0, "GPU-0", False),
            (1, "GPU-1", True),
            (2, "GPU-2", False),
        ]
        assert [g.utilization_gpu for g in reading.gpus] == [0.5, None, 0.5]
        assert [e["uuid"] for e in logs if e["event"] == "gpu lost"] == ["GPU-1"]
        scenario.gpus[1].errors = {}
        scenario.write(fake_nvml)
        clock.advance(2.0)
        with capture_logs() as logs:
            back = sampler.sample()
        assert back.state is GpuState.UP
        assert [(e["gpu"], e["uuid"]) for e in logs if e["event"] == "gpu back"] == [(1, "GPU-1")]
    finally:
        sampler.close()
    assert sampler.gpus_lost_total == 1


def test_a_handle_failing_at_the_first_look_loses_only_that_gpu(fake_nvml: Path) -> None:
    """A GPU that cannot be opened at start is lost (unidentified); the others are up."""
    scenario = _gpus("GPU-0", "GPU-1")
    scenario.gpus[0].errors = {"nvmlDeviceGetUUID": "UNKNOWN"}
    scenario.write(fake_nvml)
    sampler = GpuSampler(FakeClock())
    try:
        reading = sampler.sample()
    finally:
        sampler.close()
    assert reading.state is GpuState.DEGRADED
    assert [(g.index, g.uuid, g.lost) for g in reading.gpus] == [(0, "", True), (1, "GPU-1", False)]


def test_a_gpu_gone_from_the_driver_list_stays_lost_by_uuid(fake_nvml: Path) -> None:
    """A GPU missing after re-enumeration stays lost (degraded) until the same UUID returns;
    the GPU that took its index is not reported back."""
    scenario = _gpus("GPU-A", "GPU-B", "GPU-C")
    scenario.write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock, retry_initial=1.0, retry_max=4.0)
    try:
        sampler.sample()
        scenario.gpus[1].errors = {"*": "GPU_IS_LOST"}
        scenario.write(fake_nvml)
        sampler.sample()
        _gpus("GPU-A", "GPU-C").write(fake_nvml)  # the driver lists two GPUs now
        with capture_logs() as logs:
            for _ in range(4):
                clock.advance(4.0)
                reading = sampler.sample()
        assert reading.state is GpuState.DEGRADED
        assert "GPU-B (was 1) gone from the driver's list" in reading.reason
        assert [(g.index, g.uuid, g.lost) for g in reading.gpus] == [
            (0, "GPU-A", False),
            (1, "GPU-C", False),
        ]
        assert [(g.index, g.uuid, g.lost) for g in reading.missing] == [(1, "GPU-B", True)]
        assert [e for e in logs if e["event"] in ("gpu back", "gpu lost")] == []
        _gpus("GPU-A", "GPU-B", "GPU-C").write(fake_nvml)
        clock.advance(4.0)
        with capture_logs() as logs:
            back = sampler.sample()
    finally:
        sampler.close()
    assert (back.state, back.missing) == (GpuState.UP, ())
    assert [(e["gpu"], e["uuid"]) for e in logs if e["event"] == "gpu back"] == [(1, "GPU-B")]
    assert sampler.gpus_lost_total == 1


def test_unsupported_values_are_listed_and_logged_once(fake_nvml: Path) -> None:
    """NOT_SUPPORTED values are in the reading and logged once per GPU and value, with the
    detectors they blind; a fallback call (memory v2 -> v1) is neither."""
    gpu = FakeGpu(
        uuid="GPU-mig",
        mig=(1, 1),
        processes=[FakeProcess(1, sm=1, mem=1)],
        errors={
            "nvmlDeviceGetUtilizationRates": "NOT_SUPPORTED",
            "nvmlDeviceGetProcessUtilization": "NOT_SUPPORTED",
            "nvmlDeviceGetTemperature": "NOT_SUPPORTED",
            "nvmlDeviceGetMemoryInfo_v2": "FUNCTION_NOT_FOUND",
        },
    )
    Scenario(gpus=[gpu, FakeGpu(uuid="GPU-plain")]).write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock)
    try:
        with capture_logs() as logs:
            first = sampler.sample()
            second = sampler.sample()
    finally:
        sampler.close()
    expected = {0: frozenset({"utilization", "process_utilization", "temperature"})}
    assert first.unsupported == second.unsupported == expected
    noted = sorted(
        (e["log_level"], e["value"], e["blind"])
        for e in logs
        if e["event"] == "gpu value not supported"
    )
    assert noted == [
        ("info", "process_utilization", None),
        ("info", "temperature", None),
        ("warning", "utilization", "gpu_theft,gpu_spike"),
    ]
    assert first.state is GpuState.UP


def test_a_gpu_answering_unknown_in_a_row_is_unreadable_and_recovers(fake_nvml: Path) -> None:
    """A GPU whose every value fails with UNKNOWN (wedged, its handle still valid) makes
    the collector degraded after 3 samples in a row, naming the GPU and the values and
    logged once; failures with a read between them do not; read again, it is up again."""
    scenario = _gpus("GPU-0", "GPU-1")
    scenario.gpus[1].processes = [FakeProcess(1)]
    scenario.write(fake_nvml)
    sampler = GpuSampler(FakeClock())
    healthy = scenario.gpus[1].errors
    wedged = {"*": "UNKNOWN"}
    try:
        with capture_logs() as logs:
            for errors in (healthy, wedged, wedged, healthy, wedged, wedged):
                scenario.gpus[1].errors = errors
                scenario.write(fake_nvml)
                reading = sampler.sample()
                assert reading.state is GpuState.UP
            assert reading.failed == {
                1: frozenset(VALUES) - {"process_utilization"}  # no process: not asked
            }
            assert reading.unreadable == {}
            scenario.write(fake_nvml)
            third = sampler.sample()
            fourth = sampler.sample()
        assert third.state is GpuState.DEGRADED
        assert third.reason == (
            "GPU 1 values unreadable: utilization, memory, compute_processes, "
            "graphics_processes (UNKNOWN) (gpu_memory, gpu_spike, gpu_theft, gpu_workload "
            "cannot watch it); read again each sample"
        )
        assert (fourth.state, fourth.reason) == (third.state, third.reason)
        assert set(third.unreadable) == {1}
        assert third.unreadable[1]["temperature"] == "UNKNOWN"
        assert [g.lost for g in third.gpus] == [False, False]
        assert third.gpus[0].utilization_gpu == 0.5
        assert third.gpus[1].processes == ()
        assert [
            (e["gpu"], e["uuid"], e["blind"]) for e in logs if e["event"] == "gpu values unreadable"
        ] == [(1, "GPU-1", "gpu_memory,gpu_spike,gpu_theft,gpu_workload")]
        scenario.gpus[1].errors = {}
        scenario.write(fake_nvml)
        with capture_logs() as logs:
            back = sampler.sample()
    finally:
        sampler.close()
    assert (back.state, back.unreadable, back.failed) == (GpuState.UP, {}, {})
    assert back.gpus[1].utilization_gpu == 0.5
    assert [(e["gpu"], e["event"]) for e in logs if e["event"].startswith("gpu values")] == [
        (1, "gpu values readable again")
    ]
    assert sampler.gpus_lost_total == 0


def test_process_lists_denied_on_a_mig_gpu_are_unreadable(fake_nvml: Path) -> None:
    """Process lists answering NO_PERMISSION (a MIG GPU, a non-root reader) degrade the
    collector after 3 samples, naming gpu_workload; utilization not supported stays apart."""
    gpu = FakeGpu(
        uuid="GPU-mig",
        mig=(1, 1),
        processes=[FakeProcess(1)],
        errors={
            "nvmlDeviceGetUtilizationRates": "NOT_SUPPORTED",
            "nvmlDeviceGetComputeRunningProcesses_v3": "NO_PERMISSION",
            "nvmlDeviceGetGraphicsRunningProcesses_v3": "NO_PERMISSION",
        },
    )
    Scenario(gpus=[gpu]).write(fake_nvml)
    sampler = GpuSampler(FakeClock())
    try:
        readings = [sampler.sample() for _ in range(3)]
    finally:
        sampler.close()
    assert [r.state for r in readings] == [GpuState.UP, GpuState.UP, GpuState.DEGRADED]
    assert readings[-1].reason == (
        "GPU 0 values unreadable: compute_processes, graphics_processes (NO_PERMISSION) "
        "(gpu_workload cannot watch it); read again each sample"
    )
    assert readings[-1].unreadable == {
        0: {"compute_processes": "NO_PERMISSION", "graphics_processes": "NO_PERMISSION"}
    }
    assert readings[-1].unsupported == {0: frozenset({"utilization"})}
    assert readings[-1].gpus[0].memory_used_bytes == 0


def test_every_gpu_lost_is_state_lost(fake_nvml: Path) -> None:
    """When every GPU answers GPU_IS_LOST the collector is LOST, and nothing raises."""
    scenario = Scenario(gpus=[FakeGpu()])
    scenario.write(fake_nvml)
    sampler = GpuSampler(FakeClock())
    try:
        sampler.sample()
        scenario.errors = {"*": "GPU_IS_LOST"}
        scenario.write(fake_nvml)
        reading = sampler.sample()
    finally:
        sampler.close()
    assert (reading.state, reading.up, reading.gpus[0].lost) == (GpuState.LOST, False, True)


def test_no_driver_and_no_gpu_retry_with_backoff(fake_nvml: Path) -> None:
    """DRIVER_NOT_LOADED and zero GPUs are states with reasons, retried on the back-off."""
    Scenario(gpus=[FakeGpu()], init_error="DRIVER_NOT_LOADED").write(fake_nvml)
    clock = FakeClock()
    sampler = GpuSampler(clock, retry_initial=1.0)
    reading = sampler.sample()
    assert (reading.state, reading.gpus) == (GpuState.NO_DRIVER, ())
    assert "driver is not loaded" in reading.reason
    sampler.sample()
    assert sampler.init_failures == 1  # not retried before the back-off
    Scenario(gpus=[]).write(fake_nvml)
    clock.advance(1.0)
    assert sampler.sample().state is GpuState.NO_GPU
    assert sampler.init_failures == 2
    Scenario(gpus=[FakeGpu()]).write(fake_nvml)
    clock.advance(1.0)
    assert sampler.sample().state is GpuState.NO_GPU  # next try is 2 s after the last
    clock.advance(1.0)
    assert sampler.sample().state is GpuState.UP
    sampler.close()


_PROBE = """
import json
from aisentinel.clock import SystemClock
from aisentinel.gpu.sampler import GpuSampler
sampler = GpuSampler(SystemClock())
first = sampler.sample()
second = sampler.sample()
print(json.dumps([first.state.value, first.reason, len(first.gpus), second.state.value]))
sampler.close()
"""


def _probe(env: dict[str, str]) -> tuple[list[object], str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith('["'))  # logs go to stdout
    return json.loads(line), out.stdout + out.stderr


def test_no_library_is_a_state_not_an_exception(tmp_path: Path) -> None:
    """Without libnvidia-ml.so.1 the sampler reports no_library and raises nothing."""
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVIDIA library")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    result, stderr = _probe({**env, "LD_LIBRARY_PATH": str(tmp_path)})
    assert result[0] == result[3] == "no_library"
    assert "libnvidia-ml.so.1 not found" in str(result[1])
    assert result[2] == 0
    assert "Traceback" not in stderr


def test_daemon_style_subprocess_uses_the_fake(fake_nvml_lib: Path, fake_nvml: Path) -> None:
    """A process started with LD_LIBRARY_PATH at the fake samples it through real pynvml."""
    Scenario(gpus=[FakeGpu(), FakeGpu()]).write(fake_nvml)
    result, _ = _probe({**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_lib.parent)})
    assert result[0] == "up"
    assert result[2] == 2


ROOT = Path(__file__).resolve().parents[1]
BENCH_ARGS = ("--gpus", "2", "--procs", "3", "--samples", "3", "--json")


def test_bench_reports_cost_per_sample() -> None:
    """bench/gpu_sampler.py runs against the fake and reports microseconds and core share."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_sampler.py"), *BENCH_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout[out.stdout.index("{\n") :])
    assert set(report["results"]) == {"nvml only", "nvml + attribution"}
    for row in report["results"].values():
        assert row["cpu_us_mean"] > 0
        assert row["nvml_calls_per_sample"] > 2 * 10  # a dozen calls per GPU at least


@pytest.mark.slow
def test_gpu_device_script_against_the_fake(fake_nvml_lib: Path, fake_nvml: Path) -> None:
    """bench/gpu_device.sh finds the library, samples, and prints cost and attribution."""
    Scenario(gpus=[FakeGpu(util_gpu=80, processes=[FakeProcess(os.getpid(), sm=50)])]).write(
        fake_nvml
    )
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(fake_nvml_lib.parent),
        "PYTHON": sys.executable,
        "SECONDS_TO_SAMPLE": "2",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_device.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "state: up (1 GPU(s), driver 550.54.15)" in out.stdout
    assert "% of one core at 1 Hz" in out.stdout
    assert f"pid {os.getpid()} compute" in out.stdout
    assert "xid watcher: watching" in out.stdout


def test_gpu_device_script_without_a_driver() -> None:
    """Without libnvidia-ml.so.1 the device script says so and exits 1."""
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVIDIA library")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_device.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "no NVIDIA driver installed" in out.stdout
