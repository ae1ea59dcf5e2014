"""Firewall model and check: ufw/iptables/nft outputs, and a real nft ruleset in a namespace."""

from __future__ import annotations

import ipaddress
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
    FirewallParseError,
    Reach,
    parse_iptables_save,
    parse_nft_json,
    parse_ufw_status,
)
from aisentinel.audit.model import Status
from aisentinel.audit.testing import make_context
from aisentinel.commands import CommandResult, FakeRunner, SubprocessRunner, ToolMissingError

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
UFW = ("ufw", "status", "verbose")
NFT = ("nft", "-j", "list", "ruleset")
IPT = ("iptables", "-S")


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
    assert state.access(22).reach is Reach.OPEN
    assert state.access(443).reach is Reach.OPEN
    assert state.access(11434).reach is Reach.RESTRICTED
    assert state.access(8000).reach is Reach.CLOSED
    assert state.access(7860).reach is Reach.RESTRICTED
    assert state.access(3000).reach is Reach.CLOSED
    assert not parse_iptables_save(fixture("iptables_accept.txt")).default_deny


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


def test_iptables_used_when_ufw_and_nft_do_not_deny() -> None:
    """A legacy iptables DROP policy is found after an inactive ufw and an empty nft."""
    runner = FakeRunner({
        UFW: answer(UFW, fixture("ufw_inactive.txt")),
        NFT: answer(NFT, '{"nftables": []}'),
        IPT: answer(IPT, fixture("iptables_drop.txt")),
    })  # fmt: skip
    result = run_check(CHECKS.get("firewall.default-deny").factory, make_context(runner=runner))
    assert result.status is Status.PASS
    assert "iptables" in result.evidence[0]


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
