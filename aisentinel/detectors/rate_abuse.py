"""``rate_abuse``: request rates beyond a limit, per client and per API key.

Four counters, each crossing on its own (HIGH for the global rate, MEDIUM else):

* AI endpoints (``ai_paths`` prefixes: generation, chat, embeddings), per client:
  ``ai_threshold`` requests in ``ai_window`` (default 120 a minute);
* every request, per client: ``global_threshold`` in ``global_window`` (default
  1200 a minute), HIGH: an HTTP flood (a scraper, a layer-7 flood, a brute force at
  volume). An inference call (a ``POST`` to an AI endpoint) that was served (2xx, or
  499: the client stopped waiting, as IDE completion does on every keystroke) is not
  counted here: that is heavy API use (a RAG indexer, an office of developers behind
  one NAT, an eval harness), which the AI and per-key counters report at MEDIUM; one
  answered 401/403/404/429/5xx (unauthenticated, refused, overloaded) still is, and
  so is a ``GET`` under an AI prefix (every inference call is a POST; a web app's
  catch-all page answers ``GET /api/chatXYZ`` with 200, which must not hide a flood);
* AI endpoints per API key id (``HttpRequest.key_id``, when the log has one and it
  is not a value many keys share, :func:`~.common.key_identity`):
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
from typing import cast

from aisentinel.configtypes import DEFAULT_MAX_KEYS
from aisentinel.detectors.base import REGISTRY, BatchDetector, DetectorConfigBase
from aisentinel.detectors.common import (
    MaxKeys,
    RateThreshold,
    Threshold,
    Window,
    all_requests,
    client_finding,
    crossing_finding,
    key_identity,
)
from aisentinel.detectors.paths import DEFAULT_AI_PATHS, PrefixMatcher
from aisentinel.detectors.shared import SharedState
from aisentinel.detectors.window import Crossing, EventWindows, RateWindows
from aisentinel.events import Event, Finding, HttpRateLimited, HttpRequest, Severity

_GLOBAL, _AI, _KEY = range(3)  # which counter crossed


def served(request: HttpRequest) -> bool:
    """An AI request that is an inference call served: a ``POST`` answered 2xx, or 499
    (the client gave up waiting: a cancelled completion). Such requests stay out of the
    global counter; a ``GET`` there is not one (a single-page app's catch-all answers any
    unknown ``GET`` with its page)."""
    status = request.status
    return (200 <= status < 300 or status == 499) and request.method == "POST"


class RateAbuseConfig(DetectorConfigBase):
    """``[detectors.rate_abuse]``."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    ai_paths: tuple[str, ...] = DEFAULT_AI_PATHS
    ai_threshold: RateThreshold = 120
    ai_window: Window = 60.0
    global_threshold: RateThreshold = 1200
    global_window: Window = 60.0
    key_threshold: RateThreshold = 600
    key_window: Window = 60.0
    limited_threshold: Threshold = 10
    limited_window: Window = 60.0


class RateAbuseDetector(BatchDetector):
    """Request-rate limits per client and per API key (see module doc)."""

    name = "rate_abuse"
    consumes = (HttpRequest, HttpRateLimited)
    wants_shared = True

    def __init__(self, config: RateAbuseConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._match = PrefixMatcher(config.ai_paths).match
        self._ai = RateWindows(config.ai_threshold, config.ai_window, config.max_keys)
        self._global = RateWindows(config.global_threshold, config.global_window, config.max_keys)
        self._keys = RateWindows(config.key_threshold, config.key_window, config.max_keys)
        self._limited = EventWindows(
            config.limited_threshold, config.limited_window, config.max_keys
        )
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        self._bit = self._requests.register(self._match)

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        masks = self._requests.facts(events, self).masks
        bit = self._bit
        if not all_requests(events):
            for i, event in enumerate(events):
                if isinstance(event, HttpRequest):
                    found = self._request(event, bool(masks[i] & bit))
                elif isinstance(event, HttpRateLimited):
                    found = self._rate_limited(event)
                else:
                    continue
                if found is not None:
                    out.append((i, found))
            return out
        # Every event is an HttpRequest: one tight loop, no type checks.
        global_hit = self._global.hit
        ai_hit = self._ai.hit
        for i, (event, mask) in enumerate(
            zip(cast("Sequence[HttpRequest]", events), masks, strict=True)
        ):
            if not mask & bit:
                crossing = global_hit(event.client, event.ts)
                if crossing is not None:
                    out.append((i, self._finding(event, crossing, _GLOBAL)))
                continue
            if event.key_id is not None:  # an API key: the general method counts it all
                found = self._request(event, True)
            else:
                client = event.client
                ts = event.ts
                crossing = None if served(event) else global_hit(client, ts)
                ai_crossing = ai_hit(client, ts)
                if crossing is None and ai_crossing is None:
                    continue
                found = self._resolve(event, crossing, ai_crossing, None)
            if found is not None:
                out.append((i, found))
        return out

    def _request(self, event: HttpRequest, ai: bool) -> Finding | None:
        """Count one request in every counter it belongs to (``ai``: an AI endpoint);
        at most one finding."""
        client = event.client
        ts = event.ts
        crossing = None if ai and served(event) else self._global.hit(client, ts)
        if not ai:
            return None if crossing is None else self._finding(event, crossing, _GLOBAL)
        ai_crossing = self._ai.hit(client, ts)
        key_id = key_identity(event.key_id)  # not a value many keys share
        key_crossing = None if key_id is None else self._keys.hit(key_id, ts)
        return self._resolve(event, crossing, ai_crossing, key_crossing)

    def _resolve(
        self,
        event: HttpRequest,
        crossing: Crossing | None,
        ai_crossing: Crossing | None,
        key_crossing: Crossing | None,
    ) -> Finding | None:
        """One finding per event, global first, then AI, then the key; the other
        counters that crossed are released so that they cross again on their next hit."""
        if crossing is not None:
            found = self._finding(event, crossing, _GLOBAL)
            if ai_crossing is not None:
                self._ai.release(event.client)
        elif ai_crossing is not None:
            found = self._finding(event, ai_crossing, _AI)
        elif key_crossing is not None:
            return self._finding(event, key_crossing, _KEY)
        else:
            return None
        if key_crossing is not None and event.key_id is not None:
            self._keys.release(event.key_id)
        return found

    def _rate_limited(self, event: HttpRateLimited) -> Finding | None:
        crossing = self._limited.hit(event.client, event.ts, event.zone)
        if crossing is None:
            return None
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.MEDIUM,
            what="requests rejected by nginx limit_req",
            threshold=self._cfg.limited_threshold,
            window=self._cfg.limited_window,
            per_address=True,
        )

    def _finding(self, event: HttpRequest, crossing: Crossing, counter: int) -> Finding:
        cfg = self._cfg
        evidence = (event.path[:200],)
        if counter == _GLOBAL:
            return client_finding(
                self.name,
                crossing,
                event,
                severity=Severity.HIGH,
                what="requests",
                threshold=cfg.global_threshold,
                window=cfg.global_window,
                evidence=evidence,
                per_address=True,
            )
        if counter == _AI:
            return client_finding(
                self.name,
                crossing,
                event,
                severity=Severity.MEDIUM,
                what="AI API requests",
                threshold=cfg.ai_threshold,
                window=cfg.ai_window,
                evidence=evidence,
                per_address=True,
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
            clients=(event.client,),
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
