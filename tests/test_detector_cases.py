"""Data-driven detector cases: tests/detector_cases/*.toml (events in, findings out).

A case names a ``detector``, optional ``[config]``, ``[[events]]`` (``type`` ssh,
http, auth_failure or rate_limited; ``ts`` seconds from the start; ``repeat`` and
``every`` expand one entry into several) and the ``[[expect]]``ed findings (``ts``,
``severity``, ``client``, ``count``). Adding a case needs no code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from aisentinel.clock import FakeClock
from aisentinel.detectors import REGISTRY, DetectorConfigBase
from aisentinel.detectors.base import Detector
from aisentinel.events import (
    Event,
    HttpAuthFailure,
    HttpRateLimited,
    HttpRequest,
    SshEvent,
    SshKind,
)

CASES = sorted((Path(__file__).parent / "detector_cases").glob("*.toml"))
T0 = 1_764_000_000.0


def _event(spec: dict[str, Any], ts: float) -> Event:
    kind = spec["type"]
    client = spec["client"]
    if kind == "ssh":
        return SshEvent(ts, "auth", client, SshKind(spec["kind"]), spec.get("user"), 22)
    if kind == "http":
        return HttpRequest(
            ts,
            "nginx",
            client,
            spec.get("method", "GET"),
            spec["path"],
            spec["status"],
            0,
            spec.get("user"),
            spec.get("user_agent", ""),
            key_id=spec.get("key_id"),
            body=spec.get("body"),
        )
    if kind == "auth_failure":
        return HttpAuthFailure(ts, "nginx-error", client, spec.get("user"), "password_mismatch")
    if kind == "rate_limited":
        return HttpRateLimited(ts, "nginx-error", client, spec.get("zone"))
    raise ValueError(f"unknown event type {kind!r}")


def _events(case: dict[str, Any]) -> list[Event]:
    events = [
        _event(spec, T0 + spec["ts"] + n * spec.get("every", 0))
        for spec in case["events"]
        for n in range(spec.get("repeat", 1))
    ]
    return sorted(events, key=lambda e: e.ts)


def _build(name: str, config: dict[str, Any] | None = None) -> Detector:
    entry = REGISTRY.get(name)
    model = entry.config_model.model_validate(config or {})
    assert isinstance(model, DetectorConfigBase)
    return entry.factory(model, FakeClock(T0))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    """The case's events give exactly the expected findings."""
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    detector = _build(case["detector"], case.get("config"))
    findings = [f for e in _events(case) if (f := detector.observe(e)) is not None]
    got = [(f.ts - T0, f.severity.label, f.client, f.count) for f in findings]
    want = [(e["ts"], e["severity"], e.get("client"), e["count"]) for e in case.get("expect", [])]
    assert got == want


def test_cases_exist() -> None:
    """The case folder is not empty (a glob typo would silently test nothing)."""
    assert len(CASES) >= 3


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_in_one_batch(path: Path) -> None:
    """observe_many over all of a case's events gives the same findings, at the right indices."""
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    one_by_one = _build(case["detector"], case.get("config"))
    batched = _build(case["detector"], case.get("config"))
    events = _events(case)
    want = [(i, f) for i, e in enumerate(events) if (f := one_by_one.observe(e)) is not None]
    assert batched.observe_many(events) == want
    assert batched.tracked_keys() == one_by_one.tracked_keys()


def test_batch_skips_types_not_consumed() -> None:
    """Every detector ignores events it does not consume in a mixed batch, keeping indices."""
    mixed: list[Event] = [
        SshEvent(T0 + i, "auth", "192.0.2.7", SshKind.FAILED_PASSWORD, f"u{i}", 22)
        if i % 2
        else HttpRequest(T0 + i, "nginx", "192.0.2.7", "GET", "/.env", 404, 0, None, "x")
        for i in range(40)
    ]
    for entry in REGISTRY:
        one_by_one = _build(entry.name)
        batched = _build(entry.name)
        want = [
            (i, f)
            for i, e in enumerate(mixed)
            if isinstance(e, one_by_one.consumes) and (f := one_by_one.observe(e)) is not None
        ]
        assert batched.observe_many(mixed) == want, entry.name
