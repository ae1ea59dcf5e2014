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

from collections.abc import Sequence

from aisentinel.clock import Clock
from aisentinel.detectors.base import REGISTRY, Detector, DetectorConfigBase
from aisentinel.detectors.common import MaxKeys, Threshold, Window, crossing_finding
from aisentinel.detectors.paths import PrefixMatcher, VerdictCache
from aisentinel.detectors.window import Crossing, EventWindows, RateWindows
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

_GLOBAL, _AI, _KEY = range(3)  # which counter crossed


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
        self._is_ai = VerdictCache(PrefixMatcher(config.ai_paths).match)
        self._ai = RateWindows(config.ai_threshold, config.ai_window, config.max_keys)
        self._global = RateWindows(config.global_threshold, config.global_window, config.max_keys)
        self._keys = RateWindows(config.key_threshold, config.key_window, config.max_keys)
        self._limited = EventWindows(
            config.limited_threshold, config.limited_window, config.max_keys
        )

    def observe(self, event: Event) -> Finding | None:
        found = self.observe_many((event,))
        return found[0][1] if found else None

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        global_hit = self._global.hit
        ai_hit = self._ai.hit
        is_ai = self._is_ai.get
        ai_fill = self._is_ai.fill
        for i, event in enumerate(events):
            if not isinstance(event, HttpRequest):
                if isinstance(event, HttpRateLimited):
                    limited = self._rate_limited(event)
                    if limited is not None:
                        out.append((i, limited))
                continue
            client = event.client
            ts = event.ts
            crossing = global_hit(client, ts)
            found = None if crossing is None else self._finding(event, crossing, _GLOBAL)
            path = event.path
            ai = is_ai(path)
            if ai is None:
                ai = ai_fill(path)
            if ai:
                crossing = ai_hit(client, ts)
                if crossing is not None:
                    if found is None:
                        found = self._finding(event, crossing, _AI)
                    else:
                        self._ai.release(client)  # one finding per event; cross again on the next
                key_id = event.key_id
                if key_id is not None:
                    crossing = self._keys.hit(key_id, ts)
                    if crossing is not None:
                        if found is None:
                            found = self._finding(event, crossing, _KEY)
                        else:
                            self._keys.release(key_id)
            if found is not None:
                out.append((i, found))
        return out

    def _rate_limited(self, event: HttpRateLimited) -> Finding | None:
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

    def _finding(self, event: HttpRequest, crossing: Crossing, counter: int) -> Finding:
        cfg = self._cfg
        client = event.client
        evidence = (event.path[:200],)
        if counter == _GLOBAL:
            return crossing_finding(
                crossing,
                ts=event.ts,
                detector=self.name,
                severity=Severity.HIGH,
                client=client,
                key=client,
                what="requests",
                threshold=cfg.global_threshold,
                window=cfg.global_window,
                source=event.source,
                evidence=evidence,
            )
        if counter == _AI:
            return crossing_finding(
                crossing,
                ts=event.ts,
                detector=self.name,
                severity=Severity.MEDIUM,
                client=client,
                key=client,
                what="AI API requests",
                threshold=cfg.ai_threshold,
                window=cfg.ai_window,
                source=event.source,
                evidence=evidence,
            )
        return crossing_finding(
            crossing,
            ts=event.ts,
            detector=self.name,
            severity=Severity.MEDIUM,
            client=None,
            key=f"key_id:{event.key_id}",
            what=f"AI API requests with key {event.key_id}",
            threshold=cfg.key_threshold,
            window=cfg.key_window,
            source=event.source,
            evidence=evidence,
            clients=(client,),
        )

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
