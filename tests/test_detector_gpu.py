"""The GPU detectors: unknown workloads and miners, GPU-time theft, memory exhaustion, spikes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aisentinel.detectors.gpu_memory import GpuMemoryConfig, GpuMemoryDetector
from aisentinel.detectors.gpu_spike import GpuSpikeConfig, GpuSpikeDetector
from aisentinel.detectors.gpu_theft import GpuTheftConfig, GpuTheftDetector
from aisentinel.detectors.gpu_workload import GpuWorkloadConfig, GpuWorkloadDetector
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Event,
    Finding,
    GpuProcessSample,
    GpuSample,
    HttpRequest,
    ProcessAttribution,
    Severity,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.gpu.attribution import ProcessAttributor

T0 = 1_795_000_000.0
UUID = "GPU-8f1c0a3e-1111-2222-3333-444455556666"
GiB = 1 << 30


def attr(pid: int = 4242, **kw: Any) -> ProcessAttribution:
    base = ProcessAttribution(
        pid=pid, exe="/opt/x/tool", cmdline=("/opt/x/tool",), uid=1000, user="u", unit=None
    )
    return replace(base, **kw)


def proc(a: ProcessAttribution | None, mem: int = 4 * GiB, sm: float = 0.9) -> GpuProcessSample:
    pid = a.pid if a is not None else 99
    return GpuProcessSample(0, UUID, pid, "compute", mem, sm, 0.1, a)


def sample(
    ts: float, util: float = 0.9, used: int = 10 * GiB, procs: tuple[GpuProcessSample, ...] = ()
) -> GpuSample:
    total = 80 * GiB
    return GpuSample(
        ts=ts,
        index=0,
        uuid=UUID,
        name="NVIDIA H100",
        pci_bus_id="0000:3b:00",
        lost=False,
        utilization_gpu=util,
        utilization_memory=0.1,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=total - used,
        memory_reserved_bytes=0,
        temperature_celsius=50.0,
        power_watts=300.0,
        energy_joules=1.0,
        ecc_corrected=0,
        ecc_uncorrected=0,
        throttle_reasons=0,
        mig_enabled=False,
        processes=procs,
    )


def request(
    ts: float, client: str, path: str = "/api/generate", user: str | None = None, status: int = 200
) -> HttpRequest:
    return HttpRequest(ts, "web", client, "POST", path, status, 100, user, "curl/8")


def findings(detector: Any, events: list[Event]) -> list[Finding]:
    return [f for _, f in detector.observe_many(events)]


# --------------------------------------------------------------------------- gpu_workload


def test_allowed_workloads_are_quiet_and_an_unknown_one_is_reported_once() -> None:
    """Ollama, python under vllm.service and an ollama container are allowed; an unknown
    executable is one MEDIUM finding about its process, not one per sample."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    allowed = (
        proc(attr(1, exe="/usr/local/bin/ollama")),
        proc(attr(2, exe="/usr/bin/python3.11", unit="vllm.service")),
        proc(attr(3, exe="/usr/bin/python3", container_id="c" * 64, container_name="ollama-gpu")),
    )
    assert findings(d, [sample(T0, procs=allowed)]) == []
    odd = proc(attr(4242, exe="/home/bob/render", cmdline=("/home/bob/render", "-q")))
    first = findings(d, [sample(T0 + 1, procs=(*allowed, odd))])
    assert len(first) == 1
    f = first[0]
    assert f.severity is Severity.MEDIUM
    assert f.client is None
    assert f.target == WorkloadTarget(
        WorkloadKey.PID, "4242", name="render", exe="/home/bob/render"
    )
    assert "gpu 0 " + UUID in f.evidence
    assert "cmdline /home/bob/render -q" in f.evidence
    assert findings(d, [sample(T0 + 2 + i, procs=(odd,)) for i in range(30)]) == []


