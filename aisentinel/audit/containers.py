"""Running Docker containers, read once per audit run, and the ports they publish.

Shared by the Docker checks and ``exposure.ai-ports`` (a port Docker publishes is
not filtered by the INPUT rules: Docker DNATs it in PREROUTING and accepts it in
FORWARD). When no engine can exist (``DOCKER_HOST`` unset and neither
``/var/run/docker.sock`` nor ``/run/docker.sock`` present) the SDK is not even
imported: it would add about 6 MB to the daemon's memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from aisentinel.audit.context import AuditContext, DockerUnavailableError, docker_sdk_inspector
from aisentinel.audit.model import Status
from aisentinel.audit.sockets import bind_scope

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


def running_containers(ctx: AuditContext) -> list[Mapping[str, Any]]:
    """Inspect data of every running container, asked once per run.

    With the real SDK inspector and no engine possible (:func:`no_engine_reason`),
    raises :class:`DockerUnavailableError` without importing the SDK.
    """

    def load() -> list[Mapping[str, Any]]:
        if ctx.docker is docker_sdk_inspector:
            reason = no_engine_reason()
            if reason is not None:
                raise DockerUnavailableError(reason)
        return ctx.docker(ctx.config.docker_timeout)

    return ctx.memo("docker", load)


class Published(NamedTuple):
    """A TCP port Docker publishes: for which container, from which port inside it."""

    container: str
    """``name (image)`` (:func:`container_label`)."""
    port: int | None
    """The container's port (``8888`` of ``8888/tcp``); ``None`` when unreadable."""


def docker_published(ctx: AuditContext) -> dict[int, Published]:
    """``{host port: what publishes it}`` for the TCP ports Docker publishes beyond loopback.

    Empty when no Docker engine answers (the caller then cannot tell).
    """
    try:
        containers = running_containers(ctx)
    except DockerUnavailableError:
        return {}
    out: dict[int, Published] = {}
    for container in containers:
        ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
        for port, port_bindings in ports.items():
            inner, _, proto = str(port).partition("/")
            if proto != "tcp":
                continue
            for binding in port_bindings or ():
                host_port = str(binding.get("HostPort") or "")
                scope, _ = bind_scope(str(binding.get("HostIp") or ""), "")
                if host_port.isdigit() and scope is not Status.PASS:
                    published = Published(
                        container_label(container), int(inner) if inner.isdigit() else None
                    )
                    out.setdefault(int(host_port), published)
    return out


def image_of(container: Mapping[str, Any]) -> str:
    """The container's image as it was started (``Config.Image``)."""
    return str((container.get("Config") or {}).get("Image", ""))


def container_label(container: Mapping[str, Any]) -> str:
    """``name (image)`` for evidence."""
    return str(container.get("Name", "?")).lstrip("/") + f" ({image_of(container)})"
