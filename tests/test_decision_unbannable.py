"""Addresses that name no single remote host are never ban targets, and are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily

from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.allowlist import canonical_address
from aisentinel.decisions.engine import REJECT_REASONS, unbannable
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity
from aisentinel.exporter import DecisionMetrics
from aisentinel.responders.base import PartialError
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder

T0 = 1_764_000_000.0
NFT = ("nft", "-j", "-f", "-")


def _finding(client: str) -> Finding:
    return Finding(
        ts=T0,
        detector="ssh_bruteforce",
        severity=Severity.CRITICAL,
        client=client,
        key=client,
        count=50,
        window=600.0,
        message="50 failed logins in 1m",
    )


def _engine(tmp_path: Path, **config: object) -> DecisionEngine:
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "ledger.sqlite", clock)
    return DecisionEngine(DecisionsConfig(**config), ledger, clock, host_addresses=lambda: ())


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.1.2.3", "reserved"),
        ("::1.2.3.4", "reserved"),
        ("169.254.169.254", "link_local"),
        ("fe80::1%eth0", "link_local"),
    ],
)
def test_non_bannable_address_is_refused_and_counted(
    tmp_path: Path, client: str, reason: str
) -> None:
    """A critical finding from a non-host address gives NONE with the reason, counted once."""
    engine = _engine(tmp_path)
    decision = engine.decide(_finding(client))
    assert decision.action is Action.NONE
    assert decision.reason == f"not a bannable address ({reason})"
    assert engine.active() == []
    rejected = engine.counters().rejected
    assert rejected[reason] == 1
    assert sum(rejected.values()) == 1
    assert engine.ledger.offences(str(canonical_address(client)), 0.0) == 0


@pytest.mark.parametrize(
    "client",
    ["203.0.113.7", "192.0.2.9", "10.1.2.3", "100.64.0.1", "2001:db8::7", "64:ff9b::c633:6407"],
)
def test_ordinary_addresses_are_still_banned(tmp_path: Path, client: str) -> None:
    """Public, private, CGNAT, documentation and NAT64 addresses stay bannable."""
    engine = _engine(tmp_path)
    assert engine.decide(_finding(client)).action is Action.BAN
    assert sum(engine.counters().rejected.values()) == 0


def test_mapped_loopback_is_never_banned(tmp_path: Path) -> None:
    """::ffff:127.0.0.1 is read as 127.0.0.1: allowlisted loopback, counted as loopback."""
    engine = _engine(tmp_path, allowlist=[])
    for client in ("::ffff:127.0.0.1", "::ffff:127.1.2.3", "::1", "127.0.0.1"):
        decision = engine.decide(_finding(client))
        assert decision.action is Action.NONE
        assert decision.reason.startswith("allowlisted (")
    assert engine.active() == []
    assert engine.counters().rejected["loopback"] == 4


def test_allowlist_wins_over_the_non_bannable_check(tmp_path: Path) -> None:
    """An allowlisted network keeps its reason even when it also holds non-host addresses."""
    engine = _engine(tmp_path, allowlist=["224.0.0.0/4", "10.0.0.0/8"])
    assert engine.decide(_finding("224.0.0.1")).reason == "allowlisted (224.0.0.0/4)"
    assert engine.decide(_finding("10.0.0.5")).reason == "allowlisted (10.0.0.0/8)"
    rejected = engine.counters().rejected
    assert rejected["allowlisted"] == 2
    assert rejected["multicast"] == 0


def test_invalid_address_is_counted(tmp_path: Path) -> None:
    """A client that is not an address is refused and counted as invalid."""
    engine = _engine(tmp_path)
    assert engine.decide(_finding("not-an-ip")).action is Action.NONE
    assert engine.counters().rejected["invalid"] == 1


def test_every_reason_is_reported_from_zero(tmp_path: Path) -> None:
    """The counters hold every reason (bounded labels), all zero on a fresh engine."""
    assert dict(_engine(tmp_path).counters().rejected) == dict.fromkeys(REJECT_REASONS, 0)


def test_unbannable_names_only_known_reasons() -> None:
    """unbannable() answers None or one of REJECT_REASONS."""
    for text in ("0.0.0.0", "255.255.255.255", "ff02::1", "240.0.0.1", "fe80::1", "8.8.8.8"):
        assert unbannable(canonical_address(text)) in (*REJECT_REASONS, None)


def test_restored_ban_of_a_non_bannable_address_is_lifted(tmp_path: Path) -> None:
    """A ban of 0.0.0.0 left in the ledger by an older version is lifted by the first expire."""
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "ledger.sqlite", clock)
    for target in ("0.0.0.0", "203.0.113.7"):
        ledger.record(
            Decision(
                ts=T0,
                action=Action.BAN,
                target=AddressTarget.parse(target),
                detector="ssh_bruteforce",
                severity=Severity.HIGH,
                reason="old",
                ttl=3600.0,
                expires_at=T0 + 3600.0,
                offence=1,
            )
        )
    ledger.close()
    engine = _engine(tmp_path)
    assert [d.target.text for d in engine.expire() if d.target] == ["0.0.0.0"]
    assert [d.target.text for d in engine.active() if d.target] == ["203.0.113.7"]


def test_exporter_family_has_one_sample_per_reason(tmp_path: Path) -> None:
    """aisentinel_decisions_rejected_total has a reason label and one sample per reason."""
    engine = _engine(tmp_path)
    engine.decide(_finding("255.255.255.255"))
    families = {f.name: f for f in DecisionMetrics(engine.counters).collect()}
    family = families["aisentinel_decisions_rejected"]
    assert isinstance(family, CounterMetricFamily)
    samples = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert samples == {**dict.fromkeys(REJECT_REASONS, 0.0), "broadcast": 1.0}


def test_exporter_serves_the_ledger_size(tmp_path: Path) -> None:
    """aisentinel_ledger_size_bytes is the ledger's bytes on disk, file and WAL."""
    engine = _engine(tmp_path)
    engine.decide(_finding("203.0.113.7"))
    families = {f.name: f for f in DecisionMetrics(engine.counters).collect()}
    (sample,) = families["aisentinel_ledger_size_bytes"].samples
    assert sample.value == engine.ledger.size_bytes() > 0