def test_container_and_unit_targets() -> None:
    """An unknown process in a container is about the container; in a service, the unit."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    boxed = proc(
        attr(10, container_id="d" * 64, container_name="batchjob", container_runtime="docker")
    )
    f = findings(d, [sample(T0, procs=(boxed,))])[0]
    assert f.target is not None
    assert f.target.text == "container:" + "d" * 64
    unit = proc(attr(11, unit="backup.service"))
    g = findings(d, [sample(T0, procs=(unit,))])[0]
    assert g.target is not None
    assert g.target.text == "unit:backup.service"


def test_extra_allowlist_entries_extend_the_defaults() -> None:
    """extra_exes adds to the allowed executables without replacing the defaults."""
    d = GpuWorkloadDetector(GpuWorkloadConfig(extra_exes=("render",)))
    procs = (proc(attr(1, exe="/usr/bin/render")), proc(attr(2, exe="/usr/bin/ollama")))
    assert findings(d, [sample(T0, procs=procs)]) == []


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, killed after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def test_miner_arguments_in_cmdline_make_it_high(child: list[subprocess.Popen[str]]) -> None:
    """A real process with a stratum URL and --algo in its command line is a HIGH miner."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; print('ok', flush=True); time.sleep(60)",
            "--algo",
            "rx/0",
            "-o",
            "stratum+tcp://pool.example.net:3333",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child.append(p)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ok"
    found = ProcessAttributor().attribute(p.pid)
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    f = findings(d, [sample(T0, procs=(proc(found),))])[0]
    assert f.severity is Severity.HIGH
    assert "cryptocurrency miner" in f.message
    assert "pool URL argument stratum+tcp://pool.example.net:3333" in f.evidence
    assert "mining argument --algo" in f.evidence


def test_miner_name_makes_it_high() -> None:
    """An executable named like a known miner is HIGH."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    f = findings(d, [sample(T0, procs=(proc(attr(7, exe="/tmp/.x/xmrig")),))])[0]
    assert f.severity is Severity.HIGH
    assert "miner name xmrig" in f.evidence


def test_connection_to_a_pool_port_makes_it_high(child: list[subprocess.Popen[str]]) -> None:
    """A real process with a TCP connection to port 3333 (a local listener) is a HIGH miner,
    found through its socket inodes and /proc/PID/net/tcp; without one it is MEDIUM."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 3333))
    except OSError:
        listener.close()
        pytest.skip("127.0.0.1:3333 is in use")
    listener.listen(4)
    try:
        code = (
            "import socket, time; s = socket.create_connection(('127.0.0.1', 3333)); "
            "print('ok', flush=True); time.sleep(60)"
        )
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        child.append(p)
        idle = subprocess.Popen(
            [sys.executable, "-c", "import time; print('ok', flush=True); time.sleep(60)"],
            stdout=subprocess.PIPE,
            text=True,
        )
        child.append(idle)
        for c in (p, idle):
            assert c.stdout is not None
            assert c.stdout.readline().strip() == "ok"
        attributor = ProcessAttributor()
        d = GpuWorkloadDetector(GpuWorkloadConfig())
        miner = findings(d, [sample(T0, procs=(proc(attributor.attribute(p.pid)),))])[0]
        assert miner.severity is Severity.HIGH
        assert "connection to mining-pool port 3333 (tcp)" in miner.evidence
        quiet = findings(d, [sample(T0, procs=(proc(attributor.attribute(idle.pid)),))])[0]
        assert quiet.severity is Severity.MEDIUM
    finally:
        listener.close()


def test_pool_connection_opened_later_is_found_on_recheck(tmp_path: Path) -> None:
    """An unknown process reported MEDIUM is reported again, HIGH, once a recheck finds a
    pool connection (a proc root fixture)."""
    pid = 5151
    d = tmp_path / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "net").mkdir()
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode\n"
    )
    (d / "net" / "tcp").write_text(header)
    (d / "net" / "tcp6").write_text(header)
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path), recheck=60.0))
    p = proc(attr(pid, exe="/usr/bin/worker"))
    assert findings(det, [sample(T0, procs=(p,))])[0].severity is Severity.MEDIUM
    (d / "fd" / "3").symlink_to("socket:[777]")
    (d / "net" / "tcp").write_text(
        header + "   0: 0100007F:D431 0A00A8C0:115C 01 00000000:00000000 00:00000000 "
        "00000000  1000        0 777 1\n"
    )
    assert findings(det, [sample(T0 + 30, procs=(p,))]) == []  # before the recheck
    again = findings(det, [sample(T0 + 61, procs=(p,))])
    assert [f.severity for f in again] == [Severity.HIGH]
    assert "connection to mining-pool port 4444 (tcp)" in again[0].evidence


# --------------------------------------------------------------------------- gpu_theft


