"""The GPU detectors: unknown workloads and miners, GPU-time theft, memory exhaustion, spikes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aisentinel.clock import FakeClock
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.gpu_memory import GpuMemoryConfig, GpuMemoryDetector
from aisentinel.detectors.gpu_spike import GpuSpikeConfig, GpuSpikeDetector
from aisentinel.detectors.gpu_theft import GpuTheftConfig, GpuTheftDetector
from aisentinel.detectors.gpu_workload import GpuWorkloadConfig, GpuWorkloadDetector
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Action,
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


def test_a_gpu_process_the_daemon_cannot_see_is_a_medium_finding_without_target() -> None:
    """A process NVML lists whose /proc entry cannot be read: not at its first sample (it
    may have exited), MEDIUM keyed pid:N with no target at the next, once per refire; its
    evidence names a hidden process and a gone one whose context is held as causes."""
    det = GpuWorkloadDetector(GpuWorkloadConfig(refire=3600.0))
    blind = GpuProcessSample(0, UUID, 4242, "compute", 10 * GiB, 1.0, 0.6, None)
    assert findings(det, [sample(T0, procs=(blind,))]) == []
    f = findings(det, [sample(T0 + 1, procs=(blind,))])
    assert [(x.severity, x.key, x.target) for x in f] == [(Severity.MEDIUM, "pid:4242", None)]
    assert "cannot see in /proc" in f[0].message
    assert "another pid namespace, hidepid" in f[0].evidence[1]
    assert "the process is gone and its GPU context is held" in f[0].evidence[1]
    assert findings(det, [sample(T0 + 2, procs=(blind,))]) == []
    assert [x.key for x in findings(det, [sample(T0 + 3602, procs=(blind,))])] == ["pid:4242"]


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


STRATUM_ARGS = ("-o", "stratum+tcp://pool.supportxmr.com:3333", "--donate-level=1")


def test_an_allowed_process_that_execs_a_miner_is_reported_at_once(tmp_path: Path) -> None:
    """Same pid and start time, another program (an exec, the command name unchanged):
    judged again at the next sample, before any recheck; a miner is HIGH."""
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path), recheck=3600.0))
    vllm = attr(4242, exe="/usr/bin/python3.11", comm="python3", start_time=9)
    vllm = replace(vllm, cmdline=("python3", "-m", "vllm.entrypoints.openai.api_server"))
    assert findings(det, [sample(T0, procs=(proc(vllm),))]) == []
    miner = replace(
        vllm,
        exe="/tmp/.cache/python3",
        cmdline=("python3", "-c", "pass", "stratum+tcp://pool.example.net:443", "--algo", "rx/0"),
    )
    f = findings(det, [sample(T0 + 1, procs=(proc(miner),))])
    assert [x.severity for x in f] == [Severity.HIGH]
    assert "pool URL argument stratum+tcp://pool.example.net:443" in f[0].evidence
    assert findings(det, [sample(T0 + 2, procs=(proc(miner),))]) == []  # reported once


def test_an_allowed_process_that_execs_an_unknown_program_is_reported_at_once() -> None:
    """An allowed ``python3 -m vllm`` that execs ``python3 train.py`` (same executable,
    other arguments) is an unknown workload from the next sample: MEDIUM, once."""
    det = GpuWorkloadDetector(GpuWorkloadConfig(recheck=3600.0))
    vllm = attr(4242, exe="/usr/bin/python3.11", comm="python3", start_time=9)
    vllm = replace(vllm, cmdline=("python3", "-m", "vllm"))
    assert findings(det, [sample(T0, procs=(proc(vllm),))]) == []
    other = replace(vllm, cmdline=("python3", "train.py"))
    f = findings(det, [sample(T0 + 1, procs=(proc(other),))])
    assert [x.severity for x in f] == [Severity.MEDIUM]
    assert findings(det, [sample(T0 + 2, procs=(proc(other),))]) == []


def test_a_title_that_keeps_changing_is_reported_once_per_refire() -> None:
    """A Ray worker alternating a declared title and ``ray::IDLE`` is one MEDIUM per
    refire, not one per change; a mining argument in a new title is HIGH at once."""
    det = GpuWorkloadDetector(
        GpuWorkloadConfig(extra_programs=("ray::RayWorkerWrapper*",), refire=3600.0)
    )
    base = attr(4242, exe="/usr/bin/python3.11", comm="python3", start_time=9)
    busy = replace(base, cmdline=("ray::RayWorkerWrapper.execute_method",))
    idle = replace(base, cmdline=("ray::IDLE",))
    out: list[Finding] = []
    for i in range(10):
        out += findings(det, [sample(T0 + 10 * i, procs=(proc(busy if i % 2 == 0 else idle),))])
    assert [x.severity for x in out] == [Severity.MEDIUM]
    miner = replace(base, cmdline=("ray::IDLE", "--algo", "kawpow"))
    f = findings(det, [sample(T0 + 101, procs=(proc(miner),))])
    assert [x.severity for x in f] == [Severity.HIGH]
    assert findings(det, [sample(T0 + 3700, procs=(proc(busy),))]) == []
    later = findings(det, [sample(T0 + 3710, procs=(proc(idle),))])
    assert [x.severity for x in later] == [Severity.MEDIUM]  # a refire later: once more


def test_argv0_does_not_allowlist_the_real_executable_does() -> None:
    """argv[0] = "ollama" allows nothing: an xmrig binary so started is a HIGH miner, any
    other binary a MEDIUM unknown workload; the real executable (a replaced file's
    " (deleted)" link too) or, where it cannot be read, the command name allows."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    miner = proc(attr(1, exe="/tmp/.x/xmrig", cmdline=("ollama", *STRATUM_ARGS), comm="xmrig"))
    quiet = proc(attr(2, exe="/tmp/.x/kthreadd", cmdline=("ollama", "serve"), comm="kthreadd"))
    blind = proc(attr(3, exe=None, cmdline=("ollama", "serve"), comm="kthreadd"))
    found = {
        f.target.id: f
        for f in findings(d, [sample(T0, procs=(p,)) for p in (miner, quiet, blind)])
        if f.target
    }
    assert {k: f.severity for k, f in found.items()} == {
        "1": Severity.HIGH,
        "2": Severity.MEDIUM,
        "3": Severity.MEDIUM,
    }
    assert "miner name xmrig" in found["1"].evidence
    assert "pid 3 executable unreadable command name kthreadd" in found["3"].evidence
    allowed = (
        proc(attr(4, exe="/usr/local/bin/ollama (deleted)", cmdline=("/usr/local/bin/ollama",))),
        proc(attr(5, exe=None, cmdline=("/usr/local/bin/ollama", "serve"), comm="ollama")),
        proc(attr(6, exe=None, cmdline=("x",), comm="ollama_llama_se")),  # cut at 15
        proc(attr(7, exe=None, cmdline=("VLLM::EngineCore",), comm="VLLM::EngineCor")),
    )
    assert findings(d, [sample(T0, procs=(p,)) for p in allowed]) == []


