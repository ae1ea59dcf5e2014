"""The responder worker: batches, its own thread, a bounded queue, flush, metrics,
and the command runner every responder factory gets."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import ssh_fail, wait_for
from prometheus_client.core import Metric
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.config import load_config
from aisentinel.daemon import Daemon
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.detectors import build_detectors
from aisentinel.events import (
    ENFORCING,
    Action,
    AddressTarget,
    Decision,
    LineBatch,
    Severity,
    Target,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.pipeline import Pipeline
from aisentinel.responders import (
    DryRunConfig,
    DryRunResponder,
    Responder,
    ResponderConfigBase,
    ResponderHealth,
    ResponderRunner,
)

T0 = 1_764_000_000.0


def decision(target: Target, action: Action = Action.BAN, ttl: float = 3600.0) -> Decision:
    return Decision(T0, action, target, "x", Severity.HIGH, "r", ttl, T0 + ttl)


def ban(text: str) -> Decision:
    return decision(AddressTarget.parse(text))


class Recording(Responder):
    """Records every call; its commit can be made to block until released."""

    name: ClassVar[str] = "recording"

    def __init__(
        self, clock: FakeClock, *, handles: frozenset[Action] = ENFORCING, block: bool = False
    ) -> None:
        super().__init__(ResponderConfigBase(), clock=clock)
        self.handles = handles  # type: ignore[misc]
        self.calls: list[tuple[str, list[str]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.block = block
        self.closed = False

    def add_many(self, decisions: Sequence[Decision]) -> None:
        self.calls.append(("add_many", [d.target.text for d in decisions if d.target]))

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        self.calls.append(("delete_many", [d.target.text for d in decisions if d.target]))

    def commit(self) -> None:
        self.calls.append(("commit", []))
        self.entered.set()
        if self.block:
            assert self.release.wait(30), "test never released the responder"

    def reconcile(self, active: Sequence[Decision]) -> None:
        self.calls.append(("reconcile", [d.target.text for d in active if d.target]))

    def health(self) -> ResponderHealth:
        return ResponderHealth(ok=True)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def _families(metrics: Iterator[Metric]) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in metrics:
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sample.labels.values())] = sample.value
    return out


# --------------------------------------------------------------------------- batches


def test_n_decisions_are_one_add_many_one_delete_many_one_commit(clock: FakeClock) -> None:
    """Everything queued since the last cycle goes to a responder as one transaction."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock)
    for i in range(5):
        runner.submit(ban(f"198.51.100.{i}"))
    runner.submit_expired([ban("203.0.113.1"), ban("203.0.113.2")])
    assert r.calls == []
    assert runner.tick() == 7
    assert r.calls == [
        ("add_many", [f"198.51.100.{i}" for i in range(5)]),
        ("delete_many", ["203.0.113.1", "203.0.113.2"]),
        ("commit", []),
    ]
    assert dict(runner.stats()[0].batches) == {"ok": 1, "failed": 0}


