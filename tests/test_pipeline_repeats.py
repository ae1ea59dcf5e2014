"""Repeat findings: a key acted on stays quiet until its ban ends, then escalates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import pytest

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector, DetectorConfigBase
from aisentinel.events import Action, Decision, Event, Finding, LineBatch
from aisentinel.pipeline import Pipeline

T0 = 1_764_000_000.0
ATTACKER = "203.0.113.7"


def ssh_line(ts: float, client: str, pid: int) -> str:
    """A failed-password sshd line in RFC 3339 form (no year to infer)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))
    return f"{stamp} host sshd[{pid}]: Failed password for root from {client} port 22 ssh2"


class Run:
    """A pipeline with every default detector, its findings and decisions."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        simulate: bool = False,
        detectors: dict[str, object] | None = None,
        **decisions: object,
    ) -> None:
        self.clock = FakeClock(T0)
        self.findings: list[Finding] = []
        self.decisions: list[Decision] = []
        engine = DecisionEngine(
            DecisionsConfig.model_validate({"simulate": simulate, **decisions}),
            Ledger(tmp_path / "l.sqlite", self.clock),
            self.clock,
        )
        self.pipeline = Pipeline(
            detectors=build_detectors(detectors or {}),
            engine=engine,
            runner=None,
            clock=self.clock,
            on_finding=self.findings.append,
            on_decision=self.decisions.append,
        )

    def failures(self, start: float, n: int, client: str = ATTACKER) -> None:
        """``n`` failed passwords from ``client``, one a second from ``start``; the
        clock follows the log."""
        self.clock.set(start)
        lines = [ssh_line(start + i, client, 100 + i) for i in range(n)]
        self.pipeline.process(LineBatch("auth", "sshd", lines, 0.0))


def test_banned_key_is_quiet_until_the_ban_ends_then_escalates(tmp_path: Path) -> None:
    """After a ban, a storm from the address makes no finding (counted as quieted)
    however many windows it spans; once the ban expired it is found again and banned
    for longer."""
    run = Run(tmp_path)
    run.failures(T0, 5)
    assert [(d.action, d.offence) for d in run.decisions] == [(Action.BAN, 1)]
    for k in range(1, 6):  # five more windows' worth of failures while banned
        run.failures(T0 + k * 601, 20)
    assert len(run.findings) == 1
    assert run.pipeline.quieted["ssh_bruteforce"] == 5
    run.clock.set(T0 + 3601)
    run.pipeline.expire(T0 + 3601)
    run.failures(T0 + 3700, 5)
    assert [(d.action, d.offence, d.ttl) for d in run.decisions[1:]] == [
        (Action.BAN, 2, 4 * 3600.0)
    ]


def test_a_banned_address_is_quiet_for_every_detector_and_no_other_key(tmp_path: Path) -> None:
    """Another address is found as usual while one is banned; another detector's
    findings about the banned address are held back too (counted), with no decision."""
    run = Run(tmp_path)
    run.failures(T0, 5)
    run.failures(T0 + 10, 5, client="198.51.100.9")
    assert [d.target.text for d in run.decisions if d.target] == [ATTACKER, "198.51.100.9"]
    users = [
        ssh_line(T0 + 700 + i, ATTACKER, 300 + i).replace("for root", f"for user{i}")
        for i in range(12)
    ]
    run.clock.set(T0 + 700)
    run.pipeline.process(LineBatch("auth", "sshd", users, 0.0))
    later = [line.replace("16:11:", "16:23:") for line in users]  # past its window
    run.clock.set(T0 + 1420)
    run.pipeline.process(LineBatch("auth", "sshd", later, 0.0))
    assert [d.detector for d in run.decisions] == ["ssh_bruteforce", "ssh_bruteforce"]
    assert run.pipeline.quieted["credential_stuffing"] == 2  # both of its crossings


def test_unban_by_hand_lets_the_detector_ban_again(tmp_path: Path) -> None:
    """After ``unban``, the address's next crossing is a new ban, not quiet until the
    lifted ban would have expired."""
    run = Run(tmp_path)
    run.failures(T0, 5)
    assert [d.action for d in run.decisions] == [Action.BAN]
    assert run.pipeline.engine.unban(ATTACKER, who="test") is not None
    run.failures(T0 + 700, 5)  # past the window, long before the lifted ban's end
    again = [(d.action, d.target.text if d.target else None) for d in run.decisions[1:]]
    assert again == [(Action.BAN, ATTACKER)]


def test_simulated_bans_dropped_at_reload_do_not_keep_their_keys_quiet(tmp_path: Path) -> None:
    """Turning ``simulate`` off drops the simulated bans; the next crossing of their
    addresses is a real ban at once."""
    run = Run(tmp_path, simulate=True)
    run.failures(T0, 5)
    assert [(d.action, d.simulated) for d in run.decisions] == [(Action.BAN, True)]
    run.pipeline.engine.reconfigure(DecisionsConfig(simulate=False))
    run.failures(T0 + 700, 5)
    assert [(d.action, d.simulated) for d in run.decisions[1:]] == [(Action.BAN, False)]


def test_unban_mid_window_forgets_the_failures_it_forgave(tmp_path: Path) -> None:
    """After ``unban`` within the detector's window, the address's next failure is not a
    ban on the window the unban forgave (its five failures are forgotten, as fail2ban's
    unbanip resets them); five new ones are a new ban at once, not when the window that
    reported it ends ten minutes later."""
    run = Run(tmp_path)
    run.failures(T0, 5)
    assert run.pipeline.engine.unban(ATTACKER, who="test") is not None
    run.failures(T0 + 30, 1)
    assert run.decisions[1:] == []
    run.failures(T0 + 31, 4)
    again = [(d.action, d.detector) for d in run.decisions[1:]]
    assert again == [(Action.BAN, "ssh_bruteforce")]


def test_brake_reset_bans_a_braked_attacker_at_its_next_failure(tmp_path: Path) -> None:
    """An attacker braked to an alert is banned at its first failure after ``brake
    reset``, not a window later; one already banned stays quiet."""
    run = Run(tmp_path, max_bans_per_minute=1, brake_cooldown="1d")
    run.failures(T0, 5)  # the one ban a minute
    run.failures(T0 + 10, 5, client="198.51.100.9")  # braked: an alert
    assert [d.action for d in run.decisions] == [Action.BAN, Action.ALERT]
    assert run.pipeline.engine.reset_brake("test")
    run.failures(T0 + 20, 1, client="198.51.100.9")
    quieted = run.pipeline.quieted["ssh_bruteforce"]
    run.failures(T0 + 21, 1)  # still banned: held back, no decision
    assert run.pipeline.quieted["ssh_bruteforce"] == quieted + 1
    decided = [(d.action, d.target.text if d.target else None) for d in run.decisions[2:]]
    assert decided == [(Action.BAN, "198.51.100.9")]


def test_new_decisions_table_decides_an_alerted_attacker_at_its_next_failure(
    tmp_path: Path,
) -> None:
    """A reload that takes ssh_bruteforce off ``alert_only_detectors`` bans an attacker it
    alerted on at its next failure, not a window later."""
    run = Run(tmp_path, alert_only_detectors=["ssh_bruteforce"])
    run.failures(T0, 5)
    assert [d.action for d in run.decisions] == [Action.ALERT]
    run.pipeline.engine.reconfigure(DecisionsConfig())
    run.failures(T0 + 30, 1)
    assert [d.action for d in run.decisions[1:]] == [Action.BAN]


def test_unban_of_a_slow_attacker_forgets_its_long_windows(tmp_path: Path) -> None:
    """A slow brute force (long window) unbanned by hand is not banned again at its
    next failure on the hour the unban forgave; going on at its pace it is banned again
    when its new failures cross the long window, not an hour later when the lifted
    report's quiet period ends."""
    run = Run(tmp_path)
    for i in range(10):  # one every 3 minutes: never 5 in 10 minutes, 10 in an hour
        run.failures(T0 + 180 * i, 1)
    assert [d.action for d in run.decisions] == [Action.BAN]
    assert run.pipeline.engine.unban(ATTACKER, who="test") is not None
    for i in range(10, 19):
        run.failures(T0 + 180 * i, 1)
    assert run.decisions[1:] == []
    run.failures(T0 + 180 * 19, 1)  # the tenth since the unban, 27 minutes after it
    assert [(d.action, d.detector) for d in run.decisions[1:]] == [(Action.BAN, "ssh_bruteforce")]


