"""``http_auth``: HTTP authentication brute force per client address.

Two independent counters per client, so one attempt seen in both logs is never
counted twice against one threshold:

* nginx error-log failures (:class:`HttpAuthFailure`: "user ... was not found",
  "password mismatch", PAM failures): ``threshold`` in ``window``, by default 5 in
  10 minutes - exactly fail2ban's stock ``nginx-http-auth`` jail (``maxretry =
  5``, ``findtime = 10m``, which reads only this log), so every client that jail
  bans is flagged here as well. "no user/password was provided" (``no_credentials``)
  is not a guess but the first request of every browser, and is not counted (that
  jail's default ``normal`` mode does not count it either);
* access-log rejections (:class:`HttpRequest`): any 401, and the statuses in
  ``auth_path_statuses`` (400, 403) on login endpoints (``auth_paths``, prefixes;
  Open WebUI answers a wrong password on ``/api/v1/auths/signin`` with 400):
  ``status_threshold`` in ``status_window``, by default 10 in 5 minutes. This
  counter is more tolerant because a browser's first request for a basic-auth
  page, and an expired web-UI session, also produce 401s.

Either counter crossing gives a HIGH finding about the client. Each counter also
has long windows beside its fast one (``slow_thresholds`` / ``slow_windows``, default
10 in an hour and 20 in a day, see :mod:`~.slow`) for slow brute force: HIGH as well.
A request that succeeds with credentials in the log (``user`` or ``key_id``, status
below 400) clears its client's long windows, as an accepted login does for sshd: a
basic-auth user's browser challenges (one 401 a session) and typos over a day are
not a slow attack. Only credentials that count do (:class:`~.shared.CredentialTrust`):
a user sent where nothing checks it (an open location, where nginx still logs it)
forgives nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aisentinel.configtypes import DEFAULT_MAX_KEYS
from aisentinel.detectors.base import REGISTRY, Detector, WindowedConfig
from aisentinel.detectors.common import (
    HttpStatus,
    MaxKeys,
    Threshold,
    Window,
    all_requests,
    client_finding,
    client_key,
)
from aisentinel.detectors.paths import PrefixMatcher
from aisentinel.detectors.shared import SharedState, no_path
from aisentinel.detectors.slow import SlowConfig, SlowCounters, SlowCrossing
from aisentinel.detectors.window import Crossing, EventWindows
from aisentinel.events import Event, Finding, HttpAuthFailure, HttpRequest, Severity

DEFAULT_AUTH_PATHS = (
    "/api/v1/auths/signin",
    "/api/v1/auths/ldap",
    "/api/v1/auths/signup",
    "/api/v1/auths/api_key",
    "/login",
    "/signin",
    "/sign_in",
    "/auth/login",
    "/api/login",
    "/api/auth",
    "/api/signin",
    "/oauth/token",
    "/oauth2/token",
    "/user/login",
    "/users/sign_in",
)
"""Path prefixes of login endpoints (Open WebUI and common web applications)."""


class HttpAuthConfig(WindowedConfig, SlowConfig):
    """``[detectors.http_auth]``; ``threshold``/``window`` apply to error-log failures."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    threshold: Threshold = 5
    window: Window = 600.0
    status_threshold: Threshold = 10
    """Rejected requests (access log) within ``status_window`` that make a finding."""
    status_window: Window = 300.0
    auth_paths: tuple[str, ...] = DEFAULT_AUTH_PATHS
    """Prefixes of login endpoints, where ``auth_path_statuses`` also count."""
    auth_path_statuses: tuple[HttpStatus, ...] = (400, 401, 403)


