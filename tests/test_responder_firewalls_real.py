"""The fail2ban and ufw responders against the real tools, isolated from the host.

fail2ban: a private ``fail2ban-server`` started by the test with the shipped jail and
filter (its own socket, pid file, in-memory database and log in tmp; the jail's ban
action is overridden by a no-op so the host firewall is never touched).
ufw: in a network namespace made by the test, inside a private mount namespace whose
/etc/ufw is a tmp copy (``unshare -m`` + bind mount), so the host's ufw files and
rules are never touched; nginx serves in the server namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from nsharness import ATTACKER4, SERVER4, Lab, missing_tools

from aisentinel.clock import SystemClock
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.responders.fail2ban import Fail2banConfig, Fail2banResponder

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "packaging" / "fail2ban"
pytestmark = pytest.mark.root


def _ban(target: str, ttl: float = 600) -> Decision:
    now = time.time()
    return Decision(
        now, Action.BAN, AddressTarget.parse(target), "test", Severity.HIGH, "test",
        ttl=ttl, expires_at=now + ttl,
    )  # fmt: skip


@pytest.fixture
def fail2ban(tmp_path: Path) -> Iterator[Path]:
    """A private fail2ban-server with the shipped jail; yields its socket."""
    why = missing_tools("fail2ban-server", "fail2ban-client")
    if why:
        pytest.skip(why)
    conf = tmp_path / "conf"
    shutil.copytree(SHIPPED, conf)
    for name in ("fail2ban.conf", "jail.conf", "paths-common.conf", "paths-debian.conf"):
        shutil.copy(Path("/etc/fail2ban") / name, conf / name)
    (conf / "action.d").mkdir()
    (conf / "action.d" / "test-noop.conf").write_text(
        "[Definition]\nactionban = true\nactionunban = true\n"
    )
    (conf / "jail.d" / "zz-test.local").write_text("[aisentinel]\naction = test-noop\n")
    sock = tmp_path / "f2b.sock"
    (conf / "fail2ban.local").write_text(
        f"[Definition]\nsocket = {sock}\npidfile = {tmp_path}/f2b.pid\n"
        f"dbfile = :memory:\nlogtarget = {tmp_path}/f2b.log\n"
    )
    server = subprocess.Popen(
        ["fail2ban-server", "-f", "-x", "-c", str(conf), "-s", str(sock),
         "-p", str(tmp_path / "f2b.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        responder = Fail2banResponder(Fail2banConfig(socket=sock), clock=SystemClock())
        assert wait_for(lambda: responder.health().ok, timeout=30), "fail2ban-server not up"
        yield sock
    finally:
        server.terminate()
        server.wait(timeout=30)


def _status(sock: Path) -> str:
    return subprocess.run(
        ["fail2ban-client", "-s", str(sock), "status", "aisentinel"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_fail2ban_ban_shows_in_jail_status_and_leaves_on_unban(fail2ban: Path) -> None:
    """The banned address is in `fail2ban-client status aisentinel` and gone after the lift."""
    responder = Fail2banResponder(Fail2banConfig(socket=fail2ban), clock=SystemClock())
    responder.add_many([_ban("198.51.100.23"), _ban("2001:db8:5::/64")])
    responder.commit()
    listed = _status(fail2ban)
    assert "198.51.100.23" in listed
    assert "2001:db8:5::/64" in listed
    responder.delete_many([_ban("198.51.100.23")])
    responder.commit()
    assert "198.51.100.23" not in _status(fail2ban)


def test_fail2ban_reconcile_makes_the_jail_hold_the_ledger(fail2ban: Path) -> None:
    """An address banned behind aisentinel's back is lifted; a missing ban is added."""
    subprocess.run(
        ["fail2ban-client", "-s", str(fail2ban), "set", "aisentinel", "banip", "192.0.2.99"],
        check=True, capture_output=True,
    )  # fmt: skip
    responder = Fail2banResponder(Fail2banConfig(socket=fail2ban), clock=SystemClock())
    responder.reconcile([_ban("198.51.100.24")])
    assert responder.banned() == {"198.51.100.24"}


CLEAN_UP = "fail2ban-client reload --unban aisentinel"
"""The hand clean-up of the jail once aisentinel is gone, as the package and docs give it."""


