"""Fast, cached log timestamp -> epoch conversion (no ``strptime`` per line).

Log lines written within the same second share their timestamp text, so each
converter keeps a bounded ``text -> epoch`` dict (cleared when it grows past
:data:`CACHE_LIMIT`). A miss (a new second, which under an attack storm is most
lines) costs a few slices and integer operations: the epoch of the day (or minute)
and its UTC offset are cached and the seconds added; no ``strptime``, ``timegm``
or ``mktime`` per second. Every function returns ``None`` for text it cannot read,
and for a time outside ``MIN_TS <= ts < MAX_TS`` (which NaN never is); none raises.

Formats in the writer's local time (classic syslog, the nginx error log) carry no
zone: they are read in the daemon's local zone, or in the zone a source names
(``timezone``, e.g. a container's logs written in UTC). :func:`local_day` reads the
zone's offsets for a whole day once, including a daylight-saving change inside it,
and the rule for wall-clock times a change makes ambiguous is the one of Python's
``fold=0`` (PEP 495): **the offset in force before the change applies** up to the
end of the repeated or skipped hour. In spring a skipped wall time (02:30 in
Europe/Berlin, which never shows on the clock) is read with winter time, i.e. as
03:30 summer time. In autumn the repeated hour (02:00-02:59) is read as its first
pass (summer time), unless its second pass (winter time, ``fold=1``) is meant: after
a stamp of the same log less than the change away, the reading nearer that stamp (a
log goes on forward, so a line of the second pass that follows the first pass's lines
is its second pass); without one, the second pass once the clock has passed it and is
nearer to it than the first (a line read as it is written, on a quiet log). Stamps of
the repeated hour are not cached: only they take this step. Formats that carry their
offset (nginx ``$time_local``, RFC 3339) are exact.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from datetime import datetime, tzinfo

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


_STEP = 6 * 3600
"""Sampling step when looking for offset changes: zones change at most twice a year."""

_REACH = 15 * 3600
"""Beyond the largest UTC offset (+14:00, -12:00): a local day lies within its wall-clock
midnight read as UTC, minus this, and the next midnight plus this."""

LocalDay = tuple[int, int, tuple[tuple[int, int, int], ...]]
"""A day in a zone: (its wall-clock midnight read as UTC, the UTC offset in force at
midnight, ((wall-clock second of the day, the offset before, the offset from then on),
...)). The tuple of changes is empty on every day without a daylight-saving change."""


def _gmtoff(t: int, zone: tzinfo | None) -> int:
    """The UTC offset at instant ``t`` in ``zone`` (``None``: the process's local zone)."""
    if zone is None:
        return time.localtime(t).tm_gmtoff
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _changes(lo: int, hi: int, zone: tzinfo | None) -> list[tuple[int, int, int]]:
    """Offset changes between UTC instants ``lo`` and ``hi``: (first instant of the new
    offset, offset before, offset after), in order; sampled every :data:`_STEP` and
    bisected to the second."""
    out: list[tuple[int, int, int]] = []
    a, oa = lo, _gmtoff(lo, zone)
    while a < hi:
        b = min(a + _STEP, hi)
        ob = _gmtoff(b, zone)
        while ob != oa:  # the first instant in (a, b] whose offset is not oa
            x, y = a, b
            while y - x > 1:
                mid = (x + y) // 2
                if _gmtoff(mid, zone) == oa:
                    x = mid
                else:
                    y = mid
            new = _gmtoff(y, zone)
            out.append((y, oa, new))
            a, oa = y, new
        a, oa = b, ob
    return out


def local_day(year: int, month: int, day: int, zone: tzinfo | None = None) -> LocalDay:
    """A zone's midnight and offsets for one day (see :data:`LocalDay`); ``zone``
    ``None`` is the process's local zone (``TZ``).

    An offset change at UTC instant ``T`` from ``before`` to ``after`` takes effect
    at the wall-clock time ``T + max(before, after)``: the end of the skipped hour in
    spring, the end of the repeated hour in autumn (the module's ``fold=0`` rule).
    Raises ``ValueError``/``OverflowError``/``OSError`` for a date the platform
    cannot represent.
    """
    wall0 = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
    offset = _gmtoff(wall0 - _REACH, zone)
    switches: list[tuple[int, int, int]] = []
    for at, before, after in _changes(wall0 - _REACH, wall0 + 86400 + _REACH, zone):
        second = at + max(before, after) - wall0
        if second <= 0:
            offset = after
        elif second < 86400:
            switches.append((second, before, after))
    return wall0, offset, tuple(switches)


def local_epoch(day: LocalDay, wall: int) -> int:
    """Epoch of the wall-clock second ``wall`` (seconds since midnight) of ``day``
    (``fold=0``: a repeated wall time is read as its first pass)."""
    base, offset, switches = day
    for second, _before, after in switches:
        if wall >= second:
            offset = after
    return base + wall - offset


def second_pass(day: LocalDay, wall: int) -> int | None:
    """Epoch of the second pass (``fold=1``) of the wall-clock second ``wall`` of
    ``day`` when a change back (autumn) repeats it, else ``None``."""
    for second, before, after in day[2]:
        if before > after and second - (before - after) <= wall < second:
            return day[0] + wall - after
    return None


_SKEW = 60
"""Seconds a stamp may lie ahead of the clock and still count as come (see
:func:`_second_pass_meant`)."""


def _second_pass_meant(first: int, later: int, newest: float, now: float) -> bool:
    """Whether a wall-clock stamp that a change back repeats means its second pass
    ``later`` rather than its first ``first``. After a stamp of the same log less than
    the change away (``newest``, its newest on a change day): the reading nearer to it
    (a log goes on forward). Without one: the second pass when it has come by ``now``
    (the clock; 0 for a converter without one) and lies nearer to it than the first (a
    line read as it is written)."""
    gap = later - first
    if first - gap < newest < later + gap:
        return later - newest < newest - first
    return later <= now + _SKEW and now - later < later - first


class _LocalDays:
    """A bounded ``(year, month, day) -> LocalDay`` cache for one zone."""

    __slots__ = ("_days", "_zone")

    def __init__(self, zone: tzinfo | None = None) -> None:
        self._days: dict[tuple[int, int, int], LocalDay] = {}
        self._zone = zone

    def get(self, year: int, month: int, day: int) -> LocalDay:
        key = (year, month, day)
        found = self._days.get(key)
        if found is None:
            found = local_day(year, month, day, self._zone)
            if len(self._days) >= CACHE_LIMIT:
                self._days.clear()
            self._days[key] = found
        return found


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

    Three caches: the whole text (hit by every line within a second), the epoch of
    the minute with its offset (``20/Jan/2015:19:53 +0100``), so that a new second
    costs a few slices and one ``int``, and the epoch of the day with its offset, so
    that a new minute costs two more ``int`` rather than a ``timegm``. The text
    carries its offset, so daylight-saving changes need nothing more.
    """

    __slots__ = ("_cache", "_days", "_minutes")

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}
        self._minutes: dict[str, float] = {}
        self._days: dict[str, float] = {}

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
            day_key = text[:11] + text[20:]
            day = self._days.get(day_key)
            if day is None:
                day = self._day(text)
                if day is None:
                    return None
                if len(self._days) >= CACHE_LIMIT:
                    self._days.clear()
                self._days[day_key] = day
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

    The date-and-seconds part is cached, and the epoch of each date, so a new second
    costs three ``int`` and an addition; the fraction and offset are read per call.
    Text without an offset is taken as UTC.
    """

    __slots__ = ("_cache", "_days")

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}
        self._days: dict[str, int] = {}

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

    def _compute(self, base: str) -> float | None:
        # 2026-11-25T23:14:30
        if base[13] != ":" or base[16] != ":":
            return None
        hms = base[11:13] + base[14:16] + base[17:19]
        if not _digits(hms):
            return None
        day = self._days.get(base[:10])
        if day is None:
            day = self._day(base[:10])
            if day is None:
                return None
        return float(day + int(hms[0:2]) * 3600 + int(hms[2:4]) * 60 + int(hms[4:6]))

    def _day(self, date: str) -> int | None:
        if date[4] != "-" or date[7] != "-":
            return None
        parts = (date[0:4], date[5:7], date[8:10])
        if not all(_digits(p) for p in parts):
            return None
        year, month, day = (int(p) for p in parts)
        try:
            value = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
        except (ValueError, OverflowError):
            return None
        if len(self._days) >= CACHE_LIMIT:
            self._days.clear()
        self._days[date] = value
        return value


