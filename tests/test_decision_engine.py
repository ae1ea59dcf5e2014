"""The decision engine: the order of checks, escalation, brake, expiry and restart."""

from __future__ import annotations

import dataclasses
import ipaddress
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from aisentinel.clock import EventClock, FakeClock
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger, ban_ttl
from aisentinel.decisions.brakes import SshConnection
from aisentinel.decisions.engine import (
    ADDRESSES_MAX,
    PURGE_INTERVAL_SECONDS,
    unbannable,
    unbannable_network,
    unbannable_target,
)
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Finding,
    Severity,
    canonical_address,
)

T0 = 1_764_000_000.0
HOUR = 3600.0
DAY = 86400.0
ATTACKER = "203.0.113.7"


def text(decision: Decision) -> str:
    """The decision's target as text ("" when it has none)."""
    return decision.target.text if decision.target is not None else ""


def finding(
    client: str | None = ATTACKER,
    severity: Severity = Severity.HIGH,
    detector: str = "ssh_bruteforce",
) -> Finding:
    return Finding(
        ts=T0 - 30,
        detector=detector,
        severity=severity,
        client=client,
        key=client or "root",
        count=12,
        window=600.0,
        message="12 failed logins in 10m",
    )


def no_hosts() -> Iterable[str]:
    return ()


class Env:
    """A clock, a ledger file and a way to (re)start engines over it."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(T0)
        self.path = tmp_path / "ledger.sqlite"
        self.ledgers: list[Ledger] = []

    def engine(self, **config: Any) -> DecisionEngine:
        ledger = Ledger(self.path, self.clock)
        self.ledgers.append(ledger)
        return DecisionEngine(
            DecisionsConfig(**config), ledger, self.clock, host_addresses=no_hosts
        )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# --------------------------------------------------------------------------- config


def test_config_defaults() -> None:
    """Defaults: 1h first ban, x4 escalation within 7d, 30d cap, bans from high severity."""
    cfg = DecisionsConfig()
    assert (cfg.ban_ttl, cfg.escalation_factor, cfg.recidive_window) == (HOUR, 4.0, 7 * DAY)
    assert (cfg.max_ttl, cfg.ledger_retention) == (30 * DAY, 30 * DAY)
    assert cfg.ban_severity is Severity.HIGH
    assert cfg.max_bans_per_minute == 60
    assert not cfg.simulate


def test_config_parses_names_and_durations() -> None:
    """Severity names, duration strings and CIDRs load into typed values and dump back."""
    cfg = DecisionsConfig.model_validate(
        {"ban_severity": "Medium", "ban_ttl": "10m", "allowlist": ["10.0.0.0/8", "192.0.2.1"]}
    )
    assert cfg.ban_severity is Severity.MEDIUM
    assert cfg.ban_ttl == 600.0
    assert [str(n) for n in cfg.allowlist] == ["10.0.0.0/8", "192.0.2.1/32"]
    dumped = cfg.model_dump(mode="json")
    assert dumped["ban_severity"] == "medium"
    assert dumped["ban_ttl"] == "10m"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ban_severity": "urgent"}, "bad severity 'urgent'"),
        ({"ban_ttl": 0}, "must be more than 0s"),
        ({"ban_ttl": "2d", "max_ttl": "1d"}, "max_ttl must be at least ban_ttl"),
        ({"ledger_retention": "1d"}, "ledger_retention must be at least recidive_window"),
        ({"escalation_factor": 0.5}, "greater than or equal to 1"),
        ({"max_bans_per_minute": 0}, "greater than or equal to 1"),
        ({"allow_loopback": False}, "Extra inputs are not permitted"),
        ({"allowlist": ["10.0.0.300/8"]}, "bad CIDR"),
    ],
)
def test_config_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    """Each invalid ``[decisions]`` value is refused with a message naming the problem."""
    with pytest.raises(ValidationError, match=message):
        DecisionsConfig.model_validate(values)


# --------------------------------------------------------------------------- decide


def test_first_offence_is_a_ban_for_ban_ttl(env: Env) -> None:
    """A high finding bans its client for ``ban_ttl`` from now, and the ban is recorded."""
    engine = env.engine()
    d = engine.decide(finding())
    assert d.action is Action.BAN
    assert (text(d), d.ttl, d.expires_at, d.offence) == (ATTACKER, HOUR, T0 + HOUR, 1)
    assert d.ts == T0
    assert not d.simulated
    assert d.evidence_count == 12
    assert d.finding is not None
    assert "offence 1" in d.reason
    assert engine.ledger.active(T0) == [d]
    assert engine.active() == [d]
    assert engine.is_banned("::ffff:203.0.113.7")


def test_a_held_ban_keeps_every_field_of_its_decision_but_the_finding(env: Env) -> None:
    """The ban the engine holds is the decision it made, field for field, less its finding."""
    engine = env.engine()
    decision = engine.decide(finding())
    held = engine.active()[0]
    assert decision.finding is not None
    assert held.finding is None
    for f in dataclasses.fields(Decision):
        if f.name != "finding":
            assert getattr(held, f.name) == getattr(decision, f.name), f.name


def test_target_is_canonical(env: Env) -> None:
    """An IPv4-mapped client is banned as its IPv4 address; IPv6 is compressed."""
    engine = env.engine()
    assert engine.decide(finding("::ffff:203.0.113.9")).target == AddressTarget.parse("203.0.113.9")
    assert text(engine.decide(finding("2001:DB8:0::5"))) == "2001:db8::/64"


def test_target_text_is_the_clients_string_when_canonical(env: Env) -> None:
    """A canonical client's ban holds the finding's string itself; any other spelling the
    canonical text (never the log's spelling)."""
    engine = env.engine()
    client = "".join(["198.51.100.", "77"])  # a string object of its own
    d = engine.decide(finding(client))
    assert d.target is not None
    assert d.target.text is client
    mapped = engine.decide(finding("::ffff:198.51.100.78"))
    assert mapped.target is not None
    assert mapped.target.text == "198.51.100.78"


def test_no_client_is_an_alert(env: Env) -> None:
    """A finding without a single address is an alert, recorded without target."""
    engine = env.engine()
    d = engine.decide(finding(None))
    assert (d.action, d.target, d.reason) == (Action.ALERT, None, "no single address to ban")
    assert engine.ledger.counts()[Action.ALERT] == 1


def test_invalid_address_is_none_and_not_recorded(env: Env) -> None:
    """A client that is not an IP address yields NONE naming it, and nothing is recorded."""
    engine = env.engine()
    d = engine.decide(finding("evil.example"))
    assert (d.action, d.target, d.reason) == (Action.NONE, None, "invalid address 'evil.example'")
    assert engine.ledger.counts() == dict.fromkeys(Action, 0)


@pytest.mark.parametrize(
    ("client", "network"),
    [
        ("10.1.2.3", "10.0.0.0/8"),
        ("::ffff:10.9.9.9", "10.0.0.0/8"),
        ("127.0.0.1", "127.0.0.0/8"),
        ("::1", "::1/128"),
        ("192.0.2.2", "192.0.2.2/32"),
    ],
)
def test_allowlist_always_wins(tmp_path: Path, client: str, network: str) -> None:
    """Configured, loopback and host addresses are never banned, even for critical findings."""
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig.model_validate({"allowlist": ["10.0.0.0/8"], "ban_severity": "info"}),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=lambda: ["192.0.2.2"],
    )
    d = engine.decide(finding(client, Severity.CRITICAL))
    assert d.action is Action.NONE
    assert d.reason == f"allowlisted ({network})"
    assert engine.ledger.counts()[Action.BAN] == 0


