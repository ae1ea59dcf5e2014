"""The detector contract: events in, findings out, with bounded memory.

A detector declares the event types it ``consumes``; the pipeline hands it the
events of each batch, from one thread, through ``observe_many(events)`` (whose
default calls ``observe(event)`` for each event of a consumed type; hot
detectors derive from :class:`BatchDetector`, write ``observe_many`` as one tight
loop and get ``observe`` from it). Time inside a detector is
the event's own ``ts`` (so replaying old logs gives the same answer as live), and
``expire(now)`` drops keys idle for longer than the window. Every per-key table is
capped (``max_keys``, evicting keys not seen lately first: see
:mod:`~aisentinel.detectors.window`), so no input can grow memory without limit.
State that several detectors need (the clients that authenticated) is kept once,
in the pipeline's :class:`~aisentinel.detectors.shared.SharedState` (see
``wants_shared`` and :meth:`Detector.share`). Each detector reports its own metrics
(:meth:`Detector.collect`, read at scrape time, never on the hot path).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from socket import AF_INET, AF_INET6, inet_pton
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from prometheus_client.core import Metric
from pydantic import ValidationInfo, field_validator

from aisentinel.configtypes import DEFAULT_MAX_KEYS, StrictModel
from aisentinel.detectors.common import (
    KEY_BUDGET,
    MaxKeys,
    PerKeyCount,
    Threshold,
    Window,
)
from aisentinel.detectors.window import DistinctWindows, EventWindows, RateWindows, RecentSet
from aisentinel.events import (
    AddressTarget,
    Event,
    Finding,
)
from aisentinel.metrics import counter, gauge
from aisentinel.registry import Registry

if TYPE_CHECKING:
    from aisentinel.detectors.shared import SharedState


@runtime_checkable
class Unquiet(Protocol):
    """A holder of quiet periods that :meth:`Detector.unquiet` ends: the window stores
    of :mod:`~aisentinel.detectors.window` and the helpers built on them."""

    def unquiet(self) -> None:
        """End every key's quiet period."""