def busy_run(
    d: GpuTheftDetector, start: float, seconds: int, requests: list[HttpRequest], util: float = 0.9
) -> list[Finding]:
    """An idle first sample (the GPU source samples from the start), the requests, then one
    busy sample a second for ``seconds``."""
    assert findings(d, [sample(start - 900, util=0.0)]) == []
    out = findings(d, list(requests))
    p = proc(attr(77, exe="/usr/bin/ollama", unit="ollama.service"))
    for i in range(seconds + 1):
        out += findings(d, [sample(start + i, util=util, procs=(p,))])
    return out


def test_busy_gpu_without_api_traffic_is_theft_about_the_workload() -> None:
    """A GPU busy for the window with no inference traffic: one HIGH workload finding."""
    d = GpuTheftDetector(GpuTheftConfig(window=300.0))
    out = busy_run(d, T0, 310, [])
    assert len(out) == 1
    f = out[0]
    assert f.severity is Severity.HIGH
    assert f.client is None
    assert f.target is not None
    assert f.target.text == "unit:ollama.service"
    assert "gpu 0 " + UUID in f.evidence
    assert any(e.startswith("window ") for e in f.evidence)


def test_authenticated_traffic_explains_a_busy_gpu() -> None:
    """Authenticated inference requests in the window: no finding."""
    d = GpuTheftDetector(GpuTheftConfig(window=300.0))
    reqs = [request(T0 + i * 10, "198.51.100.7", user="alice") for i in range(20)]
    assert busy_run(d, T0, 310, reqs) == []


def test_requests_before_any_gpu_sample_are_not_kept() -> None:
    """With no GPU seen (no GPU source), access-log batches cost nothing and keep no keys."""
    theft = GpuTheftDetector(GpuTheftConfig())
    memory = GpuMemoryDetector(GpuMemoryConfig())
    reqs: list[Event] = [request(T0 + i, f"198.51.100.{i}") for i in range(50)]
    assert findings(theft, reqs) == []
    assert findings(memory, reqs) == []
    assert theft.tracked_keys() == 0
    assert memory.tracked_keys() == 0


def test_short_or_light_use_is_not_theft() -> None:
    """Busy for less than the window, or under the threshold: no finding."""
    d = GpuTheftDetector(GpuTheftConfig(window=300.0))
    assert busy_run(d, T0, 200, []) == []
    assert busy_run(d, T0 + 1000, 400, [], util=0.3) == []


def test_unauthenticated_clients_keeping_the_gpu_busy_are_named() -> None:
    """Inference traffic from clients that never authenticated keeps the GPU busy: HIGH
    findings per client (bans), a MEDIUM one about the workload; a client that
    authenticated earlier (shared state) is not one of them."""
    shared = SharedState()
    d = GpuTheftDetector(GpuTheftConfig(window=300.0), shared=shared)
    assert findings(d, [sample(T0 - 900, util=0.0)]) == []  # the source samples from the start
    findings(d, [request(T0 - 500, "203.0.113.9", user="bob")])  # authenticated earlier
    reqs = [request(T0 + i * 5, "198.51.100.66") for i in range(50)]
    reqs += [request(T0 + 3, "198.51.100.67")]
    out = busy_run(d, T0, 310, reqs)
    clients = [f for f in out if f.client is not None]
    assert [(f.client, f.severity, f.count) for f in clients] == [
        ("198.51.100.66", Severity.HIGH, 50)
    ]
    workload = [f for f in out if f.client is None]
    assert len(workload) == 1
    assert workload[0].severity is Severity.MEDIUM
    assert workload[0].clients[0] == "198.51.100.66"


# --------------------------------------------------------------------------- gpu_memory


def test_sustained_full_memory_names_the_top_consumers() -> None:
    """Memory above the threshold for the window: one MEDIUM finding about the top consumer."""
    d = GpuMemoryDetector(GpuMemoryConfig(window=120.0))
    big = proc(attr(1, exe="/usr/bin/hog"), mem=70 * GiB)
    small = proc(attr(2, exe="/usr/bin/ollama"), mem=6 * GiB)
    out: list[Finding] = []
    for i in range(200):
        out += findings(d, [sample(T0 + i, used=78 * GiB, procs=(big, small))])
    assert len(out) == 1
    f = out[0]
    assert f.severity is Severity.MEDIUM
    assert f.target is not None
    assert f.target.text == "pid:1"
    assert f.evidence[3].startswith("consumer pid 1 /usr/bin/hog")


