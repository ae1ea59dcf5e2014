"""The brakes: logged-in SSH sessions from the socket table, admin and monitoring networks,
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
from conftest import ssh_accepted, ssh_fail

from aisentinel.cli import main
from aisentinel.clock import FakeClock
from aisentinel.config import parse_config
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.decisions.allowlist import read_host_addresses
from aisentinel.decisions.brakes import SshConnection, read_ssh_connections
from aisentinel.detectors import build_detectors
from aisentinel.events import Action, Finding, LineBatch, Severity, canonical_address
from aisentinel.pipeline import Pipeline

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


def test_ssh_connections_from_a_fixture_socket_table(tmp_path: Path) -> None:
    """Only ESTABLISHED rows on the sshd ports count; IPv4, IPv6 and mapped peers decode,
    with the client's port, and each socket is named by its 4-tuple and inode."""
    proc = fixture_proc(tmp_path)
    found = read_ssh_connections(proc, {22, 2222})
    assert {(str(c.client), c.port) for c in found} == {
        ("192.168.100.22", 0xD431),
        ("192.168.100.23", 0xC351),
        ("11.11.11.11", 0xD434),
        ("2001:db8::99", 0xC350),
    }
    assert found[0].key == "0A00000A:0016 1664A8C0:D431 2"
    assert [c.client for c in read_ssh_connections(proc, {8080})] == [
        canonical_address("203.0.113.42")
    ]
    assert read_ssh_connections(tmp_path / "nope", {22}) == []


ATTACKER_CONN = SshConnection(canonical_address("198.51.100.66"), 54321, "A 4266 1")
ADMIN_CONN = SshConnection(canonical_address("198.51.100.5"), 50000, "A 0505 2")
V6_CONN = SshConnection(canonical_address("2001:db8::99"), 50001, "B 99 3")


def ssh_engine(
    tmp_path: Path, connections: list[SshConnection], clock: FakeClock, **config: Any
) -> DecisionEngine:
    return DecisionEngine(
        DecisionsConfig(**config),
        Ledger(tmp_path / "l", clock),
        clock,
        host_addresses=list,
        ssh_clients=lambda: list(connections),
    )