class NginxErrorTime:
    """nginx error-log time (``2015/01/21 10:56:10``, server local time) -> epoch.

    Caches the epoch of each minute (``2015/01/21 10:56``), worked out from the
    cached :func:`local_day`, and adds the seconds, so a log with a new second on
    every line still costs one dict lookup per line. Local offsets change on whole
    minutes (every zone in tzdata since 1970), so this is exact; wall-clock times a
    daylight-saving change makes ambiguous follow the module's rule (``fold=0``, or
    the second pass after a later stamp). ``zone``: the zone the log is written in
    (``None``: the process's local zone); ``now``: the clock, read for a stamp of a
    repeated hour only.
    """

    __slots__ = ("_days", "_minutes", "_newest", "_now")

    def __init__(self, zone: tzinfo | None = None, now: Callable[[], float] | None = None) -> None:
        self._minutes: dict[str, float] = {}
        self._days = _LocalDays(zone)
        self._now = now
        self._newest = 0.0
        """The newest stamp read on a day with an offset change (for its repeated hour)."""

    def __call__(self, text: str) -> float | None:
        if len(text) != 19 or text[16] != ":":
            return None
        sec = text[17:19]
        if not _digits(sec):
            return None
        base = self._minutes.get(text[:16])
        if base is None:
            return self._minute(text[:16], int(sec))
        value = base + int(sec)
        return value if MIN_TS <= value < MAX_TS else None

    def _minute(self, text: str, sec: int) -> float | None:
        """The stamp of second ``sec`` of minute ``text``, the minute cached unless a
        change back repeats it (its reading then depends on the stamps before it)."""
        if text[4] != "/" or text[7] != "/" or text[10] != " " or text[13] != ":":
            return None
        parts = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16])
        if not all(_digits(p) for p in parts):
            return None
        year, month, mday, hh, mm = (int(p) for p in parts)
        wall = hh * 3600 + mm * 60
        try:
            day = self._days.get(year, month, mday)
        except (ValueError, OverflowError, OSError):
            return None
        minute = float(local_epoch(day, wall))
        value = minute + sec
        if day[2]:  # a change on this day: the rare path
            later = second_pass(day, wall)
            if later is not None and _second_pass_meant(
                int(value), later + sec, self._newest, self._now() if self._now else 0.0
            ):
                value = float(later + sec)
            self._newest = max(self._newest, value)
            if later is not None:  # a repeated minute: not cached
                return value if MIN_TS <= value < MAX_TS else None
        if len(self._minutes) >= CACHE_LIMIT:
            self._minutes.clear()
        self._minutes[text] = minute
        return value if MIN_TS <= value < MAX_TS else None


