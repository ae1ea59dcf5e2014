"""Whether a line source's log times stand off the daemon's clock (a log in another zone).

A log whose times carry no zone (classic syslog, the nginx error log) is read in the
daemon's local zone unless its source names one (``timezone``). Written in another zone
(a container's, in UTC, on a host that is not), every event is hours old or ahead, and
the detector windows (a minute, ten) expire it before it counts: the source parses every
line and nothing is seen. :class:`SourceClock` notices that from the pipeline's batches:
the newest event of each batch against the clock at the time it is handled, one
subtraction a batch. A source read live hands on a line within seconds of its writing, so
its offset is near 0; a source whose offset stays :data:`OFFSET_LIMIT` or more away, in
one direction and steady (within :data:`SPREAD`), for :data:`SUSTAIN` and
:data:`MIN_BATCHES` batches, is flagged. A backlog being read (a first start from the
beginning, a restart after downtime) is old too, but catches up: its offset shrinks by
more than the spread and the count starts again.
"""

from __future__ import annotations

from dataclasses import dataclass

OFFSET_LIMIT = 900.0
"""Seconds (15 minutes) a source's newest event time must stand off the clock to count."""

SUSTAIN = 600.0
"""Seconds (10 minutes, of the clock) the offset must hold before the source is flagged."""

SPREAD = 300.0
"""Most the offsets of one stretch may differ (5 minutes): a zone's offset is steady, a
backlog's shrinks as it is read."""

MIN_BATCHES = 3
"""Fewest batches with events a stretch must hold before the source is flagged."""


@dataclass(slots=True)
class SourceClock:
    """One source's offset: its newest event time minus the clock, per batch."""

    offset: float | None = None
    """The latest batch's: its newest (last) event's time minus the clock then; ``None``
    before a batch with events."""
    flagged: bool = False
    """Whether the offset has held (see the module) and holds."""
    _since: float = 0.0
    _low: float = 0.0
    _high: float = 0.0
    _batches: int = 0

    def observe(self, ts: float, now: float) -> bool:
        """Take a batch whose newest event is at ``ts``, handled at ``now``; whether the
        source is flagged by it (it was not before)."""
        offset = ts - now
        self.offset = offset
        if -OFFSET_LIMIT < offset < OFFSET_LIMIT:
            self._batches = 0
            self.flagged = False
            return False
        low, high = min(self._low, offset), max(self._high, offset)
        if self._batches == 0 or (offset > 0) != (self._low > 0) or high - low > SPREAD:
            self._since, self._low, self._high, self._batches = now, offset, offset, 1
            self.flagged = False
            return False
        self._low, self._high = low, high
        self._batches += 1
        if self.flagged or self._batches < MIN_BATCHES or now - self._since < SUSTAIN:
            return False
        self.flagged = True
        return True

    def advice(self, local_offset: int) -> str:
        """What the offset means and the likely fix, in one line; ``local_offset``: the
        daemon's local zone's UTC offset now (seconds east)."""
        offset = self.offset or 0.0
        way = "behind" if offset < 0 else "ahead of"
        text = f"its log times stand {_span(abs(offset))} {way} the clock"
        writer = local_offset + round(offset)  # the zone the stamps were written in, if one
        whole = round(writer / 900) * 900
        if abs(writer - whole) <= 120:  # zones are whole quarter hours off UTC
            name = "UTC" if whole == 0 else f"a zone at UTC{_utc(whole)}"
            text += (
                f": a log written in {name}, read as local time? set the source's "
                f'timezone (e.g. timezone = "{"UTC" if whole == 0 else "Area/City"}")'
            )
        else:
            text += ": is the writer's clock set right?"
        return text + "; detector windows expire its events before they count"


def _span(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _utc(offset: int) -> str:
    sign = "+" if offset >= 0 else "-"
    minutes = abs(offset) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
