"""nginx error-log parser: auth_basic failures, request limiting, injection resistance."""

from __future__ import annotations

import random
import string
import time

import pytest

from aisentinel.clock import FakeClock
from aisentinel.events import HttpAuthFailure, HttpRateLimited
from aisentinel.parsers import ParserContext, build_parser

HEAD = "2012/04/09 11:53:29 [error] 2865#0: *66647 "
TAIL = ', server: www.myhost.com, request: "GET / HTTP/1.1", host: "www.myhost.com"'


def _parse(line: str) -> object:
    return build_parser("nginx-error", ParserContext(source="e", clock=FakeClock())).parse(line)


@pytest.mark.parametrize(
    ("message", "user", "reason"),
    [
        (
            'user "xyz" was not found in "/var/www/.htpasswd", client: 192.0.43.10',
            "xyz",
            "user_not_found",
        ),
        (
            'user "scriben dio": password mismatch, client: 192.0.43.10',
            "scriben dio",
            "password_mismatch",
        ),
        (
            "no user/password was provided for basic authentication, client: 192.0.43.10",
            None,
            "no_credentials",
        ),
        (
            "PAM: user 'bob' - not authenticated: Authentication failure, client: 192.0.43.10",
            "bob",
            "pam_failure",
        ),
    ],
)
def test_auth_failures(message: str, user: str | None, reason: str) -> None:
    """Each auth_basic failure form gives an HttpAuthFailure with user, reason and client."""
    event = _parse(HEAD + message + TAIL)
    expected_ts = time.mktime((2012, 4, 9, 11, 53, 29, 0, 0, -1))
    assert event == HttpAuthFailure(expected_ts, "e", "192.0.43.10", user, reason)


@pytest.mark.parametrize(
    ("message", "zone", "client"),
    [
        ('limiting requests, excess: 1.852 by zone "one", client: 1.2.3.4', "one", "1.2.3.4"),
        (
            'delaying request, excess: 0.841, by zone "req", client: 2001:db8::1',
            "req",
            "2001:db8::1",
        ),
        ('limiting connections by zone "conn", client: ::ffff:1.2.3.4', "conn", "1.2.3.4"),
    ],
)
def test_rate_limiting(message: str, zone: str, client: str) -> None:
    """limit_req and limit_conn messages give HttpRateLimited with zone and client."""
    event = _parse(HEAD + message + TAIL)
    assert isinstance(event, HttpRateLimited)
    assert (event.zone, event.client) == (zone, client)


def test_journal_prefix_is_accepted() -> None:
    """A journal prefix before the nginx timestamp is skipped."""
    line = "host nginx[983478]: " + HEAD + 'user "x": password mismatch, client: 192.0.2.3' + TAIL
    event = _parse(line)
    assert isinstance(event, HttpAuthFailure)
    assert event.client == "192.0.2.3"


def test_header_injection_cannot_frame_an_address() -> None:
    """A fake message in the Host header after the real one does not move the client."""
    fake_host = 'x": password mismatch, client: 6.6.6.6, server: y, request: "GET / HTTP/1.1'
    line = (
        HEAD
        + 'user "bob": password mismatch, client: 192.0.2.9'
        + TAIL.replace('www.myhost.com"', fake_host + '"')
    )
    event = _parse(line)
    assert isinstance(event, HttpAuthFailure)
    assert event.client == "192.0.2.9"


@pytest.mark.parametrize(
    "line",
    [
        HEAD + 'open() "/var/www/x" failed (2: No such file or directory), client: 1.2.3.4' + TAIL,
        HEAD + "connect() failed (111: Connection refused), client: 1.2.3.4" + TAIL,
        HEAD + 'user "a:b": password mismatch, client: 1.2.3.4' + TAIL,
        '1.2.3.4 - - [20/Jan/2015:19:53:28 +0100] "GET / HTTP/1.1" 401 0 "-" "-"',
        "",
    ],
)
def test_irrelevant_lines_give_none(line: str) -> None:
    """404s, upstream errors, impossible user names and non-error-log lines give None."""
    assert _parse(line) is None


def test_fuzz_never_raises() -> None:
    """Random and mutated lines never make the parser raise."""
    rng = random.Random(99)
    parser = build_parser("nginx-error", ParserContext(clock=FakeClock()))
    base = HEAD + 'user "x" was not found in "/f", client: 1.2.3.4' + TAIL
    for _ in range(3000):
        chars = list(base)
        for _ in range(rng.randrange(1, 8)):
            chars[rng.randrange(len(chars))] = rng.choice(string.printable + "\x00\xff")
        parser.parse("".join(chars))
        parser.parse("".join(rng.choice(string.printable) for _ in range(rng.randrange(120))))
