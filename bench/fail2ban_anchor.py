"""A private fail2ban-server instance, the anchor of the daemon benchmarks.

``Fail2ban(work, jails)`` starts Debian's ``/usr/bin/fail2ban-server`` in the
foreground from a configuration built under ``work/fail2ban``: copies of
``/etc/fail2ban``'s fail2ban.conf, jail.conf, paths-*.conf and the jails' filters,
plus a ``fail2ban.local`` (own log file, socket, pidfile, ``dbfile = :memory:``) and a
``jail.local`` (the benchmark's jails on temporary logs, maxretry 5, findtime 10m,
bantime 1h). Every jail uses ``bench-noop``, an action written there whose ban only
appends the address to a file in ``work``: the host firewall is never touched.

Bans are read from fail2ban's own log ("NOTICE [jail] Ban ADDR", stamped to the
millisecond; the server runs with TZ=UTC so the stamps are UTC) by a thread, and
``wait_ban`` returns their wall-clock time. ``stop()`` asks the server to stop over its
socket, then terminates and kills it if needed: nothing is left running.
"""

from __future__ import annotations

import calendar
import contextlib
import io
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

ETC = Path("/etc/fail2ban")
SERVER = Path("/usr/bin/fail2ban-server")
SERVER_PYTHON = Path("/usr/bin/python3")

BAN_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) fail2ban\.actions\s+\[\d+\]: "
    r"NOTICE\s+\[([^\]]+)\] Ban (\S+)$"
)
STATUS_KEYS = ("Currently failed", "Total failed", "Currently banned", "Total banned")
F2B_END = b"<F2B_END_COMMAND>"
F2B_CLOSE = b"<F2B_CLOSE_COMMAND>"

NOOP_ACTION = """\
# Written by aisentinel's bench/fail2ban_anchor.py: a ban appends the address to a file.
[Definition]
actionstart =
actionstop =
actioncheck =
actionban = echo "+<ip>" >> <target>
actionunban = echo "-<ip>" >> <target>

[Init]
target = {target}
"""


class RemoteObject(Exception):  # noqa: N818 - stands for whatever fail2ban sent
    """A fail2ban object in an answer (its exceptions, e.g. ``UnknownJailException``
    while a jail is still starting): fail2ban's package is not importable here."""


class _Unpickler(pickle.Unpickler):
    """Reads answers without importing fail2ban: its classes become RemoteObjects."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "fail2ban" or module.startswith("fail2ban."):
            return type(name, (RemoteObject,), {})
        return super().find_class(module, name)


def unavailable() -> str | None:
    """Why the anchor cannot run here, or None when it can."""
    for path in (SERVER, ETC / "fail2ban.conf", ETC / "jail.conf"):
        if not path.exists():
            return f"{path} not found (Debian package fail2ban)"
    return None


def best_backend() -> str:
    """``pyinotify`` when fail2ban's Python can import it, else ``polling``."""
    probe = subprocess.run(
        [str(SERVER_PYTHON), "-c", "import pyinotify"], capture_output=True, check=False
    )
    return "pyinotify" if probe.returncode == 0 else "polling"


