"""The nftables responder against the real kernel, in network namespaces made by the test.

An attacker namespace and a legitimate one both reach real nginx in a server
namespace; the responder bans in the server namespace (its ``nft`` commands run
under ``ip netns exec``, or the whole responder runs there for libnftables and the
daemon). Addresses are the lab's own (10.231.x.y, fd00:a15e::/48), alive only
inside the namespaces.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from nsharness import ATTACKER4, ATTACKER6, CLIENT4, SERVER4, SERVER6, Lab, missing_tools, run

from aisentinel.clock import SystemClock
from aisentinel.commands import SubprocessRunner
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder

REPO = Path(__file__).resolve().parents[1]
WHY = missing_tools("nft", "nginx")
pytestmark = [pytest.mark.root, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Lab, int]]:
    """The three namespaces with nginx serving in the server one; torn down after."""
    lab = Lab().up()
    port = _free_port()
    try:
        lab.nginx(tmp_path / "nginx", port)
        assert wait_for(lambda: lab.reachable(lab.ok, SERVER4["ok"], port), timeout=10)
        yield lab, port
    finally:
        lab.close()


def _ban(target: str, ttl: float) -> Decision:
    now = time.time()
    return Decision(
        now, Action.BAN, AddressTarget.parse(target), "test", Severity.HIGH, "test",
        ttl=ttl, expires_at=now + ttl,
    )  # fmt: skip


def _responder(lab: Lab, **kw: object) -> NftablesResponder:
    runner = SubprocessRunner(prefix=("ip", "netns", "exec", lab.srv))
    config = NftablesConfig(backend="nft", **kw)  # type: ignore[arg-type]
    return NftablesResponder(config, clock=SystemClock(), commands=runner)


def _elements(ns: Lab) -> set[str]:
    text = run(ns.ns(ns.srv, ["nft", "-j", "list", "table", "inet", "aisentinel"]), check=False)
    if not text:
        return set()  # no table (yet)
    data = json.loads(text)
    out: set[str] = set()
    for item in data["nftables"]:
        s = item.get("set")
        if not s:
            continue
        length = s["name"].split("_")[1]
        for elem in s.get("elem", []):
            val = elem["elem"]["val"] if isinstance(elem, dict) else elem
            full = s["name"] in ("v4_32", "v6_128")
            out.add(val if full else f"{val}/{length}")
    return out


def test_ban_drops_the_attacker_and_not_the_legitimate_client(lab: tuple[Lab, int]) -> None:
    """After a ban the attacker's TCP connection to nginx fails; the other client's works."""
    ns, port = lab
    assert ns.reachable(ns.atk, SERVER4["atk"], port)
    responder = _responder(ns)
    responder.reconcile([])
    responder.add_many([_ban(ATTACKER4, 600)])
    responder.commit()
    assert not ns.reachable(ns.atk, SERVER4["atk"], port)
    assert ns.reachable(ns.ok, SERVER4["ok"], port)
    responder.delete_many([_ban(ATTACKER4, 600)])
    responder.commit()
    assert ns.reachable(ns.atk, SERVER4["atk"], port)


def test_ipv6_ban_covers_the_attackers_whole_64(lab: tuple[Lab, int]) -> None:
    """An IPv6 ban of the attacker's /64 drops it over IPv6; IPv4 and the other /64 pass."""
    ns, port = lab
    responder = _responder(ns)
    responder.reconcile([])
    target = AddressTarget.parse(ATTACKER6).grouped(64).text
    assert target == "fd00:a15e:1::/64"
    responder.add_many([_ban(target, 600)])
    responder.commit()
    assert not ns.reachable(ns.atk, SERVER6["atk"], port)
    assert ns.reachable(ns.atk, SERVER4["atk"], port)
    assert ns.reachable(ns.ok, SERVER6["ok"], port)


def test_ban_disappears_at_its_timeout(lab: tuple[Lab, int]) -> None:
    """The kernel removes the element when its timeout ends; the attacker gets through again."""
    ns, port = lab
    responder = _responder(ns)
    responder.reconcile([])
    responder.add_many([_ban(ATTACKER4, 2)])
    responder.commit()
    assert not ns.reachable(ns.atk, SERVER4["atk"], port, timeout=0.5)
    assert wait_for(lambda: ns.reachable(ns.atk, SERVER4["atk"], port, timeout=0.5), timeout=15)
    assert ATTACKER4 not in _elements(ns)


