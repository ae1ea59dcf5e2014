"""The ``throttle`` responder: real cgroups with a real CPU-burning child, systemd units
through a fake command runner, and containers through a Docker-API-compatible test server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockerapi import FakeEngine
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.events import (
    Action,
    Decision,
    Finding,
    Severity,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.responders import REGISTRY, ResponderError, ResponderRunner
from aisentinel.responders.throttle import ThrottleConfig, ThrottleResponder

T0 = 1_764_000_000.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


def decision(target: WorkloadTarget, action: Action = Action.THROTTLE, ts: float = T0) -> Decision:
    return Decision(
        ts=ts,
        action=action,
        target=target,
        detector="gpu_abuse",
        severity=Severity.HIGH,
        reason="test",
        ttl=600.0,
        expires_at=ts + 600.0,
    )


def responder(cfg: ThrottleConfig, runner: FakeRunner | None = None) -> ThrottleResponder:
    return ThrottleResponder(cfg, clock=FakeClock(T0), commands=runner or FakeRunner())


def test_registered_as_throttle_for_throttle_and_freeze() -> None:
    """The plug-in is registered as ``throttle`` and handles throttle and freeze only."""
    entry = REGISTRY.get("throttle")
    assert entry.factory is ThrottleResponder
    assert ThrottleResponder.handles == {Action.THROTTLE, Action.FREEZE}


# ---------------------------------------------------------------------- fixture cgroup tree


def _fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 tree and a procfs with process 4242 in /ai/job and our own pid in /."""
    root = tmp_path / "cg"
    job = root / "ai" / "job"
    job.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu\n")
    for d in (root, root / "ai", job):
        (d / "cpu.max").write_text("max 100000\n")
        (d / "cgroup.freeze").write_text("0\n")
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text("0::/ai/job\n")
    (proc / str(os.getpid())).mkdir()
    (proc / str(os.getpid()) / "cgroup").write_text("0::/ai\n")
    return root, proc


def test_fixture_tree_throttle_restores_previous_value(tmp_path: Path) -> None:
    """A pid target is resolved through /proc/PID/cgroup; cpu.max gets QUOTA PERIOD and
    the previous value back on delete."""
    root, proc = _fake_tree(tmp_path)
    (root / "ai" / "job" / "cpu.max").write_text("50000 100000\n")
    r = responder(ThrottleConfig(cgroup_root=root, proc_root=proc, cpu_percent=5))
    d = decision(WorkloadTarget(WorkloadKey.PID, "4242"))
    r.add_many([d])
    r.commit()
    assert (root / "ai" / "job" / "cpu.max").read_text() == "5000 100000"
    r.delete_many([d])
    r.commit()
    assert (root / "ai" / "job" / "cpu.max").read_text() == "50000 100000"
    assert r.held == {}


@pytest.mark.parametrize(
    "target",
    [
        WorkloadTarget(WorkloadKey.CGROUP, "/ai/../../etc"),
        WorkloadTarget(WorkloadKey.CGROUP, "ai/job"),
        WorkloadTarget(WorkloadKey.CGROUP, "/"),
        WorkloadTarget(WorkloadKey.CGROUP, "/ai"),  # holds aisentinel itself
        WorkloadTarget(WorkloadKey.PID, "1"),
        WorkloadTarget(WorkloadKey.PID, str(os.getpid())),
        WorkloadTarget(WorkloadKey.UNIT, "-h.service"),
        WorkloadTarget(WorkloadKey.UNIT, "init.scope"),
        WorkloadTarget(WorkloadKey.UNIT, "x.service;reboot"),
        WorkloadTarget(WorkloadKey.CONTAINER, "../../version"),
        WorkloadTarget(WorkloadKey.UNIT, "ssh.service"),
        WorkloadTarget(WorkloadKey.CGROUP, "/user.slice"),
        WorkloadTarget(WorkloadKey.CGROUP, "/init.scope"),
        WorkloadTarget(WorkloadKey.CGROUP, "/system.slice/ssh.service"),
    ],
    ids=lambda t: t.text,
)
def test_refused_targets_touch_nothing(tmp_path: Path, target: WorkloadTarget) -> None:
    """Paths out of the tree, the root cgroup, top-level slices, sshd, aisentinel's own
    cgroup, pid 1, option-like units and odd container ids are refused: nothing touched."""
    root, proc = _fake_tree(tmp_path)
    for systemd in ("user.slice", "init.scope", "system.slice/ssh.service"):
        (root / systemd).mkdir(parents=True)
        (root / systemd / "cgroup.freeze").write_text("0\n")
    runner = FakeRunner()
    r = responder(ThrottleConfig(cgroup_root=root, proc_root=proc), runner)
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    r.add_many([decision(target, Action.FREEZE)])
    with pytest.raises(ResponderError, match=r"refused|not a"):
        r.commit()
    assert runner.calls == []
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file()} == before
    assert r.held == {}