ADMIN = "203.0.113.30"


def _root_under_attack(run: Run, start: float) -> None:
    """The admin's two typos as root, then nine addresses failing twice each as root:
    root is under a distributed attack and the admin is one of its ten clients."""
    run.failures(start, 2, ADMIN)
    for i in range(1, 10):
        run.failures(start + 10 + 2 * i, 2, f"198.51.100.{i}")


def test_unban_of_a_member_is_not_undone_by_the_next_failure_as_its_username(
    tmp_path: Path,
) -> None:
    """An admin banned as a member of a distributed attack on root and unbanned stays
    unbanned when any other client fails as root next (the pre-unban failures no longer
    make it a member); two new failures of its own while root is under attack are a ban
    again, by the usual rule."""
    run = Run(tmp_path)
    _root_under_attack(run, T0)
    members = [d for d in run.decisions if d.target and d.target.text == ADMIN]
    assert [(d.action, d.detector) for d in members] == [(Action.BAN, "credential_stuffing")]
    assert run.pipeline.engine.unban(ADMIN, who="test") is not None
    done = len(run.decisions)
    run.failures(T0 + 60, 1, "198.51.100.77")
    run.failures(T0 + 61, 1, "198.51.100.78")
    assert all(d.target is None or d.target.text != ADMIN for d in run.decisions[done:])
    assert not run.pipeline.engine.is_banned(ADMIN)
    run.failures(T0 + 90, 1, ADMIN)  # one failure: a typo as much as an attack
    assert not run.pipeline.engine.is_banned(ADMIN)
    run.failures(T0 + 95, 1, ADMIN)
    again = [d for d in run.decisions[done:] if d.target and d.target.text == ADMIN]
    assert [(d.action, d.detector) for d in again] == [(Action.BAN, "credential_stuffing")]


