"""credential_stuffing: many usernames per client, many clients per username."""

from __future__ import annotations

from aisentinel.detectors.ai_recon import AiReconConfig, AiReconDetector
from aisentinel.detectors.credential_stuffing import (
    CredentialStuffingConfig,
    CredentialStuffingDetector,
)
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Event,
    Finding,
    HttpAuthFailure,
    HttpRequest,
    Severity,
    SshEvent,
    SshKind,
)

T0 = 1_764_000_000.0


def ssh(
    ts: float,
    user: str | None,
    client: str = "203.0.113.5",
    kind: SshKind = SshKind.FAILED_PASSWORD,
) -> SshEvent:
    return SshEvent(T0 + ts, "auth", client, kind, user, 22)


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = CredentialStuffingDetector(CredentialStuffingConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_five_usernames_from_one_client() -> None:
    """Five distinct usernames from one client in 10 minutes: HIGH about the client."""
    found = feed([ssh(i * 60.0, f"user{i}") for i in range(5)])
    assert len(found) == 1
    assert found[0].severity is Severity.HIGH
    assert found[0].client == "203.0.113.5"
    assert set(found[0].evidence) == {f"user{i}" for i in range(5)}


def test_same_username_repeated_is_not_stuffing() -> None:
    """One username many times from one client is brute force, not stuffing."""
    assert feed([ssh(float(i), "root") for i in range(50)]) == []


def test_one_username_from_many_clients() -> None:
    """Ten clients failing as one user: MEDIUM, client None, key the user, clients listed."""
    found = feed([ssh(float(i), "alice", client=f"198.51.100.{i}") for i in range(10)])
    assert len(found) == 1
    finding = found[0]
    assert finding.severity is Severity.MEDIUM
    assert finding.client is None
    assert finding.key == "alice"
    assert set(finding.clients) == {f"198.51.100.{i}" for i in range(10)}


def test_http_failures_count_and_mix_with_ssh() -> None:
    """Basic-auth failures and 401s with a user count alongside ssh failures."""
    client = "2001:db8::5"
    events: list[Event] = [
        ssh(0, "a", client),
        HttpAuthFailure(T0 + 1, "err", client, "b", "user_not_found"),
        HttpRequest(T0 + 2, "nginx", client, "GET", "/", 401, 0, "c", "curl"),
        HttpRequest(T0 + 3, "nginx", client, "GET", "/", 200, 0, "ok", "curl"),
        ssh(4, "d", client),
        ssh(5, "e", client, SshKind.INVALID_USER),
    ]
    found = feed(events)
    assert [f.client for f in found] == [client]
    assert "ok" not in found[0].evidence


def test_accepted_logins_and_missing_users_ignored() -> None:
    """Successful logins and events without a username do not count."""
    events: list[Event] = [ssh(float(i), f"u{i}", kind=SshKind.ACCEPTED) for i in range(10)]
    events += [ssh(float(i), None, kind=SshKind.PREAUTH) for i in range(10)]
    assert feed(events) == []


def test_both_crossings_on_one_event_lose_nothing() -> None:
    """When one event crosses both rules, the other is reported on the next event."""
    events: list[Event] = [
        ssh(0.0, "u1", client="192.0.2.1"),
        ssh(1.0, "u2", client="192.0.2.2"),
        ssh(2.0, "u2", client="192.0.2.1"),  # crosses both rules at once
        ssh(3.0, "u2", client="192.0.2.3"),
    ]
    found = feed(events, threshold=2, clients_threshold=2)
    assert [(f.ts - T0, f.client, f.key) for f in found] == [
        (2.0, "192.0.2.1", "192.0.2.1"),
        (3.0, None, "u2"),
    ]


def test_expire_drops_idle_keys() -> None:
    """Its tables (usernames per client, clients per username) expire idle keys."""
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    det.observe(ssh(0, "root"))
    assert det.tracked_keys() == 2
    assert det.expire(T0 + 601) == 2


def feed_all(events: list[Event], **kw: object) -> list[Finding]:
    """Every finding, as the pipeline gets them (several per event possible)."""
    det = CredentialStuffingDetector(CredentialStuffingConfig.model_validate(kw))
    return [f for e in events for _, f in det.observe_many((e,))]


def test_distributed_attack_names_and_bans_members() -> None:
    """The per-username alert lists the members; each gets a HIGH finding of its own,
    except one that logged in successfully (ssh accepted)."""
    good = "192.0.2.9"
    events: list[Event] = [ssh(0, "alice", good, SshKind.ACCEPTED)]
    members = [f"203.0.113.{i}" for i in range(9)] + [good]
    events += [ssh(0.5, f"guest{i}", c) for i, c in enumerate(members)]  # a first failure
    events += [ssh(1.0 + i, "admin", c) for i, c in enumerate(members)]
    found = feed_all(events)
    assert found[0].client is None
    assert found[0].clients == tuple(members)
    assert [f.client for f in found[1:]] == members[:9]
    assert {f.severity for f in found[1:]} == {Severity.HIGH}
    # a late member, within one window of the crossing, is a member too (at its second)
    late = feed_all([*events, ssh(30, "admin", "198.51.100.3"), ssh(31, "admin", "198.51.100.3")])
    assert late[-1].client == "198.51.100.3"
    assert late[-1].ts == T0 + 31
    assert feed_all(events, ban_members=False) == found[:1]


def test_member_list_is_bounded() -> None:
    """At most max_members addresses are listed (and banned)."""
    events: list[Event] = [ssh(0, f"g{i}", f"203.0.113.{i}") for i in range(20)]
    events += [ssh(i * 0.1, "admin", f"203.0.113.{i}") for i in range(20)]
    found = feed_all(events, clients_threshold=20, max_members=12)
    assert len(found[0].clients) == 12
    assert len(found) == 13  # the alert and the twelve listed members


def test_http_success_spares_a_member() -> None:
    """An access-log request with a user and status < 400 keeps its client out of bans."""
    good = "192.0.2.10"
    ok = HttpRequest(T0, "nginx", good, "GET", "/", 200, 0, "bob", "ua")
    fails = [
        HttpRequest(T0 + 1 + i, "nginx", c, "GET", "/", 401, 0, "admin", "ua")
        for i, c in enumerate([good, *(f"203.0.113.{i}" for i in range(9))])
    ]
    firsts = [f._replace(ts=T0 + 0.5, user=f"guest{i}") for i, f in enumerate(fails)]
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    found = [f for _, f in det.observe_many([ok, *firsts, *fails])]
    assert good in found[0].clients
    assert good not in [f.client for f in found[1:]]
    assert len(found) == 10


def _storm_on_admin(spared: str, start: float) -> list[HttpRequest]:
    """Ten clients (``spared`` first) failing as "admin" (each after a failure as another
    name, so each has failed twice): a distributed attack."""
    clients = [spared, *(f"203.0.113.{i}" for i in range(9))]
    return [
        HttpRequest(T0 + start - 0.5, "nginx", c, "GET", "/", 401, 0, f"guest{i}", "ua")
        for i, c in enumerate(clients)
    ] + [
        HttpRequest(T0 + start + i, "nginx", c, "GET", "/", 401, 0, "admin", "ua")
        for i, c in enumerate(clients)
    ]


def test_api_key_success_spares_a_member() -> None:
    """A request answered < 400 with an API key id (no user) is a login too: no ban."""
    good = "192.0.2.11"
    ok = HttpRequest(T0, "nginx", good, "POST", "/v1/chat", 200, 0, None, "ua", key_id="k1")
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    found = [f for _, f in det.observe_many([ok, *_storm_on_admin(good, 1)])]
    assert good in found[0].clients
    assert [f.client for f in found[1:]] == [f"203.0.113.{i}" for i in range(9)]


def test_http_successes_are_held_once_with_ai_recon() -> None:
    """Built together, credential_stuffing and ai_recon read one table of logins: the
    access log's successes are not held a second time by credential_stuffing."""
    shared = SharedState()
    stuffing = CredentialStuffingDetector(CredentialStuffingConfig(), shared=shared)
    recon = AiReconDetector(AiReconConfig(), shared=shared)
    batch = [
        HttpRequest(T0, "nginx", f"198.51.100.{i}", "GET", "/", 200, 0, "bob", "ua")
        for i in range(50)
    ]
    for det in (recon, stuffing):
        det.observe_many(batch)
    assert len(stuffing._succeeded) == 0
    assert shared.requests.authenticated() == 50
    found = [f for _, f in stuffing.observe_many(_storm_on_admin("198.51.100.7", 10))]
    assert "198.51.100.7" in found[0].clients
    assert "198.51.100.7" not in [f.client for f in found[1:]]
    assert stuffing.expire(T0 + 86_401) >= 50
    assert shared.requests.authenticated() == 0


def test_success_later_in_the_same_batch_spares_a_member() -> None:
    """A member that logs in later in the same batch is spared (the table holds the whole
    batch once its facts are computed); in a later batch it would have been banned."""
    late = "192.0.2.12"
    ok = HttpRequest(T0 + 20, "nginx", late, "GET", "/", 200, 0, "bob", "ua")
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    found = [f for _, f in det.observe_many([*_storm_on_admin(late, 1), ok])]
    assert late not in [f.client for f in found[1:]]
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    found = [f for _, f in det.observe_many(_storm_on_admin(late, 1))]
    det.observe_many([ok])
    assert late in [f.client for f in found[1:]]


def test_one_failure_during_a_spray_bans_no_one() -> None:
    """While "root" is under attack, one failure from a new address is no ban; a second is."""
    bots = [ssh(0.5, f"g{i}", f"203.0.113.{i}") for i in range(10)]
    bots += [ssh(1.0 + i, "root", f"203.0.113.{i}") for i in range(10)]
    found = feed_all(bots)
    assert len(found) == 11  # the alert and ten members
    admin = "198.51.100.77"
    assert feed_all([*bots, ssh(60, "root", admin)])[11:] == []
    again = feed_all([*bots, ssh(60, "root", admin), ssh(70, "root", admin)])[11:]
    assert [f.client for f in again] == [admin]


def test_one_attempts_lines_are_one_failure_during_a_spray() -> None:
    """One typo logs pam_unix's line and "Failed password" (or "Invalid user" and "Failed
    password for invalid user") from one sshd process: one attempt, no member ban; a
    second try in that connection, or another connection's, is a second attempt."""
    bots = [ssh(0.5, f"g{i}", f"203.0.113.{i}") for i in range(10)]
    bots += [ssh(1.0 + i, "root", f"203.0.113.{i}") for i in range(10)]
    admin = "198.51.100.77"

    def line(ts: float, kind: SshKind, pid: int) -> SshEvent:
        return ssh(ts, "root", admin, kind)._replace(pid=pid)

    typo = [line(60, SshKind.PAM_FAILURE, 900), line(60, SshKind.FAILED_PASSWORD, 900)]
    assert feed_all([*bots, *typo])[11:] == []
    invalid = [line(60, SshKind.INVALID_USER, 901), line(61, SshKind.FAILED_PASSWORD, 901)]
    assert feed_all([*bots, *invalid])[11:] == []
    second = [*typo, line(65, SshKind.FAILED_PASSWORD, 900)]
    assert [f.client for f in feed_all([*bots, *second])[11:]] == [admin]
    other = [*typo, line(90, SshKind.FAILED_PASSWORD, 902)]
    assert [f.client for f in feed_all([*bots, *other])[11:]] == [admin]


def test_a_member_that_failed_once_is_not_banned_at_the_crossing() -> None:
    """A client whose one failure makes the tenth is listed in the alert, not banned."""
    found = feed_all([ssh(float(i), "root", f"203.0.113.{i}") for i in range(10)])
    assert len(found) == 1
    assert len(found[0].clients) == 10


def test_no_credential_tried_is_no_failed_login() -> None:
    """A connection closed before authentication, or a rejected key, is not a failed login."""
    bots = [ssh(0.5, f"g{i}", f"203.0.113.{i}") for i in range(10)]
    bots += [ssh(1.0 + i, "root", f"203.0.113.{i}") for i in range(10)]
    admin = "198.51.100.77"
    for kind in (SshKind.PREAUTH, SshKind.FAILED_PUBKEY, SshKind.NEGOTIATION):
        tail = [ssh(60, "root", admin, kind), ssh(61, "root", admin, kind)]
        assert feed_all([*bots, *tail])[11:] == [], kind
    tail = [ssh(60, "root", admin, SshKind.FAILED_PUBKEY)] * 2
    assert [f.client for f in feed_all([*bots, *tail], count_pubkey_failures=True)[11:]] == [admin]
    # nor does it name usernames tried
    closed = [ssh(float(i), f"user{i}", kind=SshKind.PREAUTH) for i in range(5)]
    assert feed(closed) == []
