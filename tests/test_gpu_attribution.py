"""GPU process attribution from /proc (fixture trees and real processes) and top-N bounding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from aisentinel.events import GpuProcessSample, ProcessAttribution
from aisentinel.gpu.attribution import ContainerInfo, ProcessAttributor, parse_cgroup
from aisentinel.gpu.topn import bound_processes

CID = "a" * 64


POD = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_5678.slice"
USER = "user.slice/user-1000.slice/user@1000.service"


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/system.slice/vllm.service\n", ("vllm.service", None, None, None)),
        ("0::/system.slice/vllm.service/runner\n", ("vllm.service", None, None, None)),
        (
            f"0::/system.slice/docker-{CID}.scope\n",
            (f"docker-{CID}.scope", "docker", CID, None),
        ),
        (
            f"0::/{POD}/cri-containerd-{CID}.scope\n",
            (
                f"cri-containerd-{CID}.scope",
                "containerd",
                CID,
                f"/{POD}/cri-containerd-{CID}.scope",
            ),
        ),
        (
            f"0::/machine.slice/crio-{CID}.scope/container\n",
            (f"crio-{CID}.scope", "cri-o", CID, f"/machine.slice/crio-{CID}.scope"),
        ),
        (
            f"0::/{USER}/user.slice/libpod-{CID}.scope/container\n",
            (None, "podman", CID, f"/{USER}/user.slice/libpod-{CID}.scope"),
        ),
        (
            f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n"
            f"1:name=systemd:/docker/{CID}\n",
            (None, "docker", CID, None),
        ),
        (
            f"4:pids:/kubepods/besteffort/pod0f1e2d3c-aaaa-bbbb/{CID}\n"
            "1:name=systemd:/system.slice/containerd.service\n",
            (
                "containerd.service",
                "kubernetes",
                CID,
                f"/kubepods/besteffort/pod0f1e2d3c-aaaa-bbbb/{CID}",
            ),
        ),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", ("session-3.scope", None, None, None)),
        ("0::/\n", (None, None, None, None)),
        ("garbage\n", (None, None, None, None)),
    ],
)
def test_parse_cgroup(
    cgroup: str, expected: tuple[str | None, str | None, str | None, str | None]
) -> None:
    """Unit, container runtime/id and (for a container the host's Docker engine does not
    run) the container's cgroup come from cgroup v1 and v2 paths of each runtime."""
    assert parse_cgroup(cgroup) == expected


@pytest.mark.parametrize(
    "path",
    [
        f"/{USER}/app.slice/ollama.service",  # systemd-run --user --unit=ollama
        f"/{USER}/app.slice/ollama.service/sub",
        "/machine.slice/systemd-nspawn@c1.service/payload/system.slice/ollama.service",
        "/lxc.payload.c1/system.slice/ollama.service",  # LXD
        "/machine.slice/machine-c1.scope/payload/system.slice/ollama.service",
    ],
)
def test_a_unit_of_a_user_manager_or_a_guest_is_no_host_unit(path: str) -> None:
    """A ``*.service`` below a user's manager, a machine or an LXC payload is not the
    host's unit of that name: no unit, and its cgroup is the workload's."""
    info = parse_cgroup(f"0::{path}\n")
    assert info.unit is None
    assert info.cgroup == path.removesuffix("/sub")
    assert info.container_id is None


def test_a_docker_container_that_is_not_the_hosts_is_its_cgroup() -> None:
    """A rootless Docker's container (under a user's manager) is not one the host's
    engine runs: it is kept as its cgroup, for the responder to act on directly."""
    path = f"/{USER}/user.slice/docker-{CID}.scope"
    assert parse_cgroup(f"0::{path}\n") == (None, "docker", CID, path)


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
    attributor = ProcessAttributor(
        tmp_path, resolver=lambda rt, cid: calls.append(cid) or ContainerInfo("x", "img:1")
    )
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
    assert (reused.exe, reused.container_id, reused.container_name, reused.container_image) == (
        "/usr/bin/python3",
        CID,
        "x",
        "img:1",
    )
    assert calls == [CID]
    _fake_proc(tmp_path, 4242, start=200, exe="/tmp/miner", cgroup="0::/\n", comm="miner")
    exec_d = attributor.attribute(4242)
    assert exec_d is not None
    assert (exec_d.exe, exec_d.container_id, exec_d.comm) == ("/tmp/miner", None, "miner")
    assert attributor.attribute(999) is None
    attributor.retain({999})
    assert len(attributor) == 0