def test_unban_of_an_ipv6_address_forgets_its_64(tmp_path: Path) -> None:
    """An IPv6 attacker is counted and banned per /64; ``unban`` of one of its addresses
    lifts the /64 and forgets what was counted under it: another address of the /64
    failing once is no ban, five new failures are."""
    run = Run(tmp_path)
    run.failures(T0, 5, "2001:db8:5:6::7")
    assert [d.target.text for d in run.decisions if d.target] == ["2001:db8:5:6::/64"]
    assert run.pipeline.engine.unban("2001:db8:5:6::7", who="test") is not None
    run.failures(T0 + 30, 1, "2001:db8:5:6::8")
    assert run.decisions[1:] == []
    run.failures(T0 + 31, 4, "2001:db8:5:6::8")
    assert [d.target.text for d in run.decisions[1:] if d.target] == ["2001:db8:5:6::/64"]


def test_unban_of_a_network_forgets_the_addresses_inside_it(tmp_path: Path) -> None:
    """An address counted while an operator's /24 ban covered it is forgotten by the
    ``unban`` of the /24: its next failure is no ban; another address's count outside
    the /24 is kept."""
    run = Run(tmp_path)
    engine = run.pipeline.engine
    engine.manual_ban("203.0.113.0/24", 3600.0, "", "test")
    run.failures(T0, 5)  # covered: found, "already banned"
    run.failures(T0, 4, "198.51.100.9")
    assert [d.action for d in run.decisions] == [Action.NONE]
    assert engine.unban("203.0.113.0/24", who="test") is not None
    run.failures(T0 + 30, 1)
    assert run.decisions[1:] == []
    run.failures(T0 + 31, 1, "198.51.100.9")  # its fifth: kept outside the /24
    assert [d.target.text for d in run.decisions[1:] if d.target] == ["198.51.100.9"]