@pytest.mark.parametrize(
    ("where", "target"),
    [
        ({"unit": "ollama.service"}, "unit:ollama.service"),
        (
            {"container_id": "e" * 64, "container_name": "ollama", "container_runtime": "docker"},
            "container:" + "e" * 64,
        ),
    ],
)
def test_miner_inside_an_allowed_workload_is_high_about_that_workload(
    tmp_path: Path, where: dict[str, str], target: str
) -> None:
    """A miner that an Ollama RCE starts in ollama.service (or the ollama container) is a
    HIGH finding about that unit (container), saying what allowed it; freeze for
    gpu_workload then freezes that unit, unless [decisions.workload_allowlist] names it."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    spawned = attr(4242, exe="/tmp/.ollama/runner", cmdline=("/tmp/.ollama/runner", *STRATUM_ARGS))
    f = findings(d, [sample(T0, procs=(proc(replace(spawned, **where)),))])[0]
    assert f.severity is Severity.HIGH
    assert f.target is not None
    assert f.target.text == target
    assert f.target.exe == "/tmp/.ollama/runner"
    what = where.get("unit") or "ollama"
    kind = "unit" if "unit" in where else "container"
    assert f.message.endswith(f"inside a workload allowed by {kind} {what}")
    assert f"allowed by {kind} {what}; mining signs override it" in f.evidence
    ledger = Ledger(tmp_path / "decisions.sqlite3", FakeClock(T0))
    engine = DecisionEngine(
        DecisionsConfig(workload_actions={"gpu_workload": "freeze"}),
        ledger,
        FakeClock(T0),
        host_addresses=tuple,
    )
    frozen = engine.decide(f)
    assert (frozen.action, frozen.target) == (Action.FREEZE, f.target)
    ledger.close()


def _tcp_table(tmp_path: Path, pid: int, remote: str | None, local: str = "0100007F:D431") -> None:
    """A proc root entry for ``pid`` with one socket (inode 777), connected from ``local``
    to ``remote`` (``/proc/net/tcp`` hex) or to nothing yet, and a listener on port 8080
    (inode 555, another socket)."""
    d = tmp_path / str(pid)
    (d / "fd").mkdir(parents=True, exist_ok=True)
    (d / "net").mkdir(exist_ok=True)
    if not (d / "fd" / "3").is_symlink():
        (d / "fd" / "3").symlink_to("socket:[777]")
    header = "  sl  local_address rem_address   st\n"
    tail = " 00000000:00000000 00:00000000 00000000  1000        0"
    listen = f"   0: 00000000:1F90 00000000:0000 0A{tail} 555 1\n"
    row = f"   1: {local} {remote} 01{tail} 777 1\n"
    (d / "net" / "tcp6").write_text(header)
    (d / "net" / "tcp").write_text(header + listen + (row if remote else ""))


_HEADER = "  sl  local_address rem_address   st\n"
_TAIL = " 00000000:00000000 00:00000000 00000000"


def _netns(tmp_path: Path, pid: int, rows: list[str]) -> None:
    """A fixture /proc/PID/net/tcp with ``rows`` and an empty tcp6, and no fd folder."""
    d = tmp_path / str(pid)
    (d / "net").mkdir(parents=True, exist_ok=True)
    (d / "net" / "tcp").write_text(_HEADER + "".join(f"{r}\n" for r in rows))
    (d / "net" / "tcp6").write_text(_HEADER)


@pytest.fixture
def fds_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/PID/fd unreadable, as for another user's process when the daemon is not root."""
    real_scandir = os.scandir

    def denied(path: Any) -> Any:
        if str(path).endswith("/fd"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)


