"""``scanning``: 404 bursts and requests for known sensitive paths, per client.

* Sensitive paths (``/.env``, ``/.git/config``, ``/wp-login.php``, ``/actuator/env``
  ...): the list shipped in ``aisentinel/data/sensitive_paths.txt`` plus
  ``extra_path_files`` (same format, see :mod:`~.paths`). ``threshold`` hits in
  ``window`` (default 3 in 10 minutes) give a HIGH finding when at least one of
  them was a miss (any status but 2xx/304). Matching is a set lookup on the
  normalised path plus bucketed prefix/suffix checks, never a loop over the list.
  Status-aware: a sensitive-looking path the server answers 2xx/304 to for
  ``own_resource_clients`` distinct clients (default 3) is the application's own
  resource (an app serving its ``.sql`` migrations to every user), learned per
  normalised path (at most ``own_resource_paths``, oldest forgotten first): a
  success there no longer counts, nor a miss (an expired session's 403, a 503 while
  the app starts: its users', not a probe). Only the exact path is learned, never a
  prefix: ``/api/`` served to every user would make every probe under it the app's.
  Hits that were all successes on paths not (yet) learned give a MEDIUM finding (an
  alert: it may be the first user of the app's resource), and none when one of their
  paths has been learned since. A success on a status page monitors scrape
  (:data:`STATUS_PAGES`) is not counted. A secret or
  credential file (:data:`SECRET_PATH`: ``.env``, Git internals, cloud credentials,
  config backups, Spring actuator dumps, shell history, AI tooling tokens, at any
  depth) is a sensitive hit whatever the status, even where the list has no entry
  for it (``/.env.stage``, ``/app/.git/config``), and is never learned as the app's own: on a
  server that wrongly serves it, every client that downloads it is counted, however
  many did before (the ``env-file-served`` and ``secret-file-served`` rules also
  report each one).
* 404 bursts: ``not_found_threshold`` responses with a status in
  ``not_found_statuses`` within ``not_found_window`` (default 20 in a minute): a
  MEDIUM finding, counted with the compact rate estimate of
  :class:`~.window.RateWindows` (exact for a burst within one window of the
  client's first 404; five floats a client instead of twenty timestamps). Paths
  browsers and crawlers ask for on their own (``not_found_ignore``: favicons,
  ``robots.txt``, touch icons, source maps) do not count. A client that goes on
  after that burst, with ``not_found_high_threshold`` distinct not-found paths within
  ``not_found_high_window`` (default 100 in a minute, counted from its burst's finding
  on), is a HIGH finding: a scanner walking a word list, where a browser's or a NAT's
  misses repeat a few paths (stale chunks after a deploy) however many users ask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from hashlib import blake2b
from pathlib import Path
from typing import cast

from pydantic import Field, field_validator

from aisentinel.configtypes import DEFAULT_MAX_KEYS
from aisentinel.detectors.base import REGISTRY, BatchDetector, Forgiven, WindowedConfig
from aisentinel.detectors.common import (
    HttpStatus,
    MaxKeys,
    RateThreshold,
    Threshold,
    Window,
    all_requests,
    client_finding,
    client_key,
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
from aisentinel.detectors.window import (
    Crossing,
    DistinctWindows,
    EventWindows,
    RateWindows,
    RecentSet,
)
from aisentinel.events import Event, Finding, HttpRequest, Severity

STATUS_PAGES = frozenset(
    {"/stub_status", "/nginx_status", "/server-status", "/fpm-status", "/php-fpm-status"}
)
"""Status pages that monitors scrape (Prometheus' nginx, Apache and php-fpm exporters):
a success there is not counted (a monitor's polling, however often); a miss is."""

SECRET_PATH = re.compile(
    r"/\.env(?!\.(?:example|sample|template|dist|tmpl)$)(?:\.[^/]*)?$"
    r"|/\.(?:git|svn|hg)/|/\.git-credentials$|/\.aws/(?:credentials|config)$"
    r"|/\.(?:bash|zsh|mysql|psql|python)_history$"
    r"|\.php(?:\.(?:bak|old|orig|save|swp|swo)|~)$"
    r"|/actuator/(?:env|heapdump|threaddump|configprops|logfile|httptrace|trace)(?:/|$)"
    r"|/\.(?:cache/)?huggingface/token$|/\.ollama/id_ed25519$|/\.streamlit/secrets\.toml$"
    r"|/litellm_config\.ya?ml$|/\.kaggle/kaggle\.json$"
)
"""Secret and credential files, on the normalised path, at any depth (``/.env.stage``,
``/app/.git/config``, ``/backend/.aws/credentials``, ``/home/ubuntu/.bash_history``, the
Hugging Face, Ollama, Streamlit, LiteLLM and Kaggle secrets): a request for one is a
sensitive hit whatever the status, and it is never an application's own resource however
many clients are served them. The same patterns as the ``env-file-served`` and
``secret-file-served`` rules (``rules/exposure.toml``)."""

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
FLOOD_MAX_KEYS = 1024
"""Clients whose distinct not-found paths are counted at once (only those after a 404
burst): each holds up to ``not_found_high_threshold`` + 2 path digests (16 hex digits,
not the paths: a client's word list costs ~8 KB, not ~30 KB), so a flood from many
addresses is bounded at ~8 MB."""


class ScanningConfig(WindowedConfig):
    """``[detectors.scanning]``; ``threshold``/``window`` apply to sensitive paths."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
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
    not_found_high_threshold: Threshold = 100
    """Distinct not-found paths within ``not_found_high_window`` that make a client's
    404 burst HIGH, counted from the burst's finding on."""
    not_found_high_window: Window = 60.0
    own_resource_clients: int = Field(default=3, ge=2, le=100)
    """Distinct clients served 2xx/304 on a sensitive path that make it the app's own."""
    own_resource_paths: int = Field(default=4096, ge=1, le=100_000)
    """At most this many sensitive paths whose successful clients are remembered."""

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
        match = signatures.match
        self._match = lambda path: match(path) or _is_secret(path)
        self._is_ignored = VerdictCache(ignore.match)
        self._statuses = frozenset(config.not_found_statuses)
        self._sensitive = EventWindows(config.threshold, config.window, config.max_keys)
        self._missed = RecentSet(config.window, config.max_keys)
        """Per client: when it last had a sensitive-path request that was not a success."""
        self._served: dict[str, list[str]] = {}
        """Normalised sensitive path -> distinct clients served 2xx/304 (up to
        ``own_resource_clients``: then the path is the app's own)."""
        self._not_found = RateWindows(
            config.not_found_threshold, config.not_found_window, config.max_keys
        )
        flooding = min(config.max_keys, FLOOD_MAX_KEYS)
        self._bursting = RecentSet(config.not_found_high_window, flooding)
        """Per client: when its last 404 burst was reported (only those count distinct paths)."""
        self._not_found_paths = DistinctWindows(
            config.not_found_high_threshold, config.not_found_high_window, flooding
        )
        """Per bursting client: digests of its distinct not-found paths (see
        :data:`FLOOD_MAX_KEYS`)."""
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
        path = normalise_path(event.path)[:_MAX_EVIDENCE_PATH]
        status = event.status
        client = client_key(event.client)
        if 200 <= status < 300 or status == 304:
            if path in STATUS_PAGES or (
                SECRET_PATH.search(path) is None and self._serve(path, client)
            ):
                return None  # a monitor's scrape, or the app's own resource
        elif SECRET_PATH.search(path) is None and self._is_own(path):
            return None  # the app's own path: a miss there is its users'
        else:
            self._missed.add(client, event.ts)
        crossing = self._sensitive.hit(client, event.ts, path)
        if crossing is None:
            return None
        if self._missed.last(client) >= crossing.first_ts:
            severity, what = Severity.HIGH, "requests for sensitive paths"
        elif any(self._is_own(p) for p in crossing.evidence):
            return None  # the client fetches what everyone is served
        else:
            severity, what = Severity.MEDIUM, "successful requests for sensitive paths"
        return client_finding(
            self.name,
            crossing,
            event,
            severity=severity,
            what=what,
            threshold=self._cfg.threshold,
            window=self._cfg.window,
        )

    def _is_own(self, path: str) -> bool:
        """Whether ``path`` was learned as the app's own (served 2xx/304 to
        ``own_resource_clients`` distinct clients). Only the exact path: a first segment
        (``/api/``) served to many clients would make every probe under it the app's."""
        served = self._served.get(path)
        return served is not None and len(served) >= self._cfg.own_resource_clients

    def _serve(self, path: str, client: str) -> bool:
        """Record that ``path`` was served to ``client``; whether it is the app's own."""
        served_map = self._served
        served = served_map.get(path)
        need = self._cfg.own_resource_clients
        if served is None:
            if len(served_map) >= self._cfg.own_resource_paths:
                del served_map[next(iter(served_map))]
            served_map[path] = served = []
        elif len(served) >= need:
            return True
        if client not in served:
            served.append(client)
        return len(served) >= need

    def own_resources(self) -> int:
        """Sensitive paths learned as the application's own resources."""
        need = self._cfg.own_resource_clients
        return sum(1 for served in self._served.values() if len(served) >= need)

    def _not_found_hit(self, event: HttpRequest) -> Finding | None:
        client = event.client  # volume: per address
        ts = event.ts
        cfg = self._cfg
        if self._bursting.seen(client, ts):
            path = normalise_path(event.path)[:_MAX_EVIDENCE_PATH]
            crossing = self._not_found_paths.hit(client, _digest(path), ts)
            if crossing is not None:
                crossing = crossing._replace(evidence=(path,))
                high = (cfg.not_found_high_threshold, cfg.not_found_high_window)
                return self._not_found_finding(
                    crossing, event, Severity.HIGH, "distinct not-found paths", high
                )
        crossing = self._not_found.hit(client, ts)
        if crossing is None:
            return None
        path = normalise_path(event.path)[:_MAX_EVIDENCE_PATH]
        self._bursting.add(client, ts)
        self._not_found_paths.hit(client, _digest(path), ts)
        crossing = crossing._replace(evidence=(path,))
        limit = (cfg.not_found_threshold, cfg.not_found_window)
        return self._not_found_finding(
            crossing, event, Severity.MEDIUM, "not-found responses", limit
        )

    def _not_found_finding(
        self,
        crossing: Crossing,
        event: HttpRequest,
        severity: Severity,
        what: str,
        limit: tuple[int, float],
    ) -> Finding:
        """The finding about ``event``'s client for a 404 crossing (``limit``: its
        threshold and window); the evidence is the crossing's last three paths."""
        return crossing_finding(
            crossing,
            ts=event.ts,
            detector=self.name,
            severity=severity,
            client=event.client,
            key=event.client,
            what=what,
            evidence=crossing.evidence[-3:],
            threshold=limit[0],
            window=limit[1],
            source=event.source,
        )

    def forget(self, forgiven: Forgiven) -> None:
        """The windows (the default), and the marks of a client that missed or is
        bursting (each makes its next crossing HIGH)."""
        super().forget(forgiven)
        self._missed.discard_matching(forgiven)
        self._bursting.discard_matching(forgiven)

    def expire(self, now: float) -> int:
        return (
            self._sensitive.expire(now)
            + self._not_found.expire(now)
            + self._missed.expire(now)
            + self._bursting.expire(now)
            + self._not_found_paths.expire(now)
        )

    def tracked_keys(self) -> int:
        return (
            len(self._sensitive)
            + len(self._not_found)
            + len(self._missed)
            + len(self._bursting)
            + len(self._not_found_paths)
        )


REGISTRY.register("scanning", ScanningConfig, ScanningDetector)


def _is_secret(path: str) -> bool:
    """Whether a raw request path names a secret file (:data:`SECRET_PATH`)."""
    return SECRET_PATH.search(normalise_path(path)) is not None


def _digest(path: str) -> str:
    """16 hex digits standing for ``path`` among a client's distinct not-found paths."""
    return blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
