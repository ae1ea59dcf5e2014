"""The daemon under operational faults of its state: a ledger another process holds
locked, a ledger lost at start, symbolic links, a state directory it cannot search, a
control socket file removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import PACKAGE_PATH, wait_for
from structlog.testing import capture_logs
from test_daemon import NFT, _nft_config, _nft_docs, _Recorder, _run_daemon, _stop

from aisentinel import control as control_module
from aisentinel import daemon as daemon_module
from aisentinel.cli import main
from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.config import load_config
from aisentinel.daemon import Daemon
from aisentinel.decisions.admin import render_result
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, AddressTarget, Decision, LineBatch, Severity
from aisentinel.responders.nftables import DEFAULT_LENGTHS, NftablesConfig, NftablesResponder


def _config(tmp: Path, *, nftables: bool = False, socket: bool = False) -> Path:
    """test_daemon's config (dry-run, or nftables through nft); ``socket``: with a control
    socket at ``tmp/c.sock``."""
    (tmp / "logs").mkdir(exist_ok=True)
    path = _nft_config(tmp, tmp / "logs", nftables)
    if socket:
        path.write_text(
            path.read_text().replace('control_socket = ""', f'control_socket = "{tmp}/c.sock"')
        )
    return path


def _batches(daemon: Daemon, n: int) -> None:
    for i in range(n):
        daemon.queue.put(LineBatch("auth", "sshd", [f"line {i}"], read_at=0.0))


def _ban(target: str, now: float) -> Decision:
    return Decision(
        now, Action.BAN, AddressTarget.parse(target), "ssh_bruteforce", Severity.HIGH, "t",
        ttl=3600.0, expires_at=now + 3600.0,
    )  # fmt: skip


def _run(path: Path, fake: FakeRunner | None = None) -> tuple[Daemon, threading.Thread]:
    return _run_daemon(path, fake or FakeRunner({}))


def _nft_table() -> FakeRunner:
    """nft answering every document with a listing of a healthy table (its three sets,
    chains input and forward with a drop rule each: what the responder's skeleton
    adds), so the worker's health check repairs nothing."""
    maker = NftablesResponder(NftablesConfig(backend="nft"), clock=FakeClock(), commands=None)
    listing = [cmd["add"] for cmd in maker._skeleton(set(DEFAULT_LENGTHS)) if "add" in cmd]
    return FakeRunner({NFT: FakeRunner.ok(NFT, json.dumps({"nftables": listing}))})


def _deletes_table(doc: list[dict[str, object]]) -> bool:
    return any("table" in dict(cmd.get("delete") or {}) for cmd in doc)  # type: ignore[call-overload]


# ---------------------------------------------------------------------- the loop


def test_the_heartbeat_goes_out_between_slow_batches(tmp_path: Path) -> None:
    """A long series of slow batches (each ledger write waiting on another process's
    lock) never starves systemd's watchdog: the heartbeat is sent between batches as
    soon as it is due, not only after the 64-batch turn."""
    clock = FakeClock()
    notifier = _Recorder()
    daemon = Daemon(load_config(_config(tmp_path)), clock=clock, notifier=notifier)
    try:
        daemon._process = lambda _batch: clock.advance(1.0)  # type: ignore[method-assign]
        _batches(daemon, 6)
        daemon._next_beat = clock.monotonic() + daemon._heartbeat_every()
        assert daemon._drain(timeout=0) == 6
        assert notifier.sent.count("WATCHDOG=1") == 6
    finally:
        daemon.ledger.close()


def test_a_signal_during_a_turn_is_acted_on_after_the_batch_in_hand(tmp_path: Path) -> None:
    """A SIGHUP (or SIGTERM) noted while batches are processed ends the turn after the
    batch in hand, not after the 64 the turn may take: a reload under load comes at once."""
    daemon = Daemon(load_config(_config(tmp_path)))
    try:
        processed: list[object] = []

        def process(batch: object) -> None:
            processed.append(batch)
            daemon._on_signal(signal.SIGHUP, None)

        daemon._process = process  # type: ignore[method-assign]
        _batches(daemon, 6)
        assert daemon._drain(timeout=0) == 1
        assert daemon._reload.is_set()
        assert daemon.queue.qsize() == 5
    finally:
        daemon.ledger.close()