def test_restart_undo_of_own_throttle_means_no_limit(tmp_path: Path) -> None:
    """After a restart (memory lost) a reconcile finds its own quota; expiry lifts it to max."""
    root, proc = _fake_tree(tmp_path)
    cfg = ThrottleConfig(cgroup_root=root, proc_root=proc, cpu_percent=5)
    cpu_max = root / "ai" / "job" / "cpu.max"
    cpu_max.write_text("5000 100000\n")  # left by the previous run
    d = decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"))
    r = responder(cfg)
    r.reconcile([d])
    r.delete_many([d])
    r.commit()
    assert cpu_max.read_text() == "max"


def test_delete_unknown_after_restart_thaws(tmp_path: Path) -> None:
    """A freeze lifted by a fresh responder (no memory) writes cgroup.freeze 0."""
    root, proc = _fake_tree(tmp_path)
    freeze = root / "ai" / "job" / "cgroup.freeze"
    freeze.write_text("1\n")
    r = responder(ThrottleConfig(cgroup_root=root, proc_root=proc))
    r.delete_many([decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), Action.FREEZE)])
    r.commit()
    assert freeze.read_text() == "0"


def test_retried_delete_does_not_undo_twice(tmp_path: Path) -> None:
    """A batch retried after a partial failure does not reset what was already restored."""
    root, proc = _fake_tree(tmp_path)
    cpu_max = root / "ai" / "job" / "cpu.max"
    cpu_max.write_text("70000 100000\n")
    r = responder(ThrottleConfig(cgroup_root=root, proc_root=proc))
    d = decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"))
    r.add_many([d])
    r.commit()
    bad = decision(WorkloadTarget(WorkloadKey.CGROUP, "/nope"))
    for _ in range(2):  # the worker retries the whole batch
        r.delete_many([d, bad])
        with pytest.raises(ResponderError):
            r.commit()
    assert cpu_max.read_text() == "70000 100000"


# ---------------------------------------------------------------------- systemd units


def test_unit_throttle_and_freeze_go_through_systemctl() -> None:
    """A unit is throttled with set-property --runtime and restored to its old quota; a
    freeze is systemctl freeze, lifted with thaw; every call is an argument list."""
    unit = "ollama.service"
    show_q = ("systemctl", "show", "--property=CPUQuotaPerSecUSec", "--value", "--", unit)
    show_f = ("systemctl", "show", "--property=FreezerState", "--value", "--", unit)
    setp = ("systemctl", "set-property", "--runtime", "--", unit)
    answers = {
        show_q: FakeRunner.ok(show_q, "2s\n"),
        show_f: FakeRunner.ok(show_f, "running\n"),
        (*setp, "CPUQuota=25%"): FakeRunner.ok(setp),
        (*setp, "CPUQuota=200%"): FakeRunner.ok(setp),
        ("systemctl", "freeze", "--", unit): FakeRunner.ok(["systemctl"]),
        ("systemctl", "thaw", "--", unit): FakeRunner.ok(["systemctl"]),
    }
    runner = FakeRunner(answers)
    r = responder(ThrottleConfig(cpu_percent=25), runner)
    target = WorkloadTarget(WorkloadKey.UNIT, unit)
    throttle = decision(target)
    r.add_many([throttle])
    r.commit()
    r.delete_many([throttle])
    r.commit()
    freeze = decision(target, Action.FREEZE, ts=T0 + 1)
    r.add_many([freeze])
    r.commit()
    r.delete_many([freeze])
    r.commit()
    assert runner.calls == [
        show_q,
        (*setp, "CPUQuota=25%"),
        (*setp, "CPUQuota=200%"),
        show_f,
        ("systemctl", "freeze", "--", unit),
        ("systemctl", "thaw", "--", unit),
    ]


