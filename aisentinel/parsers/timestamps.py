"""Fast, cached log timestamp -> epoch conversion (no ``strptime`` per line).

Log lines written within the same second share their timestamp text, so each
converter keeps a bounded ``text -> epoch`` dict (cleared when it grows past
:data:`CACHE_LIMIT`) and computes misses with :func:`calendar.timegm` (or
:func:`time.mktime` for formats written in the server's local time) and a month
table. Every function returns ``None`` for text it cannot read, and for a time
outside ``MIN_TS <= ts < MAX_TS`` (which NaN never is); none raises.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable

CACHE_LIMIT = 4096
"""Entries a cache may hold before it is cleared."""

MONTHS = {
    "Jan": 1,
    "Feb": 2,
    "Mar": 3,
    "Apr": 4,
    "May": 5,
    "Jun": 6,
    "Jul": 7,
    "Aug": 8,
    "Sep": 9,
    "Oct": 10,
    "Nov": 11,
    "Dec": 12,
}

_DAY = 86400.0

MIN_TS = 946_684_800.0
"""2000-01-01T00:00:00Z: the earliest event time a parser accepts."""

MAX_TS = 4_102_444_800.0
"""2100-01-01T00:00:00Z: event times from here on are refused.

A time outside this window (or not finite) cannot come from a working server's
log; taken as an event it would poison detector windows (``1e308 - -1e308`` is
infinite) and date arithmetic downstream. Parsers treat such a line as unparsed."""


def _local_epoch(fields: tuple[int, int, int, int, int, int]) -> float:
    """Epoch of a wall-clock time (year, month, day, h, m, s) in the server's local zone."""
    return time.mktime((*fields, 0, 0, -1))


def _digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits only (``str.isdigit`` also takes ``"²"``, which
    ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _offset_seconds(text: str) -> int | None:
    """``+0100`` / ``-04:00`` / ``Z`` -> seconds east of UTC, or ``None``."""
    if text in ("Z", "z"):
        return 0
    if len(text) not in (5, 6) or text[0] not in "+-":
        return None
    digits = text[1:].replace(":", "")
    if len(digits) != 4 or not _digits(digits):
        return None
    seconds = int(digits[:2]) * 3600 + int(digits[2:]) * 60
    return -seconds if text[0] == "-" else seconds


class NginxTimeLocal:
    """``$time_local`` (``20/Jan/2015:19:53:28 +0100``) -> epoch, honouring the offset.

    Two caches: the whole text (hit by every line within a second), and the epoch
    of the minute with its offset (``20/Jan/2015:19:53 +0100``), so that a new second
    costs a few slices and one ``int`` rather than a ``timegm``.
    """

    __slots__ = ("_cache", "_minutes")

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}
        self._minutes: dict[str, float] = {}

    @property
    def cache(self) -> dict[str, float]:
        """The cache itself, for callers that inline the lookup on their hot path."""
        return self._cache

    def __call__(self, text: str) -> float | None:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        value = self._compute(text)
        if value is not None:
            if not MIN_TS <= value < MAX_TS:
                return None
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = value
        return value

    def _compute(self, text: str) -> float | None:
        # 01/Jan/2015:19:53:28 +0100 -> (minute of that day and offset) + seconds
        if len(text) != 26 or text[11] != ":" or text[17] != ":":
            return None
        sec = text[18:20]
        if not _digits(sec):
            return None
        minute_key = text[:17] + text[20:]
        minute = self._minutes.get(minute_key)
        if minute is None:
            hh, mm = text[12:14], text[15:17]
            if text[14] != ":" or not (_digits(hh) and _digits(mm)):
                return None
            day = self._day(text)
            if day is None:
                return None
            minute = day + int(hh) * 3600 + int(mm) * 60
            if len(self._minutes) >= CACHE_LIMIT:
                self._minutes.clear()
            self._minutes[minute_key] = minute
        return minute + int(sec)

    @staticmethod
    def _day(text: str) -> float | None:
        """Epoch of midnight of the day in ``text``, offset applied; ``None`` if unreadable."""
        if text[2] != "/" or text[6] != "/":
            return None
        month = MONTHS.get(text[3:6])
        offset = _offset_seconds(text[21:])
        parts = (text[0:2], text[7:11])
        if month is None or offset is None or not all(_digits(p) for p in parts):
            return None
        day, year = (int(p) for p in parts)
        try:
            return float(calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0)) - offset)
        except (ValueError, OverflowError):
            return None


