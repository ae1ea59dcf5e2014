"""Real Prometheus, Alertmanager and a webhook receiver for tests, on loopback ports.

Each server is a subprocess (or thread) started by a fixture and always stopped by its
finalizer; every wait has a deadline. Certificates are made with Debian's openssl CLI.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "dashboards" / "prometheus" / "aisentinel-rules.yml"
ALERTMANAGER_EXAMPLE = REPO / "dashboards" / "alertmanager" / "alertmanager.yml"
WEB_CONFIG_EXAMPLE = REPO / "packaging" / "examples" / "web-config.yml"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(directory: Path) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    p = {n: directory / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-keyout", p["ca.key"], "-out", p["ca.crt"],
         "-days", "2", "-subj", "/CN=aisentinel test CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", *ec, "-keyout", p["srv.key"], "-out", p["srv.csr"],
         "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", p["srv.csr"], "-CA", p["ca.crt"], "-CAkey",
         p["ca.key"], "-CAcreateserial", "-out", p["srv.crt"], "-days", "2",
         "-extfile", ext],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"ca": p["ca.crt"], "cert": p["srv.crt"], "key": p["srv.key"]}


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def https_get(url: str, ca: Path, auth: str | None = None) -> tuple[int, str]:
    """GET ``url`` trusting ``ca``; (status, body) — errors with a status are returned."""
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:  # noqa: S310
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


class Server:
    """A subprocess on a loopback port, stopped by :meth:`stop` (terminate, then kill)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"

    def ready(self, timeout: float = 30.0) -> bool:
        """True once ``/-/ready`` answers 200 (False if the process died or time ran out)."""

        def ok() -> bool:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:  # noqa: S310
                    return int(resp.status) == 200
            except OSError:
                return False

        return wait_for(ok, timeout=timeout, interval=0.2)

    def get_json(self, path: str, **params: str) -> Any:
        """GET a JSON API path."""
        query = urllib.parse.urlencode(params)
        url = f"{self.base}{path}?{query}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def output(self) -> str:
        """What the server wrote so far (for assertion messages)."""
        self._fh.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Terminate, wait up to 10 s, then kill."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


def start_prometheus(work: Path, config: dict[str, Any]) -> Server:
    """Prometheus with ``config`` (a prometheus.yml as data), its own TSDB in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        "prometheus",
        f"--config.file={path}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    return Server(argv, port, work / "prometheus.log")


def start_alertmanager(work: Path, config: dict[str, Any]) -> Server:
    """Alertmanager with ``config``, clustering off, its own storage in ``work``."""
    assert ALERTMANAGER is not None
    work.mkdir(parents=True, exist_ok=True)
    path = work / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={path}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    return Server(argv, port, work / "alertmanager.log")


class Webhook:
    """A tiny HTTP server that records Alertmanager webhook posts with their arrival time."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, str, dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                hook.posts.append((time.monotonic(), self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
