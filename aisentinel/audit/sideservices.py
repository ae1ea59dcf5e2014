"""The services that run beside the models on an AI box, and their listening sockets.

Ray's dashboard (its jobs API runs any command: ShadowRay, CVE-2023-48022) and
Jupyter (a server without a token runs code for anyone) are exploited on GPU hosts
in the wild; ComfyUI has no login at all; dcgm-exporter and node_exporter disclose
the host and its GPUs. Their ports come from ``[audit.side_services]``; the checks
``exposure.side-services`` and ``unauth.side-services`` read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aisentinel.audit.config import SideServicePorts
from aisentinel.audit.sockets import ListeningSocket

ServiceKey = Literal["ray", "jupyter", "comfyui", "exporters"]
"""A field of :class:`~aisentinel.audit.config.SideServicePorts`."""


@dataclass(frozen=True, slots=True)
class SideService:
    """One kind of side service: what it is, how bad its exposure is, how to probe and fix it."""

    key: ServiceKey
    label: str
    runs_code: bool
    """Whether whoever reaches it can run code (exposure fails) or only read (it warns)."""
    probe_paths: tuple[str, ...]
    """Paths that answer 2xx without credentials only when the service has no login."""
    fix: str


SIDE_SERVICES: tuple[SideService, ...] = (
    SideService(
        "ray",
        "Ray dashboard",
        runs_code=True,
        # The jobs API itself: GET lists the jobs, POST on the same path runs a command.
        # Ray before 2.52 has no authentication; RAY_AUTH_MODE=token makes it answer 401.
        probe_paths=("/api/jobs/",),
        fix=(
            "Ray: ray start --head --dashboard-host=127.0.0.1   (not 0.0.0.0)\n"
            "     reach it with: ssh -L 8265:127.0.0.1:8265 <host>\n"
            "     Ray >= 2.52: also export RAY_AUTH_MODE=token before ray start"
        ),
    ),
    SideService(
        "jupyter",
        "Jupyter",
        runs_code=True,
        # 200 without a token: anyone can list and start kernels; with a token: 403.
        probe_paths=("/api/kernels",),
        fix=(
            "Jupyter: jupyter lab --ServerApp.ip=127.0.0.1   and keep its token\n"
            "     (never --ServerApp.token='' or --IdentityProvider.token='';"
            " or set a password: jupyter server password)\n"
            "     reach it with: ssh -L 8888:127.0.0.1:8888 <host>"
        ),
    ),
    SideService(
        "comfyui",
        "ComfyUI",
        runs_code=True,  # no login; custom nodes installed through it run Python
        probe_paths=(),
        fix=(
            "ComfyUI: python main.py --listen 127.0.0.1   (--listen alone means 0.0.0.0)\n"
            "     and publish it through nginx with auth_basic + TLS"
        ),
    ),
    SideService(
        "exporters",
        "metrics exporter",
        runs_code=False,
        probe_paths=(),
        fix=(
            "exporters: node_exporter --web.listen-address=127.0.0.1:9100,"
            " dcgm-exporter -a 127.0.0.1:9400\n"
            "     or let only the Prometheus host in:"
            " ufw allow from <prometheus-ip> to any port 9100 proto tcp"
        ),
    ),
)
"""Every kind, in report order."""

DOCKER_FIX = "Docker: -p 127.0.0.1:{port}:{inner}   (not -p {port}:{inner})"
"""For a port Docker publishes beyond loopback: ``port`` on the host, ``inner`` in the container."""
FIREWALL_FIX = (
    "or at least limit the port to the LAN:\n"
    "  ufw allow from 192.168.1.0/24 to any port {port} proto tcp && ufw deny {port}/tcp"
)


def side_listeners(
    ports: SideServicePorts, sockets: list[ListeningSocket]
) -> list[tuple[SideService, ListeningSocket]]:
    """The ``sockets`` on a side-service port, each with its service, in socket order."""
    by_port = {port: kind for kind in SIDE_SERVICES for port in getattr(ports, kind.key)}
    return [(by_port[s.port], s) for s in sockets if s.port in by_port]


def describe_ports(ports: SideServicePorts) -> str:
    """``Ray dashboard 8265; Jupyter 8888; ...`` for evidence (kinds without ports left out)."""
    parts = []
    for kind in SIDE_SERVICES:
        listed: tuple[int, ...] = getattr(ports, kind.key)
        if listed:
            parts.append(f"{kind.label} {', '.join(str(p) for p in listed)}")
    return "; ".join(parts) or "none configured"