def test_unit_failure_is_a_responder_error() -> None:
    """systemctl exiting non-zero (or missing) raises ResponderError; nothing is held."""
    r = responder(ThrottleConfig(), FakeRunner())
    r.add_many([decision(WorkloadTarget(WorkloadKey.UNIT, "ollama.service"))])
    with pytest.raises(ResponderError, match="systemctl"):
        r.commit()
    assert r.held == {}


# ---------------------------------------------------------------------- Docker Engine API


def test_container_throttle_and_freeze_through_docker_api(
    docker_api: tuple[str, FakeEngine],
) -> None:
    """The Docker path, run against a Docker-API-compatible test server (no Docker engine
    can run in the test environment): update sets CpuQuota/CpuPeriod and expiry puts the
    old (unlimited) values back; freeze pauses and expiry unpauses."""
    url, engine = docker_api
    r = responder(ThrottleConfig(docker_url=url, cpu_percent=20, cpu_period_us=50_000))
    target = WorkloadTarget(WorkloadKey.CONTAINER, "abc123", name="llm")
    held = engine.containers["abc123"]
    t = decision(target)
    r.add_many([t])
    r.commit()
    assert held["HostConfig"] == {"CpuQuota": 10_000, "CpuPeriod": 50_000}
    r.delete_many([t])
    r.commit()
    assert held["HostConfig"] == {"CpuQuota": -1, "CpuPeriod": 100_000}
    f = decision(target, Action.FREEZE, ts=T0 + 1)
    r.add_many([f])
    r.commit()
    assert held["State"]["Paused"] is True
    r.delete_many([f])
    r.commit()
    assert held["State"]["Paused"] is False
    assert ("POST", "/containers/abc123/pause") in engine.requests
    r.close()


def test_missing_container_is_a_responder_error(docker_api: tuple[str, FakeEngine]) -> None:
    """A container the engine does not know fails the batch with a clear reason."""
    url, _engine = docker_api
    r = responder(ThrottleConfig(docker_url=url))
    r.add_many([decision(WorkloadTarget(WorkloadKey.CONTAINER, "gone"))])
    with pytest.raises(ResponderError, match="container gone not found"):
        r.commit()


# ---------------------------------------------------------------------- restart safety


def _stateful(tmp_path: Path, root: Path, proc: Path, **kw: Any) -> ThrottleResponder:
    """A responder as the daemon builds it: keeping its record in ``tmp_path/state``."""
    cfg = ThrottleConfig(cgroup_root=root, proc_root=proc, **kw)
    return ThrottleResponder(
        cfg, clock=FakeClock(T0), commands=FakeRunner(), state_dir=tmp_path / "state"
    )


def _enforce(r: ThrottleResponder, d: Decision) -> None:
    r.add_many([d])
    r.commit()