def test_allow_forgets_what_was_counted_of_the_allowed(tmp_path: Path) -> None:
    """``aisentinel allow`` lifts the ban and forgives it: once the allow ended, the
    address's next failure is counted from nothing, not a ban on the failures before
    the allow."""
    run = Run(tmp_path)
    run.failures(T0, 5)
    lifted = run.pipeline.engine.allow(ATTACKER, 60.0, "test")
    assert [d.target.text for d in lifted if d.target] == [ATTACKER]
    run.clock.set(T0 + 120)
    run.pipeline.expire(T0 + 120)
    run.failures(T0 + 120, 1)
    assert [d.action for d in run.decisions] == [Action.BAN]


def _slowly(run: Run, start: float, n: int, client: str = ATTACKER) -> float:
    """``n`` failures from ``client``, one every 16 minutes from ``start`` (under every
    fast and 1h window, 20 of them cross the day's), expiring as the daemon does; the
    time after the last."""
    for i in range(n):
        ts = start + 960 * i
        run.pipeline.expire(ts)
        run.failures(ts, 1, client)
    return start + 960 * n


def test_a_slow_attacker_back_from_its_ban_is_banned_again_within_hours(tmp_path: Path) -> None:
    """A slow attacker banned by the day's window and back at the same pace after its
    1h ban is banned again after 20 more failures (5h20m), not a day after the first
    report; none while its ban is in force."""
    run = Run(tmp_path)
    end = _slowly(run, T0, 20)
    assert [(d.action, d.offence) for d in run.decisions] == [(Action.BAN, 1)]
    first = run.decisions[0]
    assert first.expires_at is not None
    run.failures(first.expires_at - 10, 1)  # during the ban: quiet
    assert len(run.decisions) == 1
    back = max(end, first.expires_at + 60)
    _slowly(run, back, 20)
    assert [(d.action, d.offence) for d in run.decisions[1:]] == [(Action.BAN, 2)]
    assert run.decisions[1].ts - back < 6 * 3600


def test_a_fast_attacker_back_slowly_from_its_ban_is_banned_again(tmp_path: Path) -> None:
    """A client banned by the fast window that comes back slowly after its ban is
    reported by the long windows (they count it afresh from the ban's end), not first
    a day after the fast report; an IPv6 client the same, counted and banned per /64."""
    for client in (ATTACKER, "2001:db8:5:6::7"):
        run = Run(tmp_path / client.replace(":", "_"))
        run.failures(T0, 5, client)
        assert [d.action for d in run.decisions] == [Action.BAN]
        expires = run.decisions[0].expires_at
        assert expires is not None
        _slowly(run, expires + 60, 20, client.replace("::7", "::8"))
        assert [(d.action, d.offence) for d in run.decisions[1:]] == [(Action.BAN, 2)], client


def test_a_wave_of_ended_bans_reaches_each_detector_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bans ending together reach each detector as one bans_ended call with every key."""
    run = Run(tmp_path)
    clients = ["203.0.113.7", "203.0.113.8", "2001:db8:5:6::7"]
    for client in clients:
        run.failures(T0, 5, client)
    assert len(run.decisions) == 3
    calls: list[tuple[str, list[str]]] = []
    for detector in run.pipeline.detectors:
        monkeypatch.setattr(
            detector,
            "bans_ended",
            lambda keys, name=detector.name: calls.append((name, list(keys))),
        )
    expires = max(d.expires_at or 0.0 for d in run.decisions)
    run.pipeline.expire(expires + 1)
    keys = ["2001:db8:5:6::/64", "203.0.113.7", "203.0.113.8"]
    assert calls == [(d.name, keys) for d in run.pipeline.detectors]


class _PerKey(Detector):
    """A plug-in that overrides ban_ended only."""

    name: ClassVar[str] = "per_key"

    def __init__(self) -> None:
        super().__init__(DetectorConfigBase())
        self.ended: list[str] = []

    def observe(self, event: Event) -> Finding | None:
        return None

    def expire(self, now: float) -> int:
        return 0

    def tracked_keys(self) -> int:
        return 0

    def ban_ended(self, key: str) -> None:
        self.ended.append(key)


def test_a_detector_overriding_ban_ended_still_gets_each_key() -> None:
    """The default bans_ended calls an overridden ban_ended once per key."""
    detector = _PerKey()
    detector.bans_ended(["192.0.2.1", "192.0.2.2"])
    assert detector.ended == ["192.0.2.1", "192.0.2.2"]