def test_flushed_ruleset_is_repaired_by_health_and_by_reconcile(lab: tuple[Lab, int]) -> None:
    """`nft flush ruleset` removes the bans; the health check puts table and bans back."""
    ns, port = lab
    responder = _responder(ns)
    responder.reconcile([_ban(ATTACKER4, 600)])
    assert not ns.reachable(ns.atk, SERVER4["atk"], port, timeout=0.5)
    ns.nft("flush", "ruleset")
    assert ns.reachable(ns.atk, SERVER4["atk"], port)
    health = responder.health()
    assert health.ok, health.detail
    assert "re-created with 1 bans" in health.detail
    assert not ns.reachable(ns.atk, SERVER4["atk"], port, timeout=0.5)
    ns.nft("flush", "ruleset")
    responder.reconcile([_ban(ATTACKER4, 600), _ban(CLIENT4, 600)])
    assert _elements(ns) == {ATTACKER4, CLIENT4}


@pytest.fixture
def bare() -> Iterator[Lab]:
    """The lab's namespaces without nginx (for tests that only read the sets)."""
    lab = Lab("b").up()
    try:
        yield lab
    finally:
        lab.close()


def test_commit_after_a_flushed_ruleset_puts_back_every_ban_held(bare: Lab) -> None:
    """After `nft flush ruleset` the next ban's commit re-creates the table with every
    ban held, not with that batch's ban alone."""
    responder = _responder(bare)
    held = [f"203.0.113.{i}" for i in range(1, 6)]
    responder.reconcile([_ban(t, 600) for t in held])
    bare.nft("flush", "ruleset")
    responder.add_many([_ban("203.0.113.99", 600)])
    responder.commit()
    assert _elements(bare) == {*held, "203.0.113.99"}
    assert responder.repairs == 1
    assert responder.health().ok


def test_health_puts_back_bans_flushed_from_a_set(bare: Lab) -> None:
    """`nft flush set` leaves chains and rules intact; health notices the missing
    element and adds it back, keeping the table and every other element in it (an
    element it does not hold, too: the table is not re-created)."""
    responder = _responder(bare)
    held = {"203.0.113.7", "198.51.100.0/24", "2001:db8:1::/64"}
    responder.reconcile([_ban(t, 600) for t in held])
    assert responder.health().detail.endswith("3 bans in table inet aisentinel")
    bare.nft("add", "element", "inet", "aisentinel", "v6_64", "{ 2001:db8:2:: timeout 600s }")
    bare.nft("flush", "set", "inet", "aisentinel", "v4_32")
    health = responder.health()
    assert health.ok, health.detail
    assert health.detail == "1 of the 3 bans held are not in the sets; 1 added back"
    assert responder.repairs == 1
    assert _elements(bare) == {*held, "2001:db8:2::/64"}


def _drop_rules(lab: Lab, chain: str) -> list[str]:
    """The drop rules of ``chain`` in aisentinel's table, as nft lists them."""
    listed = lab.nft("list", "chain", "inet", "aisentinel", chain)
    return [line.strip() for line in listed.splitlines() if line.strip().endswith(" drop")]


def test_health_repairs_a_flushed_forward_chain(bare: Lab) -> None:
    """`nft flush chain ... forward` (Docker-published ports open to banned sources)
    is damage: one health check re-creates the table with its drop rules and bans."""
    responder = _responder(bare)
    responder.reconcile([_ban("203.0.113.7", 600)])
    assert len(_drop_rules(bare, "forward")) == 3
    bare.nft("flush", "chain", "inet", "aisentinel", "forward")
    health = responder.health()
    assert health.ok, health.detail
    assert "chain forward holds 0 rules, 3 of its 3 drop rules missing" in health.detail
    assert len(_drop_rules(bare, "forward")) == 3
    assert _elements(bare) == {"203.0.113.7"}
    assert responder.repairs == 1
    assert responder.health().detail.endswith("1 bans in table inet aisentinel")