_Date = tuple[tuple[int, int, int] | None, LocalDay, LocalDay, LocalDay]
"""A syslog date (``Nov 25``) in last, this and next year: ``(flat, day, day, day)``;
``flat`` (the three midnights with their offset applied) when no day has a change."""


def _year_of(now: float) -> int:
    """The UTC year of ``now``, or 0 for a time the platform cannot represent."""
    try:
        return time.gmtime(now).tm_year
    except (ValueError, OverflowError, OSError):
        return 0


class SyslogTime:
    """Classic syslog time (``Nov 25 23:14:30``, local time, no year) -> epoch.

    The year is inferred from ``now`` (the parser's clock): the current year,
    unless that puts the stamp more than a day in the future (then last year), or
    the next year is within a day of ``now`` (a ``Jan  1`` line read on Dec 31).
    Cached entries are dropped when a miss finds the cache older than an hour, so
    a long-running daemon never reuses a year guessed twelve months earlier.

    A miss (a new second) looks the date text (``Nov 25``) up in a second cache that
    holds the :data:`LocalDay` of that date in last, this and next year, then costs
    one ``int``, a few divisions, additions and comparisons: no ``mktime``. Wall-clock times
    a daylight-saving change makes ambiguous follow the module's rule (``fold=0``, or the
    second pass after a later stamp). ``zone``: the zone the log is written in
    (``None``: the process's local zone).
    """

    __slots__ = ("_cache", "_dates", "_days", "_filled_at", "_newest", "_now", "_year")

    def __init__(self, now: Callable[[], float], zone: tzinfo | None = None) -> None:
        self._now = now
        self._cache: dict[str, float] = {}
        self._dates: dict[str, _Date] = {}
        self._days = _LocalDays(zone)
        self._filled_at = -_DAY
        self._year = 0
        self._newest = 0.0
        """The newest stamp read on a date with an offset change (for its repeated hour)."""

    @property
    def cache(self) -> dict[str, float]:
        """The cache itself, for callers that inline the lookup on their hot path."""
        return self._cache

    def __call__(self, text: str) -> float | None:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        now = self._now()
        if now - self._filled_at > 3600.0:
            self._cache.clear()
            self._filled_at = now
            year = _year_of(now)
            if year != self._year:
                self._dates.clear()
                self._year = year
        elif len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        # "Nov 25 23:14:30" or "Nov  5 23:14:30" or "Nov 5 23:14:30" (some writers do
        # not pad the day)
        if len(text) < 14 or text[-9] != " " or text[-6] != ":" or text[-3] != ":":
            return None
        hms = text[-8:-6] + text[-5:-3] + text[-2:]
        if not (hms.isdigit() and hms.isascii()):
            return None
        date = text[:-9]
        days = self._dates.get(date)
        if days is None:
            days = self._date(date)
            if days is None:
                return None
        n = int(hms)
        wall = n // 10000 * 3600 + n // 100 % 100 * 60 + n % 100
        limit = now + _DAY
        flat = days[0]
        if flat is not None:  # no offset change on the date in any of the three years
            value = flat[1] + wall
            if value > limit:
                value = flat[0] + wall
            elif flat[2] + wall <= limit:
                value = flat[2] + wall
        else:  # the rare path: a change on the date in one of the years
            day = days[2]
            value = local_epoch(day, wall)
            if value > limit:
                day = days[1]
                value = local_epoch(day, wall)
            elif (following := local_epoch(days[3], wall)) <= limit:
                day = days[3]
                value = following
            if day[2]:
                later = second_pass(day, wall)
                if later is not None and _second_pass_meant(value, later, self._newest, now):
                    value = later
                self._newest = max(self._newest, float(value))
                if later is not None:  # a repeated second: not cached
                    return float(value) if MIN_TS <= value < MAX_TS else None
        if not MIN_TS <= value < MAX_TS:
            return None
        self._cache[text] = stamp = float(value)
        return stamp

    def _date(self, date: str) -> _Date | None:
        """The date's day in last, this and next year; ``None`` if unreadable."""
        month = MONTHS.get(date[:3])
        mday = date[4:].lstrip(" ")
        if month is None or date[3:4] != " " or not 0 < len(mday) <= 2 or not _digits(mday):
            return None
        year, day, days = self._year, int(mday), self._days
        if year == 0:  # a clock the platform cannot read
            return None
        try:
            three = (
                days.get(year - 1, month, day),
                days.get(year, month, day),
                days.get(year + 1, month, day),
            )
        except (ValueError, OverflowError, OSError):
            return None
        flat = None
        if not any(d[2] for d in three):  # midnight minus its offset, for each year
            flat = (three[0][0] - three[0][1], three[1][0] - three[1][1], three[2][0] - three[2][1])
        found = (flat, *three)
        if len(self._dates) >= CACHE_LIMIT:
            self._dates.clear()
        self._dates[date] = found
        return found
