"""Fault-injection harness: the real daemon as a subprocess, its logs, metrics and state.

Each fault case writes a config and log files into a temporary directory, starts
``python -m aisentinel run`` exactly as systemd would (JSON logs on stdout), does
something hostile to it (a poison line, a full disk, kill -9, a busy port...), and
then asserts that the daemon is up (or refused cleanly at start), that nothing was
lost, and that the reason is visible in its log, its metrics and ``aisentinel status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PACKAGE_PATH

from aisentinel.control import ControlError, request

REPO = Path(__file__).resolve().parents[2]

BASE_CONFIG = """
[daemon]
state_dir = "{state}"
log_format = "json"
heartbeat_interval = "200ms"
expire_interval = "1s"
control_socket = "{sock}"

[exporter]
port = {port}

{sources}

[audit]
enabled = false
"""

FILE_SOURCE = """
[[sources]]
name = "{name}"
type = "file"
parser = "{parser}"
paths = [{paths}]
start_at = "{start_at}"
"""


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def source_table(name: str, parser: str, paths: list[Path], start_at: str = "beginning") -> str:
    """One ``[[sources]]`` file table."""
    quoted = ", ".join(json.dumps(str(p)) for p in paths)
    return FILE_SOURCE.format(name=name, parser=parser, paths=quoted, start_at=start_at)


class DaemonProc:
    """``aisentinel run`` in a subprocess, with its JSON log captured to a file."""

    started: list[DaemonProc] = []  # noqa: RUF012 - every instance, for teardown

    def __init__(
        self,
        workdir: Path,
        sources: str,
        *,
        port: int = 0,
        extra: str = "",
        state: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.state = state or workdir / "state"
        self.sock = workdir / "control.sock"
        self.config = workdir / "aisentinel.toml"
        self.config.write_text(
            BASE_CONFIG.format(state=self.state, sock=self.sock, port=port, sources=sources) + extra
        )
        self.out = workdir / f"daemon-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ process

    def env(self) -> dict[str, str]:
        """The environment: this checkout first on the path, no systemd sockets."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONPATH"] = PACKAGE_PATH + os.pathsep + env.get("PYTHONPATH", "")
        return env

    @staticmethod
    def cli() -> list[str]:
        """The command line of the ``aisentinel`` command from this checkout."""
        return [sys.executable, "-m", "aisentinel"]

    def start(self, *, wait_ready: bool = True) -> DaemonProc:
        """Start the daemon; with ``wait_ready`` wait until it logged that it is running."""
        self.out.write_bytes(b"")
        with self.out.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aisentinel", "run", "--config", str(self.config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
            )
        DaemonProc.started.append(self)
        if wait_ready:
            assert wait_until(lambda: self.answers() or not self.alive()), self.text()
            assert self.alive(), self.text()
        return self

    def answers(self) -> bool:
        """True once the daemon is up: its control socket answers ``status``."""
        try:
            request(self.sock, "status", timeout=2.0)
        except ControlError:
            return False
        return True

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 15.0) -> int:
        """The exit status, waiting at most ``timeout`` seconds."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self) -> None:
        """SIGKILL: no chance to flush anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def hup(self) -> None:
        """SIGHUP: reload the config file."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    # ------------------------------------------------------------------ output

    def text(self) -> str:
        """Everything the process printed."""
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records printed so far (other lines skipped)."""
        out = []
        for line in self.text().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The log records whose ``event`` is ``event``."""
        return [r for r in self.records() if r.get("event") == event]

    def metrics_url(self) -> str:
        """The metrics URL the daemon logged."""
        for rec in self.records():
            if rec.get("event") == "metrics endpoint up":
                return str(rec["url"])
        raise AssertionError("no metrics endpoint in the log:\n" + self.text())

    def scrape(self) -> str:
        """One scrape of /metrics."""
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())

    def metric(self, name: str, labels: str = "") -> float | None:
        """A sample's value from a scrape, or None when absent."""
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in self.scrape().splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return None

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``aisentinel status --json`` (or other args) against this daemon's socket."""
        return subprocess.run(
            [sys.executable, "-m", "aisentinel", "status", "--socket", str(self.sock), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=30,
            check=False,
        )

    def status_json(self) -> dict[str, Any]:
        """The status snapshot as data (asked in-process: the CLI is tested elsewhere)."""
        value = request(self.sock, "status", timeout=5.0)
        assert isinstance(value, dict)
        return value


def no_traceback(text: str) -> bool:
    """True when no Python traceback was printed."""
    return "Traceback (most recent call last)" not in text
