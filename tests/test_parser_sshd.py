"""sshd parser: message kinds, headers, year inference, address forms, injection, fuzzing."""

from __future__ import annotations

import calendar
import random
import string
import time

import pytest

from aisentinel.clock import FakeClock
from aisentinel.events import SshEvent, SshKind
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.sshd import message_event

NOW = calendar.timegm((2026, 11, 26, 12, 0, 0, 0, 0, 0))
K = SshKind


def _parse(line: str, now: float = NOW) -> SshEvent | None:
    event = build_parser("sshd", ParserContext(source="s", clock=FakeClock(now))).parse(line)
    assert event is None or isinstance(event, SshEvent)
    return event


def _msg(message: str) -> SshEvent | None:
    return _parse("Nov 25 23:14:30 host sshd[123]: " + message)


@pytest.mark.parametrize(
    ("message", "kind", "client", "user", "port"),
    [
        (
            "Failed password for root from 1.2.3.4 port 22 ssh2",
            K.FAILED_PASSWORD,
            "1.2.3.4",
            "root",
            22,
        ),
        (
            "Failed password for invalid user bob from 1.2.3.4 port 5 ssh2",
            K.FAILED_PASSWORD,
            "1.2.3.4",
            "bob",
            5,
        ),
        (
            "Failed none for invalid user  from 1.2.3.4 port 5 ssh2",
            K.FAILED_PASSWORD,
            "1.2.3.4",
            "",
            5,
        ),
        (
            "Failed publickey for git from 1.2.3.4 port 5 ssh2: RSA SHA256:x",
            K.FAILED_PUBKEY,
            "1.2.3.4",
            "git",
            5,
        ),
        (
            "Failed publickey for invalid user x from 1.2.3.4 port 5 ssh2: RSA SHA256:x",
            K.INVALID_USER,
            "1.2.3.4",
            "x",
            5,
        ),
        ("Invalid user admin from 2001:db8::1 port 4", K.INVALID_USER, "2001:db8::1", "admin", 4),
        ("Invalid user admin from 2001:db8::1%eth0", K.INVALID_USER, "2001:db8::1", "admin", None),
        (
            "User root from 1.2.3.4 not allowed because not listed in AllowUsers",
            K.INVALID_USER,
            "1.2.3.4",
            "root",
            None,
        ),
        (
            "error: maximum authentication attempts exceeded for root from 1.2.3.4 port 9 ssh2 [preauth]",  # noqa: E501
            K.MAX_AUTH,
            "1.2.3.4",
            "root",
            9,
        ),
        (
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=root",  # noqa: E501
            K.PAM_FAILURE,
            "1.2.3.4",
            "root",
            None,
        ),
        (
            "error: PAM: Authentication failure for bob from 1.2.3.4",
            K.FAILED_PASSWORD,
            "1.2.3.4",
            "bob",
            None,
        ),
        (
            "Connection closed by authenticating user root 1.2.3.4 port 7 [preauth]",
            K.PREAUTH,
            "1.2.3.4",
            "root",
            7,
        ),
        (
            "Connection closed by invalid user x 1.2.3.4 port 7 [preauth]",
            K.PREAUTH,
            "1.2.3.4",
            "x",
            7,
        ),
        ("Connection closed by 1.2.3.4 port 7 [preauth]", K.PREAUTH, "1.2.3.4", None, 7),
        ("Disconnected from invalid user x 1.2.3.4 port 7 [preauth]", K.PREAUTH, "1.2.3.4", "x", 7),
        (
            "Did not receive identification string from 1.2.3.4 port 7",
            K.PREAUTH,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "Unable to negotiate with 1.2.3.4 port 7: no matching cipher found. Their offer: x [preauth]",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "Bad protocol version identification 'GET / HTTP/1.1' from 1.2.3.4 port 7",
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "error: Bad remote protocol version identification: 'GET / HTTP/1.1' from 1.2.3.4 port 7",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "Unable to negotiate with 1.2.3.4 port 7: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "error: Protocol major versions differ for 1.2.3.4 port 7: SSH-2.0-OpenSSH_9.6 vs. SSH-1.5-x",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "banner exchange: Connection from 1.2.3.4 port 7: invalid format",
            K.NEGOTIATION,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "ssh_dispatch_run_fatal: Connection from authenticating user root 1.2.3.4 port 7: message authentication code incorrect [preauth]",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            "root",
            7,
        ),
        (
            "ssh_dispatch_run_fatal: Connection from invalid user admin 1.2.3.4 port 7: Broken pipe [preauth]",  # noqa: E501
            K.NEGOTIATION,
            "1.2.3.4",
            "admin",
            7,
        ),
        (
            "fatal: Timeout before authentication for 1.2.3.4 port 7",
            K.TIMEOUT,
            "1.2.3.4",
            None,
            None,
        ),
        (
            "fatal: Timeout before authentication for connection from 1.2.3.4 to 192.0.2.1, pid = 9",  # noqa: E501
            K.TIMEOUT,
            "1.2.3.4",
            None,
            None,
        ),
        (
            "refused connect from host.example (1.2.3.4)",
            K.REFUSED,
            "1.2.3.4",
            None,
            None,
        ),
        (
            "drop connection #3 from [1.2.3.4]:7 on [192.0.2.1]:22 past MaxStartups",
            K.REFUSED,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "Received disconnect from 1.2.3.4 port 7:11: Bye Bye [preauth]",
            K.PREAUTH,
            "1.2.3.4",
            None,
            7,
        ),
        (
            "Accepted publickey for deploy from ::ffff:1.2.3.4 port 7 ssh2: ED25519 SHA256:x",
            K.ACCEPTED,
            "1.2.3.4",
            "deploy",
            7,
        ),
        (
            "Accepted password for deploy from 1.2.3.4 port 7 ssh2",
            K.ACCEPTED,
            "1.2.3.4",
            "deploy",
            7,
        ),
    ],
)
def test_message_kinds(
    message: str, kind: SshKind, client: str, user: str | None, port: int | None
) -> None:
    """Each documented sshd message maps to its kind, client, user and port."""
    event = _msg(message)
    assert event is not None
    assert (event.kind, event.client, event.user, event.port) == (kind, client, user, port)


