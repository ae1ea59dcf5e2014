"""Start-up faults: the daemon runs degraded and says so, in one line, with no traceback.

Each case is a real ``python -m aisentinel run`` process. Cases that need a read-only
or full file system mount one under the test's own directory (root only).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PACKAGE_PATH, ssh_fail, wait_for

from aisentinel.clock import FakeClock
from aisentinel.config import load_config
from aisentinel.daemon import Daemon
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{logs}/control.sock"
log_format = "json"
heartbeat_interval = "200ms"

[exporter]
port = {port}

[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{logs}/auth.log"]

[detectors.ssh_bruteforce]
threshold = 5
"""

IS_ROOT = os.geteuid() == 0


class Proc:
    """``aisentinel run`` in a subprocess, its JSON log lines collected as they come."""

    def __init__(self, tmp: Path, state: Path, port: int = 0, stdout: Path | None = None) -> None:
        """``stdout``: a file the daemon's log lines go to instead of this object."""
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)  # auth.log appears later: it is read from its start
        config = tmp / "aisentinel.toml"
        config.write_text(CONFIG.format(state=state, logs=self.logs, port=port))
        # systemd's notify socket, so the STATUS= line can be checked.
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp / "notify.sock"))
        self.notify.settimeout(0.2)
        self.status: list[str] = []
        env = dict(os.environ, PYTHONPATH=PACKAGE_PATH, NOTIFY_SOCKET=str(tmp / "notify.sock"))
        self._stdout = None if stdout is None else stdout.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aisentinel", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE if self._stdout is None else self._stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _read(self) -> None:
        if self.proc.stdout is None:
            return  # the log goes to a file
        for line in self.proc.stdout:
            self.out.append(line)

    def _listen(self) -> None:
        while self.proc.poll() is None:
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            self.status.extend(m[7:] for m in data.splitlines() if m.startswith("STATUS="))

    def events(self, name: str) -> list[dict[str, object]]:
        """The log records whose event starts with ``name``."""
        out = []
        for line in list(self.out):
            if line.startswith("{"):
                record = json.loads(line)
                if str(record.get("event", "")).startswith(name):
                    out.append(record)
        return out

    def metrics_url(self) -> str:
        assert wait_for(lambda: bool(self.events("metrics endpoint up")), timeout=20)
        return str(self.events("metrics endpoint up")[0]["url"])

    def scrape(self) -> str:
        url = self.metrics_url()  # the daemon's own http:// endpoint
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())

    def brute_force(self, ip: str) -> None:
        """Six failed ssh logins from ``ip``: enough for a ban (written once the daemon
        is ready: its sources have looked at what they follow, so a new auth.log is read
        from its start, not skipped as if it had been there before)."""
        assert wait_for(lambda: bool(self.events("aisentinel ready")), timeout=20)
        now = float(int(time.time()) - 30)
        with (self.logs / "auth.log").open("a") as fh:
            fh.writelines(ssh_fail(now + i, ip) + "\n" for i in range(6))

    def banned(self, ip: str) -> bool:
        return any(r.get("target") == ip for r in self.events("decision"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()
        self._reader.join(5)
        self.notify.close()
        if self._stdout is not None:
            self._stdout.close()
        return rc

    def text(self) -> str:
        return "".join(self.out) + self.err


def _metric(text: str, sample: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (the notify socket's must fit in sun_path)."""
    with tempfile.TemporaryDirectory(prefix="as-") as name:
        yield Path(name)


@pytest.fixture
def mounts(short_tmp: Path) -> Iterator[list[Path]]:
    """Mount points made by a test, unmounted at its end (before ``short_tmp`` is removed)."""
    made: list[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _mount(mounts: list[Path], *args: str) -> None:
    res = subprocess.run(["mount", *args], check=False, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not allowed here: {res.stderr.strip()}")
    mounts.append(Path(args[-1]))


def _state_is_a_file(tmp: Path, _mounts: list[Path]) -> Path:
    state = tmp / "state"
    state.write_text("not a directory\n")
    return state


def _ledger_is_a_directory(tmp: Path, _mounts: list[Path]) -> Path:
    state = tmp / "state"
    (state / "decisions.sqlite3").mkdir(parents=True)
    return state


def _read_only_state_dir(tmp: Path, mounts: list[Path]) -> Path:
    state = tmp / "state"
    state.mkdir()
    # An earlier run's ban: a read-only ledger is still read, so the ban is kept.
    now = float(int(time.time()))
    ledger = Ledger(state / "decisions.sqlite3", FakeClock(now))
    ledger.record(
        Decision(
            ts=now,
            action=Action.BAN,
            target=AddressTarget.parse("203.0.113.50"),
            detector="ssh_bruteforce",
            severity=Severity.HIGH,
            reason="earlier run",
            ttl=86400.0,
            expires_at=now + 86400.0,
            offence=1,
            simulated=False,
            evidence_count=6,
        )
    )
    ledger.close()
    _mount(mounts, "--bind", str(state), str(state))
    _mount(mounts, "-o", "remount,ro,bind", str(state))
    return state


def _full_state_disk(tmp: Path, mounts: list[Path]) -> Path:
    state = tmp / "state"
    state.mkdir()
    _mount(mounts, "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(state))
    fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space"):
            _fill(fd)
    finally:
        os.close(fd)
    return state


def _fill(fd: int) -> None:
    """Write to ``fd`` until the file system is full (raises OSError ENOSPC)."""
    for _ in range(1024):
        os.write(fd, b"\0" * 4096)


FAULTS: dict[str, tuple[Callable[[Path, list[Path]], Path], str, str, set[str]]] = {
    # name: (setup, error event, words of the fix, components degraded)
    "state_is_a_file": (
        _state_is_a_file,
        "state directory unusable",
        "is not a directory",
        {"state", "ledger"},
    ),
    "ledger_is_a_directory": (
        _ledger_is_a_directory,
        "decision ledger unusable",
        "is a directory: move it away",
        {"ledger"},
    ),
    "read_only_state_dir": (
        _read_only_state_dir,
        "state directory unusable",
        "read-only file system",
        {"state", "ledger"},
    ),
    "full_state_disk": (
        _full_state_disk,
        "state directory unusable",
        "df -h",
        {"state", "ledger"},
    ),
}


NEEDS_MOUNT = (
    pytest.mark.root,
    pytest.mark.skipif(not IS_ROOT, reason="mounting a read-only or tiny file system needs root"),
)


@pytest.mark.parametrize(
    "fault",
    [
        "state_is_a_file",
        "ledger_is_a_directory",
        pytest.param("read_only_state_dir", marks=NEEDS_MOUNT),
        pytest.param("full_state_disk", marks=NEEDS_MOUNT),
    ],
)
def test_state_fault_runs_degraded_and_says_so(
    fault: str, short_tmp: Path, mounts: list[Path]
) -> None:
    """A bad state dir or ledger: one error line with path and fix, detection goes on, flagged."""
    setup, event, fix_words, components = FAULTS[fault]
    state = setup(short_tmp, mounts)
    p = Proc(short_tmp, state)
    try:
        assert wait_for(lambda: bool(p.events(event)), timeout=20), p.text()
        p.brute_force("198.51.100.7")
        assert wait_for(lambda: p.banned("198.51.100.7"), timeout=20), p.text()
        scrape = p.scrape()
        degraded = "DEGRADED: " + ", ".join(sorted(components))
        wait_for(lambda: any(degraded in s for s in p.status), timeout=10)
        status = list(p.status)
    finally:
        rc = p.stop()
    errors = p.events(event)
    assert len(errors) == 1
    assert str(state) in str(errors[0]["path"])
    assert fix_words in str(errors[0]["fix"])
    for component in ("exporter", "ledger", "state"):
        expected = 1.0 if component in components else 0.0
        assert _metric(scrape, f'aisentinel_degraded{{component="{component}"}}') == expected
    assert any(degraded in s for s in status), status
    if setup is _read_only_state_dir:
        assert _metric(scrape, "aisentinel_decisions_active") == 2.0  # restored + new
    assert "Traceback" not in p.text()
    assert rc == 0, p.text()


def test_busy_metrics_port_runs_degraded_and_says_so(short_tmp: Path) -> None:
    """A taken metrics port: one error line naming the port and `ss`, STATUS says degraded."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    p = Proc(short_tmp, short_tmp / "state", port=port)
    try:
        assert wait_for(lambda: bool(p.events("metrics endpoint cannot listen")), timeout=20)
        p.brute_force("198.51.100.8")
        assert wait_for(lambda: p.banned("198.51.100.8"), timeout=20), p.text()
        assert wait_for(lambda: any("DEGRADED: exporter" in s for s in p.status), timeout=10)
    finally:
        rc = p.stop()
        holder.close()
    errors = p.events("metrics endpoint cannot listen")
    assert len(errors) == 1
    assert errors[0]["port"] == port
    assert f"ss -ltnp 'sport = :{port}'" in str(errors[0]["fix"])
    assert "[exporter] port" in str(errors[0]["fix"])
    assert "Traceback" not in p.text()
    assert rc == 0


def test_metrics_endpoint_comes_up_once_the_port_is_free(tmp_path: Path) -> None:
    """The exporter retries its port; when it is freed the endpoint comes up, flag cleared."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    (tmp_path / "logs").mkdir()
    path = tmp_path / "aisentinel.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", logs=tmp_path / "logs", port=port))
    daemon = Daemon(load_config(path), config_path=path, notifier=Notifier(None))
    daemon.exporter_retry_seconds = 0.1
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.started.wait(10)
        assert "exporter" in daemon.degraded
        assert "DEGRADED: exporter" in daemon.status_line()
        holder.close()
        assert wait_for(lambda: daemon.metrics_port == port, timeout=10)
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        assert _metric(text, 'aisentinel_degraded{component="exporter"}') == 0.0
        assert daemon.degraded == {}
    finally:
        holder.close()
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def _scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback http
            return str(resp.read().decode())
    except OSError:
        return ""


def test_unwritable_log_output_runs_degraded_and_keeps_banning(short_tmp: Path) -> None:
    """Log to a full disk (/dev/full): no exit, bans go on, `log` degraded, one stderr line."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    url = f"http://127.0.0.1:{port}/metrics"
    ban = 'aisentinel_decisions_total{action="ban",detector="ssh_bruteforce"}'
    p = Proc(short_tmp, short_tmp / "state", port=port, stdout=Path("/dev/full"))
    try:
        assert wait_for(lambda: bool(_scrape(url)), timeout=20), p.proc.poll()
        now = float(int(time.time()) - 30)
        with (p.logs / "auth.log").open("a") as fh:
            fh.writelines(ssh_fail(now + i, "198.51.100.9") + "\n" for i in range(6))
        assert wait_for(lambda: (_metric(_scrape(url), ban) or 0.0) >= 1.0, timeout=20)
        assert wait_for(lambda: any("DEGRADED: log" in s for s in p.status), timeout=10)
        scrape = _scrape(url)
    finally:
        rc = p.stop()
    assert _metric(scrape, 'aisentinel_degraded{component="log"}') == 1.0
    assert _metric(scrape, 'aisentinel_degraded{component="ledger"}') == 0.0
    assert p.err.count("aisentinel: log output failing (No space left on device)") == 1, p.err
    assert "Traceback" not in p.err
    assert rc == 0, p.err
