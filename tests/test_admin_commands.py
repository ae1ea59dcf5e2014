"""Operators' commands on the control socket (bans, unban, ban, allow, brake reset): they
reach the engine and the responder worker, are recorded with who asked, and refuse bad input."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from aisentinel import events
from aisentinel.cli import main
from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.control import CommandError, ControlServer, Peer, request
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.admin import DRY_RUN_ONLY, AdminCommands, render_bans, render_result
from aisentinel.decisions.brakes import SshConnection
from aisentinel.events import Action, Finding, Severity, canonical_address
from aisentinel.responders import DryRunConfig, DryRunResponder, Responder, ResponderRunner
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder

T0 = 1_764_000_000.0
HOST = "192.0.2.10"
SSH_CLIENT = "198.51.100.22"


def finding(client: str) -> Finding:
    return Finding(T0, "ssh_bruteforce", Severity.HIGH, client, client, 6, 600.0, "failures")


@dataclass
class Env:
    clock: FakeClock
    engine: DecisionEngine
    ledger: Ledger
    dryrun: DryRunResponder
    runner: ResponderRunner
    server: ControlServer

    def ask(self, command: str, **fields: Any) -> Any:
        return request(self.server.path, command, **fields)


def _env(
    tmp: Path, *, responders: bool = True, more: Sequence[Responder] = (), **config: Any
) -> Env:
    clock = FakeClock(T0)
    ledger = Ledger(tmp / "l.sqlite", clock)
    ssh = [SshConnection(canonical_address(SSH_CLIENT), 50000, "0A00000A:0016 1664A8C0:C350 7")]
    engine = DecisionEngine(
        DecisionsConfig(**config),
        ledger,
        clock,
        host_addresses=lambda: [HOST],
        ssh_clients=lambda: ssh,
    )
    engine.ssh_login(SSH_CLIENT, 50000, T0)  # sshd's "Accepted ... port 50000"
    dryrun = DryRunResponder(DryRunConfig(), clock=clock)
    runner = ResponderRunner([dryrun, *more] if responders else [], clock)
    runner.start()
    server = ControlServer(tmp / "c.sock")
    for name, handler in AdminCommands(lambda: engine, lambda: runner).handlers().items():
        server.register_with_peer(name, handler)
    server.start()
    return Env(clock, engine, ledger, dryrun, runner, server)


@pytest.fixture
def env() -> Iterator[Env]:
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))  # a socket path is short
    e = _env(tmp)
    yield e
    e.server.stop()
    e.runner.close(1.0)
    e.ledger.close()
    shutil.rmtree(tmp, ignore_errors=True)


def test_peer_handler_gets_the_asking_user() -> None:
    """A command registered with the peer gets SO_PEERCRED's uid and its user name."""
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    server = ControlServer(tmp / "c.sock")
    server.register_with_peer("whoami", lambda _a, p: {"uid": p.uid, "who": p.who})
    server.start()
    try:
        me = Peer.self()
        assert request(server.path, "whoami") == {"uid": me.uid, "who": me.who}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ban_takes_effect_and_is_recorded_with_who(env: Env) -> None:
    """`ban` reaches the responder through the worker, `bans` lists it with who asked, and
    the ledger row names the operator."""
    answer = env.ask("ban", target="203.0.113.9", ttl="2h", reason="scraper")
    assert answer["target"] == "203.0.113.9"
    assert answer["expires_at"] == T0 + 7200
    assert wait_for(lambda: "203.0.113.9" in env.dryrun.banned)
    listed = env.ask("bans")["bans"]
    who = Peer.self().who
    assert [(b["target"], b["detector"], b["who"]) for b in listed] == [
        ("203.0.113.9", "manual", who)
    ]
    [row] = env.ledger.history("203.0.113.9")
    assert row.reason == f"by {who}: scraper"


def test_unban_lifts_and_records_who(env: Env) -> None:
    """`unban` lifts an automatic ban at the responder and leaves a ledger note naming who."""
    d = env.engine.decide(finding("203.0.113.7"))
    env.runner.submit(d)
    assert wait_for(lambda: "203.0.113.7" in env.dryrun.banned)
    assert env.ask("unban", target="203.0.113.7") == {"target": "203.0.113.7", "lifted": True}
    assert wait_for(lambda: "203.0.113.7" not in env.dryrun.banned)
    notes = [r.reason for r in env.ledger.history("203.0.113.7") if r.action is Action.NONE]
    assert notes == [f"unban by {Peer.self().who}"]
    assert env.ask("unban", target="203.0.113.7")["lifted"] is False


