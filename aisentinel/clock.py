"""The one injectable clock.

Every component that needs the time takes a :class:`Clock`; nothing calls
``time.time()`` directly, and timed waits (polls, grace periods) go through
:meth:`Clock.wait`, so tests drive time with :class:`FakeClock` and need no sleeps.
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

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds of :meth:`monotonic` time
        have passed; whether the event is set (``threading.Event.wait`` semantics)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


FAKE_WAIT_SLICE = 0.005
"""Real seconds a :meth:`FakeClock.wait` sleeps between looks at its event (which
another thread may set without telling the clock)."""


class FakeClock:
    """A clock that only moves when told to; thread-safe.

    :meth:`wait` returns as soon as the event is set, or once the clock has been
    moved past the timeout (``advance``/``set`` wake waiters at once); never because
    real time passed.
    """

    def __init__(self, start: float = 1_764_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._lock = threading.Condition()
        self.waiting = 0
        """Threads inside :meth:`wait` now."""
        self.waits = 0
        """Calls of :meth:`wait` so far: a test that moves the clock can wait until a
        reader has finished the turn it woke for and is waiting again."""

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
            self._lock.notify_all()

    def set(self, epoch: float) -> None:
        """Jump wall time to ``epoch`` (monotonic moves by the same amount if forward)."""
        with self._lock:
            if epoch > self._now:
                self._mono += epoch - self._now
            self._now = epoch
            self._lock.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._lock:
            deadline = self._mono + timeout
            self.waiting += 1
            self.waits += 1
            try:
                while not event.is_set() and self._mono < deadline:
                    self._lock.wait(FAKE_WAIT_SLICE)
            finally:
                self.waiting -= 1
            return event.is_set()


class EventClock:
    """Wall time that follows the events being replayed, and monotonic time with it.

    ``replay`` sets it to each finding's timestamp, so decisions about old logs carry
    the time of the attack, and their TTLs are measured from then. It never goes
    backwards, so :meth:`monotonic` is the same reading: what measures intervals on
    the monotonic clock (the storm brake's minute and its calm) follows the logs too.
    :meth:`wait` waits in real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))

    def set(self, epoch: float) -> None:
        """Move to ``epoch`` if it is later than the current time (never backwards)."""
        self._now = max(self._now, epoch)
