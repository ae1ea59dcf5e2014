"""A Docker-Engine-API-compatible server on a unix socket, for tests (no engine can run
in the test environment): container inspect, update, pause and unpause, enough for the
``docker`` SDK calls that GPU attribution and the throttle responder make."""

from __future__ import annotations

import json
import re
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


@dataclass
class FakeEngine:
    """What the test Docker server holds: its containers' inspect documents (limits,
    paused state, name, image) and the requests it was sent."""

    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


def container(cid: str, name: str, image: str = "ollama/ollama:0.5.7") -> dict[str, Any]:
    """A running container's inspect document, without CPU limits."""
    return {
        "Id": cid,
        "Name": f"/{name}",
        "Config": {"Image": image},
        "HostConfig": {"CpuQuota": 0, "CpuPeriod": 0},
        "State": {"Paused": False, "Running": True},
    }


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _docker_handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            path = re.sub(r"^/v[0-9.]+", "", self.path.split("?")[0])
            engine.requests.append((method, path))
            if path == "/version":
                self._reply(200, {"ApiVersion": "1.45", "Version": "test"})
                return
            m = re.fullmatch(r"/containers/([^/]+)/(json|update|pause|unpause)", path)
            if m is None or m.group(1) not in engine.containers:
                self._reply(404, {"message": "No such container"})
                return
            c = engine.containers[m.group(1)]
            verb = m.group(2)
            if verb == "json":
                self._reply(200, c)
            elif verb == "update":
                c["HostConfig"]["CpuQuota"] = body.get("CpuQuota", c["HostConfig"]["CpuQuota"])
                c["HostConfig"]["CpuPeriod"] = body.get("CpuPeriod", c["HostConfig"]["CpuPeriod"])
                self._reply(200, {"Warnings": []})
            elif verb == "pause":
                c["State"]["Paused"] = True
                self._reply(204)
            else:
                if not c["State"]["Paused"]:
                    self._reply(409, {"message": "Container is not paused"})
                    return
                c["State"]["Paused"] = False
                self._reply(204)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


@contextmanager
def serve(path: Path, engine: FakeEngine) -> Iterator[str]:
    """Serve ``engine`` on the unix socket ``path``; yields the ``unix://`` URL."""
    server = _UnixHTTPServer(str(path), _docker_handler(engine))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
