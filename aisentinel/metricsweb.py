"""The metrics endpoint's HTTP server: ``/metrics``, a landing page at ``/``, TLS, basic auth.

prometheus_client renders the metrics (its WSGI app, unchanged); this module puts it
behind what ``[exporter] web_config`` asks for (:mod:`aisentinel.webconfig`):

* TLS: each connection's handshake runs in that connection's own thread with a
  deadline, so a client that connects and says nothing cannot hold up the others.
* Basic auth: every path needs it once users are configured. Passwords are checked
  with bcrypt (constant-time compare); an unknown user costs the same bcrypt as a known
  one. bcrypt is slow on purpose, so credentials that passed are remembered for
  :data:`AUTH_CACHE_SECONDS` as a keyed HMAC (never the password) and a scrape costs
  one hash lookup; checks are done one at a time, so a flood of wrong passwords uses
  one core, not all of them.
* ``/``: a small HTML page for people (version, sources up, bans in force, links);
  every dynamic value goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import secrets
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from aisentinel.webconfig import WebConfig

AUTH_CACHE_SECONDS = 120.0
"""How long credentials that passed bcrypt are accepted without running it again."""
AUTH_CACHE_ENTRIES = 32
"""Distinct credentials remembered at once (the oldest goes first)."""
CONNECTION_TIMEOUT = 10.0
"""Seconds a connection may take for its TLS handshake, and between reads of a request."""
DOCS = "/usr/share/doc/aisentinel/"
"""Where the package installs the docs (runbooks.md, install.md)."""


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        ttl: float = AUTH_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = dict(users)
        self.ttl = ttl
        self.monotonic = monotonic
        self.bcrypt_checks = 0
        self._key = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()
        # Same cost as a real user's hash, so an unknown name answers as slowly.
        cost = int(next(iter(self.users.values()))[4:6]) if self.users else 4
        # Imported here: only a web config with basic_auth_users needs bcrypt.
        import bcrypt  # noqa: PLC0415

        self._checkpw = bcrypt.checkpw
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))

    def check(self, header: str | None) -> bool:
        """True when ``header`` carries a configured user and that user's password."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True)
            user, sep, password = raw.decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        digest = hmac.digest(self._key, raw, hashlib.sha256)
        now = self.monotonic()
        with self._lock:
            until = self._passed.get(digest)
            if until is not None and until > now:
                return True
        hashed = self.users.get(user)
        with self._bcrypt:
            self.bcrypt_checks += 1
            ok = self._checkpw(password.encode("utf-8"), hashed or self._dummy)
        if not ok or hashed is None:
            return False
        with self._lock:
            self._passed[digest] = self.monotonic() + self.ttl
            self._passed.move_to_end(digest)
            while len(self._passed) > AUTH_CACHE_ENTRIES:
                self._passed.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class Landing:
    """What the page at ``/`` shows."""

    version: str
    sources_up: int
    sources_total: int
    bans_active: int
    degraded: tuple[str, ...] = ()


def render_landing(info: Landing) -> bytes:
    """The HTML page for ``info``; every dynamic value is escaped."""

    def e(value: object) -> str:
        return html.escape(str(value), quote=True)

    degraded = ", ".join(info.degraded) if info.degraded else "none"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>aisentinel {e(info.version)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:.2em 1em .2em 0}}</style></head>
<body>
<h1>aisentinel</h1>
<table>
<tr><td>Version</td><td id="version">{e(info.version)}</td></tr>
<tr><td>Sources up</td><td id="sources-up">{e(info.sources_up)}/{e(info.sources_total)}</td></tr>
<tr><td>Bans in force</td><td id="bans-active">{e(info.bans_active)}</td></tr>
<tr><td>Degraded</td><td id="degraded">{e(degraded)}</td></tr>
</table>
<ul>
<li><a id="metrics-link" href="metrics">Metrics</a> (Prometheus text format)</li>
<li>Docs and alert runbooks: <code id="docs">{e(DOCS)}</code>
(runbooks.md), <code>man aisentinel</code>, <code>aisentinel status</code></li>
</ul>
</body>
</html>
"""
    return page.encode("utf-8")


PAGE_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


def make_app(
    registry: CollectorRegistry,
    landing: Callable[[], Landing],
    auth: BasicAuth | None = None,
) -> WSGIApplication:
    """The WSGI app: basic auth (when set) in front of ``/``, ``/metrics`` and nothing else."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if auth is not None and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Basic realm="aisentinel", charset="UTF-8"'),
                ],
            )
            return [b"Unauthorized\n"]
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/" and method in ("GET", "HEAD"):
            body = render_landing(landing())
            start_response("200 OK", [*PAGE_HEADERS, ("Content-Length", str(len(body)))])
            return [b""] if method == "HEAD" else [body]
        if path == "/favicon.ico":
            start_response("204 No Content", [])
            return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: the metrics are at /metrics\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log; a deadline between reads so an idle client frees its thread."""

    timeout = CONNECTION_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (a scrape every few seconds is not news)."""


class MetricsServer(ThreadingWSGIServer):
    """prometheus_client's threaded WSGI server, TLS handshakes in the connection's thread."""

    ssl_context: ssl.SSLContext | None = None
    tls_failures = 0

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake (when TLS is on) with a deadline, then serve the request."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            self.tls_failures += 1  # a failed handshake: the client sees it, nothing to serve
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)


def serve_metrics(
    listen: str,
    port: int,
    registry: CollectorRegistry,
    landing: Callable[[], Landing],
    web: WebConfig | None = None,
) -> MetricsServer:
    """Listen on ``listen``:``port`` and serve in a daemon thread; ``OSError`` when it cannot.

    TLS files that no longer load raise ``ssl.SSLError`` (an ``OSError``): the endpoint
    then stays down rather than serving without the protection the file asks for.
    """
    context = web.tls.context() if web is not None and web.tls is not None else None
    auth = BasicAuth(web.users) if web is not None and web.users else None

    class Server(MetricsServer):
        address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    httpd = make_server(
        listen, port, make_app(registry, landing, auth), Server, handler_class=_QuietHandler
    )
    httpd.ssl_context = context
    threading.Thread(target=httpd.serve_forever, name="aisentinel-metrics", daemon=True).start()
    return httpd
