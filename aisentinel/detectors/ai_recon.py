"""``ai_recon``: reconnaissance of AI endpoints by clients that never authenticated.

Model lists, running models, versions, model details and UI configuration
(``/api/tags``, ``/api/ps``, ``/v1/models``, ``/api/config`` ...) tell an attacker
what a server runs and whether it is open. A client that authenticated within
``authenticated_ttl`` is a known user and is not counted: a request with
``HttpRequest.user`` or ``key_id`` set and status < 400 (where something checks
them: :class:`~.shared.CredentialTrust`), or an inferred
authentication (a successful inference call, a POST, a 2xx where two or more clients got
401, or on Open WebUI's session-user and user-settings calls, which only a
signed-in user gets: see :mod:`~.shared`). One client's 401s (an uptime monitor
without a key) and 403s (Ollama's answer to a browser extension's foreign
``Origin``, which anyone can send) prove nothing about the next 2xx there: a
sweep answered 200 is still a sweep. Every OpenAI SDK lists ``/v1/models`` at start-up, so plain
successful recon requests are not enough either: a MEDIUM finding needs, from an
unauthenticated client, ``threshold`` distinct recon endpoints answered 4xx/5xx
(misses) within ``window`` (default 3 in 10 minutes), or a sweep of ``sweep_paths``
distinct recon endpoints (default 5) within ``window``, whatever their status. Misses
are counted by endpoint: one endpoint refused again and again is a client polling it
(an uptime monitor without a key on ``/v1/models``, an SDK with a stale key retrying),
which ``http_auth`` judges; recon asks several.

Deployments whose web UI polls the inference server itself (Open WebUI polls
Ollama's ``/api/tags``) should allowlist the UI's address in the decisions stage:
detectors report every address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from pydantic import Field, field_validator

from aisentinel.configtypes import DEFAULT_MAX_KEYS
from aisentinel.detectors.base import REGISTRY, BatchDetector, WindowedConfig
from aisentinel.detectors.common import MaxKeys, Threshold, Window, client_finding
from aisentinel.detectors.paths import PathSignatures, normalise_path
from aisentinel.detectors.shared import SharedState
from aisentinel.detectors.window import DistinctWindows
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
    "/models/available",
    "/models/galleries",
    "/backends/available",
    "/system",
    "/props",
    "/slots",
    "/lora-adapters",
)
"""Recon endpoints (Ollama, OpenAI-compatible/vLLM, Open WebUI, LocalAI, llama.cpp)
in :mod:`~.paths` syntax."""


class AiReconConfig(WindowedConfig):
    """``[detectors.ai_recon]``."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    threshold: Threshold = 3
    window: Window = 600.0
    paths: tuple[str, ...] = DEFAULT_RECON_PATHS
    authenticated_ttl: Window = 86_400.0
    """How long a client that authenticated once is trusted."""
    sweep_paths: int = Field(default=5, ge=2, le=100)
    """Distinct recon endpoints within ``window`` that make a sweep, whatever the status."""

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
        self._windows = DistinctWindows(
            config.threshold, config.window, config.max_keys, intern_values=True
        )
        """Distinct recon endpoints missed (status 400 or more) per client."""
        self._sweeps = DistinctWindows(
            config.sweep_paths, config.window, config.max_keys, intern_values=True
        )
        """Distinct recon endpoints per client."""
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        self._bit = self._requests.register(
            self._match, ttl=self._cfg.authenticated_ttl, max_keys=self._cfg.max_keys
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        facts = self._requests.facts(events, self)
        masks, marks = facts.masks, facts.inferred
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
        path = normalise_path(event.path)[:200]
        cfg = self._cfg
        if event.status >= 400:
            crossing = self._windows.hit(event.client, path, event.ts)
            if crossing is not None:
                return client_finding(
                    self.name,
                    crossing,
                    event,
                    severity=Severity.MEDIUM,
                    what="distinct AI recon endpoints answered with errors",
                    threshold=cfg.threshold,
                    window=cfg.window,
                    per_address=True,
                )
        crossing = self._sweeps.hit(event.client, path, event.ts)
        if crossing is None:
            return None
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.MEDIUM,
            what="distinct AI recon endpoints swept without authentication",
            threshold=cfg.sweep_paths,
            window=cfg.window,
            per_address=True,  # recon is counted by address: a /64 may be a LAN of browsers
        )

    def expire(self, now: float) -> int:
        return self._windows.expire(now) + self._sweeps.expire(now) + self._requests.expire(now)

    def tracked_keys(self) -> int:
        """Recon windows plus the authenticated clients (shared with ``model_exploit``
        when built together: both count them)."""
        return len(self._windows) + len(self._sweeps) + self._requests.authenticated()


REGISTRY.register("ai_recon", AiReconConfig, AiReconDetector)