@pytest.mark.usefixtures("fds_denied")
def test_a_pool_connection_of_the_users_is_a_medium_hint_where_the_fds_are_unreadable(
    tmp_path: Path,
) -> None:
    """Sockets unreadable: a remote pool-port connection of the unknown process's uid is
    a hint in its MEDIUM finding, said to be by user, never HIGH; another uid's, a
    loopback one, or a root process's sockets give no hint."""
    pid = 6161
    _netns(
        tmp_path,
        pid,
        [
            f"   0: 0100007F:D431 0A00A8C0:115C 01{_TAIL}  1000        0 777 1",  # -> 4444
            f"   1: 0100007F:D432 0A00A8C0:0D05 01{_TAIL}  1001        0 778 1",  # another uid
            f"   2: 0100007F:D433 0100007F:15B3 01{_TAIL}  1000        0 779 1",  # loopback
        ],
    )
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path)))
    f = findings(det, [sample(T0, procs=(proc(attr(pid, exe=None, comm="worker")),))])
    assert [x.severity for x in f] == [Severity.MEDIUM]
    hint = (
        "connection to mining-pool port 4444 (tcp) from a socket of its user (uid 1000), "
        "maybe another process's: its own sockets are unreadable"
    )
    assert f[0].message.startswith("unknown GPU workload on GPU 0: ")
    assert f[0].message.endswith(f"(maybe mining: {hint})")
    assert [e for e in f[0].evidence if "mining-pool port" in e] == [hint]
    assert det.fd_denied == 1
    root_proc = attr(pid + 1, exe=None, comm="worker", uid=0)
    (tmp_path / str(pid + 1)).symlink_to(tmp_path / str(pid))
    f = findings(det, [sample(T0, procs=(proc(root_proc),))])
    assert [(x.severity, "mining" in x.message) for x in f] == [(Severity.MEDIUM, False)]
    assert det.fd_denied == 2
    exported = {x.name: x.value for family in det.collect() for x in family.samples if not x.labels}
    assert exported["aisentinel_gpu_socket_reads_denied_total"] == 2