# --------------------------------------------------------------------------- NAT64

NAT64_A = "64:ff9b::cb00:7107"  # 203.0.113.7 through a NAT64 gateway
NAT64_B = "64:ff9b::c633:6407"  # 198.51.100.7, another client of the same gateway


def test_nat64_clients_are_banned_one_address_each(tmp_path: Path) -> None:
    """A NAT64 address is banned as itself (/128, never its /64, which holds every NAT64
    client), so a second NAT64 attacker is banned too, not "already banned"."""
    engine = _engine(tmp_path)
    first = engine.decide(_finding(NAT64_A))
    second = engine.decide(_finding(NAT64_B))
    assert (first.action, first.target) == (Action.BAN, AddressTarget.parse(NAT64_A))
    assert (second.action, second.target) == (Action.BAN, AddressTarget.parse(NAT64_B))
    assert AddressTarget.parse("64:ff9b:1:2::5").grouped(64).text == "64:ff9b:1:2::5"
    manual = engine.manual_ban("64:ff9b::cb00:7108", 3600.0, "", "root")
    assert manual.target == AddressTarget.parse("64:ff9b::cb00:7108")
    assert engine.unban(NAT64_A) == first
    assert engine.is_banned(NAT64_B)


def test_the_nat64_address_of_an_allowlisted_client_is_never_banned(tmp_path: Path) -> None:
    """An admin allowlisted by IPv4 and seen through a NAT64 gateway is not banned; a
    manual ban of the NAT64 range holding it is refused, a restored one is lifted."""
    engine = _engine(tmp_path, admin_cidrs=["198.51.100.5/32"])
    d = engine.decide(_finding("64:ff9b::198.51.100.5"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (198.51.100.5/32)")
    with pytest.raises(ValueError, match=r"64:ff9b::/96 is allowlisted \(198.51.100.5/32\)"):
        engine.manual_ban("64:ff9b::/96", 3600, "x", "root")
    assert engine.manual_ban("64:ff9b::cb00:7100/120", 3600, "x", "root").action is Action.BAN
    engine.ledger.record(
        Decision(
            T0, Action.BAN, AddressTarget.parse("64:ff9b::c633:6400/120"), "manual",
            Severity.HIGH, "by root", ttl=3600.0, expires_at=T0 + 3600.0,
        )
    )  # fmt: skip
    engine.ledger.close()
    engine = _engine(tmp_path, admin_cidrs=["198.51.100.5/32"])
    assert [str(d.target) for d in engine.expire()] == ["64:ff9b::c633:6400/120"]


def test_restored_nat64_64_ban_is_lifted(tmp_path: Path) -> None:
    """A 64:ff9b::/64 ban an older version made for one NAT64 client is lifted at start."""
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "ledger.sqlite", clock)
    wide = Decision(
        T0, Action.BAN, AddressTarget.parse("64:ff9b::/64"), "ssh_bruteforce", Severity.HIGH,
        "r", ttl=3600.0, expires_at=T0 + 3600.0,
    )  # fmt: skip
    ledger.record(wide)
    engine = DecisionEngine(DecisionsConfig(), ledger, clock, host_addresses=lambda: ())
    assert engine.active() == []
    assert engine.expire() == [wide]


@pytest.mark.parametrize(
    ("network", "detector", "lifted"),
    [
        ("64:ff9b:1:abcd::/64", "ssh_bruteforce", True),  # local-use NAT64 /48
        ("64:ff9b::/96", "http_auth", True),  # ipv6_ban_prefix = 96
        ("64:ff9b::/56", "scanning", True),  # ipv6_ban_prefix = 56
        ("64:ff9b::cb00:7100/120", "manual", False),  # an operator's range ban
        ("64:ff9b:1:abcd::/64", "manual", False),
        ("2001:db8:1:2::/64", "ssh_bruteforce", False),  # an ordinary IPv6 /64
    ],
)
def test_restored_automatic_nat64_network_ban_is_lifted_and_a_manual_one_kept(
    tmp_path: Path, network: str, detector: str, lifted: bool
) -> None:
    """An automatic ban of any NAT64 network an older version made (not only the one whose
    ends are unbannable) is lifted at start; an operator's manual range ban stays."""
    clock = FakeClock(T0)
    ledger = Ledger(tmp_path / "ledger.sqlite", clock)
    wide = Decision(
        T0, Action.BAN, AddressTarget.parse(network), detector, Severity.HIGH,
        "by root" if detector == "manual" else "r", ttl=3600.0, expires_at=T0 + 3600.0,
    )  # fmt: skip
    ledger.record(wide)
    engine = DecisionEngine(DecisionsConfig(), ledger, clock, host_addresses=lambda: ())
    assert engine.expire() == ([wide] if lifted else [])
    assert [d.target for d in engine.active()] == ([] if lifted else [wide.target])


def test_nftables_writes_a_nat64_address_and_refuses_its_64() -> None:
    """The nftables responder's last check agrees with unbannable(): a NAT64 /128 is
    written, the NAT64 /64 (every NAT64 client) is still refused as reserved."""
    runner = FakeRunner({NFT: FakeRunner.ok(NFT)})
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(T0), commands=runner
    )

    def ban(text: str) -> Decision:
        target = AddressTarget.parse(text)
        return Decision(T0, Action.BAN, target, "x", Severity.HIGH, "r", 3600.0, T0 + 3600.0)

    responder.add_many([ban(NAT64_A), ban("64:ff9b::/64")])
    with pytest.raises(PartialError) as err:  # the /128 written, the /64 refused for good
        responder.commit()
    assert err.value.refused == {"64:ff9b::/64"}
    assert responder.refused == 1
    written = {
        elem["elem"]["val"] if isinstance(elem, dict) else elem
        for text in runner.inputs
        for cmd in json.loads(text)["nftables"]
        for elem in cmd.get("add", {}).get("element", {}).get("elem", [])
    }
    assert written == {NAT64_A}