def test_allow_lifts_matching_bans_and_wins_until_expiry(env: Env) -> None:
    """`allow CIDR --ttl` lifts the bans inside it, keeps new ones out until it expires."""
    for client in ("203.0.113.7", "203.0.113.8", "198.51.100.1"):
        env.runner.submit(env.engine.decide(finding(client)))
    assert wait_for(lambda: len(env.dryrun.banned) == 3)
    answer = env.ask("allow", target="203.0.113.0/24", ttl="10m", reason="office")
    assert sorted(answer["lifted"]) == ["203.0.113.7", "203.0.113.8"]
    assert wait_for(lambda: set(env.dryrun.banned) == {"198.51.100.1"})
    assert env.engine.decide(finding("203.0.113.50")).action is Action.NONE
    assert [a["network"] for a in env.ask("bans")["allowed"]] == ["203.0.113.0/24"]
    env.clock.advance(601)
    env.engine.expire()
    assert env.engine.decide(finding("203.0.113.50")).action is Action.BAN


def _held_by_a_lost_ledger(env: Env, target: str) -> None:
    """Put a ban of ``target`` in the firewall that the engine does not know, and mark
    the run as keeping what the firewalls hold (as the daemon does on a lost ledger)."""
    ban = events.Decision(
        T0, Action.BAN, events.AddressTarget.parse(target), "manual", Severity.HIGH, "x"
    )
    env.runner.submit(replace(ban, ttl=3600.0, expires_at=T0 + 3600.0))
    assert wait_for(lambda: target in env.dryrun.banned)
    env.runner.keep_held = True


def test_unban_keeping_held_lifts_a_ban_only_the_lost_ledger_knew(env: Env) -> None:
    """While the run keeps what the firewalls hold, `unban` of a target the engine does
    not know still lifts it from the responders and says so."""
    _held_by_a_lost_ledger(env, "203.0.113.7")
    answer = env.ask("unban", target="203.0.113.7")
    assert answer == {"target": "203.0.113.7", "lifted": False, "stray": ["203.0.113.7"]}
    assert wait_for(lambda: "203.0.113.7" not in env.dryrun.banned)
    assert render_result("unban", answer) == (
        "203.0.113.7; 203.0.113.7 not in the ledger; lifted from the firewalls anyway\n"
    )


def test_allow_keeping_held_lifts_a_network_ban_only_the_lost_ledger_knew(env: Env) -> None:
    """While the run keeps what the firewalls hold, `allow NET` lifts the ban of NET
    the engine does not know from the responders, beside the bans it knows."""
    _held_by_a_lost_ledger(env, "203.0.113.0/24")
    answer = env.ask("allow", target="203.0.113.0/24", ttl="10m")
    assert (answer["lifted"], answer["stray"]) == ([], ["203.0.113.0/24"])
    assert wait_for(lambda: "203.0.113.0/24" not in env.dryrun.banned)
    assert "lifted from the firewalls anyway" in render_result("allow", answer)


def test_unban_of_an_unknown_target_lifts_nothing_when_the_ledger_is_whole(env: Env) -> None:
    """With the ledger whole (no keep_held), `unban` of a target the engine does not
    hold sends nothing to the responders."""
    _held_by_a_lost_ledger(env, "203.0.113.7")
    env.runner.keep_held = False
    assert env.ask("unban", target="203.0.113.7") == {"target": "203.0.113.7", "lifted": False}
    env.runner.tick()
    assert "203.0.113.7" in env.dryrun.banned


