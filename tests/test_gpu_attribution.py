"""GPU process attribution from /proc (fixture trees and real processes) and top-N bounding."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import wait_for

from aisentinel.events import GpuProcessSample, ProcessAttribution
from aisentinel.gpu.attribution import ProcessAttributor, parse_cgroup
from aisentinel.gpu.topn import bound_processes

CID = "a" * 64


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/system.slice/vllm.service\n", ("vllm.service", None, None)),
        (
            f"0::/system.slice/docker-{CID}.scope\n",
            (f"docker-{CID}.scope", "docker", CID),
        ),
        (
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_5678.slice/"
            f"cri-containerd-{CID}.scope\n",
            (f"cri-containerd-{CID}.scope", "containerd", CID),
        ),
        (
            f"0::/machine.slice/crio-{CID}.scope/container\n",
            (f"crio-{CID}.scope", "cri-o", CID),
        ),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/"
            f"libpod-{CID}.scope/container\n",
            (f"libpod-{CID}.scope", "podman", CID),
        ),
        (
            f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n"
            f"1:name=systemd:/docker/{CID}\n",
            (None, "docker", CID),
        ),
        (
            f"4:pids:/kubepods/besteffort/pod0f1e2d3c-aaaa-bbbb/{CID}\n"
            "1:name=systemd:/system.slice/containerd.service\n",
            ("containerd.service", "kubernetes", CID),
        ),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", ("session-3.scope", None, None)),
        ("0::/\n", (None, None, None)),
        ("garbage\n", (None, None, None)),
    ],
)
def test_parse_cgroup(cgroup: str, expected: tuple[str | None, str | None, str | None]) -> None:
    """Unit and container runtime/id come from cgroup v1 and v2 paths of each runtime."""
    assert parse_cgroup(cgroup) == expected


def _fake_proc(
    root: Path, pid: int, *, start: int, exe: str, cgroup: str, comm: str = "odd) name"
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 20
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (d / "cmdline").write_bytes(b"/tmp/.x/xmrig\0-o\0stratum+tcp://pool:3333\0")
    (d / "status").write_text("Name:\txmrig\nUid:\t0\t0\t0\t0\n")
    (d / "cgroup").write_text(cgroup)
    if (d / "exe").is_symlink():
        (d / "exe").unlink()
    (d / "exe").symlink_to(exe)


def test_fixture_tree_attribution_cache_and_pid_reuse(tmp_path: Path) -> None:
    """Read once per (pid, start, exe): reuse or exec re-reads; a gone pid is None; the
    command name is read whole from stat, parentheses and spaces included."""
    _fake_proc(tmp_path, 4242, start=100, exe="/tmp/.x/xmrig", cgroup="0::/user.slice/s.scope\n")
    calls: list[str] = []
    attributor = ProcessAttributor(tmp_path, resolver=lambda rt, cid: calls.append(cid) or "x")
    first = attributor.attribute(4242)
    assert first == ProcessAttribution(
        pid=4242,
        exe="/tmp/.x/xmrig",
        cmdline=("/tmp/.x/xmrig", "-o", "stratum+tcp://pool:3333"),
        uid=0,
        user="root",
        unit="s.scope",
        start_time=100,
        comm="odd) name",
    )
    assert first.label() == "pid 4242 /tmp/.x/xmrig"
    assert attributor.attribute(4242) is first
    _fake_proc(
        tmp_path,
        4242,
        start=200,
        exe="/usr/bin/python3",
        cgroup=f"0::/system.slice/docker-{CID}.scope\n",
    )
    reused = attributor.attribute(4242)
    assert reused is not None
    assert (reused.exe, reused.container_id, reused.container_name) == (
        "/usr/bin/python3",
        CID,
        "x",
    )
    assert calls == [CID]
    _fake_proc(tmp_path, 4242, start=200, exe="/tmp/miner", cgroup="0::/\n", comm="miner")
    exec_d = attributor.attribute(4242)
    assert exec_d is not None
    assert (exec_d.exe, exec_d.container_id, exec_d.comm) == ("/tmp/miner", None, "miner")
    assert attributor.attribute(999) is None
    attributor.retain({999})
    assert len(attributor) == 0


def test_resolver_failure_keeps_the_attribution(tmp_path: Path) -> None:
    """A resolver that raises leaves container_name None and is counted."""
    _fake_proc(tmp_path, 7, start=1, exe="/bin/x", cgroup=f"0::/docker/{CID}\n")

    def broken(runtime: str, container_id: str) -> str:
        raise RuntimeError("docker API down")

    attributor = ProcessAttributor(tmp_path, resolver=broken)
    found = attributor.attribute(7)
    assert found is not None
    assert (found.container_id, found.container_name, found.label()) == (
        CID,
        None,
        f"container {CID[:12]}",
    )
    assert attributor.resolver_errors == 1


def test_real_process_attribution() -> None:
    """A process the test starts is attributed from the real /proc: exe, args, uid, cgroup."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    proc = subprocess.Popen([sleep, "300"])
    try:
        assert wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes().endswith(b"300\0"))
        found = ProcessAttributor().attribute(proc.pid)
        unit = parse_cgroup(Path(f"/proc/{proc.pid}/cgroup").read_text())
    finally:
        proc.kill()
        proc.wait()
    assert found is not None
    assert found.exe == os.path.realpath(sleep)
    assert found.cmdline == (sleep, "300")
    assert found.uid == os.getuid()
    assert (found.unit, found.container_runtime, found.container_id) == unit
    assert ProcessAttributor().attribute(proc.pid) is None


def test_label_prefers_container_then_service() -> None:
    """label(): container name, then a .service unit, then pid and executable."""
    base = ProcessAttribution(
        pid=9, exe=None, cmdline=("ollama", "serve"), uid=0, user="root", unit=None
    )
    named = ProcessAttribution(9, None, (), 0, "root", None, CID, "docker", "ollama")
    unit = ProcessAttribution(9, "/usr/bin/vllm", (), 0, "root", "vllm.service")
    assert [base.label(), named.label(), unit.label()] == [
        "pid 9 ollama",
        "container ollama",
        "unit vllm.service",
    ]


def _proc(pid: int, used: int | None, sm: float | None) -> GpuProcessSample:
    return GpuProcessSample(0, "GPU-x", pid, "compute", used, sm, None if sm is None else sm / 2)


def test_bound_processes_keeps_top_n_and_sums_the_rest() -> None:
    """Top N by memory (or SM) are kept; the rest become one pid-0 'other' entry with sums."""
    procs = [_proc(1, 10, 0.5), _proc(2, 30, 0.1), _proc(3, None, 0.2), _proc(4, 20, None)]
    by_memory = bound_processes(procs, 2)
    assert [p.pid for p in by_memory] == [2, 4, 0]
    other = by_memory[-1]
    assert (other.kind, other.count, other.used_memory_bytes) == ("other", 2, 10)
    assert other.sm_util == pytest.approx(0.7)
    by_sm = bound_processes(procs, 1, by="sm")
    assert [p.pid for p in by_sm] == [1, 0]
    assert by_sm[-1].count == 3
    assert by_sm[-1].used_memory_bytes == 50
    assert [p.pid for p in bound_processes(procs, 10)] == [2, 4, 1, 3]
    assert bound_processes([_proc(5, None, None), _proc(6, None, None)], 0)[0].sm_util is None
