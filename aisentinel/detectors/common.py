"""Pieces the detector plug-ins share: constrained config types and finding text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from aisentinel.configtypes import PositiveDuration, format_duration
from aisentinel.detectors.window import Crossing
from aisentinel.events import (
    AddressTarget,
    Event,
    Finding,
    HttpAuthFailure,
    HttpRateLimited,
    HttpRequest,
    Severity,
    SshEvent,
    canonical_address,
)

MAX_THRESHOLD = 1000
"""Most events (or distinct values) an exact window counts per key: it keeps that many
timestamps per key, so memory and per-event work grow with it."""

MAX_RATE_THRESHOLD = 1_000_000
"""Most events per window a rate limit counts (a counter per key, any size costs the same)."""

MAX_KEYS = 10_000_000
"""Most keys a detector table tracks (about 100-200 bytes each before per-key state)."""

KEY_BUDGET = 1 << 28
"""Most timestamps one exact-window table may reserve: ``max_keys * (threshold + 5)``
doubles, 2 GiB."""


class PerKeyCount:
    """Annotation marker: the threshold of an exact window, whose per-key state grows
    with it; :class:`~aisentinel.detectors.base.DetectorConfigBase` checks it against
    ``max_keys`` and :data:`KEY_BUDGET`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PerKeyCount()"


Threshold = Annotated[int, Field(ge=1, le=MAX_THRESHOLD), PerKeyCount()]
"""Events (or distinct values) within the window that make a finding, counted exactly: 1-1000."""

RateThreshold = Annotated[int, Field(ge=1, le=MAX_RATE_THRESHOLD)]
"""Events per window of an approximate rate limit (one counter per key): 1-1,000,000."""

Window = PositiveDuration
"""A sliding window or TTL: more than 0s, at most 366d, such as ``"10m"``."""

MaxKeys = Annotated[int, Field(ge=1, le=MAX_KEYS)]
"""A per-detector cap on tracked keys: 1-10,000,000."""

HttpStatus = Annotated[int, Field(ge=100, le=599)]
"""An HTTP status code, 100-599."""


_IPV6_KEY_PREFIX = [64]
"""The prefix length IPv6 clients are counted under (see :func:`client_key`)."""
_V6_KEYS: dict[str, str] = {}
_V6_KEYS_MAX = 16_384


def set_ipv6_key_prefix(prefix: int) -> None:
    """Count IPv6 clients per ``/prefix`` network from now on (the pipeline sets the
    decision stage's ``ipv6_ban_prefix``; 128: every address on its own)."""
    if not 1 <= prefix <= 128:
        raise ValueError(f"IPv6 prefix {prefix} is not within 1-128")
    if prefix != _IPV6_KEY_PREFIX[0]:
        _IPV6_KEY_PREFIX[0] = prefix
        _V6_KEYS.clear()


SHARED_KEY_IDS = frozenset({"short"})
"""``key_id`` values that many keys share: the shipped map's ``short`` (a key too short to
slice). Besides these, a value that starts with ``eyJ`` is the start of a JWT's header
(``eyJhbGci`` is ``{"alg``), which an older map logged for every JWT."""


def key_identity(key_id: str | None) -> str | None:
    """``key_id`` when it names one key, else ``None``: no key id, or one that many keys
    share (:data:`SHARED_KEY_IDS`, a JWT header's first characters: every Open WebUI
    session under the map shipped before this one). Such a value still says that a key
    was sent; it tells nobody apart, so nothing is counted or learned per key under it."""
    if key_id is None or key_id in SHARED_KEY_IDS or key_id.startswith("eyJ"):
        return None
    return key_id


def client_key(client: str) -> str:
    """What a detector counts ``client`` under: an IPv4 address (or anything that is
    not an IPv6 address) itself, an IPv6 address its ``/64`` network
    (``2001:db8:1:2::/64``; the prefix is the decision stage's ``ipv6_ban_prefix``),
    save a NAT64 address (one IPv4 client behind a gateway: :func:`~aisentinel.events.is_nat64`),
    which is itself, as the decision stage bans it, and an IPv4-mapped one (its IPv4
    address).

    One host holds a whole /64 and can take a new address from it for every
    connection: counted per address, 60 addresses of one /64 making two attempts each
    would never reach a threshold. The decision stage bans the /64 anyway (or the
    address alone when the network holds an allowlisted address), so the count and
    the ban cover the same thing. Cached per address (bounded)."""
    if ":" not in client:
        return client
    key = _V6_KEYS.get(client)
    if key is None:
        try:
            host = AddressTarget.host(canonical_address(client))
        except ValueError:
            key = client
        else:
            key = host.grouped(_IPV6_KEY_PREFIX[0]).text  # the decision stage's grouping
        if len(_V6_KEYS) >= _V6_KEYS_MAX:
            _V6_KEYS.clear()
        _V6_KEYS[client] = key
    return key


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
    topic: str | None = None,
) -> Finding:
    """The finding for a crossing, with a message like
    ``"7 failed ssh logins in 2m13s (threshold 5 in 10m)"``; its topic is ``what``
    unless given."""
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
        topic=what if topic is None else topic,
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
    topic: str | None = None,
    per_address: bool = False,
) -> Finding:
    """The usual finding: about ``event.client``, counted under its
    :func:`client_key` (named in the message when it is a network), or with
    ``per_address`` under the address itself, at ``event.ts``, from ``event.source``.

    Counts of failures and probes go by network (one host rotating its addresses);
    counts of volume (request rates, 404 bursts, recon by browsers) go by address
    (``per_address``): a /64 may be a LAN of hundreds of machines."""
    client = event.client
    key = client if per_address else client_key(client)
    return crossing_finding(
        crossing,
        ts=event.ts,
        detector=detector,
        severity=severity,
        client=client,
        key=key,
        what=what if key == client else f"{what} from {key}",
        threshold=threshold,
        window=window,
        source=event.source,
        evidence=evidence,
        topic=what if topic is None else topic,
    )
