"""The nvml source end to end: the daemon in a subprocess on the fake libnvidia-ml.so.1.

The real pynvml runs against tests/fakenvml (LD_LIBRARY_PATH at process start); the
GPU processes are real processes this test starts, seen through a proc root whose
entries point at the real /proc except for a fake Docker cgroup.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from fakenvml import FakeGpu, FakeProcess, Scenario
from faults.harness import DaemonProc, wait_until
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.events import GpuProcessSample, ProcessAttribution, XidEvent
from aisentinel.sources.journald import kernel_xid_event
from aisentinel.sources.nvml import NvmlSource, NvmlSourceConfig, workload_label

CONTAINER = "4f1c" + "a" * 60
UUID = "GPU-8f1c0a3e-1111-2222-3333-444455556666"


def proc_entry(root: Path, pid: int, cgroup: str | None = None) -> None:
    """``root/PID`` pointing at the real ``/proc/PID``, with ``cgroup`` replaced if given."""
    d = root / str(pid)
    d.mkdir(parents=True)
    for name in ("stat", "cmdline", "status", "fd", "net"):
        (d / name).symlink_to(f"/proc/{pid}/{name}")
    (d / "exe").symlink_to(Path(f"/proc/{pid}/exe").readlink())
    if cgroup is None:
        (d / "cgroup").symlink_to(f"/proc/{pid}/cgroup")
    else:
        (d / "cgroup").write_text(cgroup)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two real processes to list as GPU processes."""
    procs = [subprocess.Popen(["sleep", "120"]) for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def scenario(pids: list[int], **gpu: object) -> Scenario:
    procs = [FakeProcess(pids[0], 6 << 30, 70, 20), FakeProcess(pids[1], 2 << 30, 10, 5)]
    return Scenario(
        gpus=[
            FakeGpu(
                uuid=UUID,
                pci="00000000:3B:00.0",
                util_gpu=85,
                mem_used=8 << 30,
                mem_free=72 << 30,
                processes=procs,
                **gpu,  # type: ignore[arg-type]
            )
        ]
    )


def nvml_source(proc_root: Path) -> str:
    return f"""
[[sources]]
name = "gpu"
type = "nvml"
interval = "200ms"
docker_socket = ""
proc_root = "{proc_root}"
retry_max = "1s"
"""


def promtool_clean(text: str) -> None:
    """``promtool check metrics`` accepts ``text`` (where promtool is installed)."""
    if shutil.which("promtool") is None:
        return
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _metric(text: str, name: str, labels: str) -> float | None:
    prefix = f"{name}{{{labels}}} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


@pytest.mark.slow
def test_daemon_samples_the_fake_gpu_loses_it_gets_it_back_and_counts_xids(
    fake_nvml_lib: Path,
    fake_nvml: Path,
    tmp_path: Path,
    sleepers: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GPU metrics with bounded workload labels (a container by its cgroup, a process by
    pid and name) pass promtool; an Xid event counts with a last-seen time; a lost GPU
    makes the collector down with its reason in status, and it comes back."""
    pids = [p.pid for p in sleepers]
    root = tmp_path / "proc"
    proc_entry(root, pids[0], f"0::/system.slice/docker-{CONTAINER}.scope\n")
    proc_entry(root, pids[1])
    scenario(pids).write(fake_nvml)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml_lib.parent))
    daemon = DaemonProc(tmp_path, nvml_source(root)).start()
    try:
        up = 'source="gpu"'
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_collector_up", up) == 1)
        text = daemon.scrape()
        assert _metric(text, "aisentinel_gpu_utilization_ratio", 'gpu="0"') == 0.85
        assert _metric(text, "aisentinel_gpu_memory_used_bytes", 'gpu="0"') == 8 << 30
        assert (
            _metric(
                text,
                "aisentinel_gpu_info",
                f'driver="550.54.15",gpu="0",name="NVIDIA H100 80GB HBM3",uuid="{UUID}"',
            )
            == 1
        )
        label = f'gpu="0",workload="container:{CONTAINER[:12]}"'
        assert _metric(text, "aisentinel_gpu_process_memory_used_bytes", label) == 6 << 30
        assert _metric(text, "aisentinel_gpu_process_sm_utilization_ratio", label) == 0.7
        plain = f'gpu="0",workload="pid:{pids[1]} sleep"'
        assert _metric(text, "aisentinel_gpu_process_memory_used_bytes", plain) == 2 << 30
        # Neither sleeper is an allowed AI workload: one finding each (one per sample).
        medium = 'detector="gpu_workload",severity="medium"'
        assert wait_until(lambda: daemon.metric("aisentinel_findings_total", medium) == 2)
        promtool_clean(text)

        # An Xid event: counted by GPU and code, with its time.
        with_xid = scenario(pids)
        with_xid.gpus[0].xids = [(1, 79)]
        with_xid.write(fake_nvml)
        xid = 'gpu="0",xid="79"'
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_xid_errors_total", xid) == 1)
        seen = daemon.metric("aisentinel_gpu_xid_last_seen_timestamp_seconds", xid)
        assert seen is not None
        assert seen > 1.7e9

        # The GPU falls off the bus: the collector is down, the daemon is not.
        lost = scenario(pids)
        lost.gpus[0].errors = {"*": "GPU_IS_LOST"}
        lost.write(fake_nvml)
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_collector_up", up) == 0)
        assert daemon.metric("aisentinel_gpu_lost", f'gpu="0",uuid="{UUID}"') == 1
        assert daemon.metric("aisentinel_source_up", up) == 0
        gpu = next(s for s in daemon.status_json()["sources"] if s["name"] == "gpu")
        assert not gpu["up"]
        assert "lost" in gpu["reason"]
        assert len(daemon.logged("gpu lost")) == 1

        # It answers again: sampled again after the back-off.
        scenario(pids).write(fake_nvml)
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_collector_up", up) == 1)
        assert daemon.metric("aisentinel_gpu_lost", f'gpu="0",uuid="{UUID}"') == 0
        assert daemon.alive()
    finally:
        assert daemon.terminate() == 0
    assert "Traceback" not in daemon.text()


@pytest.mark.slow
def test_no_driver_keeps_the_daemon_running_with_the_reason(
    fake_nvml_lib: Path, fake_nvml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a driver the daemon runs, logs it once, and the source is down with why."""
    Scenario(init_error="DRIVER_NOT_LOADED").write(fake_nvml)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml_lib.parent))
    daemon = DaemonProc(tmp_path, nvml_source(tmp_path)).start()
    try:
        gpu_state = 'source="gpu",state="no_driver"'
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_collector_state", gpu_state) == 1)
        assert daemon.metric("aisentinel_gpu_collector_up", 'source="gpu"') == 0
        assert wait_until(
            lambda: (daemon.metric("aisentinel_gpu_init_failures_total", 'source="gpu"') or 0) >= 2
        )
        gpu = next(s for s in daemon.status_json()["sources"] if s["name"] == "gpu")
        assert "driver is not loaded" in gpu["reason"]
        logged = [r for r in daemon.logged("gpu collector") if r.get("state") == "no_driver"]
        assert len(logged) == 1
    finally:
        assert daemon.terminate() == 0