def test_a_freeze_whose_thaw_never_ran_is_thawed_by_the_next_run(tmp_path: Path) -> None:
    """A freeze ended (expiry, unban) while its thaw never ran (crash, stop with the thaw
    failing) is thawed by the next run's first reconcile, from the record in the state
    dir: the ledger has closed it, so no delete would ever come."""
    root, proc = _fake_tree(tmp_path)
    freeze = root / "ai" / "job" / "cgroup.freeze"
    _enforce(
        _stateful(tmp_path, root, proc),
        decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), Action.FREEZE),
    )
    assert freeze.read_text() == "1"  # the run ends here: no thaw
    after = _stateful(tmp_path, root, proc)
    after.reconcile([])
    assert freeze.read_text() == "0"
    assert after.held == {}
    assert json.loads((tmp_path / "state" / "throttle.json").read_text())["held"] == []


def test_the_next_run_restores_the_quota_from_before_the_throttle(tmp_path: Path) -> None:
    """What a throttle found is kept with it: the next run puts the operator's own
    quota back, both when the decision ended while it was down and when it is still
    active and ends later (not "no limit", which is all a fresh read can tell)."""
    root, proc = _fake_tree(tmp_path)
    cpu_max = root / "ai" / "job" / "cpu.max"
    for still_active in (False, True):
        cpu_max.write_text("50000 100000\n")
        d = decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), ts=T0 + still_active)
        _enforce(_stateful(tmp_path, root, proc, cpu_percent=5), d)
        assert cpu_max.read_text() == "5000 100000"
        after = _stateful(tmp_path, root, proc, cpu_percent=5)
        after.reconcile([d] if still_active else [])
        if still_active:
            assert cpu_max.read_text() == "5000 100000"  # enforced again, not lifted
            after.delete_many([d])
            after.commit()
        assert cpu_max.read_text() == "50000 100000"
        after.delete_many([d])  # the engine's own lift of it, after the reconcile's
        after.commit()
        assert cpu_max.read_text() == "50000 100000"  # not undone twice


def test_withdrawal_at_start_thaws_what_the_previous_run_froze(tmp_path: Path) -> None:
    """A start whose config no longer has the throttle responder withdraws it (built
    afresh from the previous run's config): what that run froze or throttled is undone."""
    root, proc = _fake_tree(tmp_path)
    job = root / "ai" / "job"
    job2 = root / "ai" / "job2"
    job2.mkdir()
    (job2 / "cpu.max").write_text("max 100000\n")
    before = _stateful(tmp_path, root, proc)
    _enforce(before, decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), Action.FREEZE))
    _enforce(before, decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job2")))
    assert (job / "cgroup.freeze").read_text() == "1"
    assert (job2 / "cpu.max").read_text() == "10000 100000"
    _stateful(tmp_path, root, proc).withdraw()
    assert (job / "cgroup.freeze").read_text() == "0"
    assert (job2 / "cpu.max").read_text() == "max 100000"


def test_a_record_of_a_workload_gone_since_is_dropped(tmp_path: Path) -> None:
    """A workload frozen by the previous run and gone since (its cgroup removed) leaves
    nothing to undo: the reconcile drops its record without an error or a retry."""
    root, proc = _fake_tree(tmp_path)
    job = root / "ai" / "job"
    _enforce(
        _stateful(tmp_path, root, proc),
        decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), Action.FREEZE),
    )
    for f in job.iterdir():
        f.unlink()
    job.rmdir()
    after = _stateful(tmp_path, root, proc)
    after.reconcile([])
    assert after.held == {}