def test_newest_operation_per_target_wins_within_a_batch(clock: FakeClock) -> None:
    """An add then a delete of one target in one batch is just the delete."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock)
    runner.submit(ban("198.51.100.1"))
    runner.submit(ban("198.51.100.2"))
    runner.submit_expired([ban("198.51.100.1")])
    runner.tick()
    assert r.calls[:2] == [("add_many", ["198.51.100.2"]), ("delete_many", ["198.51.100.1"])]


def test_each_responder_gets_only_the_actions_it_handles(clock: FakeClock) -> None:
    """A firewall gets bans of addresses; a cgroup responder throttles and freezes workloads."""
    firewall = Recording(clock, handles=frozenset({Action.BAN}))
    firewall.name = "firewall"  # type: ignore[misc]
    cgroups = Recording(clock, handles=frozenset({Action.THROTTLE, Action.FREEZE}))
    cgroups.name = "cgroups"  # type: ignore[misc]
    runner = ResponderRunner([firewall, cgroups], clock)
    unit = WorkloadTarget(WorkloadKey.UNIT, "miner.service")
    runner.submit(ban("2001:db8::/64"))
    runner.submit(decision(unit, Action.FREEZE))
    runner.submit(decision(unit, Action.ALERT))
    runner.tick()
    assert firewall.calls == [("add_many", ["2001:db8::/64"]), ("commit", [])]
    assert cgroups.calls == [("add_many", ["unit:miner.service"]), ("commit", [])]


# --------------------------------------------------------------------------- the queue


def test_full_queue_drops_the_oldest_adds_counts_and_logs_once_per_streak(
    clock: FakeClock,
) -> None:
    """Past ``queue_size`` the oldest queued add goes (a reconcile stays), counted, one log."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock, queue_size=3)
    runner.reconcile([ban("192.0.2.1")])
    with capture_logs() as logs:
        for i in range(1, 6):
            runner.submit(ban(f"198.51.100.{i}"))
    full = [e for e in logs if e["event"].startswith("responder queue full")]
    assert [e["log_level"] for e in full] == ["error"]
    assert runner.dropped == 3
    runner.tick()
    assert r.calls[0] == ("reconcile", ["192.0.2.1", "198.51.100.4", "198.51.100.5"])
    with capture_logs() as logs:
        runner.submit(ban("203.0.113.1"))
        for i in range(4):
            runner.submit(ban(f"203.0.113.{10 + i}"))
    assert [e.get("dropped") for e in logs if e["event"].endswith("room again")] == [3]
    assert len([e for e in logs if e["event"].startswith("responder queue full")]) == 1
    metrics = _families(runner.collect())
    assert metrics["aisentinel_responder_queue_dropped_total"] == {
        ("delete_expired",): 0.0,
        ("delete",): 0.0,
        ("add",): 5.0,
    }
    assert runner.resync_wanted()
    assert not runner.resync_wanted()


def test_full_queue_drops_lifts_before_a_queued_ban(clock: FakeClock) -> None:
    """A wave of lifts past ``queue_size`` drops lifts (expired ones first), never the ban."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock, queue_size=4)
    runner.submit(ban("203.0.113.99"))
    manual = [ban(f"192.0.2.{i}") for i in range(1, 4)]
    expired = [decision(AddressTarget.parse(f"198.51.100.{i}"), ttl=-1.0) for i in range(1, 4)]
    runner.submit_expired(manual)
    runner.submit_expired(expired)
    assert runner.dropped_by_kind() == {"delete_expired": 3, "delete": 0, "add": 0}
    runner.submit_expired([ban("192.0.2.9")])
    assert runner.dropped_by_kind() == {"delete_expired": 3, "delete": 1, "add": 0}
    assert runner.resync_wanted()
    runner.tick()
    assert r.calls == [
        ("add_many", ["203.0.113.99"]),
        ("delete_many", ["192.0.2.2", "192.0.2.3", "192.0.2.9"]),
        ("commit", []),
    ]


def test_full_queue_keeping_held_drops_adds_never_manual_lifts(clock: FakeClock) -> None:
    """With keep_held (no reconcile lifts) a full queue drops adds, never a manual lift."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock, queue_size=3)
    runner.keep_held = True
    runner.submit_expired([ban("192.0.2.1"), ban("192.0.2.2")])
    runner.submit(ban("203.0.113.1"))
    runner.submit(ban("203.0.113.2"))
    assert runner.dropped_by_kind() == {"delete_expired": 0, "delete": 0, "add": 1}
    runner.tick()
    assert r.calls == [
        ("add_many", ["203.0.113.2"]),
        ("delete_many", ["192.0.2.1", "192.0.2.2"]),
        ("commit", []),
    ]
    runner.submit_expired([ban(f"192.0.2.{i}") for i in range(10, 15)])
    assert runner.dropped_by_kind()["delete"] == 0
    assert runner.queued()[0] == 5