@runtime_checkable
class Forget(Protocol):
    """A per-key store whose keys' evidence :meth:`Detector.forget` drops: the counting
    window stores of :mod:`~aisentinel.detectors.window` and the helpers built on them
    (not :class:`~aisentinel.detectors.window.RecentSet`, whose marks may be good news:
    a login)."""

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts, as if never seen; how many."""


_SEEN_MAX = 1 << 18
"""Most keys a :class:`Forgiven` remembers its answer for (then it starts afresh): the
distinct keys of every default table (87,000 a table: addresses, IPv6 ``/64`` keys,
usernames) fit."""


def _blocks(targets: Iterable[AddressTarget], width: int) -> _Ranges:
    """The networks of ``targets`` of the family ``width`` bits wide (32, 128) as
    integer ranges sorted by start: ``(starts, ends, prefix lengths)``. A network inside
    another is left out (networks are nested or apart, never overlapping), so the one
    that may hold an address is the last that starts at or before it."""
    starts: list[int] = []
    ends: list[int] = []
    lengths: list[int] = []
    spans = sorted(
        (int(t.address), t.prefixlen) for t in targets if t.address.max_prefixlen == width
    )
    for start, length in spans:  # by start, the widest first
        if ends and start <= ends[-1]:
            continue
        starts.append(start)
        ends.append(start | ((1 << (width - length)) - 1))
        lengths.append(length)
    return starts, ends, lengths


_Ranges = tuple[list[int], list[int], list[int]]


class Forgiven:
    """The addresses and networks an operator forgave (an unban, an allow), as a test
    of a detector's key: true when the key is one of their addresses (any spelling: an
    IPv4-mapped one is its IPv4 address) or a network inside one of them (the ``/64`` an
    IPv6 client is counted under, see :func:`~.common.client_key`). Anything else (a
    username, an API key id) is not forgiven.

    Called for every key of every table of every detector, on the pipeline's thread (a
    default set of tables may hold 700,000 keys), so a key costs about the same for 1
    target as for the 4,096 an engine queues: the targets are held as integer ranges
    (:func:`_blocks`), and a key is parsed once into an integer and looked up by
    bisection. The parsing is ``inet_pton``'s, which takes the spellings ``ipaddress``
    takes (dotted quads without leading zeros, RFC 4291 text) without building an
    object (``ip_network`` took 25 us a key). The answer is remembered per key (the
    same client is a key of many tables); a key that cannot be an address the targets
    hold (no digit first and no colon, or no IPv4 target) is turned away unparsed."""

    __slots__ = ("_seen", "_v4", "_v6", "targets")

    def __init__(self, targets: Iterable[AddressTarget]) -> None:
        self.targets = tuple(targets)
        self._v4 = _blocks(self.targets, 32)
        self._v6 = _blocks(self.targets, 128)
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.targets)

    def __call__(self, key: str) -> bool:
        known = self._seen.get(key)
        if known is None:
            known = self._learn(key)
        return known

    def _learn(self, key: str) -> bool:
        """Whether ``key`` is an address or network inside a forgiven one, remembered."""
        seen = self._seen
        if len(seen) >= _SEEN_MAX:
            seen.clear()
        seen[key] = False
        if ":" not in key and not (self._v4[0] and key[:1].isdigit()):
            return False  # no IPv4 address (or no IPv4 target): a name, a key id
        slash = key.find("/")
        head = key if slash < 0 else key[:slash]
        try:
            if ":" in head:
                if "%" in head:  # a zone: the address without it
                    head, _, zone = head.partition("%")
                    if not zone or slash >= 0:
                        return False
                value = int.from_bytes(inet_pton(AF_INET6, head))
                width = 128
            else:
                value = int.from_bytes(inet_pton(AF_INET, head))
                width = 32
        except (OSError, ValueError):  # not an address (ValueError: a NUL, a non-ASCII digit)
            return False
        prefixlen = width
        if slash >= 0:
            bits = key[slash + 1 :]
            if not (bits.isascii() and bits.isdigit()) or int(bits) > width:
                return False
            prefixlen = int(bits)
        if width == 128 and value >> 32 == 0xFFFF and prefixlen >= 96:  # IPv4-mapped
            width, value, prefixlen = 32, value & 0xFFFFFFFF, prefixlen - 96
        starts, ends, lengths = self._v4 if width == 32 else self._v6
        i = bisect_right(starts, value) - 1
        known = seen[key] = i >= 0 and value <= ends[i] and lengths[i] <= prefixlen
        return known


@runtime_checkable
class Restart(Protocol):
    """A holder of per-client counts that :meth:`Detector.ban_ended` restarts: the long
    windows (:class:`~aisentinel.detectors.slow.SlowCounters`)."""

    def restart(self, key: str) -> None:
        """``key``'s ban ended: count it afresh."""


_HOLDS: dict[tuple[type, type], bool] = {}
"""(attribute type, holder protocol) -> whether the type is such a holder: a protocol's
``isinstance`` check walks its attributes at each call (about 0.1 ms), too slow to run
for each attribute of each detector for each ban that ends."""


def _holders(detector: object, protocol: Any) -> list[Any]:
    """The attributes of ``detector`` that are ``protocol`` holders (the type check cached
    per type; the caller annotates the list with the protocol, which mypy does not take
    as a ``type[P]``)."""
    out = []
    for value in vars(detector).values():
        key = (type(value), protocol)
        holds = _HOLDS.get(key)
        if holds is None:
            holds = _HOLDS[key] = isinstance(value, protocol)
        if holds:
            out.append(value)
    return out