def test_host_addresses_ignored_when_disabled(tmp_path: Path) -> None:
    """With ``allow_host_addresses`` off, the host's addresses can be banned."""
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(allow_host_addresses=False),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=lambda: ["192.0.2.2"],
    )
    assert engine.decide(finding("192.0.2.2")).action is Action.BAN


def test_host_addresses_are_refreshed(tmp_path: Path) -> None:
    """A host address that appears later is allowlisted after the refresh interval."""
    clock = FakeClock(T0)
    hosts: list[str] = []
    engine = DecisionEngine(
        DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock, host_addresses=lambda: hosts
    )
    hosts.append("198.51.100.50")
    clock.advance(DecisionsConfig().host_refresh_interval - 1)
    assert engine.decide(finding("198.51.100.50")).action is Action.BAN
    engine.unban("198.51.100.50")
    clock.advance(1)
    assert engine.decide(finding("198.51.100.50")).action is Action.NONE


def test_ban_of_a_new_host_address_is_lifted_when_a_decision_reads_it_first(
    tmp_path: Path,
) -> None:
    """A ban of an address that became the host's own is lifted once, also when a
    decision (not expire) is what re-reads the host addresses."""
    clock = FakeClock(T0)
    hosts: list[str] = []
    engine = DecisionEngine(
        DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock, host_addresses=lambda: hosts
    )
    ban = engine.decide(finding("198.51.100.50"))
    assert ban.action is Action.BAN
    hosts.append("198.51.100.50")  # DHCP, a VPN, a failover address
    clock.advance(DecisionsConfig().host_refresh_interval)
    assert engine.decide(finding("203.0.113.1")).action is Action.BAN  # findings keep coming
    assert engine.expire() == [ban]
    assert not engine.is_banned("198.51.100.50")
    assert engine.expire() == []
    assert [text(d) for d in engine.ledger.active(clock.now())] == ["203.0.113.1"]