def test_queued_reconcile_takes_out_what_it_covers(clock: FakeClock) -> None:
    """A reconcile empties the queue of what it covers, and keeps uncancelled keep_held lifts."""
    r = Recording(clock)
    runner = ResponderRunner([r], clock, queue_size=16)
    runner.submit(ban("203.0.113.1"))
    runner.submit_expired([ban("192.0.2.1")])
    runner.reconcile([ban("203.0.113.1")])
    assert runner.queued()[0] == 1
    runner.keep_held = True
    runner.submit_expired([ban("192.0.2.2"), ban("192.0.2.3")])
    runner.submit(ban("192.0.2.3"))
    runner.reconcile([ban("203.0.113.1"), ban("192.0.2.3")])
    assert runner.queued()[0] == 2
    runner.tick()
    assert r.calls == [
        ("add_many", ["192.0.2.3", "203.0.113.1"]),  # reconcile_adding
        ("commit", []),
        ("delete_many", ["192.0.2.2"]),
        ("commit", []),
    ]


def test_queue_depth_and_oldest_age_are_metrics(clock: FakeClock) -> None:
    """collect() reports the queued operations and the age of the oldest, 0 once drained."""
    runner = ResponderRunner([Recording(clock)], clock)
    runner.submit(ban("198.51.100.1"))
    clock.advance(7)
    runner.submit(ban("198.51.100.2"))
    metrics = _families(runner.collect())
    assert metrics["aisentinel_responder_queue_depth"] == {(): 2.0}
    assert metrics["aisentinel_responder_queue_oldest_seconds"] == {(): 7.0}
    runner.tick()
    metrics = _families(runner.collect())
    assert metrics["aisentinel_responder_queue_depth"] == {(): 0.0}
    assert metrics["aisentinel_responder_queue_oldest_seconds"] == {(): 0.0}
    assert metrics["aisentinel_responder_operations_total"][("recording", "add", "ok")] == 2.0
    assert metrics["aisentinel_responder_batches_total"][("recording", "ok")] == 1.0


# --------------------------------------------------------------------------- the thread


def test_started_worker_enforces_and_flush_waits_for_it(clock: FakeClock) -> None:
    """With the thread running, flush returns once the queued batch was committed."""
    dry = DryRunResponder(DryRunConfig(), clock=clock)
    runner = ResponderRunner([dry], clock)
    runner.start()
    try:
        runner.submit(ban("198.51.100.1"))
        runner.submit(ban("198.51.100.2"))
        assert runner.flush(timeout=10)
        assert [b.added for b in dry.batches] in (
            [("198.51.100.1", "198.51.100.2")],
            [("198.51.100.1",), ("198.51.100.2",)],
        )
        assert sorted(dry.banned) == ["198.51.100.1", "198.51.100.2"]
    finally:
        runner.close(timeout=5)
    assert not runner.running


def test_blocked_responder_never_blocks_submit_and_flush_times_out(clock: FakeClock) -> None:
    """While a commit hangs, submitting returns at once, flush gives up, close leaves it."""
    r = Recording(clock, block=True)
    runner = ResponderRunner([r], clock)
    runner.start()
    runner.submit(ban("198.51.100.1"))
    assert r.entered.wait(10)
    for i in range(100):
        runner.submit(ban(f"203.0.113.{i}"))
    assert runner.queued()[0] == 100
    assert not runner.flush(timeout=0.05)
    with capture_logs() as logs:
        runner.close(timeout=0.05)
    assert any(e["event"].startswith("responder worker still busy") for e in logs)
    assert not r.closed
    r.release.set()
    assert wait_for(lambda: not runner.running)


