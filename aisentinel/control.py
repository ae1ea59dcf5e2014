"""The daemon's local control socket: small JSON requests from ``aisentinel`` commands.

A Unix stream socket (``[daemon] control_socket``, default
``/run/aisentinel/control.sock``) served by one daemon thread. The protocol is one
JSON object per line each way::

    -> {"command": "status"}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": "unknown command 'x' (known: status)"}

Commands are a registry: a name mapped to a handler that takes the request's other
fields and returns JSON-able data (or raises :class:`CommandError` for a clean error
answer), so a new command is one entry. A connection may send several requests.
Commands that act (ban, unban, allow) are registered with
:meth:`ControlServer.register_with_peer`: their handler also gets the asking
:class:`Peer` (pid, uid, gid and user name from ``SO_PEERCRED``), to record who asked.

Who may ask: the directory is made ``0750`` and the socket ``0660``, so the file
system admits only root, the daemon's user and its group; the server checks again
with the peer's credentials (``SO_PEERCRED``; supplementary groups from
``SO_PEERGROUPS``, or ``/proc/<pid>/status`` where that is unavailable) and refuses
anyone else with an error answer. The serving thread checks every
:data:`CHECK_SECONDS` that the file at the path is still its socket; one removed or
replaced is bound again where the path is free (one log line), else
:attr:`ControlServer.problem` says why (the daemon reports ``control`` degraded).
Bad input (not JSON, not an object, an unknown
command, a request over :data:`MAX_REQUEST` bytes, a silent client) gets an error
answer or a closed connection, never an exception in the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAX_REQUEST = 64 * 1024
"""Bytes one request line may take (newline included)."""
CONNECTION_SECONDS = 10.0
"""How long one connection may stay open, requests and answers included."""
MAX_CONNECTIONS = 8
"""Connections served at once; more are answered 'busy' and closed."""
SOCKET_UMASK = 0o117
"""The umask while the socket is bound: its file is created 0660 (root and the group)."""
CHECK_SECONDS = 2.0
"""How often the serving thread checks that the socket file is still the one it
listens on (someone may remove it: ``rm``, a tmpfiles clean-up)."""

_UCRED = struct.Struct("3i")
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux 4.13+; 59 on the architectures Debian builds for except sparc/hppa (checked)."""

Handler = Callable[[Mapping[str, Any]], Any]
"""A command: the request's fields other than ``command`` -> JSON-able result."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a control connection (from ``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int
    user: str

    @classmethod
    def of(cls, pid: int, uid: int, gid: int) -> Peer:
        """The peer with its user name looked up (the uid as text when there is none)."""
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return cls(pid, uid, gid, user)

    @classmethod
    def self(cls) -> Peer:
        """This process (for requests handled without a connection: tests, in-process)."""
        return cls.of(os.getpid(), os.geteuid(), os.getegid())

    @property
    def who(self) -> str:
        """``alice (uid 1000)``: how the ledger and the log name the asker."""
        return f"{self.user} (uid {self.uid})"


PeerHandler = Callable[[Mapping[str, Any], Peer], Any]
"""A command that also gets the asking :class:`Peer`."""


class ControlError(Exception):
    """The control socket cannot be served (the message says why, in one line)."""


class CommandError(Exception):
    """A handler's clean refusal: its message is the error answer."""


class DaemonNotRunning(ControlError):  # noqa: N818 - reads as the condition it reports
    """No daemon answers on the socket (missing, or nobody listening)."""


class PermissionRefused(ControlError):  # noqa: N818 - reads as the condition it reports
    """The socket or the daemon refused this user."""


# ---------------------------------------------------------------------- peers


def _peer_groups(conn: socket.socket, pid: int) -> set[int] | None:
    """The peer's supplementary groups, or ``None`` when they cannot be read."""
    if sys.platform == "linux" and os.uname().machine not in ("sparc64", "parisc", "parisc64"):
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 1024)
        except OSError:
            pass
        else:
            count = len(raw) // 4
            return set(struct.unpack(f"{count}I", raw[: count * 4]))
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:] if g.isdigit()}
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# ---------------------------------------------------------------------- server


