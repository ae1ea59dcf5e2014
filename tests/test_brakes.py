"""The brakes: live SSH sessions from the socket table, admin and monitoring networks,
the latched storm brake, and check-config's warning about enforcing without an admin CIDR."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aisentinel.cli import main
from aisentinel.clock import FakeClock
from aisentinel.config import parse_config
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.allowlist import read_host_addresses
from aisentinel.decisions.brakes import read_ssh_clients
from aisentinel.events import Action, Finding, Severity, canonical_address

T0 = 1_764_000_000.0

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0A00000A:0016 1664A8C0:D431 01 00000000:00000000 02:00000000 00000000     0        0 2 1
   2: 0A00000A:0016 4D6433C6:D432 06 00000000:00000000 02:00000000 00000000     0        0 3 1
   3: 0A00000A:1F90 2A7100CB:D433 01 00000000:00000000 02:00000000 00000000     0        0 4 1
   4: 0A00000A:08AE 0B0B0B0B:D434 01 00000000:00000000 02:00000000 00000000     0        0 5 1
   5: garbage
"""
# 2001:db8::5 on port 22 from 2001:db8::99 (ESTABLISHED); ::ffff:192.168.100.23 mapped.
TCP6 = """\
  sl  local_address                         remote_address                        st tx rx
   0: B80D0120000000000000000005000000:0016 B80D0120000000000000000099000000:C350 01 0 0
   1: 0000000000000000FFFF00000A00000A:0016 0000000000000000FFFF00001764A8C0:C351 01 0 0
"""


def fixture_proc(tmp_path: Path) -> Path:
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(TCP)
    (net / "tcp6").write_text(TCP6)
    return tmp_path / "proc"


def finding(client: str) -> Finding:
    return Finding(T0, "ssh_bruteforce", Severity.HIGH, client, client, 6, 600.0, "failures")


def test_ssh_clients_from_a_fixture_socket_table(tmp_path: Path) -> None:
    """Only ESTABLISHED rows on the sshd ports count; IPv4, IPv6 and mapped peers decode."""
    proc = fixture_proc(tmp_path)
    found = read_ssh_clients(proc, {22, 2222})
    assert {str(a) for a in found} == {
        "192.168.100.22",
        "192.168.100.23",
        "11.11.11.11",
        "2001:db8::99",
    }
    assert read_ssh_clients(proc, {8080}) == {canonical_address("203.0.113.42")}
    assert read_ssh_clients(tmp_path / "nope", {22}) == set()


def test_ssh_session_client_is_never_banned(tmp_path: Path) -> None:
    """A finding about a live SSH client is NONE (allowlisted); an active ban of an
    address that opens a session later is lifted by the next expire."""
    proc = fixture_proc(tmp_path)
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(proc_root=proc), Ledger(tmp_path / "l", clock), clock, host_addresses=list
    )
    d = engine.decide(finding("192.168.100.22"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (live SSH session)")
    banned = engine.decide(finding("203.0.113.5"))
    assert banned.action is Action.BAN
    rows = (proc / "net" / "tcp").read_text()
    rows += "   6: 0A00000A:0016 0571CBCB:D439 01 00000000:00000000 02:00000000 0 0 0 6 1\n"
    (proc / "net" / "tcp").write_text(rows.replace("0571CBCB", "057100CB"))
    clock.advance(2)
    assert engine.expire() == [banned]
    assert engine.active() == []


def test_ipv6_ban_of_an_ssh_clients_neighbour_bans_only_the_address(tmp_path: Path) -> None:
    """An IPv6 /64 holding a live SSH client is not banned whole: only the attacker's /128."""
    proc = fixture_proc(tmp_path)
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(proc_root=proc), Ledger(tmp_path / "l", clock), clock, host_addresses=list
    )
    d = engine.decide(finding("2001:db8::7"))
    assert d.action is Action.BAN
    assert d.target is not None
    assert d.target.text == "2001:db8::7"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("0.0.0.0", 0))
    srv.listen(4)
    yield srv
    srv.close()


def test_live_ssh_client_from_the_real_socket_table(
    tmp_path: Path, listener: socket.socket
) -> None:
    """A real TCP connection to the configured ssh port, from one of this host's own
    non-loopback addresses (with host addresses not allowlisted), protects that address."""
    port = listener.getsockname()[1]
    mine = [
        a
        for a in read_host_addresses()
        if canonical_address(a).version == 4 and not canonical_address(a).is_loopback
    ]
    if not mine:
        pytest.skip("no non-loopback IPv4 address on this host to connect from")
    client = socket.create_connection((mine[0], port), timeout=5, source_address=(mine[0], 0))
    peer, _addr = listener.accept()
    try:
        assert canonical_address(mine[0]) in read_ssh_clients(Path("/proc"), {port})
        clock = FakeClock(T0)
        cfg = DecisionsConfig(allow_host_addresses=False, ssh_ports=(port,))
        engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock)
        d = engine.decide(finding(mine[0]))
        assert (d.action, d.reason) == (Action.NONE, "allowlisted (live SSH session)")
    finally:
        client.close()
        peer.close()


