"""The daemon's decision log: decisions one line each up to a budget, the rest summarised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import ssh_fail, wait_for
from structlog.testing import capture_logs
from test_daemon import CONFIG, Running

from aisentinel.clock import FakeClock
from aisentinel.decisionlog import BRAKED_LINES, DECISION_LINES, DecisionLog
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import MEMORY, Ledger
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity

T0 = 1_764_000_000.0
SUMMARY = "bans held back by the brake, not logged one by one"
OVER = "decisions over the log's budget, not logged one by one"


def _decision(
    i: int,
    *,
    braked: bool,
    detector: str = "ssh_bruteforce",
    action: Action = Action.ALERT,
    target: str | None = None,
) -> Decision:
    return Decision(
        ts=T0,
        action=action,
        target=AddressTarget.parse(target or f"203.0.113.{i}"),
        detector=detector,
        severity=Severity.HIGH,
        reason="ban brake engaged" if braked else "severity medium is below ban_severity high",
        braked=braked,
    )


class _Mono:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _summaries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"].startswith(SUMMARY)]


def test_decisions_within_the_budget_are_one_line_each() -> None:
    """Decisions the brake did not make are each logged up to the budget of their action
    and detector."""
    log = DecisionLog(_Mono(), lines=2)
    with capture_logs() as logs:
        for i in range(DECISION_LINES):
            log(_decision(i % 250, braked=False))
        assert log.flush(force=True) == 0
    assert [e["event"] for e in logs] == ["decision"] * DECISION_LINES
    assert logs[7]["target"] == "203.0.113.7"
    assert log.summarised == 0


def test_decisions_over_the_budget_are_one_summary_per_action_and_detector() -> None:
    """Beyond the budget, a detector's alerts of a period are one info summary (count,
    first, last and top targets) and its bans one warning; another detector's decisions
    keep their own budget; the next period logs lines again."""
    mono = _Mono()
    log = DecisionLog(mono, period=60.0, decision_lines=2)
    with capture_logs() as logs:
        for i in range(10):
            log(_decision(i, braked=False, detector="scanning"))
        for i in range(3):
            log(_decision(i, braked=False, detector="scanning", target="198.51.100.9"))
        log(_decision(50, braked=False, detector="rules"))
        for i in range(4):
            log(_decision(60 + i, braked=False, detector="scanning", action=Action.BAN))
        assert log.flush() == 0  # the period is not over
        assert log.summarised == 13
        mono.now += 60.0
        assert log.flush() == 13
        log(_decision(99, braked=False, detector="scanning"))
    lines = [(e["detector"], e["target"]) for e in logs if e["event"] == "decision"]
    assert lines == [
        ("scanning", "203.0.113.0"),
        ("scanning", "203.0.113.1"),
        ("rules", "203.0.113.50"),
        ("scanning", "203.0.113.60"),
        ("scanning", "203.0.113.61"),
        ("scanning", "203.0.113.99"),
    ]
    summaries = {e["action"]: e for e in logs if e["event"].startswith(OVER)}
    assert set(summaries) == {"alert", "ban"}
    alerts, bans = summaries["alert"], summaries["ban"]
    assert (alerts["log_level"], alerts["detector"]) == ("info", "scanning")
    assert (alerts["not_logged"], alerts["logged"], alerts["period_seconds"]) == (11, 2, 60.0)
    assert (alerts["first_target"], alerts["last_target"]) == ("203.0.113.2", "198.51.100.9")
    assert next(iter(alerts["top_targets"].items())) == ("198.51.100.9", 3)
    assert len(alerts["top_targets"]) == 5
    assert (bans["log_level"], bans["not_logged"]) == ("warning", 2)
    assert log.summarised == 13


def test_a_scan_of_new_addresses_every_second_logs_a_bounded_number_of_lines() -> None:
    """Two alerts per new address at 250 addresses a second for 40 s (the flood that
    overran journald's 10,000 lines in 30 s) log at most the budget per minute."""
    mono = _Mono()
    log = DecisionLog(mono)
    with capture_logs() as logs:
        for second in range(40):
            for i in range(250):
                address = f"10.{second}.{i}.1"
                for detector in ("scanning", "rules"):
                    log(_decision(0, braked=False, detector=detector, target=address))
            mono.now += 1.0
            log.flush()
        log.flush(force=True)
    assert len(logs) == 2 * DECISION_LINES + 2
    assert log.summarised == 2 * (40 * 250 - DECISION_LINES)


def test_braked_decisions_beyond_the_first_few_are_one_summary() -> None:
    """The first ``lines`` braked decisions of a period are logged, the rest counted and
    logged as one summary when the period is over (with detectors and targets)."""
    mono = _Mono()
    log = DecisionLog(mono, lines=3, period=60.0)
    with capture_logs() as logs:
        for i in range(20):
            log(_decision(i, braked=True, detector="rules" if i % 2 else "scanning"))
        log(_decision(200, braked=False))  # not braked: its own line
        assert log.flush() == 0  # the period is not over
        mono.now += 60.0
        assert log.flush() == 17
        assert log.flush() == 0
    assert [e["target"] for e in logs if e["event"] == "decision"] == [
        "203.0.113.0",
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.200",
    ]
    (summary,) = _summaries(logs)
    assert summary["not_logged"] == 17
    assert summary["logged"] == 3
    assert summary["detectors"] == {"rules": 9, "scanning": 8}
    assert (summary["first_target"], summary["last_target"]) == ("203.0.113.3", "203.0.113.19")
    assert summary["log_level"] == "warning"


def test_a_new_period_logs_the_last_summary_and_its_first_lines() -> None:
    """A braked decision after the period ends summarises the old period and starts a new
    one that logs its first lines again."""
    mono = _Mono()
    log = DecisionLog(mono, lines=1, period=60.0)
    with capture_logs() as logs:
        for i in range(5):
            log(_decision(i, braked=True))
        mono.now += 61.0
        for i in range(5, 8):
            log(_decision(i, braked=True))
        log.flush(force=True)  # at stop
    events = [(e["event"][:20], e.get("target", e.get("not_logged"))) for e in logs]
    assert events == [
        ("decision", "203.0.113.0"),
        (SUMMARY[:20], 4),
        ("decision", "203.0.113.5"),
        (SUMMARY[:20], 2),
    ]


def test_the_engine_marks_what_the_brake_turned_into_an_alert(tmp_path: Path) -> None:
    """Only the alerts the brake made of bans are ``braked``."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=2, brake_cooldown=0)
    engine = DecisionEngine(cfg, Ledger(Path(MEMORY), clock), clock)

    def finding(addr: str, severity: Severity = Severity.HIGH) -> Finding:
        return Finding(
            ts=T0,
            detector="ssh_bruteforce",
            severity=severity,
            client=addr,
            key=addr,
            count=5,
            window=600.0,
            message="5 failures",
        )

    decided = [engine.decide(finding(f"198.51.100.{i}")) for i in range(4)]
    assert [(d.action, d.braked) for d in decided] == [
        (Action.BAN, False),
        (Action.BAN, False),
        (Action.ALERT, True),
        (Action.ALERT, True),
    ]
    low = engine.decide(finding("198.51.100.9", Severity.MEDIUM))
    assert (low.action, low.braked) == (Action.ALERT, False)


def test_the_daemon_summarises_braked_decisions_and_logs_the_rest_at_stop(
    tmp_path: Path, now_epoch: float
) -> None:
    """A running daemon with a brake of 2 bans a minute and 20 brute forcers: 2 bans and
    the first braked alerts are lines; the other braked ones are one summary, at stop."""
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    cfg = tmp_path / "aisentinel.toml"
    cfg.write_text(
        CONFIG.format(state=tmp_path / "state", logs=logs_dir, threshold=5)
        + '\n[decisions]\nmax_bans_per_minute = 2\nbrake_cooldown = "0s"\n'
    )
    with capture_logs() as logs:
        running = Running(cfg)
        try:
            lines = [
                ssh_fail(now_epoch + k, f"198.51.100.{i}") for i in range(20) for k in range(5)
            ]
            (logs_dir / "auth.log").write_text("".join(line + "\n" for line in lines))
            engine = running.daemon.engine
            assert wait_for(lambda: engine.counters().bans_braked >= 18, 15)
        finally:
            running.stop()
    braked = engine.counters().bans_braked
    decided = [e for e in logs if e["event"] == "decision"]
    assert [e["target"] for e in decided if e["action"] == "ban"] == [
        "198.51.100.0",
        "198.51.100.1",
    ]
    held = [e for e in decided if e["reason"].startswith("ban brake engaged")]
    assert len(held) == BRAKED_LINES
    (summary,) = _summaries(logs)
    assert summary["not_logged"] == braked - BRAKED_LINES
    assert running.daemon.decision_log.summarised == braked - BRAKED_LINES
    assert sum(summary["detectors"].values()) == braked - BRAKED_LINES
    assert "ssh_bruteforce" in summary["detectors"]


def test_the_daemon_logs_decisions_within_its_configured_budget(
    tmp_path: Path, now_epoch: float
) -> None:
    """``[daemon] decision_lines`` sets the budget (2: two ban lines, the rest one
    summary at stop); 0 logs every decision on its own line."""
    for budget, lines in ((2, 2), (0, 5)):
        logs_dir = tmp_path / f"logs{budget}"
        logs_dir.mkdir()
        cfg = tmp_path / f"aisentinel{budget}.toml"
        text = CONFIG.format(state=tmp_path / f"state{budget}", logs=logs_dir, threshold=5)
        cfg.write_text(text.replace('control_socket = ""', f"decision_lines = {budget}", 1))
        with capture_logs() as logs:
            running = Running(cfg)
            try:
                fails = [
                    ssh_fail(now_epoch + k, f"198.51.100.{i}") for i in range(5) for k in range(5)
                ]
                (logs_dir / "auth.log").write_text("".join(f + "\n" for f in fails))
                engine = running.daemon.engine
                assert wait_for(lambda: engine.counters().active_bans >= 5, 15)  # noqa: B023
            finally:
                running.stop()
        bans = [e for e in logs if e["event"] == "decision" and e["action"] == "ban"]
        assert len(bans) == lines, budget
        held = [e for e in logs if e["event"].startswith("decisions over the log's budget")]
        assert [e["not_logged"] for e in held] == ([3] if budget else [])
