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

import http.client
import threading
import urllib.error
import urllib.request
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
    """The first :data:`PROBE_BODY_LIMIT` bytes of a 2xx answer's body (empty otherwise)."""


class HttpProber(Protocol):
    """Makes one GET without credentials, following no redirect; keeps a 2xx answer's body."""

    def get(self, url: str, *, timeout: float) -> ProbeResult:
        """Probe ``url``; never raises for network errors (they go in ``error``)."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibProber:
    """The real prober: ``urllib`` with proxies disabled and redirects not followed.

    Proxies are disabled so a probe of ``127.0.0.1`` never leaves the host.
    """

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def get(self, url: str, *, timeout: float) -> ProbeResult:
        if not url.startswith("http://"):
            raise ValueError(f"probe URLs are plain http: {url!r}")
        request = urllib.request.Request(url, headers={"User-Agent": "aisentinel-audit"})  # noqa: S310 - scheme checked above
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                body = response.read(PROBE_BODY_LIMIT) if 200 <= status < 300 else b""
                return ProbeResult(url, status, body=body)
        except urllib.error.HTTPError as exc:
            return ProbeResult(url, exc.code)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: a service that does not speak HTTP (BadStatusLine) or cuts
            # the body short (IncompleteRead)
            reason = getattr(exc, "reason", exc)
            return ProbeResult(url, None, str(reason) or type(exc).__name__)


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
    prober: HttpProber = field(default_factory=UrllibProber)
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
