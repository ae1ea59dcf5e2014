"""Unauthenticated access: real HTTP probes against a tiny local stand-in for an AI API."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import listener

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import HttpClientProber, ProbeResult
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import CheckResult, Status
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
    ctx.prober = HttpClientProber()
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
    ctx.prober = HttpClientProber()
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


@pytest.mark.parametrize(
    ("check", "config"),
    [
        ("unauth.ai-api", "ai_ports"),
        ("unauth.side-services", "side_services.ray"),
        ("unauth.webui-signup", "ai_ports"),
    ],
)
def test_silent_port_is_unknown(check: str, config: str) -> None:
    """An exposed port (AI, Ray, Open WebUI's config) where no probe gets an answer is unknown."""
    sock = listener("0.0.0.0")
    try:
        port = sock.getsockname()[1]
        table, _, key = config.rpartition(".")
        values: dict[str, object] = {key: [port]}
        ctx = make_context(AuditConfig.model_validate({table: values} if table else values))
        result = run_check(CHECKS.get(check).factory, ctx)  # FakeProber: connection refused
    finally:
        sock.close()
    assert result.status is Status.UNKNOWN
    assert result.evidence[0].startswith(f"no answer from http://127.0.0.1:{port}")


def test_real_prober_reports_refused_and_does_not_follow_redirects(
    servers: list[ThreadingHTTPServer],
) -> None:
    """HttpClientProber gives an error (not an exception) when refused and a 3xx as is."""

    class _Redirect(_FakeAI):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "/login")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = serve(_Redirect, "127.0.0.1")
    servers.append(server)
    prober = HttpClientProber()
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


class _FakeRay(_FakeAI):
    """Answers like Ray's dashboard before 2.52: the jobs API lists jobs to anyone."""

    def do_GET(self) -> None:
        if self.path == "/api/jobs/":
            self._reply(200, {"jobs": []})  # Ray answers a JSON list; any 2xx counts
        else:
            self._reply(404, {"error": "not found"})


class _FakeJupyter(_FakeAI):
    """Answers like Jupyter Server: /api/kernels is 403 without the token unless it is off."""

    def do_GET(self) -> None:
        if self.path != "/api/kernels":
            self._reply(404, {"message": "Not Found"})
        elif self.require_token and self.headers.get("Authorization") != "token t0k3n":
            self._reply(403, {"message": "Forbidden"})
        else:
            self._reply(200, {"kernels": []})


class _LockedJupyter(_FakeJupyter):
    require_token = True


def side_unauth(
    servers: list[ThreadingHTTPServer], **kinds: type[BaseHTTPRequestHandler]
) -> CheckResult:
    """Run unauth.side-services with one 0.0.0.0 stand-in per service kind (``ray=_FakeRay``)."""
    ports: dict[str, list[int]] = {"ray": [], "jupyter": [], "comfyui": [], "exporters": []}
    for kind, handler in kinds.items():
        server = serve(handler, "0.0.0.0")
        servers.append(server)
        ports[kind] = [server.server_address[1]]
    ctx = make_context(AuditConfig.model_validate({"side_services": ports}))
    ctx.prober = HttpClientProber()
    return run_check(CHECKS.get("unauth.side-services").factory, ctx)


def test_open_ray_jobs_api_fails(servers: list[ThreadingHTTPServer]) -> None:
    """A Ray dashboard on 0.0.0.0 whose jobs API answers 200 without a token fails (ShadowRay)."""
    result = side_unauth(servers, ray=_FakeRay)
    port = servers[0].server_address[1]
    assert result.status is Status.FAIL
    assert result.evidence == (
        "answers without credentials:",
        f"Ray dashboard: GET http://127.0.0.1:{port}/api/jobs/ -> 200 (open)",
    )
    assert "--dashboard-host=127.0.0.1" in result.remediation
    assert "RAY_AUTH_MODE=token" in result.remediation