def test_unit_and_container_records_undo_through_systemctl_and_docker(
    tmp_path: Path, docker_api: tuple[str, FakeEngine]
) -> None:
    """A unit's freeze and a container's throttle, recorded by one run, are undone by
    the next with the unit's thaw and the container's old limits."""
    url, engine = docker_api
    unit = "ollama.service"
    show_f = ("systemctl", "show", "--property=FreezerState", "--value", "--", unit)
    answers = {
        show_f: FakeRunner.ok(show_f, "running\n"),
        ("systemctl", "freeze", "--", unit): FakeRunner.ok(["systemctl"]),
        ("systemctl", "thaw", "--", unit): FakeRunner.ok(["systemctl"]),
    }
    engine.containers["abc123"]["HostConfig"] = {"CpuQuota": 200_000, "CpuPeriod": 100_000}
    cfg = ThrottleConfig(docker_url=url)
    state = tmp_path / "state"
    first = ThrottleResponder(
        cfg, clock=FakeClock(T0), commands=FakeRunner(answers), state_dir=state
    )
    _enforce(first, decision(WorkloadTarget(WorkloadKey.UNIT, unit), Action.FREEZE))
    _enforce(first, decision(WorkloadTarget(WorkloadKey.CONTAINER, "abc123")))
    first.close()
    assert engine.containers["abc123"]["HostConfig"]["CpuQuota"] == 10_000
    runner = FakeRunner(answers)
    after = ThrottleResponder(cfg, clock=FakeClock(T0), commands=runner, state_dir=state)
    after.reconcile([])
    after.close()
    assert runner.calls == [("systemctl", "thaw", "--", unit)]
    assert engine.containers["abc123"]["HostConfig"] == {"CpuQuota": 200_000, "CpuPeriod": 100_000}


# ---------------------------------------------------------------------- shared cgroups


def _two_in_job(proc: Path) -> tuple[WorkloadTarget, WorkloadTarget]:
    """pid:4242 and pid:4243 (added to the fixture procfs), both in /ai/job."""
    (proc / "4243").mkdir()
    (proc / "4243" / "cgroup").write_text("0::/ai/job\n")
    return WorkloadTarget(WorkloadKey.PID, "4242"), WorkloadTarget(WorkloadKey.PID, "4243")


def _after_each_lift(r: ThrottleResponder, decisions: list[Decision], path: Path) -> list[str]:
    """The text of ``path`` after each of ``decisions`` is lifted, in turn."""
    out = []
    for d in decisions:
        r.delete_many([d])
        r.commit()
        out.append(path.read_text())
    return out


def test_two_freezes_of_one_cgroup_thaw_it_when_the_last_ends(tmp_path: Path) -> None:
    """Two freezes that resolve to one cgroup: it stays frozen while either is in force
    and is thawed (to the value from before the first) when the last one ends."""
    root, proc = _fake_tree(tmp_path)
    freeze = root / "ai" / "job" / "cgroup.freeze"
    one, two = _two_in_job(proc)
    r = _stateful(tmp_path, root, proc)
    d1, d2 = decision(one, Action.FREEZE), decision(two, Action.FREEZE, ts=T0 + 10)
    _enforce(r, d1)
    _enforce(r, d2)
    assert _after_each_lift(r, [d1, d2], freeze) == ["1", "0"]
    assert r.held == {}
    r.withdraw()  # `aisentinel unban` / a withdrawal finds nothing left to write back
    assert freeze.read_text() == "0"


def test_two_throttles_of_one_cgroup_restore_the_quota_from_before_the_first(
    tmp_path: Path,
) -> None:
    """Two throttles of one cgroup (a pid and the cgroup itself): the first to end leaves
    the quota in place, the last puts the operator's quota back, not aisentinel's."""
    root, proc = _fake_tree(tmp_path)
    cpu_max = root / "ai" / "job" / "cpu.max"
    cpu_max.write_text("50000 100000\n")
    r = _stateful(tmp_path, root, proc, cpu_percent=5)
    d1 = decision(WorkloadTarget(WorkloadKey.PID, "4242"))
    d2 = decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), ts=T0 + 10)
    _enforce(r, d1)
    _enforce(r, d2)
    assert _after_each_lift(r, [d1, d2], cpu_max) == ["5000 100000", "50000 100000"]


