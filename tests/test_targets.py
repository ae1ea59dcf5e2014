"""Typed targets: addresses and networks, workloads, IPv6 grouping, the workload
allowlist, actions by policy, the ledger's target kinds and its in-place migration."""

from __future__ import annotations

import ipaddress
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aisentinel.clock import FakeClock
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.allowlist import WorkloadAllowlist, image_reference
from aisentinel.decisions.ledger import SCHEMA_VERSION
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Finding,
    Severity,
    TargetKind,
    WorkloadKey,
    WorkloadTarget,
    canonical_network,
    decision_fields,
)

T0 = 1_764_000_000.0
HOUR = 3600.0

OLLAMA = WorkloadTarget(
    WorkloadKey.CONTAINER,
    "3f2a9c1d7e00",
    name="ollama",
    container="ollama",
    image="ollama/ollama:0.5.7",
    exe="/bin/ollama",
)
MINER = WorkloadTarget(WorkloadKey.PID, "4242", name="xmrig", exe="/tmp/.x/xmrig")


def finding(
    client: str | None = None,
    *,
    target: WorkloadTarget | AddressTarget | None = None,
    severity: Severity = Severity.HIGH,
    detector: str = "gpu_abuse",
) -> Finding:
    return Finding(
        ts=T0,
        detector=detector,
        severity=severity,
        client=client,
        key=client or (target.text if target else "k"),
        count=3,
        window=60.0,
        message="m",
        target=target,
    )


class Env:
    """A clock and a ledger path; engines over it."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(T0)
        self.path = tmp_path / "decisions.sqlite3"

    def engine(self, hosts: tuple[str, ...] = (), **config: Any) -> DecisionEngine:
        return DecisionEngine(
            DecisionsConfig(**config),
            Ledger(self.path, self.clock),
            self.clock,
            host_addresses=lambda: hosts,
        )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "canonical", "host"),
    [
        ("203.0.113.7", "203.0.113.7", True),
        ("::ffff:203.0.113.7", "203.0.113.7", True),
        ("2001:DB8:0::5", "2001:db8::5", True),
        ("fe80::1%eth0", "fe80::1", True),
        ("2001:db8::/64", "2001:db8::/64", False),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8", False),
        ("198.51.100.9/32", "198.51.100.9", True),
    ],
)
def test_address_targets_are_canonical(text: str, canonical: str, *, host: bool) -> None:
    """Any spelling of an address or network gives one canonical text; mapped IPv6 is IPv4."""
    target = AddressTarget.parse(text)
    assert (target.text, target.is_host, target.kind) == (canonical, host, TargetKind.ADDRESS)
    assert AddressTarget.parse(target.text) == target


@pytest.mark.parametrize("text", ["203.0.113.7", "2001:db8::9", "10.0.0.0/8", "2001:db8::/64"])
def test_address_target_forms_agree(text: str) -> None:
    """host(), parse() and the network constructor give equal targets with the same network."""
    net = ipaddress.ip_network(text)
    built = AddressTarget(net)
    parsed = AddressTarget.parse(text)
    assert built == parsed
    assert hash(built) == hash(parsed)
    assert (built.network, built.address, built.prefixlen) == (
        net,
        net.network_address,
        net.prefixlen,
    )
    if built.is_host:
        host = AddressTarget.host(net.network_address)
        assert host == built
        assert host.text == text
        assert host.network == net
    assert {parsed: 1}[built] == 1


def test_address_target_holds_no_network_object() -> None:
    """A host target keeps its address and prefix only: the ipaddress network is built on demand."""
    target = AddressTarget.host(ipaddress.ip_address("198.51.100.9"))
    held = [getattr(target, slot) for slot in type(target).__slots__]
    assert not any(isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network) for v in held)
    assert target.network is not target.network  # built per call, not cached


@pytest.mark.parametrize("text", ["evil.example", "10.0.0.1/8", "", "1.2.3.4/33", "unit:x"])
def test_address_targets_refuse_anything_else(text: str) -> None:
    """Names, CIDRs with host bits set and garbage are a ValueError, never a silent widening."""
    with pytest.raises(ValueError, match=r"."):
        AddressTarget.parse(text)


def test_grouping_widens_ipv6_hosts_only() -> None:
    """An IPv6 host groups to its /64 (or the prefix given); IPv4 and networks stay as they are."""
    assert AddressTarget.parse("2001:db8:1:2:3::9").grouped(64).text == "2001:db8:1:2::/64"
    assert AddressTarget.parse("2001:db8::9").grouped(128).text == "2001:db8::9"
    assert AddressTarget.parse("2001:db8::9").grouped(48).text == "2001:db8::/48"
    assert AddressTarget.parse("203.0.113.7").grouped(64).text == "203.0.113.7"
    assert AddressTarget.parse("2001:db8::/32").grouped(64).text == "2001:db8::/32"


def test_grouping_matches_ipaddress_supernet() -> None:
    """grouped() gives the network ipaddress's supernet gives: address, prefix, text, equality."""
    rng = random.Random(14)
    for _ in range(5000):
        addr = ipaddress.IPv6Address(rng.getrandbits(128))
        prefix = rng.randint(32, 127)
        expected = AddressTarget(ipaddress.ip_network((addr, 128)).supernet(new_prefix=prefix))
        got = AddressTarget.host(addr).grouped(prefix)
        assert (got.address, got.prefixlen, got.text) == (
            expected.address,
            expected.prefixlen,
            expected.text,
        )
        assert got == expected
        assert got.network == expected.network
        assert AddressTarget.parse(got.text) == got