def test_jupyter_without_token_fails_with_token_passes(servers: list[ThreadingHTTPServer]) -> None:
    """Jupyter's /api/kernels at 200 without a token fails; a 403 asking for one passes."""
    opened = side_unauth(servers, jupyter=_FakeJupyter)
    assert opened.status is Status.FAIL
    assert opened.evidence[1].endswith("/api/kernels -> 200 (open)")
    assert "--ServerApp.ip=127.0.0.1" in opened.remediation
    locked = side_unauth(servers, jupyter=_LockedJupyter)
    port = servers[1].server_address[1]
    assert locked.status is Status.PASS
    assert locked.evidence == (f"Jupyter: GET http://127.0.0.1:{port}/api/kernels -> 403 (auth)",)


def test_side_services_without_probe_or_on_loopback_are_not_probed(
    servers: list[ThreadingHTTPServer],
) -> None:
    """ComfyUI and exporters on 0.0.0.0 and a Ray on 127.0.0.1 are not probed: pass."""
    ray = serve(_FakeRay, "127.0.0.1")
    servers.append(ray)
    others = [serve(_FakeAI, "0.0.0.0") for _ in range(2)]
    servers.extend(others)
    prober = FakeProber()
    side = {
        "ray": [ray.server_address[1]],
        "comfyui": [others[0].server_address[1]],
        "exporters": [others[1].server_address[1]],
    }
    ctx = make_context(AuditConfig.model_validate({"side_services": side}), prober=prober)
    result = run_check(CHECKS.get("unauth.side-services").factory, ctx)
    assert result.status is Status.PASS
    assert result.evidence == (
        "no Ray dashboard or Jupyter port listens beyond loopback: nothing to probe",
    )
    assert prober.calls == []


# --------------------------------------------------------------------------- Open WebUI sign-up


def webui_handler(config: object) -> type[BaseHTTPRequestHandler]:
    """A stand-in for Open WebUI whose public GET /api/config answers ``config`` as JSON."""

    class _WebUI(_FakeAI):
        def do_GET(self) -> None:
            if self.path == "/api/config":
                self._reply(200, config)  # type: ignore[arg-type]
            else:
                self._reply(401, {"detail": "Not authenticated"})

    return _WebUI


def webui(servers: list[ThreadingHTTPServer], config: object, host: str = "0.0.0.0") -> CheckResult:
    """Run unauth.webui-signup against one real stand-in on ``host`` (its port the AI port)."""
    server = serve(webui_handler(config), host)
    servers.append(server)
    ctx = make_context(AuditConfig(ai_ports=(server.server_address[1],)))
    ctx.prober = HttpClientProber()
    return run_check(CHECKS.get("unauth.webui-signup").factory, ctx)


def features(**values: object) -> dict[str, object]:
    """An Open WebUI /api/config answer as it sends it to a visitor without a login."""
    return {"status": True, "name": "Open WebUI", "version": "0.6.5", "features": values}


def test_webui_open_signup_warns(servers: list[ThreadingHTTPServer]) -> None:
    """A reachable Open WebUI with sign-up on warns, naming the URL and the admin setting."""
    result = webui(servers, features(auth=True, enable_signup=True, enable_login_form=True))
    port = servers[0].server_address[1]
    assert result.status is Status.WARN
    assert result.evidence[0].startswith(
        f"Open WebUI at http://127.0.0.1:{port}/api/config: sign-up open: anyone"
    )
    assert "Enable New Sign Ups" in result.remediation


@pytest.mark.parametrize(("host", "status"), [("0.0.0.0", Status.FAIL), ("127.0.0.1", Status.WARN)])
def test_webui_without_login(servers: list[ThreadingHTTPServer], host: str, status: Status) -> None:
    """WEBUI_AUTH=False fails beyond loopback and warns on loopback (a proxy must guard it)."""
    result = webui(servers, features(auth=False, enable_signup=False), host)
    assert result.status is status
    assert "no login at all (features.auth false: WEBUI_AUTH=False)" in result.evidence[0]