def version() -> str:
    """``fail2ban-server -V`` (short, machine-readable)."""
    out = subprocess.run([str(SERVER), "-V"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _filter_files(name: str) -> set[str]:
    """A filter and the filter files it includes (``before``/``after``), recursively."""
    todo, seen = [f"{name}.conf"], set()
    while todo:
        fname = todo.pop()
        if fname in seen or not (ETC / "filter.d" / fname).exists():
            continue
        seen.add(fname)
        text = (ETC / "filter.d" / fname).read_text(encoding="utf-8")
        todo += re.findall(r"^(?:before|after)\s*=\s*(\S+\.conf)\s*$", text, re.MULTILINE)
    return seen


def _jail_local(jails: dict[str, tuple[str, Path]], backend: str) -> str:
    parts = [
        "[DEFAULT]",
        "banaction = bench-noop",
        "banaction_allports = bench-noop",
        "action = bench-noop",
        f"backend = {backend}",
        "maxretry = 5",
        "findtime = 10m",
        "bantime = 1h",
        "ignoreip = 127.0.0.1/8 ::1",
    ]
    for jail, (filt, path) in jails.items():
        parts += ["", f"[{jail}]", "enabled = true", f"filter = {filt}", f"logpath = {path}"]
        parts.append(f"backend = {backend}")
    return "\n".join(parts) + "\n"


class Fail2ban:
    """A private ``fail2ban-server -f`` over ``jails`` (name -> (filter, log path)).

    ``bans`` maps an address to the wall-clock time (epoch seconds) of its first
    "Ban" line in fail2ban's log.
    """

    def __init__(
        self, work: Path, jails: dict[str, tuple[str, Path]], backend: str | None = None
    ) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.backend = backend or best_backend()
        self.jails = jails
        self.dir = work / "fail2ban"
        conf = self.dir / "conf"
        (conf / "filter.d").mkdir(parents=True)
        (conf / "action.d").mkdir()
        for name in ("fail2ban.conf", "jail.conf", "paths-common.conf", "paths-debian.conf"):
            shutil.copy(ETC / name, conf / name)
        for filt in {f for f, _ in jails.values()}:
            for fname in _filter_files(filt):
                shutil.copy(ETC / "filter.d" / fname, conf / "filter.d" / fname)
        self.ban_file = self.dir / "bans.txt"
        (conf / "action.d" / "bench-noop.conf").write_text(
            NOOP_ACTION.format(target=self.ban_file), encoding="utf-8"
        )
        self.sock = self.dir / "fail2ban.sock"
        self.log = self.dir / "fail2ban.log"
        self.pidfile = self.dir / "fail2ban.pid"
        self.log.touch()
        (conf / "fail2ban.local").write_text(
            "[Definition]\n"
            "loglevel = INFO\n"
            f"logtarget = {self.log}\n"
            f"socket = {self.sock}\n"
            f"pidfile = {self.pidfile}\n"
            "dbfile = :memory:\n",
            encoding="utf-8",
        )
        (conf / "jail.local").write_text(_jail_local(jails, self.backend), encoding="utf-8")
        self.stdio_path = self.dir / "server.out"
        self._stdio: IO[bytes] = self.stdio_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["TZ"] = "UTC"
        cmd = [str(SERVER), "-f", "-x", "-c", str(conf), "-s", str(self.sock)]
        cmd += ["-p", str(self.pidfile), "--logtarget", str(self.log), "--loglevel", "INFO"]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._stdio,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.bans: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._tail = threading.Thread(target=self._follow_log, daemon=True)
        self._tail.start()

    def _follow_log(self) -> None:
        with self.log.open("r", encoding="utf-8", errors="replace") as fh:
            buf = ""
            while not self._stop.is_set():
                chunk = fh.read()
                if not chunk:
                    self._stop.wait(0.005)
                    continue
                buf += chunk
                *lines, buf = buf.split("\n")
                found = [m for m in map(BAN_RE.match, lines) if m]
                if not found:
                    continue
                with self.cond:
                    for m in found:
                        when = calendar.timegm(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
                        self.bans.setdefault(m[4], when + int(m[2]) / 1000.0)
                    self.cond.notify_all()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every jail answers ``status``; RuntimeError if the server dies."""
        deadline = time.monotonic() + timeout
        pending = set(self.jails)
        while pending:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                rc = self.proc.poll()
                raise RuntimeError(f"fail2ban-server not ready (rc={rc}): {self.tail()}")
            for jail in sorted(pending):
                try:
                    if self.request("status", jail)[0] == 0:
                        pending.discard(jail)
                except (OSError, RuntimeError):
                    break
            if pending:
                time.sleep(0.1)

    def tail(self, n: int = 2000) -> str:
        """The end of the server's log and stdout, for error messages."""
        text = self.log.read_text(errors="replace") + self.stdio_path.read_text(errors="replace")
        return text[-n:]

    def request(self, *cmd: str, timeout: float = 10.0) -> Any:
        """One command over the server's socket (fail2ban's pickle protocol), no client
        process: sampling every second would otherwise cost a Python start-up each time."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.sock))
            sock.sendall(pickle.dumps(list(cmd), pickle.HIGHEST_PROTOCOL) + F2B_END)
            msg = b""
            while msg.rfind(F2B_END, -32) == -1:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"fail2ban socket closed during {cmd}")
                msg += chunk
            sock.sendall(F2B_CLOSE + F2B_END)
        # The answer comes from the private server this module started, on its own socket.
        return _Unpickler(io.BytesIO(msg)).load()

    def status(self, jail: str) -> dict[str, int]:
        """Counters of ``status JAIL``: Currently/Total failed, Currently/Total banned."""
        code, answer = self.request("status", jail)
        if code != 0:
            raise RuntimeError(f"fail2ban status {jail}: {answer!r}")
        out: dict[str, int] = {}

        def walk(node: Any) -> None:
            if isinstance(node, (list, tuple)):
                if len(node) == 2 and node[0] in STATUS_KEYS and isinstance(node[1], int):
                    out[node[0]] = node[1]
                else:
                    for item in node:
                        walk(item)

        walk(answer)
        return out

    def wait_ban(self, addr: str, timeout: float) -> float | None:
        """Wall-clock time fail2ban logged the ban of ``addr``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while addr not in self.bans:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.bans[addr]

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """``stop`` over the socket, then SIGTERM, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, EOFError, pickle.UnpicklingError):
                self.request("stop", timeout=20)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._stop.set()
        self._tail.join(5)
        self._stdio.close()
        return int(self.proc.returncode)
