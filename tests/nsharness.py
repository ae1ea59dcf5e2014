"""Network namespaces for the real-firewall tests and bench/enforcement.py.

``Lab`` makes three namespaces of its own (names carry the pid, so parallel runs
never meet): a server, an attacker and a legitimate client, each client joined to
the server by its own veth pair, with addresses of the lab's choosing, private and
alive only inside the namespaces:

    attacker 10.231.1.2/24, fd00:a15e:1::2/64  <->  server 10.231.1.1, fd00:a15e:1::1
    client   10.231.2.2/24, fd00:a15e:2::2/64  <->  server 10.231.2.1, fd00:a15e:2::1

Nothing of the host's network is touched; ``close()`` kills what the lab started
and deletes the namespaces (their interfaces go with them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

SERVER4 = {"atk": "10.231.1.1", "ok": "10.231.2.1"}
SERVER6 = {"atk": "fd00:a15e:1::1", "ok": "fd00:a15e:2::1"}
ATTACKER4 = "10.231.1.2"
ATTACKER6 = "fd00:a15e:1::2"
CLIENT4 = "10.231.2.2"
CLIENT6 = "fd00:a15e:2::2"

PROBE = """
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n")
        data = s.recv(200)
except OSError as exc:
    print(type(exc).__name__)
    sys.exit(1)
sys.exit(0 if data.startswith(b"HTTP/1.1 200") else 2)
"""

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {port};
        listen [::]:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def missing_tools(*tools: str) -> str | None:
    """Why the real-firewall tests cannot run here (``None``: they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    absent = [t for t in ("ip", *tools) if shutil.which(t, path=sbin) is None]
    if absent:
        return f"not installed: {', '.join(absent)}"
    return None


def run(argv: list[str], *, check: bool = True, timeout: float = 30.0, **kw: object) -> str:
    """Run ``argv`` (no shell); its stdout. Raises with stderr when ``check`` fails."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.strip()}")
    return str(proc.stdout)


class Lab:
    """The three namespaces; see the module docstring."""

    def __init__(self, tag: str = "") -> None:
        base = f"ais{os.getpid()}{tag}"
        self.srv, self.atk, self.ok = f"{base}s", f"{base}a", f"{base}c"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []

    def ns(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``name``."""
        return ["ip", "netns", "exec", name, *argv]

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def up(self) -> Lab:
        """Create the namespaces, links and addresses."""
        for name in (self.srv, self.atk, self.ok):
            run(["ip", "netns", "add", name])
            self._made.append(name)
            run(self.ns(name, ["ip", "link", "set", "lo", "up"]))
        for peer, link in ((self.atk, "atk"), (self.ok, "ok")):
            run(["ip", "-n", self.srv, "link", "add", f"s{link}", "type", "veth", "peer", "name",
                 "eth0", "netns", peer])  # fmt: skip
            side = "1" if link == "atk" else "2"
            for ns, dev, host in ((self.srv, f"s{link}", "1"), (peer, "eth0", "2")):
                run(["ip", "-n", ns, "addr", "add", f"10.231.{side}.{host}/24", "dev", dev])
                run(["ip", "-n", ns, "addr", "add", f"fd00:a15e:{side}::{host}/64", "dev", dev,
                     "nodad"])  # fmt: skip
                run(["ip", "-n", ns, "link", "set", dev, "up"])
        return self

    def add_address(self, ns: str, cidr: str, dev: str = "eth0") -> None:
        """One more address on ``dev`` in ``ns`` (extra attacker sources)."""
        extra = ["nodad"] if ":" in cidr else []
        run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev, *extra])

    def start(self, ns: str, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """A process inside ``ns``, in a session of its own: :meth:`close` kills its group."""
        proc = subprocess.Popen(self.ns(ns, argv), start_new_session=True, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def nginx(self, workdir: Path, port: int) -> subprocess.Popen[bytes]:
        """Real nginx in the server namespace, listening on ``port`` (IPv4 and IPv6)."""
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin") or "nginx"
        return self.start(
            self.srv,
            [nginx, "-c", str(conf), "-p", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def reachable(self, ns: str, host: str, port: int, timeout: float = 1.0) -> bool:
        """Whether an HTTP GET from ``ns`` to ``host:port`` gets nginx's 200 answer."""
        proc = subprocess.run(
            self.ns(ns, [sys.executable, "-c", PROBE, host, str(port), str(timeout)]),
            capture_output=True,
            timeout=timeout + 10,
            check=False,
        )
        return proc.returncode == 0

    def nft(self, *args: str) -> str:
        """``nft ARGS`` in the server namespace; its stdout."""
        return run(self.ns(self.srv, ["nft", *args]))

    def close(self) -> None:
        """Kill the lab's processes and delete its namespaces."""
        for proc in self.procs:
            # The whole process group: SIGKILL to nginx's master alone leaves its
            # workers running, orphaned, after the test.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for name in self._made:
            run(["ip", "netns", "del", name], check=False)
        self._made.clear()