class DetectorConfigBase(StrictModel):
    """Keys every ``[detectors.<name>]`` table has."""

    enabled: bool = True
    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    """Most keys (addresses, usernames) tracked at once per table; keys not seen lately go
    first (second chance, see :mod:`~aisentinel.detectors.window`)."""

    @field_validator("*")
    @classmethod
    def _fits_budget(cls, value: Any, info: ValidationInfo) -> Any:
        """An exact-window threshold times ``max_keys`` stays within :data:`KEY_BUDGET`."""
        field = cls.model_fields.get(info.field_name or "")
        max_keys = info.data.get("max_keys")
        if field is None or not isinstance(max_keys, int):
            return value
        if any(isinstance(m, PerKeyCount) for m in field.metadata):
            need = max_keys * (value + 5)
            if need > KEY_BUDGET:
                raise ValueError(
                    f"with max_keys = {max_keys} one table may keep {need} timestamps "
                    f"({need * 8 / (1 << 30):.1f} GiB); keep max_keys x (threshold + 5) "
                    f"at most {KEY_BUDGET} (2 GiB): lower max_keys or this threshold"
                )
        return value


class WindowedConfig(DetectorConfigBase):
    """A threshold of events within a sliding window."""

    threshold: Threshold = 5
    window: Window = 600.0


