"""ai_recon: AI endpoint reconnaissance by unauthenticated clients."""

from __future__ import annotations

from aisentinel.detectors.ai_recon import AiReconConfig, AiReconDetector
from aisentinel.events import Event, Finding, HttpRequest, Severity

T0 = 1_764_000_000.0


def req(
    ts: float,
    path: str,
    *,
    client: str = "203.0.113.3",
    status: int = 200,
    user: str | None = None,
    key_id: str | None = None,
) -> HttpRequest:
    return HttpRequest(T0 + ts, "nginx", client, "GET", path, status, 0, user, "ua", key_id=key_id)


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = AiReconDetector(AiReconConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_three_recon_requests_are_medium() -> None:
    """Three recon requests in 10 minutes from an unknown client: MEDIUM with the paths."""
    found = feed([req(0, "/api/tags"), req(60, "/v1/models?x=1"), req(120, "/API/PS")])
    assert len(found) == 1
    assert found[0].severity is Severity.MEDIUM
    assert found[0].evidence == ("/api/tags", "/v1/models", "/api/ps")


def test_two_or_other_paths_do_not_fire() -> None:
    """Two recon requests, or ordinary paths, give nothing."""
    assert feed([req(0, "/api/tags"), req(1, "/api/tags")]) == []
    assert feed([req(float(i), "/api/chat") for i in range(20)]) == []


def test_authenticated_clients_are_not_counted() -> None:
    """A client that made an authenticated request (user or key id, status < 400) is trusted."""
    auth = [req(0, "/api/chat", key_id="k1")]
    probes = [req(float(i), "/api/tags") for i in range(1, 10)]
    assert feed([*auth, *probes]) == []
    failed_auth = [req(0, "/api/chat", key_id="k1", status=401)]
    assert len(feed([*failed_auth, *probes])) == 1


def test_authentication_expires_after_ttl() -> None:
    """Trust ends authenticated_ttl after the last authenticated request."""
    events: list[Event] = [req(0, "/", user="alice")]
    events += [req(100 + i, "/api/version") for i in range(3)]
    assert len(feed(events, authenticated_ttl="1m")) == 1
    assert feed(events, authenticated_ttl="1h") == []


def test_ipv6_and_expiry() -> None:
    """IPv6 probes are tracked and expire when idle."""
    det = AiReconDetector(AiReconConfig())
    for i in range(3):
        found = det.observe(req(float(i), "/api/show", client="2001:db8::3"))
    assert found is not None
    det.observe(req(5, "/", client="2001:db8::4", user="bob"))
    assert det.tracked_keys() == 2
    assert det.expire(T0 + 86_500) == 2
