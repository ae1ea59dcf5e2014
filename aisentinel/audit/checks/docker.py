"""Docker: AI containers publish only on loopback and sit on a user-defined network.

Read through the Docker Engine API (the ``docker`` SDK, ``DOCKER_HOST`` honoured).
Without an engine both checks are ``unknown`` with the reason; list them in
``[audit] skip`` on hosts without Docker (the containers are read by
:mod:`aisentinel.audit.containers`, which does not import the SDK where no engine
can exist). Ports Docker publishes bypass ufw's INPUT rules, so a publication on any address but
loopback is reachable even behind "default deny": each ``HostIp`` is classified
with ``ipaddress`` (every interface or a public address fails, a LAN address warns,
one that is not an IP address warns as unclassified).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aisentinel.audit.checks.base import Verdict, register, worse
from aisentinel.audit.containers import container_label, image_of, running_containers
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.audit.sockets import bind_scope

PORTS_FIX = (
    "Publish on loopback only and put nginx (auth + TLS) in front:\n"
    "  docker run -p 127.0.0.1:11434:11434 ollama/ollama\n"
    '  compose:  ports: ["127.0.0.1:11434:11434"]\n'
    "(Docker-published ports bypass ufw's INPUT rules.)"
)

NETWORK_FIX = (
    "Use a user-defined network:\n"
    "  docker network create ai\n"
    "  docker network connect ai <container> && docker network disconnect bridge <container>\n"
    "  compose: services get a project network by default (do not set network_mode: bridge)"
)


def ai_containers(ctx: AuditContext) -> tuple[list[Mapping[str, Any]], int]:
    """Inspect data of running AI containers and the number of running containers.

    Raises :class:`~aisentinel.audit.context.DockerUnavailableError` as
    :func:`~aisentinel.audit.containers.running_containers` does.
    """
    containers = running_containers(ctx)
    images = [image.lower() for image in ctx.config.ai_images]
    ai = [c for c in containers if any(i in image_of(c).lower() for i in images)]
    return ai, len(containers)


def _none_found(total: int) -> Verdict:
    return Verdict.of(Status.PASS, [f"{total} running containers, none from an AI image"])


def _ports(ctx: AuditContext) -> Verdict:
    containers, total = ai_containers(ctx)
    if not containers:
        return _none_found(total)
    status = Status.PASS
    lines = []
    for container in containers:
        network_mode = str((container.get("HostConfig") or {}).get("NetworkMode", ""))
        if network_mode == "host":
            lines.append(
                f"{container_label(container)}: host network, binds host ports directly"
                " (see exposure.ai-ports)"
            )
            status = worse(status, Status.WARN)
            continue
        ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
        parts = []
        for port, port_bindings in ports.items():
            for binding in port_bindings or ():
                host_ip = str(binding.get("HostIp") or "")
                shown = f"[{host_ip}]" if ":" in host_ip else host_ip or "*"
                published = f"{shown}:{binding.get('HostPort')}->{port}"
                unparsed = f"HostIp {host_ip!r} could not be classified"
                scope, where = bind_scope(host_ip, unparsed)
                parts.append(published if scope is Status.PASS else f"{published} ({where})")
                status = worse(status, scope)
        lines.append(f"{container_label(container)}: published {', '.join(parts) or 'nothing'}")
    return Verdict.of(status, lines, PORTS_FIX)


def _network(ctx: AuditContext) -> Verdict:
    containers, total = ai_containers(ctx)
    if not containers:
        return _none_found(total)
    lines = []
    on_bridge = False
    for container in containers:
        networks = sorted(((container.get("NetworkSettings") or {}).get("Networks") or {}).keys())
        if "bridge" in networks:
            on_bridge = True
            lines.append(f"{container_label(container)}: on the default bridge network")
        else:
            lines.append(f"{container_label(container)}: networks {', '.join(networks) or 'none'}")
    return Verdict.of(Status.WARN if on_bridge else Status.PASS, lines, NETWORK_FIX)


register("docker.ai-ports", "AI containers publish ports on loopback only", _ports)
register(
    "docker.ai-network",
    "AI containers use a user-defined network, not the default bridge",
    _network,
)
