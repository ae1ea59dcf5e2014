"""The Prometheus collector and the APScheduler-driven re-runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import wait_for
from prometheus_client import CollectorRegistry, generate_latest

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.collector import AuditCollector
from aisentinel.audit.config import AuditConfig, AuditTools
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.scheduler import AuditScheduler
from aisentinel.audit.testing import empty_proc, make_context
from aisentinel.clock import FakeClock


def test_collector_state_set() -> None:
    """One 1 per check (its status), 0 for the others, counts, timestamp and duration."""
    registry = CollectorRegistry()
    collector = AuditCollector()
    registry.register(collector)
    assert registry.get_sample_value("aisentinel_audit_last_run_timestamp_seconds") is None
    report = AuditReport(
        (
            CheckResult("ssh.root-login", "t", Status.FAIL),
            CheckResult("nginx.tls", "t", Status.PASS),
        ),
        1_764_000_000.0,
        0.25,
    )
    collector.update(report)
    value = registry.get_sample_value
    assert (
        value("aisentinel_audit_check_status", {"check": "ssh.root-login", "status": "fail"}) == 1.0
    )
    assert (
        value("aisentinel_audit_check_status", {"check": "ssh.root-login", "status": "pass"}) == 0.0
    )
    assert value("aisentinel_audit_check_status", {"check": "nginx.tls", "status": "pass"}) == 1.0
    assert value("aisentinel_audit_checks", {"status": "fail"}) == 1.0
    assert value("aisentinel_audit_last_run_timestamp_seconds") == 1_764_000_000.0
    assert value("aisentinel_audit_duration_seconds") == 0.25
    text = generate_latest(registry).decode()
    assert text.count("aisentinel_audit_check_status{") == 8  # 2 checks x 4 statuses


def test_collector_names_collide_in_a_registry() -> None:
    """describe() exposes the names so registering twice is refused before any audit."""
    registry = CollectorRegistry()
    registry.register(AuditCollector())
    with pytest.raises(ValueError, match="aisentinel_audit"):
        registry.register(AuditCollector())


def test_scheduler_runs_at_start_and_feeds_collector(tmp_path: Path) -> None:
    """start() runs an audit at once in the background; shutdown() stops it."""
    config = AuditConfig(interval=3600.0, proc_root=empty_proc(tmp_path), unit_dirs=(tmp_path,))
    runs: list[int] = []

    def factory() -> AuditContext:
        runs.append(1)
        return make_context(config, metrics_listen="127.0.0.1:9464")

    scheduler = AuditScheduler(config, clock=FakeClock(), context_factory=factory)
    registry = CollectorRegistry()
    registry.register(scheduler.collector)
    scheduler.start()
    try:
        assert wait_for(lambda: scheduler.collector.report is not None, timeout=10)
    finally:
        scheduler.shutdown()
    assert len(runs) == 1
    assert (
        registry.get_sample_value(
            "aisentinel_audit_check_status", {"check": "self.metrics-exposure", "status": "pass"}
        )
        == 1.0
    )
    scheduler.shutdown()  # idempotent


def test_run_once_survives_a_broken_context() -> None:
    """A run whose context cannot be built is logged and leaves the last report in place."""

    def broken() -> AuditContext:
        raise OSError("disk gone")

    scheduler = AuditScheduler(AuditConfig(), context_factory=broken)
    assert scheduler.run_once() is None
    assert scheduler.collector.report is None


def test_scheduled_runs_ask_how_aisentinel_bans_each_time(tmp_path: Path) -> None:
    """Each scheduled run asks the daemon anew how it bans: a ban responder that stops
    counting (unhealthy) no longer passes fail2ban.jails, and the note says why."""
    only = "fail2ban.jails"
    config = AuditConfig(
        skip=tuple(entry.name for entry in CHECKS if entry.name != only),
        tools=AuditTools(fail2ban_client=str(tmp_path / "no-fail2ban-client")),
    )
    answers = iter(
        [("nftables responder", ""), (None, "aisentinel's nftables responder is unhealthy: gone")]
    )
    scheduler = AuditScheduler(config, enforcement=lambda: next(answers), clock=FakeClock())
    first, second = scheduler.run_once(), scheduler.run_once()
    assert first is not None
    assert second is not None
    assert [r.status for r in first.results] == [Status.PASS]
    (result,) = second.results
    assert result.status is Status.FAIL
    assert result.evidence[0] == "aisentinel's nftables responder is unhealthy: gone"