def test_workload_targets_are_validated_and_keyed() -> None:
    """A workload's text is identified_by:id; bad pids and unprintable names are refused."""
    assert (OLLAMA.text, OLLAMA.display, OLLAMA.kind) == (
        "container:3f2a9c1d7e00",
        "ollama",
        TargetKind.WORKLOAD,
    )
    assert WorkloadTarget(WorkloadKey.UNIT, "ollama.service").display == "ollama.service"
    assert WorkloadTarget.from_fields(OLLAMA.fields()) == OLLAMA
    with pytest.raises(ValueError, match="pid is decimal digits"):
        WorkloadTarget(WorkloadKey.PID, "12; rm -rf /")
    with pytest.raises(ValueError, match="printable"):
        WorkloadTarget(WorkloadKey.CONTAINER, "abc", name="bad\u2028name")
    with pytest.raises(ValueError, match="longer than"):
        WorkloadTarget(WorkloadKey.CGROUP, "/" + "x" * 600)
    with pytest.raises(ValueError, match="unknown workload fields"):
        WorkloadTarget.from_fields({"identified_by": "pid", "id": "1", "evil": "x"})


def test_decision_fields_show_target_kind_and_text() -> None:
    """Replay's JSON names the target's kind and text, and a workload's fields."""
    d = Decision(T0, Action.FREEZE, MINER, "gpu_abuse", Severity.HIGH, "r", HOUR, T0 + HOUR)
    fields = decision_fields(d)
    assert (fields["target"], fields["target_kind"]) == ("pid:4242", "workload")
    assert fields["workload"] == {
        "identified_by": "pid",
        "id": "4242",
        "name": "xmrig",
        "exe": "/tmp/.x/xmrig",
    }
    net = AddressTarget.parse("2001:db8::/64")
    fields = decision_fields(Decision(T0, Action.BAN, net, "x", Severity.HIGH, "r"))
    assert (fields["target"], fields["target_kind"], "workload" in fields) == (
        "2001:db8::/64",
        "address",
        False,
    )


# --------------------------------------------------------------------------- IPv6 grouping


def test_two_addresses_in_one_64_get_one_ban(env: Env) -> None:
    """A finding about 2001:db8::1 bans 2001:db8::/64; a second address in it is already banned."""
    engine = env.engine()
    first = engine.decide(finding("2001:db8::1", detector="ssh_bruteforce"))
    second = engine.decide(finding("2001:db8::ffff:2", detector="ssh_bruteforce"))
    assert (first.action, first.target) == (Action.BAN, AddressTarget.parse("2001:db8::/64"))
    assert second.action is Action.NONE
    assert second.reason.startswith("already banned until")
    assert second.target == AddressTarget.parse("2001:db8::ffff:2")
    assert [d.target for d in engine.active()] == [first.target]
    assert engine.is_banned("2001:db8::abcd")
    assert not engine.is_banned("2001:db8:0:1::1")


def test_ipv6_ban_prefix_is_configurable(env: Env) -> None:
    """``ipv6_ban_prefix = 128`` bans the single address; /48 bans the /48."""
    d = env.engine(ipv6_ban_prefix=128).decide(finding("2001:db8::1", detector="x"))
    assert d.target == AddressTarget.parse("2001:db8::1")
    env.path.unlink()
    d = env.engine(ipv6_ban_prefix=48).decide(finding("2001:db8:0:7::1", detector="x"))
    assert d.target == AddressTarget.parse("2001:db8::/48")
    for bad in (31, 129):
        with pytest.raises(ValidationError, match="ipv6_ban_prefix"):
            DecisionsConfig(ipv6_ban_prefix=bad)