def test_webui_onboarding_fails_and_closed_signup_passes(
    servers: list[ThreadingHTTPServer],
) -> None:
    """No account yet (onboarding) fails: the first sign-up is admin; sign-up off passes."""
    fresh = webui(servers, {**features(auth=True, enable_signup=False), "onboarding": True})
    assert fresh.status is Status.FAIL
    assert any("whoever signs up first becomes its admin" in line for line in fresh.evidence)
    closed = webui(servers, features(auth=True, enable_signup=False))
    assert closed.status is Status.PASS
    port = servers[1].server_address[1]
    assert closed.evidence == (f"Open WebUI at http://127.0.0.1:{port}/api/config: sign-up off",)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<!doctype html><title>Gradio</title>", "not Open WebUI"),
        (b'{"models": []}', "not Open WebUI"),
        (b'{"features": ["auth"]}', "not Open WebUI"),
        (b"[" * 100_000, "not Open WebUI"),
        (b'{"features": {"auth": "\xff\xfe"}}', "not Open WebUI"),
        (b'{"features": {}}', "features.enable_signup missing or not a boolean: not judged"),
        (b'{"features": {"auth": 1, "enable_signup": "yes"}}', "login not judged"),
    ],
    ids=["html", "other-json", "features-list", "deep-nesting", "bad-utf8", "no-keys", "not-bool"],
)
def test_webui_answer_parsed_tolerantly(
    sockets: list[socket.socket], body: bytes, expected: str
) -> None:
    """Odd /api/config answers never crash: no JSON features = not Open WebUI; odd keys unjudged."""
    sock = listener("127.0.0.1")
    sockets.append(sock)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/config"
    prober = FakeProber({url: 200}, bodies={url: body})
    ctx = make_context(AuditConfig(ai_ports=(sock.getsockname()[1],)), prober=prober)
    result = run_check(CHECKS.get("unauth.webui-signup").factory, ctx)
    assert result.status is Status.PASS
    assert any(expected in line for line in result.evidence), result.evidence


