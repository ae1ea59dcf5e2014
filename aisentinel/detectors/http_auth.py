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
  page also produces a 401. An expired web-UI session does too, many at once: Open
  WebUI's open page sends its ``/api/v1/auths/``, ``/api/models``, ``/api/v1/chats/``,
  settings, folders, tools ... calls in parallel with the stored token, and each is
  answered 401 when the token expired or the server's ``WEBUI_SECRET_KEY`` changed,
  before the user signs in again. So a burst of 401s to ``GET``/``HEAD`` requests
  without a user or key id, outside the login paths, from a client that signed in
  within :data:`SESSION_TTL` (a day) before it, in event order (a sign-in later in a
  batch does not count; an IPv6 client: any address of its /64) counts once. Only a
  sign-in that a client without credentials cannot make itself counts (see
  :meth:`~.shared.RequestIndex._inferred`): a 2xx to Open WebUI's sign-in
  (``POST /api/v1/auths/signin``, ``/ldap``: a wrong password is answered 400) or chat
  (``POST /api/chat/completions``), or a 2xx on its session user or user settings, or
  with credentials in the log on any path, where that ``METHOD path`` (on that virtual
  host, when logged) answered 401 to another client (its /64) before: not a client's own
  401 followed by another virtual host's 200, nor an open Ollama's inference call, which
  anyone gets. Such a burst counts once:
  its first rejection counts, the next :data:`EXPIRY_BURST` - 1 (14) within
  :data:`EXPIRY_SPAN` (a minute) of it and before the client signs in again do not
  while each is on a path new to the burst (the page loads distinct resources), any
  more, and a repeated path, count again.
  Nothing a scanner or guesser without a session sends is excused, nor ``POST``
  (form logins), a user's or a key's rejections, nor the login paths' 400s. One expiry
  every couple of hours is no finding; 20 in a day (10 in an hour) still cross the long
  windows. A guesser with a session (or behind its address) that spreads each burst over
  15 endpoints gets 14 uncounted guesses per counted one: 135 an hour, 285 a day before a
  ban instead of 9 and 19 (one that repeats its endpoint or posts still gets 9 and 19);
  so does one without a session only where the log has no host and another virtual host
  of the same nginx answers it 2xx on those paths (a catch-all answering
  ``GET /api/v1/auths/`` 200 while Open WebUI refused someone there, or any ``POST`` to
  the sign-in or chat path 200). A user who signed in before the daemon started and only
  reads is known once Open WebUI refused someone else its session user before the
  page's next load.

