"""Firewall model and check: ufw/iptables/nft outputs, and a real nft ruleset in a namespace."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.checks.firewall import firewall_state
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.engine import run_check
from aisentinel.audit.fwstate import (
    BOTH,
    V4,
    V6,
    FirewallParseError,
    Reach,
    merge_families,
    parse_iptables_save,
    parse_nft_json,
    parse_ufw_status,
)
from aisentinel.audit.model import CheckResult, Status
from aisentinel.audit.testing import make_context
from aisentinel.commands import CommandResult, FakeRunner, SubprocessRunner, ToolMissingError

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
UFW = ("ufw", "status", "verbose")
NFT = ("nft", "-j", "list", "ruleset")
IPT = ("iptables", "-S")
IP6T = ("ip6tables", "-S")


def fixture(name: str) -> str:
    """Text of a fixture file."""
    return (FIXTURES / name).read_text()


def answer(argv: tuple[str, ...], stdout: str, rc: int = 0, stderr: str = "") -> CommandResult:
    """A recorded command result."""
    return CommandResult(argv, rc, stdout, stderr)


def test_ufw_active_rules() -> None:
    """ufw: default deny, LIMIT counts as allow, LAN sources restrict, udp/OUT/interface handled."""
    state = parse_ufw_status(fixture("ufw_active.txt"))
    assert state.active
    assert state.default_deny
    assert state.access(22).reach is Reach.OPEN
    lan = state.access(11434)
    assert lan.reach is Reach.RESTRICTED
    assert {str(n) for r in lan.rules for n in r.sources or ()} == {"192.168.1.0/24", "fd00::/8"}
    assert state.access(443).reach is Reach.OPEN  # "Nginx Full" profile
    assert state.access(8080).reach is Reach.OPEN  # 8000:8100 range
    assert state.access(7860).reach is Reach.RESTRICTED  # only on eth1
    assert state.access(53).reach is Reach.CLOSED  # udp only
    assert state.access(5000).reach is Reach.CLOSED  # ALLOW OUT
    assert state.access(11435).reach is Reach.CLOSED


def test_ufw_inactive_and_garbage() -> None:
    """An inactive ufw filters nothing; output without a Status line is a parse error."""
    state = parse_ufw_status(fixture("ufw_inactive.txt"))
    assert not state.active
    assert state.access(11434).reach is Reach.OPEN
    with pytest.raises(FirewallParseError):
        parse_ufw_status("ERROR: You need to be root to run this script")


def test_iptables_drop_policy_and_jumps() -> None:
    """iptables -S: DROP policy, rules in jumped-to chains, multiport, udp and -i lo ignored."""
    state = parse_iptables_save(fixture("iptables_drop.txt"))
    assert state.default_deny
    assert state.access(22, V4).reach is Reach.OPEN
    assert state.access(443, V4).reach is Reach.OPEN
    assert state.access(11434, V4).reach is Reach.RESTRICTED
    assert state.access(8000, V4).reach is Reach.CLOSED
    assert state.access(7860, V4).reach is Reach.RESTRICTED
    assert state.access(3000, V4).reach is Reach.CLOSED
    assert not parse_iptables_save(fixture("iptables_accept.txt")).default_deny


@pytest.mark.parametrize(
    ("rule", "reach"),
    [
        ("-A INPUT -p tcp -m tcp ! --dport 22 -j ACCEPT", Reach.OPEN),
        ("-A INPUT -p tcp -m multiport ! --dports 22,443 -j ACCEPT", Reach.OPEN),
        ("-A INPUT ! -s 10.0.0.0/8 -p tcp -m tcp --dport 11434 -j ACCEPT", Reach.OPEN),
        ("-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 11434 -j ACCEPT", Reach.RESTRICTED),
        ("-A INPUT ! -i eth0 -p tcp -m tcp --dport 11434 -j ACCEPT", Reach.RESTRICTED),
    ],
)
def test_iptables_negated_port_or_source_is_read_as_open(rule: str, reach: Reach) -> None:
    """`! --dport 22` accepts every other port, `! -s NET` every other source: not restricted."""
    state = parse_iptables_save(f"-P INPUT DROP\n{rule}\n")
    assert state.access(11434, V4).reach is reach


def test_ipv4_only_default_deny_leaves_ipv6_open() -> None:
    """iptables -S covers IPv4 only: a port it closes is open over IPv6 until ip6tables drops."""
    v4 = parse_iptables_save(fixture("iptables_drop.txt"))
    assert v4.deny == V4
    closed_v6 = v4.access(8000, V6)
    assert closed_v6.reach is Reach.OPEN
    assert closed_v6.describe() == "IPv6 not filtered (default deny covers IPv4 only)"
    assert v4.access(8000).reach is Reach.OPEN  # both families: the less filtered one
    both = merge_families(v4, parse_iptables_save(fixture("ip6tables_drop.txt"), family=6))
    assert both.deny == BOTH
    assert both.access(8000).reach is Reach.CLOSED
    assert both.access(11434, V4).rules[0].text.startswith("iptables -A SERVICES -s 10.0.0.0/8")
    assert [str(n) for r in both.access(11434, V6).rules for n in r.sources or ()] == ["fd00::/8"]


@pytest.mark.parametrize(
    ("table", "deny"), [("ip", V4), ("ip6", V6), ("inet", BOTH)], ids=["ip", "ip6", "inet"]
)
def test_nft_default_deny_per_table_family(table: str, deny: frozenset[int]) -> None:
    """An nft `table ip` drop policy covers IPv4 only, `ip6` IPv6 only, `inet` both."""
    ruleset = {
        "nftables": [
            {"chain": {"family": table, "table": "filter", "name": "input", "hook": "input",
                       "policy": "drop"}},
            {"rule": {"family": table, "table": "filter", "chain": "input", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                           "right": 22}},
                {"accept": None}]}},
        ]
    }  # fmt: skip
    state = parse_nft_json(json.dumps(ruleset))
    assert state.deny == deny
    assert {f: state.access(11434, frozenset((f,))).reach for f in (4, 6)} == {
        f: Reach.CLOSED if f in deny else Reach.OPEN for f in (4, 6)
    }


@pytest.mark.parametrize(
    ("defaults", "deny"),
    [(None, BOTH), ("IPV6=yes\n", BOTH), ('IPV6="no"\n', V4), ("# IPV6=no\nIPV6=no\n", V4)],
)
def test_ufw_ipv6_setting(defaults: str | None, deny: frozenset[int], tmp_path: Path) -> None:
    """ufw filters IPv6 unless /etc/default/ufw says IPV6=no (absent file: ufw's default, yes)."""
    path = tmp_path / "ufw"
    if defaults is not None:
        path.write_text(defaults)
    runner = FakeRunner({UFW: answer(UFW, fixture("ufw_active.txt"))})
    ctx = make_context(AuditConfig(ufw_defaults=path), runner=runner)
    assert firewall_state(ctx).state.deny == deny
    result = run_check(CHECKS.get("firewall.default-deny").factory, ctx)
    assert result.status is (Status.PASS if deny == BOTH else Status.FAIL)
    if deny == V4:
        assert "IPv6 incoming connections are not dropped by default" in result.evidence


def test_ipv4_only_deny_without_ipv6_on_the_host_passes(tmp_path: Path) -> None:
    """Default deny for IPv4 only passes when the host has no IPv6 (no net/tcp6), saying so."""
    proc = tmp_path / "net"
    proc.mkdir()
    (proc / "tcp").write_text("header\n")
    v4_only = fixture("ruleset.json").replace('"family": "inet"', '"family": "ip"')
    runner = FakeRunner({NFT: answer(NFT, v4_only)})
    ctx = make_context(AuditConfig(proc_root=tmp_path), runner=runner)
    result = run_check(CHECKS.get("firewall.default-deny").factory, ctx)
    assert result.status is Status.PASS
    assert "IPv6 not filtered, but this host has no IPv6 (no net/tcp6)" in result.evidence


def test_nft_json_recorded_from_real_ruleset() -> None:
    """nft JSON (recorded from ruleset.nft): sets, named sets, ranges, jumps, ct state, iif lo."""
    state = parse_nft_json(fixture("ruleset.json"))
    assert state.backend == "nftables"
    assert state.default_deny
    assert state.access(22).reach is Reach.OPEN
    assert state.access(80).reach is Reach.OPEN
    restricted = state.access(7860)
    assert restricted.reach is Reach.RESTRICTED
    assert set(restricted.rules[0].sources or ()) == {
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("10.1.2.3/32"),
    }
    assert state.access(11434).reach is Reach.RESTRICTED
    assert state.access(8000).reach is Reach.OPEN  # ct state new still admits new connections
    assert state.access(8080).reach is Reach.RESTRICTED  # only on eth1 (from the jumped chain)
    assert state.access(3000).reach is Reach.CLOSED
    assert state.access(53).reach is Reach.CLOSED  # udp


def test_nft_not_json_is_parse_error() -> None:
    """Text that is not nft JSON is refused rather than read as an empty ruleset."""
    with pytest.raises(FirewallParseError):
        parse_nft_json("table inet filter {")


def test_check_passes_with_ufw_deny_and_ssh() -> None:
    """Active ufw with default deny and SSH allowed passes, naming the SSH rule."""
    runner = FakeRunner({UFW: answer(UFW, fixture("ufw_active.txt"))})
    result = run_check(CHECKS.get("firewall.default-deny").factory, make_context(runner=runner))
    assert result.status is Status.PASS
    assert any("SSH port 22" in line for line in result.evidence)
    assert runner.calls == [UFW]  # ufw decided: nft and iptables not asked


def test_check_warns_when_default_deny_blocks_ssh() -> None:
    """Default deny without any SSH accept rule warns: remote admin access is blocked."""
    runner = FakeRunner({UFW: answer(UFW, fixture("ufw_no_ssh.txt"))})
    result = run_check(CHECKS.get("firewall.default-deny").factory, make_context(runner=runner))
    assert result.status is Status.WARN
    assert "ufw allow 22/tcp" in result.remediation


def test_check_fails_without_default_deny_and_fix_keeps_ssh_first() -> None:
    """No backend drops by default: fail; the fix allows SSH before enabling the firewall."""
    runner = FakeRunner({
        UFW: answer(UFW, fixture("ufw_allow_default.txt")),
        NFT: answer(NFT, '{"nftables": [{"metainfo": {"version": "1.0.6"}}]}'),
        IPT: answer(IPT, fixture("iptables_accept.txt")),
    })  # fmt: skip
    config = AuditConfig(ssh_ports=(2222,))
    result = run_check(
        CHECKS.get("firewall.default-deny").factory, make_context(config, runner=runner)
    )
    assert result.status is Status.FAIL
    fix = result.remediation
    assert (
        fix.index("ufw allow 2222/tcp")
        < fix.index("ufw default deny incoming")
        < fix.index("ufw enable")
    )


def legacy_iptables_check(ip6tables: str) -> CheckResult:
    """firewall.default-deny with ufw inactive, nft empty, iptables dropping and ``ip6tables``."""
    runner = FakeRunner({
        UFW: answer(UFW, fixture("ufw_inactive.txt")),
        NFT: answer(NFT, '{"nftables": []}'),
        IPT: answer(IPT, fixture("iptables_drop.txt")),
        IP6T: answer(IP6T, fixture(ip6tables)),
    })  # fmt: skip
    return run_check(CHECKS.get("firewall.default-deny").factory, make_context(runner=runner))


def test_iptables_used_when_ufw_and_nft_do_not_deny() -> None:
    """A legacy iptables + ip6tables DROP policy is found after an inactive ufw and an empty nft."""
    result = legacy_iptables_check("ip6tables_drop.txt")
    assert result.status is Status.PASS
    assert result.evidence[0] == "iptables INPUT policy DROP; ip6tables INPUT policy DROP"


def test_iptables_without_ip6tables_drop_fails() -> None:
    """iptables -P INPUT DROP while ip6tables accepts: IPv6 is unfiltered, a fail naming it."""
    result = legacy_iptables_check("iptables_accept.txt")
    assert result.status is Status.FAIL
    assert "IPv6 incoming connections are not dropped by default" in result.evidence
    assert "ip6tables -P INPUT DROP" in result.remediation


def test_no_tool_readable_is_unknown() -> None:
    """Tools missing or refused (not root) make the check unknown, never pass or fail."""
    runner = FakeRunner({
        UFW: answer(UFW, "", 1, "ERROR: You need to be root to run this script"),
        NFT: answer(NFT, "", 1, "Operation not permitted (you must be root)"),
        IPT: ToolMissingError("iptables is not installed"),
    })  # fmt: skip
    result = run_check(CHECKS.get("firewall.default-deny").factory, make_context(runner=runner))
    assert result.status is Status.UNKNOWN
    assert "need to be root" in result.evidence[0]
    assert "iptables is not installed" in result.evidence[0]


# --------------------------------------------------------------------------- real nft


@pytest.fixture
def netns() -> Iterator[str]:
    """A throw-away network namespace (deleted afterwards); skips if not root or no ip netns."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if (
        shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin") is None
        or shutil.which("nft", path="/usr/sbin:/sbin") is None
    ):
        pytest.skip("ip or nft not installed")
    name = f"aisentinel-test-{secrets.token_hex(4)}"
    made = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, timeout=10, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"ip netns add failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(
            ["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False
        )


def load_ruleset(ns: str, path: Path) -> None:
    """Load an nft ruleset file inside namespace ``ns``."""
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=10,
    )


@pytest.mark.root
def test_real_nft_ruleset_in_namespace(netns: str) -> None:
    """A real drop-policy nft ruleset read through `ip netns exec` passes with SSH open."""
    load_ruleset(netns, FIXTURES / "ruleset.nft")
    runner = SubprocessRunner(prefix=("ip", "netns", "exec", netns))
    ctx = make_context(runner=runner)
    result = run_check(CHECKS.get("firewall.default-deny").factory, ctx)
    assert result.status is Status.PASS, result
    state = firewall_state(ctx).state
    assert state.backend == "nftables"
    assert state.access(11434).reach is Reach.RESTRICTED
    assert state.access(3000).reach is Reach.CLOSED


@pytest.mark.root
def test_real_nft_accept_policy_fails_in_namespace(netns: str) -> None:
    """A real accept-policy nft ruleset fails the check (nothing drops by default)."""
    load_ruleset(netns, FIXTURES / "ruleset_open.nft")
    ctx = make_context(runner=SubprocessRunner(prefix=("ip", "netns", "exec", netns)))
    result = run_check(CHECKS.get("firewall.default-deny").factory, ctx)
    assert result.status is Status.FAIL
    assert any("policy accept" in line for line in result.evidence)