def test_login_lines_of_unknown_connections_read_the_socket_table_at_most_every_100ms(
    tmp_path: Path,
) -> None:
    """sshd login lines naming no open connection (old lines, forged ones) re-read the
    socket table at most once per 0.1 s, and a login read then still binds."""
    clock = FakeClock(T0)
    reads: list[float] = []
    conns: list[SshConnection] = []

    def table() -> list[SshConnection]:
        reads.append(clock.monotonic())
        return list(conns)

    engine = DecisionEngine(
        DecisionsConfig(),
        Ledger(tmp_path / "l", clock),
        clock,
        host_addresses=list,
        ssh_clients=table,
    )
    reads.clear()
    for i in range(1000):
        engine.ssh_login(f"198.51.100.{i % 200 + 1}", 40000 + i, T0)
    assert len(reads) <= 1
    conns.append(ADMIN_CONN)
    clock.advance(0.1)
    engine.ssh_login("198.51.100.5", ADMIN_CONN.port, T0)
    clock.advance(2)
    engine.expire()
    d = engine.decide(finding("198.51.100.5"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (live SSH session)")


def test_a_pre_auth_ssh_connection_protects_no_one(tmp_path: Path) -> None:
    """A brute-forcer's own open connection to sshd (established, not logged in) is no
    session: its findings, of any detector, are bans; a manual ban of it is taken; and
    its /64 neighbour's open connection does not shrink an IPv6 ban to the /128."""
    clock = FakeClock(T0)
    other = ATTACKER_CONN._replace(client=canonical_address("198.51.100.77"), key="A 77 4")
    engine = ssh_engine(tmp_path, [ATTACKER_CONN, other, V6_CONN], clock)
    d = engine.decide(finding("198.51.100.66"))
    assert (d.action, d.reason.startswith("high finding")) == (Action.BAN, True)
    exploit = Finding(T0, "model_exploit", Severity.CRITICAL, "198.51.100.77", "k", 1, 1.0, "m")
    assert engine.decide(exploit).action is Action.BAN
    engine.unban("198.51.100.66")
    assert engine.manual_ban("198.51.100.66", 60, "x", "root").action is Action.BAN
    d = engine.decide(finding("2001:db8::7"))
    assert d.target is not None
    assert d.target.text == "2001:db8::/64"


def test_a_logged_in_ssh_session_keeps_its_client_in(tmp_path: Path) -> None:
    """Once sshd logged the login ("Accepted ... port N") on an open connection, its
    client is allowlisted: findings are NONE, a manual ban is refused, a neighbour's
    IPv6 ban is the /128, an earlier ban is lifted by the next expire; a login whose
    connection is not open protects no one."""
    clock = FakeClock(T0)
    conns = [ATTACKER_CONN]
    engine = ssh_engine(tmp_path, conns, clock)
    banned = engine.decide(finding("198.51.100.5"))
    assert banned.action is Action.BAN
    engine.ssh_login("198.51.100.66", 11111, T0)  # another port: not this connection
    assert engine.decide(finding("198.51.100.66")).action is Action.BAN
    conns += [ADMIN_CONN, V6_CONN]
    clock.advance(0.1)  # the last reading is older than the connection
    engine.ssh_login("198.51.100.5", ADMIN_CONN.port, T0)
    clock.advance(2)
    assert engine.expire() == [banned]
    d = engine.decide(finding("198.51.100.5"))
    assert (d.action, d.reason) == (Action.NONE, "allowlisted (live SSH session)")
    with pytest.raises(ValueError, match="holds the client of a live SSH session"):
        engine.manual_ban("198.51.100.5", 60, "x", "root")
    engine.ssh_login("2001:db8::99", V6_CONN.port, T0)
    d = engine.decide(finding("2001:db8::7"))
    assert d.target is not None
    assert d.target.text == "2001:db8::7"


def test_an_ssh_connection_older_than_login_grace_time_is_a_session(tmp_path: Path) -> None:
    """sshd drops a connection that has not logged in within LoginGraceTime: one seen
    open for longer is a session (its login line missed); a new socket on the same
    4-tuple starts afresh; with ssh_login_grace_time 0 (no limit) age proves nothing."""
    clock = FakeClock(T0)
    conns = [ADMIN_CONN]
    engine = ssh_engine(tmp_path, conns, clock)
    assert engine.decide(finding("198.51.100.5")).action is Action.BAN
    engine.unban("198.51.100.5")
    clock.advance(120)
    assert engine.decide(finding("198.51.100.5")).action is Action.BAN
    engine.unban("198.51.100.5")
    clock.advance(10)
    assert engine.decide(finding("198.51.100.5")).action is Action.NONE
    conns[0] = ADMIN_CONN._replace(key="A 0505 99")  # closed, and a new connection
    clock.advance(2)
    assert engine.decide(finding("198.51.100.5")).action is Action.BAN
    clock = FakeClock(T0)
    engine = ssh_engine(tmp_path / "b", [ADMIN_CONN], clock, ssh_login_grace_time="0s")
    engine.expire()
    clock.advance(86_400)
    assert engine.decide(finding("198.51.100.5")).action is Action.BAN


def test_an_ssh_login_is_kept_across_a_restart_while_its_connection_is_open(
    tmp_path: Path,
) -> None:
    """A restart does not unprotect a logged-in admin: the login is restored from the
    ledger for its socket; once that socket closes it is forgotten, there too."""
    clock = FakeClock(T0)
    conns = [ADMIN_CONN]
    engine = ssh_engine(tmp_path, conns, clock)
    engine.ssh_login("198.51.100.5", ADMIN_CONN.port, T0)
    engine.ledger.close()
    engine = ssh_engine(tmp_path, conns, clock)
    assert engine.decide(finding("198.51.100.5")).action is Action.NONE
    conns[0] = ADMIN_CONN._replace(key="A 0505 99")  # the same 4-tuple, another socket
    clock.advance(2)
    engine.expire()
    engine.ledger.close()
    engine = ssh_engine(tmp_path, conns, clock)
    assert engine.ledger.ssh_logins() == []
    assert engine.decide(finding("198.51.100.5")).action is Action.BAN


def test_sshd_login_lines_reach_the_engine_through_the_pipeline(tmp_path: Path) -> None:
    """The pipeline hands sshd's "Accepted" lines to the engine in line order: the admin
    who logged in is not banned for the failures after the login, the brute-forcer
    still connected before its next password is."""
    clock = FakeClock(T0)
    engine = ssh_engine(tmp_path, [ATTACKER_CONN, ADMIN_CONN], clock)
    pipeline = Pipeline(detectors=build_detectors({}), engine=engine, runner=None, clock=clock)
    admin = [ssh_fail(T0 + i, "198.51.100.5") for i in range(2)]
    admin.append(ssh_accepted(T0 + 2, "198.51.100.5", ADMIN_CONN.port))
    admin += [ssh_fail(T0 + 3 + i, "198.51.100.5") for i in range(4)]  # su, another user
    attack = [ssh_fail(T0 + 10 + i, "198.51.100.66") for i in range(5)]
    pipeline.process(LineBatch("auth", "sshd", admin + attack, 0.0))
    assert pipeline.decisions == {("none", "ssh_bruteforce"): 1, ("ban", "ssh_bruteforce"): 1}
    assert [str(d.target) for d in engine.active()] == ["198.51.100.66"]


def test_ipv6_ban_of_an_ssh_clients_neighbour_bans_only_the_address(tmp_path: Path) -> None:
    """An IPv6 /64 holding a logged-in SSH client (read from the socket table) is not
    banned whole: only the attacker's /128."""
    proc = fixture_proc(tmp_path)
    clock = FakeClock(T0)
    engine = DecisionEngine(
        DecisionsConfig(proc_root=proc), Ledger(tmp_path / "l", clock), clock, host_addresses=list
    )
    engine.ssh_login("2001:db8::99", 0xC350, T0)
    d = engine.decide(finding("2001:db8::7"))
    assert d.action is Action.BAN
    assert d.target is not None
    assert d.target.text == "2001:db8::7"


def test_a_network_ban_holding_a_new_ssh_session_is_lifted(tmp_path: Path) -> None:
    """A network ban decided before its SSH client was known as logged in (the login line
    came later, or the connection aged past the grace time) is lifted by the next expire,
    like a network holding an allowlisted address: the admin is not locked out."""
    clock = FakeClock(T0)
    conns = [V6_CONN]
    engine = ssh_engine(tmp_path, conns, clock)
    banned = engine.decide(finding("2001:db8::7"))  # the admin's neighbour, before the login
    assert banned.target is not None
    assert banned.target.text == "2001:db8::/64"
    engine.ssh_login("2001:db8::99", V6_CONN.port, T0)
    clock.advance(2)
    assert engine.expire() == [banned]
    aged = [ADMIN_CONN]
    engine = ssh_engine(tmp_path / "b", aged, clock)
    engine.expire()  # the connection is seen
    operator = engine.manual_ban("198.51.100.0/24", 3600, "", "root")
    clock.advance(130)
    assert engine.expire() == [operator]


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
    non-loopback addresses (with host addresses not allowlisted), logged in, protects
    that address."""
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
        found = read_ssh_connections(Path("/proc"), {port})
        assert canonical_address(mine[0]) in [c.client for c in found]
        clock = FakeClock(T0)
        cfg = DecisionsConfig(allow_host_addresses=False, ssh_ports=(port,))
        engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock)
        engine.ssh_login(mine[0], client.getsockname()[1], T0)
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


def test_storm_brake_counts_one_ipv6_prefix_holder_once(tmp_path: Path) -> None:
    """Bans of many /64s of one /48 (one holder's allocation) count as one party: they
    neither trip the brake nor keep it from banning others, across a restart too; NAT64
    clients (one IPv4 host each) and IPv4 addresses count one each."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=4, allow_ssh_sessions=False)

    def start() -> DecisionEngine:
        return DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)

    def decide(engine: DecisionEngine, client: str) -> Action:
        return engine.decide(finding(client)).action

    engine = start()
    assert {decide(engine, f"2001:db8:beef:{i:x}::1") for i in range(61)} == {Action.BAN}
    assert engine.counters().brake_tripped_since is None
    assert decide(engine, "64:ff9b::203.0.113.1") is Action.BAN
    engine = start()  # the window is rebuilt with its parties
    assert decide(engine, "2001:db8:beef:1000::1") is Action.BAN
    assert decide(engine, "64:ff9b::203.0.113.2") is Action.BAN
    assert decide(engine, "203.0.113.3") is Action.BAN
    assert decide(engine, "203.0.113.4") is Action.ALERT
    assert engine.counters().brake_tripped_since == T0


def test_storm_brake_releases_after_calm_though_the_wall_clock_stepped_back(
    tmp_path: Path,
) -> None:
    """The brake's calm is measured on the monotonic clock: tripped, then the wall clock
    steps back a day, it still releases after the cool-down of calm (not 24h later)."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=4, brake_cooldown="10m", allow_ssh_sessions=False)
    engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)
    actions = [engine.decide(finding(f"203.0.113.{i}")).action for i in range(1, 6)]
    assert actions == [Action.BAN] * 4 + [Action.ALERT]
    assert engine.counters().brake_tripped_since == T0
    clock.set(T0 - 86400)  # NTP steps a clock that ran a day fast
    clock.advance(61)
    engine.expire()  # calm begins
    clock.advance(600)
    engine.expire()
    assert engine.counters().brake_tripped_since is None


def test_storm_brake_window_is_one_real_minute_after_a_step_back(tmp_path: Path) -> None:
    """Bans from before a 1h step back of the wall clock leave the brake's one-minute
    window a real minute later: 3 new attackers 5 minutes on are banned, not braked."""
    clock = FakeClock(T0)
    cfg = DecisionsConfig(max_bans_per_minute=10, allow_ssh_sessions=False)
    engine = DecisionEngine(cfg, Ledger(tmp_path / "l", clock), clock, host_addresses=list)
    assert {engine.decide(finding(f"198.51.100.{i}")).action for i in range(1, 10)} == {Action.BAN}
    clock.set(T0 - 3600)
    clock.advance(300)
    actions = [engine.decide(finding(f"203.0.113.{i}")).action for i in range(1, 4)]
    assert actions == [Action.BAN] * 3


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