class IsoTime:
    """RFC 3339 / ISO 8601 (``2026-11-25T23:14:30.123456+00:00``) -> epoch.

    The date-and-seconds part is cached; the fraction and offset are read per call.
    Text without an offset is taken as UTC.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}

    def __call__(self, text: str) -> float | None:
        if len(text) < 19 or text[10] not in "Tt ":
            return None
        base = text[:19]
        epoch = self._cache.get(base)
        if epoch is None:
            epoch = self._compute(base)
            if epoch is None:
                return None
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[base] = epoch
        rest = text[19:]
        if rest:
            if rest[0] in ".,":
                end = 1
                while end < len(rest) and _digits(rest[end]):
                    end += 1
                if end > 1:
                    epoch += float("0." + rest[1:end])
                rest = rest[end:]
            if rest:
                offset = _offset_seconds(rest)
                if offset is None:
                    return None
                epoch -= offset
        return epoch if MIN_TS <= epoch < MAX_TS else None

    @staticmethod
    def _compute(base: str) -> float | None:
        # 2026-11-25T23:14:30
        if base[4] != "-" or base[7] != "-" or base[13] != ":" or base[16] != ":":
            return None
        parts = (base[0:4], base[5:7], base[8:10], base[11:13], base[14:16], base[17:19])
        if not all(_digits(p) for p in parts):
            return None
        year, month, day, hh, mm, ss = (int(p) for p in parts)
        try:
            return float(calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0)))
        except (ValueError, OverflowError):
            return None


class NginxErrorTime:
    """nginx error-log time (``2015/01/21 10:56:10``, server local time) -> epoch.

    Caches the epoch of each minute (``2015/01/21 10:56``) and adds the seconds, so a
    log with a new second on every line still costs one dict lookup per line. Local
    time offsets change on whole minutes at most, so this is exact.
    """

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: dict[str, float] = {}

    def __call__(self, text: str) -> float | None:
        if len(text) != 19 or text[16] != ":":
            return None
        sec = text[17:19]
        if not _digits(sec):
            return None
        base = self._minutes.get(text[:16])
        if base is None:
            base = self._minute(text[:16])
            if base is None:
                return None
        value = base + int(sec)
        return value if MIN_TS <= value < MAX_TS else None

    def _minute(self, text: str) -> float | None:
        if text[4] != "/" or text[7] != "/" or text[10] != " " or text[13] != ":":
            return None
        parts = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16])
        if not all(_digits(p) for p in parts):
            return None
        try:
            year, month, day, hh, mm = (int(p) for p in parts)
            value = _local_epoch((year, month, day, hh, mm, 0))
        except (ValueError, OverflowError):
            return None
        if len(self._minutes) >= CACHE_LIMIT:
            self._minutes.clear()
        self._minutes[text] = value
        return value


class SyslogTime:
    """Classic syslog time (``Nov 25 23:14:30``, local time, no year) -> epoch.

    The year is inferred from ``now`` (the parser's clock): the current year,
    unless that puts the stamp more than a day in the future (then last year), or
    the next year is within a day of ``now`` (a ``Jan  1`` line read on Dec 31).
    Cached entries are dropped when a miss finds the cache older than an hour, so
    a long-running daemon never reuses a year guessed twelve months earlier.
    """

    __slots__ = ("_cache", "_filled_at", "_now")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._cache: dict[str, float] = {}
        self._filled_at = 0.0

    @property
    def cache(self) -> dict[str, float]:
        """The cache itself, for callers that inline the lookup on their hot path."""
        return self._cache

    def __call__(self, text: str) -> float | None:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        now = self._now()
        if len(self._cache) >= CACHE_LIMIT or now - self._filled_at > 3600.0:
            self._cache.clear()
            self._filled_at = now
        value = self._compute(text, now)
        if value is None or not MIN_TS <= value < MAX_TS:
            return None
        self._cache[text] = value
        return value

    @staticmethod
    def _compute(text: str, now: float) -> float | None:
        # "Nov 25 23:14:30" or "Nov 5 23:14:30" (some writers do not pad the day)
        month = MONTHS.get(text[:3])
        if month is None or len(text) < 14 or text[3] != " ":
            return None
        fields = text[4:].split()
        if len(fields) != 2 or not _digits(fields[0]) or len(fields[1]) != 8:
            return None
        clock = fields[1]
        if clock[2] != ":" or clock[5] != ":":
            return None
        hms = (clock[0:2], clock[3:5], clock[6:8])
        if not all(_digits(p) for p in hms):
            return None
        day = int(fields[0])
        hh, mm, ss = (int(p) for p in hms)
        year = time.gmtime(now).tm_year
        try:
            value = _local_epoch((year, month, day, hh, mm, ss))
            if value > now + _DAY:
                return _local_epoch((year - 1, month, day, hh, mm, ss))
            following = _local_epoch((year + 1, month, day, hh, mm, ss))
        except (ValueError, OverflowError):
            return None
        return following if following <= now + _DAY else value