def test_allowlist_wins_inside_a_banned_64(env: Env) -> None:
    """A /64 holding an allowlisted address (or this host's) is not banned: the /128 is."""
    engine = env.engine(allowlist=["2001:db8::10/128"])
    d = engine.decide(finding("2001:db8::66", detector="x"))
    assert (d.action, d.target) == (Action.BAN, AddressTarget.parse("2001:db8::66"))
    assert "2001:db8::/64 holds allowlisted 2001:db8::10/128" in d.reason
    allowed = engine.decide(finding("2001:db8::10", detector="x"))
    assert (allowed.action, allowed.reason) == (Action.NONE, "allowlisted (2001:db8::10/128)")
    host = env.engine(hosts=("2001:db8:5::1",)).decide(finding("2001:db8:5::99", detector="x"))
    assert host.target == AddressTarget.parse("2001:db8:5::99")


def test_unban_by_any_address_in_the_banned_64(env: Env) -> None:
    """A manual unban of an address lifts the /64 ban that covers it."""
    engine = env.engine()
    ban = engine.decide(finding("2001:db8::1", detector="x"))
    assert engine.unban("2001:db8::1") == ban
    assert engine.active() == []


def test_restored_64_ban_is_lifted_when_it_covers_a_newly_allowlisted_address(env: Env) -> None:
    """After a restart with an allowlisted address inside a banned /64, that ban is lifted."""
    ban = env.engine().decide(finding("2001:db8::1", detector="x"))
    engine = env.engine(allowlist=["2001:db8::7/128"])
    assert engine.active() == []
    assert engine.expire() == [ban]


# --------------------------------------------------------------------------- workloads


def test_workload_finding_is_an_alert_by_default(env: Env) -> None:
    """A finding about a workload is no "invalid address": it is an alert naming the workload."""
    engine = env.engine()
    d = engine.decide(finding(target=OLLAMA))
    assert (d.action, d.target) == (Action.ALERT, OLLAMA)
    assert d.reason == "workload action is alert (throttle and freeze are off)"
    assert engine.counters().rejected["invalid"] == 0


def test_workload_policy_throttles_and_freezes(env: Env) -> None:
    """``workload_action`` and per-detector ``workload_actions`` pick throttle or freeze,
    with the ban TTL and escalation; a second finding is "already frozen"."""
    engine = env.engine(workload_action="throttle", workload_actions={"miner": "freeze"})
    throttled = engine.decide(finding(target=OLLAMA))
    assert (throttled.action, throttled.ttl) == (Action.THROTTLE, HOUR)
    assert throttled.reason.endswith("throttle for 1h")
    frozen = engine.decide(finding(target=MINER, detector="miner"))
    assert frozen.action is Action.FREEZE
    again = engine.decide(finding(target=MINER, detector="miner"))
    assert (again.action, again.reason[:21]) == (Action.NONE, "already frozen until ")
    low = engine.decide(
        finding(target=WorkloadTarget(WorkloadKey.UNIT, "x.service"), severity=Severity.LOW)
    )
    assert low.action is Action.ALERT
    assert [d.target for d in engine.active()] == [OLLAMA, MINER]
    assert engine.unban("pid:4242") == frozen


@pytest.mark.parametrize(
    ("allow", "target", "why"),
    [
        (
            {"units": ["ollama*.service"]},
            WorkloadTarget(WorkloadKey.UNIT, "ollama.service"),
            "unit",
        ),
        ({"containers": ["oll?ma"]}, OLLAMA, "container oll?ma"),
        ({"images": ["ollama/ollama:*"]}, OLLAMA, "image ollama/ollama:*"),
        ({"executables": ["/bin/*"]}, OLLAMA, "executable /bin/*"),
        (
            {"units": ["vllm.service"]},
            WorkloadTarget(WorkloadKey.PID, "7", unit="vllm.service"),
            "unit vllm.service",
        ),
    ],
)
def test_workload_allowlist_wins(
    env: Env, allow: dict[str, list[str]], target: Any, why: str
) -> None:
    """An allowlisted workload (unit, container, image, executable; globs) gets NONE, counted."""
    engine = env.engine(workload_action="freeze", workload_allowlist=allow)
    d = engine.decide(finding(target=target))
    assert d.action is Action.NONE
    assert d.reason.startswith(f"allowlisted ({why}")
    assert engine.counters().rejected["workload_allowlisted"] == 1


