"""Local-time stamps (syslog, nginx error log) across daylight-saving changes, and the
cached conversion of a new second (no ``mktime``/``localtime`` per second)."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aisentinel.clock import FakeClock
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.timestamps import (
    IsoTime,
    NginxErrorTime,
    NginxTimeLocal,
    SyslogTime,
    local_day,
)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# zone, (year, month, day) of the spring and the autumn change
TRANSITIONS = [
    ("Europe/Berlin", (2025, 3, 30)),
    ("Europe/Berlin", (2025, 10, 26)),
    ("America/New_York", (2025, 3, 9)),
    ("America/New_York", (2025, 11, 2)),
]


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Sets TZ (and tzset) to the parametrized zone; restores the previous TZ after."""
    name: str = request.param
    if not Path("/usr/share/zoneinfo", name).exists():
        pytest.skip(f"no tzdata for {name}")
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def _reference(zone: str, date: tuple[int, int, int], wall: int) -> float:
    """Python's fold=0 reading of a wall-clock time (PEP 495): the offset before a change."""
    h, rest = divmod(wall, 3600)
    return datetime(*date, h, rest // 60, rest % 60, tzinfo=ZoneInfo(zone)).timestamp()


def _walls() -> Iterator[int]:
    """Every second from 00:00 to 04:59:59 (both changes are inside), then every minute."""
    yield from range(5 * 3600)
    yield from range(5 * 3600, 86400, 60)


def _syslog(date: tuple[int, int, int], wall: int) -> str:
    h, rest = divmod(wall, 3600)
    return f"{_MONTHS[date[1] - 1]} {date[2]:2d} {h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _error_log(date: tuple[int, int, int], wall: int) -> str:
    h, rest = divmod(wall, 3600)
    return f"{date[0]}/{date[1]:02d}/{date[2]:02d} {h:02d}:{rest // 60:02d}:{rest % 60:02d}"


@pytest.mark.parametrize(
    ("zone", "date"), TRANSITIONS, indirect=["zone"], ids=[f"{z}-{d}" for z, d in TRANSITIONS]
)
def test_local_stamps_match_fold0_reference_on_change_days(
    zone: str, date: tuple[int, int, int]
) -> None:
    """Syslog and nginx error stamps equal the fold=0 reading for every second of the change."""
    next_noon = calendar.timegm((date[0], date[1], date[2] + 1, 12, 0, 0, 0, 0, 0))
    syslog = SyslogTime(FakeClock(float(next_noon)).now)  # no stamp of the 3 days is ahead
    error = NginxErrorTime()
    for day in (date, (date[0], date[1], date[2] - 1), (date[0], date[1], date[2] + 1)):
        for wall in _walls() if day == date else range(0, 86400, 60):
            expected = _reference(zone, day, wall)
            assert syslog(_syslog(day, wall)) == expected, _syslog(day, wall)
            assert error(_error_log(day, wall)) == expected, _error_log(day, wall)


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_repeated_and_skipped_hour_rule(zone: str) -> None:
    """Berlin: autumn's repeated 02:30 is its first (summer-time) pass; spring's skipped 02:30
    is read with winter time, i.e. as 03:30 summer time."""
    assert zone == "Europe/Berlin"
    error = NginxErrorTime()
    autumn = error("2025/10/26 02:30:00")
    assert autumn == calendar.timegm((2025, 10, 26, 0, 30, 0, 0, 0, 0))  # 02:30 +02:00
    assert error("2025/10/26 03:00:00") == autumn + 5400  # 03:00 +01:00
    spring = error("2025/03/30 02:30:00")
    assert spring == calendar.timegm((2025, 3, 30, 1, 30, 0, 0, 0, 0))  # 02:30 +01:00
    assert error("2025/03/30 03:30:00") == spring  # the same instant, in summer time
    assert local_day(2025, 3, 30)[2] == ((3 * 3600, 3600, 7200),)
    assert local_day(2025, 10, 26)[2] == ((3 * 3600, 7200, 3600),)
    assert local_day(2025, 10, 27)[1:] == (3600, ())


@pytest.mark.parametrize("zone", ["America/New_York"], indirect=True)
def test_sshd_parser_reads_the_new_york_autumn_change(zone: str) -> None:
    """The sshd parser's syslog times follow the local zone: 01:59:59 EDT then 02:00:00 EST."""
    parser = build_parser("sshd", ParserContext(source="t", clock=FakeClock(float(1_762_000_000))))
    tail = "host sshd[9]: Invalid user a from 192.0.2.4"
    before = parser.parse(f"Nov  2 01:59:59 {tail}")
    after = parser.parse(f"Nov  2 02:00:00 {tail}")
    assert before is not None
    assert after is not None
    assert before.ts == calendar.timegm((2025, 11, 2, 5, 59, 59, 0, 0, 0))  # -04:00
    assert after.ts == calendar.timegm((2025, 11, 2, 7, 0, 0, 0, 0, 0))  # -05:00


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_a_new_second_calls_no_libc_time_conversion(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a day is known, a day of new seconds and minutes costs no mktime/localtime/timegm
    call in any of the four converters."""
    assert zone == "Europe/Berlin"
    date = (2025, 10, 26)
    syslog = SyslogTime(FakeClock(float(calendar.timegm((*date, 12, 0, 0, 0, 0, 0)))).now)
    error, iso = NginxErrorTime(), IsoTime()
    access = NginxTimeLocal()
    syslog(_syslog(date, 0))
    error(_error_log(date, 0))
    iso("2025-10-26T00:00:00+02:00")
    access("26/Oct/2025:00:00:00 +0100")
    calls: list[str] = []
    for name in ("mktime", "localtime", "gmtime"):
        monkeypatch.setattr(time, name, lambda *a, _n=name: calls.append(_n))
    monkeypatch.setattr(calendar, "timegm", lambda *a: calls.append("timegm"))
    for wall in range(1, 86400, 7):
        h, rest = divmod(wall, 3600)
        clock = f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
        assert syslog(_syslog(date, wall)) is not None
        assert iso(f"2025-10-26T{clock}+01:00") is not None
        assert error(_error_log(date, wall)) is not None
        assert access(f"26/Oct/2025:{clock} +0100") is not None
    assert calls == []


def _berlin_walk() -> Iterator[tuple[float, str, str]]:
    """Every 20 s from 2026-10-25 00:00 to 02:30 UTC (through both passes of Berlin's
    repeated hour): (the instant, its syslog stamp, its nginx error-log stamp)."""
    berlin = ZoneInfo("Europe/Berlin")
    start = calendar.timegm((2026, 10, 25, 0, 0, 0, 0, 0, 0))
    for t in range(start, start + 9000, 20):
        local = datetime.fromtimestamp(t, berlin)
        yield (
            float(t),
            local.strftime("%b %d %H:%M:%S"),
            local.strftime("%Y/%m/%d %H:%M:%S"),
        )


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_a_log_going_on_into_the_second_pass_of_the_repeated_hour_reads_it_as_such(
    zone: str,
) -> None:
    """A log written through autumn's repeated hour reads every stamp as its true instant:
    the second pass (winter time) after the first, not an hour early."""
    assert zone == "Europe/Berlin"
    now = calendar.timegm((2026, 10, 25, 12, 0, 0, 0, 0, 0))
    syslog = SyslogTime(FakeClock(float(now)).now)
    error = NginxErrorTime()
    for t, stamp, error_stamp in _berlin_walk():
        assert syslog(stamp) == t, stamp
        assert error(error_stamp) == t, error_stamp


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_a_stamp_a_little_out_of_order_in_the_first_pass_stays_in_the_first_pass(
    zone: str,
) -> None:
    """A line of the repeated hour a few seconds behind the newest stays in the first pass."""
    assert zone == "Europe/Berlin"
    now = calendar.timegm((2026, 10, 25, 12, 0, 0, 0, 0, 0))
    first_pass = float(calendar.timegm((2026, 10, 25, 0, 30, 0, 0, 0, 0)))  # 02:30 +02:00
    syslog = SyslogTime(FakeClock(float(now)).now)
    error = NginxErrorTime()
    assert syslog("Oct 25 02:30:09") == first_pass + 9
    assert syslog("Oct 25 02:30:00") == first_pass
    assert error("2026/10/25 02:30:09") == first_pass + 9
    assert error("2026/10/25 02:30:00") == first_pass


@pytest.mark.parametrize("zone", ["Asia/Tokyo"], indirect=True)
def test_a_converter_given_a_zone_reads_stamps_in_it_not_in_the_local_zone(zone: str) -> None:
    """With zone UTC (a container's logs) on a Tokyo host, stamps are read as UTC."""
    assert zone == "Asia/Tokyo"
    now = calendar.timegm((2026, 12, 8, 12, 0, 0, 0, 0, 0))
    expected = float(calendar.timegm((2026, 12, 8, 10, 0, 5, 0, 0, 0)))
    assert SyslogTime(FakeClock(float(now)).now, ZoneInfo("UTC"))("Dec  8 10:00:05") == expected
    assert NginxErrorTime(ZoneInfo("UTC"))("2026/12/08 10:00:05") == expected
    assert NginxErrorTime()("2026/12/08 10:00:05") == expected - 9 * 3600
    berlin = NginxErrorTime(ZoneInfo("Europe/Berlin"))  # a zone with changes, not the local one
    assert berlin("2026/10/25 03:00:00") == calendar.timegm((2026, 10, 25, 2, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_a_lone_stamp_of_the_repeated_hour_is_read_by_the_clock(zone: str) -> None:
    """With no earlier stamp, a repeated 02:20 read at 02:20:05 CET (a quiet log read live)
    is the second pass; read in the first pass, or a day later (replay), the first."""
    assert zone == "Europe/Berlin"
    first = calendar.timegm((2026, 10, 25, 0, 20, 0, 0, 0, 0))  # 02:20 +02:00
    second = first + 3600  # 02:20 +01:00
    for now, expected in ((second + 5, second), (first + 5, first), (second + 86400, first)):
        clock = FakeClock(float(now))
        assert SyslogTime(clock.now)("Oct 25 02:20:00") == expected, now
        assert NginxErrorTime(None, clock.now)("2026/10/25 02:20:00") == expected, now