def test_the_running_daemon_waits_for_a_locked_ledger_only_briefly(tmp_path: Path) -> None:
    """Once started, a ledger write waits LEDGER_RUN_BUSY_TIMEOUT at most for another
    process's lock (the start waits longer): a decision taken while an admin's sqlite3
    shell holds the file goes to the backlog and is written once the lock is gone."""
    daemon = Daemon(load_config(_config(tmp_path)))
    path = daemon.ledger.path
    busy_ms = daemon.ledger._db.execute("PRAGMA busy_timeout").fetchone()[0]
    assert busy_ms == int(daemon_module.LEDGER_RUN_BUSY_TIMEOUT * 1000)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        daemon.ledger.record(_ban("198.51.100.70", daemon.clock.now()))
        assert daemon.ledger.backlog == 1
        assert "locked" in daemon.degraded["ledger"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        daemon.ledger.close()
    again = Ledger(path, FakeClock())
    assert [d.target.text for d in again.open_bans() if d.target] == ["198.51.100.70"]
    again.close()


# ---------------------------------------------------------------------- a ledger lost


def _lose_ledger(tmp: Path) -> Path:
    """Run the nftables daemon once, then corrupt its ledger; its config path."""
    path = _config(tmp, nftables=True, socket=True)
    _stop(*_run(path, _nft_table()))
    (tmp / "state" / "decisions.sqlite3").write_bytes(b"not a database, half a page" * 64)
    return path


def _keeping_held(daemon: Daemon) -> float | None:
    return daemon.registry.get_sample_value("aisentinel_ledger_keeping_held")


def test_a_ledger_lost_is_kept_to_across_restarts_until_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger lost at start is recorded in the state directory: the next start (a
    restart, a watchdog kill, a reboot) finds the fresh ledger healthy but still only adds
    (the nftables table holding the lost ledger's bans is not deleted), with `ledger`
    degraded saying when the loss was and aisentinel_ledger_keeping_held 1; `aisentinel
    ledger accept` removes the record and reconciles exactly at once (accepting again
    says there is nothing to accept), and later starts do too."""
    path = _lose_ledger(tmp_path)
    marker = tmp_path / "state" / "ledger-lost.json"
    daemon, thread = _run(path, _nft_table())
    try:
        assert daemon.runner.keep_held
        assert "ledger accept" in daemon.degraded["ledger"]
        assert _keeping_held(daemon) == 1
    finally:
        _stop(daemon, thread)
    assert stat.S_IMODE(marker.lstat().st_mode) == 0o600
    fake = _nft_table()
    daemon, thread = _run(path, fake)
    sock = tmp_path / "c.sock"
    try:
        assert daemon.runner.keep_held
        assert daemon.ledgers_lost == 0  # counted by the run that found it
        reason = daemon.degraded["ledger"]
        assert "a ledger was lost at" in reason
        assert "was unreadable and is moved to" in reason
        assert "reconciles add, never lift" in reason
        assert _keeping_held(daemon) == 1
        daemon.runner.reconcile(daemon.engine.active())  # the periodic one too
        assert wait_for(lambda: len(_nft_docs(fake)) >= 4)
        assert not [doc for doc in _nft_docs(fake) if _deletes_table(doc)]
        accepted = control_module.request(sock, "ledger_accept")
        assert accepted == {"accepted": True, "bans": 0}
        assert render_result("ledger_accept", accepted).startswith("ledger accepted (0 bans")
        assert wait_for(lambda: any(_deletes_table(doc) for doc in _nft_docs(fake)))
        assert not daemon.runner.keep_held
        assert "ledger" not in daemon.degraded
        assert _keeping_held(daemon) == 0
        assert not marker.exists()
        assert main(["ledger", "accept", "--socket", str(sock)]) == 0
        assert "the ledger was not lost" in capsys.readouterr().out
    finally:
        _stop(daemon, thread)
    daemon, thread = _run(path, _nft_table())
    try:
        assert not daemon.runner.keep_held
        assert "ledger" not in daemon.degraded
    finally:
        _stop(daemon, thread)


@pytest.mark.parametrize("record", ["link", "not json"])
def test_an_unreadable_record_of_a_lost_ledger_still_keeps_what_is_held(
    tmp_path: Path, record: str
) -> None:
    """A record of a lost ledger that cannot be read (a symbolic link, never followed,
    even to a well-formed record; not JSON) still has the start keep what the firewalls
    hold, saying why."""
    (tmp_path / "state").mkdir()
    marker = tmp_path / "state" / "ledger-lost.json"
    if record == "link":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text('{"since": 0, "reason": "x"}')
        marker.symlink_to(elsewhere)
    else:
        marker.write_text("{half")
    daemon, thread = _run(_config(tmp_path))
    try:
        assert daemon.runner.keep_held
        assert "cannot be read" in daemon.degraded["ledger"]
    finally:
        _stop(daemon, thread)


def test_a_ledger_in_memory_is_not_accepted(tmp_path: Path) -> None:
    """`aisentinel ledger accept` is refused while the ledger is in memory (a link at its
    path): the daemon keeps what the firewalls hold and the record of the loss stays."""
    path = _config(tmp_path, socket=True)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "decisions.sqlite3").symlink_to(tmp_path / "victim")
    daemon, thread = _run(path)
    try:
        assert daemon.ledger.in_memory
        with pytest.raises(control_module.CommandError, match="in memory"):
            control_module.request(tmp_path / "c.sock", "ledger_accept")
        assert daemon.runner.keep_held
        assert (tmp_path / "state" / "ledger-lost.json").exists()
    finally:
        _stop(daemon, thread)


def test_a_corrupt_ledger_at_start_lifts_nothing_the_firewall_holds(tmp_path: Path) -> None:
    """A ledger found corrupt at start (moved aside) knows none of the bans still in the
    kernel: the start's reconcile then only adds (the nftables table is not deleted and
    re-created empty), `ledger` is degraded saying so, and the loss is counted."""
    path = _config(tmp_path, nftables=True)
    _stop(*_run(path, _nft_table()))
    ledger = tmp_path / "state" / "decisions.sqlite3"
    ledger.write_bytes(b"not a database, half a page of it" * 64)
    fake = _nft_table()
    daemon, thread = _run(path, fake)
    try:
        assert wait_for(lambda: len(_nft_docs(fake)) >= 2)  # the listing, the adds
        assert daemon.runner.keep_held
        assert daemon.ledgers_lost == 1
        reason = daemon.degraded["ledger"]
        assert "moved to" in reason
        assert "reconciles add, never lift" in reason
        daemon.runner.reconcile(daemon.engine.active())  # the periodic one too
        assert wait_for(lambda: len(_nft_docs(fake)) >= 4)
    finally:
        _stop(daemon, thread)
    assert not [doc for doc in _nft_docs(fake) if _deletes_table(doc)]


def test_a_symbolic_link_in_place_of_the_ledger_is_not_followed(tmp_path: Path) -> None:
    """A link planted at state_dir/decisions.sqlite3 is refused: the daemon runs on a
    ledger in memory, `ledger` degraded naming the link, and the file the link names
    keeps its mode and bytes (a root daemon would have made it 0600)."""
    victim = tmp_path / "victim.conf"
    victim.write_text("world-readable config\n")
    victim.chmod(0o644)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "decisions.sqlite3").symlink_to(victim)
    daemon, thread = _run(_config(tmp_path))
    try:
        assert daemon.ledger.in_memory
        assert "symbolic link" in daemon.degraded["ledger"]
        assert daemon.runner.keep_held
    finally:
        _stop(daemon, thread)
    assert victim.stat().st_mode & 0o777 == 0o644
    assert victim.read_text() == "world-readable config\n"


def test_a_symbolic_link_in_place_of_the_run_lock_is_not_followed(tmp_path: Path) -> None:
    """A link at state_dir/daemon.lock naming a file that does not exist is not followed:
    the daemon runs (without the lock, one line) and creates nothing where it points."""
    target = tmp_path / "elsewhere" / "created-by-root"
    target.parent.mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "daemon.lock").symlink_to(target)
    daemon, thread = _run(_config(tmp_path))
    try:
        assert daemon._run_lock is None
    finally:
        _stop(daemon, thread)
    assert not target.exists()


def test_a_second_daemon_on_a_state_directory_in_use_does_not_start(tmp_path: Path) -> None:
    """Another process holding state_dir/daemon.lock (a daemon already running there)
    refuses the start: run() returns 1 after one error line naming the lock and the
    holder's pid, before any responder is called or any source reads its log."""
    path = _config(tmp_path, nftables=True)
    (tmp_path / "logs" / "auth.log").write_text("Failed password for root from 198.51.100.7\n")
    lock = tmp_path / "state" / "daemon.lock"
    lock.parent.mkdir()
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom aisentinel.runlock import take\n"
        "fd = take(Path(sys.argv[1]))\nprint('held' if fd is not None else 'busy', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        fake = _nft_table()
        daemon = Daemon(load_config(path), config_path=path, commands=fake)
        exits: list[int] = []
        with capture_logs() as logs:
            thread = threading.Thread(target=lambda: exits.append(daemon.run()), daemon=True)
            thread.start()
            thread.join(10)
            if thread.is_alive():  # it started beside the other one: stop it to fail
                daemon.request_stop()
                thread.join(10)
    finally:
        other.kill()
        other.wait(10)
    assert exits == [1]  # daemon.START_REFUSED, as a bad config
    refused = [e for e in logs if e["log_level"] == "error"]
    assert len(refused) == 1, logs
    assert refused[0]["path"] == str(lock)
    assert refused[0]["pid"] == other.pid
    assert "not starting a second one" in refused[0]["event"]
    assert fake.calls == []
    assert not daemon.started.is_set()
    # no positions saved, no responders recorded: only the ledger __init__ opened
    assert {f.name for f in (tmp_path / "state").iterdir()} <= {
        "daemon.lock", "decisions.sqlite3", "decisions.sqlite3-wal", "decisions.sqlite3-shm"
    }  # fmt: skip
    assert not any(e["event"] == "aisentinel ready" for e in logs)


def test_aisentinel_run_on_a_state_directory_in_use_opens_nothing(tmp_path: Path) -> None:
    """`aisentinel run` beside a holder of state_dir/daemon.lock exits 1 naming the holder,
    before it probes the state directory or opens the ledger (nothing but the lock there)."""
    path = _config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom aisentinel.runlock import take\n"
        "fd = take(Path(sys.argv[1]))\nprint('held' if fd is not None else 'busy', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    env.pop("NOTIFY_SOCKET", None)
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(state / "daemon.lock")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        run = subprocess.run(
            [sys.executable, "-m", "aisentinel", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        other.kill()
        other.wait(10)
    text = run.stdout + run.stderr
    assert run.returncode == 1, text
    assert "not starting a second one" in text
    assert f'"pid": {other.pid}' in text or f"pid={other.pid}" in text, text
    assert [f.name for f in state.iterdir()] == ["daemon.lock"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping the DAC capabilities needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_a_state_directory_the_daemon_cannot_search_runs_degraded(tmp_path: Path) -> None:
    """A state directory inside a directory the daemon's user may not search (Python
    3.11's Path.exists() raises there) degrades `state` as a read-only one does: the
    daemon runs, it does not exit into a restart loop with the host unprotected."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chown(locked, 65534, 65534)
    locked.chmod(0o700)
    config = _config(tmp_path)
    config.write_text(config.read_text().replace(str(tmp_path / "state"), str(locked / "s")))
    # root without the capabilities that bypass file permissions: as a non-root user
    argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    argv += [sys.executable, "-m", "aisentinel", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    env.pop("NOTIFY_SOCKET", None)
    out = tmp_path / "out.log"
    with out.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_for(lambda: "aisentinel ready" in out.read_text() or proc.poll() is not None)
        assert proc.poll() is None, out.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    text = out.read_text()
    assert rc == 0, text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    (unusable,) = [r for r in records if str(r["event"]).startswith("state directory unusable")]
    assert unusable["reason"] == "Permission denied"
    assert "Traceback" not in text


# ---------------------------------------------------------------------- the control socket


def test_a_control_socket_file_replaced_degrades_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file put where the control socket was: `control` is degraded saying the
    socket cannot be reached; once the file is gone the socket is bound again."""
    monkeypatch.setattr(control_module, "CHECK_SECONDS", 0.05)
    daemon, thread = _run(_config(tmp_path, socket=True))
    try:
        other = tmp_path / "other"
        other.write_text("not a socket")
        other.replace(tmp_path / "c.sock")
        assert wait_for(lambda: "control" in daemon.degraded)
        assert "cannot be bound again" in daemon.degraded["control"]
        (tmp_path / "c.sock").unlink()
        assert wait_for(lambda: "control" not in daemon.degraded)
    finally:
        _stop(daemon, thread)