def test_allow_expiry_and_host_change_together_rebuild_and_sweep_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a runtime allow ends and the host addresses change in the same expire(), the
    allowlist is rebuilt once, only the ban of the new host address is checked (no full
    sweep), and both changes take effect."""
    clock = FakeClock(T0)
    hosts: list[str] = []
    engine = DecisionEngine(
        DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock, host_addresses=lambda: hosts
    )
    ban = engine.decide(finding("198.51.100.50"))
    engine.decide(finding("198.51.100.51"))
    engine.allow("192.0.2.0/24", 1.0, "root")
    hosts.append("198.51.100.50")
    clock.advance(DecisionsConfig().host_refresh_interval)  # the allow ends meanwhile
    calls = {"build": 0, "sweep": 0, "checked": 0}
    build, sweep, forbidden = engine._build_allowlist, engine._sweep, engine._forbidden

    def counted_build() -> Any:
        calls["build"] += 1
        return build()

    def counted_sweep() -> None:
        calls["sweep"] += 1
        sweep()

    def counted_forbidden(ban: Decision) -> str | None:
        calls["checked"] += 1
        return forbidden(ban)

    monkeypatch.setattr(engine, "_build_allowlist", counted_build)
    monkeypatch.setattr(engine, "_sweep", counted_sweep)
    monkeypatch.setattr(engine, "_forbidden", counted_forbidden)
    assert engine.expire() == [ban]
    assert calls == {"build": 1, "sweep": 0, "checked": 1}
    assert engine.decide(finding("192.0.2.9")).action is Action.BAN


def test_failing_host_probe_keeps_last_known(tmp_path: Path) -> None:
    """When reading host addresses fails, the previous set stays allowlisted."""
    clock = FakeClock(T0)
    calls = 0

    def hosts() -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("procfs went away")
        return ["198.51.100.50"]

    engine = DecisionEngine(
        DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock, host_addresses=hosts
    )
    clock.advance(DecisionsConfig().host_refresh_interval)
    assert engine.decide(finding("198.51.100.50")).action is Action.NONE
    assert calls == 2


def test_already_banned_is_none(env: Env) -> None:
    """A second finding about a banned address does nothing and says until when."""
    engine = env.engine()
    engine.decide(finding())
    env.clock.advance(60)
    d = engine.decide(finding("::ffff:203.0.113.7"))
    assert d.action is Action.NONE
    assert d.reason == "already banned until 2025-11-24T17:00:00+00:00"
    assert engine.ledger.counts()[Action.BAN] == 1


def test_below_ban_severity_is_alert(env: Env) -> None:
    """A finding below ``ban_severity`` is an alert about its client."""
    engine = env.engine(ban_severity="critical")
    d = engine.decide(finding(severity=Severity.HIGH))
    assert (d.action, text(d)) == (Action.ALERT, ATTACKER)
    assert d.reason == "severity high is below ban_severity critical"
    assert engine.active() == []


def test_alert_only_detector_is_alert(env: Env) -> None:
    """Findings of an alert-only detector never ban, whatever their severity."""
    engine = env.engine(alert_only_detectors=["gpu_abuse"])
    d = engine.decide(finding(severity=Severity.CRITICAL, detector="gpu_abuse"))
    assert d.action is Action.ALERT
    assert d.reason == "detector 'gpu_abuse' is alert-only"
    assert engine.decide(finding(detector="ssh_bruteforce")).action is Action.BAN


def test_simulate_marks_decisions(env: Env) -> None:
    """In simulate mode bans are decided, recorded and tracked, but marked simulated."""
    engine = env.engine(simulate=True)
    d = engine.decide(finding())
    assert d.action is Action.BAN
    assert d.simulated
    assert engine.ledger.active(T0)[0].simulated
    assert engine.decide(finding()).action is Action.NONE


# --------------------------------------------------------------------------- escalation


def test_repeat_offences_escalate(env: Env) -> None:
    """Each earlier ban within the recidive window multiplies the TTL by the factor."""
    engine = env.engine()
    ttls = []
    for _ in range(3):
        d = engine.decide(finding())
        ttls.append((d.offence, d.ttl))
        env.clock.advance(d.ttl or 0)
        assert [text(e) for e in engine.expire()] == [ATTACKER]
    assert ttls == [(1, HOUR), (2, 4 * HOUR), (3, 16 * HOUR)]


def test_escalation_is_capped_and_never_overflows() -> None:
    """The TTL stops at ``max_ttl``, even for absurd offence counts."""
    cfg = DecisionsConfig.model_validate({"max_ttl": "1d"})
    assert ban_ttl(cfg, 1) == HOUR
    assert ban_ttl(cfg, 3) == 16 * HOUR
    assert ban_ttl(cfg, 4) == DAY
    assert ban_ttl(cfg, 100_000) == DAY


def test_offences_outside_the_window_do_not_count(env: Env) -> None:
    """A ban older than ``recidive_window`` does not escalate the next one."""
    engine = env.engine(recidive_window="1d", ledger_retention="1d")
    engine.decide(finding())
    env.clock.advance(DAY + 1)
    engine.expire()
    d = engine.decide(finding())
    assert (d.offence, d.ttl) == (1, HOUR)


def test_manual_unban_lifts_and_forgives(env: Env) -> None:
    """``unban`` returns the lifted ban and the next ban is a first offence again."""
    engine = env.engine()
    first = engine.decide(finding())
    assert engine.unban("::ffff:203.0.113.7") == first
    assert engine.active() == []
    assert engine.unban(ATTACKER) is None
    d = engine.decide(finding())
    assert (d.action, d.offence) == (Action.BAN, 1)
    with pytest.raises(ValueError, match="not an address"):
        engine.unban("nope")


def test_epoch_moves_only_when_a_ban_ends_before_its_time(env: Env) -> None:
    """``epoch`` is bumped by an unban, a runtime allow that lifts a ban and a reload
    that drops simulated bans; not by decisions, repeats or expiry."""
    engine = env.engine(simulate=True)
    start = engine.epoch
    engine.decide(finding())
    engine.decide(finding())  # already banned
    engine.decide(finding("198.51.100.9"))
    assert engine.epoch == start
    engine.reconfigure(DecisionsConfig(simulate=False))  # drops the simulated bans
    assert engine.epoch == start + 1
    engine.decide(finding())
    engine.decide(finding("198.51.100.9"))
    engine.reconfigure(DecisionsConfig())  # nothing lifted
    assert engine.epoch == start + 1
    engine.allow("198.51.100.0/24", 600.0, "test")
    assert engine.epoch == start + 2
    engine.allow("192.0.2.0/24", 600.0, "test")  # covers no ban
    assert engine.epoch == start + 2
    engine.unban(ATTACKER)
    assert engine.epoch == start + 3
    engine.unban("203.0.113.200")  # nothing held
    assert engine.epoch == start + 3
    engine.decide(finding("203.0.113.8"))
    env.clock.advance(2 * HOUR)
    assert engine.expire()
    assert engine.epoch == start + 3


# --------------------------------------------------------------------------- brake


def test_ban_brake_turns_bans_into_alerts(env: Env) -> None:
    """Beyond ``max_bans_per_minute`` bans become alerts until the minute has passed
    (with no cool-down)."""
    engine = env.engine(max_bans_per_minute=3, brake_cooldown=0)
    actions = [engine.decide(finding(f"203.0.113.{i}")).action for i in range(5)]
    assert actions == [Action.BAN] * 3 + [Action.ALERT] * 2
    braked = engine.decide(finding("203.0.113.99"))
    assert braked.reason.startswith("ban brake engaged")
    assert engine.counters().bans_braked == 3
    env.clock.advance(60)
    assert engine.decide(finding("203.0.113.99")).action is Action.BAN


def test_ban_brake_counts_in_decision_time(tmp_path: Path) -> None:
    """In a replay (wall time = event time) the brake window follows the events' time."""
    clock = EventClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(max_bans_per_minute=2, brake_cooldown=0),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=no_hosts,
    )
    assert engine.decide(finding("203.0.113.1")).action is Action.BAN
    assert engine.decide(finding("203.0.113.2")).action is Action.BAN
    assert engine.decide(finding("203.0.113.3")).action is Action.ALERT
    clock.set(T0 + 61)
    assert engine.decide(finding("203.0.113.3")).action is Action.BAN