def test_real_prober_keeps_2xx_body_and_survives_non_http(
    servers: list[ThreadingHTTPServer],
) -> None:
    """The real prober returns a 2xx body when asked, and an error (no exception) for non-HTTP."""
    server = serve(webui_handler(features(auth=True)), "127.0.0.1")
    servers.append(server)
    url = f"http://127.0.0.1:{server.server_address[1]}/api/config"
    got = HttpClientProber().get(url, timeout=2, read_body=True)
    assert json.loads(got.body)["features"] == {"auth": True}
    speaker = listener("127.0.0.1")

    def banner() -> None:
        conn, _ = speaker.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()

    threading.Thread(target=banner, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{speaker.getsockname()[1]}/api/config"
        odd = HttpClientProber().get(url, timeout=2)
    finally:
        speaker.close()
    assert odd.status is None
    assert odd.error


Handler = Callable[[socket.socket, threading.Event], None]


@pytest.fixture
def raw() -> Iterator[Callable[[str, Handler], int]]:
    """Starts raw-socket services (one thread per connection); returns their port; all end after."""
    stop = threading.Event()
    opened: list[socket.socket] = []

    def start(host: str, handler: Handler) -> int:
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(8)
        opened.append(sock)

        def accept() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                threading.Thread(target=_serve_one, args=(handler, conn, stop), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return int(sock.getsockname()[1])

    yield start
    stop.set()
    for sock in opened:
        sock.close()


def _serve_one(handler: Handler, conn: socket.socket, stop: threading.Event) -> None:
    with conn:
        conn.recv(4096)  # the GET (small: it fits one read)
        with contextlib.suppress(OSError):  # the prober hung up
            handler(conn, stop)


def _event_stream(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 event stream that never ends: a chunk every 0.1 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not stop.wait(0.1):
        conn.sendall(b"5\r\nping\n\r\n")


def _header_trickle(conn: socket.socket, stop: threading.Event) -> None:
    """A status line, then one header every 0.1 s for ever (a slow-loris answer)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.1):
        conn.sendall(b"X-A: b\r\n")


def _stalled_body(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 promising 100 bytes that sends one and then hangs (a stuck backend)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    stop.wait(30)


def _cut_body(conn: socket.socket, stop: threading.Event) -> None:
    """A chunked 200 whose connection closes in the middle of a chunk."""
    conn.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{"a')


def _bounded(seconds: float, call: Callable[[], ProbeResult]) -> tuple[ProbeResult, float]:
    """``call()``'s result and how long it took; fails the test if it takes over ``seconds``."""
    box: list[ProbeResult] = []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"the probe was still running after {seconds}s"
    return box[0], time.monotonic() - start


def test_real_prober_ends_a_never_ending_body_at_its_timeout(
    raw: Callable[[str, Handler], int],
) -> None:
    """A 200 that streams for ever gives its status and what arrived by the timeout; no hang."""
    url = f"http://127.0.0.1:{raw('127.0.0.1', _event_stream)}/api/config"
    got, took = _bounded(5, lambda: HttpClientProber().get(url, timeout=1, read_body=True))
    assert got.status == 200
    assert got.body.startswith(b"ping\nping\n")
    assert 0.9 < took < 2
    unread, took = _bounded(5, lambda: HttpClientProber().get(url, timeout=1))
    assert (unread.status, unread.body) == (200, b"")
    assert took < 0.5  # no body asked for: none read


def test_real_prober_ends_a_header_trickle_at_its_timeout(
    raw: Callable[[str, Handler], int],
) -> None:
    """Headers that never end are no answer once the whole request's timeout has passed."""
    url = f"http://127.0.0.1:{raw('127.0.0.1', _header_trickle)}/api/tags"
    got, took = _bounded(5, lambda: HttpClientProber().get(url, timeout=1))
    assert got == ProbeResult(url, None, "no complete answer within 1s")
    assert took < 2


@pytest.mark.parametrize(
    ("handler", "body"), [(_stalled_body, b"{"), (_cut_body, b'{"a')], ids=["stalled", "cut"]
)
def test_real_prober_keeps_status_of_a_stalled_or_cut_body(
    raw: Callable[[str, Handler], int], handler: Handler, body: bytes
) -> None:
    """A 2xx whose body stalls or is cut short keeps its status and the part that arrived."""
    url = f"http://127.0.0.1:{raw('127.0.0.1', handler)}/api/config"
    got, _ = _bounded(5, lambda: HttpClientProber().get(url, timeout=1, read_body=True))
    assert (got.status, got.error, got.body) == (200, "", body)


def test_open_api_with_a_stalled_body_fails(raw: Callable[[str, Handler], int]) -> None:
    """An exposed API answering 200 whose body then hangs fails unauth.ai-api (not unknown)."""
    port = raw("0.0.0.0", _stalled_body)
    ctx = make_context(AuditConfig(ai_ports=(port,), probe_timeout=1), runner=SubprocessRunner())
    ctx.prober = HttpClientProber()
    result = run_check(CHECKS.get("unauth.ai-api").factory, ctx)
    assert result.status is Status.FAIL
    assert f"GET http://127.0.0.1:{port}/api/tags -> 200 (open)" in result.evidence


def test_real_prober_shortens_a_non_http_banner(raw: Callable[[str, Handler], int]) -> None:
    """A non-HTTP service's long banner is cut to 200 characters in the probe's error."""

    def banner(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"\x1b[2J" + b"B" * 5000 + b"\r\n")

    url = f"http://127.0.0.1:{raw('127.0.0.1', banner)}/api/tags"
    got, _ = _bounded(5, lambda: HttpClientProber().get(url, timeout=1))
    assert got.status is None
    assert got.error.startswith("\x1b[2JBBB")
    assert len(got.error) == 200
