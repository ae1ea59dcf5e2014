"""rate_abuse: request rates per client and per API key, and limit_req hits."""

from __future__ import annotations

from aisentinel.detectors.rate_abuse import RateAbuseConfig, RateAbuseDetector
from aisentinel.events import Event, Finding, HttpRateLimited, HttpRequest, Severity

T0 = 1_764_000_000.0


def req(
    ts: float,
    path: str = "/api/chat",
    client: str = "203.0.113.4",
    key_id: str | None = None,
    status: int = 200,
) -> HttpRequest:
    return HttpRequest(
        T0 + ts, "nginx", client, "POST", path, status, 10, None, "ua", key_id=key_id
    )


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = RateAbuseDetector(RateAbuseConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_ai_endpoint_rate_crosses_at_threshold() -> None:
    """The 120th AI request within a minute gives a MEDIUM finding; 119 do not."""
    found = feed([req(i * 0.4) for i in range(120)])
    assert len(found) == 1
    assert found[0].severity is Severity.MEDIUM
    assert found[0].count == 120
    assert found[0].evidence == ("/api/chat",)
    assert feed([req(i * 0.4) for i in range(119)]) == []


def test_non_ai_paths_only_count_globally() -> None:
    """Static requests never hit the AI limit; the global limit (HIGH) still applies."""
    assert feed([req(i * 0.01, "/static/app.js") for i in range(1000)]) == []
    found = feed([req(i * 0.01, "/static/app.js") for i in range(1200)])
    assert [f.severity for f in found] == [Severity.HIGH]


def test_ai_prefixes_configurable() -> None:
    """ai_paths replaces the default prefixes."""
    events: list[Event] = [req(i, "/custom/infer") for i in range(3)]
    assert len(feed(events, ai_paths=["/custom/"], ai_threshold=3)) == 1
    assert (
        feed([req(i, "/api/chat") for i in range(3)], ai_paths=["/custom/"], ai_threshold=3) == []
    )


def test_per_key_limit_reports_the_key() -> None:
    """An API key used from many addresses is reported per key, with no client to ban."""
    events: list[Event] = [
        req(i * 0.05, key_id="k-123", client=f"192.0.2.{i % 50}") for i in range(600)
    ]
    found = feed(events)
    assert len(found) == 1
    assert found[0].client is None
    assert found[0].key == "key_id:k-123"
    assert found[0].clients == ("192.0.2.49",)


def test_a_key_id_many_keys_share_is_not_counted_per_key() -> None:
    """Key ids every token shares ("eyJhbGci": a JWT's header under the old map, and
    "short") add up no one key's requests: no per-key finding."""
    for shared in ("eyJhbGci", "short"):
        events: list[Event] = [
            req(i * 0.05, key_id=shared, client=f"192.0.2.{i % 50}") for i in range(600)
        ]
        assert feed(events) == []


def test_limit_req_hits() -> None:
    """Ten nginx limit_req rejections within a minute give a MEDIUM finding."""
    events: list[Event] = [HttpRateLimited(T0 + i, "err", "2001:db8::9", "api") for i in range(10)]
    found = feed(events)
    assert [(f.client, f.severity) for f in found] == [("2001:db8::9", Severity.MEDIUM)]
    assert feed(events[:9]) == []


def test_simultaneous_crossings_are_both_reported() -> None:
    """When one request crosses two limits, the second is reported on the next request."""
    events: list[Event] = [req(i * 0.01, status=401) for i in range(5)]
    found = feed(events, ai_threshold=3, global_threshold=3)
    assert [f.severity for f in found] == [Severity.HIGH, Severity.MEDIUM]


def test_steady_below_limit_and_expiry() -> None:
    """A steady rate below the limits never fires; clients still idle at the next
    housekeeping after the one that followed their requests are expired."""
    det = RateAbuseDetector(RateAbuseConfig())
    assert all(det.observe(req(float(i), status=503)) is None for i in range(600))  # 60/min
    assert det.tracked_keys() == 2
    assert det.expire(T0 + 700) == 0  # requests came since the last housekeeping
    assert det.expire(T0 + 710) == 2


def _severities(events: list[Event], **kw: object) -> set[Severity]:
    """The severities of the findings ``events`` give, through ``observe_many`` in
    batches of 500 (the pipeline's hot path) and one event at a time."""
    det = RateAbuseDetector(RateAbuseConfig.model_validate(kw))
    batched = {
        f.severity
        for i in range(0, len(events), 500)
        for _, f in det.observe_many(events[i : i + 500])
    }
    assert batched == {f.severity for f in feed(events, **kw)}
    return batched


def test_heavy_served_ai_traffic_is_never_a_flood() -> None:
    """A RAG indexer at 40 embeddings a second, an office NAT of developers with their
    own keys whose completions are often cancelled (499), and an eval harness on one
    key: the AI and per-key counters report them (MEDIUM), the flood counter (HIGH) never."""
    indexer: list[Event] = [req(i / 40, "/api/embed", client="10.0.3.20") for i in range(4800)]
    office: list[Event] = [
        req(i / 25, "/v1/completions", key_id=f"dev{i % 50}", status=(200, 200, 499)[i % 3])
        for i in range(3000)
    ]
    harness: list[Event] = [
        req(i / 25, "/v1/chat/completions", key_id="eval", status=200) for i in range(3000)
    ]
    for events in (indexer, office, harness):
        assert _severities(events) == {Severity.MEDIUM}


def test_flood_of_refused_or_failing_ai_requests_is_high() -> None:
    """Inference requests refused (401, 403, 429) or failing (5xx) still count toward
    the flood limit: an unauthenticated or overloading flood is banned."""
    for status in (401, 403, 429, 502):
        events: list[Event] = [req(i * 0.04, status=status) for i in range(1300)]
        assert Severity.HIGH in _severities(events), status
        keyed: list[Event] = [req(i * 0.04, key_id="k", status=status) for i in range(1300)]
        assert Severity.HIGH in _severities(keyed), status


def test_flood_of_other_paths_is_high_whatever_the_status() -> None:
    """A flood of GET / (200) or of missing paths (404) from one address is HIGH."""
    for path, status in (("/", 200), ("/nope.php", 404)):
        events: list[Event] = [req(i * 0.04, path, status=status) for i in range(1300)]
        assert _severities(events) == {Severity.HIGH}


def test_mixed_batches_leave_served_ai_requests_out_of_the_flood_count() -> None:
    """A batch holding limit_req events too (the general loop) counts the same way."""
    det = RateAbuseDetector(RateAbuseConfig())
    limited = HttpRateLimited(T0, "err", "192.0.2.77", "api")
    events: list[Event] = [limited, *(req(i / 40, "/api/embed") for i in range(2400))]
    assert {f.severity for _, f in det.observe_many(events)} == {Severity.MEDIUM}
    det = RateAbuseDetector(RateAbuseConfig())
    events = [limited, *(req(i / 40, "/api/embed", status=401) for i in range(2400))]
    assert Severity.HIGH in {f.severity for _, f in det.observe_many(events)}


def test_get_flood_under_an_ai_prefix_is_high() -> None:
    """A flood of GETs under an AI prefix answered 200 (a web app's catch-all page:
    ``GET /api/chatXYZ`` on Open WebUI) is not served inference: HIGH, as any flood."""
    events: list[Event] = [
        HttpRequest(
            T0 + i * 0.04, "nginx", "203.0.113.4", "GET", "/api/chatXYZ", 200, 10, None, "ua"
        )
        for i in range(1300)
    ]
    assert Severity.HIGH in _severities(events)