class ControlServer:
    """Serves ``handlers`` on the Unix socket ``path`` from its own daemon thread.

    :meth:`start` binds (raising :class:`ControlError` with a one-line reason when it
    cannot) and returns; :meth:`stop` closes the socket and removes its file.
    ``requests``, ``errors`` and ``refused`` count answered requests, error answers
    and refused peers.
    """

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler] | None = None,
        *,
        connection_seconds: float = CONNECTION_SECONDS,
        max_request: int = MAX_REQUEST,
    ) -> None:
        self.path = path
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.peer_handlers: dict[str, PeerHandler] = {}
        self.connection_seconds = connection_seconds
        self.max_request = max_request
        self.requests = 0
        self.errors = 0
        self.refused = 0
        self._group = -1
        self._inode = -1
        self._dev = -1
        self.problem: str | None = None
        """Why the socket cannot be reached now (its file removed or replaced and the
        path not free to bind again); ``None`` while it serves."""
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()

    def register(self, name: str, handler: Handler) -> None:
        """Add (or replace) the command ``name``."""
        self.peer_handlers.pop(name, None)
        self.handlers[name] = handler

    def register_with_peer(self, name: str, handler: PeerHandler) -> None:
        """Add (or replace) the command ``name``, whose handler also gets the :class:`Peer`."""
        self.handlers.pop(name, None)
        self.peer_handlers[name] = handler

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the socket and start serving; :class:`ControlError` if it cannot."""
        try:
            listener = self._bind()
        except ControlError:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="aisentinel-control", daemon=True)
        self._thread.start()
        log.info("control socket up", path=str(self.path))

    def stop(self) -> None:
        """Stop accepting, close the socket and remove its file (if still ours)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                if os.lstat(self.path).st_ino == self._inode:
                    self.path.unlink()
        self._wake_r.close()
        self._wake_w.close()

    def _bind(self) -> socket.socket:
        path = self.path
        if len(os.fsencode(path)) >= 108:
            raise ControlError(f"socket path too long for a Unix socket (107 bytes max): {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise ControlError(f"cannot create {path.parent}: {exc.strerror}") from None
        self._clear_stale(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _bind_with_mode(listener, path)
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode):
                listener.close()
                raise ControlError(f"cannot listen on {path}: replaced while it was bound")
            listener.listen(MAX_CONNECTIONS)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot listen on {path}: {exc.strerror}") from None
        self._group = st.st_gid
        self._inode = st.st_ino
        self._dev = st.st_dev
        return listener

    def _still_bound(self) -> bool:
        """Whether the file at :attr:`path` is the socket this server listens on."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (self._dev, self._inode)

    def _rebind(self, sel: selectors.BaseSelector, listener: socket.socket) -> socket.socket:
        """The socket file was removed or replaced: listen on a new one where the path is
        free (logged); else keep :attr:`problem` (logged once). The listener to serve."""
        try:
            fresh = self._bind()
        except ControlError as exc:
            if self.problem is None:
                log.error(  # noqa: TRY400 - the reason is the message
                    "control socket file removed or replaced and cannot be bound again; "
                    "`aisentinel status` and the other commands cannot reach the daemon",
                    path=str(self.path),
                    reason=str(exc),
                    fix="remove what is at the path (the daemon binds it within seconds), or "
                    "restart aisentinel",
                )
            self.problem = f"its file was removed or replaced and cannot be bound again: {exc}"
            return listener
        sel.unregister(listener)
        listener.close()
        sel.register(fresh, selectors.EVENT_READ)
        self._listener = fresh
        self.problem = None
        log.warning(
            "control socket file was removed or replaced; listening on a new one",
            path=str(self.path),
        )
        return fresh

    @staticmethod
    def _clear_stale(path: Path) -> None:
        """Remove a socket nobody listens on; refuse a live one or any other file."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ControlError(f"cannot inspect {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: its daemon is gone
        except OSError as exc:
            raise ControlError(f"cannot check {path}: {exc.strerror or exc}") from None
        else:
            raise ControlError(f"another daemon is serving {path}; not taking it over")
        finally:
            probe.close()
        try:
            path.unlink()
        except OSError as exc:
            raise ControlError(f"cannot remove stale socket {path}: {exc.strerror}") from None
        log.info("stale control socket removed", path=str(path))

    # ------------------------------------------------------------------ serving

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None  # noqa: S101 - start() set it
        next_check = time.monotonic() + CHECK_SECONDS
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = sel.select(timeout=1.0)
                if self._stopping.is_set():
                    break
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHECK_SECONDS
                    if not self._still_bound():
                        listener = self._rebind(sel, listener)
                        continue
                if not any(key.fileobj is listener for key, _ in ready):
                    continue
                try:
                    conn, _addr = listener.accept()
                except OSError as exc:
                    log.warning("control socket accept failed", reason=str(exc))
                    time.sleep(0.1)
                    continue
                if not self._slots.acquire(blocking=False):
                    self._answer_busy(conn)
                    continue
                threading.Thread(
                    target=self._connection,
                    args=(conn,),
                    name="aisentinel-control-conn",
                    daemon=True,
                ).start()

    def _answer_busy(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.sendall(_encode({"ok": False, "error": "busy: too many connections"}))

    def _connection(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._converse(conn)
        except Exception as exc:  # noqa: BLE001 - a client never takes the daemon down
            log.warning("control connection failed", reason=repr(exc))
        finally:
            self._slots.release()

    def _converse(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.connection_seconds
        refusal, peer = self._check_peer(conn)
        buffer = bytearray()
        while True:
            line = self._read_line(conn, buffer, deadline)
            if line is None:
                return
            if refusal is not None:  # read first, so the peer gets the answer, not a reset
                self._send(conn, {"ok": False, "error": refusal}, deadline)
                return
            if len(line) > self.max_request:
                self._count(error=True)  # counted before the answer: a client may look
                self._send(conn, {"ok": False, "error": _too_large(self.max_request)}, deadline)
                return
            answer = self.handle(line, peer)
            if not self._send(conn, answer, deadline):
                return

    def _read_line(self, conn: socket.socket, buffer: bytearray, deadline: float) -> bytes | None:
        """The next request line (without its newline); an over-long one is returned as is
        (longer than the cap) for the caller to refuse; ``None`` at end or time-out."""
        while True:
            end = buffer.find(b"\n")
            if end != -1:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            if len(buffer) > self.max_request:
                return bytes(buffer)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            conn.settimeout(left)
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return bytes(buffer) if buffer.strip() else None
            buffer += chunk

    def _send(self, conn: socket.socket, answer: Mapping[str, Any], deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        conn.settimeout(left)
        try:
            conn.sendall(_encode(answer))
        except (TimeoutError, OSError):
            return False
        return True

    def _check_peer(self, conn: socket.socket) -> tuple[str | None, Peer | None]:
        """``(None, peer)`` when the peer may ask; else the refusal to send it."""
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError as exc:
            self._count(refused=True)
            log.warning("control connection refused: no peer credentials", reason=str(exc))
            return "permission denied: peer credentials unavailable", None
        pid, uid, gid = _UCRED.unpack(raw)
        peer = Peer.of(pid, uid, gid)
        if uid in (0, os.geteuid()) or gid == self._group:
            return None, peer
        groups = _peer_groups(conn, pid)
        if groups is not None and self._group in groups:
            return None, peer
        self._count(refused=True)
        group = _group_name(self._group)
        log.warning("control connection refused", uid=uid, gid=gid, pid=pid)
        return (
            f"permission denied: uid {uid} is not root, the daemon's user, "
            f"or a member of group {group}"
        ), None

    def _count(self, *, error: bool = False, refused: bool = False) -> None:
        with self._lock:
            self.requests += 0 if refused else 1
            self.errors += 1 if error else 0
            self.refused += 1 if refused else 0

    # ------------------------------------------------------------------ requests

    def handle(self, line: bytes, peer: Peer | None = None) -> dict[str, Any]:
        """The answer to one request line from ``peer`` (default: this process; exposed
        for tests)."""
        answer = self._dispatch(line, peer)
        self._count(error=not answer.get("ok"))
        return answer

    def _dispatch(self, line: bytes, peer: Peer | None) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return {"ok": False, "error": "bad request: not a JSON object on one line"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad request: not a JSON object on one line"}
        command = request.pop("command", None)
        if not isinstance(command, str):
            return {"ok": False, "error": 'bad request: no "command" string'}
        handler = self.handlers.get(command)
        with_peer = self.peer_handlers.get(command)
        if handler is None and with_peer is None:
            known = ", ".join(sorted([*self.handlers, *self.peer_handlers])) or "none"
            shown = json.dumps(command[:64])
            return {"ok": False, "error": f"unknown command {shown} (known: {known})"}
        try:
            if with_peer is not None:
                result = with_peer(request, peer or Peer.self())
            else:
                assert handler is not None  # noqa: S101 - one of the two is set
                result = handler(request)
            json.dumps(result, allow_nan=False)  # fail here, not half-way through a send
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one clear line, the daemon runs on
            log.error("control command failed", command=command, reason=repr(exc))  # noqa: TRY400
            return {"ok": False, "error": f"internal error in {command}: {type(exc).__name__}"}
        return {"ok": True, "result": result}


def _bind_with_mode(listener: socket.socket, path: Path) -> None:
    """Bind ``listener`` to ``path``, its file created 0660 (the group may connect).

    Linux creates the file with the mode of the socket's inode (0777) less the umask,
    so the umask is :data:`SOCKET_UMASK` for the ``bind()`` call alone: a chmod of the
    path afterwards would follow a symbolic link someone who can write the directory
    swapped in meanwhile (the socket is bound again each time its file disappears),
    and a root daemon would chmod the file it names. The umask is the process's: the
    window is the one system call (a file another thread creates then is at most 0660)."""
    old = os.umask(SOCKET_UMASK)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)


def _too_large(cap: int) -> str:
    return f"request too large (over {cap} bytes)"


def _encode(answer: Mapping[str, Any]) -> bytes:
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode() + b"\n"


# ---------------------------------------------------------------------- client


def _not_a_socket(path: Path) -> None:
    """:class:`ControlError` when something other than a socket is at ``path``: a
    daemon cannot bind its control socket there, so whether one runs is unknown."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(
            f"{path} is not a socket: a daemon started with it runs without its control "
            "socket (its log says `control socket unavailable`; `aisentinel_degraded"
            '{component="control"}` is 1); move what is there away and restart it'
        )


def request(path: Path, command: str, *, timeout: float = 5.0, **args: Any) -> Any:
    """Send one command to the daemon at ``path`` and return its result.

    Raises :class:`DaemonNotRunning` when nobody listens there,
    :class:`PermissionRefused` when the socket or the daemon refuses this user,
    :class:`CommandError` for the daemon's error answer and :class:`ControlError` for
    anything else (time-out, garbled answer), each with a one-line message.
    """
    payload = json.dumps({**args, "command": command}, allow_nan=False).encode() + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise DaemonNotRunning(f"aisentinel is not running (no daemon at {path})") from None
        except ConnectionRefusedError:
            _not_a_socket(path)
            raise DaemonNotRunning(f"aisentinel is not running (no daemon at {path})") from None
        except PermissionError:
            raise PermissionRefused(f"permission denied on {path}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ENOTSOCK, errno.ECONNREFUSED):
                _not_a_socket(path)
                raise DaemonNotRunning(f"aisentinel is not running (no daemon at {path})") from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)  # a refusing daemon may answer and close early
            reply = _read_reply(sock)
        except TimeoutError:
            raise ControlError(f"no answer from {path} within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"connection to {path} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ControlError(f"garbled answer from {path}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"garbled answer from {path}")
    if answer.get("ok") is True:
        return answer.get("result")
    error = str(answer.get("error", "unknown error"))
    if error.startswith("permission denied"):
        raise PermissionRefused(error)
    raise CommandError(error)


def _read_reply(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    if not buffer:
        raise ControlError("the daemon closed the connection without answering")
    return bytes(buffer.split(b"\n", 1)[0])
