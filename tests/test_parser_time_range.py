"""Every parser refuses event times outside 2000-01-01 .. 2100-01-01 UTC (and non-finite ones)."""

from __future__ import annotations

import json

import pytest

from aisentinel.clock import FakeClock
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.base import Parser
from aisentinel.parsers.timestamps import MAX_TS, MIN_TS

SSHD_TAIL = "host sshd[9]: Invalid user a from 192.0.2.4"
ERROR_TAIL = (
    ' [error] 2865#0: *6 user "bob": password mismatch, client: 192.0.2.5, server: s, '
    'request: "GET / HTTP/1.1"'
)


def _parser(name: str, now: float = 1_764_000_000.0) -> Parser:
    return build_parser(name, ParserContext(source="t", clock=FakeClock(now)))


def _json(time: object) -> str:
    record = {"time": time, "remote_addr": "192.0.2.9", "request_uri": "/", "status": "200"}
    return json.dumps(record)


def _access(stamp: str) -> str:
    return f'192.0.2.1 - - [{stamp}] "GET / HTTP/1.1" 200 5 "-" "x"'


def test_window_is_2000_to_2100_utc() -> None:
    """The window constants are the two UTC midnights the parsers document."""
    assert MIN_TS == 946_684_800.0  # 2000-01-01T00:00:00Z
    assert MAX_TS == 4_102_444_800.0  # 2100-01-01T00:00:00Z


@pytest.mark.parametrize(
    "value",
    [
        1e308,
        -1e308,
        "1e308",
        "-1e308",
        "inf",
        "-inf",
        "nan",
        "NaN",
        0,
        "946684799.999",
        "4102444800",
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:30:00-01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        10**400,
    ],
)
def test_nginx_json_out_of_range_times_are_unparsed(value: object) -> None:
    """A JSON line whose time is non-finite or outside the window is no event."""
    parser = _parser("nginx-json")
    line = _json(value)
    assert parser.parse(line) is None
    assert parser.parse_many([line, line]) == []


@pytest.mark.parametrize(
    "value", ["946684800", 946684800.5, "2000-01-01T00:00:00Z", "2099-12-31T23:59:59.9+00:00"]
)
def test_nginx_json_times_inside_the_window_are_parsed(value: object) -> None:
    """Times at the window's edges, inside it, still give events."""
    event = _parser("nginx-json").parse(_json(value))
    assert event is not None
    assert MIN_TS <= event.ts < MAX_TS


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        ("31/Dec/1999:23:59:59 +0000", False),
        ("01/Jan/2000:00:00:00 +0000", True),
        ("31/Dec/2099:23:59:59 +0000", True),
        ("01/Jan/2100:00:00:00 +0000", False),
        ("31/Dec/2099:23:30:00 -0100", False),
        ("01/Jan/9999:00:00:00 +0000", False),
    ],
)
def test_nginx_access_time_window(stamp: str, ok: bool) -> None:
    """Combined lines outside the window are unparsed, also when the text is seen twice."""
    parser = _parser("nginx")
    line = _access(stamp)
    assert (len(parser.parse_many([line, line])) == 2) is ok
    assert (parser.parse(line) is not None) is ok  # the cache never holds a refused time


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        ("1999/12/31 12:00:00", False),
        ("2000/01/02 00:00:00", True),
        ("2099/12/30 23:59:59", True),
        ("2100/01/02 00:00:00", False),
        ("9999/01/01 00:00:00", False),
    ],
)
def test_nginx_error_time_window(stamp: str, ok: bool) -> None:
    """nginx error lines (server local time) outside the window are unparsed."""
    parser = _parser("nginx-error")
    line = stamp + ERROR_TAIL
    assert (parser.parse(line) is not None) is ok
    assert (parser.parse(line) is not None) is ok


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        ("1999-12-31T23:59:59.999+00:00", False),
        ("2000-01-01T00:00:00+00:00", True),
        ("2100-01-01T00:00:00.0+00:00", False),
        ("2099-12-31T23:59:59+00:00", True),
        ("2099-12-31T23:30:00-01:00", False),
    ],
)
def test_sshd_iso_time_window(stamp: str, ok: bool) -> None:
    """sshd lines with an RFC 3339 stamp outside the window are unparsed."""
    parser = _parser("sshd")
    line = f"{stamp} {SSHD_TAIL}"
    assert (parser.parse(line) is not None) is ok
    assert (parser.parse(line) is not None) is ok


def test_sshd_syslog_time_from_a_clock_outside_the_window_is_unparsed() -> None:
    """A year-less syslog stamp dated by a clock set to 1999 gives no event; 2025 does."""
    line = f"Nov 25 23:14:30 {SSHD_TAIL}"
    assert _parser("sshd", now=944_000_000.0).parse(line) is None  # Dec 1999
    event = _parser("sshd").parse(line)
    assert event is not None
    assert MIN_TS <= event.ts < MAX_TS