@pytest.mark.usefixtures("fds_denied")
def test_a_hint_found_on_recheck_is_a_medium_reported_once(tmp_path: Path) -> None:
    """An unknown process whose user opens a pool connection later (sockets unreadable)
    is reported again at the next recheck, MEDIUM and by user, and then not again."""
    pid = 6262
    _netns(tmp_path, pid, [])
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path), recheck=60.0))
    worker = proc(attr(pid, exe=None, comm="worker"))
    assert [x.severity for x in findings(det, [sample(T0, procs=(worker,))])] == [Severity.MEDIUM]
    _netns(tmp_path, pid, [f"   0: 0A00A8C0:D431 076433C6:0D05 01{_TAIL}  1000        0 9 1"])
    f = findings(det, [sample(T0 + 61, procs=(worker,))])
    assert [(x.severity, "maybe mining" in x.message) for x in f] == [(Severity.MEDIUM, True)]
    assert findings(det, [sample(T0 + 122, procs=(worker,))]) == []


@pytest.mark.usefixtures("fds_denied")
def test_a_client_cannot_frame_an_allowed_service_as_a_miner(tmp_path: Path) -> None:
    """Ollama's runner (unit ollama.service, uid 998) holds the GPU while `ollama serve`,
    same uid, pulls from attacker.example:3333 for an API client: sockets unreadable, no
    finding at any recheck (nothing to page about, nothing to freeze)."""
    runner = 7001
    _netns(tmp_path, runner, [])
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path), recheck=60.0))
    a = attr(runner, exe=None, comm="ollama", unit="ollama.service", uid=998)
    assert findings(det, [sample(T0, procs=(proc(a),))]) == []
    pull = f"   0: 0A00A8C0:A028 076433C6:0D05 01{_TAIL}   998        0 999 1"
    _netns(tmp_path, runner, [pull])  # 192.168.0.10:41000 -> 198.51.100.7:3333
    for step in range(1, 4):
        assert findings(det, [sample(T0 + 61 * step, procs=(proc(a),))]) == []
    assert det.fd_denied == 4


@pytest.mark.usefixtures("fds_denied")
def test_another_program_of_the_user_does_not_make_a_declared_notebook_a_miner(
    tmp_path: Path,
) -> None:
    """A declared Jupyter kernel of uid 1000 is quiet while a browser of uid 1000 talks to
    a remote Jupyter on :8888 (a pool port), its sockets unreadable."""
    pid = 5151
    tab = f"   0: 0A00A8C0:D431 050071CB:22B8 01{_TAIL}  1000        0 777 1"  # -> :8888
    _netns(tmp_path, pid, [tab])
    det = GpuWorkloadDetector(
        GpuWorkloadConfig(proc_root=str(tmp_path), extra_programs=("ipykernel_launcher",))
    )
    kernel = replace(
        attr(pid, exe=None, comm="python3", uid=1000),
        cmdline=("/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "/run/user/1000/k.json"),
    )
    assert findings(det, [sample(T0, procs=(proc(kernel),))]) == []
    assert findings(det, [sample(T0 + 61, procs=(proc(kernel),))]) == []


def test_accepted_connection_from_a_pool_port_is_not_mining(tmp_path: Path) -> None:
    """A client's source port that happens to be a pool port (45560, an ephemeral one)
    on a connection the process accepted (its local port listens) is no mining sign."""
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path)))
    _tcp_table(tmp_path, 13, "0B00A8C0:B1F8", local="0A00A8C0:1F90")  # 192.168.0.11:45560
    server = proc(attr(13, exe="/opt/srv/infer", cmdline=("/opt/srv/infer", "--port", "8080")))
    assert [f.severity for f in findings(det, [sample(T0, procs=(server,))])] == [Severity.MEDIUM]