@pytest.mark.parametrize(
    ("command", "target", "error"),
    [
        ("ban", "1.2.3.4;reboot", "is not an IP address or CIDR"),
        ("ban", "$(id)", "is not an IP address or CIDR"),
        ("ban", "-h", "is not an IP address or CIDR"),
        ("ban", "x" * 10_000, "longer than 128"),
        ("ban", "0.0.0.0/0", "wider than /8"),
        ("ban", "::ffff:127.0.0.1", "is allowlisted (127.0.0.0/8)"),
        ("ban", HOST, f"is allowlisted ({HOST}/32)"),
        ("ban", SSH_CLIENT, "live SSH session"),
        ("ban", "224.0.0.1", "not a bannable address (multicast)"),
        ("ban", "10.0.0.1/8", "is not an IP address or CIDR"),
        ("allow", "$(id)", "is not an IP address or CIDR"),
        ("allow", "::/0", "wider than /32"),
        ("unban", "1.2.3.4;reboot", "is not an IP address, a CIDR network or a workload"),
    ],
)
def test_refused_targets_get_a_clear_error_and_change_nothing(
    env: Env, command: str, target: str, error: str
) -> None:
    """Hostile or allowlisted targets are refused with a one-line reason; nothing is enforced."""
    with pytest.raises(CommandError) as info:
        env.ask(command, target=target, ttl="1h")
    assert error in str(info.value)
    assert "\n" not in str(info.value)
    env.runner.flush(2.0)
    assert env.dryrun.banned == {}
    assert env.engine.active() == []


def test_bad_ttl_and_reason_are_refused(env: Env) -> None:
    """A TTL out of range or not a duration, or a reason with control characters, is refused."""
    for fields, error in (
        ({"ttl": "0s"}, "ttl must be 1s"),
        ({"ttl": "400d"}, "ttl must be 1s"),
        ({"ttl": "soon"}, "bad ttl"),
        ({"ttl": True}, "ttl must be a duration"),
        ({"reason": "a\x1b[2Jb"}, "printable"),
    ):
        with pytest.raises(CommandError, match=error):
            env.ask("ban", target="203.0.113.9", **fields)
    assert env.engine.active() == []


