"""Everything a check reads, in one injectable object.

A check is a function of an :class:`AuditContext`. The context holds the config
(paths such as ``proc_root`` and ``unit_dirs``, tool names), a
:class:`~aisentinel.commands.CommandRunner`, an :class:`HttpProber`, a
:data:`DockerInspector`, the clock and what the caller knows about aisentinel itself
(its metrics address, whether it enforces bans). Tests build one with fakes; the CLI
and the scheduler use :meth:`AuditContext.for_host`.

Data several checks share (listening sockets, the firewall state, ``nginx -T``) is
computed once per run through :meth:`AuditContext.memo`, which also caches the error.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, cast

from aisentinel.audit.config import AuditConfig
from aisentinel.clock import Clock, SystemClock
from aisentinel.commands import CommandResult, CommandRunner, SubprocessRunner

T = TypeVar("T")

ToolName = Literal[
    "ufw", "nft", "iptables", "ip6tables", "nginx", "fail2ban_client", "sshd", "systemctl"
]
"""A field of :class:`~aisentinel.audit.config.AuditTools`."""


PROBE_BODY_LIMIT = 65536
"""At most this many bytes of a probed answer's body are read (the rest is left unread)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer to one unauthenticated GET: an HTTP status, or why there was none."""

    url: str
    status: int | None
    error: str = ""
    body: bytes = b""
    """When asked for (``read_body``): what arrived in time of a 2xx answer's body, at
    most :data:`PROBE_BODY_LIMIT` bytes (empty otherwise)."""


class HttpProber(Protocol):
    """Makes one GET without credentials, following no redirect."""

    def get(self, url: str, *, timeout: float, read_body: bool = False) -> ProbeResult:
        """Probe ``url`` within ``timeout`` seconds in all; with ``read_body``, keep what
        arrives of a 2xx answer's body. Never raises for network errors (they go in
        ``error``)."""
        ...


class _Watchdog:
    """Shuts a connection's socket down when its time is up, waking a blocked read."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._conn.sock is not None:
                with contextlib.suppress(OSError):  # already closed by the peer
                    self._conn.sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Disarm (before the connection is closed, so a late firing finds nothing to do)."""
        with self._lock:
            self._done = True
        self._timer.cancel()


