"""nginx error-log parser: auth_basic failures, request limiting, injection resistance."""

from __future__ import annotations

import ipaddress
import random
import string
import time

import pytest

from aisentinel.clock import FakeClock
from aisentinel.events import HttpAuthFailure, HttpRateLimited
from aisentinel.parsers import ParserContext, build_parser, sniff

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
            'limiting requests, excess: 0.841 by zone "req", client: 2001:db8::1',
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


def test_limit_req_delaying_is_no_rejection() -> None:
    """A limit_req "delaying request" line (burst without nodelay: the request is served,
    later) gives no rate-limit event."""
    line = HEAD.replace("[error]", "[warn]") + (
        'delaying request, excess: 0.841, by zone "req", client: 192.0.2.7' + TAIL
    )
    assert _parse(line) is None


PAM_FORGED = "2026/12/07 19:00:00 [error] 1#1: PAM: user 'admin0' - not authenticated: x, "


@pytest.mark.parametrize(
    "line",
    [
        '203.0.113.77 - - [07/Dec/2026:19:00:00 +0000] "GET / HTTP/1.1" 404 153 "-" "'
        + PAM_FORGED
        + 'client: 198.51.100.1,"',
        '::ffff:203.0.113.77 - - [07/Dec/2026:19:00:00 +0000] "GET / HTTP/1.1" 404 153 "-" "'
        + PAM_FORGED
        + 'client: 198.51.100.1,"',
        '{"remote_addr": "203.0.113.77", "http_user_agent": "'
        + PAM_FORGED
        + 'client: 198.51.100.1,"}',
        "Dec  7 19:00:00 host sshd[77]: Invalid user "
        + PAM_FORGED
        + "client: 198.51.100.1, from 203.0.113.77 port 4242",
        # a program's message starting "WORD WORD: " then client text, in a mixed syslog
        "Dec  7 19:00:00 host prog[77]: error: PAM: " + PAM_FORGED + "client: 198.51.100.1,",
        "Dec  7 19:00:00 host prog[77]: a b[1]: " + PAM_FORGED + "client: 198.51.100.1,",
        "Dec  7 19:00:00 host prog: x: " + PAM_FORGED + "client: 198.51.100.1,",
        "Dec  7 19:00:00 host a b: " + PAM_FORGED + "client: 198.51.100.1,",
        "Dec  7 19:00:00 host prog[77]: a b: " + PAM_FORGED + "client: 198.51.100.1,",
        "Dec  7 19:00:00 host sshd[77]: Invalid user: " + PAM_FORGED + "client: 198.51.100.1,",
    ],
)
def test_an_error_head_inside_request_text_reads_as_nothing(line: str) -> None:
    """An error-log head written by a client (a user agent in an access log, a user name
    in an sshd log) is no error-log line: it frames no address, and does not count as
    one for sniffing."""
    assert _parse(line) is None
    parser = build_parser("nginx-error", ParserContext(source="e", clock=FakeClock()))
    assert not parser.looks_like(line)


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "host nginx[983478]: ",
        "Dec  7 19:00:00 host nginx[983478]: ",
        "<27>Dec 17 19:00:00 host nginx: ",
        "2026-12-07T19:00:00.123456+00:00 host nginx[1]: ",
        "2026-12-07T19:00:00+0000 web nginx[983]: ",  # journalctl -o short-iso
        "2026-12-07T19:00:00 web nginx[983]: ",  # syslog-ng ISO without offset
        "Dec 07 19:00:00.123456 web nginx[983]: ",  # journalctl -o short-precise
        "Mon 2026-12-07 19:00:00 UTC web nginx[983]: ",  # journalctl -o short-full
        "[ 1234.567890] web nginx[983]: ",  # journalctl -o short-monotonic
        "[12345678.123456] web nginx[983]: ",
        "1733598000.123456 web nginx[983]: ",  # journalctl -o short-unix
        "<163>1 2026-12-07T19:00:00.003Z web nginx 983 - - ",  # RFC 5424
        '<163>1 2026-12-07T19:00:00.003Z web nginx 983 ID47 [x@1 a="b\\"]"][y@2] ',
        "<163>1 - web nginx - - - \ufeff",  # RFC 5424: no time, a BOM before MSG
        "nginx-1  | ",  # docker compose logs
        "nginx_1  | ",  # docker-compose v1
        "nginx-1  | 2026-12-07T19:00:00.123456789Z ",  # docker compose logs -t
        "2026-12-07T19:00:00.123456789Z ",  # docker logs -t
        "2026-12-07T19:00:00.123456789+00:00 stderr F ",  # CRI log file (containerd, podman)
        "Dec  7 19:00:00 web docker/1a2b3c4d5e6f[983]: ",  # docker syslog driver
        "Dec 07 19:00:00 web nginx@site[983]: ",  # systemd template unit
        "Dec 07 19:00:00 web.example.com nginx[983]: ",
        "Dec 07 19:00:00 2001:db8::1 nginx[983]: ",
        "host nginx[23141]: host nginx: ",  # nginx's syslog to /dev/log, in the journal
        "Dec 07 19:00:00 web nginx[983]: web nginx: ",
        "Dec  7 19:00:00 relay Dec  7 19:00:00 web nginx[983]: ",  # syslog-ng relayed
        "Dec  7 19:00:00 relay fwd[1]: 2026-12-07T19:00:00Z web nginx: ",  # relayed with a tag
        "Dec  7 19:00:00 web/10.0.0.5 nginx[983]: ",  # syslog-ng chained hostnames
        " ",  # leading blanks
        "\ufeff",  # the BOM of a file's first line
        "\ufeffDec  7 19:00:00 host nginx[1]: ",
    ],
)
def test_syslog_and_journal_prefixes_are_accepted(prefix: str) -> None:
    """The error-log head is read at the start of a line or after a syslog, journal or
    container-log prefix, and such lines are sniffed as the nginx error log (a CRI log
    file as ``container``, which hands its error-log lines to this parser)."""
    line = prefix + HEAD + 'user "x": password mismatch, client: 192.0.2.3' + TAIL
    event = _parse(line)
    assert isinstance(event, HttpAuthFailure)
    assert event.client == "192.0.2.3"
    quiet = prefix + HEAD + 'open() "/x" failed (2: No such file), client: 192.0.2.3' + TAIL
    expected = "container" if " stderr F " in prefix else "nginx-error"
    assert sniff([line, quiet] * 3) == expected


def test_failures_from_a_trusted_proxy_are_not_blamed_on_it() -> None:
    """Behind a trusted proxy (no X-Forwarded-For in the error log), a failure or rate
    limit whose client is the proxy gives no event and one notice naming the proxy and
    the realip module; other clients (realip at work) are read as usual."""
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    parser = build_parser("nginx-error", ParserContext(source="e", trusted_proxies=nets))
    auth = HEAD + 'user "bob": password mismatch, client: 10.0.0.2' + TAIL
    limit = HEAD + 'limiting requests, excess: 1.0 by zone "z", client: 10.0.0.2' + TAIL
    assert parser.parse_many([auth, limit, auth]) == []
    notices = parser.take_notices()
    assert len(notices) == 1
    assert "set_real_ip_from" in notices[0][0]
    assert notices[0][1] == {"proxy": "10.0.0.2"}
    real = parser.parse(auth.replace("10.0.0.2", "198.51.100.4"))
    assert isinstance(real, HttpAuthFailure)
    assert real.client == "198.51.100.4"
    assert isinstance(_parse(auth), HttpAuthFailure)  # no trusted proxy: the peer


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
