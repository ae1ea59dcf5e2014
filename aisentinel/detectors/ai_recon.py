"""``ai_recon``: reconnaissance of AI endpoints by clients that never authenticated.

Model lists, running models, versions, model details and UI configuration
(``/api/tags``, ``/api/ps``, ``/v1/models``, ``/api/config`` ...) tell an attacker
what a server runs and whether it is open. A client that has made an
authenticated request (``HttpRequest.user`` or ``key_id`` set and status < 400)
within ``authenticated_ttl`` is a known user and is not counted; others are:
``threshold`` requests within ``window`` (default 3 in 10 minutes) give a MEDIUM
finding.

Deployments whose web UI polls the inference server itself (Open WebUI polls
Ollama's ``/api/tags``) should allowlist the UI's address in the decisions stage:
detectors report every address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from pydantic import field_validator

from aisentinel.detectors.base import REGISTRY, BatchDetector, WindowedConfig
from aisentinel.detectors.common import MaxKeys, Threshold, Window, client_finding
from aisentinel.detectors.paths import PathSignatures, normalise_path
from aisentinel.detectors.shared import SharedState
from aisentinel.detectors.window import EventWindows
from aisentinel.events import Event, Finding, HttpRequest, Severity

DEFAULT_RECON_PATHS = (
    "/api/tags",
    "/api/ps",
    "/api/version",
    "/api/show",
    "/api/config",
    "/api/models",
    "/api/v1/models*",
    "/api/v1/auths",
    "/api/v1/configs*",
    "/api/v1/users*",
    "/v1/models*",
    "/ollama/api/tags",
    "/ollama/api/ps",
    "/ollama/api/version",
    "/ollama/api/show",
    "/openai/models",
    "/version",
    "/openapi.json",
    "/docs",
    "/redoc",
)
"""Recon endpoints (Ollama, OpenAI-compatible/vLLM, Open WebUI) in :mod:`~.paths` syntax."""


class AiReconConfig(WindowedConfig):
    """``[detectors.ai_recon]``."""

    max_keys: MaxKeys = 100_000
    threshold: Threshold = 3
    window: Window = 600.0
    paths: tuple[str, ...] = DEFAULT_RECON_PATHS
    authenticated_ttl: Window = 86_400.0
    """How long a client that authenticated once is trusted."""

    @field_validator("paths")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        PathSignatures(patterns)
        return patterns


class AiReconDetector(BatchDetector):
    """MEDIUM when an unauthenticated client probes AI recon endpoints."""

    name = "ai_recon"
    consumes = (HttpRequest,)
    wants_shared = True

    def __init__(self, config: AiReconConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._match = PathSignatures(config.paths).match
        self._windows = EventWindows(config.threshold, config.window, config.max_keys)
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        self._bit = self._requests.register(
            self._match, ttl=self._cfg.authenticated_ttl, max_keys=self._cfg.max_keys
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        masks, marks = self._requests.facts(events, self)
        bit = self._bit
        ttl = self._cfg.authenticated_ttl
        requests = cast("Sequence[HttpRequest]", events)
        # Untrusted: no authentication within ttl (an authenticated request marks
        # its own time: ts - mark is 0).
        for i in [
            i for i, mask in enumerate(masks) if mask & bit and requests[i].ts - marks[i] > ttl
        ]:
            found = self._recon(requests[i])
            if found is not None:
                out.append((i, found))
        return out

    def _recon(self, event: HttpRequest) -> Finding | None:
        crossing = self._windows.hit(event.client, event.ts, normalise_path(event.path)[:200])
        if crossing is None:
            return None
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.MEDIUM,
            what="unauthenticated AI recon requests",
            threshold=self._cfg.threshold,
            window=self._cfg.window,
        )

    def expire(self, now: float) -> int:
        return self._windows.expire(now) + self._requests.expire(now)

    def tracked_keys(self) -> int:
        """Recon windows plus the authenticated clients (shared with ``model_exploit``
        when built together: both count them)."""
        return len(self._windows) + self._requests.authenticated()


REGISTRY.register("ai_recon", AiReconConfig, AiReconDetector)
