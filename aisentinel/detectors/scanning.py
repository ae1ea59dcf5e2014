"""``scanning``: 404 bursts and requests for known sensitive paths, per client.

* Sensitive paths (``/.env``, ``/.git/config``, ``/wp-login.php``, ``/actuator/env``
  ...): the list shipped in ``aisentinel/data/sensitive_paths.txt`` plus
  ``extra_path_files`` (same format, see :mod:`~.paths`). ``threshold`` hits in
  ``window`` (default 3 in 10 minutes) give a HIGH finding, whatever the status
  (a 200 for ``/.env`` is worse than a 404). Matching is a set lookup on the
  normalised path plus bucketed prefix/suffix checks, never a loop over the list.
* 404 bursts: ``not_found_threshold`` responses with a status in
  ``not_found_statuses`` within ``not_found_window`` (default 20 in a minute): a
  MEDIUM finding, counted with the compact rate estimate of
  :class:`~.window.RateWindows` (exact for a burst within one window of the
  client's first 404; five floats a client instead of twenty timestamps). Paths
  browsers and crawlers ask for on their own (``not_found_ignore``: favicons,
  ``robots.txt``, touch icons, source maps) do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from pydantic import field_validator

from aisentinel.detectors.base import REGISTRY, BatchDetector, WindowedConfig
from aisentinel.detectors.common import (
    HttpStatus,
    MaxKeys,
    RateThreshold,
    Threshold,
    Window,
    all_requests,
    client_finding,
    crossing_finding,
)
from aisentinel.detectors.paths import (
    PathSignatures,
    VerdictCache,
    load_signatures,
    normalise_path,
)
from aisentinel.detectors.paths import parse_patterns as _parse_patterns
from aisentinel.detectors.shared import SharedState
from aisentinel.detectors.window import EventWindows, RateWindows
from aisentinel.events import Event, Finding, HttpRequest, Severity

DEFAULT_NOT_FOUND_IGNORE = (
    "/favicon.ico",
    "/favicon.png",
    "/favicon.svg",
    "/robots.txt",
    "/sitemap.xml",
    "/ads.txt",
    "/humans.txt",
    "/apple-touch-icon*",
    "/apple-app-site-association",
    "/browserconfig.xml",
    "/manifest.json",
    "/site.webmanifest",
    "/.well-known/security.txt",
    "/.well-known/assetlinks.json",
    "/.well-known/apple-app-site-association",
    "/.well-known/appspecific/com.chrome.devtools.json",
    "*.map",
)
"""Paths whose 404s are background noise, in :mod:`~.paths` pattern syntax."""

_MAX_EVIDENCE_PATH = 200


class ScanningConfig(WindowedConfig):
    """``[detectors.scanning]``; ``threshold``/``window`` apply to sensitive paths."""

    max_keys: MaxKeys = 100_000
    threshold: Threshold = 3
    window: Window = 600.0
    builtin_paths: bool = True
    """Use the shipped ``sensitive_paths.txt``."""
    extra_path_files: tuple[str, ...] = ()
    """More pattern files (one path, ``/prefix*`` or ``*suffix`` a line)."""
    not_found_threshold: RateThreshold = 20
    not_found_window: Window = 60.0
    not_found_statuses: tuple[HttpStatus, ...] = (404,)
    not_found_ignore: tuple[str, ...] = DEFAULT_NOT_FOUND_IGNORE

    @field_validator("extra_path_files")
    @classmethod
    def _readable(cls, files: tuple[str, ...]) -> tuple[str, ...]:
        for file in files:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read path list {file!r}: {exc}") from None
            _parse_patterns(text, file)
        return files

    @field_validator("not_found_ignore")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        PathSignatures(patterns)
        return patterns


class ScanningDetector(BatchDetector):
    """Sensitive-path probes (HIGH) and 404 bursts (MEDIUM), per client."""

    name = "scanning"
    consumes = (HttpRequest,)
    wants_shared = True

    def __init__(self, config: ScanningConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        signatures = load_signatures(config.extra_path_files, builtin=config.builtin_paths)
        ignore = PathSignatures(config.not_found_ignore)
        self._match = signatures.match
        self._is_ignored = VerdictCache(ignore.match)
        self._statuses = frozenset(config.not_found_statuses)
        self._sensitive = EventWindows(config.threshold, config.window, config.max_keys)
        self._not_found = RateWindows(
            config.not_found_threshold, config.not_found_window, config.max_keys
        )
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        self._bit = self._requests.register(self._match)

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        masks = self._requests.facts(events, self).masks
        bit = self._bit
        statuses = self._statuses
        if all_requests(events):
            # Every event is a request: picked out without a type check per request.
            requests = cast("Sequence[HttpRequest]", events)
            picked = [
                i
                for i, (mask, r) in enumerate(zip(masks, requests, strict=True))
                if mask & bit or r.status in statuses
            ]
        else:
            picked = [
                i
                for i, (mask, e) in enumerate(zip(masks, events, strict=True))
                if mask & bit or (isinstance(e, HttpRequest) and e.status in statuses)
            ]
        for i in picked:
            event = cast("HttpRequest", events[i])
            if masks[i] & bit:
                found = self._sensitive_hit(event)
                if found is not None:
                    out.append((i, found))
                    continue
            if event.status in statuses and not self._is_ignored(event.path):
                found = self._not_found_hit(event)
                if found is not None:
                    out.append((i, found))
        return out

    def _sensitive_hit(self, event: HttpRequest) -> Finding | None:
        path = normalise_path(event.path)
        crossing = self._sensitive.hit(event.client, event.ts, path[:_MAX_EVIDENCE_PATH])
        if crossing is None:
            return None
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.HIGH,
            what="requests for sensitive paths",
            threshold=self._cfg.threshold,
            window=self._cfg.window,
        )

    def _not_found_hit(self, event: HttpRequest) -> Finding | None:
        crossing = self._not_found.hit(event.client, event.ts)
        if crossing is None:
            return None
        return crossing_finding(
            crossing,
            ts=event.ts,
            detector=self.name,
            severity=Severity.MEDIUM,
            client=event.client,
            key=event.client,
            what="not-found responses",
            evidence=(normalise_path(event.path)[:_MAX_EVIDENCE_PATH],),
            threshold=self._cfg.not_found_threshold,
            window=self._cfg.not_found_window,
            source=event.source,
        )

    def expire(self, now: float) -> int:
        return self._sensitive.expire(now) + self._not_found.expire(now)

    def tracked_keys(self) -> int:
        return len(self._sensitive) + len(self._not_found)


REGISTRY.register("scanning", ScanningConfig, ScanningDetector)
