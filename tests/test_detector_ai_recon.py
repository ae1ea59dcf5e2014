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


MISSES = ("/api/tags", "/api/ps", "/api/version", "/v1/models", "/api/show", "/api/config")
"""Distinct recon endpoints, for probes answered with errors."""


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = AiReconDetector(AiReconConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_three_recon_requests_are_medium() -> None:
    """Three recon misses in 10 minutes from an unknown client: MEDIUM with the paths."""
    found = feed(
        [
            req(0, "/api/tags", status=404),
            req(60, "/v1/models?x=1", status=401),
            req(120, "/API/PS", status=404),
        ]
    )
    assert len(found) == 1
    assert found[0].severity is Severity.MEDIUM
    assert found[0].evidence == ("/api/tags", "/v1/models", "/api/ps")


def test_two_or_other_paths_do_not_fire() -> None:
    """Two recon requests, or ordinary paths, give nothing."""
    assert feed([req(0, "/api/tags"), req(1, "/api/tags")]) == []
    assert feed([req(float(i), "/api/chat") for i in range(20)]) == []


def test_one_endpoint_refused_again_and_again_is_polling_not_recon() -> None:
    """An uptime monitor without a key getting 401 on /v1/models every minute is no
    recon (http_auth judges it); three distinct endpoints refused are."""
    monitor = [req(60.0 * i, "/v1/models", status=401) for i in range(30)]
    assert feed(monitor) == []
    found = feed([req(float(i), p, status=401) for i, p in enumerate(MISSES[:3])])
    assert [f.count for f in found] == [3]


def test_authenticated_clients_are_not_counted() -> None:
    """A client that made an authenticated request (user or key id, status < 400) is trusted."""
    auth = [req(0, "/api/chat", key_id="k1")]
    probes = [req(float(i), MISSES[i % 3], status=404) for i in range(1, 10)]
    assert feed([*auth, *probes]) == []
    failed_auth = [req(0, "/api/chat", key_id="k1", status=401)]
    assert len(feed([*failed_auth, *probes])) == 1


def test_authentication_expires_after_ttl() -> None:
    """Trust ends authenticated_ttl after the last authenticated request."""
    events: list[Event] = [req(0, "/", user="alice")]
    events += [req(100 + i, MISSES[i], status=404) for i in range(3)]
    assert len(feed(events, authenticated_ttl="1m")) == 1
    assert feed(events, authenticated_ttl="1h") == []


def test_ipv6_and_expiry() -> None:
    """IPv6 probes are tracked and expire when idle."""
    det = AiReconDetector(AiReconConfig())
    for i in range(3):
        found = det.observe(req(float(i), MISSES[i], client="2001:db8::3", status=404))
    assert found is not None
    det.observe(req(5, "/", client="2001:db8::4", user="bob"))
    # misses and sweep windows of the prober, and the authenticated client
    assert det.tracked_keys() == 3
    # ... which is held once, with both of its marks
    assert det.expire(T0 + 86_500) == 3


def test_sdk_client_listing_models_then_chatting_is_not_recon() -> None:
    """Successful /v1/models calls are not recon; successful inference makes a client known."""
    sdk = [req(float(i), "/v1/models") for i in range(5)]
    chat = [req(10.0, "/v1/chat/completions")]
    chat = [chat[0]._replace(method="POST")]
    later = [req(20.0 + i, MISSES[i], status=404) for i in range(5)]
    assert feed([*sdk, *chat, *later]) == []


def test_sweep_of_distinct_endpoints_fires() -> None:
    """sweep_paths distinct recon endpoints answered 200 from an unknown client: MEDIUM."""
    paths = ["/api/tags", "/api/ps", "/api/version", "/v1/models", "/api/config", "/docs"]
    found = feed([req(float(i), p) for i, p in enumerate(paths)])
    assert [f.count for f in found] == [5]  # the sixth is in the quiet period
    assert feed([req(float(i), p) for i, p in enumerate(paths)], sweep_paths=7) == []


def test_success_where_others_were_refused_is_authentication() -> None:
    """A 2xx on a METHOD path two other clients got 401 on marks the client as
    authenticated."""
    refused = [
        req(0, "/api/v1/chats/", client="198.51.100.9", status=401),
        req(0.5, "/api/v1/chats/", client="198.51.100.10", status=401),
    ]
    signed_in = req(1, "/api/v1/chats/")
    probes = [req(2.0 + i, MISSES[i], status=404) for i in range(3)]
    assert feed([*refused, signed_in, *probes]) == []
    # the same 200 before anyone was refused proves nothing
    assert len(feed([signed_in, *refused, *probes])) == 1


def test_one_clients_401s_or_a_cors_403_do_not_hide_a_sweep() -> None:
    """An uptime monitor's 401s (one client, however many) on GET /v1/models, or one
    browser extension's CORS 403 on /api/tags, make no later 200 there an
    authentication: the sweep answered 200 is still reported."""
    sweep = [
        req(100.0 + i, p)
        for i, p in enumerate(["/api/tags", "/api/version", "/api/ps", "/v1/models", "/api/show"])
    ]
    monitor = [req(60.0 * i, "/v1/models", client="198.51.100.200", status=401) for i in range(3)]
    cors = [req(0, "/api/tags", client="10.1.0.31", status=403)]
    for before in (monitor, cors):
        found = [f for f in feed([*before, *sweep]) if f.client == "203.0.113.3"]
        assert [f.count for f in found] == [5]


def test_401s_on_one_virtual_host_protect_no_other() -> None:
    """With the host in the log, a path refused on one virtual host is no protected path
    of another: a 200 there is no authentication."""
    refused = [
        req(0, "/api/v1/chats/", client=c, status=401)._replace(host="chat.example")
        for c in ("198.51.100.9", "198.51.100.10")
    ]
    probes = [req(2.0 + i, MISSES[i], status=404) for i in range(3)]
    same = req(1, "/api/v1/chats/")._replace(host="chat.example")
    other = req(1, "/api/v1/chats/")._replace(host="ollama.example")
    assert feed([*refused, same, *probes]) == []
    assert len(feed([*refused, other, *probes])) == 1


def test_open_webui_page_load_of_a_signed_in_user_is_not_a_sweep() -> None:
    """A browser loading Open WebUI (its session user answered 200) is known at once,
    before anyone was refused there; the same calls answered 401 are still a sweep."""
    page = ["/api/config", "/api/v1/auths/", "/api/models", "/api/v1/users/user/settings"]
    page += ["/api/v1/configs/banners", "/api/v1/models/", "/api/version"]
    assert feed([req(float(i), p) for i, p in enumerate(page)]) == []
    scan = [req(float(i), p, status=200 if i == 0 else 401) for i, p in enumerate(page)]
    found = feed(scan)
    assert found
    assert {f.severity for f in found} == {Severity.MEDIUM}


def test_inference_later_in_a_batch_does_not_trust_earlier_probes() -> None:
    """Marks follow event order within one batch (as a line-by-line run)."""
    det = AiReconDetector(AiReconConfig())
    probes = [req(float(i), MISSES[i], status=404) for i in range(3)]
    chat = req(5, "/api/chat")._replace(method="POST")
    found = det.observe_many([*probes, chat])
    assert [i for i, _ in found] == [2]