def test_health_repairs_a_drop_rule_turned_to_accept(bare: Lab) -> None:
    """An input rule rewritten from drop to accept (same count of rules) is damage: one
    health check puts the drop rule back, with the bans held and their timeouts."""
    responder = _responder(bare)
    responder.reconcile([_ban("203.0.113.7", 600)])
    listed = bare.nft("-a", "list", "chain", "inet", "aisentinel", "input")
    handle = next(line for line in listed.splitlines() if "@v4_32" in line).split()[-1]
    bare.nft(
        "replace", "rule", "inet", "aisentinel", "input", "handle", handle,
        "ip", "saddr", "@v4_32", "accept",
    )  # fmt: skip
    assert not any("@v4_32" in rule for rule in _drop_rules(bare, "input"))
    health = responder.health()
    assert health.ok, health.detail
    assert "chain input holds 3 rules, 1 of its 3 drop rules missing or changed" in health.detail
    assert any("@v4_32" in rule for rule in _drop_rules(bare, "input"))
    assert _elements(bare) == {"203.0.113.7"}
    assert "timeout" in bare.nft("list", "set", "inet", "aisentinel", "v4_32")
    assert responder.repairs == 1


def test_reconcile_holds_exactly_the_ledger_and_leaves_other_tables(lab: tuple[Lab, int]) -> None:
    """Unknown elements in aisentinel's table go, missing ones come; another table is untouched."""
    ns, _port = lab
    ns.nft("add", "table", "inet", "admin")
    ns.nft("add", "set", "inet", "admin", "keep", "{", "type", "ipv4_addr", ";", "}")
    ns.nft("add", "element", "inet", "admin", "keep", "{", "192.0.2.1", "}")
    responder = _responder(ns)
    responder.reconcile([_ban("198.51.100.7", 600)])
    ns.nft("add", "element", "inet", "aisentinel", "v4_32", "{", "203.0.113.9", "}")
    responder.reconcile([_ban("198.51.100.8", 600), _ban("10.99.0.0/16", 600)])
    assert _elements(ns) == {"198.51.100.8", "10.99.0.0/16"}
    assert "192.0.2.1" in ns.nft("list", "table", "inet", "admin")


def test_libnftables_in_process_bans_20000_in_one_transaction(lab: tuple[Lab, int]) -> None:
    """In the server namespace, libnftables (no nft process) loads 20,000 bans and drops."""
    ns, port = lab
    script = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from aisentinel.clock import SystemClock
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder
now = time.time()
def ban(t):
    return Decision(now, Action.BAN, AddressTarget.parse(t), "t", Severity.HIGH, "t",
                    ttl=600, expires_at=now + 600)
active = [ban(f"10.{{200 + i // 65536}}.{{i // 256 % 256}}.{{i % 256}}") for i in range(19999)]
active.append(ban({ATTACKER4!r}))
r = NftablesResponder(NftablesConfig(backend="libnftables"), clock=SystemClock())
r.reconcile(active)
print(r.backend.name, r.health().ok)
"""
    out = subprocess.run(
        ns.ns(ns.srv, [sys.executable, "-c", script]),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].split() == ["libnftables", "True"]
    assert len(_elements(ns)) == 20000
    assert not ns.reachable(ns.atk, SERVER4["atk"], port, timeout=0.5)
    assert ns.reachable(ns.ok, SERVER4["ok"], port)


DAEMON_CONFIG = """
[daemon]
state_dir = "{tmp}/state"
log_format = "json"
heartbeat_interval = "200ms"
expire_interval = "1s"
control_socket = ""

[exporter]
enabled = false

