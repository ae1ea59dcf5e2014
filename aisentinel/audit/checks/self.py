"""aisentinel itself: its metrics endpoint is not reachable beyond loopback.

The exporter serves plain HTTP without authentication, so binding it beyond
loopback publishes the host's security state (and attackers' addresses).
"""

from __future__ import annotations

import ipaddress

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.audit.sockets import is_lan

FIX = (
    'Bind the exporter to loopback, e.g. listen = "127.0.0.1:{port}" in aisentinel.toml,\n'
    "and scrape it through an SSH tunnel or nginx with TLS + auth_basic:\n"
    '  location /metrics {{ auth_basic "metrics";\n'
    "                      auth_basic_user_file /etc/nginx/metrics.htpasswd;\n"
    "                      proxy_pass http://127.0.0.1:{port}; }}"
)


def split_listen(listen: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port``, ``[v6]:port``, ``:port`` or ``port``.

    An empty host (``:port`` or a bare port) means every interface.
    """
    text = listen.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit():
        raise CannotCheckError(f"cannot read the metrics address {listen!r}")
    return host, int(port_text)


def _metrics(ctx: AuditContext) -> Verdict:
    if not ctx.metrics_listen:
        return Verdict.of(Status.PASS, ["metrics endpoint disabled"])
    host, port = split_listen(ctx.metrics_listen)
    evidence = [f"metrics endpoint listens on {ctx.metrics_listen} (plain HTTP, no auth)"]
    fix = FIX.format(port=port)
    if host in ("", "*"):
        return Verdict.of(Status.FAIL, [*evidence, "bound to every interface"], fix)
    if host == "localhost":
        return Verdict.of(Status.PASS, evidence)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return Verdict.of(
            Status.WARN, [*evidence, f"host name {host!r}: check what it resolves to"], fix
        )
    if address.is_loopback:
        return Verdict.of(Status.PASS, evidence)
    if address.is_unspecified:
        return Verdict.of(Status.FAIL, [*evidence, "bound to every interface"], fix)
    if is_lan(address):
        return Verdict.of(Status.WARN, [*evidence, "reachable from the LAN"], fix)
    return Verdict.of(Status.FAIL, [*evidence, "bound to a public address"], fix)


register("self.metrics-exposure", "aisentinel's metrics endpoint is not exposed", _metrics)