def test_slow_responder_does_not_stall_the_pipeline(tmp_path: Path, now_epoch: float) -> None:
    """Lines keep being processed and bans decided while a responder's commit hangs."""
    clock = FakeClock(now_epoch + 60)
    engine = DecisionEngine(
        DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock, host_addresses=list
    )
    slow = Recording(clock, block=True)
    runner = ResponderRunner([slow], clock)
    runner.start()
    pipeline = Pipeline(detectors=build_detectors({}), engine=engine, runner=runner, clock=clock)
    try:
        first = [ssh_fail(now_epoch + i, "198.51.100.10") for i in range(6)]
        pipeline.process(LineBatch("auth", "sshd", first, 0.0))
        assert slow.entered.wait(10)
        for n in range(20, 30):  # the responder is stuck in its commit meanwhile
            lines = [ssh_fail(now_epoch + i, f"198.51.100.{n}") for i in range(6)]
            pipeline.process(LineBatch("auth", "sshd", lines, 0.0))
        assert not slow.release.is_set()
        assert pipeline.sources["auth"].lines == 66
        assert engine.is_banned("198.51.100.29")
        assert runner.queued()[0] == 10
    finally:
        slow.release.set()
    assert runner.flush(timeout=10)
    added = [t for op, targets in slow.calls if op == "add_many" for t in targets]
    assert sorted(added) == ["198.51.100.10", *(f"198.51.100.{n}" for n in range(20, 30))]
    runner.close(timeout=5)


DAEMON_CONFIG = """
[daemon]
state_dir = "{state}"
log_format = "json"
heartbeat_interval = "50ms"
control_socket = ""
[exporter]
enabled = false
[audit]
enabled = false
[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{logs}/auth.log"]
"""


def _config(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "aisentinel.toml"
    path.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", logs=tmp_path / "logs"))
    return path


def test_slow_responder_does_not_stall_the_daemon_heartbeat(
    tmp_path: Path, now_epoch: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a responder hangs, the heartbeat advances and new attackers are still banned."""
    clock = FakeClock(now_epoch + 60)
    slow = Recording(clock, block=True)
    monkeypatch.setattr(Daemon, "_build_responders", lambda _self, _config: [slow])
    path = _config(tmp_path)
    daemon = Daemon(load_config(path), config_path=path)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    log = tmp_path / "logs" / "auth.log"
    try:
        assert daemon.started.wait(10)
        with log.open("a") as fh:
            fh.writelines(ssh_fail(now_epoch + i, "198.51.100.10") + "\n" for i in range(6))
        assert slow.entered.wait(15)
        beat = daemon.last_heartbeat
        assert wait_for(lambda: daemon.last_heartbeat > beat, timeout=15)
        with log.open("a") as fh:
            fh.writelines(ssh_fail(now_epoch + i, "198.51.100.11") + "\n" for i in range(6))
        assert wait_for(lambda: daemon.engine.is_banned("198.51.100.11"), timeout=15)
        beat = daemon.last_heartbeat
        assert wait_for(lambda: daemon.last_heartbeat > beat, timeout=15)
        assert not slow.release.is_set()
    finally:
        slow.release.set()
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    added = [t for op, targets in slow.calls if op == "add_many" for t in targets]
    assert added == ["198.51.100.10", "198.51.100.11"]
    assert slow.closed


def test_daemon_reconciles_at_once_when_the_queue_dropped_operations(
    tmp_path: Path, now_epoch: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operations a full queue dropped make the loop queue a reconcile at once, not in 5 min."""
    clock = FakeClock(now_epoch + 60)
    rec = Recording(clock)
    monkeypatch.setattr(Daemon, "_build_responders", lambda _self, _config: [rec])
    path = _config(tmp_path)
    daemon = Daemon(load_config(path), config_path=path)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.started.wait(10)
        assert wait_for(lambda: ("reconcile", []) in rec.calls, timeout=15)
        daemon.runner.queue_size = 1
        daemon.runner.submit_expired([ban("192.0.2.1"), ban("192.0.2.2")])
        assert wait_for(lambda: rec.calls.count(("reconcile", [])) == 2, timeout=15)
    finally:
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert daemon.runner.dropped == 1


def test_every_responder_factory_gets_the_daemons_command_runner(tmp_path: Path) -> None:
    """The daemon hands its one command runner (a fake here) to each responder it builds."""
    fake = FakeRunner()
    path = _config(tmp_path)
    daemon = Daemon(load_config(path), config_path=path, commands=fake)
    try:
        (responder,) = daemon.runner.responders
        assert isinstance(responder, DryRunResponder)
        assert responder.commands is fake
    finally:
        daemon.ledger.close()