def test_brake_reset_releases_the_storm_brake() -> None:
    """A tripped storm brake stays on past the minute; `brake reset` releases it at once."""
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    env = _env(tmp, max_bans_per_minute=2)
    try:
        actions = [env.engine.decide(finding(f"203.0.113.{i}")).action for i in range(3)]
        assert actions == [Action.BAN, Action.BAN, Action.ALERT]
        env.clock.advance(120)
        env.engine.expire()
        assert env.ask("bans")["brake_tripped_since"] == T0
        assert env.engine.decide(finding("203.0.113.50")).action is Action.ALERT
        assert env.ask("brake_reset") == {"released": True}
        assert env.engine.brake_tripped_since() is None
        assert env.engine.decide(finding("203.0.113.51")).action is Action.BAN
        assert env.ask("brake_reset") == {"released": False}
        notes = [r.reason for r in env.ledger.history("203.0.113.51")]
        assert notes  # the ban itself; the resets are notes without a target
    finally:
        env.server.stop()
        env.runner.close(1.0)
        env.ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_render_bans_escapes_text() -> None:
    """Terminal control characters in a listed reason or target are escaped."""
    out = render_bans(
        {
            "bans": [
                {
                    "target": "203.0.113.9",
                    "action": "ban",
                    "expires_in_seconds": 60.0,
                    "detector": "scanning",
                    "who": "aisentinel",
                    "reason": "path \x1b[2J\u202e",
                }
            ],
            "allowed": [],
            "brake_tripped_since": None,
        }
    )
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\x1b[2J" in out


def test_render_bans_marks_a_ban_no_responder_enforces() -> None:
    """A ban a responder gave up or cannot enforce (failing) says NOT ENFORCED and why,
    escaped; the others carry no mark."""
    row = {"action": "ban", "expires_in_seconds": 60.0, "detector": "d", "who": "w"}
    out = render_bans(
        {
            "bans": [
                {**row, "target": "2001:db8::/64", "reason": "r1",
                 "not_enforced": ["ufw: given up: refused by the backend"]},
                {**row, "target": "203.0.113.9", "reason": "r2",
                 "not_enforced": ["fail2ban: failing (jail \x1b[2J gone)"]},
                {**row, "target": "198.51.100.1", "reason": "r3", "not_enforced": []},
            ],
        }
    )  # fmt: skip
    lines = out.splitlines()
    assert "r1 (NOT ENFORCED: ufw: given up: refused by the backend)" in lines[1]
    assert "NOT ENFORCED: fail2ban: failing (jail \\x1b[2J gone)" in lines[2]
    assert "\x1b" not in out
    assert lines[3].endswith("r3")


def test_render_bans_aligns_columns_and_rounds_expiry_to_seconds() -> None:
    """`aisentinel bans` lines up its columns under the header; time left is in whole
    seconds, rounded up."""
    out = render_bans(
        {
            "bans": [
                {
                    "target": "203.0.113.9",
                    "action": "ban",
                    "expires_in_seconds": 3599.62,
                    "detector": "manual",
                    "who": "root (uid 0)",
                    "reason": "by root (uid 0): scraper",
                },
                {
                    "target": "2001:db8::/64",
                    "action": "ban",
                    "expires_in_seconds": 120.2,
                    "detector": "ssh_bruteforce",
                    "who": "aisentinel",
                    "reason": "high finding",
                    "simulated": True,
                },
            ],
            "allowed": [],
            "brake_tripped_since": None,
        }
    )
    header, first, second = out.splitlines()
    for column in ("ACTION", "EXPIRES", "DETECTOR", "WHO", "REASON"):
        at = header.index(column)
        for line in (first, second):
            assert line[at - 2 : at] == "  ", (column, out)
            assert line[at] != " ", (column, out)
    assert " in 1h " in first
    assert " in 2m1s " in second
    assert second.endswith("high finding (simulated)")


def test_cli_commands_talk_to_the_daemon(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`aisentinel ban/bans/unban/allow/brake reset --socket` print one line each (a ban
    with only the dryrun responder says it is not enforced); a refused target exits 2
    before asking, a daemon refusal exits 1."""
    sock = str(env.server.path)
    assert main(["ban", "203.0.113.9", "--ttl", "1h", "--reason", "x", "--socket", sock]) == 0
    out = capsys.readouterr().out
    assert "banned 203.0.113.9 until" in out
    assert out.endswith(f" ({DRY_RUN_ONLY})\n")  # only the dryrun responder
    assert main(["bans", "--socket", sock]) == 0
    assert re.search(r"^203\.0\.113\.9 +ban +in 1h +manual ", capsys.readouterr().out, re.M)
    assert main(["bans", "--json", "--socket", sock]) == 0
    assert '"who":' in capsys.readouterr().out
    assert main(["unban", "203.0.113.9", "--socket", sock]) == 0
    assert "lifted 203.0.113.9" in capsys.readouterr().out
    assert main(["allow", "203.0.113.0/24", "--ttl", "1h", "--socket", sock]) == 0
    assert "allowed 203.0.113.0/24 until" in capsys.readouterr().out
    assert main(["brake", "reset", "--socket", sock]) == 0
    assert "storm brake was not on" in capsys.readouterr().out
    assert main(["ban", "$(id)", "--socket", sock]) == 2
    assert "is not an IP address or CIDR" in capsys.readouterr().err
    assert main(["ban", "203.0.113.77", "--socket", sock]) == 1  # inside the allowed /24
    assert "is allowlisted" in capsys.readouterr().err
    assert main(["bans", "--socket", str(Path(sock).with_name("none.sock"))]) == 3


def test_bans_filters_by_target_and_limits(env: Env) -> None:
    """`bans` with a target lists the bans overlapping it (inside it or a wider one
    holding it), with a limit the first N soonest to end, and counts what is in force."""
    for i, ttl in ((1, "3h"), (2, "1h"), (3, "2h")):
        env.ask("ban", target=f"203.0.113.{i}", ttl=ttl)
    env.ask("ban", target="198.18.0.0/24", ttl="1h")
    env.ask("ban", target="2001:db8::/64", ttl="1h")

    def listed(**fields: Any) -> tuple[list[str], int, int]:
        answer = env.ask("bans", **fields)
        return [b["target"] for b in answer["bans"]], answer["matched"], answer["in_force"]

    assert listed(target="203.0.113.0/24") == (["203.0.113.2", "203.0.113.3", "203.0.113.1"], 3, 5)
    assert listed(target="203.0.113.0/24", limit=2) == (["203.0.113.2", "203.0.113.3"], 3, 5)
    assert listed(target="198.18.0.7") == (["198.18.0.0/24"], 1, 5)
    assert listed(target="2001:db8::1") == (["2001:db8::/64"], 1, 5)
    assert listed(target="192.0.2.0/24") == ([], 0, 5)
    assert len(listed(limit=4)[0]) == 4
    for bad in ({"limit": 0}, {"limit": True}, {"limit": "3"}, {"target": "$(id)"}):
        with pytest.raises(CommandError, match="refused"):
            env.ask("bans", **bad)


def test_bans_target_lists_only_the_allow_entries_overlapping_it(env: Env) -> None:
    """`bans --target NET` lists the runtime allow entries that share an address with
    NET (inside it or holding it), not every one; without a target, all of them."""
    for net in ("203.0.113.0/25", "198.51.100.0/24", "2001:db8::/48", "10.0.0.0/8"):
        env.ask("allow", target=net, ttl="1h")

    def allowed(**fields: Any) -> list[str]:
        return sorted(a["network"] for a in env.ask("bans", **fields)["allowed"])

    assert allowed(target="203.0.113.0/24") == ["203.0.113.0/25"]
    assert allowed(target="10.1.2.3") == ["10.0.0.0/8"]
    assert allowed(target="2001:db8::1") == ["2001:db8::/48"]
    assert allowed(target="192.0.2.0/24") == []
    assert len(allowed()) == 4


def test_allow_lifting_many_bans_prints_a_count_and_the_first_20(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aisentinel allow` that lifts 300 bans prints one short line: the count, the first
    20 targets and how many more; --json keeps every target."""
    sock = str(env.server.path)
    targets = [f"203.0.{i >> 8}.{i & 255}" for i in range(1, 301)]
    for target in targets:
        env.ask("ban", target=target, ttl="1h")
    capsys.readouterr()
    assert main(["allow", "203.0.0.0/22", "--ttl", "1m", "--socket", sock]) == 0
    out = capsys.readouterr().out.splitlines(keepends=True)[-1]  # after the log lines
    assert out.startswith("allowed 203.0.0.0/22 until ")
    assert len(out) < 600
    assert "; lifted 300 bans: 203.0." in out
    assert out.endswith(" and 280 more (--json lists every one)\n")
    assert len(re.findall(r"203\.0\.\d+\.\d+", out)) == 21  # the /22 and 20 targets
    env.clock.advance(61)
    env.engine.expire()
    for target in targets:
        env.ask("ban", target=target, ttl="1h")
    capsys.readouterr()
    assert main(["allow", "203.0.0.0/22", "--json", "--socket", sock]) == 0
    out = capsys.readouterr().out
    assert sorted(json.loads(out[out.index("{\n") :])["lifted"]) == sorted(targets)


def test_cli_bans_target_and_limit(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`aisentinel bans --target --limit` prints the matching bans and how many are in
    force; a bad target or limit exits 2 before asking."""
    sock = str(env.server.path)
    for i in range(1, 4):
        env.ask("ban", target=f"203.0.113.{i}", ttl="1h")
    env.ask("ban", target="198.51.100.9", ttl="1h")
    assert main(["bans", "--target", "203.0.113.0/24", "--limit", "2", "--socket", sock]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^(203\.0\.113\.\d) ", out, re.M) == ["203.0.113.1", "203.0.113.2"]
    assert out.endswith("2 shown of 4 in force, 3 of them match --target\n")
    assert main(["bans", "--limit", "1", "--json", "--socket", sock]) == 0
    assert '"in_force": 4' in capsys.readouterr().out
    assert main(["bans", "--target", "10.0.0.1/8", "--socket", sock]) == 2
    assert "is not an IP address or CIDR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["bans", "--limit", "0", "--socket", sock])
    assert info.value.code == 2
    assert "--limit: must be from 1" in capsys.readouterr().err


def test_ban_says_nothing_is_enforced_when_no_responder_is_enabled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`aisentinel ban` on a daemon with no responder notes that nothing is enforced."""
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))  # a socket path is short
    e = _env(tmp, responders=False)
    try:
        assert main(["ban", "203.0.113.9", "--socket", str(e.server.path)]) == 0
        out = capsys.readouterr().out
        assert "\nbanned 203.0.113.9 until " in "\n" + out
        assert out.endswith(" (no responder is enabled: nothing is enforced)\n")
    finally:
        e.server.stop()
        e.runner.close(1.0)
        e.ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_unban_of_an_address_inside_a_network_ban_names_that_ban(env: Env) -> None:
    """`unban ADDR` inside a banned /24 lifts nothing, is refused naming the /24 and the
    command that lifts it; an address with its own ban too is lifted and told it is still
    dropped by the /24."""
    env.ask("ban", target="203.0.113.0/24", ttl="1h")
    with pytest.raises(CommandError) as info:
        env.ask("unban", target="203.0.113.7")
    assert "inside the ban of 203.0.113.0/24" in str(info.value)
    assert "`aisentinel unban 203.0.113.0/24`" in str(info.value)
    assert env.engine.is_banned("203.0.113.7")
    assert [d.target.text for d in env.engine.active() if d.target] == ["203.0.113.0/24"]
    env.engine.reset_brake("t")
    own = env.engine.manual_ban("203.0.113.0/25", 600, "", "root")
    assert own.target is not None
    answer = env.ask("unban", target="203.0.113.0/25")
    assert answer == {"target": "203.0.113.0/25", "lifted": True, "covered_by": "203.0.113.0/24"}
    assert render_result("unban", answer) == (
        "lifted 203.0.113.0/25 (still dropped by the ban of 203.0.113.0/24)\n"
    )


def test_cli_ban_wider_than_a_slash_16_needs_force(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aisentinel ban 1.0.0.0/8` is refused (exit 1) saying how many addresses and that
    --force is needed; with --force it is banned; /8 and /32 stay hard limits."""
    sock = str(env.server.path)
    assert main(["ban", "1.0.0.0/8", "--socket", sock]) == 1
    err = capsys.readouterr().err
    assert "is wider than /16 (16,777,216 addresses)" in err
    assert "--force" in err
    assert main(["ban", "2001:db8::/40", "--socket", sock]) == 1
    assert "is wider than /48 (2^88 addresses)" in capsys.readouterr().err
    assert not env.engine.active()
    assert main(["ban", "1.0.0.0/8", "--force", "--socket", sock]) == 0
    assert "banned 1.0.0.0/8 until" in capsys.readouterr().out
    assert main(["ban", "0.0.0.0/7", "--force", "--socket", sock]) == 1
    assert "is wider than /8" in capsys.readouterr().err
    assert env.ask("ban", target="203.0.0.0/16")["target"] == "203.0.0.0/16"  # /16: no force
    with pytest.raises(CommandError, match="force must be true or false"):
        env.ask("ban", target="2.0.0.0/8", force="yes")


def test_cli_ban_wider_than_an_enabled_responder_takes_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With nftables' min_prefix4 = 16, `aisentinel ban --force 10.16.0.0/12` is refused
    (exit 1) naming nftables and the key, and nothing is banned; a /16 is banned."""
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    nft = FakeRunner({("nft", "-j", "-f", "-"): FakeRunner.ok(("nft", "-j", "-f", "-"))})
    responder = NftablesResponder(
        NftablesConfig(backend="nft", min_prefix4=16), clock=FakeClock(T0), commands=nft
    )
    env = _env(tmp, more=[responder])
    try:
        sock = str(env.server.path)
        assert main(["ban", "10.16.0.0/12", "--force", "--socket", sock]) == 1
        err = capsys.readouterr().err
        assert (
            "refused: 10.16.0.0/12: nftables: network wider than /16 "
            "(responders.nftables.min_prefix4): it would not be enforced"
        ) in err
        assert not env.engine.active()
        assert main(["ban", "10.16.0.0/16", "--socket", sock]) == 0
        assert "banned 10.16.0.0/16 until" in capsys.readouterr().out
    finally:
        env.server.stop()
        env.runner.close(1.0)
        env.ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_cli_ban_of_an_ipv6_host_widened_past_what_a_responder_takes_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`aisentinel ban <IPv6 host>` whose ipv6_ban_prefix network (/48) nftables' min_prefix6
    (64) refuses is refused naming the /48, and nothing is recorded; a /64 prefix bans."""
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    nft = FakeRunner({("nft", "-j", "-f", "-"): FakeRunner.ok(("nft", "-j", "-f", "-"))})
    responder = NftablesResponder(
        NftablesConfig(backend="nft", min_prefix6=64), clock=FakeClock(T0), commands=nft
    )
    env = _env(tmp, more=[responder], ipv6_ban_prefix=48)
    try:
        sock = str(env.server.path)
        assert main(["ban", "2001:db8:1:2::5", "--socket", sock]) == 1
        err = capsys.readouterr().err
        assert "refused: 2001:db8:1::/48 (what a ban of 2001:db8:1:2::5 covers" in err
        assert "(responders.nftables.min_prefix6): it would not be enforced" in err
        assert not env.engine.active()
        assert env.ledger.history("2001:db8:1::/48") == []
    finally:
        env.server.stop()
        env.runner.close(1.0)
        env.ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    responder = NftablesResponder(
        NftablesConfig(backend="nft", min_prefix6=64), clock=FakeClock(T0), commands=nft
    )
    env = _env(tmp, more=[responder], ipv6_ban_prefix=64)
    try:
        assert main(["ban", "2001:db8:1:2::5", "--socket", str(env.server.path)]) == 0
        assert [d.target.text for d in env.engine.active() if d.target] == ["2001:db8:1:2::/64"]
    finally:
        env.server.stop()
        env.runner.close(1.0)
        env.ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_shorter_manual_ban_keeps_the_longer_ban_in_force(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ban --ttl 10m` on an address banned for 24h keeps the 24h end (engine, ledger,
    responder, `bans`) and says so; the address is not freed after 10 minutes."""
    env.ask("ban", target="203.0.113.9", ttl="24h", reason="known attacker")
    env.clock.advance(60)
    answer = env.ask("ban", target="203.0.113.9", ttl="10m", reason="quick")
    assert answer["expires_at"] == T0 + 86400
    assert answer["kept_longer"] is True
    line = render_result("ban", answer)
    assert "ends later than asked and is kept; --replace shortens it" in line
    assert env.ledger.history("203.0.113.9")[-1].expires_at == T0 + 86400
    assert wait_for(lambda: env.dryrun.banned.get("203.0.113.9") == T0 + 86400)
    env.clock.advance(11 * 60)
    env.engine.expire()
    assert [b["target"] for b in env.ask("bans")["bans"]] == ["203.0.113.9"]
    assert main(["ban", "203.0.113.9", "--ttl", "5m", "--socket", str(env.server.path)]) == 0
    assert "is kept; --replace shortens it" in capsys.readouterr().out


def test_a_shorter_manual_ban_keeps_an_escalated_automatic_ban(env: Env) -> None:
    """An automatic ban escalated past the operator's --ttl is kept, not cut short."""
    env.engine.decide(finding("203.0.113.7"))  # offence 1: 1h
    env.clock.advance(3601)
    env.engine.expire()
    escalated = env.engine.decide(finding("203.0.113.7"))  # offence 2: longer
    assert escalated.expires_at is not None
    assert escalated.expires_at - env.clock.now() > 3600
    answer = env.ask("ban", target="203.0.113.7", ttl="10m")
    assert (answer["expires_at"], answer["kept_longer"]) == (escalated.expires_at, True)


def test_replace_shortens_a_ban_and_a_longer_ttl_extends_it(env: Env) -> None:
    """`ban --replace` ends the ban after its --ttl, earlier or not; a longer --ttl
    without it extends the ban as before."""
    env.ask("ban", target="203.0.113.9", ttl="24h")
    answer = env.ask("ban", target="203.0.113.9", ttl="10m", replace=True)
    assert (answer["expires_at"], answer["kept_longer"]) == (T0 + 600, False)
    assert wait_for(lambda: env.dryrun.banned.get("203.0.113.9") == T0 + 600)
    answer = env.ask("ban", target="203.0.113.9", ttl="2h")
    assert (answer["expires_at"], answer["kept_longer"]) == (T0 + 7200, False)
    assert "kept" not in render_result("ban", answer)
    with pytest.raises(CommandError, match="replace must be true or false"):
        env.ask("ban", target="203.0.113.9", ttl="2h", replace="yes")


def test_a_fresh_ban_with_a_fractional_ttl_is_not_kept_longer(env: Env) -> None:
    """A first ban whose --ttl does not survive ``(now + ttl) - now`` exactly (1234.7 s)
    is not reported as a longer ban kept."""
    env.clock.advance(0.123)
    ttl = 1234.7
    assert (env.clock.now() + ttl) - env.clock.now() > ttl  # the rounding the old check met
    answer = env.ask("ban", target="203.0.113.9", ttl=str(ttl))
    assert answer["kept_longer"] is False
    assert "kept" not in render_result("ban", answer)