[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{tmp}/auth.log"]
start_at = "beginning"

[audit]
enabled = false
{extra}"""
"""A daemon reading ``auth.log`` in ``tmp`` (then the tables of ``extra``)."""


def _start_daemon(ns: Lab, tmp_path: Path, config: Path) -> subprocess.Popen[bytes]:
    """``aisentinel run`` on ``config`` in the server namespace, logging to ``d.log``."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    argv = [sys.executable, "-m", "aisentinel", "run", "--config", str(config)]
    return ns.start(ns.srv, argv, env=env, stdout=(tmp_path / "d.log").open("ab"),
                    stderr=subprocess.STDOUT)  # fmt: skip


def test_kill9_mid_storm_then_restart_ledger_and_set_agree(
    lab: tuple[Lab, int], tmp_path: Path
) -> None:
    """The daemon (nftables on) in the server namespace is killed mid-storm; after restart
    the nft set holds exactly the ledger's active bans."""
    ns, _port = lab
    log = tmp_path / "auth.log"
    log.write_text("")
    config = tmp_path / "aisentinel.toml"
    extra = "\n[decisions]\nmax_bans_per_minute = 10000\n\n[responders.nftables]\n"
    config.write_text(DAEMON_CONFIG.format(tmp=tmp_path, extra=extra))

    def daemon() -> subprocess.Popen[bytes]:
        return _start_daemon(ns, tmp_path, config)

    first = daemon()
    ts = time.strftime("%b %e %H:%M:%S")
    with log.open("a") as fh:
        for i in range(1500):
            ip = f"198.18.{i // 250}.{i % 250 + 1}"
            for k in range(6):
                fh.write(f"{ts} box sshd[{4000 + k}]: Failed password for root from {ip} "
                         f"port {40000 + k} ssh2\n")  # fmt: skip
            if i % 50 == 0:
                fh.flush()
                time.sleep(0.02)
            if i == 600:
                assert wait_for(lambda: len(_elements(ns)) > 0, timeout=30)
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
        for k in range(6):  # the last attacker: once it is banned, the file was all read
            fh.write(
                f"{ts} box sshd[5000]: Failed password for root from 198.18.9.9 port {k} ssh2\n"
            )
    second = daemon()

    def agree() -> bool:
        ledger = Ledger(tmp_path / "state" / "decisions.sqlite3", SystemClock())
        try:
            now = time.time()
            active = {
                d.target.text
                for d in ledger.open_bans()
                if d.target is not None and (d.expires_at or 0) > now
            }
        finally:
            ledger.close()
        held = _elements(ns)
        seen[:] = [len(active), len(held), len(held ^ active)]
        return "198.18.9.9" in active and held == active

    seen: list[int] = []
    assert wait_for(agree, timeout=60), f"ledger, set, differing: {seen}"
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0


def test_enabling_nftables_by_a_reload_counts_no_repair(bare: Lab, tmp_path: Path) -> None:
    """The documented rollout (dry-run first, then [responders.nftables] and a reload):
    the new responder makes its table with the bans in force, and neither logs damage nor
    counts a repair (AisentinelFirewallTampered would fire on a repair)."""
    log = tmp_path / "auth.log"
    log.write_text("")
    config = tmp_path / "aisentinel.toml"
    config.write_text(DAEMON_CONFIG.format(tmp=tmp_path, extra=""))
    daemon_log = tmp_path / "d.log"
    proc = _start_daemon(bare, tmp_path, config)
    entries: list[dict[str, object]] = []

    def logged(event: str) -> bool:
        entries[:] = [json.loads(line) for line in daemon_log.read_text().splitlines()]
        return any(e.get("event") == event for e in entries)

    assert wait_for(lambda: logged("decisions restored"), timeout=30), daemon_log.read_text()
    ts = time.strftime("%b %e %H:%M:%S")
    with log.open("a") as fh:
        fh.writelines(
            f"{ts} box sshd[4000]: Failed password for root from 198.18.0.7 port {k} ssh2\n"
            for k in range(6)
        )
    assert wait_for(lambda: logged("decision"), timeout=30), daemon_log.read_text()
    with config.open("a") as fh:
        fh.write('\n[responders.dryrun]\n\n[responders.nftables]\nbackend = "nft"\n')
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _elements(bare) == {"198.18.0.7"}, timeout=30), daemon_log.read_text()
    time.sleep(1.0)  # a health check after the reconcile finds the table as made
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    logged("")
    damaged = [e for e in entries if str(e.get("event", "")).startswith("nftables table damaged")]
    assert damaged == [], damaged
    assert any(e.get("event") == "nftables reconciled" for e in entries)