# --------------------------------------------------------------------------- expiry, restart


def test_expire_returns_due_bans_once(env: Env) -> None:
    """``expire`` hands over each ban exactly once when its time is up."""
    engine = env.engine()
    a = engine.decide(finding("203.0.113.1"))
    env.clock.advance(1800)
    b = engine.decide(finding("203.0.113.2"))
    assert engine.expire() == []
    env.clock.advance(1800)
    assert engine.expire() == [a]
    assert engine.active() == [b]
    assert engine.expire() == []
    assert engine.counters().expired == 1


def test_restart_restores_active_bans(env: Env) -> None:
    """A new engine on the same ledger knows the active bans and still refuses duplicates."""
    first = env.engine()
    d = first.decide(finding())
    second = env.engine()
    assert second.active() == [d]
    assert second.decide(finding()).action is Action.NONE
    assert second.expire() == []


def test_runtime_allow_survives_a_restart_until_its_expiry(env: Env) -> None:
    """`aisentinel allow NET --ttl 8h` is restored by a restarted engine (the allowlist
    wins over the next finding in NET) until its expiry, and not after."""
    first = env.engine()
    first.allow("198.51.100.0/24", 8 * HOUR, "root", "admin VPN")
    env.clock.advance(HOUR)
    second = env.engine()
    [entry] = second.allow_entries()
    assert (str(entry.network), entry.expires_at, entry.who, entry.reason) == (
        "198.51.100.0/24",
        T0 + 8 * HOUR,
        "root",
        "admin VPN",
    )
    d = second.decide(finding("198.51.100.20"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (198.51.100.0/24)")
    env.clock.advance(7 * HOUR)
    third = env.engine()
    assert third.allow_entries() == []
    assert third.decide(finding("198.51.100.20")).action is Action.BAN


def test_bans_expired_while_down_are_reported_once(env: Env) -> None:
    """Bans that ran out while the daemon was down are reported by the first expire only."""
    first = env.engine()
    d = first.decide(finding())
    env.clock.advance(2 * HOUR)
    second = env.engine()
    assert second.active() == []
    assert second.expire() == [d]
    third = env.engine()
    assert third.expire() == []


def test_restored_ban_of_now_allowlisted_address_is_lifted(env: Env) -> None:
    """A ban whose address is allowlisted since is handed back for lifting after restart."""
    first = env.engine()
    d = first.decide(finding())
    second = env.engine(allowlist=["203.0.113.0/24"])
    assert second.active() == []
    assert second.expire() == [d]
    assert env.engine().active() == []


def test_restored_garbage_target_is_dropped(env: Env) -> None:
    """A ledger row whose target is not an address does not stop the engine from starting."""
    ledger = Ledger(env.path, env.clock)
    ledger.record(Decision(T0, Action.BAN, None, "x", Severity.HIGH, "r", HOUR, T0 + HOUR))
    ledger.close()
    with sqlite3.connect(env.path) as db:  # what an older version or a bad edit may leave
        db.execute("UPDATE decisions SET target = 'not-an-ip'")
    db.close()
    engine = env.engine()
    assert engine.active() == []
    assert engine.expire() == []
    assert engine.ledger.open_bans() == []


def test_simulated_bans_are_dropped_when_simulate_is_off(env: Env) -> None:
    """Leaving simulate mode forgets simulated bans, so real bans follow at once."""
    env.engine(simulate=True).decide(finding())
    real = env.engine()
    assert real.active() == []
    assert real.expire() == []
    d = real.decide(finding())
    assert d.action is Action.BAN
    assert not d.simulated


def test_reconfigure_keeps_bans_and_applies_allowlist(env: Env) -> None:
    """A reload keeps active bans and counters but lifts bans the new allowlist covers."""
    engine = env.engine()
    kept = engine.decide(finding("198.51.100.1"))
    lifted = engine.decide(finding("203.0.113.1"))
    engine.reconfigure(DecisionsConfig.model_validate({"allowlist": ["203.0.113.0/24"]}))
    assert engine.active() == [kept]
    assert engine.expire() == [lifted]
    assert engine.counters().decisions[Action.BAN] == 2


def test_trusted_proxies_are_never_banned(env: Env) -> None:
    """`[parsers] trusted_proxies` join the allowlist: the proxy itself (its own requests,
    or its clients' without X-Forwarded-For) is never banned, by hand neither; a reload
    that adds one lifts its ban, one that does not name them keeps them."""
    proxy = ipaddress.ip_network("10.0.0.2/32")
    ledger = Ledger(env.path, env.clock)
    engine = DecisionEngine(
        DecisionsConfig(), ledger, env.clock, host_addresses=no_hosts, trusted_proxies=[proxy]
    )
    d = engine.decide(finding("10.0.0.2", detector="http_auth"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (10.0.0.2/32)")
    with pytest.raises(ValueError, match=r"is allowlisted \(10.0.0.2/32\)"):
        engine.manual_ban("10.0.0.0/24", 60, "x", "root")
    banned = engine.decide(finding("10.0.0.3"))
    engine.reconfigure(DecisionsConfig(), [proxy, ipaddress.ip_network("10.0.0.3/32")])
    assert engine.expire() == [banned]
    engine.reconfigure(DecisionsConfig(ban_ttl="2h"))
    assert engine.decide(finding("10.0.0.2")).action is Action.NONE


def test_expire_purges_old_history(env: Env) -> None:
    """History older than the retention is purged, at most once per purge interval."""
    engine = env.engine(ledger_retention="7d")
    engine.decide(finding(None))
    engine.expire()
    later = T0 + 8 * DAY
    engine.expire(later)
    assert engine.ledger.counts()[Action.ALERT] == 1
    env.clock.advance(PURGE_INTERVAL_SECONDS)
    engine.expire(later)
    assert engine.ledger.counts()[Action.ALERT] == 0


def test_large_purge_is_split_over_ticks(env: Env) -> None:
    """A purge of more rows than a batch runs one bounded batch per tick (budget spent)
    until done, logs once when done, and the next one starts an interval later."""
    engine = env.engine(ledger_retention="7d")
    for _ in range(7):
        engine.decide(finding(None))
    engine.purge_batch, engine.purge_tick = 3, 0.0
    later = T0 + 8 * DAY
    with capture_logs() as logs:
        counts = []
        for _ in range(4):
            engine.expire(later)
            counts.append(engine.ledger.counts()[Action.ALERT])
    assert counts == [4, 1, 0, 0]
    purged = [e for e in logs if e["event"] == "ledger history purged"]
    assert [e["rows"] for e in purged] == [7]
    engine.decide(finding(None))
    env.clock.advance(PURGE_INTERVAL_SECONDS)
    engine.expire(later + 8 * DAY)
    assert engine.ledger.counts()[Action.ALERT] == 0


# --------------------------------------------------------------------------- metrics, errors


def test_counters(env: Env) -> None:
    """Counters count decisions per action and gauge the bans in force."""
    engine = env.engine()
    engine.decide(finding("203.0.113.1"))
    engine.decide(finding("203.0.113.1"))
    engine.decide(finding(None))
    engine.decide(finding("bad"))
    c = engine.counters()
    assert dict(c.decisions) == {
        **dict.fromkeys(Action, 0),
        Action.BAN: 1,
        Action.ALERT: 1,
        Action.NONE: 2,
    }
    assert c.active_bans == 1
    env.clock.advance(HOUR)
    assert engine.counters().active_bans == 0


def test_ledger_failure_does_not_stop_decisions(env: Env) -> None:
    """When the ledger fails, bans are still decided and enforced; the error is counted."""
    engine = env.engine()
    engine.ledger.close()
    d = engine.decide(finding())
    assert d.action is Action.BAN
    assert engine.active() == [d]
    env.clock.advance(HOUR)
    assert engine.expire() == [d]
    assert engine.counters().ledger_errors >= 3


def test_refused_writes_are_counted_and_flushed_by_expire(env: Env) -> None:
    """Ledger writes refused (read-only) count as ledger errors; expire() writes them later."""
    engine = env.engine()
    engine.ledger._db.execute("PRAGMA query_only = 1")  # sqlite's own SQLITE_READONLY
    d = engine.decide(finding())
    assert d.action is Action.BAN
    assert engine.active() == [d]
    assert engine.counters().ledger_errors == 1
    assert engine.ledger.open_bans() == []
    engine.ledger._db.execute("PRAGMA query_only = 0")
    engine.expire()
    assert [text(b) for b in engine.ledger.open_bans()] == [ATTACKER]
    assert engine.ledger.failing is None


# --------------------------------------------------------------------------- repeats


def test_already_banned_carries_the_ban_expiry_as_quiet_until(env: Env) -> None:
    """A ban and every "already banned" after it name when the ban ends (quiet_until);
    an alert names the end of its ``alert_repeat`` (1h)."""
    engine = env.engine()
    ban = engine.decide(finding())
    assert ban.quiet_until == ban.expires_at == T0 + HOUR
    env.clock.advance(60)
    again = engine.decide(finding(detector="credential_stuffing"))
    assert (again.action, again.quiet_until, text(again)) == (Action.NONE, T0 + HOUR, ATTACKER)
    alert = engine.decide(finding(None))
    assert (alert.action, alert.quiet_until) == (Action.ALERT, T0 + 60 + HOUR)


def test_repeat_answer_is_the_same_as_the_full_path(env: Env) -> None:
    """The remembered "already banned" (second finding on) equals what the full path
    gives: same target (the address, not its /64), reason and counts."""
    engine = env.engine()
    engine.decide(finding("2001:db8::7"))
    first = engine.decide(finding("2001:db8::7"))
    second = engine.decide(finding("2001:db8::7"))
    assert first == second
    until = "already banned until 2025-11-24T17:00:00+00:00"
    assert (text(second), second.reason) == ("2001:db8::7", until)
    assert engine.counters().decisions[Action.NONE] == 2


def test_repeat_answer_forgets_lifted_bans(env: Env) -> None:
    """After the ban expires or is lifted by hand, the next finding bans again."""
    engine = env.engine()
    engine.decide(finding())
    engine.decide(finding())
    env.clock.advance(HOUR)
    engine.expire()
    d = engine.decide(finding())
    assert (d.action, d.offence) == (Action.BAN, 2)
    engine.decide(finding())
    engine.unban(ATTACKER)
    assert engine.decide(finding()).action is Action.BAN


def test_repeat_answer_yields_to_a_new_allowlist(env: Env) -> None:
    """An address allowlisted by a reload is never answered "already banned"."""
    engine = env.engine()
    engine.decide(finding())
    engine.decide(finding())
    engine.reconfigure(DecisionsConfig(allowlist=["203.0.113.0/24"]))
    assert engine.decide(finding()).reason == "allowlisted (203.0.113.0/24)"


def test_held_decisions_are_one_transaction_and_count_as_offences(env: Env) -> None:
    """Between hold and commit the ledger writes nothing; the held ban still counts as
    an offence (escalation) and is in the file after commit."""
    engine = env.engine()
    engine.hold()
    engine.decide(finding())
    env.clock.advance(HOUR)
    engine.expire()  # ends the held ban: the held rows are written first, in order
    engine.hold()
    d = engine.decide(finding())
    assert d.offence == 2
    assert engine.ledger.counts()[Action.BAN] == 1
    engine.commit()
    assert engine.ledger.counts()[Action.BAN] == 2


def test_address_cache_is_bounded_and_keeps_the_newest(env: Env) -> None:
    """The engine remembers at most ADDRESSES_MAX client texts, forgetting the oldest."""
    engine = env.engine()
    clients = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(ADDRESSES_MAX + 10)]
    for client in clients:
        engine.decide(finding(client, severity=Severity.MEDIUM))
    assert len(engine._addresses) == ADDRESSES_MAX
    assert clients[0] not in engine._addresses
    assert clients[-1] in engine._addresses


# --------------------------------------------------------------------------- sweeps


def _counting_forbidden(engine: DecisionEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the target of every ban the engine checks against the allowlist."""
    checked: list[str] = []
    forbidden = engine._forbidden

    def counted(ban: Decision) -> str | None:
        checked.append(text(ban))
        return forbidden(ban)

    monkeypatch.setattr(engine, "_forbidden", counted)
    return checked


def test_a_new_ssh_client_checks_only_the_bans_that_hold_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new SSH session (logged in) lifts its own ban after checking only the bans that
    could hold it (its own and the network bans around it), not every ban in force."""
    clock = FakeClock(T0)
    ssh: list[SshConnection] = []
    engine = DecisionEngine(
        DecisionsConfig(max_bans_per_minute=1000),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=no_hosts,
        ssh_clients=lambda: list(ssh),
    )
    for i in range(200):
        engine.decide(finding(f"198.51.{i // 250}.{i % 250 + 1}"))
    engine.manual_ban("203.0.113.0/24", HOUR, "", "root")
    engine.manual_ban("192.0.2.0/24", HOUR, "", "root")
    checked = _counting_forbidden(engine, monkeypatch)
    ssh.append(SshConnection(canonical_address("198.51.0.7"), 50000, "A 07 1"))
    clock.advance(0.1)  # the last reading is older than the connection
    engine.ssh_login("198.51.0.7", 50000, clock.now())
    clock.advance(2)
    assert [text(d) for d in engine.expire()] == ["198.51.0.7"]
    assert checked == ["198.51.0.7"]
    checked.clear()
    ssh.append(SshConnection(canonical_address("203.0.113.9"), 50001, "A 09 2"))
    clock.advance(0.1)  # the last reading is older than the connection
    engine.ssh_login("203.0.113.9", 50001, clock.now())  # inside a network ban
    clock.advance(2)
    engine.expire()
    assert checked == ["203.0.113.0/24"]
    clock.advance(2)
    engine.expire()  # nothing new: nothing checked
    assert checked == ["203.0.113.0/24"]


def test_a_new_host_address_lifts_the_network_ban_that_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host address that appears inside a banned /64 lifts that /64 (found through the
    network index), and no other ban is checked."""
    clock = FakeClock(T0)
    hosts: list[str] = []
    engine = DecisionEngine(
        DecisionsConfig(),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=lambda: hosts,
    )
    engine.decide(finding("2001:db8:1::5"))
    engine.decide(finding("2001:db8:2::5"))
    engine.decide(finding("198.51.100.4"))
    checked = _counting_forbidden(engine, monkeypatch)
    hosts.append("2001:db8:2::99")
    clock.advance(DecisionsConfig().host_refresh_interval)
    assert [text(d) for d in engine.expire()] == ["2001:db8:2::/64"]
    assert checked == ["2001:db8:2::/64"]


def test_allow_of_a_network_lifts_the_bans_it_overlaps_only(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allow`` lifts the host bans inside the network, the network bans that hold it or
    lie inside it, and nothing else, found by index and integer tests: no ipaddress
    network object is built for the bans in force."""
    engine = env.engine(max_bans_per_minute=1000)
    for client in ("192.0.2.7", "192.0.3.7", "2001:db8:5::1"):
        engine.decide(finding(client))
    engine.manual_ban("192.0.2.128/25", HOUR, "", "root")
    engine.manual_ban("198.51.100.0/24", HOUR, "", "root")
    built: list[str] = []
    network = AddressTarget.network

    def counted(self: AddressTarget) -> Any:
        built.append(self.text)
        return network.__get__(self)

    monkeypatch.setattr(AddressTarget, "network", property(counted))
    lifted = engine.allow("192.0.2.0/24", HOUR, "root")
    assert sorted(text(d) for d in lifted) == ["192.0.2.128/25", "192.0.2.7"]
    lifted = engine.allow("2001:db8:5::/48", HOUR, "root")
    assert [text(d) for d in lifted] == ["2001:db8:5::/64"]
    lifted = engine.allow("198.51.100.77", HOUR, "root")
    assert [text(d) for d in lifted] == ["198.51.100.0/24"]
    assert sorted(text(d) for d in engine.active()) == ["192.0.3.7"]
    assert built == ["192.0.2.0/24", "2001:db8:5::/48", "198.51.100.77"]  # the allows' own


def test_allow_of_a_wide_network_scans_the_host_bans(env: Env) -> None:
    """An allow wider than there are bans finds the host bans inside it by one scan."""
    engine = env.engine(max_bans_per_minute=1000)
    for client in ("10.1.2.3", "10.200.0.1", "11.0.0.1"):
        engine.decide(finding(client))
    lifted = engine.allow("10.0.0.0/8", HOUR, "root")
    assert sorted(text(d) for d in lifted) == ["10.1.2.3", "10.200.0.1"]


@pytest.mark.parametrize(
    "target",
    [
        "203.0.113.7",
        "1.0.0.0/8",
        "169.254.0.0/16",
        "169.0.0.0/8",
        "223.255.255.255",
        "224.0.0.1",
        "0.0.0.0/8",
        "0.1.2.3",
        "240.0.0.0/4",
        "255.255.255.255",
        "2001:db8::/64",
        "2000::/3",
        "64:ff9b::/96",
        "64:ff9b::1",
        "fe80::/64",
        "ff02::1",
        "100::/64",
        "::",
        "fc00::/7",
    ],
)
def test_unbannable_target_agrees_with_the_ipaddress_answer(target: str) -> None:
    """The integer fast path of ``unbannable_target`` gives what the ipaddress checks give."""
    parsed = AddressTarget.parse(target)
    expected = unbannable(parsed.address) if parsed.is_host else unbannable_network(parsed.network)
    assert unbannable_target(parsed) == expected


# --------------------------------------------------------------------------- network bans


def test_an_address_inside_a_network_ban_is_already_banned(env: Env) -> None:
    """After `ban 203.0.113.0/24`, 203.0.113.7 is banned: is_banned says so, a finding
    about it is "already banned ... (by 203.0.113.0/24)", not a second, escalating ban."""
    engine = env.engine()
    engine.manual_ban("203.0.113.0/24", DAY, "botnet", "root")
    assert engine.is_banned("203.0.113.7")
    assert engine.is_banned("203.0.113.0/25")
    assert not engine.is_banned("203.0.114.7")
    d = engine.decide(finding("203.0.113.7"))
    assert d.action is Action.NONE
    assert d.reason == "already banned until 2025-11-25T16:00:00+00:00 (by 203.0.113.0/24)"
    assert engine.decide(finding("203.0.113.7")).reason == d.reason  # the remembered answer
    assert [text(b) for b in engine.active()] == ["203.0.113.0/24"]
    env.clock.advance(DAY)
    engine.expire()
    assert not engine.is_banned("203.0.113.7")
    assert engine.decide(finding("203.0.113.7")).action is Action.BAN


def test_unban_of_an_address_inside_a_network_ban_lifts_nothing(env: Env) -> None:
    """`unban 203.0.113.7` under a /24 ban is refused naming the /24; the /24 stays."""
    engine = env.engine()
    engine.manual_ban("203.0.113.0/24", DAY, "botnet", "root")
    with pytest.raises(ValueError, match=r"inside the ban of 203\.0\.113\.0/24 until"):
        engine.unban("203.0.113.7", who="root")
    assert [text(b) for b in engine.active()] == ["203.0.113.0/24"]
    assert engine.unban("203.0.113.0/24", who="root") is not None
    assert engine.unban("203.0.113.7", who="root") is None


# --------------------------------------------------------------------------- clock steps


def test_a_wall_clock_step_back_does_not_extend_bans(env: Env) -> None:
    """After the wall clock steps back a day, a 1h ban still ends 1h after it was decided
    (by the monotonic clock), in memory and in the ledger a restart reads; the step is
    logged once, and a step forward changes nothing."""
    engine = env.engine()
    ban = engine.decide(finding())
    assert ban.expires_at == T0 + HOUR
    env.clock.advance(600)
    env.clock.set(T0 + 600 - DAY)
    with capture_logs() as logs:
        assert engine.expire() == []
        engine.expire()
    steps = [e for e in logs if e["event"].startswith("wall clock stepped back")]
    assert [(e["seconds"], e["bans"]) for e in steps] == [(DAY, 1)]
    [held] = engine.active()
    assert held.expires_at == T0 + HOUR - DAY
    assert [d.expires_at for d in env.engine().active()] == [T0 + HOUR - DAY]  # a restart
    assert engine.decide(finding()).reason.startswith("already banned until")
    env.clock.set(T0 + 3000 - DAY)  # forward: bans end by the wall clock as they are
    env.clock.advance(HOUR - 3000 - 1)
    assert engine.expire() == []
    env.clock.advance(1)
    assert [text(d) for d in engine.expire()] == [ATTACKER]


def test_a_step_back_while_stopped_leaves_bans_and_allows_the_time_they_had_left(
    env: Env,
) -> None:
    """A wall clock stepped back a day while the daemon was stopped: at the start the 1h
    ban and the 1h allow keep the time they had left when it last looked (logged once),
    in the ledger too, so a later restart does not lengthen them again; a restart without
    a step changes nothing."""
    engine = env.engine()
    engine.decide(finding())
    engine.allow("198.51.100.7", HOUR, "alice")
    env.clock.advance(600)
    assert [d.expires_at for d in env.engine().active()] == [T0 + HOUR]  # no step: as it was
    env.clock.set(T0 + 600 - DAY)
    with capture_logs() as logs:
        started = env.engine()
    steps = [e for e in logs if e["event"].startswith("wall clock behind the ledger")]
    assert [e["capped"] for e in steps] == [2]
    now = env.clock.now()
    assert [d.expires_at for d in started.active()] == [now + HOUR - 600]
    assert [e.expires_at for e in started.allow_entries()] == [now + HOUR - 600]
    env.clock.advance(1800)
    with capture_logs() as logs:
        again = env.engine()
    assert not [e for e in logs if e["event"].startswith("wall clock behind the ledger")]
    assert [d.expires_at for d in again.active()] == [now + HOUR - 600]
    assert [e.expires_at for e in again.allow_entries()] == [now + HOUR - 600]


def test_a_step_back_while_stopped_never_brings_back_an_ended_allow_or_ban(env: Env) -> None:
    """A 1h allow and a 1h ban that ended before the stop stay ended after a start on a
    clock stepped back a day: the allow is not in force, the ban is lifted at the first
    expire; an allow with 1h of its 24h left keeps 1h, not 24h."""
    engine = env.engine()
    engine.allow("198.51.100.7", HOUR, "alice")
    engine.allow("198.51.100.0/24", DAY, "alice")
    engine.decide(finding())
    env.clock.advance(HOUR + 60)
    engine.expire()
    env.clock.advance(DAY - 2 * HOUR - 60)  # the daemon ticks every second
    engine.expire()
    assert [e.expires_at for e in engine.allow_entries()] == [T0 + DAY]
    env.clock.set(env.clock.now() - DAY)
    started = env.engine()
    now = env.clock.now()
    assert [(str(e.network), e.expires_at) for e in started.allow_entries()] == [
        ("198.51.100.0/24", now + HOUR)
    ]
    assert started.decide(finding()).action is Action.BAN  # its old ban had ended


def test_an_unticked_ban_that_ended_before_the_stop_is_lifted_after_a_step_back(
    env: Env,
) -> None:
    """A ban 1s from its end at the daemon's last tick (then a crash) is lifted by the
    first expire a second after a start on a clock stepped back a day, not held for
    another hour."""
    engine = env.engine()
    engine.decide(finding())
    env.clock.advance(HOUR - 90)
    engine.expire()
    env.clock.advance(89)
    engine.expire()  # its last tick, a second before the ban's end, then a crash
    env.clock.set(env.clock.now() - DAY)
    started = env.engine()
    [held] = started.active()
    assert held.expires_at == env.clock.now() + 1
    env.clock.advance(1)
    assert [text(d) for d in started.expire()] == [ATTACKER]


def test_an_operator_ban_and_allow_made_before_a_step_is_noticed_keep_their_time(
    env: Env,
) -> None:
    """An operator's 1h ban and 2h allow, made on a clock just stepped back a day that the
    engine has not followed yet, still last 1h and 2h: the next expire ends neither."""
    engine = env.engine()
    env.clock.advance(5)
    engine.expire()
    env.clock.set(env.clock.now() - DAY)
    now = env.clock.now()
    engine.manual_ban("203.0.113.50", HOUR, "x", "op")
    engine.allow("198.51.100.0/24", 2 * HOUR, "op")
    env.clock.advance(10)
    assert engine.expire() == []
    assert [d.expires_at for d in engine.active()] == [now + HOUR]
    assert [e.expires_at for e in engine.allow_entries()] == [now + 2 * HOUR]
    assert [d.expires_at for d in env.engine().active()] == [now + HOUR]  # a restart


def test_a_wall_clock_step_back_does_not_extend_a_runtime_allow(env: Env) -> None:
    """After the wall clock steps back a day, an operator's 1h allow still ends 1h after
    it was given (by the monotonic clock), in memory and in the ledger a restart reads;
    then the address is banned again."""
    engine = env.engine()
    engine.allow(ATTACKER, HOUR, "alice", "pentest")
    env.clock.advance(600)
    env.clock.set(T0 + 600 - DAY)
    with capture_logs() as logs:
        engine.expire()
    steps = [e for e in logs if e["event"].startswith("wall clock stepped back")]
    assert [(e["seconds"], e["allows"]) for e in steps] == [(DAY, 1)]
    assert [e.expires_at for e in engine.allow_entries()] == [T0 + HOUR - DAY]
    assert [e.expires_at for e in env.engine().allow_entries()] == [T0 + HOUR - DAY]
    env.clock.advance(HOUR - 600 - 1)
    engine.expire()
    assert engine.decide(finding()).action is Action.NONE
    env.clock.advance(1)
    engine.expire()
    assert engine.allow_entries() == []
    assert engine.decide(finding()).action is Action.BAN
