"""Container names and images from the Docker engine API, for GPU process attribution.

:class:`DockerNames` is a :data:`~aisentinel.gpu.attribution.ContainerResolver`: it
answers ``(runtime, container_id) -> (name, image)`` for Docker containers when the
engine's socket exists, through the ``docker`` SDK (imported lazily, at the first
lookup), from one inspect call per container (the image is ``Config.Image``, as the
container was created: ``ollama/ollama:latest``, which ``[decisions.workload_allowlist]
images`` matches). Each answer is cached (at most :data:`MAX_NAMES` ids, the oldest
dropped first); a failed lookup is cached as "unknown" for :data:`NEGATIVE_TTL` seconds
so a stopped engine is asked at most once a minute per container; each call waits at
most ``timeout`` seconds. No socket, no SDK, or an engine that does not answer: the
attribution keeps the container id (logged once).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Final

import structlog

from aisentinel.clock import Clock
from aisentinel.gpu.attribution import ContainerInfo

_log = structlog.get_logger(__name__)

MAX_NAMES: Final = 1024
NEGATIVE_TTL: Final = 60.0
MAX_NAME: Final = 128
MAX_IMAGE: Final = 256


def _clean(value: object, limit: int) -> str | None:
    """A name or image as the engine gave it, without a leading ``/``; None unless it is
    printable text."""
    if not isinstance(value, str):
        return None
    text = value.lstrip("/")[:limit]
    return text if text and text.isprintable() else None


class DockerNames:
    """``(runtime, container_id) -> (name, image)`` from the Docker API; cached, bounded."""

    def __init__(
        self, clock: Clock, socket_path: str = "/var/run/docker.sock", timeout: float = 2.0
    ) -> None:
        self._clock = clock
        self._socket = socket_path
        self._timeout = timeout
        self._client: Any = None
        self._names: OrderedDict[str, tuple[ContainerInfo | None, float]] = OrderedDict()
        self._problem = ""
        self.lookups = 0
        self.errors = 0

    def __call__(self, runtime: str, container_id: str) -> ContainerInfo | None:
        """The container's name and image, or None (not Docker, no engine, unknown id)."""
        if runtime != "docker":
            return None
        now = self._clock.monotonic()
        cached = self._names.get(container_id)
        if cached is not None and (cached[0] is not None or now < cached[1]):
            self._names.move_to_end(container_id)
            return cached[0]
        info = self._lookup(container_id)
        self._names[container_id] = (info, now + NEGATIVE_TTL)
        self._names.move_to_end(container_id)
        while len(self._names) > MAX_NAMES:
            self._names.popitem(last=False)
        return info

    def _lookup(self, container_id: str) -> ContainerInfo | None:
        if not os.path.exists(self._socket):  # noqa: PTH110 - a str path, once per id
            self._note(f"no Docker engine socket at {self._socket}")
            return None
        client = self._connect()
        if client is None:
            return None
        self.lookups += 1
        try:
            attrs = client.containers.get(container_id).attrs
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; keep the id
            self.errors += 1
            self._note(f"Docker API lookup failed: {type(exc).__name__}")
            return None
        self._problem = ""
        attrs = attrs if isinstance(attrs, dict) else {}
        config = attrs.get("Config")
        image = config.get("Image") if isinstance(config, dict) else None
        info = ContainerInfo(_clean(attrs.get("Name"), MAX_NAME), _clean(image, MAX_IMAGE))
        return info if info != (None, None) else None

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