def test_an_exec_that_keeps_the_command_name_is_attributed_afresh(tmp_path: Path) -> None:
    """Same pid, start time and command name: another executable, or the same one with
    other arguments, is read again (an exec into a program named like the one before)."""
    _fake_proc(tmp_path, 4242, start=100, exe="/usr/bin/python3.11", cgroup="0::/\n", comm="py")
    (tmp_path / "4242" / "cmdline").write_bytes(b"python3\0-m\0vllm\0")
    attributor = ProcessAttributor(tmp_path)
    first = attributor.attribute(4242)
    assert first is not None
    assert first.cmdline == ("python3", "-m", "vllm")
    assert attributor.attribute(4242) is first
    _fake_proc(tmp_path, 4242, start=100, exe="/tmp/.x/python3", cgroup="0::/\n", comm="py")
    (tmp_path / "4242" / "cmdline").write_bytes(b"python3\0-m\0vllm\0")
    other_exe = attributor.attribute(4242)
    assert other_exe is not None
    assert other_exe.exe == "/tmp/.x/python3"
    (tmp_path / "4242" / "cmdline").write_bytes(b"python3\0-c\0stratum+tcp://p:443\0")
    other_args = attributor.attribute(4242)
    assert other_args is not None
    assert other_args.cmdline == ("python3", "-c", "stratum+tcp://p:443")
    assert attributor.attribute(4242) is other_args


def test_an_exiting_process_keeps_its_attribution(tmp_path: Path) -> None:
    """Empty command line and no exe link (memory released at exit), same command name
    and start time: the cached attribution stays; another name or start is read afresh."""
    _fake_proc(tmp_path, 4242, start=100, exe="/usr/bin/python3.11", cgroup="0::/\n", comm="py")
    (tmp_path / "4242" / "cmdline").write_bytes(b"VLLM::EngineCore\0")
    attributor = ProcessAttributor(tmp_path)
    first = attributor.attribute(4242)
    assert first is not None
    assert first.cmdline == ("VLLM::EngineCore",)
    (tmp_path / "4242" / "exe").unlink()
    (tmp_path / "4242" / "cmdline").write_bytes(b"")
    assert attributor.attribute(4242) is first
    _fake_proc(tmp_path, 4242, start=100, exe="/x", cgroup="0::/\n", comm="other")
    (tmp_path / "4242" / "exe").unlink()
    (tmp_path / "4242" / "cmdline").write_bytes(b"")
    renamed = attributor.attribute(4242)
    assert renamed is not None
    assert (renamed.comm, renamed.cmdline, renamed.exe) == ("other", (), None)


def test_a_real_zombie_keeps_its_attribution() -> None:
    """A real child that exited unreaped (a zombie: no memory, stat still there) is
    attributed as it was while it ran, not as an unnamed process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        assert wait_for(lambda: b"sys.stdin" in Path(f"/proc/{proc.pid}/cmdline").read_bytes())
        attributor = ProcessAttributor()
        alive = attributor.attribute(proc.pid)
        assert alive is not None
        assert alive.cmdline[1:] == ("-c", "import sys; sys.stdin.read()")
        assert proc.stdin is not None
        proc.stdin.close()
        assert wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes() == b""
        assert attributor.attribute(proc.pid) is alive
    finally:
        proc.kill()
        proc.wait()


def test_resolver_failure_keeps_the_attribution(tmp_path: Path) -> None:
    """A resolver that raises leaves container_name None and is counted."""
    _fake_proc(tmp_path, 7, start=1, exe="/bin/x", cgroup=f"0::/docker/{CID}\n")

    def broken(runtime: str, container_id: str) -> ContainerInfo:
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
    assert (found.unit, found.container_runtime, found.container_id, found.cgroup) == unit
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
