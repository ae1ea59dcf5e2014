"""Long windows beside a detector's fast one: slow brute force and repeat offenders.

One try every few minutes never crosses "5 in 10 minutes", but crosses "10 in an
hour" or "20 in a day". :class:`SlowCounters` keeps every configured long window (in
the detector's table: ``slow_thresholds`` and ``slow_windows``, at most
:data:`MAX_SLOW_WINDOWS`) in one exact :class:`~.window.MultiEventWindows` store,
capped at ``slow_max_keys`` clients: one key index and one slot per client for all
the long windows, and one ring of the last ``max(slow_thresholds)`` failure times,
so memory stays bounded: ``slow_max_keys x (5 + 3 x windows + max threshold)``
doubles at most (the default 20,000 clients, two windows and 20 events: under
5 MiB), and a client with one or two failures costs 5 doubles. The answers are those
of one :class:`~.window.EventWindows` table per window, except under expiry (a
client goes when it is idle for longer than the longest window; a shorter window
keeps its evidence samples of a client idle past it, see the store) and so under
eviction: a client evicted leaves every long window at once, and a client with two
or more failures is never evicted by clients with one each (an address flood meant to
push a slow attacker out: see the store).

A long-window finding is a finding like any other: the decision engine records its
ban, so it counts as an offence and the next ban of that address is escalated
(``escalation_factor``), across windows and detectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, NamedTuple, Self

from pydantic import Field, model_validator

from aisentinel.configtypes import StrictModel
from aisentinel.detectors.common import MaxKeys, Threshold, Window
from aisentinel.detectors.window import Crossing, MultiEventWindows, RecentSet

MAX_SLOW_WINDOWS = 4


class SlowConfig(StrictModel):
    """The long-window keys a detector's table adds (a mixin of its config model)."""

    slow_thresholds: Annotated[tuple[Threshold, ...], Field(max_length=MAX_SLOW_WINDOWS)] = (
        10,
        20,
    )
    """Failures within the matching ``slow_windows`` entry; ``[]`` turns them off."""
    slow_windows: Annotated[tuple[Window, ...], Field(max_length=MAX_SLOW_WINDOWS)] = (
        3600.0,
        86_400.0,
    )
    """The long windows (default 10 failures in 1h and 20 in 24h)."""
    slow_max_keys: Annotated[MaxKeys, Field(le=200_000)] = 20_000
    """Clients the long windows track at once (one store for all of them): 1-200,000
    (with the largest threshold, 1000, the store stays within
    :data:`~.common.KEY_BUDGET`)."""

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if len(self.slow_thresholds) != len(self.slow_windows):
            raise ValueError(
                f"slow_thresholds has {len(self.slow_thresholds)} entries and slow_windows"
                f" {len(self.slow_windows)}: give one threshold per window"
            )
        return self

    def slow(self) -> list[tuple[int, float]]:
        """The long windows as ``(threshold, window)`` pairs."""
        return list(zip(self.slow_thresholds, self.slow_windows, strict=True))


class SlowCrossing(NamedTuple):
    """A long window crossed: the crossing and that window's threshold and length."""

    crossing: Crossing
    threshold: int
    window: float


class SlowCounters:
    """Every long window in one exact store; :meth:`hit` counts an event in each.

    A long window does not report a client the fast window reported within that
    long window (a fast attack crosses "10 in an hour" too): only the slow ones, and
    the ones that come back after their ban (:meth:`restart`: counted afresh from the
    ban's end)."""

    __slots__ = ("_reported", "_store")

    def __init__(self, windows: Sequence[tuple[int, float]], max_keys: int) -> None:
        self._store = MultiEventWindows(windows, max_keys) if windows else None
        longest = max((window for _, window in windows), default=1.0)
        self._reported = RecentSet(longest, max_keys)
        """Clients the fast window reported, and when."""

    def hit(
        self, key: str, ts: float, sample: str | None = None, *, fast: bool = False
    ) -> SlowCrossing | None:
        """Count one event for ``key`` (``fast``: the fast window crossed on it); the
        first long window it makes cross, unless the fast window reported ``key``
        within that long window."""
        found: SlowCrossing | None = None
        store = self._store
        if store is not None:
            crossings = store.hit(key, ts, sample)
            if any(crossings):
                i, crossing = next((i, c) for i, c in enumerate(crossings) if c is not None)
                found = SlowCrossing(crossing, store.thresholds[i], store.windows[i])
        if fast:
            self._reported.add(key, ts)
            return None
        if found is not None and self._reported.last(key) >= ts - found.window:
            return None
        return found

    def unquiet(self) -> None:
        """End the long windows' quiet periods and forget which clients the fast window
        reported: after an unban, any long window the client crosses reports it."""
        if self._store is not None:
            self._store.unquiet()
        self._reported.clear()

    def restart(self, key: str) -> None:
        """``key``'s ban ended: count it afresh from now, in every long window, whether or
        not the fast window reported it. A long window's quiet period (as long as the
        window: a day) would otherwise outlast the ban (an hour at first) and give a
        client back from its ban a day of free tries; its failures before the ban were
        acted on by it, so they count no more, as fail2ban forgets a client's failures
        when it bans it."""
        if self._store is not None:
            self._store.clear(key)
        self._reported.discard(key)

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every client ``match`` accepts from the long windows and from the clients
        the fast window reported (an operator forgave it); how many (both sets)."""
        dropped = self._reported.discard_matching(match)
        if self._store is not None:
            dropped += self._store.forget(match)
        return dropped

    def forgive(self, key: str) -> None:
        """``key`` logged in: its failures so far are a user's typos, not a slow attack."""
        if self._store is not None:
            self._store.clear(key)

    def expire(self, now: float) -> int:
        """Drop clients idle for longer than the longest window; how many (both sets)."""
        dropped = self._reported.expire(now)
        if self._store is not None:
            dropped += self._store.expire(now)
        return dropped

    def __len__(self) -> int:
        """Clients held: in the long windows, plus those the fast window reported."""
        held = len(self._reported)
        if self._store is not None:
            held += len(self._store)
        return held

    def __bool__(self) -> bool:
        return self._store is not None

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has events in the long windows (what :meth:`forgive` clears)."""
        return self._store is not None and key in self._store

    @property
    def evicted(self) -> int:
        """Clients pushed out of the full long-window store or reported set."""
        evicted = self._reported.evicted
        if self._store is not None:
            evicted += self._store.evicted
        return evicted