def test_allowed_workload_connecting_to_a_pool_port_is_a_miner_unless_on_loopback(
    tmp_path: Path,
) -> None:
    """An allowed process is looked at every recheck too: a connection to a pool port
    elsewhere makes it HIGH; one to a loopback address (its own helpers) does not."""
    det = GpuWorkloadDetector(GpuWorkloadConfig(proc_root=str(tmp_path), recheck=60.0))
    _tcp_table(tmp_path, 11, "0100007F:B1F8")  # 127.0.0.1:45560
    _tcp_table(tmp_path, 12, None)
    ollama = attr(0, exe="/usr/local/bin/ollama", cmdline=("ollama", "serve"))
    both = (proc(replace(ollama, pid=11)), proc(replace(ollama, pid=12)))
    assert findings(det, [sample(T0, procs=(p,)) for p in both]) == []
    _tcp_table(tmp_path, 12, "0A00A8C0:0D05")  # 192.168.0.10:3333
    assert findings(det, [sample(T0 + 30, procs=(p,)) for p in both]) == []  # before recheck
    again = findings(det, [sample(T0 + 61, procs=(p,)) for p in both])
    assert [(f.severity, f.target.id if f.target else None) for f in again] == [
        (Severity.HIGH, "12")
    ]
    assert "connection to mining-pool port 3333 (tcp)" in again[0].evidence


PYTHON = "/usr/bin/python3.11"