@pytest.mark.parametrize(
    "message",
    [
        "pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)",
        "Connection closed by 1.2.3.4 port 7",
        "Received disconnect from 1.2.3.4 port 7:11: disconnected by user",
        "Disconnected from user deploy 1.2.3.4 port 7",
        "Postponed publickey for git from 1.2.3.4 port 5 ssh2 [preauth]",
        "Server listening on 0.0.0.0 port 22.",
        "User root not allowed because account is locked",
        "error: PAM: Authentication failure for bob from example.com",
    ],
)
def test_irrelevant_messages_give_none(message: str) -> None:
    """Sessions, normal disconnects and lines without an address give None."""
    assert _msg(message) is None


def test_other_programs_give_none() -> None:
    """Lines of other programs are rejected even when they mention sshd."""
    assert (
        _parse("Nov 25 23:14:30 host CRON[1]: Failed password for x from 1.2.3.4 port 1 ssh2")
        is None
    )
    assert (
        _parse("Nov 25 23:14:30 host systemd[1]: sshd.service: Failed password for x from 1.2.3.4")
        is None
    )


def test_user_name_injection_does_not_move_the_address() -> None:
    """An address written inside the user name or a certificate's key id is not reported."""
    cases = {
        "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 1.2.3.4 port 2 ssh2": "1.2.3.4",  # noqa: E501
        "Failed publickey for t from 1.2.3.4 port 2 ssh2: RSA-CERT SHA256:k ID a from 6.6.6.6 port 1 ssh2 (serial 1) CA RSA SHA256:c": "1.2.3.4",  # noqa: E501
        "Failed password for invalid user x from 6.6.6.6: y from 1.2.3.4 port 2 ssh2": "1.2.3.4",
        "Failed password for invalid user x from 6.6.6.6 port 1 ssh2: y from 1.2.3.4 port 2 ssh2": "1.2.3.4",  # noqa: E501
        "Failed publickey for invalid user x from 6.6.6.6 port 1 ssh2: RSA SHA256:k from 1.2.3.4 port 2 ssh2: RSA SHA256:x": "1.2.3.4",  # noqa: E501
        "Accepted publickey for x from 6.6.6.6: y from 1.2.3.4 port 2 ssh2: ED25519 SHA256:x": "1.2.3.4",  # noqa: E501
        "Invalid user a from 6.6.6.6 from 1.2.3.4 port 2": "1.2.3.4",
        "Connection closed by authenticating user t 6.6.6.6 port 1 1.2.3.4 port 2 [preauth]": "1.2.3.4",  # noqa: E501
        "ssh_dispatch_run_fatal: Connection from invalid user t 6.6.6.6 port 1 1.2.3.4 port 2: Broken pipe [preauth]": "1.2.3.4",  # noqa: E501
        "Disconnecting invalid user t 6.6.6.6 port 1 1.2.3.4 port 2: Too many authentication failures [preauth]": "1.2.3.4",  # noqa: E501
        "Bad protocol version identification 'x' from 6.6.6.6 port 1' from 1.2.3.4 port 2": "1.2.3.4",  # noqa: E501
    }
    for message, client in cases.items():
        event = _msg(message)
        assert event is not None
        assert event.client == client, message