def test_shared_freezes_survive_a_restart(tmp_path: Path) -> None:
    """The sharing is kept in the state file: after a restart, the reconcile that ends one
    of two freezes of one cgroup keeps it frozen, and the end of the other thaws it."""
    root, proc = _fake_tree(tmp_path)
    freeze = root / "ai" / "job" / "cgroup.freeze"
    one, two = _two_in_job(proc)
    d1, d2 = decision(one, Action.FREEZE), decision(two, Action.FREEZE, ts=T0 + 10)
    before = _stateful(tmp_path, root, proc)
    _enforce(before, d1)
    _enforce(before, d2)
    after = _stateful(tmp_path, root, proc)
    after.reconcile([d2])  # d1 ended while the daemon was down
    assert freeze.read_text() == "1"
    again = _stateful(tmp_path, root, proc)  # and once more, from the record alone
    again.delete_many([d2])
    again.commit()
    assert freeze.read_text() == "0"
    assert again.held == {}


def test_a_lift_without_a_record_keeps_a_freeze_another_decision_holds(tmp_path: Path) -> None:
    """A lift this run has no record of ("no limit", "thawed") leaves alone a cgroup that
    another enforcement in place still freezes."""
    root, proc = _fake_tree(tmp_path)
    freeze = root / "ai" / "job" / "cgroup.freeze"
    one, two = _two_in_job(proc)
    r = _stateful(tmp_path, root, proc)
    _enforce(r, decision(one, Action.FREEZE))
    r.delete_many([decision(two, Action.FREEZE, ts=T0 - 600)])  # a decision of no record
    r.commit()
    assert freeze.read_text() == "1"


def test_a_record_of_settings_no_throttle_changes_is_refused(tmp_path: Path) -> None:
    """The settings a record says it shares are checked too: a path outside the cgroup
    tree or of another file is refused with the record, which then holds nothing."""
    root, proc = _fake_tree(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    undo = [{"op": "write", "args": [str(root / "ai" / "job" / "cgroup.freeze"), "0"]}]
    entry = {"target": "cgroup:/ai/job", "action": "freeze", "ts": T0, "name": "x"}
    for touches in (["/etc/passwd"], [f"{root}/ai/job/cgroup.procs"], ["unit -.slice;x cpu"]):
        doc = {"version": 1, "held": [{**entry, "undo": undo, "touches": touches}]}
        (state / "throttle.json").write_text(json.dumps(doc))
        assert _stateful(tmp_path, root, proc).held == {}
    doc = {"version": 1, "held": [{**entry, "undo": undo, "touches": []}]}
    (state / "throttle.json").write_text(json.dumps(doc))
    assert list(_stateful(tmp_path, root, proc).held) == ["cgroup:/ai/job"]


@pytest.mark.parametrize(
    "step",
    [
        {"op": "write", "args": ["/etc/passwd", "0"]},
        {"op": "write", "args": ["{root}/ai/../../x/cgroup.freeze", "0"]},
        {"op": "write", "args": ["{root}/ai/job/cgroup.procs", "1"]},
        {"op": "write", "args": ["{root}/cgroup.freeze", "1"]},
        {"op": "write", "args": ["{root}/ai/cgroup.freeze", "1"]},  # holds aisentinel
        {"op": "write", "args": ["{root}/ai/cpu.max", "1000 100000"]},
        {"op": "write", "args": ["{root}/ai/job\u0000/cpu.max", "0"]},
        {"op": "write", "args": ["{root}/ai/job/cpu.max", "1\n2"]},
        {"op": "systemctl", "args": ["stop", "--", "ollama.service"]},
        {"op": "systemctl", "args": ["thaw", "--", "init.scope"]},
        {"op": "systemctl", "args": ["set-property", "--runtime", "--", "x.service", "X=1"]},
        {"op": "docker", "args": ["../x", "unpause"]},
        {"op": "docker", "args": ["abc", "kill"]},
        {"op": "shell", "args": ["rm -rf /"]},
    ],
    ids=lambda s: " ".join([s["op"], *s["args"]])[:40],
)
def test_a_record_of_a_step_no_throttle_takes_is_refused(
    tmp_path: Path, step: dict[str, Any]
) -> None:
    """The state file is read as strictly as a decision: a step that writes outside the
    cgroup tree, to another file or to a cgroup holding aisentinel, runs another command,
    names a refused unit or an odd container is logged and dropped; nothing is written or
    run."""
    root, proc = _fake_tree(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    step = {"op": step["op"], "args": [a.replace("{root}", str(root)) for a in step["args"]]}
    entry = {"target": "cgroup:/ai/job", "action": "freeze", "ts": T0, "name": "x", "undo": [step]}
    (state / "throttle.json").write_text(json.dumps({"version": 1, "held": [entry]}))
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    runner = FakeRunner()
    with capture_logs() as logs:
        r = ThrottleResponder(
            ThrottleConfig(cgroup_root=root, proc_root=proc),
            clock=FakeClock(T0),
            commands=runner,
            state_dir=state,
        )
    r.reconcile([])
    assert r.held == {}
    assert runner.calls == []
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file()} == before
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "record of a throttled or frozen workload refused; it stays as it is"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        '{"version": 1, "held": [{"target": "cgroup:/ai/job", "action": "freeze", '
        '"ts": 1' + "0" * 400 + ', "name": "x", "undo": []}]}',
    ],
    ids=["nested", "huge-ts"],
)
def test_a_damaged_record_is_one_error_not_a_crash(tmp_path: Path, text: str) -> None:
    """A state file too deeply nested to read, or a record with a time no float holds,
    is one error line and nothing restored, not an exception out of the constructor."""
    root, proc = _fake_tree(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "throttle.json").write_text(text)
    with capture_logs() as logs:
        r = _stateful(tmp_path, root, proc)
    assert r.held == {}
    assert len([e for e in logs if e["log_level"] == "error"]) == 1


