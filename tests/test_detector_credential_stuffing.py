"""credential_stuffing: many usernames per client, many clients per username."""

from __future__ import annotations

from aisentinel.detectors.credential_stuffing import (
    CredentialStuffingConfig,
    CredentialStuffingDetector,
)
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
    """Both tables expire idle keys."""
    det = CredentialStuffingDetector(CredentialStuffingConfig())
    det.observe(ssh(0, "root"))
    assert det.tracked_keys() == 2
    assert det.expire(T0 + 601) == 2