REAL_INJECTED = [
    # OpenSSH 9.2, a client that changed its user and service mid-authentication: sshd
    # cuts the user name at ':' (user:style), the service name keeps it.
    "Disconnecting authenticating user root 127.0.0.1 port 45148: Change of username or service"
    " not allowed: (root,ssh-connection) -> (b,x 192.0.2.44 port 22: y) [preauth]",
    "Disconnecting authenticating user root 127.0.0.1 port 44466: Change of username or service"
    " not allowed: (root,ssh-connection) -> (b 192.0.2.44 port 22,ssh-connec [preauth]",
    "ssh_dispatch_run_fatal: Connection from authenticating user root 127.0.0.1 port 45148:"
    " Connection corrupted: x 192.0.2.44 port 22: y [preauth]",
    "banner exchange: Connection from 127.0.0.1 port 45148: invalid format 192.0.2.44 port 22: y",
]


@pytest.mark.parametrize("message", REAL_INJECTED)
def test_text_after_the_address_does_not_move_it(message: str) -> None:
    """The client's text after sshd's `ADDR port N: ` (a service name, a reason) is not read."""
    for event in (_msg(message), message_event(message, 0.0, "j", 6001)):
        assert event is not None
        assert event.client == "127.0.0.1"


@pytest.mark.parametrize(
    "message",
    [
        # OpenSSH 8.0-8.4 name no address on this line: a quoted one is the client's text
        "Bad remote protocol version identification: 'x from 192.0.2.44 port 22' [preauth]",
        "Bad remote protocol version identification: 'x from 192.0.2.44 port 22'",
        # rhost is a host name (UseDNS): the user name's "rhost=" is not read in its place
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser="
        " rhost=host.example  user=x rhost=192.0.2.44",
    ],
)
def test_an_address_only_in_client_text_is_no_event(message: str) -> None:
    """A line whose only address is inside the client's text gives no event."""
    assert _msg(message) is None


def test_a_certificate_line_with_two_readings_is_no_event() -> None:
    """A certificate failure whose user name and key id both fit sshd's tail names no client."""
    fp = "SHA256:" + "A" * 43
    forged = (
        f"Failed publickey for invalid user x from 203.0.113.9 port 1 ssh2: a b ID from "
        f"198.51.100.66 port 4242 ssh2: ED25519-CERT {fp} ID k (serial 1) CA ED25519 {fp}"
    )
    long_id = (
        f"Failed publickey for invalid user x from 203.0.113.9 port 1: y from 198.51.100.66 "
        f"port 4242 ssh2: ED25519-CERT {fp} ID {'k' * 500} (serial 1) CA ED25519 {fp}"
    )
    assert _msg(forged) is None
    assert _msg(long_id) is None
    plain = f"Failed publickey for git from 198.51.100.66 port 4242 ssh2: ED25519-CERT {fp} ID k (serial 1) CA ED25519 {fp}"  # noqa: E501
    event = _msg(plain)
    assert event is not None
    assert event.client == "198.51.100.66"


def test_classic_syslog_time_and_year() -> None:
    """Classic stamps take the clock's year, or last year when over a day ahead."""
    event = _parse("Nov 25 23:14:30 h sshd[1]: Invalid user a from 1.2.3.4")
    assert event is not None
    assert event.ts == time.mktime((2026, 11, 25, 23, 14, 30, 0, 0, -1))
    event = _parse("Dec 31 23:59:59 h sshd[1]: Invalid user a from 1.2.3.4")
    assert event is not None
    assert event.ts == time.mktime((2025, 12, 31, 23, 59, 59, 0, 0, -1))
    new_year = calendar.timegm((2026, 12, 31, 23, 59, 0, 0, 0, 0))
    event = _parse("Jan  1 00:00:30 h sshd[1]: Invalid user a from 1.2.3.4", now=new_year)
    assert event is not None
    assert event.ts == time.mktime((2027, 1, 1, 0, 0, 30, 0, 0, -1))


