"""The sd_notify protocol, against real AF_UNIX datagram sockets and the real daemon."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aisentinel.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[1]
HAS_SYSTEMD_PYTHON = importlib.util.find_spec("systemd") is not None


class Listener:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)

    def receive(self, timeout: float = 2.0) -> list[str]:
        """The assignments of the next datagram."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        return data.decode().split("\n")

    def collect_until(
        self,
        done: Callable[[list[str]], bool],
        seconds: float,
        seen: list[str],
        alive: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Read datagrams into ``seen`` until ``done(seen)``; False on timeout or death."""
        deadline = time.monotonic() + seconds
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0 or not alive():
                return False
            with contextlib.suppress(TimeoutError):
                seen.extend(self.receive(timeout=min(left, 0.2)))
        return True


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[Listener]:
    """A notify socket at a file-system path."""
    lst = Listener(str(short_dir / "notify.sock"))
    yield lst
    lst.sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    """A notify socket in the abstract namespace (``@name``)."""
    lst = Listener(f"@aisentinel-test-{uuid.uuid4().hex}")
    yield lst
    lst.sock.close()


def test_without_notify_socket_every_call_is_a_noop() -> None:
    """With NOTIFY_SOCKET unset the notifier is disabled and every call returns False."""
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.reloading() is False
    assert n.watchdog_interval() is None


def test_ready_with_status_arrives_as_one_datagram(listener: Listener) -> None:
    """ready(status) sends READY=1 and STATUS= in a single datagram to a path socket."""
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address}, backend="socket")
    assert n.backend == "socket"
    assert n.ready("3 sources up") is True
    assert listener.receive() == ["READY=1", "STATUS=3 sources up"]


def test_abstract_namespace_socket(abstract_listener: Listener) -> None:
    """An '@name' NOTIFY_SOCKET reaches the abstract-namespace socket."""
    n = Notifier(abstract_listener.address, backend="socket")
    assert n.watchdog() is True
    assert abstract_listener.receive() == ["WATCHDOG=1"]
    assert n.stopping() is True
    assert abstract_listener.receive() == ["STOPPING=1"]


def test_status_is_flattened_to_one_line(listener: Listener) -> None:
    """A multi-line status becomes one STATUS= line (a newline would end the field)."""
    n = Notifier(listener.address, backend="socket")
    n.status("a\nb")
    assert listener.receive() == ["STATUS=a b"]


def test_reloading_carries_monotonic_timestamp(listener: Listener) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects."""
    n = Notifier(listener.address, backend="socket")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    items = listener.receive()
    assert items[0] == "RELOADING=1"
    key, _, value = items[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert int(value) >= before


def test_malformed_assignment_is_rejected(listener: Listener) -> None:
    """notify() refuses an assignment without '=' or with a newline, sending nothing."""
    n = Notifier(listener.address, backend="socket")
    with pytest.raises(ValueError, match="KEY=value"):
        n.notify("READY")
    with pytest.raises(ValueError, match="KEY=value"):
        n.notify("STATUS=a\nREADY=1")
    with pytest.raises(TimeoutError):
        listener.receive(timeout=0.05)


def test_send_failure_returns_false(short_dir: Path) -> None:
    """A socket that does not exist makes the call return False instead of raising."""
    n = Notifier(str(short_dir / "missing.sock"), backend="socket")
    assert n.ready() is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFY_SOCKET": "relative.sock"}, "NOTIFY_SOCKET"),
        ({"NOTIFY_SOCKET": "@"}, "NOTIFY_SOCKET"),
        ({"WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "0"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}, "WATCHDOG_PID"),
    ],
)
def test_malformed_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    """A malformed NOTIFY_SOCKET/WATCHDOG_* value raises ValueError naming the variable."""
    with pytest.raises(ValueError, match=message):
        Notifier.from_env(env)


def test_watchdog_interval_is_half_the_timeout() -> None:
    """WATCHDOG_USEC=1000000 gives a 0.5 s ping interval for this process."""
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval() == 0.5
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0


def test_watchdog_for_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process (inherited variables) disables the watchdog."""
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_interval() is None


@pytest.mark.skipif(not HAS_SYSTEMD_PYTHON, reason="systemd-python is not installed")
def test_libsystemd_backend_reaches_the_socket(
    abstract_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With systemd-python present, from_env() uses sd_notify, which reaches the socket."""
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_listener.address)
    n = Notifier.from_env()
    assert n.backend == "libsystemd"
    assert n.ready("via libsystemd") is True
    assert abstract_listener.receive() == ["READY=1", "STATUS=via libsystemd"]


def test_libsystemd_backend_requires_systemd_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend='libsystemd' without systemd-python is a clear error, not a silent fallback."""
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    with pytest.raises(ValueError, match="systemd-python"):
        Notifier("@x", backend="libsystemd")
    assert Notifier("@x").backend == "socket"


@pytest.mark.slow
def test_daemon_speaks_sd_notify(listener: Listener, tmp_path: Path) -> None:
    """`aisentinel run` sends READY, WATCHDOG, STATUS; SIGHUP reloads; SIGTERM sends STOPPING."""
    (tmp_path / "access.log").write_text("")
    cfg = tmp_path / "aisentinel.toml"
    cfg.write_text(
        "[daemon]\n"
        f'state_dir = "{tmp_path / "state"}"\n'
        "[exporter]\n"
        "port = 0\n"
        "[[sources]]\n"
        'name = "nginx-access"\n'
        'type = "file"\n'
        'parser = "nginx"\n'
        f'paths = ["{tmp_path / "access.log"}"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in {"WATCHDOG_PID", "JOURNAL_STREAM"}}
    env |= {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisentinel", "run", "--config", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        seen: list[str] = []
        running = lambda: proc.poll() is None  # noqa: E731
        assert listener.collect_until(lambda s: "READY=1" in s, 30, seen, running), log.read_text()
        assert listener.collect_until(lambda s: s.count("WATCHDOG=1") >= 2, 10, seen), seen
        assert listener.collect_until(
            lambda s: any(item.startswith("STATUS=") for item in s), 5, seen
        ), seen

        proc.send_signal(signal.SIGHUP)
        assert listener.collect_until(lambda s: "RELOADING=1" in s, 5, seen), seen
        assert listener.collect_until(lambda s: s.count("READY=1") >= 2, 5, seen), seen
        assert proc.poll() is None, log.read_text()

        proc.send_signal(signal.SIGTERM)
        assert listener.collect_until(lambda s: "STOPPING=1" in s, 5, seen), seen
        assert proc.wait(timeout=5) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
