"""`aisentinel withdraw`: every enforcement lifted with the daemon stopped, none while it runs.

The nftables test runs the daemon and the command in a network namespace made by the
test (tests/nsharness.py), against the real kernel; ufw, fail2ban and throttle run
against a FakeRunner and a fixture cgroup tree, as their responder tests do.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PACKAGE_PATH, wait_for
from nsharness import Lab, missing_tools, run
from test_responder_firewalls import STATUS

from aisentinel.clock import FakeClock, SystemClock
from aisentinel.commands import FakeRunner
from aisentinel.config import ConfigError, load_config
from aisentinel.control import ControlServer
from aisentinel.daemon import Daemon
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Severity,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.responders.throttle import ThrottleConfig, ThrottleResponder
from aisentinel.withdraw import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    fallback_config,
    withdraw_all,
)

NOW = 1_800_000_000.0
NFT = ("nft", "-j", "-f", "-")
UFW_STATUS = ("ufw", "status", "numbered")
UFW_DELETES = [  # the rules of STATUS commented aisentinel; the admin's stay
    ("ufw", "delete", "deny", "from", "192.0.2.66", "comment", "aisentinel scanning"),
    ("ufw", "delete", "deny", "from", "2001:db8::/64", "comment", "aisentinel ban"),
    ("ufw", "delete", "deny", "from", "203.0.113.7", "comment", "aisentinel ssh_bruteforce"),
    (
        "ufw",
        "route",
        "delete",
        "deny",
        "from",
        "203.0.113.7",
        "comment",
        "aisentinel ssh_bruteforce",
    ),
]
F2B_GET = ("fail2ban-client", "get", "aisentinel", "banip")
F2B_UNBAN = ("fail2ban-client", "set", "aisentinel", "unbanip", "198.51.100.4", "203.0.113.9")


def _ban(target: str, now: float, ttl: float = 3600.0) -> Decision:
    return Decision(
        now, Action.BAN, AddressTarget.parse(target), "test", Severity.HIGH, "test",
        ttl=ttl, expires_at=now + ttl,
    )  # fmt: skip


# ---------------------------------------------------------------------- fixtures


def _cgroup_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 tree with /ai/job, and a procfs with our own pid in /."""
    root, proc = tmp_path / "cg", tmp_path / "proc"
    (root / "ai" / "job").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu\n")
    for d in (root, root / "ai", root / "ai" / "job"):
        (d / "cpu.max").write_text("max 100000\n")
        (d / "cgroup.freeze").write_text("0\n")
    (proc / str(os.getpid())).mkdir(parents=True)
    (proc / str(os.getpid()) / "cgroup").write_text("0::/\n")
    return root, proc


def _fixture_host(tmp_path: Path, *, socket: str = "") -> Path:
    """A config with ufw, fail2ban and throttle on, a workload frozen by an earlier run
    (state_dir/throttle.json), a pending withdrawal of nftables table ``old``
    (state_dir/responders.json) and a ledger holding one ban; returns the config."""
    root, proc = _cgroup_tree(tmp_path)
    state = tmp_path / "state"
    frozen = ThrottleResponder(
        ThrottleConfig(cgroup_root=root, proc_root=proc),
        clock=FakeClock(NOW),
        commands=FakeRunner(),
        state_dir=state,
    )
    freeze = Decision(
        NOW, Action.FREEZE, WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"), "gpu_abuse",
        Severity.HIGH, "test", ttl=600.0, expires_at=NOW + 600.0,
    )  # fmt: skip
    frozen.add_many([freeze])
    frozen.commit()
    assert (root / "ai" / "job" / "cgroup.freeze").read_text() == "1"
    throttle = {"cgroup_root": str(root), "proc_root": str(proc)}
    record = {
        "responders": {"throttle": throttle, "ufw": {}},
        "withdrawing": [{"name": "nftables", "config": {"table": "old", "backend": "nft"}}],
    }
    (state / "responders.json").write_text(json.dumps(record))
    ledger = Ledger(state / "decisions.sqlite3", FakeClock(NOW))
    ledger.record(_ban("203.0.113.7", NOW))
    ledger.close()
    config = tmp_path / "aisentinel.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{socket}"\n'
        f'[responders.throttle]\ncgroup_root = "{root}"\nproc_root = "{proc}"\n'
        "[responders.ufw]\n[responders.fail2ban]\n"
    )
    return config