def test_an_unwritable_record_is_one_error_and_an_unhealthy_responder(tmp_path: Path) -> None:
    """When the record cannot be written the freeze still happens; one error line says a
    restart will not lift it and health turns false until a write succeeds again."""
    root, proc = _fake_tree(tmp_path)
    (tmp_path / "state").write_text("a file where the state dir belongs")
    r = _stateful(tmp_path, root, proc)
    with capture_logs() as logs:
        for ts in (T0, T0 + 1):
            _enforce(r, decision(WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), Action.FREEZE, ts))
    assert (root / "ai" / "job" / "cgroup.freeze").read_text() == "1"
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == [
        "cannot record the throttled and frozen workloads; a restart will not lift what "
        "this run enforces"
    ]
    assert not r.health().ok
    (tmp_path / "state").unlink()
    r.reconcile([])
    assert r.health().ok
    assert (root / "ai" / "job" / "cgroup.freeze").read_text() == "0"


# ---------------------------------------------------------------------- real cgroups


def _writable(path: Path) -> bool:
    probe = path / f"aisentinel-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


@dataclass
class Burner:
    """A CPU-burning child moved into a test cgroup in every hierarchy that can take it."""

    proc: subprocess.Popen[bytes]
    rel: str
    dirs: list[Path]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rate(self, seconds: float = 1.0) -> float:
        """CPU seconds used per wall second over a short interval."""
        start_cpu, start = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - start_cpu) / (time.monotonic() - start)


def _hierarchies() -> list[tuple[Path, str]]:
    """(directory, kind) of each cgroup hierarchy under /sys/fs/cgroup that a test may use."""
    found: list[tuple[Path, str]] = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        found.append((CGROUP_ROOT, "v2"))
    elif (CGROUP_ROOT / "unified" / "cgroup.controllers").exists():
        found.append((CGROUP_ROOT / "unified", "v2"))
    for name in ("cpu", "cpu,cpuacct", "freezer"):
        d = CGROUP_ROOT / name
        if (d / "cgroup.procs").exists() and d not in [f for f, _ in found]:
            found.append((d, "v1"))
    return [(d, k) for d, k in found if _writable(d)]


