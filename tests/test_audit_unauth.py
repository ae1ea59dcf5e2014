"""Unauthenticated access: real HTTP probes against a tiny local stand-in for an AI API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import ProbeResult, UrllibProber
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import Status
from aisentinel.audit.testing import FakeProber, make_context
from aisentinel.commands import SubprocessRunner


class _FakeAI(BaseHTTPRequestHandler):
    """Answers like Ollama: /api/tags lists models; ``require_token`` makes it answer 401."""

    require_token = False

    def do_GET(self) -> None:
        if self.require_token and self.headers.get("Authorization") != "Bearer t0k3n":
            self._reply(401, {"error": "unauthorized"})
        elif self.path == "/api/tags":
            self._reply(200, {"models": [{"name": "llama3:8b"}]})
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


class _Locked(_FakeAI):
    require_token = True


def serve(handler: type[BaseHTTPRequestHandler], host: str) -> ThreadingHTTPServer:
    """Start ``handler`` on a free port of ``host`` in a daemon thread."""
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    """Servers a test starts; all shut down afterwards."""
    started: list[ThreadingHTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_open_api_on_wildcard_fails(servers: list[ThreadingHTTPServer]) -> None:
    """A stand-in bound to 0.0.0.0 answering /api/tags without credentials fails the check."""
    server = serve(_FakeAI, "0.0.0.0")
    servers.append(server)
    port = server.server_address[1]
    ctx = make_context(AuditConfig(ai_ports=(port,)), runner=SubprocessRunner())
    ctx.prober = UrllibProber()
    result = run_check(CHECKS.get("unauth.ai-api").factory, ctx)
    assert result.status is Status.FAIL
    assert f"GET http://127.0.0.1:{port}/api/tags -> 200 (open)" in result.evidence
    assert f"GET http://127.0.0.1:{port}/v1/models -> 404 (absent)" in result.evidence
    assert "auth_basic" in result.remediation


def test_api_answering_401_passes(servers: list[ThreadingHTTPServer]) -> None:
    """A stand-in that answers 401 without a token passes: it asks for credentials."""
    server = serve(_Locked, "0.0.0.0")
    servers.append(server)
    port = server.server_address[1]
    ctx = make_context(AuditConfig(ai_ports=(port,)))
    ctx.prober = UrllibProber()
    result = run_check(CHECKS.get("unauth.ai-api").factory, ctx)
    assert result.status is Status.PASS
    assert all("-> 401 (auth)" in line for line in result.evidence)


def test_loopback_only_api_is_not_probed(servers: list[ThreadingHTTPServer]) -> None:
    """An open API bound to 127.0.0.1 is not exposed: nothing is probed and the check passes."""
    server = serve(_FakeAI, "127.0.0.1")
    servers.append(server)
    prober = FakeProber()
    ctx = make_context(AuditConfig(ai_ports=(server.server_address[1],)), prober=prober)
    result = run_check(CHECKS.get("unauth.ai-api").factory, ctx)
    assert result.status is Status.PASS
    assert prober.calls == []


def test_silent_port_is_unknown() -> None:
    """An exposed port where no probe gets an answer is unknown, not pass."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(1)
    try:
        port = sock.getsockname()[1]
        ctx = make_context(AuditConfig(ai_ports=(port,)))  # FakeProber: connection refused
        result = run_check(CHECKS.get("unauth.ai-api").factory, ctx)
    finally:
        sock.close()
    assert result.status is Status.UNKNOWN
    assert f"no answer from http://127.0.0.1:{port}" in result.evidence[0]


def test_real_prober_reports_refused_and_does_not_follow_redirects(
    servers: list[ThreadingHTTPServer],
) -> None:
    """UrllibProber gives an error (not an exception) when refused and a 3xx as is."""

    class _Redirect(_FakeAI):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "/login")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = serve(_Redirect, "127.0.0.1")
    servers.append(server)
    prober = UrllibProber()
    got = prober.get(f"http://127.0.0.1:{server.server_address[1]}/api/tags", timeout=2)
    assert got.status == 302
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    refused = prober.get(f"http://127.0.0.1:{free}/api/tags", timeout=2)
    assert refused == ProbeResult(refused.url, None, refused.error)
    assert refused.error
    with pytest.raises(ValueError, match="plain http"):
        prober.get("file:///etc/passwd", timeout=1)