def _answers(nft_ok: bool = True) -> FakeRunner:
    nft = FakeRunner.ok(NFT) if nft_ok else FakeRunner.ok(NFT, stderr="Error: busy", returncode=1)
    return FakeRunner({
        UFW_STATUS: FakeRunner.ok(UFW_STATUS, STATUS),
        **{rm: FakeRunner.ok(rm) for rm in UFW_DELETES},
        F2B_GET: FakeRunner.ok(F2B_GET, "203.0.113.9 198.51.100.4\n"),
        F2B_UNBAN: FakeRunner.ok(F2B_UNBAN),
        NFT: nft,
    })  # fmt: skip


def _withdraw(config: Path, fake: FakeRunner, *, force: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = withdraw_all(load_config(config), out, err, force=force, commands=fake)
    return rc, out.getvalue(), err.getvalue()


def _pending(tmp_path: Path) -> list[str]:
    doc = json.loads((tmp_path / "state" / "responders.json").read_text())
    return [str(w["config"].get("table", w["name"])) for w in doc["withdrawing"]]


# ---------------------------------------------------------------------- fixtures: tests


def test_withdraw_lifts_ufw_fail2ban_throttle_and_a_pending_table(tmp_path: Path) -> None:
    """Each responder is withdrawn through its own withdraw(): ufw deletes only its
    commented rules, fail2ban unbans its jail, throttle thaws what throttle.json records,
    the pending nftables table is deleted; one line each, exit 0, the ledger kept."""
    config = _fixture_host(tmp_path)
    ledger_before = (tmp_path / "state" / "decisions.sqlite3").read_bytes()
    fake = _answers()
    rc, out, err = _withdraw(config, fake)
    assert rc == EXIT_OK, err
    assert out.splitlines() == [
        "fail2ban: 2 addresses unbanned from jail aisentinel",
        "nftables: table inet old deleted",
        "throttle: 1 throttled or frozen workloads put back as they were",
        "ufw: 4 deny rules commented aisentinel deleted",
    ]
    ufw_calls = [c for c in fake.calls if c[0] == "ufw"]
    assert ufw_calls == [UFW_STATUS, *UFW_DELETES]  # the admin's 192.0.2.50 and .51 stay
    assert [c for c in fake.calls if c[0] == "fail2ban-client"] == [F2B_GET, F2B_UNBAN]
    nft_doc = json.loads(fake.inputs[fake.calls.index(NFT)] or "{}")["nftables"]
    assert {"delete": {"table": {"family": "inet", "name": "old"}}} in nft_doc
    assert (tmp_path / "cg" / "ai" / "job" / "cgroup.freeze").read_text() == "0"
    assert json.loads((tmp_path / "state" / "throttle.json").read_text())["held"] == []
    assert _pending(tmp_path) == []  # done: the next start need not try again
    assert (tmp_path / "state" / "decisions.sqlite3").read_bytes() == ledger_before


def test_a_failed_withdrawal_is_reported_the_others_done_exit_1(tmp_path: Path) -> None:
    """A withdrawal that fails (nft refuses) is one FAILED line and exit 1; the other
    responders are still withdrawn, and the failed pending one stays recorded."""
    config = _fixture_host(tmp_path)
    rc, out, _ = _withdraw(config, _answers(nft_ok=False))
    assert rc == EXIT_FAILED
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("nftables: FAILED: nftables: ")
    assert "busy" in lines[1]
    assert lines[3] == "ufw: 4 deny rules commented aisentinel deleted"
    assert (tmp_path / "cg" / "ai" / "job" / "cgroup.freeze").read_text() == "0"
    assert _pending(tmp_path) == ["old"]


def test_a_refused_config_still_withdraws_what_is_recorded_and_named(tmp_path: Path) -> None:
    """A config refused for an unrelated typo (and a fail2ban table refused) still gives
    its state directory and responders: the recorded ones, ufw, and fail2ban with its
    defaults (jail aisentinel) are all withdrawn, each refused part noted."""
    config = _fixture_host(tmp_path)
    refused = '[responders.fail2ban]\njail = "no such!"\n'
    text = config.read_text().replace("[responders.fail2ban]\n", refused)
    config.write_text(text + "[exporter]\nlisten_adress = '127.0.0.1'\n")
    with pytest.raises(ConfigError):
        load_config(config)
    salvaged, notes = fallback_config(config)
    assert salvaged.daemon.state_dir == tmp_path / "state"
    assert notes == ["responders.fail2ban is refused: its defaults are used"]
    fake = _answers()
    out, err = io.StringIO(), io.StringIO()
    rc = withdraw_all(salvaged, out, err, commands=fake)
    assert rc == EXIT_OK, err.getvalue()
    assert out.getvalue().splitlines() == [
        "fail2ban: 2 addresses unbanned from jail aisentinel",
        "nftables: table inet old deleted",
        "throttle: 1 throttled or frozen workloads put back as they were",
        "ufw: 4 deny rules commented aisentinel deleted",
    ]
    assert (tmp_path / "cg" / "ai" / "job" / "cgroup.freeze").read_text() == "0"


def test_a_refused_config_leaves_out_a_responder_switched_off_in_it(tmp_path: Path) -> None:
    """A responder whose refused section says ``enabled = false`` is not withdrawn with
    its defaults: the operator switched it off (only the recorded ones are withdrawn)."""
    config = _fixture_host(tmp_path)
    text = config.read_text().replace(
        "[responders.fail2ban]\n", '[responders.fail2ban]\nenabled = false\njail = "no such!"\n'
    )
    config.write_text(text)
    with pytest.raises(ConfigError):
        load_config(config)
    salvaged, _ = fallback_config(config)
    assert "fail2ban" not in salvaged.responders
    assert "ufw" in salvaged.responders


def test_the_command_says_the_config_is_refused_and_withdraws(tmp_path: Path) -> None:
    """`aisentinel withdraw` on a refused config prints each config error and one line
    saying what it withdraws instead, then withdraws the record (exit 0), not exit 1."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "responders.json").write_text(json.dumps({"responders": {"dryrun": {}}}))
    config = tmp_path / "aisentinel.toml"
    config.write_text(f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = ""\nbogus = 1\n')
    argv = [sys.executable, "-m", "aisentinel", "withdraw", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert f"config error: {config}: daemon.bogus:" in done.stderr
    assert f"the config is refused (see above); withdrawing what {state} records" in done.stderr
    assert done.stdout.splitlines() == ["dryrun: nothing to lift (dry run)"]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_records_rewritten_by_root_stay_the_daemons_user(tmp_path: Path) -> None:
    """Run as root (the package's prerm), withdraw rewrites throttle.json and
    responders.json with the owner they had, so the daemon's user can still read them."""
    config = _fixture_host(tmp_path)
    records = [tmp_path / "state" / name for name in ("throttle.json", "responders.json")]
    for path in records:
        os.chown(path, 65534, 65534)
    rc, _, err = _withdraw(config, _answers())
    assert rc == EXIT_OK, err
    assert _pending(tmp_path) == []  # rewritten
    for path in records:
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path


def test_withdraw_refuses_while_the_control_socket_answers(tmp_path: Path) -> None:
    """With a daemon answering on the config's control socket nothing is run (exit 2);
    --force goes on."""
    sock = tmp_path / "control.sock"
    server = ControlServer(sock, {"status": lambda _args: {}})
    server.start()
    try:
        config = _fixture_host(tmp_path, socket=str(sock))
        fake = _answers()
        rc, out, err = _withdraw(config, fake)
        assert rc == EXIT_REFUSED
        assert f"a daemon answers on {sock}" in err
        assert "stop it first" in err
        assert (fake.calls, out) == ([], "")
        assert (tmp_path / "cg" / "ai" / "job" / "cgroup.freeze").read_text() == "1"
        rc, _, _ = _withdraw(config, fake, force=True)
        assert rc == EXIT_OK
    finally:
        server.stop()


def test_withdraw_refuses_while_a_daemon_runs_with_its_socket_off(tmp_path: Path) -> None:
    """A running daemon holds state_dir/daemon.lock: withdraw refuses (exit 2) even with
    no control socket, and works once the daemon has stopped."""
    config = _fixture_host(tmp_path)
    fake = _answers()
    daemon = Daemon(load_config(config), config_path=config, commands=fake)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.started.wait(10)
        rc, out, err = _withdraw(config, FakeRunner())
        assert rc == EXIT_REFUSED
        assert "daemon.lock" in err
        assert out == ""
    finally:
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    rc, out, err = _withdraw(config, _answers())
    assert rc == EXIT_OK, out + err


# ---------------------------------------------------------------------- real nftables

WHY = missing_tools("nft")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Network namespaces of the test's own (only the server one is used)."""
    with Lab("w") as lab:
        yield lab


def _table(lab: Lab, name: str) -> str:
    return run(lab.ns(lab.srv, ["nft", "list", "table", "inet", name]), check=False)


@pytest.mark.root
@pytest.mark.skipif(WHY is not None, reason=WHY or "")
def test_withdraw_deletes_the_nftables_table_the_daemon_left(lab: Lab, tmp_path: Path) -> None:
    """In a namespace: the daemon's table survives its stop; `aisentinel withdraw`
    refuses while the daemon runs, then deletes the table (only its own) and keeps the
    ledger, whose active ban the next start puts back."""
    state = tmp_path / "state"
    now = time.time()
    ledger = Ledger(state / "decisions.sqlite3", SystemClock())
    ledger.record(_ban("203.0.113.77", now))
    ledger.close()
    (tmp_path / "auth.log").write_text("")
    config = tmp_path / "aisentinel.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\nlog_format = "json"\ncontrol_socket = ""\n'
        f'heartbeat_interval = "200ms"\n[exporter]\nenabled = false\n[audit]\nenabled = false\n'
        f'[[sources]]\nname = "auth"\ntype = "file"\nparser = "sshd"\n'
        f'paths = ["{tmp_path / "auth.log"}"]\n[responders.nftables]\n'
    )
    run(lab.ns(lab.srv, ["nft", "add", "table", "inet", "neighbour"]))
    env = {"PYTHONPATH": PACKAGE_PATH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def daemon() -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "aisentinel", "run", "--config", str(config)]
        return lab.start(lab.srv, argv, env=env, stdout=(tmp_path / "d.log").open("ab"),
                         stderr=subprocess.STDOUT)  # fmt: skip

    def withdraw() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aisentinel", "withdraw", "--config", str(config)]
        return subprocess.run(lab.ns(lab.srv, argv), env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

    first = daemon()
    assert wait_for(lambda: "203.0.113.77" in _table(lab, "aisentinel"), timeout=30)
    refused = withdraw()
    assert refused.returncode == EXIT_REFUSED, refused.stdout + refused.stderr
    assert "daemon.lock" in refused.stderr
    stop(first)
    assert "203.0.113.77" in _table(lab, "aisentinel")  # a stop lifts nothing

    done = withdraw()
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["nftables: table inet aisentinel deleted"]
    assert _table(lab, "aisentinel") == ""
    assert "neighbour" in _table(lab, "neighbour")  # not aisentinel's: left alone
    ledger = Ledger(state / "decisions.sqlite3", SystemClock())
    try:
        assert [d.target.text for d in ledger.open_bans() if d.target] == ["203.0.113.77"]
    finally:
        ledger.close()

    second = daemon()
    try:
        assert wait_for(lambda: "203.0.113.77" in _table(lab, "aisentinel"), timeout=30)
    finally:
        stop(second)


@pytest.mark.root
@pytest.mark.skipif(WHY is not None, reason=WHY or "")
def test_a_refused_config_still_deletes_the_tables_in_a_namespace(lab: Lab, tmp_path: Path) -> None:
    """In a namespace, with the config refused (a typo, the nftables table's name
    refused): the recorded table and the default one are deleted, another stays."""
    state = tmp_path / "state"
    state.mkdir()
    record = {"responders": {"nftables": {"table": "recorded", "backend": "nft"}}}
    (state / "responders.json").write_text(json.dumps(record))
    config = tmp_path / "aisentinel.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = ""\n'
        '[exporter]\nlisten_adress = "127.0.0.1"\n[responders.nftables]\ntable = "Bad-Name"\n'
    )
    for table in ("recorded", "aisentinel", "neighbour"):
        run(lab.ns(lab.srv, ["nft", "add", "table", "inet", table]))
    env = {"PYTHONPATH": PACKAGE_PATH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    argv = [sys.executable, "-m", "aisentinel", "withdraw", "--config", str(config)]
    done = subprocess.run(lab.ns(lab.srv, argv), env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "responders.nftables is refused: its defaults are used" in done.stderr
    assert sorted(done.stdout.splitlines()) == [
        "nftables: table inet aisentinel deleted",
        "nftables: table inet recorded deleted",
    ]
    assert _table(lab, "recorded") == ""
    assert _table(lab, "aisentinel") == ""
    assert "neighbour" in _table(lab, "neighbour")
