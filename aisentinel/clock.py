"""The one injectable clock.

Every component that needs the time takes a :class:`Clock`; nothing calls
``time.time()`` directly, so tests drive time with :class:`FakeClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds (``now``) and a monotonic reading (``monotonic``)."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and latency)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to; thread-safe."""

    def __init__(self, start: float = 1_764_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def set(self, epoch: float) -> None:
        """Jump wall time to ``epoch`` (monotonic moves by the same amount if forward)."""
        with self._lock:
            if epoch > self._now:
                self._mono += epoch - self._now
            self._now = epoch


class EventClock:
    """Wall time that follows the events being replayed; monotonic time is real.

    ``replay`` sets it to each finding's timestamp, so decisions about old logs carry
    the time of the attack, and their TTLs are measured from then.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return time.monotonic()

    def set(self, epoch: float) -> None:
        """Move to ``epoch`` if it is later than the current time (never backwards)."""
        self._now = max(self._now, epoch)