def _value(source: NvmlSource, name: str, **labels: str) -> float | None:
    """The value of one series ``source.collect()`` gives now, or None."""
    for family in source.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
def in_process(fake_nvml: Path, tmp_path: Path) -> Iterator[tuple[NvmlSource, FakeClock]]:
    """An nvml source on a fake clock in this process (1 s interval, no Xid watcher)."""
    clock = FakeClock()
    config = NvmlSourceConfig(
        name="gpu", type="nvml", interval=1.0, xid_events=False, docker_socket=""
    )
    source = NvmlSource(config, clock=clock, state_dir=tmp_path)
    yield source, clock
    source.request_stop()
    clock.advance(60.0)
    source.stop()


def test_a_sample_stuck_in_nvml_is_reported_and_its_values_not_served(
    fake_nvml: Path, in_process: tuple[NvmlSource, FakeClock]
) -> None:
    """An NVML call that does not return: after stuck_after the source is in error with the
    call named, logged once, collector down (state stuck) and no stale per-GPU values; the
    call returning is logged and sampling goes on."""
    source, clock = in_process
    healthy = Scenario(gpus=[FakeGpu(uuid=UUID, util_gpu=40)])
    healthy.write(fake_nvml)
    source.start(lambda _batch: None)
    assert wait_for(source.ready)
    assert _value(source, "aisentinel_gpu_utilization_ratio", gpu="0") == 0.4
    Scenario(gpus=[FakeGpu(uuid=UUID, errors={"nvmlDeviceGetUtilizationRates": "HANG"})]).write(
        fake_nvml
    )
    try:
        clock.advance(1.0)
        assert wait_for(lambda: source.sampler.calling == ("utilization", 0))
        with capture_logs() as logs:
            clock.advance(source.stuck_after - 1.0)
            source.check_stuck()
            assert source.stats.state == "following"
            clock.advance(2.0)
            assert wait_for(lambda: source.stats.state == "error")
            source.check_stuck()
        reason = source.stats.reason
        assert reason.startswith("sampler stuck in NVML since 20")
        assert reason.endswith("(utilization, GPU 0)")
        assert [e["call"] for e in logs if e["event"] == "gpu sampler stuck"] == [
            "utilization, GPU 0"
        ]
        assert _value(source, "aisentinel_gpu_collector_up") == 0
        assert _value(source, "aisentinel_gpu_collector_state", state="stuck") == 1
        assert _value(source, "aisentinel_source_up") == 0
        assert _value(source, "aisentinel_gpu_utilization_ratio") is None
        assert _value(source, "aisentinel_gpu_lost") is None
        assert _value(source, "aisentinel_gpu_info", uuid=UUID) == 1
    finally:
        with capture_logs() as logs:
            healthy.write(fake_nvml)
            assert wait_for(lambda: source.stats.state == "following")
    assert [e["event"] for e in logs if e["event"].startswith("gpu sampler")] == [
        "gpu sampler answered again"
    ]
    assert _value(source, "aisentinel_gpu_collector_state", state="up") == 1
    assert _value(source, "aisentinel_gpu_utilization_ratio", gpu="0") == 0.4


