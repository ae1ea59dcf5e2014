"""Docker: AI containers publish only on loopback and sit on a user-defined network.

Read through the Docker Engine API (the ``docker`` SDK, ``DOCKER_HOST`` honoured).
Without an engine both checks are ``unknown`` with the reason; list them in
``[audit] skip`` on hosts without Docker. When no engine can exist (``DOCKER_HOST``
unset and neither ``/var/run/docker.sock`` nor ``/run/docker.sock`` present) the
SDK is not even imported: it would add about 6 MB to the daemon's memory. Ports
Docker publishes bypass ufw's INPUT rules, so a publication on any address but
loopback is reachable even behind "default deny": each ``HostIp`` is classified
with ``ipaddress`` (every interface or a public address fails, a LAN address warns,
one that is not an IP address warns as unclassified).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aisentinel.audit.checks.base import Verdict, register, worse
from aisentinel.audit.checks.exposure import bind_scope
from aisentinel.audit.context import AuditContext, DockerUnavailableError, docker_sdk_inspector
from aisentinel.audit.model import Status

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


DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))
"""Where a local Docker engine listens when ``DOCKER_HOST`` is unset."""


def no_engine_reason() -> str | None:
    """Why no Docker engine can be reached here, or ``None`` when one may be."""
    if os.environ.get("DOCKER_HOST"):
        return None
    if any(path.exists() for path in DOCKER_SOCKETS):
        return None
    sockets = " nor ".join(str(path) for path in DOCKER_SOCKETS)
    return f"no Docker engine: DOCKER_HOST is unset and there is neither {sockets}"


def ai_containers(ctx: AuditContext) -> tuple[list[Mapping[str, Any]], int]:
    """Inspect data of running AI containers and the number of running containers.

    With the real SDK inspector and no engine possible (:func:`no_engine_reason`),
    raises :class:`DockerUnavailableError` without importing the SDK.
    """

    def load() -> tuple[list[Mapping[str, Any]], int]:
        if ctx.docker is docker_sdk_inspector:
            reason = no_engine_reason()
            if reason is not None:
                raise DockerUnavailableError(reason)
        containers = ctx.docker(ctx.config.docker_timeout)
        images = [image.lower() for image in ctx.config.ai_images]
        ai = [c for c in containers if any(i in _image(c).lower() for i in images)]
        return ai, len(containers)

    return ctx.memo("docker", load)


def _image(container: Mapping[str, Any]) -> str:
    return str((container.get("Config") or {}).get("Image", ""))


def _name(container: Mapping[str, Any]) -> str:
    return str(container.get("Name", "?")).lstrip("/") + f" ({_image(container)})"


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
                f"{_name(container)}: host network, binds host ports directly"
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
        lines.append(f"{_name(container)}: published {', '.join(parts) or 'nothing'}")
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
            lines.append(f"{_name(container)}: on the default bridge network")
        else:
            lines.append(f"{_name(container)}: networks {', '.join(networks) or 'none'}")
    return Verdict.of(Status.WARN if on_bridge else Status.PASS, lines, NETWORK_FIX)


register("docker.ai-ports", "AI containers publish ports on loopback only", _ports)
register(
    "docker.ai-network",
    "AI containers use a user-defined network, not the default bridge",
    _network,
)