def test_workload_allowlist_matches_nothing_it_does_not_know() -> None:
    """A field the target lacks matches no pattern, and a near miss does not match."""
    allow = WorkloadAllowlist(images=["*"], units=["ollama.service"])
    assert allow.match(MINER) is None
    assert allow.match(WorkloadTarget(WorkloadKey.UNIT, "ollama.service.d")) is None
    assert allow.match(OLLAMA) == "image *"


HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ("ollama/ollama", "ollama/ollama:latest"),
        ("docker.io/ollama/ollama:0.5.7", "ollama/ollama:0.5.7"),
        ("index.docker.io/library/ubuntu", "ubuntu:latest"),
        ("docker.io/library/nginx:1.27", "nginx:1.27"),
        (f"ollama/ollama@sha256:{HEX}", f"ollama/ollama@sha256:{HEX}"),
        (f"ollama/ollama:0.5.7@sha256:{HEX}", f"ollama/ollama:0.5.7@sha256:{HEX}"),
        ("registry.local:5000/team/llm:1", "registry.local:5000/team/llm:1"),
        ("registry.local:5000/team/llm", "registry.local:5000/team/llm:latest"),
        ("ghcr.io/library/x", "ghcr.io/library/x:latest"),
    ],
)
def test_image_reference_is_normalised(image: str, reference: str) -> None:
    """Docker Hub's registry and library/ go, :latest is added without tag or digest, a
    digest stays, and a registry's port is not taken for a tag."""
    assert image_reference(image) == reference


@pytest.mark.parametrize(
    ("image", "pattern"),
    [
        ("ollama/ollama", "ollama/ollama:*"),
        ("docker.io/ollama/ollama:0.5.7", "ollama/ollama:*"),
        (f"docker.io/ollama/ollama@sha256:{HEX}", "ollama/ollama@sha256:*"),
        ("registry.local:5000/team/llm", "registry.local:5000/team/llm:latest"),
    ],
)
def test_the_images_allowlist_matches_the_normalised_reference(image: str, pattern: str) -> None:
    """``images`` patterns match the image as its normalised reference, so the documented
    ``ollama/ollama:*`` allows a container started as ``docker run ollama/ollama``."""
    target = WorkloadTarget(WorkloadKey.CONTAINER, "3f2a9c1d7e00", name="llm", image=image)
    assert WorkloadAllowlist(images=[pattern]).match(target) == f"image {pattern}"
    assert WorkloadAllowlist(images=["docker.io/*", "*:1"]).match(target) is None


@pytest.mark.parametrize("pattern", ["ollama/ollama", "docker.io/ollama/ollama:latest"])
def test_an_exact_images_pattern_is_normalised_as_the_image_is(pattern: str) -> None:
    """An ``images`` entry without glob characters allows the image however either is spelled."""
    target = WorkloadTarget(WorkloadKey.CONTAINER, "3f2a9c1d7e00", image="ollama/ollama")
    assert WorkloadAllowlist(images=[pattern]).match(target) == "image ollama/ollama:latest"
    other = WorkloadTarget(WorkloadKey.CONTAINER, "3f2a9c1d7e01", image="ollama/ollama:0.5.7")
    assert WorkloadAllowlist(images=[pattern]).match(other) is None


def test_workload_enforcement_survives_a_restart(env: Env) -> None:
    """A freeze is stored with its workload fields and restored as the same target."""
    frozen = env.engine(workload_action="freeze").decide(finding(target=MINER))
    restored = env.engine(workload_action="freeze").active()
    assert restored == [frozen]
    assert restored[0].target == MINER
    assert isinstance(restored[0].target, WorkloadTarget)
    assert restored[0].target.exe == "/tmp/.x/xmrig"


def test_restored_freeze_of_a_newly_allowlisted_workload_is_lifted(env: Env) -> None:
    """A workload allowlisted since its freeze is handed back for lifting after restart."""
    frozen = env.engine(workload_action="freeze").decide(finding(target=MINER))
    engine = env.engine(workload_allowlist={"executables": ["/tmp/.x/*"]})
    assert engine.active() == []
    assert engine.expire() == [frozen]


# --------------------------------------------------------------------------- ledger


OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detector TEXT NOT NULL,
    severity INTEGER NOT NULL,
    reason TEXT NOT NULL,
    ttl REAL,
    expires_at REAL,
    offence INTEGER NOT NULL,
    simulated INTEGER NOT NULL,
    evidence_count INTEGER NOT NULL,
    ended_at REAL,
    forgiven INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_target_ts ON decisions (target, ts);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (expires_at)
    WHERE action = 'ban' AND ended_at IS NULL;
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
"""
"""The version 1 schema, copied from the ledger as it was before targets had kinds."""


def _old_ledger(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("PRAGMA user_version=1")
    rows = [
        (T0 - 10, "ban", "203.0.113.7", "ssh_bruteforce", 40, "r", HOUR, T0 + HOUR, 1, 0, 6),
        # An escalated ban: its ttl is its whole duration (what the engine has always written).
        (T0 - 9, "ban", "2001:db8::5", "http_auth", 40, "r", 2 * HOUR + 9, T0 + 2 * HOUR, 2, 0, 9),
        (T0 - 8, "alert", "198.51.100.1", "scanning", 30, "a", None, None, 1, 0, 3),
        (T0 - 7, "ban", "198.51.100.2", "scanning", 40, "r", HOUR, T0 - 1, 1, 0, 3),
    ]
    db.executemany(
        "INSERT INTO decisions (ts, action, target, detector, severity, reason, ttl, "
        "expires_at, offence, simulated, evidence_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()


def test_old_ledger_is_migrated_in_place_with_bans_intact(env: Env) -> None:
    """A version 1 ledger opens: same file, new schema version, every open ban restored."""
    _old_ledger(env.path)
    engine = env.engine()
    assert [(d.target.text if d.target else "", d.offence) for d in engine.active()] == [
        ("203.0.113.7", 1),
        ("2001:db8::5", 2),
    ]
    assert [d.target.text for d in engine.expire() if d.target] == ["198.51.100.2"]
    assert engine.ledger.offences("2001:db8::5", 0) == 1
    assert engine.ledger.counts()[Action.ALERT] == 1
    engine.ledger.close()
    assert not list(env.path.parent.glob("*.corrupt-*"))
    with sqlite3.connect(env.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        kinds = db.execute("SELECT DISTINCT target_kind FROM decisions").fetchall()
    db.close()
    assert kinds == [("address",)]
    again = env.engine()  # a migrated ledger opens again as is
    assert [d.target.text for d in again.active() if d.target] == ["203.0.113.7", "2001:db8::5"]


def test_ledger_row_with_a_bad_workload_record_is_dropped(env: Env) -> None:
    """A stored workload that cannot be read back is ended with an error, never a crash."""
    env.engine(workload_action="freeze").decide(finding(target=MINER))
    with sqlite3.connect(env.path) as db:
        db.execute("UPDATE decisions SET target_detail = ?", (json.dumps({"id": 1}),))
    db.close()
    engine = env.engine()
    assert engine.active() == []
    assert engine.ledger.open_bans() == []


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.0/8",
        "10.0.0.0/08",
        "2001:DB8:0::/64",
        "1.2.3.4/32",
        "2001:db8::1/128",
        "::ffff:10.0.0.0/104",
        "::ffff:1.2.3.4/128",
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/255.0.0.0",
        "10.0.0.1/8",
        "1.2.3.0/33",
        "2001:db8::/129",
        "10.0.0.0/-1",
        "10.0.0.0/",
        "not/8",
    ],
)
def test_parse_of_a_cidr_matches_the_ipaddress_network(text: str) -> None:
    """``AddressTarget.parse`` of ADDRESS/PREFIX (its integer fast path) gives the target,
    or refuses, exactly as built from ``ipaddress.ip_network(strict=True)``."""
    try:
        expected = AddressTarget(canonical_network(ipaddress.ip_network(text, strict=True)))
    except ValueError:
        with pytest.raises(ValueError, match=r"\S"):
            AddressTarget.parse(text)
        return
    got = AddressTarget.parse(text)
    assert (got, got.text, got.is_host) == (expected, expected.text, expected.is_host)


def test_parse_of_a_stored_cidr_builds_no_network_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's canonical ADDRESS/PREFIX texts are read back without
    ``ipaddress.ip_network`` (40 us each: 100,000 restored network bans took seconds)."""

    def refused(*_args: object, **_kwargs: object) -> Any:
        raise AssertionError("ip_network called")

    monkeypatch.setattr(ipaddress, "ip_network", refused)
    assert AddressTarget.parse("2001:db8:1::/64").text == "2001:db8:1::/64"
    assert AddressTarget.parse("203.0.113.0/24").prefixlen == 24
