"""Container names from the Docker engine API, for GPU process attribution.

:class:`DockerNames` is a :data:`~aisentinel.gpu.attribution.ContainerResolver`: it
answers ``(runtime, container_id) -> name`` for Docker containers when the engine's
socket exists, through the ``docker`` SDK (imported lazily, at the first lookup). Each
answer is cached (at most :data:`MAX_NAMES` ids, the oldest dropped first); a failed
lookup is cached as "no name" for :data:`NEGATIVE_TTL` seconds so a stopped engine is
asked at most once a minute per container; each call waits at most ``timeout``
seconds. No socket, no SDK, or an engine that does not answer: the attribution keeps
the container id (logged once).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Final

import structlog

from aisentinel.clock import Clock

_log = structlog.get_logger(__name__)

MAX_NAMES: Final = 1024
NEGATIVE_TTL: Final = 60.0
MAX_NAME: Final = 128


class DockerNames:
    """``(runtime, container_id) -> name`` from the Docker API; cached and bounded."""

    def __init__(
        self, clock: Clock, socket_path: str = "/var/run/docker.sock", timeout: float = 2.0
    ) -> None:
        self._clock = clock
        self._socket = socket_path
        self._timeout = timeout
        self._client: Any = None
        self._names: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._problem = ""
        self.lookups = 0
        self.errors = 0

    def __call__(self, runtime: str, container_id: str) -> str | None:
        """The container's name, or None (not Docker, no engine, unknown id)."""
        if runtime != "docker":
            return None
        now = self._clock.monotonic()
        cached = self._names.get(container_id)
        if cached is not None and (cached[0] is not None or now < cached[1]):
            self._names.move_to_end(container_id)
            return cached[0]
        name = self._lookup(container_id)
        self._names[container_id] = (name, now + NEGATIVE_TTL)
        self._names.move_to_end(container_id)
        while len(self._names) > MAX_NAMES:
            self._names.popitem(last=False)
        return name

    def _lookup(self, container_id: str) -> str | None:
        if not os.path.exists(self._socket):  # noqa: PTH110 - a str path, once per id
            self._note(f"no Docker engine socket at {self._socket}")
            return None
        client = self._connect()
        if client is None:
            return None
        self.lookups += 1
        try:
            name = str(client.containers.get(container_id).name)
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; keep the id
            self.errors += 1
            self._note(f"Docker API lookup failed: {type(exc).__name__}")
            return None
        self._problem = ""
        name = name.lstrip("/")[:MAX_NAME]
        return name if name and name.isprintable() else None

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            import docker  # noqa: PLC0415 - optional, and only needed with a Docker engine
        except ImportError:
            self._note("the docker SDK is not installed (pip install docker)")
            return None
        try:
            self._client = docker.DockerClient(
                base_url=f"unix://{self._socket}", timeout=self._timeout
            )
        except Exception as exc:  # noqa: BLE001 - any failure: container ids only
            self.errors += 1
            self._note(f"cannot connect to the Docker engine: {type(exc).__name__}")
            return None
        return self._client

    def _note(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            _log.info("gpu attribution: container ids only", reason=problem)

    def close(self) -> None:
        """Close the API client (if one was opened)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not fail a stop
                self.errors += 1
