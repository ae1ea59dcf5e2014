"""The ``dryrun`` responder, alone and behind the engine and runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity
from aisentinel.responders import REGISTRY, DryRunConfig, DryRunResponder, ResponderRunner
from aisentinel.responders.dryrun import BATCH_LINES

T0 = 1_764_000_000.0


def ban(target: str, ttl: float = 3600.0) -> Decision:
    return Decision(
        ts=T0,
        action=Action.BAN,
        target=AddressTarget.parse(target),
        detector="ssh_bruteforce",
        severity=Severity.HIGH,
        reason="test",
        ttl=ttl,
        expires_at=T0 + ttl,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_registered_as_dryrun() -> None:
    """The plug-in is found in the responder registry under ``dryrun`` with its config."""
    entry = REGISTRY.get("dryrun")
    assert entry.factory is DryRunResponder
    assert entry.config_model is DryRunConfig


def test_config_is_strict() -> None:
    """``keep`` must be positive and unknown keys are refused."""
    assert DryRunConfig().keep == 1_000
    assert DryRunConfig().enabled
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DryRunConfig(keep=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DryRunConfig.model_validate({"path": "/tmp/x"})


def test_add_and_delete_are_recorded_and_logged(clock: FakeClock) -> None:
    """Each committed operation becomes a timed, readable entry and an info log line;
    each commit one recorded batch; nothing happens before the commit."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    with capture_logs() as logs:
        r.add_many([ban("203.0.113.7"), ban("2001:db8::/64")])
        assert not r.actions
        r.commit()
        clock.advance(5)
        r.delete_many([ban("203.0.113.7"), ban("198.51.100.1")])
        r.commit()
    assert [(a.ts, a.text) for a in r.actions] == [
        (T0, "ban 203.0.113.7 for 1h (ssh_bruteforce)"),
        (T0, "ban 2001:db8::/64 for 1h (ssh_bruteforce)"),
        (T0 + 5, "unban 203.0.113.7"),
        (T0 + 5, "unban 198.51.100.1 (not held)"),
    ]
    assert [e["action"] for e in logs] == [a.text for a in r.actions]
    assert [(b.added, b.deleted) for b in r.batches] == [
        (("203.0.113.7", "2001:db8::/64"), ()),
        ((), ("203.0.113.7", "198.51.100.1")),
    ]
    assert list(r.banned) == ["2001:db8::/64"]


def test_discard_forgets_the_staged_batch(clock: FakeClock) -> None:
    """After ``discard`` a commit applies nothing that was staged before it."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    r.add_many([ban("203.0.113.7")])
    r.discard()
    r.commit()
    assert (list(r.actions), list(r.batches), r.banned) == ([], [], {})


def test_actions_are_bounded(clock: FakeClock) -> None:
    """Only the newest ``keep`` actions are kept."""
    r = DryRunResponder(DryRunConfig(keep=3), clock=clock)
    for i in range(10):
        r.add_many([ban(f"198.51.100.{i}")])
        r.commit()
    assert [a.text.split()[1] for a in r.actions] == [
        "198.51.100.7",
        "198.51.100.8",
        "198.51.100.9",
    ]


def test_reconcile_reports_the_difference(clock: FakeClock) -> None:
    """Reconcile adds what is missing, lifts what is stale and summarises."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    r.add_many([ban("198.51.100.1"), ban("198.51.100.2")])
    r.commit()
    r.actions.clear()
    r.reconcile([ban("198.51.100.2"), ban("198.51.100.3", ttl=90)])
    assert [a.text for a in r.actions] == [
        "unban 198.51.100.1 (reconcile)",
        "ban 198.51.100.3 for 1m30s (ssh_bruteforce)",
        "reconcile: 2 active, 1 added, 1 removed",
    ]
    assert sorted(r.banned) == ["198.51.100.2", "198.51.100.3"]


def test_reconcile_logs_one_summary_and_each_target_at_debug(clock: FakeClock) -> None:
    """A reconcile (at every start, with every ban of the ledger) logs one info line, the
    per-target lines at debug; each operation is still recorded."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    r.add_many([ban("198.51.100.1")])
    r.commit()
    with capture_logs() as logs:
        r.reconcile([ban(f"203.0.113.{i}") for i in range(50)])
    info = [e["action"] for e in logs if e["log_level"] == "info"]
    assert info == ["reconcile: 50 active, 50 added, 1 removed"]
    debug = [e["action"] for e in logs if e["log_level"] == "debug"]
    assert len(debug) == 51
    assert debug[0] == "unban 198.51.100.1 (reconcile)"
    assert len(r.banned) == 50


def test_a_large_commit_logs_a_summary_and_each_operation_at_debug(clock: FakeClock) -> None:
    """A commit of more than BATCH_LINES operations (a tick's expiries) logs one info
    summary, the operations at debug; a small one logs each at info."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    bans = [ban(f"203.0.113.{i}") for i in range(BATCH_LINES + 1)]
    r.add_many(bans)
    r.commit()
    with capture_logs() as logs:
        r.delete_many(bans)
        r.commit()
        r.add_many(bans[:2])
        r.commit()
    info = [e["action"] for e in logs if e["log_level"] == "info"]
    assert info == [
        f"commit: 0 added, {BATCH_LINES + 1} deleted (each at debug level)",
        "ban 203.0.113.0 for 1h (ssh_bruteforce)",
        "ban 203.0.113.1 for 1h (ssh_bruteforce)",
    ]
    debug = [e["action"] for e in logs if e["log_level"] == "debug"]
    assert debug == [f"unban 203.0.113.{i}" for i in range(BATCH_LINES + 1)]


def test_health_is_always_ok(clock: FakeClock) -> None:
    """The dry-run backend is always healthy and says how many bans it would hold."""
    r = DryRunResponder(DryRunConfig(), clock=clock)
    r.add_many([ban("198.51.100.1")])
    r.commit()
    health = r.health()
    assert health.ok
    assert health.detail == "dry run: 1 bans would be held"


def _finding(client: str) -> Finding:
    return Finding(
        ts=T0,
        detector="ssh_bruteforce",
        severity=Severity.HIGH,
        client=client,
        key=client,
        count=9,
        window=600.0,
        message="9 failed logins",
    )


@pytest.mark.parametrize("simulate", [False, True])
def test_engine_runner_and_dryrun_together(
    tmp_path: Path, clock: FakeClock, *, simulate: bool
) -> None:
    """Finding -> ban -> dry-run add, then expiry -> dry-run unban; simulate mode does neither."""
    engine = DecisionEngine(
        DecisionsConfig(simulate=simulate),
        Ledger(tmp_path / "ledger.sqlite", clock),
        clock,
        host_addresses=list,
    )
    responder = DryRunResponder(DryRunConfig(), clock=clock)
    runner = ResponderRunner([responder], clock)
    runner.reconcile(engine.active())
    assert runner.flush(timeout=1.0)
    runner.submit(engine.decide(_finding("203.0.113.7")))
    assert runner.flush(timeout=1.0)
    clock.advance(3600)
    runner.submit_expired(engine.expire())
    assert runner.flush(timeout=1.0)
    texts = [a.text for a in responder.actions]
    if simulate:
        assert texts == ["reconcile: 0 active, 0 added, 0 removed"]
    else:
        assert texts == [
            "reconcile: 0 active, 0 added, 0 removed",
            "ban 203.0.113.7 for 1h (ssh_bruteforce)",
            "unban 203.0.113.7",
        ]