class Detector(ABC):
    """One detection rule family. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]
    consumes: ClassVar[tuple[type, ...]]
    wants_shared: ClassVar[bool] = False
    """When true, the constructor also takes a keyword ``shared`` (a
    :class:`~aisentinel.detectors.shared.SharedState`, or ``None`` for state of its
    own) and hands it to :meth:`share`; the pipeline later binds the detector to the
    state it owns (calling :meth:`share` again), so that a reload keeps that state."""

    def __init__(self, config: DetectorConfigBase) -> None:
        self.config = config
        self._carried = (0, 0)
        """``(evicted, overflows)`` of the detectors this one replaced at reloads."""

    def share(self, shared: SharedState) -> None:  # noqa: B027 - only wants_shared override it
        """Register with ``shared`` (drop any earlier registration: this may be called
        again, with the same or another state, whenever the pipeline's set of
        detectors changes). Detectors with ``wants_shared`` override it."""

    @abstractmethod
    def observe(self, event: Event) -> Finding | None:
        """Account for one event; a finding when a threshold is crossed, else ``None``."""

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        """Account for a batch of events, in order: ``(index, finding)`` for each event
        that made a finding, in event order.

        Events of types the detector does not consume are skipped. Same state changes
        and findings as calling :meth:`observe` on each consumed event in order, which
        is what this default does.
        """
        consumes = self.consumes
        observe = self.observe
        return [
            (i, found)
            for i, event in enumerate(events)
            if isinstance(event, consumes) and (found := observe(event)) is not None
        ]

    @abstractmethod
    def expire(self, now: float) -> int:
        """Forget keys idle since before ``now - window``; returns how many were dropped."""

    @abstractmethod
    def tracked_keys(self) -> int:
        """How many keys the detector holds now (exported as a gauge)."""

    def window_counts(self) -> tuple[int, int]:
        """``(evicted, overflows)``: keys pushed out of a full table, and hits a full
        rate table could not count.

        Non-zero means ``max_keys`` is small for the traffic (or a flood of addresses is
        under way). The default adds up the counters of the window stores
        (:mod:`~aisentinel.detectors.window`) held as the detector's attributes; read at
        scrape time and by ``aisentinel status``, never on the hot path.
        """
        evicted = overflow = 0
        for value in vars(self).values():
            if isinstance(value, RateWindows):
                overflow += value.overflow
            elif isinstance(value, EventWindows | DistinctWindows | RecentSet):
                evicted += value.evicted
        return evicted, overflow

    def unquiet(self) -> None:
        """End every key's quiet period: a key still over its threshold is reported
        again at its next event.

        Called by the pipeline when the decisions those reports led to ended early (an
        unban by hand, a reload that dropped bans, the ban brake released, a new
        ``[decisions]`` table), so that an attack still under way is decided again at
        once, not when the quiet period would have ended (up to a window later).

        The default calls ``unquiet()`` on each window store, or other holder of quiet
        periods (:class:`Unquiet`), held as the detector's attributes; a detector that
        keeps them elsewhere overrides it (rules: a dict of tables).
        """
        holders: list[Unquiet] = _holders(self, Unquiet)
        for value in holders:
            value.unquiet()

    def forget(self, forgiven: Forgiven) -> None:
        """An operator forgave the clients ``forgiven`` accepts (``aisentinel unban``,
        ``aisentinel allow``): drop what was counted of them, so that their next event
        is counted from nothing rather than re-ban them at once on a window still full
        of the evidence the unban forgave (fail2ban drops an address's failures when it
        bans it, so its ``unbanip`` leaves none either). Events after the call count as
        usual: an attacker who goes on is banned again by the usual rules.

        Called by the pipeline at its next batch after the unban or allow. The default
        calls ``forget(forgiven)`` on each counting store (:class:`Forget`) held as the
        detector's attributes; a detector that keeps evidence of a client elsewhere (in
        a :class:`~aisentinel.detectors.window.RecentSet`, under a key that is not the
        client's, or as the values of another key) overrides it."""
        holders: list[Forget] = _holders(self, Forget)
        for value in holders:
            value.forget(forgiven)

    def ban_ended(self, key: str) -> None:
        """The ban of the client counted under ``key`` (:func:`~.common.client_key`)
        ended in its time: count it afresh from now.

        Called by the pipeline for each ban that expires. A detector reports a key once
        per window and stays quiet for that window; the long windows (a day) outlast a
        first ban (an hour), so a client back from its ban would be reported again only
        a day after the first report. While the ban is in force nothing changes: one
        finding per client per decision.

        The default calls ``restart(key)`` on each holder of such counts
        (:class:`Restart`) held as the detector's attributes."""
        holders: list[Restart] = _holders(self, Restart)
        for value in holders:
            value.restart(key)

    def bans_ended(self, keys: Iterable[str]) -> None:
        """:meth:`ban_ended` for each of ``keys``, in one call: what the pipeline calls
        when bans expire (a wave of thousands at once). The default restarts each key on
        each :class:`Restart` holder, found once for all the keys; a detector that
        overrides :meth:`ban_ended` (and not this) gets that called for each key."""
        if type(self).ban_ended is not Detector.ban_ended:
            for key in keys:
                self.ban_ended(key)
            return
        holders: list[Restart] = _holders(self, Restart)
        for key in keys:
            for holder in holders:
                holder.restart(key)

    def counted(self) -> tuple[int, int]:
        """``(evicted, overflows)`` since the start: :meth:`window_counts` plus what the
        detectors of the same name that this one replaced at reloads had counted (see
        :meth:`carry_over`); what the counters export."""
        evicted, overflow = self.window_counts()
        return evicted + self._carried[0], overflow + self._carried[1]

    def carry_over(self, old: Detector) -> None:
        """Go on counting where ``old``, the detector of the same name this one replaces
        at a reload (its table changed), stopped: counters never go back while the
        daemon runs. Detectors with counters of their own add them too."""
        self._carried = old.counted()

    def evictions(self) -> int:
        """Evicted keys plus uncounted hits (see :meth:`counted`), in one number."""
        return sum(self.counted())

    def collect(self) -> Iterator[Metric]:
        """This detector's metric families, built from the state it keeps (at scrape time)."""
        labels = {"detector": self.name}
        evicted, overflow = self.counted()
        yield gauge(
            "aisentinel_detector_tracked_keys",
            "Keys (addresses, usernames) a detector holds in its windows.",
            labels,
            self.tracked_keys(),
        )
        yield counter(
            "aisentinel_detector_evictions",
            "Keys a detector dropped from a full table (max_keys reached) before they "
            "went idle: an address flood, or max_keys too small for the traffic.",
            labels,
            evicted,
        )
        yield counter(
            "aisentinel_detector_overflows",
            "Hits a detector's full rate table could not count (max_keys reached).",
            labels,
            overflow,
        )


class BatchDetector(Detector):
    """A detector written batch-first: its :meth:`observe_many` is the rule, and
    :meth:`observe` is that rule applied to a batch of one event."""

    def observe(self, event: Event) -> Finding | None:
        found = self.observe_many((event,))
        return found[0][1] if found else None

    @abstractmethod
    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        """See :meth:`Detector.observe_many`."""


REGISTRY: Registry[type[Detector]] = Registry("detector")
"""Detectors by name; each plug-in module registers itself in one line."""