def test_rfc3339_and_rfc5424_headers() -> None:
    """Journal-style RFC 3339 and RFC 5424 headers are read with their offsets."""
    iso = _parse("2026-11-25T23:14:30.5+01:00 host sshd[9]: Invalid user a from 1.2.3.4")
    assert iso is not None
    assert iso.ts == calendar.timegm((2026, 11, 25, 22, 14, 30, 0, 0, 0)) + 0.5
    rfc5424 = _parse(
        '<38>1 2019-07-08T17:40:17-04:00 h sshd 5 - [x@1 a="[b]"] '
        "Failed unknown for invalid user r from 192.0.2.2 port 5 ssh2"
    )
    assert rfc5424 is not None
    assert (rfc5424.client, rfc5424.ts) == ("192.0.2.2", calendar.timegm((2019, 7, 8, 21, 40, 17)))


def test_program_variants() -> None:
    """sshd-session, a missing host and a bracketed tag are all sshd."""
    for head in (
        "Jul  3 14:59:17 host sshd-session[1]: ",
        "Nov 23 21:50:19 sshd[8148]: ",
        "Mar  3 00:17:22 [sshd] ",
    ):
        event = _parse(head + "Invalid user a from 1.2.3.4")
        assert event is not None, head


def test_fuzz_never_raises() -> None:
    """Random and mutated lines never make the parser raise."""
    rng = random.Random(7)
    parser = build_parser("sshd", ParserContext(clock=FakeClock(NOW)))
    bases = [
        "Nov 25 23:14:30 host sshd[123]: Failed password for invalid user a from 1.2.3.4 port 2 ssh2",  # noqa: E501
        "2026-11-25T23:14:30.1+00:00 h sshd[1]: Connection closed by 2001:db8::1 port 3 [preauth]",
        '<38>1 2019-07-08T17:40:17-04:00 h sshd 5 - [x@1 a="b"] Invalid user a from 1.2.3.4',
    ]
    alphabet = string.printable + "\x00\xff[]:"
    for _ in range(4000):
        chars = list(rng.choice(bases))
        for _ in range(rng.randrange(1, 8)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        parser.parse("".join(chars))
        parser.parse("sshd" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(100))))


@pytest.mark.parametrize(
    ("header", "pid"),
    [
        ("Nov 25 23:14:30 host sshd[123]: ", 123),
        ("2026-11-25T23:14:30.5+00:00 host sshd-session[77]: ", 77),
        ("<38>1 2026-11-25T23:14:30Z h sshd 5 - - ", 5),
        ("<38>1 2026-11-25T23:14:30Z h sshd - - - ", None),
        ("Nov 25 23:14:30 host sshd: ", None),
        ("Mar  3 00:17:22 [sshd] ", None),
    ],
)
def test_pid_comes_from_the_header(header: str, pid: int | None) -> None:
    """The event carries the pid the header names, or None when it names none."""
    event = _parse(header + "Invalid user a from 1.2.3.4 port 22")
    assert event is not None
    assert (event.kind, event.client, event.pid) == (K.INVALID_USER, "1.2.3.4", pid)


def test_message_event_matches_the_line_parser() -> None:
    """message_event (message, ts and pid given apart) gives what parsing the line gives."""
    message = "Failed password for invalid user x from ::ffff:1.2.3.4 port 22 ssh2"
    line = _parse("2026-11-25T23:14:30.5+00:00 host sshd[9]: " + message)
    alone = message_event(message, calendar.timegm((2026, 11, 25, 23, 14, 30)) + 0.5, "s", 9)
    assert alone == line
    assert alone is not None
    assert alone.client == "1.2.3.4"
    assert message_event("Server listening on :: port 22.", 1.0, "s", 9) is None


def test_rsyslog_repeated_message_carries_its_count() -> None:
    """rsyslog's "message repeated N times: [ MSG]" is MSG's event with repeat N."""
    event = _msg(
        "message repeated 5 times: [ Failed password for root from 203.0.113.150 port 49000 ssh2]"
    )
    assert event is not None
    assert (event.kind, event.client, event.user, event.repeat) == (
        K.FAILED_PASSWORD,
        "203.0.113.150",
        "root",
        5,
    )
    plain = _msg("Failed password for root from 203.0.113.150 port 49000 ssh2")
    assert plain is not None
    assert plain.repeat == 1
    assert _msg("message repeated 2 times: [ session opened for user root]") is None
    huge = _msg("message repeated 999999 times: [ Invalid user a from 203.0.113.9 port 1]")
    assert huge is not None
    assert huge.repeat == 1000