def test_admin_and_monitoring_networks_are_allowlisted(tmp_path: Path) -> None:
    """`admin_cidrs` and `monitoring_hosts` are never banned, like `allowlist`."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(admin_cidrs=["198.51.100.0/24"], monitoring_hosts=["203.0.113.9"])
    engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)
    assert engine.decide(finding("198.51.100.77")).reason == "allowlisted (198.51.100.0/24)"
    assert engine.decide(finding("203.0.113.9")).reason == "allowlisted (203.0.113.9/32)"
    assert engine.decide(finding("203.0.113.10")).action is Action.BAN


def test_storm_brake_latches_until_calm_for_the_cooldown(tmp_path: Path) -> None:
    """Past N bans a minute the brake trips and stays tripped after the minute; once the
    would-be-ban rate stayed under N/2 for the cool-down it releases by itself."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=4, brake_cooldown="5m", allow_ssh_sessions=False)
    engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)
    n = iter(range(1, 250))

    def decide() -> Action:
        return engine.decide(finding(f"203.0.113.{next(n)}")).action

    assert [decide() for _ in range(5)] == [Action.BAN] * 4 + [Action.ALERT]
    assert engine.counters().brake_tripped_since == T0
    for _ in range(3):  # the storm goes on: still braked, two minutes later
        clock.advance(30)
        assert [decide() for _ in range(3)] == [Action.ALERT] * 3
    clock.advance(61)
    engine.expire()  # calm starts now (no would-be bans in the last minute)
    clock.advance(299)
    engine.expire()
    assert engine.counters().brake_tripped_since is not None
    assert decide() is Action.ALERT  # one would-be ban: under N/2, calm goes on
    clock.advance(1)
    engine.expire()
    assert engine.counters().brake_tripped_since is None
    assert decide() is Action.BAN


def test_storm_brake_stays_tripped_across_a_restart(tmp_path: Path) -> None:
    """A restart neither releases a tripped brake nor empties its one-minute window: only
    `brake reset` or the cool-down release it, the calm counted from the restart (the
    would-be bans before it were alerts, which the rebuilt window does not hold)."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=3, brake_cooldown="5m", allow_ssh_sessions=False)
    n = iter(range(1, 250))

    def start() -> DecisionEngine:
        return DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)

    def decide(engine: DecisionEngine) -> Action:
        return engine.decide(finding(f"203.0.113.{next(n)}")).action

    engine = start()
    assert [decide(engine) for _ in range(2)] == [Action.BAN] * 2
    engine = start()  # the window is kept: one more ban, then the brake trips
    assert [decide(engine) for _ in range(2)] == [Action.BAN, Action.ALERT]
    engine = start()
    assert engine.counters().brake_tripped_since == T0
    assert [decide(engine) for _ in range(3)] == [Action.ALERT] * 3
    assert engine.reset_brake("root")
    engine = start()  # released before the restart: stays released, window empty
    assert engine.counters().brake_tripped_since is None
    assert [decide(engine) for _ in range(4)] == [Action.BAN] * 3 + [Action.ALERT]
    clock.advance(61)
    engine.expire()  # calm begins
    clock.advance(300)
    engine = start()  # the calm before the restart does not count
    assert engine.counters().brake_tripped_since is not None
    engine.expire()  # calm begins again
    assert engine.counters().brake_tripped_since is not None
    clock.advance(300)
    engine.expire()
    assert engine.counters().brake_tripped_since is None


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    return code, capsys.readouterr()


def test_check_config_warns_when_enforcing_without_admin_cidr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An enforcing responder and no admin CIDR: a WARNING, exit 0; none for dry run only
    or when admin_cidrs is set."""
    code, out = _check(tmp_path, "[responders.throttle]\n", capsys)
    assert code == 0
    assert "WARNING: enforcing responder(s) throttle enabled and no admin CIDR" in out.err
    code, out = _check(tmp_path, "", capsys)
    assert (code, out.err) == (0, "")
    text = '[decisions]\nadmin_cidrs = ["198.51.100.0/24"]\n[responders.throttle]\n'
    code, out = _check(tmp_path, text, capsys)
    assert (code, "WARNING" in out.err) == (0, False)


def test_check_config_warns_about_a_daemon_that_reads_or_detects_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sources = []` and every detector disabled are valid but leave the daemon blind:
    each is a WARNING (exit 0); the count says how many detectors are enabled."""
    code, out = _check(tmp_path, "sources = []\n", capsys)
    assert code == 0
    assert "OK (0 sources," in out.out
    assert "WARNING: no log source" in out.err
    names = sorted(parse_config({}, "<defaults>").detectors)
    text = "".join(f"[detectors.{name}]\nenabled = false\n" for name in names)
    code, out = _check(tmp_path, text, capsys)
    assert code == 0
    assert f"{len(names)} detectors, 0 enabled)" in out.out
    assert "WARNING: every detector is disabled" in out.err
    code, out = _check(tmp_path, "[detectors.scanning]\nenabled = false\n", capsys)
    assert f"{len(names)} detectors, {len(names) - 1} enabled)" in out.out
    assert out.err == ""


def test_run_logs_the_config_warnings_at_start(tmp_path: Path) -> None:
    """`aisentinel run` logs check-config's warnings when it starts (here: no source)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'sources = []\n[daemon]\nstate_dir = "{tmp_path / "state"}"\ncontrol_socket = ""\n'
        'log_format = "json"\n[exporter]\nenabled = false\n[audit]\nenabled = false\n'
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisentinel", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "aisentinel starting" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        warned = [
            json.loads(line) for line in log.read_text().splitlines() if "valid but risky" in line
        ]
        assert [w["warning"].split(":")[0] for w in warned] == ["no log source"], log.read_text()
        assert warned[0]["level"] == "warning"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_check_config_warns_when_no_responder_is_enabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare [responders] table (every responder off) is a WARNING; the default is not."""
    code, out = _check(tmp_path, "[responders]\n", capsys)
    assert code == 0
    assert "WARNING: no responder is enabled: decisions are neither enforced nor " in out.err
    code, out = _check(tmp_path, "[responders.dryrun]\n", capsys)
    assert (code, out.err) == (0, "")