@pytest.fixture
def burner() -> Iterator[Burner]:
    """A real CPU-burning child in a fresh test cgroup (skipped where cgroups are not writable)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    hierarchies = _hierarchies()
    if not hierarchies:
        pytest.skip(f"no writable cgroup hierarchy under {CGROUP_ROOT}")
    rel = f"/aisentinel-test-{os.getpid()}-{time.monotonic_ns()}"
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    dirs: list[Path] = []
    try:
        for base, _kind in hierarchies:
            d = base / rel.lstrip("/")
            d.mkdir()
            dirs.append(d)
            (d / "cgroup.procs").write_text(str(child.pid))
        yield Burner(child, rel, dirs)
    finally:
        for d in dirs:  # a v1-frozen task cannot die before it is thawed
            with contextlib.suppress(OSError):
                if (d / "freezer.state").exists():
                    (d / "freezer.state").write_text("THAWED")
                if (d / "cgroup.freeze").exists():
                    (d / "cgroup.freeze").write_text("0")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        for d in dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def _has_cpu_controller(b: Burner) -> bool:
    return any((d / "cpu.max").exists() or (d / "cpu.cfs_quota_us").exists() for d in b.dirs)


def _has_freezer(b: Burner) -> bool:
    return any((d / "cgroup.freeze").exists() or (d / "freezer.state").exists() for d in b.dirs)


@pytest.mark.root
def test_real_cgroup_throttle_lowers_cpu_rate_and_expiry_restores_it(burner: Burner) -> None:
    """A real CPU-burning child: after a throttle decision from the engine its measured CPU
    rate drops; once the decision expires (engine -> worker -> responder) it comes back."""
    if not _has_cpu_controller(burner):
        pytest.skip("the test cgroup has no cpu controller (cpu.max / cpu.cfs_quota_us)")
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(workload_action="throttle"),
        Ledger(Path(":memory:"), clock),
        clock,
        host_addresses=list,
    )
    r = responder(ThrottleConfig(cpu_percent=5))
    runner = ResponderRunner([r], clock)
    before = burner.rate()
    target = WorkloadTarget(WorkloadKey.PID, str(burner.proc.pid), name="burner")
    finding = Finding(
        T0, "gpu_abuse", Severity.HIGH, None, target.text, 1, 60.0, "burns", target=target
    )
    d = engine.decide(finding)
    assert d.action is Action.THROTTLE
    runner.submit(d)
    runner.tick()
    assert r.held, runner.stats()
    throttled = burner.rate()
    clock.advance((d.ttl or 0.0) + 1.0)
    runner.submit_expired(engine.expire())
    runner.tick()
    assert r.held == {}
    after = burner.rate()
    assert throttled < 0.15, (before, throttled)
    assert throttled < before / 2, (before, throttled)
    assert after > 3 * throttled, (before, throttled, after)


@pytest.mark.root
def test_real_cgroup_freeze_stops_the_child_and_thaw_resumes_it(burner: Burner) -> None:
    """Freezing the child's cgroup stops its CPU use entirely (cgroup.events says frozen 1
    on v2, freezer.state FROZEN on v1); deleting the decision thaws it and it runs again."""
    if not _has_freezer(burner):
        pytest.skip("the test cgroup has no freezer (cgroup.freeze / freezer.state)")
    r = responder(ThrottleConfig())
    d = decision(WorkloadTarget(WorkloadKey.CGROUP, burner.rel), Action.FREEZE)
    r.add_many([d])
    r.commit()
    v2 = [p for p in burner.dirs if (p / "cgroup.freeze").exists()]
    if v2:
        assert _wait_text(v2[0] / "cgroup.events", "frozen 1")
    else:
        v1 = next(p for p in burner.dirs if (p / "freezer.state").exists())
        assert _wait_text(v1 / "freezer.state", "FROZEN")
    start = burner.cpu_seconds()
    time.sleep(0.5)
    assert burner.cpu_seconds() == start
    r.delete_many([d])
    r.commit()
    assert burner.rate(0.5) > 0.05


def _wait_text(path: Path, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return True
        time.sleep(0.02)
    return False