def test_python_inference_servers_are_allowed_by_their_program_not_any_script() -> None:
    """An interpreter is allowed by what it runs (vllm serve, -m module, VLLM::/sglang::
    titles, TGI shards, ComfyUI by its path); a bare main.py, -c code, an option's value
    or a non-interpreter's argument is not; a vllm script with pool arguments is a miner."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    allowed = [
        ("/usr/bin/python3", "/usr/local/bin/vllm", "serve", "meta-llama/Llama-3-8B"),
        ("/usr/bin/python3", "-s", "/usr/local/bin/vllm", "serve", "m"),  # shebang option
        ("python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"),
        ("VLLM::EngineCore",),
        ("VLLM::Worker_TP1",),
        ("python3", "-um", "sglang.launch_server", "--model-path", "m"),
        ("sglang::scheduler_TP0",),
        ("/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve", "m"),
        ("python", "/opt/ComfyUI/main.py", "--listen"),
        ("python3", "-X", "dev", "-m", "llama_cpp.server", "--model", "m.gguf"),
        ("/usr/bin/python3", "/usr/local/bin/open-webui", "serve"),
    ]
    for i, cmd in enumerate(allowed):
        p = proc(attr(100 + i, exe=PYTHON, cmdline=cmd))
        assert findings(d, [sample(T0, procs=(p,))]) == [], cmd
    blind = proc(attr(99, exe=None, cmdline=allowed[0], comm="python3"))
    assert findings(d, [sample(T0, procs=(blind,))]) == []
    unknown = [
        (PYTHON, ("python", "main.py", "--listen")),
        (PYTHON, ("python3", "train.py")),
        (PYTHON, ("python3", "-c", "import vllm")),
        (PYTHON, ("python3", "-X", "vllm", "train.py")),
        (PYTHON, ("python3", "/home/u/ComfyUI/train.py")),
        (PYTHON, ("python3", "-m", "vllmx")),
        ("/opt/x/helper", ("/opt/x/helper", "vllm")),
    ]
    for i, (exe, cmd) in enumerate(unknown):
        p = proc(attr(200 + i, exe=exe, cmdline=cmd))
        assert [f.severity for f in findings(d, [sample(T0, procs=(p,))])] == [Severity.MEDIUM], cmd
    fake = proc(attr(300, exe=PYTHON, cmdline=("python3", "/tmp/vllm", *STRATUM_ARGS)))
    f = findings(d, [sample(T0, procs=(fake,))])[0]
    assert f.severity is Severity.HIGH
    assert "inside a workload allowed by python3.11 program vllm" in f.message


def test_every_default_inference_server_command_line_is_allowed() -> None:
    """The command lines real inference servers' GPU processes show (Ollama and its
    runners, llama.cpp, TGI, LocalAI, Triton, vLLM, SGLang) match the default allowlist."""
    d = GpuWorkloadDetector(GpuWorkloadConfig())
    servers = [
        ("/usr/local/bin/ollama", ("/usr/local/bin/ollama", "serve")),
        ("/usr/local/bin/ollama", ("/usr/local/bin/ollama", "runner", "--model", "/m")),
        (
            "/usr/lib/ollama/runners/cuda_v12/ollama_llama_server",
            ("/usr/lib/ollama/runners/cuda_v12/ollama_llama_server", "--model", "/m"),
        ),
        ("/usr/local/bin/llama-server", ("llama-server", "-m", "m.gguf")),
        ("/usr/local/bin/text-generation-launcher", ("text-generation-launcher",)),
        ("/usr/local/bin/local-ai", ("local-ai", "run")),
        ("/tmp/localai/backend-assets/grpc/llama-cpp-avx2", ("llama-cpp-avx2", "--addr", "x")),
        ("/opt/tritonserver/bin/tritonserver", ("tritonserver", "--model-repository=/m")),
        (
            "/opt/tritonserver/backends/python/triton_python_backend_stub",
            ("/opt/tritonserver/backends/python/triton_python_backend_stub", "/m/model.py"),
        ),
        (PYTHON, ("/usr/bin/python3", "/usr/local/bin/vllm", "serve", "m")),
        (PYTHON, ("VLLM::EngineCore",)),
        (PYTHON, ("python3", "-m", "sglang.launch_server")),
    ]
    procs = tuple(proc(attr(10 + i, exe=exe, cmdline=cmd)) for i, (exe, cmd) in enumerate(servers))
    assert [d.allowed(p) for p in procs] == [True] * len(servers)


# --------------------------------------------------------------------------- gpu_theft


OLLAMA = proc(attr(77, exe="/usr/bin/ollama", unit="ollama.service"))


def busy_run(
    d: GpuTheftDetector,
    start: float,
    seconds: int,
    requests: list[HttpRequest],
    util: float = 0.9,
    *,
    procs: tuple[GpuProcessSample, ...] = (OLLAMA,),
) -> list[Finding]:
    """An idle first sample (the GPU source samples from the start), the requests, then one
    busy sample a second for ``seconds``."""
    assert findings(d, [sample(start - 900, util=0.0)]) == []
    out = findings(d, list(requests))
    for i in range(seconds + 1):
        out += findings(d, [sample(start + i, util=util, procs=procs)])
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


def _theft_beside_gpu_workload(**workload: Any) -> GpuTheftDetector:
    """gpu_theft and gpu_workload built as the daemon builds them (one shared state)."""
    built = build_detectors(
        {
            "gpu_workload": GpuWorkloadConfig(**workload),
            "gpu_theft": GpuTheftConfig(window=300.0),
        }
    )
    SharedState().bind(built)  # the pipeline binds them to the state it owns
    return next(d for d in built if isinstance(d, GpuTheftDetector))


TRAIN = proc(attr(88, exe="/usr/bin/python3.11", unit="train.service", cmdline=("python3", "t.py")))


def test_a_declared_batch_job_using_the_gpu_outside_the_api_is_low_not_high() -> None:
    """A workload the operator declared in gpu_workload (extra_units) keeps the GPU busy
    without API traffic: LOW (no page), saying what declared it; an idle Ollama beside it
    (SM 0) does not count."""
    d = _theft_beside_gpu_workload(extra_units=("train.service",))
    idle = replace(OLLAMA, sm_util=0.0)
    out = busy_run(d, T0, 310, [], procs=(TRAIN, idle))
    assert [(f.severity, f.target.text if f.target else None) for f in out] == [
        (Severity.LOW, "unit:train.service")
    ]
    assert "declared in [detectors.gpu_workload] (unit train.service)" in out[0].message


def test_an_undeclared_process_beside_a_declared_job_keeps_theft_high() -> None:
    """Any process using the GPU that is not declared (here a small one beside the
    declared job) makes it HIGH, about that process; so does a built-in AI service
    (its API should explain its GPU time) and an unattributed process."""
    d = _theft_beside_gpu_workload(extra_units=("train.service",))
    thief = proc(attr(99, exe="/tmp/x"), sm=0.05)
    out = busy_run(d, T0, 310, [], procs=(TRAIN, thief))
    assert [(f.severity, f.target.text if f.target else None) for f in out] == [
        (Severity.HIGH, "pid:99")
    ]
    d = _theft_beside_gpu_workload(extra_units=("train.service",))
    out = busy_run(d, T0, 310, [], procs=(TRAIN, OLLAMA))
    assert [(f.severity, f.target.text if f.target else None) for f in out] == [
        (Severity.HIGH, "unit:ollama.service")
    ]
    d = _theft_beside_gpu_workload(extra_units=("train.service",))
    out = busy_run(d, T0, 310, [], procs=(TRAIN, proc(None, sm=0.5)))
    assert [f.severity for f in out] == [Severity.HIGH]


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