class HttpAuthDetector(Detector):
    """HIGH when a client fails HTTP authentication too often (see module doc)."""

    name = "http_auth"
    consumes = (HttpAuthFailure, HttpRequest)
    wants_shared = True

    def __init__(self, config: HttpAuthConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._auth_paths = PrefixMatcher(config.auth_paths)
        self._auth_statuses = frozenset(config.auth_path_statuses) - {401}
        self._failures = EventWindows(config.threshold, config.window, config.max_keys)
        self._rejections = EventWindows(
            config.status_threshold, config.status_window, config.max_keys
        )
        self._failures_slow = SlowCounters(config.slow(), config.slow_max_keys)
        self._rejections_slow = SlowCounters(config.slow(), config.slow_max_keys)
        self._slow_on = bool(self._rejections_slow)
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        # No path of its own: it reads which requests' credentials count.
        self._requests.register(no_path)

    def _forgive(self, client: str) -> None:
        """``client`` logged in (a success with credentials in the log): its failures so
        far are a user's typos and browsers' 401 challenges, not a slow attack."""
        self._rejections_slow.forgive(client)
        self._failures_slow.forgive(client)

    def observe(self, event: Event) -> Finding | None:
        if (
            isinstance(event, HttpRequest)
            and event.status < 400
            and self._requests.facts((event,), self).credentialed
        ):
            if self._slow_on:
                self._forgive(event.client)
            return None
        return self._failed(event)

    def _failed(self, event: Event) -> Finding | None:
        """Account for one event that is not a success: a rejection or failure counts."""
        if isinstance(event, HttpRequest):
            status = event.status
            if status != 401 and (
                status not in self._auth_statuses or not self._auth_paths.match(event.path)
            ):
                return None
            sample = event.path[:200]
            key = client_key(event.client)
            crossing = self._rejections.hit(key, event.ts, sample)
            slow = self._rejections_slow
            fast = crossing is not None
            return self._found(
                event,
                crossing,
                slow.hit(key, event.ts, sample, fast=fast) if slow else None,
                what="rejected http logins",
                threshold=self._cfg.status_threshold,
                window=self._cfg.status_window,
            )
        if not isinstance(event, HttpAuthFailure) or event.reason == "no_credentials":
            return None
        key = client_key(event.client)
        crossing = self._failures.hit(key, event.ts, event.user)
        slow = self._failures_slow
        return self._found(
            event,
            crossing,
            slow.hit(key, event.ts, event.user, fast=crossing is not None) if slow else None,
            what="http auth failures",
            threshold=self._cfg.threshold,
            window=self._cfg.window,
        )

    def _found(
        self,
        event: HttpRequest | HttpAuthFailure,
        crossing: Crossing | None,
        slow: SlowCrossing | None,
        *,
        what: str,
        threshold: int,
        window: float,
    ) -> Finding | None:
        """The fast window's finding, else the long window's, else ``None``."""
        if crossing is not None:
            return client_finding(
                self.name,
                crossing,
                event,
                severity=Severity.HIGH,
                what=what,
                threshold=threshold,
                window=window,
            )
        if slow is None:
            return None
        return client_finding(
            self.name,
            slow.crossing,
            event,
            severity=Severity.HIGH,
            what=f"{what} (slow)",
            threshold=slow.threshold,
            window=slow.window,
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        statuses = self._auth_statuses
        failed = self._failed
        requests = all_requests(events)
        # Logins: the successes whose credentials count (the batch's shared facts, see
        # CredentialTrust); never a rejection, and they forgive the long windows.
        logins = (
            self._requests.facts(events, self).credentialed
            if requests or any(type(e) is HttpRequest for e in events)
            else []
        )
        if requests:
            # Only rejections count: picked out without a call or a type check per request.
            reqs = cast("Sequence[HttpRequest]", events)
            picked = [i for i, r in enumerate(reqs) if r.status == 401 or r.status in statuses]
        else:
            picked = [
                i
                for i, e in enumerate(events)
                if not isinstance(e, HttpRequest) or e.status == 401 or e.status in statuses
            ]
        login = set(logins)
        if login:
            picked = sorted(login.union(picked))
        rejections, failures = self._rejections_slow, self._failures_slow
        # Clients whose latest event in this batch was a login already looked at:
        # nothing can be held for them until their next rejection.
        clean: set[str] = set()
        for i in picked:
            event = events[i]
            if i in login:
                # A login (all a user's requests, on a server behind basic auth): it
                # forgives only a client with failures held.
                client = cast("HttpRequest", event).client
                if self._slow_on and client not in clean:
                    clean.add(client)
                    if client in rejections or client in failures:
                        self._forgive(client)
                continue
            if isinstance(event, HttpRequest | HttpAuthFailure):
                clean.discard(event.client)
            found = failed(event)
            if found is not None:
                out.append((i, found))
        return out

    def expire(self, now: float) -> int:
        return (
            self._failures.expire(now)
            + self._rejections.expire(now)
            + self._failures_slow.expire(now)
            + self._rejections_slow.expire(now)
        )

    def window_counts(self) -> tuple[int, int]:
        evicted, overflow = super().window_counts()
        slow = self._failures_slow.evicted + self._rejections_slow.evicted
        return evicted + slow, overflow

    def tracked_keys(self) -> int:
        return (
            len(self._failures)
            + len(self._rejections)
            + len(self._failures_slow)
            + len(self._rejections_slow)
        )


REGISTRY.register("http_auth", HttpAuthConfig, HttpAuthDetector)
