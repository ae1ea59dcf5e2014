"""Pieces the detector plug-ins share: constrained config types and finding text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from aisentinel.configtypes import Duration, format_duration
from aisentinel.detectors.window import Crossing
from aisentinel.events import (
    Event,
    Finding,
    HttpAuthFailure,
    HttpRateLimited,
    HttpRequest,
    Severity,
    SshEvent,
)

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


class _LastBatch:
    """The answer of :func:`all_requests` for the batch it last looked at."""

    __slots__ = ("answer", "batch", "size")

    def __init__(self) -> None:
        self.batch: Sequence[Event] | None = None
        self.size = -1
        self.answer = False


_last = _LastBatch()


def all_requests(events: Sequence[Event]) -> bool:
    """Whether every event of ``events`` is an :class:`~aisentinel.events.HttpRequest`
    (what an access-log parser's batch holds), so that a detector may take a loop
    without per-event type checks.

    The pipeline hands every detector the same batch object, so the answer is
    computed once per batch: the last batch looked at (a reference to it and its
    length) and its answer are remembered. A batch must not be changed in place
    between two detectors' calls (the pipeline never does).
    """
    last = _last
    if events is last.batch and len(events) == last.size:
        return last.answer
    answer = bool(events) and all(map(HttpRequest.__instancecheck__, events))
    last.batch = events
    last.size = len(events)
    last.answer = answer
    return answer


ClientEvent = SshEvent | HttpRequest | HttpAuthFailure | HttpRateLimited
"""Events that name a client address."""


def client_finding(
    detector: str,
    crossing: Crossing,
    event: ClientEvent,
    *,
    severity: Severity,
    what: str,
    threshold: int,
    window: float,
    evidence: tuple[str, ...] | None = None,
) -> Finding:
    """The usual finding: about ``event.client``, at ``event.ts``, from ``event.source``."""
    return crossing_finding(
        crossing,
        ts=event.ts,
        detector=detector,
        severity=severity,
        client=event.client,
        key=event.client,
        what=what,
        threshold=threshold,
        window=window,
        source=event.source,
        evidence=evidence,
    )