def test_unsupported_values_are_exported_and_noted_in_status(
    fake_nvml: Path, in_process: tuple[NvmlSource, FakeClock]
) -> None:
    """A MIG GPU without utilization: value_supported 0 for it, 1 for the rest, and a
    status note naming the detectors that cannot watch it; the source stays up."""
    source, _clock = in_process
    blind = FakeGpu(
        uuid=UUID, mig=(1, 1), errors={"nvmlDeviceGetUtilizationRates": "NOT_SUPPORTED"}
    )
    Scenario(gpus=[blind, FakeGpu(uuid="GPU-plain")]).write(fake_nvml)
    source.start(lambda _batch: None)
    assert wait_for(source.ready)
    assert _value(source, "aisentinel_gpu_value_supported", gpu="0", value="utilization") == 0
    assert _value(source, "aisentinel_gpu_value_supported", gpu="0", value="memory") == 1
    assert _value(source, "aisentinel_gpu_value_supported", gpu="1", value="utilization") == 1
    assert source.notes() == [
        "GPU 0: NVML does not support utilization (gpu_spike, gpu_theft cannot watch it)"
    ]
    assert source.stats.up


def test_gpu_processes_the_daemon_cannot_see_are_counted_and_noted(
    fake_nvml: Path, tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """A GPU process with no readable /proc entry (another pid namespace, hidepid):
    aisentinel_gpu_unattributed_processes counts it and status notes it by pid; one whose
    executable link cannot be read (another user's, daemon not root) is noted too."""
    clock = FakeClock()
    empty = tmp_path / "proc"
    other = empty / str(sleepers[0].pid)
    other.mkdir(parents=True)
    for name in ("stat", "cmdline", "status", "cgroup"):  # no exe: not readable
        (other / name).symlink_to(f"/proc/{sleepers[0].pid}/{name}")
    config = NvmlSourceConfig(
        name="gpu",
        type="nvml",
        interval=1.0,
        xid_events=False,
        docker_socket="",
        proc_root=str(empty),
    )
    source = NvmlSource(config, clock=clock, state_dir=tmp_path)
    listed = [FakeProcess(4242, 10 << 30, 100, 60), FakeProcess(sleepers[0].pid, 1 << 30, 1, 1)]
    Scenario(gpus=[FakeGpu(uuid=UUID, processes=listed)]).write(fake_nvml)
    source.start(lambda _batch: None)
    try:
        assert wait_for(source.ready)
        assert _value(source, "aisentinel_gpu_unattributed_processes", gpu="0") == 1
        assert source.notes() == [
            "GPU 0: 1 process(es) whose executable and sockets the daemon may not read "
            "(another user's, daemon not root): named by command name, pool connections "
            "matched by their user",
            f"GPU 0: pid 4242 not in {empty}: reported by pid only "
            "(another pid namespace, hidepid, ProtectProc=invisible)",
        ]
    finally:
        source.request_stop()
        clock.advance(60.0)
        source.stop()


def _next_sample(source: NvmlSource, clock: FakeClock) -> None:
    """One interval on: the source's thread takes its next sample."""
    clock.advance(1.0)
    assert wait_for(lambda: source.last is not None and source.last.ts == clock.now())


def test_values_failing_in_a_row_degrade_the_source_and_give_no_process_count(
    fake_nvml: Path,
    in_process: tuple[NvmlSource, FakeClock],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """Every value failing with UNKNOWN: no process count from the first failed sample
    (not 0); after 3 in a row the source is degraded, naming the GPU and the values,
    aisentinel_gpu_unreadable is 1 and the values no detector needs are a note; once they
    are read again all of it clears by itself."""
    source, clock = in_process
    pids = [p.pid for p in sleepers]
    scenario(pids).write(fake_nvml)
    source.start(lambda _batch: None)
    assert wait_for(source.ready)
    assert _value(source, "aisentinel_gpu_processes", gpu="0") == 2
    assert _value(source, "aisentinel_gpu_unreadable", gpu="0", uuid=UUID) == 0
    scenario(pids, errors={"*": "UNKNOWN"}).write(fake_nvml)
    _next_sample(source, clock)
    assert _value(source, "aisentinel_gpu_processes", gpu="0") is None
    assert _value(source, "aisentinel_gpu_unreadable", gpu="0", uuid=UUID) == 0
    assert source.stats.state == "following"
    _next_sample(source, clock)
    _next_sample(source, clock)
    assert wait_for(lambda: source.stats.state == "degraded")
    assert source.stats.up
    assert source.stats.reason.startswith(
        "GPU 0 values unreadable: utilization, memory, compute_processes, graphics_processes "
        "(UNKNOWN) (gpu_memory, gpu_spike, gpu_theft, gpu_workload cannot watch it)"
    )
    assert _value(source, "aisentinel_gpu_unreadable", gpu="0", uuid=UUID) == 1
    assert _value(source, "aisentinel_gpu_collector_state", state="degraded") == 1
    assert _value(source, "aisentinel_gpu_processes", gpu="0") is None
    assert source.notes() == [
        "GPU 0: cannot read temperature, power, energy, ecc, throttle_reasons, mig (UNKNOWN)"
    ]
    scenario(pids).write(fake_nvml)
    _next_sample(source, clock)
    assert wait_for(lambda: source.stats.state == "following")
    assert _value(source, "aisentinel_gpu_unreadable", gpu="0", uuid=UUID) == 0
    assert _value(source, "aisentinel_gpu_processes", gpu="0") == 2
    assert source.notes() == []


def test_the_last_error_follows_the_state_and_clears_when_up_again(
    fake_nvml: Path, in_process: tuple[NvmlSource, FakeClock]
) -> None:
    """No driver: the last error (status's DETAIL) is why; the driver loaded, up: cleared;
    a GPU lost (degraded, still up): the lost GPU, not the old driver error."""
    source, clock = in_process
    Scenario(init_error="DRIVER_NOT_LOADED").write(fake_nvml)
    source.start(lambda _batch: None)
    assert wait_for(lambda: source.stats.state == "waiting")
    assert "driver is not loaded" in source.stats.last_error
    gpus = [FakeGpu(uuid=UUID), FakeGpu(uuid="GPU-other", pci="00000000:3C:00.0")]
    Scenario(gpus=gpus).write(fake_nvml)
    for _ in range(30):
        if source.stats.state == "following":
            break
        clock.advance(1.0)
        wait_for(lambda: source.stats.state == "following", timeout=0.2)
    assert source.stats.state == "following"
    assert source.stats.last_error == ""
    gpus[1].errors = {"*": "GPU_IS_LOST"}
    Scenario(gpus=gpus).write(fake_nvml)
    _next_sample(source, clock)
    assert wait_for(lambda: source.stats.state == "degraded")
    assert source.stats.last_error == source.stats.reason
    assert "lost" in source.stats.last_error


@pytest.mark.slow
def test_process_lists_denied_make_status_exit_1_naming_them(
    fake_nvml_lib: Path,
    fake_nvml: Path,
    tmp_path: Path,
    sleepers: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A MIG GPU whose process lists answer NO_PERMISSION: `aisentinel status` exits 1
    naming the GPU, the lists and gpu_workload, logged once; granted, it exits 0 again."""
    pids = [p.pid for p in sleepers]
    unsupported = {"nvmlDeviceGetUtilizationRates": "NOT_SUPPORTED"}
    denied = {
        **unsupported,
        "nvmlDeviceGetComputeRunningProcesses_v3": "NO_PERMISSION",
        "nvmlDeviceGetGraphicsRunningProcesses_v3": "NO_PERMISSION",
    }
    scenario(pids, mig=(1, 1), errors=denied).write(fake_nvml)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml_lib.parent))
    daemon = DaemonProc(tmp_path, nvml_source(tmp_path)).start()
    try:
        gpu = f'gpu="0",uuid="{UUID}"'
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_unreadable", gpu) == 1)
        assert daemon.metric("aisentinel_gpu_processes", 'gpu="0"') is None
        res = daemon.status()
        assert res.returncode == 1, res.stdout + res.stderr
        assert (
            "source gpu is degraded: GPU 0 values unreadable: compute_processes, "
            "graphics_processes (NO_PERMISSION) (gpu_workload cannot watch it)"
        ) in res.stdout
        assert len(daemon.logged("gpu values unreadable")) == 1
        scenario(pids, mig=(1, 1), errors=unsupported).write(fake_nvml)
        assert wait_until(lambda: daemon.metric("aisentinel_gpu_unreadable", gpu) == 0)
        assert daemon.metric("aisentinel_gpu_processes", 'gpu="0"') == 2
        res = daemon.status()
        assert res.returncode == 0, res.stdout + res.stderr
        assert "NVML does not support utilization" in res.stdout
        assert len(daemon.logged("gpu values readable again")) == 1
    finally:
        assert daemon.terminate() == 0
    assert "Traceback" not in daemon.text()


def test_workload_labels_are_bounded_and_escaped() -> None:
    """A process's label is its container, service, or pid and name, escaped and capped."""
    base = ProcessAttribution(pid=42, exe=None, cmdline=(), uid=0, user="root", unit=None)

    def proc(**kw: Any) -> GpuProcessSample:
        return GpuProcessSample(0, "GPU-x", 42, "compute", 1, 0.5, 0.1, replace(base, **kw))

    assert workload_label(proc(unit="vllm.service")) == "unit:vllm.service"
    assert workload_label(proc(container_id="ab" * 32, container_name="ollama")) == (
        "container:ollama"
    )
    assert workload_label(proc(exe="/tmp/.x/xmrig")) == "pid:42 xmrig"
    evil = workload_label(proc(exe="/tmp/" + "\x1b[31m" + "z" * 300))
    assert "\x1b" not in evil
    assert len(evil) <= 80
    other = GpuProcessSample(0, "GPU-x", 0, "other", 1, 0.5, 0.1, None, count=3)
    assert workload_label(other) == "other"


def test_workload_labels_say_a_cgroup_target_is_its_cgroup() -> None:
    """A Podman container or a user's unit is labelled by its cgroup, as its workload
    target is; a path too long for the label keeps its end; a host container keeps its
    name."""
    cid = "ab" * 32
    base = ProcessAttribution(pid=42, exe="/bin/x", cmdline=(), uid=0, user="root", unit=None)

    def label(**kw: Any) -> str:
        attribution = replace(base, **kw)
        return workload_label(GpuProcessSample(0, "GPU-x", 42, "compute", 1, 0.5, 0.1, attribution))

    user_unit = "/user.slice/user-1000.slice/user@1000.service/app.slice/ollama.service"
    assert label(cgroup=user_unit) == f"cgroup:{user_unit}"
    podman = f"/machine.slice/libpod-{cid}.scope"
    long = label(container_id=cid, container_runtime="podman", cgroup=podman)
    assert long == f"cgroup:…{podman[len(podman) - 72 :]}"
    assert len(long) == 80
    assert long.endswith(f"{cid}.scope")
    assert label(container_id=cid, container_name="ollama") == "container:ollama"
    assert label(container_id=cid, cgroup="/machine.slice/\x1b[2J") == "pid:42 x"


def test_kernel_xid_entry_becomes_an_event() -> None:
    """A kernel journal entry with an NVRM Xid line gives an XidEvent; others give none."""
    entry = {
        "_TRANSPORT": "kernel",
        "__REALTIME_TIMESTAMP": 1_795_734_870_000_000,
        "MESSAGE": "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus.",
    }
    event = kernel_xid_event(entry)
    assert isinstance(event, XidEvent)
    assert (event.xid, event.pci_bus_id, event.source) == (79, "0000:3b:00", "kernel")
    assert kernel_xid_event({**entry, "_TRANSPORT": "syslog"}) is None
    assert kernel_xid_event({**entry, "MESSAGE": "usb 1-1: new device"}) is None
    assert re.search("fallen off", event.message)


def test_docker_names_without_an_engine_keep_the_container_id(tmp_path: Path) -> None:
    """No Docker socket: no name (the attribution keeps the id), asked once per minute."""
    from aisentinel.clock import FakeClock
    from aisentinel.gpu.dockernames import DockerNames

    clock = FakeClock()
    names = DockerNames(clock, str(tmp_path / "docker.sock"))
    assert names("docker", CONTAINER) is None
    assert names("containerd", CONTAINER) is None
    (tmp_path / "docker.sock").write_text("")  # appears: still cached as unknown for 60 s
    assert names("docker", CONTAINER) is None
    assert names.lookups == 0
    clock.advance(61)
    assert names("docker", CONTAINER) is None  # not an engine: connecting fails, counted
    assert names.errors == 1
    names.close()