def test_fail2ban_clean_up_the_package_and_docs_give_empties_the_jail(fail2ban: Path) -> None:
    """prerm, the jail file, install.md and enforcement.md give one clean-up command, and
    on this fail2ban it lifts every ban of the jail."""
    for rel in (
        "packaging/debian/prerm",
        "packaging/fail2ban/jail.d/aisentinel.conf",
        "docs/install.md",
        "docs/enforcement.md",
    ):
        text = " ".join((REPO / rel).read_text().split())  # a command wrapped over lines
        assert CLEAN_UP in text, rel
    client = ["fail2ban-client", "-s", str(fail2ban), "-c", str(fail2ban.parent / "conf")]
    subprocess.run(
        [*client, "set", "aisentinel", "banip", "192.0.2.98", "2001:db8:6::/64"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert "192.0.2.98" in _status(fail2ban)
    result = subprocess.run(
        [*client, *CLEAN_UP.split()[1:]], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    responder = Fail2banResponder(Fail2banConfig(socket=fail2ban), clock=SystemClock())
    assert wait_for(lambda: responder.health().ok and not responder.banned())


UFW_RUN = """
import json, subprocess, sys
etc = sys.argv[1]
subprocess.run(["mount", "--bind", etc, "/etc/ufw"], check=True)
sys.path.insert(0, sys.argv[2])
import time
from aisentinel.clock import SystemClock
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.responders.ufw import UfwConfig, UfwResponder
def ban(t):
    now = time.time()
    return Decision(now, Action.BAN, AddressTarget.parse(t), "test", Severity.HIGH, "t",
                    ttl=600, expires_at=now + 600)
r = UfwResponder(UfwConfig(), clock=SystemClock())
op, targets = sys.argv[3], sys.argv[4:]
if op == "enable":
    subprocess.run(["ufw", "--force", "enable"], check=True, capture_output=True)
    subprocess.run(["ufw", "allow", targets[0] + "/tcp"], check=True, capture_output=True)
elif op == "add":
    r.add_many([ban(t) for t in targets]); r.commit()
elif op == "delete":
    r.delete_many([ban(t) for t in targets]); r.commit()
elif op == "reconcile":
    r.reconcile([ban(t) for t in targets])
elif op == "admin":
    subprocess.run(["ufw", "deny", "from", targets[0], "comment", "admin block"], check=True,
                   capture_output=True)
elif op == "opsport":
    subprocess.run(["ufw", "deny", "from", targets[0], "to", "any", "port", "22", "proto", "tcp",
                    "comment", "ops: old bastion"], check=True, capture_output=True)
elif op == "rules":
    status = subprocess.run(["ufw", "status"], check=True, capture_output=True, text=True)
    print(json.dumps(sorted(t for t in targets if t in status.stdout)))
    sys.exit(0)
print(json.dumps(sorted(r.held())))
"""


KEEPALIVE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
def get():
    try:
        c.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        return b" 200 " in c.recv(1000)
    except OSError:
        return False
print(get(), flush=True)
sys.stdin.readline()
print(get(), flush=True)
"""


def test_ufw_ban_in_a_namespace_with_private_ufw_files(tmp_path: Path) -> None:
    """ufw (isolated /etc/ufw, in the server namespace) drops the attacker after the ban,
    its keep-alive connection included (where conntrack is installed);
    the legitimate client passes; reconcile removes unknown aisentinel rules; the end of
    a ban leaves the operator's own deny rules and lifts aisentinel's beside them; the
    host's /etc/ufw is unchanged."""
    why = missing_tools("ufw", "iptables", "nginx", "unshare")
    if why:
        pytest.skip(why)
    before = {p.name: p.read_bytes() for p in Path("/etc/ufw").glob("*.rules")}
    etc = tmp_path / "etc-ufw"
    shutil.copytree("/etc/ufw", etc, symlinks=True)
    lab = Lab("u").up()
    try:
        port = 18080
        lab.nginx(tmp_path / "nginx", port)
        assert wait_for(lambda: lab.reachable(lab.ok, SERVER4["ok"], port), timeout=10)

        def ufw(op: str, *targets: str) -> list[str]:
            argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                    UFW_RUN, str(etc), str(REPO), op, *targets]  # fmt: skip
            out = subprocess.run(lab.ns(lab.srv, argv), capture_output=True, text=True,
                                 timeout=120, check=False)  # fmt: skip
            assert out.returncode == 0, out.stderr[-2000:]
            import json

            return list(json.loads(out.stdout.splitlines()[-1]))

        assert ufw("enable", str(port)) == []
        assert lab.reachable(lab.atk, SERVER4["atk"], port)
        # A keep-alive connection opened before the ban: cut by it (conntrack entries
        # deleted), not served on through ufw's accept of established flows.
        client = lab.start(lab.atk, [sys.executable, "-c", KEEPALIVE, SERVER4["atk"],
                           str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert client.stdout.readline() == b"True\n"  # type: ignore[union-attr]
        assert ufw("add", ATTACKER4) == [ATTACKER4]
        out, _ = client.communicate(b"\n", timeout=30)
        if shutil.which("conntrack", path="/usr/sbin:/usr/bin:/sbin"):
            assert out == b"False\n"
        assert not lab.reachable(lab.atk, SERVER4["atk"], port, timeout=0.5)
        assert lab.reachable(lab.ok, SERVER4["ok"], port)
        assert ufw("reconcile", "198.51.100.40") == ["198.51.100.40"]
        assert lab.reachable(lab.atk, SERVER4["atk"], port)
        assert ufw("delete", "198.51.100.40") == []
        # The operator's own rule: aisentinel's identical one is skipped by ufw (its route
        # rule is its own), and the end of aisentinel's ban leaves the operator's rule.
        assert ufw("admin", ATTACKER4) == []
        assert ufw("add", ATTACKER4) == [ATTACKER4]
        assert ufw("delete", ATTACKER4) == []
        assert ufw("rules", ATTACKER4) == [ATTACKER4]
        # The operator's commented port rule for a banned source, listed after
        # aisentinel's rules, neither hides them from the lift nor is deleted by it.
        assert ufw("add", "198.51.100.41") == ["198.51.100.41"]
        assert ufw("opsport", "198.51.100.41") == ["198.51.100.41"]
        assert ufw("delete", "198.51.100.41") == []
        assert ufw("rules", "198.51.100.41") == ["198.51.100.41"]
    finally:
        lab.close()
    assert {p.name: p.read_bytes() for p in Path("/etc/ufw").glob("*.rules")} == before
