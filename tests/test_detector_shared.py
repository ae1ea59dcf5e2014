"""One set of authenticated clients shared by ai_recon and model_exploit."""

from __future__ import annotations

from aisentinel.detectors import build_detectors
from aisentinel.detectors.ai_recon import AiReconConfig, AiReconDetector
from aisentinel.detectors.base import Detector
from aisentinel.detectors.model_exploit import ModelExploitConfig, ModelExploitDetector
from aisentinel.detectors.shared import SharedState
from aisentinel.events import Event, Finding, HttpAuthFailure, HttpRequest, Severity

T0 = 1_764_000_000.0
CLIENT = "203.0.113.9"


RECON = ("/api/tags", "/api/ps", "/api/version")
"""Three distinct recon endpoints: ai_recon counts misses per endpoint."""


def req(ts: float, path: str, *, key_id: str | None = None, status: int = 200) -> HttpRequest:
    return HttpRequest(T0 + ts, "nginx", CLIENT, "POST", path, status, 0, None, "ua", key_id=key_id)


def pair() -> tuple[Detector, Detector]:
    """ai_recon and model_exploit as build_detectors makes them (sharing state)."""
    by_name = {d.name: d for d in build_detectors({})}
    return by_name["ai_recon"], by_name["model_exploit"]


def pipeline(detectors: tuple[Detector, ...], batches: list[list[Event]]) -> list[Finding]:
    """What the pipeline does: each detector sees each whole batch in turn."""
    return [f for batch in batches for det in detectors for _, f in det.observe_many(batch)]


def test_build_detectors_shares_one_set() -> None:
    """A client that authenticated is held once, and both detectors count it."""
    recon, model = pair()
    assert recon._requests is model._requests  # type: ignore[attr-defined]
    pipeline((recon, model), [[req(0, "/api/chat", key_id="k1")]])
    assert recon.tracked_keys() == model.tracked_keys() == 1


def test_marks_follow_event_order_within_a_batch() -> None:
    """A model call before the client's first authenticated request in the same batch is
    still HIGH, although ai_recon saw the whole batch first: same findings as unshared."""
    batch: list[Event] = [
        req(0, "/api/pull"),
        req(0, "/api/tags"),
        req(1, "/api/chat", key_id="k1"),
        req(2, "/api/pull"),
        req(3, "/api/tags"),
    ]
    shared = pipeline(pair(), [batch])
    alone = pipeline(
        (
            AiReconDetector(AiReconConfig()),
            ModelExploitDetector(ModelExploitConfig()),
        ),
        [batch],
    )
    assert [(f.detector, f.ts - T0, f.severity) for f in shared] == [
        ("model_exploit", 0.0, Severity.HIGH)
    ]
    assert shared == alone


def test_observe_one_event_at_a_time_shares_too() -> None:
    """observe() per event, detector after detector, gives the per-batch answers."""
    recon, model = pair()
    events = [req(0, "/api/pull"), req(1, "/", key_id="k1"), req(2, "/api/pull")]
    found = [f for e in events for det in (recon, model) if (f := det.observe(e)) is not None]
    assert [(f.detector, f.ts - T0) for f in found] == [("model_exploit", 0.0)]


def test_each_reader_applies_its_own_ttl() -> None:
    """Readers with different authenticated_ttl share the set; each trusts for its own ttl."""
    shared = SharedState()
    recon = AiReconDetector(AiReconConfig(authenticated_ttl=60.0), shared=shared)
    model = ModelExploitDetector(ModelExploitConfig(authenticated_ttl=3600.0), shared=shared)
    batch: list[Event] = [req(0, "/", key_id="k1")]
    batch += [req(100 + i, path, status=404) for i, path in enumerate(RECON)]
    batch += [req(200, "/api/pull")]
    found = pipeline((recon, model), [batch])
    assert [f.detector for f in found] == ["ai_recon"]
    recon.expire(T0 + 1000)
    assert model.tracked_keys() == 1  # the set holds clients for the longest ttl
    assert model.expire(T0 + 3601) == 1  # one client, with both of its marks
    assert recon.tracked_keys() == 0


def test_a_reader_alone_marks_every_batch() -> None:
    """A detector reading the shared set alone still learns who authenticated."""
    _, model = pair()
    found = pipeline((model,), [[req(0, "/api/chat", key_id="k1")], [req(5, "/api/pull")]])
    assert found == []


def test_every_path_reader_shares_one_index() -> None:
    """rate_abuse, scanning, ai_recon and model_exploit register their path tests with one
    index, and each gets its own bit."""
    by_name = {d.name: d for d in build_detectors({})}
    readers = [by_name[n] for n in ("rate_abuse", "scanning", "ai_recon", "model_exploit")]
    index = readers[0]._requests  # type: ignore[attr-defined]
    assert all(d._requests is index for d in readers)  # type: ignore[attr-defined]
    bits = {d._bit for d in readers}  # type: ignore[attr-defined]
    assert len(bits) == 4
    masks = index.facts([req(0, "/api/tags"), req(1, "/.env"), req(2, "/x")], object()).masks
    assert masks[0] == by_name["ai_recon"]._bit  # type: ignore[attr-defined]
    assert masks[1] == by_name["scanning"]._bit  # type: ignore[attr-defined]
    assert masks[2] == 0


def test_mixed_batch_gives_the_findings_of_separate_batches() -> None:
    """A batch mixing HTTP requests with other events is answered as if split by type."""
    failure = HttpAuthFailure(T0, "nginx-error", CLIENT, "admin", "password mismatch")
    requests = [req(float(i), path, status=404) for i, path in enumerate(RECON)]
    mixed: list[Event] = [failure, *requests]
    together = pipeline(tuple(build_detectors({})), [mixed])
    apart = pipeline(tuple(build_detectors({})), [[failure], list(requests)])
    assert [(f.detector, f.ts) for f in together] == [(f.detector, f.ts) for f in apart]
    assert [f.detector for f in together] == ["ai_recon"]
