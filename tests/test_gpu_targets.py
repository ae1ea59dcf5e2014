"""GPU workload targets end to end: a /proc fixture is attributed, the gpu_workload
detector reports it, the engine decides, the allowlist or the throttle responder (on a
fixture cgroup tree) acts, for the workloads a host's own names must not stand for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dockerapi import FakeEngine, container
from test_detector_gpu import proc, sample
from test_gpu_attribution import _fake_proc

from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.allowlist import WorkloadAllowlist
from aisentinel.detectors.gpu_common import workload_target
from aisentinel.detectors.gpu_workload import GpuWorkloadConfig, GpuWorkloadDetector
from aisentinel.events import Action, Finding, ProcessAttribution, Severity, WorkloadKey
from aisentinel.gpu.attribution import ProcessAttributor
from aisentinel.gpu.dockernames import DockerNames
from aisentinel.responders.throttle import ThrottleConfig, ThrottleResponder

T0 = 1_795_000_000.0
CID = "9e" + "d" * 62
USER_UNIT = "/user.slice/user-1000.slice/user@1000.service/app.slice/ollama.service"


def _attributed(tmp_path: Path, cgroup: str, cmdline: bytes | None = None) -> ProcessAttribution:
    """Process 900 in ``cgroup`` (an xmrig command line unless ``cmdline``), attributed."""
    procfs = tmp_path / "proc"
    _fake_proc(procfs, 900, start=77, exe="/home/bob/.cache/k/steal", cgroup=f"0::{cgroup}\n")
    if cmdline is not None:
        (procfs / "900" / "cmdline").write_bytes(cmdline)
    _fake_proc(procfs, os.getpid(), start=1, exe="/usr/bin/python3", cgroup="0::/aisentinel\n")
    found = ProcessAttributor(procfs).attribute(900)
    assert found is not None
    return found


def _finding(a: ProcessAttribution) -> Finding | None:
    return GpuWorkloadDetector(GpuWorkloadConfig()).observe(sample(T0, procs=(proc(a),)))


def _freeze(tmp_path: Path, finding: Finding, cgroup: str) -> tuple[Path, FakeRunner]:
    """Freeze ``finding``'s workload on a fixture cgroup v2 tree that has ``cgroup``;
    ``(its cgroup.freeze, the command runner)``."""
    root = tmp_path / "cg"
    (root / cgroup.lstrip("/")).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / cgroup.lstrip("/") / "cgroup.freeze").write_text("0\n")
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "decisions.sqlite3", clock)
    engine = DecisionEngine(
        DecisionsConfig(workload_action="freeze"), ledger, clock, host_addresses=tuple
    )
    decision = engine.decide(finding)
    ledger.close()
    assert decision.action is Action.FREEZE
    runner = FakeRunner()
    cfg = ThrottleConfig(
        cgroup_root=root, proc_root=tmp_path / "proc", docker_url=f"unix://{tmp_path}/none.sock"
    )
    responder = ThrottleResponder(cfg, clock=clock, commands=runner)
    responder.add_many([decision])
    responder.commit()
    return root / cgroup.lstrip("/") / "cgroup.freeze", runner


def test_a_user_unit_named_like_an_allowed_service_allows_nothing(tmp_path: Path) -> None:
    """An unknown GPU program in a user's own ``ollama.service`` (``systemd-run --user``)
    is reported: the default allowlist's ``ollama*.service`` is for the host's unit."""
    a = _attributed(tmp_path, USER_UNIT, cmdline=b"/home/bob/.cache/k/steal\0--gpus\0all\0")
    found = _finding(a)
    assert found is not None
    assert found.severity is Severity.MEDIUM
    assert found.target is not None
    assert (found.target.text, found.target.unit) == (f"cgroup:{USER_UNIT}", None)


def test_freezing_a_user_units_miner_freezes_its_cgroup_not_the_hosts_unit(
    tmp_path: Path,
) -> None:
    """A miner in a user's ``ollama.service`` is frozen through that unit's own cgroup;
    ``systemctl`` (the host's manager, and its real ``ollama.service``) is never run."""
    found = _finding(_attributed(tmp_path, USER_UNIT))
    assert found is not None
    assert found.severity is Severity.HIGH
    freeze, runner = _freeze(tmp_path, found, USER_UNIT)
    assert freeze.read_text() == "1"
    assert runner.calls == []


@pytest.mark.parametrize(
    "cgroup",
    [
        f"/machine.slice/libpod-{CID}.scope",
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000.slice/"
        f"cri-containerd-{CID}.scope",
        f"/machine.slice/crio-{CID}.scope",
        f"/kubepods/besteffort/pod0f1e2d3c-aaaa-bbbb/{'c' * 64}",
    ],
    ids=["podman", "containerd", "cri-o", "kubepods-cgroupfs"],
)
def test_a_container_the_docker_engine_does_not_run_is_frozen_through_its_cgroup(
    tmp_path: Path, cgroup: str
) -> None:
    """A miner in a Podman, containerd, CRI-O or Kubernetes container is frozen through
    the container's cgroup, not sent to a Docker engine that does not know it."""
    a = _attributed(tmp_path, cgroup + "/container")
    found = _finding(a)
    assert found is not None
    assert found.target is not None
    assert found.target.identified_by is WorkloadKey.CGROUP
    assert found.target.container == (a.container_id or "")[:12]
    freeze, _runner = _freeze(tmp_path, found, cgroup)
    assert freeze.read_text() == "1"


@pytest.mark.parametrize(
    "image", ["ollama/ollama:0.5.7", "ollama/ollama", "docker.io/ollama/ollama:0.5.7"]
)
def test_the_images_allowlist_matches_a_docker_containers_image(tmp_path: Path, image: str) -> None:
    """``[decisions.workload_allowlist] images`` matches the image the Docker API gives
    for a GPU process's container (its inspect call), read through the real resolver,
    as written (``docker run ollama/ollama``) or with Docker Hub's name."""
    pytest.importorskip("docker", reason="the docker SDK (the docker extra) is not installed")
    from dockerapi import serve

    engine = FakeEngine({CID: container(CID, "prod-llm-1", image)})
    procfs = tmp_path / "proc"
    _fake_proc(
        procfs, 700, start=9, exe="/bin/ollama", cgroup=f"0::/system.slice/docker-{CID}.scope\n"
    )
    names = DockerNames(FakeClock(T0), str(tmp_path / "docker.sock"))
    with serve(tmp_path / "docker.sock", engine):
        a = ProcessAttributor(procfs, resolver=names).attribute(700)
    names.close()
    assert a is not None
    target = workload_target(proc(a))
    assert (target.text, target.container, target.image) == (
        f"container:{CID}",
        "prod-llm-1",
        image,
    )
    assert WorkloadAllowlist(images=["ollama/ollama:*"]).match(target) == "image ollama/ollama:*"


def test_a_users_cgroup_named_after_a_host_container_borrows_nothing(tmp_path: Path) -> None:
    """A user's own ``docker-<id>.scope`` named after the host's ``ollama`` container
    (ids are world-readable) is not looked up: no name or image, so neither the default
    ``ollama*`` containers nor an ``images`` allowlist silences the miner in it."""
    pytest.importorskip("docker", reason="the docker SDK (the docker extra) is not installed")
    from dockerapi import serve

    engine = FakeEngine({CID: container(CID, "ollama", "ollama/ollama:latest")})
    fake = f"/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{CID}.scope"
    procfs = tmp_path / "proc"
    _fake_proc(procfs, 900, start=7, exe="/home/bob/.cache/k/steal", cgroup=f"0::{fake}\n")
    (procfs / "900" / "cmdline").write_bytes(b"/home/bob/.cache/k/steal\0--gpus\0all\0")
    _fake_proc(procfs, 901, start=7, exe="/home/bob/xmrig", cgroup=f"0::{fake}\n")
    names = DockerNames(FakeClock(T0), str(tmp_path / "docker.sock"))
    with serve(tmp_path / "docker.sock", engine):
        attributor = ProcessAttributor(procfs, resolver=names)
        unknown, miner = attributor.attribute(900), attributor.attribute(901)
    names.close()
    assert engine.requests == []
    assert unknown is not None
    assert miner is not None
    assert (unknown.container_id, unknown.container_name, unknown.container_image) == (
        CID,
        None,
        None,
    )
    target = workload_target(proc(unknown))
    assert (target.text, target.container, target.image) == (f"cgroup:{fake}", CID[:12], None)
    found = _finding(unknown)
    assert found is not None
    assert found.severity is Severity.MEDIUM
    mined = _finding(miner)
    assert mined is not None
    assert mined.severity is Severity.HIGH
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "decisions.sqlite3", clock)
    cfg = DecisionsConfig.model_validate(
        {"workload_action": "freeze", "workload_allowlist": {"images": ["ollama/ollama:*"]}}
    )
    decision = DecisionEngine(cfg, ledger, clock, host_addresses=tuple).decide(mined)
    ledger.close()
    assert decision.action is Action.FREEZE


def test_an_executable_replaced_while_it_runs_is_still_allowlisted() -> None:
    """``/proc/PID/exe`` of a binary upgraded in place (``... (deleted)``) still matches
    ``[decisions.workload_allowlist] executables`` by its installed path."""
    a = ProcessAttribution(
        pid=812,
        exe="/usr/local/bin/ollama (deleted)",
        cmdline=("/usr/local/bin/ollama", "serve"),
        uid=998,
        user="ollama",
        unit="session-2.scope",
    )
    target = workload_target(proc(a))
    assert (target.exe, target.name) == ("/usr/local/bin/ollama", "ollama")
    allowlist = WorkloadAllowlist(executables=["/usr/local/bin/ollama"])
    assert allowlist.match(target) == "executable /usr/local/bin/ollama"