Either counter crossing gives a HIGH finding about the client. Each counter also
has long windows beside its fast one (``slow_thresholds`` / ``slow_windows``, default
10 in an hour and 20 in a day, see :mod:`~.slow`) for slow brute force: HIGH as well.
A login clears its client's long windows, as an accepted login does for sshd: a
basic-auth user's browser challenges (one 401 a session) and typos over a day are
not a slow attack. A login is a request that succeeds with credentials in the log
(``user`` or ``key_id``, status below 400) that count (:class:`~.shared.CredentialTrust`:
a user sent where nothing checks it, an open location where nginx still logs it,
forgives nothing), and it forgives only where a password is checked at its very path
(:class:`_CheckedPaths`): that path (virtual host, when logged, and path as nginx
routes it, without the query) answered a 401 within :data:`~.shared.LOCATION_TTL`
(the browser's Basic challenge on ``/``, an API client's typo on its endpoint, in the
same client's or anyone's request) and no 2xx to a request without credentials in that
time (there it is open, and a 401 may be the client's own junk Bearer token). A forged
Basic user on an open page of a checked location (Open WebUI's ``/api/config`` beside
its ``/api/v1/chats/``, which answers 401) counts as a login but forgives nothing. With
``[parsers] credentials = "checked"`` (every location checks) every login forgives.
Either way a login still tells a stale key's streak that the client logs in (below).

A guess changes what it sends; a misconfigured client repeats it. So an access-log
crossing whose every counted rejection (since the counter's last crossing) repeats
one thing is judged apart (per client, :class:`_Streaks`):

* the same API key id (one token; not a value many keys share,
  :func:`~.common.key_identity`): beside a login of the same client since the
  streak began (a web UI with one revoked key of two), or the key id that the client
  (an IPv6 one: its /64) last had accepted before the crossing, on a ``METHOD path`` that
  answered 401 to another client before (an expired session's token, as the aisentinel
  JSON format logs it; a guesser that keeps the 8 logged characters fixed never had them
  accepted, and sending them once to a path that checks nothing does not count), MEDIUM
  naming the key, not a ban;
  else HIGH naming the key the first time, and MEDIUM for the same key again
  within :data:`REPORT_MEMORY` (a stale key in a cron job earns one ban, not an
  escalating series);
* the same ``GET``/``HEAD`` without any credential, outside the login paths,
  answered 401 at a fixed interval of at least :data:`MONITOR_MIN_INTERVAL` (5 s: an
  uptime monitor, a kubelet or blackbox_exporter probe): MEDIUM, naming ``[decisions]
  monitoring_hosts``. A combined log shows no API key, so a key guesser that paces
  itself at a fixed interval of 5 s or more (at most 17,280 guesses a day) looks the
  same there; the aisentinel JSON format logs the key id, and distinct keys stay HIGH.

A MEDIUM of a repeat is told once in :data:`REPORT_MEMORY`. A user's rejections
never make a repeat (the password, which a guess changes, is not in the log), nor
do form logins; distinct keys, distinct requests or a fast flood stay HIGH.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast
from zlib import crc32

from aisentinel.configtypes import DEFAULT_MAX_KEYS, format_duration
from aisentinel.detectors.base import REGISTRY, Detector, WindowedConfig
from aisentinel.detectors.common import (
    HttpStatus,
    MaxKeys,
    Threshold,
    Window,
    all_requests,
    client_finding,
    client_key,
    key_identity,
)
from aisentinel.detectors.paths import PrefixMatcher, VerdictCache, path_views
from aisentinel.detectors.shared import LOCATION_TTL, SharedState, no_path
from aisentinel.detectors.slow import SlowConfig, SlowCounters, SlowCrossing
from aisentinel.detectors.window import (
    _HIGH,
    _LAST,
    _NEG_INF,
    _REGULAR,
    _SIG,
    _START,
    _STEP,
    _SUCCESS,
    _TOLD,
    Crossing,
    EventWindows,
    RecentSet,
    _Streaks,
)
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


MONITOR_MIN_INTERVAL = 5.0
"""The shortest interval at which one identical request without credentials, repeated
strictly periodically, is taken for a monitor (kubelet probes every 10 s, blackbox_exporter
every 15 s, Uptime Kuma down to 20 s, UptimeRobot 5 minutes): a flood of 401s comes far
faster, and is counted as ever. What makes it no guess is that nothing changes (the same
method and path with its query, no user, no key), not its pace; the pace only has to be a
scheduler's (at most a fifth of the interval of jitter, see :func:`~.window._jitter`)."""
SESSION_TTL = 86_400.0
"""How long after its client last authenticated (see :data:`EXPIRY_BURST`) a rejection may
still be the end of that client's session."""
EXPIRY_BURST = 15
"""At most this many rejections of a signed-in client's burst count as one: an expired web
session (Open WebUI's token expired, or its ``WEBUI_SECRET_KEY`` changed) while its page is
open answers the page's next round of parallel API calls 401 all at once (``/api/v1/auths/``,
``/api/models``, ``/api/v1/chats/``, its settings, folders, tools ... within a second: about
10 to 15 distinct calls), and then the user signs in again. The first rejection counts, the
next ``EXPIRY_BURST - 1`` on paths new to the burst within :data:`EXPIRY_SPAN` of it do not,
any more count again. 15 covers the page's calls; each one more would be one more uncounted
guess per burst."""
EXPIRY_SPAN = 60.0
"""How long after its first rejection a signed-in client's burst lasts (see
:data:`EXPIRY_BURST`)."""
REPORT_MEMORY = 86_400.0
"""How long a client's repeated rejection (a stale key, a monitor) is remembered as
reported: the next crossing made of the same one is told at most once in this time."""


CHECKED_PATHS_LIMIT = 2048
"""At most this many paths held per kind of evidence (a 401 served there; a 2xx served
there without credentials), second-chance eviction: see :class:`_CheckedPaths`."""
_PATH_CHARS = 200
_HOST_CHARS = 255


def _route(path: str) -> str:
    """``path`` as nginx routes it (decoded, ``..`` resolved, lower-cased, no query),
    truncated: ``/API/%63onfig?x`` and ``/api/config`` are one path."""
    return path_views(path)[1][:_PATH_CHARS]


class _CheckedPaths:
    """Where a password is checked at the very path: per path (after the virtual host,
    when logged), when a 401 and when a 2xx to a request with no user and no key id
    were last served there. A login forgives (:meth:`checks`) only where the first came
    within :data:`~.shared.LOCATION_TTL` and the second did not.

    Two :class:`~.window.RecentSet` of at most :data:`CHECKED_PATHS_LIMIT` paths each,
    expired after :data:`~.shared.LOCATION_TTL`, evicted in second-chance order: a path
    marked again since it was last queued is queued again instead of evicted. So a flood
    of new paths (an SPA's catch-all answers 200 to any path) evicts a path only when it
    had no new mark while :data:`CHECKED_PATHS_LIMIT` new paths were added after it: a
    path that traffic keeps hitting more often than that stays. A path pushed out of the
    open marks reads as not open until its next 2xx without credentials; one pushed out
    of the 401 marks forgives nothing until its next 401 (a flood of 401s counts against
    its own clients). Evictions show in the detector's evicted keys.
    """

    __slots__ = ("_challenged", "_open", "_routes")

    def __init__(self) -> None:
        self._challenged = RecentSet(LOCATION_TTL, CHECKED_PATHS_LIMIT)
        """Path -> the last 401 served there."""
        self._open = RecentSet(LOCATION_TTL, CHECKED_PATHS_LIMIT)
        """Path -> the last 2xx served there to a request without credentials."""
        self._routes = VerdictCache(_route)

    def key(self, request: HttpRequest) -> str:
        """The path of ``request`` as held (after its virtual host, when logged)."""
        route = self._routes(request.path)
        host = request.host
        return route if host is None else f"{host[:_HOST_CHARS]}\x1f{route}"

    def challenged(self, request: HttpRequest) -> None:
        """``request`` was answered 401."""
        self._challenged.add(self.key(request), request.ts)

    def opened(self, request: HttpRequest) -> None:
        """``request`` (no user, no key id) was answered 2xx."""
        self._open.add(self.key(request), request.ts)

    def keys(self, requests: Sequence[HttpRequest]) -> list[str]:
        """:meth:`key` of each of ``requests``."""
        get = self._routes.get
        routes = [get(r.path) for r in requests]
        if None in routes:
            fill = self._routes.fill
            routes = [
                fill(r.path) if k is None else k for r, k in zip(requests, routes, strict=True)
            ]
        keys = cast("list[str]", routes)
        hosts = [r.host for r in requests]
        if hosts.count(None) == len(hosts):
            return keys
        return [
            key if host is None else f"{host[:_HOST_CHARS]}\x1f{key}"
            for host, key in zip(hosts, keys, strict=True)
        ]

    def open_all(self, keys: list[str], times: list[float]) -> None:
        """The 2xx without credentials at ``keys`` at ``times`` (in event order)."""
        add = self._open.add
        for key, ts in dict(zip(keys, times, strict=True)).items():
            add(key, ts)

    def checks(self, key: str, ts: float) -> bool:
        """Whether a login at ``key`` at ``ts`` shows a password checked there: a 401
        within :data:`~.shared.LOCATION_TTL`, no 2xx without credentials (as held)."""
        return self._challenged.seen(key, ts) and not self._open.seen(key, ts)

    def expire(self, now: float) -> int:
        """Drop paths with no evidence within :data:`~.shared.LOCATION_TTL`; how many."""
        return self._challenged.expire(now) + self._open.expire(now)

    def evicted(self) -> int:
        """Paths pushed out because their set was full."""
        return self._challenged.evicted + self._open.evicted


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
        self._paths = _CheckedPaths()
        """Where logins forgive (kept only with long windows: nothing else reads it)."""
        self._streaks = _Streaks(
            config.max_keys,
            max((REPORT_MEMORY, config.status_window, *config.slow_windows)),
        )
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        # No path of its own: it reads which requests' credentials count, and when each
        # client last authenticated (held for SESSION_TTL, see _excused).
        self._requests.register(
            no_path, ttl=SESSION_TTL, max_keys=self._cfg.max_keys, refusals=True
        )

    def _forgive(self, key: str) -> None:
        """The client counted under ``key`` (:func:`~.common.client_key`: an IPv6 client's
        /64) logged in (a success with credentials in the log): its failures so far are
        a user's typos and browsers' 401 challenges, not a slow attack."""
        self._rejections_slow.forgive(key)
        self._failures_slow.forgive(key)

    def _checks(self, login: HttpRequest, first: dict[str, int] | None = None, at: int = 0) -> bool:
        """Whether ``login`` was sent where a password is checked at its path (see the
        module doc; every path with ``credentials = "checked"``). In a batch, ``login``
        is its event ``at`` and ``first`` the batch's first 2xx without credentials per
        path (those learned after the batch): one before ``login`` makes its path open."""
        if self._requests.trust.mode == "checked":
            return True
        paths = self._paths
        key = paths.key(login)
        if first is not None and first.get(key, at) < at:
            return False
        return paths.checks(key, login.ts)

    def _login(self, login: HttpRequest) -> None:
        """``login`` succeeded with credentials that count: forgive its client's long
        windows where a password is checked at its path; a stale key it keeps sending
        beside is a misconfiguration (:meth:`_judge`)."""
        key = client_key(login.client)
        if (
            self._slow_on
            and (key in self._rejections_slow or key in self._failures_slow)
            and self._checks(login)
        ):
            self._forgive(key)
        if self._streaks:
            self._streaks.succeeded(key, login.ts)

    def observe(self, event: Event) -> Finding | None:
        if not isinstance(event, HttpRequest):
            return self._failed(event)
        # Every request, as observe_many's batch: CredentialTrust learns its 401s too.
        facts = self._requests.facts((event,), self)
        if event.status < 400:
            if facts.credentialed:
                self._login(event)
            elif (
                self._slow_on
                and 200 <= event.status < 300
                and event.user is None
                and event.key_id is None
            ):
                self._paths.opened(event)
            return None
        return self._failed(event, facts.refused.get(0, _NEG_INF), 0 in facts.accepted)

    def _excused(self, event: HttpRequest, base: int, login_path: bool, signed_in: float) -> bool:
        """Whether ``event`` (a rejection; its client's streak slot at ``base``) goes
        uncounted as part of an expired session's burst (:data:`EXPIRY_BURST`): a 401 to a
        ``GET``/``HEAD`` with no user and no key id, outside the login paths
        (``login_path``), to a client that made a proven sign-in (see the module doc and
        :meth:`~.shared.RequestIndex._inferred`) within :data:`SESSION_TTL` before it
        (``signed_in``: when, as of this event in event order)."""
        ts = event.ts
        if (
            event.status != 401
            or login_path
            or event.user is not None
            or event.key_id is not None
            or event.method not in ("GET", "HEAD")
            or not 0.0 <= ts - signed_in <= SESSION_TTL
        ):
            return False
        path = event.path
        cut = path.find("?")
        # A hash that is the same in every process (not hash(): salted per process).
        where = crc32((path if cut < 0 else path[:cut]).encode())
        return self._streaks.excuse(
            base, ts, where, signed_in, span=EXPIRY_SPAN, burst=EXPIRY_BURST
        )

    def _signature(self, event: HttpRequest, login_path: bool) -> str | None:
        """What a repeat of ``event`` (a rejection) repeats: its API key id (one token;
        not a value many keys share), or, without any credential, a ``GET``/``HEAD``
        outside the login paths (``login_path``: its path is one) answered 401 (a
        monitor's request); ``None`` for anything a guess may hide in (a user's password,
        a form login's body)."""
        if event.user is not None:
            return None
        if event.key_id is not None:
            key_id = key_identity(event.key_id)
            return None if key_id is None else f"key\x1f{key_id}"
        if event.status == 401 and event.method in ("GET", "HEAD") and not login_path:
            return f"request\x1f{event.method} {event.path}"
        return None

    def _judge(
        self, event: HttpRequest, base: int, crossing: Crossing, accepted: bool
    ) -> tuple[Severity, str] | None:
        """The severity and description of a crossing of rejections whose streak slot
        is at ``base``: HIGH unless every rejection it counts repeats one thing
        (``crossing.first_ts`` within the streak); then a stale key beside the
        client's logins, a key the client last authenticated with (``accepted``: an
        expired session's token), the same key again after its HIGH, or a monitor's
        request at a fixed interval is MEDIUM, told once in :data:`REPORT_MEMORY`
        (``None``: withheld meanwhile)."""
        data = self._streaks._data
        plain = (Severity.HIGH, "rejected http logins")
        if data[base + _SIG] == 0.0 or data[base + _START] > crossing.first_ts:
            return plain
        ts = event.ts
        if event.key_id is not None:
            named = f"all with API key id {event.key_id[:64]!r}"
            if data[base + _SUCCESS] >= data[base + _START]:
                what = (
                    f"rejected http logins, {named}, while the client logs in with another"
                    " credential (a stale key in its configuration, not a guess)"
                )
            elif accepted:
                what = (
                    f"rejected http logins, {named}, a key id the client last authenticated"
                    " with (an expired session or a revoked key, not a guess)"
                )
            elif ts - data[base + _HIGH] <= REPORT_MEMORY:
                what = f"rejected http logins, {named} again (a stale key, reported before)"
            else:
                data[base + _HIGH] = ts
                return Severity.HIGH, f"rejected http logins, {named}"
        elif (
            data[base + _REGULAR] == 1.0
            and data[base + _STEP] >= MONITOR_MIN_INTERVAL
            and data[base + _LAST] > data[base + _START] + data[base + _STEP]
        ):
            every = format_duration(float(round(data[base + _STEP])))
            what = (
                f"rejected http requests, the same {event.method} {event.path[:200]!r} without"
                f" credentials every {every} (a monitor or health check, not a guess;"
                " list it in [decisions] monitoring_hosts)"
            )
        else:
            return plain
        if ts - data[base + _TOLD] <= REPORT_MEMORY:
            return None
        data[base + _TOLD] = ts
        return Severity.MEDIUM, what

    def _failed(
        self, event: Event, signed_in: float = _NEG_INF, accepted: bool = False
    ) -> Finding | None:
        """Account for one event that is not a success: a rejection or failure counts.
        For a rejection, ``signed_in`` is when its client last authenticated before it
        and ``accepted`` whether its key id is the one it last authenticated with
        (:class:`~.shared.BatchFacts`: its marks and ``accepted``)."""
        if isinstance(event, HttpRequest):
            status = event.status
            login_path = self._auth_paths.match(event.path)
            if status != 401 and (status not in self._auth_statuses or not login_path):
                return None
            if status == 401 and self._slow_on:
                self._paths.challenged(event)
            sample = event.path[:200]
            key = client_key(event.client)
            base = self._streaks.note(key, event.ts, self._signature(event, login_path))
            if self._excused(event, base, login_path, signed_in):
                return None
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
                streak=base,
                accepted=accepted,
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
        streak: int | None = None,
        accepted: bool = False,
    ) -> Finding | None:
        """The fast window's finding, else the long window's, else ``None``; for access-log
        rejections (``streak``: the client's slot) as :meth:`_judge` says."""
        suffix = ""
        if crossing is None:
            if slow is None:
                return None
            crossing, threshold, window = slow
            suffix = " (slow)"
        severity = Severity.HIGH
        if streak is not None and isinstance(event, HttpRequest):
            judged = self._judge(event, streak, crossing, accepted)
            if judged is None:
                return None
            severity, what = judged
        return client_finding(
            self.name,
            crossing,
            event,
            severity=severity,
            what=what + suffix,
            threshold=threshold,
            window=window,
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        statuses = self._auth_statuses
        failed = self._failed
        requests = all_requests(events)
        # Logins: the successes whose credentials count (the batch's shared facts, see
        # CredentialTrust); never a rejection, and they forgive the long windows.
        if requests or any(type(e) is HttpRequest for e in events):
            facts = self._requests.facts(events, self)
            # And when each rejection's client last authenticated before it, and whether
            # its key id is the one it last authenticated with: in event order.
            logins, anonymous, signed_in, accepted = (
                facts.credentialed,
                facts.anonymous,
                facts.refused,
                facts.accepted,
            )
        else:
            logins, anonymous, signed_in, accepted = [], [], {}, frozenset()
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
        slow_on = self._slow_on
        streaks = self._streaks
        # The 2xx without credentials: the paths they open are learned after the loop; a
        # login looks up the batch's first one per path (see _checks).
        reqs = cast("Sequence[HttpRequest]", events)
        opened = [reqs[i] for i in anonymous] if slow_on and anonymous else []
        keys = self._paths.keys(opened) if opened else []
        first: dict[str, int] | None = None
        # Clients whose latest event in this batch was a login already looked at and
        # that can be forgiven no more: nothing can be held for them until their next
        # rejection.
        clean: set[str] = set()
        for i in picked:
            event = events[i]
            if i in login:
                # A login (all a user's requests, on a server behind basic auth): it
                # forgives only a client with failures held, where a password is checked
                # at its path, and is remembered only for a client with a streak held
                # (the first login after a rejection is enough: the streaks ask whether
                # one came after their start).
                request = reqs[i]
                client = request.client
                if client not in clean:
                    key = client_key(client)
                    if slow_on and (key in rejections or key in failures):
                        if keys and first is None:
                            first = dict(zip(reversed(keys), reversed(anonymous), strict=True))
                        if self._checks(request, first, i):
                            self._forgive(key)
                            clean.add(client)
                        # else not clean: a later login on a checked path may forgive.
                    else:
                        clean.add(client)
                    if streaks:
                        streaks.succeeded(key, request.ts)
                continue
            if isinstance(event, HttpRequest | HttpAuthFailure):
                clean.discard(event.client)
            found = failed(event, signed_in.get(i, _NEG_INF), i in accepted)
            if found is not None:
                out.append((i, found))
        if keys:
            self._paths.open_all(keys, [r.ts for r in opened])
        return out

    def expire(self, now: float) -> int:
        return (
            self._paths.expire(now)
            + self._failures.expire(now)
            + self._rejections.expire(now)
            + self._failures_slow.expire(now)
            + self._rejections_slow.expire(now)
            + self._streaks.expire(now)
        )

    def window_counts(self) -> tuple[int, int]:
        evicted, overflow = super().window_counts()
        slow = self._failures_slow.evicted + self._rejections_slow.evicted + self._streaks.evicted
        return evicted + slow + self._paths.evicted(), overflow

    def tracked_keys(self) -> int:
        return (
            len(self._failures)
            + len(self._rejections)
            + len(self._failures_slow)
            + len(self._rejections_slow)
            + len(self._streaks)
        )


REGISTRY.register("http_auth", HttpAuthConfig, HttpAuthDetector)
