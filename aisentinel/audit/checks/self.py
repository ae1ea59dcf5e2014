"""aisentinel itself: its metrics endpoint is not reachable beyond loopback, unless
``[exporter] web_config`` puts TLS and basic auth in front of it.

Without a web config the exporter serves plain HTTP without authentication, so binding
it beyond loopback publishes the host's security state (and attackers' addresses).
With TLS and basic auth (the documented way to scrape from another host) that is fine;
with only one of the two it is a warning.
"""

from __future__ import annotations

import ipaddress

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.audit.sockets import is_lan

FIX = (
    'Bind the exporter to loopback ([exporter] listen = "127.0.0.1" in aisentinel.toml)\n'
    "and scrape it through an SSH tunnel or nginx with TLS + auth_basic:\n"
    '  location /metrics {{ auth_basic "metrics";\n'
    "                      auth_basic_user_file /etc/nginx/metrics.htpasswd;\n"
    "                      proxy_pass http://127.0.0.1:{port}; }}\n"
    "or keep it reachable and protect it: [exporter] web_config with TLS and basic auth\n"
    "(example: /usr/share/aisentinel/examples/web-config.yml)."
)
PROTECTED = "TLS + basic auth"
"""What ``WebConfig.describe()`` says when the endpoint has both."""


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
    guard = ctx.metrics_protection
    evidence = [f"metrics endpoint listens on {ctx.metrics_listen} ({guard})"]
    fix = FIX.format(port=port)
    if guard == PROTECTED:
        return Verdict.of(Status.PASS, [*evidence, "web_config: TLS and basic auth"])
    verdict = _exposure(host, evidence, fix)
    if guard != "plain HTTP" and verdict.status is not Status.PASS:
        # Reachable beyond loopback with one of the two: half protected.
        return Verdict.of(
            Status.WARN, [*evidence, f"only {guard}: TLS and basic auth go together"], fix
        )
    return verdict


def _exposure(host: str, evidence: list[str], fix: str) -> Verdict:
    """The verdict on where a plain-HTTP endpoint listens."""
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
