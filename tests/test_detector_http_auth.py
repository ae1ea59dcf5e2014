"""http_auth: HTTP authentication brute force per client."""

from __future__ import annotations

from typing import Any

from aisentinel.detectors.http_auth import HttpAuthConfig, HttpAuthDetector
from aisentinel.detectors.shared import SharedState
from aisentinel.events import Event, Finding, HttpAuthFailure, HttpRequest, Severity

T0 = 1_764_000_000.0
CLIENT = "203.0.113.9"


def req(ts: float, path: str = "/", status: int = 401, client: str = CLIENT) -> HttpRequest:
    return HttpRequest(T0 + ts, "nginx", client, "POST", path, status, 0, None, "curl/8")


def fail(ts: float, user: str = "admin", client: str = CLIENT) -> HttpAuthFailure:
    return HttpAuthFailure(T0 + ts, "nginx-error", client, user, "password_mismatch")


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = HttpAuthDetector(HttpAuthConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_error_log_failures_match_fail2ban_nginx_http_auth() -> None:
    """5 error-log failures within 10 minutes (fail2ban's stock jail) give a HIGH finding."""
    found = feed([fail(i * 140.0, f"u{i}") for i in range(5)])
    assert len(found) == 1
    assert found[0].severity is Severity.HIGH
    assert found[0].client == CLIENT
    assert found[0].evidence == ("u0", "u1", "u2", "u3", "u4")
    assert feed([fail(i * 151.0) for i in range(5)]) == []


def test_requests_without_credentials_are_not_failures() -> None:
    """A browser's credential-less first requests (error log) never add up to a finding."""
    quiet = [
        HttpAuthFailure(T0 + i, "nginx-error", CLIENT, None, "no_credentials") for i in range(20)
    ]
    assert feed(quiet) == []
    assert len(feed([*quiet, *(fail(30.0 + i) for i in range(5))])) == 1


def test_access_log_401s_cross_at_status_threshold() -> None:
    """Ten 401s within 5 minutes give a finding; nine do not."""
    assert len(feed([req(i * 30.0) for i in range(10)])) == 1
    assert feed([req(i * 30.0) for i in range(9)]) == []


def test_403_and_400_count_only_on_auth_endpoints() -> None:
    """400/403 count on login endpoints (Open WebUI signin), not elsewhere."""
    signin = [req(i, "/api/v1/auths/signin", 400) for i in range(10)]
    assert len(feed(signin)) == 1
    elsewhere = [req(i, "/api/chat", 403) for i in range(30)]
    assert feed(elsewhere) == []


def test_success_and_other_statuses_ignored() -> None:
    """2xx, 404 and 500 responses are not authentication failures."""
    events: list[Event] = [req(i, "/login", s) for i in range(20) for s in (200, 302, 404, 500)]
    assert feed(events) == []


def test_custom_auth_paths() -> None:
    """auth_paths is configurable."""
    events: list[Event] = [req(i, "/my/login", 403) for i in range(3)]
    assert len(feed(events, auth_paths=["/my/login"], status_threshold=3)) == 1


def test_ipv6_and_refire_once_per_window() -> None:
    """IPv6 clients are tracked; an ongoing attack re-fires once per window."""
    events: list[Event] = [fail(float(i), client="2001:db8::7") for i in range(0, 1300, 10)]
    found = feed(events)
    assert [f.client for f in found] == ["2001:db8::7"] * 3


def test_expire_and_tracked_keys() -> None:
    """Both counters expire idle clients (long windows off here; see the slow tests);
    the rejection's streak (is it repeated?) is kept for a day."""
    det = HttpAuthDetector(HttpAuthConfig(slow_thresholds=(), slow_windows=()))
    det.observe(fail(0))
    det.observe(req(0))
    assert det.tracked_keys() == 3
    assert det.expire(T0 + 601) == 2
    assert det.expire(T0 + 86_401) == 1
    assert det.tracked_keys() == 0


def test_slow_rejections_cross_the_long_window() -> None:
    """One 401 every 5 minutes never crosses 10 in 5m, but crosses 10 in 1h: HIGH (slow)."""
    found = feed([req(i * 300.0) for i in range(12)])
    assert len(found) == 1
    assert found[0].severity is Severity.HIGH
    assert found[0].window == 3600.0
    assert "(slow)" in found[0].message
    assert feed([req(i * 300.0) for i in range(12)], slow_thresholds=[], slow_windows=[]) == []


def _session(ts: float) -> list[Event]:
    """A basic-auth browser session: the 401 challenge, then the request with the user."""
    ok = HttpRequest(T0 + ts + 1, "nginx", CLIENT, "GET", "/", 200, 512, "alice", "Firefox")
    return [req(ts), ok]


def test_logged_in_user_clears_the_long_windows() -> None:
    """A user's daily 401 challenges, each followed by a login, never make a slow finding."""
    day = [e for i in range(30) for e in _session(i * 2400.0)]  # 30 sessions in 20 h
    assert feed(day) == []
    det = HttpAuthDetector(HttpAuthConfig())
    assert [f for _, f in det.observe_many(day)] == []  # the batch path agrees


def test_a_logged_in_ipv6_user_clears_the_long_windows_of_its_64() -> None:
    """An IPv6 user's daily 401 challenges, each followed by a login, never make a slow finding."""
    v6 = "2001:db8:5:6::20"
    day: list[Event] = []
    for i in range(30):
        ok = HttpRequest(T0 + i * 2400.0 + 1, "nginx", v6, "GET", "/", 200, 512, "alice", "Firefox")
        day += [req(i * 2400.0, client=v6), ok]
    assert feed(day) == []
    det = HttpAuthDetector(HttpAuthConfig())
    assert [f for _, f in det.observe_many(day)] == []  # the batch path agrees


def test_logins_do_not_clear_another_clients_long_windows() -> None:
    """An attacker's spaced 401s still cross 10 in 1h while another client logs in."""
    other = "198.51.100.4"
    events: list[Event] = []
    for i in range(12):
        events.append(req(i * 300.0))
        events.append(HttpRequest(T0 + i * 300 + 1, "nginx", other, "GET", "/", 200, 1, "bob", "x"))
    found = feed(events)
    assert [(f.client, f.window) for f in found] == [(CLIENT, 3600.0)]
    det = HttpAuthDetector(HttpAuthConfig())
    assert [(f.client, f.window) for _, f in det.observe_many(events)] == [(CLIENT, 3600.0)]


def test_fast_attack_is_not_reported_again_by_the_long_window() -> None:
    """A burst the fast window reported does not also cross the long one."""
    found = feed([fail(i) for i in range(25)])
    assert [f.window for f in found] == [600.0]


def _keyed(
    ts: float, key_id: str, status: int = 401, path: str = "/v1/models", client: str = CLIENT
) -> HttpRequest:
    return HttpRequest(T0 + ts, "nginx", client, "GET", path, status, 92, None, "ua", key_id=key_id)


def _both(events: list[Event], **kw: object) -> tuple[list[Finding], list[Finding]]:
    """The findings line by line and in one batch (they must agree)."""
    det = HttpAuthDetector(HttpAuthConfig.model_validate(kw))
    return feed(events, **kw), [f for _, f in det.observe_many(events)]


def test_a_revoked_key_beside_a_working_one_is_an_alert_naming_it() -> None:
    """A server with two keys, one revoked (200 with one, 401 with the other, every
    refresh), is a MEDIUM finding naming the rejected key, told once a day: not a ban."""
    events: list[Event] = []
    for i in range(200):
        events += [_keyed(i * 20.0, "goodKey1", 200), _keyed(i * 20.0 + 0.01, "revoked2")]
    for found in _both(events):
        assert [f.severity for f in found] == [Severity.MEDIUM]
        assert "'revoked2'" in found[0].message
        assert "another credential" in found[0].message


def test_a_stale_key_alone_is_high_once_then_medium() -> None:
    """One stale key every 10 s with no login: HIGH naming it at first, then (after the
    ban) MEDIUM once a day: the same key repeated is not a worse offence each time."""
    events: list[Event] = [_keyed(i * 10.0, "oldK3yAa") for i in range(1200)]
    for found in _both(events):
        assert [f.severity for f in found] == [Severity.HIGH, Severity.MEDIUM]
        assert "'oldK3yAa'" in found[0].message
        assert "again" in found[1].message


def test_distinct_keys_or_users_are_guessing_and_stay_high() -> None:
    """Ten distinct rejected keys, ten rejections of one user (passwords are not in the
    log), or keys many tokens share ("short"), are HIGH, even beside a working key."""
    login = [_keyed(0.0, "goodKey1", 200)]
    keys: list[Event] = [_keyed(1.0 + i, f"guess{i:03d}") for i in range(10)]
    user: list[Event] = [
        HttpRequest(T0 + 1 + i, "nginx", CLIENT, "GET", "/", 401, 0, "admin", "ua")
        for i in range(10)
    ]
    short: list[Event] = [_keyed(1.0 + i, "short") for i in range(10)]
    for attempts in (keys, user, short):
        for found in _both([*login, *attempts]):
            assert [f.severity for f in found] == [Severity.HIGH]


def test_a_monitor_without_a_key_is_an_alert_not_a_ban() -> None:
    """The same GET without credentials every 5 minutes for a day (an uptime monitor
    answered 401) is one MEDIUM finding; the same at an irregular pace, or a fast flood
    at a fixed pace, is HIGH."""

    def probe(ts: float) -> HttpRequest:
        return HttpRequest(T0 + ts, "nginx", CLIENT, "GET", "/v1/models", 401, 0, None, "Kuma")

    for found in _both([probe(i * 300.0) for i in range(288)]):
        assert [f.severity for f in found] == [Severity.MEDIUM]
        assert "monitor" in found[0].message
    irregular: list[Event] = [probe(i * 300.0 + (i % 3) * 40) for i in range(12)]
    assert [f.severity for f in feed(irregular)] == [Severity.HIGH]
    flood: list[Event] = [probe(i * 2.0) for i in range(10)]
    assert [f.severity for f in feed(flood)] == [Severity.HIGH]


def test_fast_monitors_and_probes_are_alerts_but_a_jittery_script_is_not() -> None:
    """The same GET without credentials every 10 s (kubelet), 15 s (blackbox_exporter)
    or 20 s (Uptime Kuma) for an hour, answered 401, is one MEDIUM naming
    monitoring_hosts; about every 6 s with 1.5 s of jitter, or a changing query, is HIGH."""

    def probe(ts: float, path: str = "/v1/models") -> HttpRequest:
        return HttpRequest(T0 + ts, "nginx", CLIENT, "GET", path, 401, 0, None, "Uptime-Kuma")

    for every in (10.0, 15.0, 20.0):
        events: list[Event] = [probe(i * every + (i % 2) * 0.3) for i in range(int(3600 / every))]
        for found in _both(events):
            assert [f.severity for f in found] == [Severity.MEDIUM], every
            assert "monitoring_hosts" in found[0].message
    # Intervals of 6.5 s and 5 s in turn: within 2 s, but not a scheduler's pace.
    jittery: list[Event] = [probe(i * 5.75 + (i % 2) * 0.75) for i in range(40)]
    assert Severity.HIGH in [f.severity for f in feed(jittery)]
    guesses: list[Event] = [probe(i * 20.0, f"/v1/models?k={i}") for i in range(40)]
    assert Severity.HIGH in [f.severity for f in feed(guesses)]


OTHER = "198.51.100.10"


def _get(ts: float, path: str, status: int = 200, **kw: Any) -> HttpRequest:
    """A GET (``client``, ``user``, ``key_id`` in ``kw``)."""
    return req(ts, path, status)._replace(method="GET", **kw)


def _webui(forged: list[HttpRequest], every: int = 420, hours: int = 4) -> list[Event]:
    """Open WebUI behind nginx: ``/api/config`` answers 200 to anyone, ``/api/v1/chats/``
    401 without a session (so ``/api`` is checked); the attacker guesses a password on
    ``/api/v1/auths/signin`` (400) ``every`` seconds and sends ``forged`` at each hour."""
    events: list[Event] = []
    for k in range(0, hours * 3600, 600):
        events.append(_get(k, "/api/config", client=OTHER))
        events.append(_get(k + 1, "/api/v1/chats/", 401, client=OTHER))
    for k in range(0, hours * 3600, every):
        events.append(req(k + 5, "/api/v1/auths/signin", 400))
    for k in range(0, hours * 3600, 3600):
        events += [e._replace(ts=e.ts + k) for e in forged]
    return sorted(events, key=lambda e: e.ts)


def _banned_slowly(found: list[Finding]) -> bool:
    """Whether the attacker was found by a long window (HIGH: a ban)."""
    return any(f.client == CLIENT and f.window > 300 and f.severity is Severity.HIGH for f in found)


def test_a_forged_user_on_an_open_page_forgives_nothing() -> None:
    """A password guesser's hourly ``curl -u x:y /api/config`` (a "login" on a page that
    answers anyone, under a checked location) does not clear its long windows."""
    forged = _get(300, "/api/config", user="x")
    by_line, batched = _both(_webui([forged]))
    assert _banned_slowly(by_line)
    assert by_line == batched
    assert _banned_slowly(feed(_webui([])))  # the same as without the forged requests


def test_a_junk_bearer_401_on_an_open_page_does_not_make_it_checked() -> None:
    """A 401 the attacker earns itself (a junk Bearer token) on the open page before its
    forged login there does not make that login forgive: the page answers anyone."""
    junk = _get(299, "/api/config", 401, key_id="sk-junk")
    # A guess every 8 minutes: with the junk 401s still under 10 in an hour.
    by_line, batched = _both(_webui([junk, _get(300, "/api/config", user="x")], every=480))
    assert _banned_slowly(by_line)
    assert by_line == batched


def test_credentials_checked_forgives_a_login_anywhere() -> None:
    """With ``[parsers] credentials = "checked"`` (every location checks) a login on any
    path forgives, the open page's included; "learned" does not there."""
    events = _webui([_get(300, "/api/config", user="x")])
    for mode, banned in (("checked", False), ("learned", True)):
        shared = SharedState()
        shared.requests.trust.mode = mode
        det = HttpAuthDetector(HttpAuthConfig(), shared=shared)
        assert _banned_slowly([f for _, f in det.observe_many(events)]) is banned, mode


def test_a_login_forgives_only_where_its_path_answered_401() -> None:
    """A single user's logins forgive at a path that answered 401 (as nginx routes it: the
    case, a trailing slash and the query do not matter), not at one that never did; a
    login that could not forgive does not stop a later one of the same batch."""
    challenges = [req(i * 300.0, "/private") for i in range(9)]
    after = [req(3000.0 + i * 300, "/private") for i in range(3)]
    checked = _get(2950, "/Private/?tab=1", user="alice")
    unchecked = _get(2950, "/public", user="alice")
    assert _both([*challenges, checked, *after]) == ([], [])
    by_line, batched = _both([*challenges, unchecked, *after])
    assert [f.window for f in by_line] == [3600.0]
    assert by_line == batched
    later = _get(2960, "/private", user="alice")
    assert _both([*challenges, unchecked, later, *after]) == ([], [])


def test_a_2xx_without_credentials_before_a_login_opens_its_path() -> None:
    """Event order counts, in a batch as line by line: a 2xx without credentials on the
    login's path before it makes the path open (no forgiving), one after it does not."""
    challenges = [req(i * 300.0, "/") for i in range(9)]
    after = [req(3000.0 + i * 300, "/") for i in range(3)]
    login = _get(2950, "/", user="alice")
    before = _get(2940, "/", client=OTHER)
    behind = _get(2960, "/", client=OTHER)
    by_line, batched = _both([*challenges, before, login, *after])
    assert [f.window for f in by_line] == [3600.0]
    assert by_line == batched
    assert _both([*challenges, login, behind, *after]) == ([], [])


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"
SPA_CALLS = (
    "/api/v1/auths/",
    "/api/models",
    "/api/v1/chats/?page=1",
    "/api/v1/users/user/settings",
    "/api/v1/folders/",
    "/api/v1/prompts/",
    "/api/v1/tools/",
    "/api/v1/functions/",
    "/api/v1/chats/pinned",
    "/api/v1/chats/tags",
    "/api/v1/configs/banners",
    "/api/v1/knowledge/",
)
"""What Open WebUI's page asks for at once (its app layout's parallel loads, the sidebar's)."""


def _spa(ts: float, status: int, client: str = CLIENT, **kw: Any) -> list[Event]:
    """The page's API calls at ``ts``, all answered ``status``."""
    return [
        HttpRequest(T0 + ts, "nginx", client, "GET", path, status, 40, None, BROWSER, **kw)
        for path in SPA_CALLS
    ]


def _expiries(every: float, times: int, client: str = CLIENT) -> list[Event]:
    """A signed-in Open WebUI user whose session expires ``times`` times, ``every`` seconds
    apart: the open page's calls answered 401, then a sign-in and the page loaded again.
    Before, ``/api/v1/auths/`` refused someone without a session (what makes a 2xx there
    a sign-in)."""
    events: list[Event] = [
        _get(-60.0, "/api/v1/auths/", 401, client=OTHER),
        *_spa(0.0, 200, client),
    ]
    for n in range(1, times + 1):
        at = n * every
        events += _spa(at, 401, client)
        events.append(req(at + 8, "/api/v1/auths/signin", 200, client))
        events += _spa(at + 9, 200, client)
    return events


def test_an_expired_web_session_is_no_brute_force() -> None:
    """A signed-in user's page answered 401 all at once (12 calls: its session expired or
    the server's secret changed), then a sign-in, is no finding, line by line or in a batch,
    for one expiry and for one every two hours over a day."""
    for events in (_expiries(1200.0, 1), _expiries(7200.0, 11)):
        for found in _both(events):
            assert found == []


def test_rejections_without_a_session_or_past_the_burst_stay_high() -> None:
    """A burst of 401s is HIGH as ever from a client with no earlier authentication (a
    scanner of API paths, one that only fetched the open /api/config), after a session
    when it goes on past the burst, for distinct API keys or on the login path."""
    scanner: list[Event] = _spa(0.0, 401)
    config: list[Event] = [_get(-60.0, "/api/config"), *_spa(0.0, 401)]
    # A session, then 401s every second for a minute and a half on one path.
    going_on: list[Event] = [
        *_spa(0.0, 200),
        *[_get(600.0 + i, "/api/models", 401) for i in range(90)],
    ]
    keys: list[Event] = [
        *_spa(0.0, 200),
        *[_keyed(600.0 + i * 0.1, f"sk-guess{i:03d}") for i in range(10)],
    ]
    signin: list[Event] = [
        *_spa(0.0, 200),
        *[req(600.0 + i, "/api/v1/auths/signin", 400) for i in range(10)],
    ]
    for events in (scanner, config, going_on, keys, signin):
        for found in _both(events):
            assert [f.severity for f in found][:1] == [Severity.HIGH]


def test_expired_session_bursts_count_once_each() -> None:
    """Each expired-session burst counts one rejection: a signed-in client whose session
    ends 20 times in a day crosses the long window (20 in a day), one that ends 19 times
    does not."""
    for found in _both(_expiries(4000.0, 20)):
        assert [(f.severity, f.window) for f in found] == [(Severity.HIGH, 86_400.0)]
    for found in _both(_expiries(4000.0, 19)):
        assert found == []


def test_an_expired_session_token_in_the_json_log_is_an_alert_not_a_ban() -> None:
    """In the aisentinel JSON format (the session token's key id logged), the page's calls
    refused with the token it signed in with is MEDIUM naming it, not a ban; the same
    refusals from a client that never authenticated are HIGH."""
    session: list[Event] = [
        _get(-60.0, "/api/v1/auths/", 401, client=OTHER),
        *_spa(0.0, 200, key_id="sig0001a"),
        *_spa(1200.0, 401, key_id="sig0001a"),
    ]
    for found in _both([*session, *_spa(1209.0, 200, key_id="sig0002b")]):
        assert [f.severity for f in found] == [Severity.MEDIUM]
        assert "'sig0001a'" in found[0].message
        assert "expired session" in found[0].message
    for found in _both(_spa(1200.0, 401, key_id="sig0001a")):
        assert [f.severity for f in found] == [Severity.HIGH]


OLLAMA_CALL = req(-600.0, "/api/generate", 200)
"""A successful inference call (an open Ollama behind the same nginx answers anyone)."""
CHALLENGE = _get(-60.0, "/api/v1/auths/", 401, client=OTHER)
"""Open WebUI's session user refused to someone without a session."""


def test_a_sign_in_later_in_the_batch_excuses_no_earlier_rejection() -> None:
    """A client that never signed in, whose burst of 401s (a guesser's, on the page's
    distinct paths) is followed by a sign-in in the same batch (its guess hit), is HIGH in a
    batch as line by line: a rejection is judged on the sign-ins before it."""
    events: list[Event] = [CHALLENGE, *_spa(0.0, 401), _get(5.0, "/api/v1/auths/")]
    by_line, batched = _both(events)
    assert [f.severity for f in by_line] == [Severity.HIGH]
    assert batched == by_line


def test_only_the_page_s_distinct_get_calls_are_excused() -> None:
    """After a sign-in, a burst of 401s counts as usual where it repeats a path (a guesser's
    target endpoint), for POSTs (a form login answered 401) and past 15 calls."""
    signed: list[Event] = [CHALLENGE, _get(0.0, "/api/v1/auths/")]
    repeats = [_get(600.0 + i * 0.5, "/api/models", 401) for i in range(10)]
    posts = [req(600.0 + i * 0.5, "/rest/login", 401) for i in range(10)]
    many = [_get(600.0 + i * 0.1, f"/api/v1/x{i}/", 401) for i in range(24)]
    for burst in (repeats, posts, many):
        for found in _both([*signed, *burst]):
            assert [f.severity for f in found] == [Severity.HIGH]
    # The page's own 12 calls, twice within the minute: the repeats count (1 + 12).
    for found in _both([*signed, *_spa(600.0, 401), *_spa(630.0, 401)]):
        assert [f.severity for f in found] == [Severity.HIGH]


def test_a_2xx_on_the_session_user_signs_in_only_where_it_answered_401() -> None:
    """A 2xx on Open WebUI's session user is a sign-in only on a virtual host where that
    path refused someone: a catch-all vhost that answers any path 200 earns no excused burst."""
    host = {"host": "static.example.com"}
    webui = {"host": "ai.example.com"}
    catch_all: list[Event] = [
        _get(-60.0, "/api/v1/auths/", 401, client=OTHER, **webui),
        _get(0.0, "/api/v1/auths/", **host),
        *_spa(600.0, 401, **webui),
    ]
    for found in _both(catch_all):
        assert [f.severity for f in found] == [Severity.HIGH]
    webui_user: list[Event] = [
        _get(-60.0, "/api/v1/auths/", 401, client=OTHER, **webui),
        _get(0.0, "/api/v1/auths/", **webui),
        *_spa(600.0, 401, **webui),
    ]
    assert _both(webui_user) == ([], [])


def test_no_sign_in_the_client_makes_itself_earns_an_excused_burst() -> None:
    """With no host in the log, a 2xx on the session user where only the same client was
    refused, on a path two of its addresses got 401 on, or an open Ollama's inference call
    earns no excused burst: the page-shaped 401s are HIGH."""
    self_401: list[Event] = [
        _get(-60.0, "/api/v1/users/user/settings", 401),
        _get(-59.0, "/api/v1/users/user/settings"),
    ]
    learned: list[Event] = [
        _get(-60.0, "/api/models", 401),
        _get(-59.5, "/api/models", 401, client="203.0.113.67"),
        _get(-59.0, "/api/models"),
    ]
    for credit in (self_401, learned, [OLLAMA_CALL]):
        for found in _both([*credit, *_spa(600.0, 401)]):
            assert [f.severity for f in found][:1] == [Severity.HIGH]


def test_open_webui_s_sign_in_post_signs_in_before_the_session_user_refused_anyone() -> None:
    """A 2xx to the sign-in POST is a sign-in even before the session user answered anyone
    401 (a fresh daemon): the user who only reads and whose session expires is not banned."""
    events: list[Event] = [
        _get(0.0, "/api/v1/auths/signin", 200)._replace(method="POST"),
        *_spa(1.0, 200),
        *_spa(7200.0, 401),
    ]
    assert _both(events) == ([], [])


def test_a_key_id_is_accepted_only_where_another_client_was_refused() -> None:
    """In the JSON format a key id sent once to a path that refused no other client (an
    SPA's catch-all 200) is not the client's accepted key: its guesses keeping those 8
    logged characters stay HIGH."""
    warm: list[Event] = [_get(-60.0, "/api/v1/auths/", 401, client=OTHER)]
    streak = [_keyed(60.0 + i * 0.3, "AbCdEf12", path="/api/models") for i in range(20)]
    for found in _both([*warm, _get(0.0, "/zq7", key_id="AbCdEf12"), *streak]):
        assert [f.severity for f in found][:1] == [Severity.HIGH]


def test_other_401_paths_do_not_push_out_the_session_user_s_refusal() -> None:
    """4096 other paths answered 401 (scanners, expired tabs' chats) after the session user
    refused a logged-out visitor leave a page load there a sign-in: no ban at expiry."""
    events: list[Event] = [CHALLENGE]
    events += [
        _get(-50.0 + i * 0.01, f"/api/v1/chats/{i:08x}", 401, client=f"10.0.{i // 250}.{i % 250}")
        for i in range(4096)
    ]
    events += [*_spa(0.0, 200), *_spa(3600.0, 401)]
    by_line, batched = _both(events)
    assert [f for f in by_line if f.key == CLIENT] == []
    assert [f for f in batched if f.key == CLIENT] == []


def test_an_ipv4_mapped_client_s_expiry_is_excused_in_a_batch_as_line_by_line() -> None:
    """An IPv4-mapped IPv6 client that signed in and whose page is refused within one batch
    is excused in the batch as line by line (its key is its IPv4 address)."""
    mapped = "::ffff:203.0.113.9"
    events: list[Event] = [CHALLENGE, _get(0.0, "/api/v1/auths/", client=mapped)]
    assert _both([*events, *_spa(600.0, 401, client=mapped)]) == ([], [])


def test_a_key_id_streak_is_medium_only_for_the_key_the_client_signed_in_with() -> None:
    """In the JSON format one key id refused over and over (a guesser keeping the logged 8
    characters fixed) is HIGH from a client that signed in otherwise (an open Ollama's
    inference call) or whose key id was accepted only after, in the same batch or not."""
    streak = [_keyed(60.0 + i * 0.3, "AbCdEf12") for i in range(20)]
    for events in ([OLLAMA_CALL, *streak], [*streak, _keyed(70.0, "AbCdEf12", 200)]):
        for found in _both(events):
            assert [f.severity for f in found][:1] == [Severity.HIGH]


def test_an_ipv6_session_ends_on_another_address_of_its_network() -> None:
    """An IPv6 user signed in from one address and refused from another of its /64 (a
    privacy address) is an expired session, not a brute force, line by line or in a batch."""
    signed_in = "2001:db8:1::5"
    events: list[Event] = [
        CHALLENGE,
        _get(0.0, "/api/v1/auths/", client=signed_in),
        *_spa(1200.0, 401, client="2001:db8:1::6"),
    ]
    assert _both(events) == ([], [])
    # Another network is not covered.
    other: list[Event] = [*events[:2], *_spa(1200.0, 401, client="2001:db8:2::6")]
    for found in _both(other):
        assert [f.severity for f in found] == [Severity.HIGH]
