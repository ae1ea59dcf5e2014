"""``rate_abuse``: request rates beyond a limit, per client and per API key.

Four counters, each crossing on its own (HIGH for the global rate, MEDIUM else):

* AI endpoints (``ai_paths`` prefixes: generation, chat, embeddings), per client:
  ``ai_threshold`` requests in ``ai_window`` (default 120 a minute);
* every request, per client: ``global_threshold`` in ``global_window`` (default
  1200 a minute);
* AI endpoints per API key id (``HttpRequest.key_id``, when the log has one):
  ``key_threshold`` in ``key_window`` (default 600 a minute); the finding is about
  the key (``client=None``, ``key="key_id:<id>"``, ``clients`` the last address);
* nginx ``limit_req`` rejections (:class:`HttpRateLimited`), per client:
  ``limited_threshold`` in ``limited_window`` (default 10 a minute).

Rates use the two-bucket sliding estimate of :class:`~.window.RateWindows` (five
floats a key, a dict lookup and some arithmetic per request); ``limit_req`` hits
are counted exactly. A threshold is the request that crosses: with 120 a minute
the 120th request within a minute is reported.
"""

from __future__ import annotations

from aisentinel.clock import Clock
from aisentinel.detectors.base import REGISTRY, Detector, DetectorConfigBase
from aisentinel.detectors.common import MaxKeys, Threshold, Window, crossing_finding
from aisentinel.detectors.paths import PrefixMatcher
from aisentinel.detectors.window import EventWindows, RateWindows
from aisentinel.events import Event, Finding, HttpRateLimited, HttpRequest, Severity

DEFAULT_AI_PATHS = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/audio/",
    "/v1/images/",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/pooling",
    "/classify",
    "/score",
    "/ollama/api/generate",
    "/ollama/api/chat",
    "/ollama/api/embed",
    "/ollama/v1/",
    "/openai/chat/completions",
    "/api/chat/completions",
    "/api/v1/chat/completions",
)
"""Path prefixes of inference endpoints (Ollama, OpenAI-compatible/vLLM, Open WebUI)."""


class RateAbuseConfig(DetectorConfigBase):
    """``[detectors.rate_abuse]``."""

    max_keys: MaxKeys = 100_000
    ai_paths: tuple[str, ...] = DEFAULT_AI_PATHS
    ai_threshold: Threshold = 120
    ai_window: Window = 60.0
    global_threshold: Threshold = 1200
    global_window: Window = 60.0
    key_threshold: Threshold = 600
    key_window: Window = 60.0
    limited_threshold: Threshold = 10
    limited_window: Window = 60.0


class RateAbuseDetector(Detector):
    """Request-rate limits per client and per API key (see module doc)."""

    name = "rate_abuse"
    consumes = (HttpRequest, HttpRateLimited)

    def __init__(self, config: RateAbuseConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self._cfg = config
        self._ai_paths = PrefixMatcher(config.ai_paths)
        self._ai = RateWindows(config.ai_threshold, config.ai_window, config.max_keys)
        self._global = RateWindows(config.global_threshold, config.global_window, config.max_keys)
        self._keys = RateWindows(config.key_threshold, config.key_window, config.max_keys)
        self._limited = EventWindows(
            config.limited_threshold, config.limited_window, config.max_keys
        )

    def observe(self, event: Event) -> Finding | None:
        if isinstance(event, HttpRequest):
            return self._request(event)
        if not isinstance(event, HttpRateLimited):
            return None
        crossing = self._limited.hit(event.client, event.ts, event.zone)
        if crossing is None:
            return None
        return crossing_finding(
            crossing,
            ts=event.ts,
            detector=self.name,
            severity=Severity.MEDIUM,
            client=event.client,
            key=event.client,
            what="requests rejected by nginx limit_req",
            threshold=self._cfg.limited_threshold,
            window=self._cfg.limited_window,
            source=event.source,
        )

    def _request(self, event: HttpRequest) -> Finding | None:
        cfg = self._cfg
        client = event.client
        ts = event.ts
        found: Finding | None = None
        crossing = self._global.hit(client, ts)
        if crossing is not None:
            found = crossing_finding(
                crossing,
                ts=ts,
                detector=self.name,
                severity=Severity.HIGH,
                client=client,
                key=client,
                what="requests",
                threshold=cfg.global_threshold,
                window=cfg.global_window,
                source=event.source,
                evidence=(event.path[:200],),
            )
        if not self._ai_paths.match(event.path):
            return found
        crossing = self._ai.hit(client, ts)
        if crossing is not None and found is not None:
            self._ai.release(client)  # one finding per event; cross again on the next
        elif crossing is not None:
            found = crossing_finding(
                crossing,
                ts=ts,
                detector=self.name,
                severity=Severity.MEDIUM,
                client=client,
                key=client,
                what="AI API requests",
                threshold=cfg.ai_threshold,
                window=cfg.ai_window,
                source=event.source,
                evidence=(event.path[:200],),
            )
        key_id = event.key_id
        if key_id is None:
            return found
        crossing = self._keys.hit(key_id, ts)
        if crossing is not None and found is not None:
            self._keys.release(key_id)
        elif crossing is not None:
            found = crossing_finding(
                crossing,
                ts=ts,
                detector=self.name,
                severity=Severity.MEDIUM,
                client=None,
                key=f"key_id:{key_id}",
                what=f"AI API requests with key {key_id}",
                threshold=cfg.key_threshold,
                window=cfg.key_window,
                source=event.source,
                evidence=(event.path[:200],),
                clients=(client,),
            )
        return found

    def expire(self, now: float) -> int:
        return (
            self._ai.expire(now)
            + self._global.expire(now)
            + self._keys.expire(now)
            + self._limited.expire(now)
        )

    def tracked_keys(self) -> int:
        return len(self._ai) + len(self._global) + len(self._keys) + len(self._limited)


REGISTRY.register("rate_abuse", RateAbuseConfig, RateAbuseDetector)
