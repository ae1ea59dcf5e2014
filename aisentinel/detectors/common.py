"""Pieces the detector plug-ins share: constrained config types and finding text."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from aisentinel.configtypes import Duration, format_duration
from aisentinel.detectors.window import Crossing
from aisentinel.events import Finding, Severity

Threshold = Annotated[int, Field(ge=1)]
"""How many events (or distinct values) within the window make a finding; at least 1."""

Window = Annotated[Duration, Field(gt=0)]
"""A sliding window: a positive duration such as ``"10m"``."""

MaxKeys = Annotated[int, Field(ge=1)]
"""A per-detector cap on tracked keys; at least 1."""


def _span(seconds: float) -> str:
    return format_duration(float(max(round(seconds), 0)))


def crossing_finding(
    crossing: Crossing,
    *,
    ts: float,
    detector: str,
    severity: Severity,
    client: str | None,
    key: str,
    what: str,
    threshold: int,
    window: float,
    source: str,
    evidence: tuple[str, ...] | None = None,
    clients: tuple[str, ...] = (),
) -> Finding:
    """The finding for a crossing, with a message like
    ``"7 failed ssh logins in 2m13s (threshold 5 in 10m)"``."""
    message = (
        f"{crossing.events} {what} in {_span(ts - crossing.first_ts)}"
        f" (threshold {threshold} in {format_duration(window)})"
    )
    return Finding(
        ts=ts,
        detector=detector,
        severity=severity,
        client=client,
        key=key,
        count=crossing.events,
        window=window,
        message=message,
        evidence=crossing.evidence if evidence is None else evidence,
        clients=clients,
        source=source,
    )
