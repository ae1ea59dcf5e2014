"""Long windows beside a detector's fast one: slow brute force and repeat offenders.

One try every few minutes never crosses "5 in 10 minutes", but crosses "10 in an
hour" or "20 in a day". :class:`SlowCounters` keeps one exact
:class:`~.window.EventWindows` table per configured long window (in the
detector's table: ``slow_thresholds`` and ``slow_windows``, at most
:data:`MAX_SLOW_WINDOWS`), capped at ``slow_max_keys``
clients each, so memory stays bounded: ``slow_max_keys x (threshold + 5)``
doubles per window (the default 20,000 clients and 10 + 20 events: under 6 MiB).

A long-window finding is a finding like any other: the decision engine records its
ban, so it counts as an offence and the next ban of that address is escalated
(``escalation_factor``), across windows and detectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, NamedTuple, Self

from pydantic import Field, model_validator

from aisentinel.configtypes import StrictModel
from aisentinel.detectors.common import MaxKeys, Threshold, Window
from aisentinel.detectors.window import Crossing, EventWindows, RecentSet

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
    """Clients each long window tracks at once: 1-200,000 (with the largest threshold,
    1000, one table stays within :data:`~.common.KEY_BUDGET`)."""

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
    """One exact table per long window; :meth:`hit` counts an event in every one.

    A long window does not report a client the fast window reported within that
    long window (a fast attack crosses "10 in an hour" too): only the slow ones, and
    the ones that come back after their ban."""

    __slots__ = ("_reported", "_tables")

    def __init__(self, windows: Sequence[tuple[int, float]], max_keys: int) -> None:
        self._tables = [
            (threshold, window, EventWindows(threshold, window, max_keys))
            for threshold, window in windows
        ]
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
        for threshold, window, table in self._tables:
            crossing = table.hit(key, ts, sample)
            if crossing is not None and found is None:
                found = SlowCrossing(crossing, threshold, window)
        if fast:
            self._reported.add(key, ts)
            return None
        if found is not None and self._reported.last(key) >= ts - found.window:
            return None
        return found

    def forgive(self, key: str) -> None:
        """``key`` logged in: its failures so far are a user's typos, not a slow attack."""
        for _, _, table in self._tables:
            table.clear(key)

    def expire(self, now: float) -> int:
        tables = sum(table.expire(now) for _, _, table in self._tables)
        return tables + self._reported.expire(now)

    def __len__(self) -> int:
        return sum(len(table) for _, _, table in self._tables) + len(self._reported)

    def __bool__(self) -> bool:
        return bool(self._tables)

    @property
    def evicted(self) -> int:
        """Clients pushed out of full long-window tables."""
        return sum(table.evicted for _, _, table in self._tables) + self._reported.evicted