class HttpClientProber:
    """The real prober: one ``http.client`` connection per GET; no proxy, no redirect followed.

    No proxy is asked, so a probe of ``127.0.0.1`` never leaves the host. ``timeout``
    bounds the whole request (connect, headers and body together): past it the socket
    is shut down, so a service that trickles its headers or streams its body for ever
    (an event stream, a heartbeat) cannot hold the audit. A body is read only when the
    caller asks (``read_body``), in small pieces; one that stalls, is cut short or is
    still streaming at the deadline keeps its status and what arrived.
    """

    def get(self, url: str, *, timeout: float, read_body: bool = False) -> ProbeResult:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.netloc:
            raise ValueError(f"probe URLs are plain http: {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + timeout
        watchdog: _Watchdog | None = None
        try:
            conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        except (ValueError, http.client.HTTPException) as exc:  # InvalidURL: a bad port
            return ProbeResult(url, None, _short(exc))
        try:
            conn.connect()  # bounded by ``timeout`` itself
            left = deadline - time.monotonic()
            if left <= 0:
                return ProbeResult(url, None, f"no answer within {timeout:g}s")
            watchdog = _Watchdog(conn, left)
            conn.request(
                "GET", target, headers={"User-Agent": "aisentinel-audit", "Connection": "close"}
            )
            response = conn.getresponse()
            if watchdog.fired:  # the shutdown ended a header trickle: no complete answer
                return ProbeResult(url, None, f"no complete answer within {timeout:g}s")
            status = int(response.status)
            body = b""
            if read_body and 200 <= status < 300:
                body = _read_some(response, deadline)
            return ProbeResult(url, status, body=body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: a service that does not speak HTTP (BadStatusLine, whose text
            # is its banner: shortened) or hangs up before its headers end
            if watchdog is not None and watchdog.fired:
                return ProbeResult(url, None, f"no complete answer within {timeout:g}s")
            return ProbeResult(url, None, _short(exc))
        finally:
            if watchdog is not None:
                watchdog.stop()
            conn.close()


_PIECE = 4096


def _read_some(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """Up to :data:`PROBE_BODY_LIMIT` bytes of ``response``'s body: what arrives by ``deadline``.

    A body that stalls, is cut short or goes on streaming gives what was read (the
    deadline's watchdog ends a read that waits past it).
    """
    body = bytearray()
    try:
        while len(body) < PROBE_BODY_LIMIT and time.monotonic() < deadline:
            piece = response.read1(min(_PIECE, PROBE_BODY_LIMIT - len(body)))
            if not piece:
                break
            body += piece
    except (OSError, ValueError, http.client.HTTPException):
        pass  # cut short (IncompleteRead, a bad chunk), timed out or shut down: keep it
    return bytes(body)


class DockerUnavailableError(Exception):
    """No Docker engine answered (SDK missing, socket absent, permission denied)."""


DockerInspector = Callable[[float], list[Mapping[str, Any]]]
"""Given a timeout, the ``inspect`` data (``container.attrs``) of running containers.

Raises :class:`DockerUnavailableError` when there is no engine to ask.
"""


def docker_sdk_inspector(timeout: float) -> list[Mapping[str, Any]]:
    """Running containers' inspect data through the ``docker`` SDK (``DOCKER_HOST`` honoured)."""
    try:
        import docker  # noqa: PLC0415 - optional dependency, imported when used
    except ImportError:
        raise DockerUnavailableError("the docker Python SDK is not installed") from None
    try:
        client = docker.from_env(timeout=max(1, round(timeout)))
    except Exception as exc:  # noqa: BLE001 - the SDK raises DockerException and OS errors alike
        raise DockerUnavailableError(f"no Docker engine: {_short(exc)}") from None
    try:
        client.ping()
        return [cast("Mapping[str, Any]", c.attrs) for c in client.containers.list()]
    except Exception as exc:  # noqa: BLE001 - any API failure means "cannot tell"
        raise DockerUnavailableError(f"Docker engine did not answer: {_short(exc)}") from None
    finally:
        client.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@dataclass
class AuditContext:
    """Data sources for one audit run (see the module docstring)."""

    config: AuditConfig
    runner: CommandRunner
    prober: HttpProber = field(default_factory=HttpClientProber)
    docker: DockerInspector = docker_sdk_inspector
    clock: Clock = field(default_factory=SystemClock)
    metrics_listen: str = ""
    """The exporter's ``host:port``; empty when metrics are off."""
    metrics_protection: str = "plain HTTP"
    """What guards the endpoint (``web_config``): ``TLS + basic auth``, ``TLS``,
    ``basic auth`` or ``plain HTTP``."""
    enforcement: str | None = None
    """How aisentinel itself bans (e.g. ``"nftables responder"``), or ``None`` if it does not."""
    enforcement_note: str = ""
    """Why a ban responder of aisentinel's config does not count (no daemon runs, it is
    unhealthy, ...); "" when none is left out."""
    _memo: dict[str, tuple[bool, object]] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_host(
        cls,
        config: AuditConfig,
        *,
        metrics_listen: str = "",
        metrics_protection: str = "plain HTTP",
        enforcement: str | None = None,
        enforcement_note: str = "",
        clock: Clock | None = None,
    ) -> AuditContext:
        """A context reading the real host (with ``config.command_prefix`` on commands)."""
        return cls(
            config=config,
            runner=SubprocessRunner(prefix=config.command_prefix),
            clock=clock or SystemClock(),
            metrics_listen=metrics_listen,
            metrics_protection=metrics_protection,
            enforcement=enforcement,
            enforcement_note=enforcement_note,
        )

    def tool(self, name: ToolName, *args: str) -> CommandResult:
        """Run the configured program for tool ``name`` (a field of ``AuditTools``).

        Raises :class:`~aisentinel.commands.CommandError` as the runner does.
        """
        program = cast("str", getattr(self.config.tools, name))
        return self.runner.run([program, *args], timeout=self.config.command_timeout)

    def has_tool(self, name: ToolName) -> bool:
        """Whether the configured program for tool ``name`` is installed."""
        return self.runner.has(cast("str", getattr(self.config.tools, name)))

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per context and key; an exception is cached and re-raised.

        Thread-safe: concurrent checks asking for the same key wait for one computation.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                try:
                    self._memo[key] = (True, compute())
                except Exception as exc:  # noqa: BLE001 - cached and re-raised to every caller
                    self._memo[key] = (False, exc)
            ok, value = self._memo[key]
        if not ok:
            raise cast("Exception", value)
        return cast("T", value)