def test_fast_climb_with_a_request_flood_names_the_client() -> None:
    """Memory rising fast while one client floods the API: HIGH for the workload and a
    HIGH finding about the client."""
    d = GpuMemoryDetector(GpuMemoryConfig(climb_window=30.0, flood_threshold=100))
    p = proc(attr(3, exe="/usr/bin/ollama", unit="ollama.service"), mem=60 * GiB)
    assert findings(d, [sample(T0 - 900, util=0.0, procs=(p,))]) == []  # sampled from the start
    reqs = [request(T0 + i * 0.1, "198.51.100.99", path="/api/chat") for i in range(200)]
    reqs += [request(T0 + i, "10.20.0.5", path="/api/chat") for i in range(10)]
    out = findings(d, reqs)
    for i in range(21):
        used = (10 + 3 * i) * GiB
        out += findings(d, [sample(T0 + i, used=used, procs=(p,))])
    assert [(f.severity, f.client) for f in out] == [
        (Severity.HIGH, None),
        (Severity.HIGH, "198.51.100.99"),
    ]
    assert "request flood from 198.51.100.99" in out[0].message


def test_a_model_load_climb_short_of_the_threshold_is_quiet() -> None:
    """vLLM preallocating 90% at start (a climb, no flood) is no finding; a climb into the
    exhaustion threshold is one MEDIUM finding."""
    vllm = proc(attr(4, exe="/usr/bin/python3", unit="vllm.service"), mem=72 * GiB)
    d = GpuMemoryDetector(GpuMemoryConfig(climb_window=30.0, used_threshold=0.95))
    out = findings(d, [sample(T0 - 60, used=1 * GiB)])
    for i in range(10):
        out += findings(d, [sample(T0 + i, used=(1 + 8 * i) * GiB, procs=(vllm,))])
    assert out == []  # 73 of 80 GiB: 91%
    hog = proc(attr(5, exe="/usr/bin/hog"), mem=78 * GiB)
    for i in range(12):
        out += findings(d, [sample(T0 + 300 + i, used=min(1 + 8 * i, 78) * GiB, procs=(hog,))])
    assert [(f.severity, f.target.text if f.target else None) for f in out] == [
        (Severity.MEDIUM, "pid:5")
    ]
    assert "rose from" in out[0].message


def test_requests_turned_away_are_not_a_flood() -> None:
    """A client retrying on 502 while the model server restarts (and its memory climbs) is
    not flooding the model: no finding names it; the same volume of 200s does."""
    p = proc(attr(3, exe="/usr/bin/ollama", unit="ollama.service"), mem=60 * GiB)

    def climb(d: GpuMemoryDetector, status: int) -> list[Finding]:
        out = findings(d, [sample(T0 - 900, util=0.0, procs=(p,))])
        reqs = [request(T0 + i * 0.1, "198.51.100.7", status=status) for i in range(200)]
        out += findings(d, reqs)
        for i in range(21):
            out += findings(d, [sample(T0 + i, used=(10 + 3 * i) * GiB, procs=(p,))])
        return out

    assert climb(GpuMemoryDetector(GpuMemoryConfig()), 502) == []
    assert climb(GpuMemoryDetector(GpuMemoryConfig()), 429) == []
    clients = [f.client for f in climb(GpuMemoryDetector(GpuMemoryConfig()), 200)]
    assert clients == [None, "198.51.100.7"]


# --------------------------------------------------------------------------- gpu_spike


def test_a_new_pattern_is_flagged_once_after_warm_up() -> None:
    """Steady low use, then a jump that stays: one LOW finding, not one per sample."""
    d = GpuSpikeDetector(GpuSpikeConfig(warmup=30))
    p = proc(attr(5, exe="/usr/bin/newjob"))
    out: list[Finding] = []
    for i in range(60):
        out += findings(d, [sample(T0 + i, util=0.1 + 0.01 * (i % 3), used=10 * GiB)])
    assert out == []
    for i in range(300):
        out += findings(d, [sample(T0 + 60 + i, util=0.95, used=10 * GiB, procs=(p,))])
    assert len(out) == 1
    assert out[0].severity is Severity.LOW
    assert "utilization jumped to 95%" in out[0].message
    assert out[0].target is not None
    assert out[0].target.text == "pid:5"


def test_no_finding_during_warm_up() -> None:
    """A jump before the warm-up is over is learned, not reported."""
    d = GpuSpikeDetector(GpuSpikeConfig(warmup=100))
    out: list[Finding] = []
    for i in range(50):
        out += findings(d, [sample(T0 + i, util=0.1 if i < 20 else 0.9)])
    assert out == []
