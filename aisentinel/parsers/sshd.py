"""``sshd``: OpenSSH authentication events from syslog lines or journal messages.

Headers understood: classic syslog (``Nov 25 23:14:30 host sshd[123]: ``, local
time, year inferred from the clock), RFC 3339 (``2026-11-25T23:14:30.123456+00:00
host sshd[123]: ``, as ``journalctl -o short-iso-precise`` writes) and RFC 5424
(``<38>1 TS host sshd 123 - - ``). The program may be ``sshd``, ``sshd-session`` or
``[sshd]``; the event's ``pid`` is the one the header names. :func:`message_event`
runs the message matcher alone, for a source that has the message, time and pid as
separate fields (the journald source): nothing is formatted into a line and re-read.

rsyslog's ``message repeated N times: [ MESSAGE]`` is MESSAGE's event with ``repeat``
N (detectors count it N times).

Messages -> :class:`SshKind` (everything else, e.g. sessions opened, normal
disconnects, ``Connection closed`` outside pre-auth, returns ``None``):

===========================================================  ==================
``Failed password|keyboard-interactive|none|... for [invalid user] U from A``;  FAILED_PASSWORD
``error: PAM: Authentication failure|error for U from A`` (sshd's own line for each
keyboard-interactive/PAM try: it logs no ``Failed`` line for them below MaxAuthTries/2)
``Failed publickey for U from A`` (an existing user)          FAILED_PUBKEY
``Failed publickey for invalid user U from A``                INVALID_USER
``Invalid user U from A``; ``User U from A not allowed``;     INVALID_USER
``ROOT LOGIN REFUSED FROM A``; ``PAM: ... for illegal user``
``maximum authentication attempts exceeded for U from A``    MAX_AUTH
``pam_*(sshd:auth): authentication failure; ... rhost=A``     PAM_FAILURE
``Connection closed|reset by [invalid|authenticating user U] A ... [preauth]``;  PREAUTH
``Disconnected from ... [preauth]``;
``Disconnecting invalid user ...``;
``Received disconnect from A ... [preauth]`` (or ``Auth fail``);
``Did not receive identification string``
``Unable to negotiate with A`` (no matching key exchange      NEGOTIATION
method, host key type, cipher ...); ``banner exchange``;
``ssh_dispatch_run_fatal`` (with or without ``invalid|
authenticating user U``); ``Bad [remote] protocol version``;
``Protocol major versions differ``
``Timeout before authentication``                             TIMEOUT
``refused connect from`` (tcp wrappers); ``drop connection    REFUSED
#N`` (MaxStartups, PerSourcePenalties)
``Accepted METHOD for U from A``                              ACCEPTED
===========================================================  ==================

Weight of the kinds, for detectors: FAILED_PASSWORD, INVALID_USER and MAX_AUTH are
failures. PAM_FAILURE (pam_unix's line) repeats, from PAM's side, an attempt sshd also
logs (``Failed password``, or its own ``PAM: Authentication failure``), and appears
alone when a later PAM module accepts, so it must not be added to FAILED_PASSWORD.
FAILED_PUBKEY for an existing user is what a client with several keys in its agent
produces on every login. PREAUTH marks scanners and connection floods (fail2ban's
``ddos`` mode), and so do NEGOTIATION, TIMEOUT (a flood of them is the CVE-2024-6387
"regreSSHion" pattern) and REFUSED. Those are weak signals.
``kex_exchange_identification`` lines name no address, and the ``Connection closed by A
port P`` (no ``[preauth]``) that follows them is also what a load balancer's TCP health
check leaves: neither is an event.

User names are chosen by the client and may contain ``from 1.2.3.4 port 22``; each
pattern is anchored on the text sshd itself writes after the address, so such a name
cannot move the reported address (the fail2ban corpus has these cases).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from aisentinel.configtypes import StrictModel
from aisentinel.events import SshEvent, SshKind
from aisentinel.parsers.base import REGISTRY, Parser, ParserContext
from aisentinel.parsers.proxy import ADDR_RE, normalize_addr
from aisentinel.parsers.timestamps import IsoTime, SyslogTime

_A = r"(" + ADDR_RE + r")(?:%[\w.-]+)?"  # an address, maybe with an IPv6 zone
_PORT = r"(?: port (\d+))?"


def _re(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(pattern.replace("{A}", _A).replace("{PORT}", _PORT)).match


# sshd writes ``for USER from ADDR port N ssh2`` and, for keys, ``: TYPE FINGERPRINT``
# (a certificate adds `` ID KEY_ID (serial N) CA TYPE FINGERPRINT``); USER is at most 100
# bytes (``%.100s``, up to 400 characters once sshd has escaped it). The user name and a
# certificate's key id are the client's text, so ``_AUTH_TAIL`` takes the first
# `` from ADDR`` after which the rest of the line is exactly what sshd writes there: a
# name such as ``x from 192.0.2.5: y`` or ``x from 192.0.2.5 port 1 ssh2: RSA SHA256:k``
# cannot move the address. A line whose tail has another shape (no port, hostbased's
# ``client user "u"`` info, SSH1's ``: ruser NAME``) falls back to the first
# `` from ADDR`` followed by the end or ``: `` (the fail2ban corpus has ruser injections).
# A certificate's key id is free text after the address, so a certificate line (`` (serial
# ``) on which two places fit that tail (a user name and a key id made to frame an
# address) is no event, and one that fits none never falls back (:func:`_auth_match`).
_AUTH_TAIL = (
    r" from {A} port (\d+)(?: ssh\d?)?(?: \[preauth\])?"
    r"(?:: \S+ \S+(?: ID .{0,400}? \(serial \d+\) CA \S+ \S+)?)?$"
)
_AUTH_TAIL_AT = re.compile(_AUTH_TAIL.replace("{A}", _A)).match
_FAILED = _re(r"Failed (\S+) for (invalid user )?(.{0,400}?)" + _AUTH_TAIL)
_FAILED_LOOSE = _re(
    r"Failed (\S+) for (invalid user )?(.*?) from {A}{PORT}(?: ssh\d?)?(?: \[preauth\])?(?:$|: )"
)
_INVALID = _re(r"Invalid user (.*?) from {A}{PORT}(?: \[preauth\])?$")
_ACCEPTED = _re(r"Accepted \S+ for (.{0,400}?)" + _AUTH_TAIL)
_ACCEPTED_LOOSE = _re(r"Accepted \S+ for (.*?) from {A}{PORT}(?: ssh\d?)?(?:$|: )")


def _auth_match(
    msg: str,
    strict: Callable[[str], re.Match[str] | None],
    loose: Callable[[str], re.Match[str] | None],
) -> re.Match[str] | None:
    """``strict``'s match of a Failed/Accepted line, else ``loose``'s; ``None`` for a
    certificate line that ``strict`` does not settle (see ``_AUTH_TAIL``)."""
    m = strict(msg)
    if " (serial " not in msg:
        return m or loose(msg)
    if m is None:
        return None
    address = (m.lastindex or 1) - 1  # the address group: the port's is the last one
    at = msg.find(" from ", m.end(address))
    while at >= 0:
        if _AUTH_TAIL_AT(msg, at) is not None:
            return None  # two readings: the address is the client's choice
        at = msg.find(" from ", at + 1)
    return m


_CLOSED = _re(
    r"Connection (?:closed|reset) by (?:(?:invalid|authenticating) user (.*) )?"
    r"{A}{PORT} \[preauth\]$"
)
_DISCONNECTED = _re(
    r"Disconnected from (?:(?:invalid|authenticating) user (.*) )?{A}{PORT} \[preauth\]$"
)
_DISCONNECTING = _re(r"Disconnecting (?:invalid|authenticating) user ([^:]*?) {A} port (\d+): ")
"""sshd cuts a user name at ``:`` (``user:style``), so the first `` ADDR port N: `` after
the name is the one sshd wrote; the reason after it is free text (``Change of username or
service not allowed: (root,ssh-connection) -> (USER,SERVICE)`` repeats the client's
next user and service, and a service name keeps its ``:``)."""
_RECEIVED = _re(r"Received disconnect from {A}{PORT}:\s*\d+: ")
_NO_IDENT = _re(r"Did not receive identification string from {A}{PORT}$")
_BAD_PROTO = _re(
    r"Bad (?:protocol version identification .*|remote protocol version identification:? '.*')"
    r" from {A}{PORT}(?: \[preauth\])?$"
)
"""The version text is the client's. OpenSSH up to 7.9 writes ``Bad protocol version
identification 'TEXT' from ADDR port N``: the address is the last one, anchored at the end.
8.0-8.4 write ``Bad remote protocol version identification: 'TEXT'`` with no address, so
that form needs one after the closing quote, which a `` from ADDR`` inside TEXT is not."""
_MAJOR = _re(r"Protocol major versions differ for {A}{PORT}: ")
_NEGOTIATE = _re(r"Unable to negotiate with {A} port (\d+): ")
_NOT_ALLOWED = _re(r"User (.*) from {A} not allowed because [^:]*$")
_ROOT_REFUSED = _re(r"ROOT LOGIN REFUSED FROM {A}{PORT}(?: \[preauth\])?$")
_REFUSED_CONNECT = _re(r"refused connect from .*\({A}\)$")
_MAX_AUTH = _re(
    r"maximum authentication attempts exceeded for (invalid user )?(.*) from {A} port (\d+)"
    r"(?: ssh\d?)?(?: \[preauth\])?$"
)
_PAM_SSHD = _re(
    r"PAM: (?:([Aa]uthentication (?:failure|error))|User not known to the underlying "
    r"authentication module|unknown user) for (?:illegal user )?(.*) from {A}(?: via \S+)?\s*$"
)
_PAM_MODULE = _re(
    r"pam_\w+\(sshd:auth\): authentication failure;(?:\s+(?:logname|e?uid|tty|ruser)=\S*)*"
    r"\s+rhost={A}(?=\s|$)(?:\s+user=(\S*))?"
)
"""PAM's own fields up to ``rhost=``, as pam_unix writes them: ``user=`` (the client's
text) comes after, so a name holding `` rhost=ADDR`` cannot stand in for an ``rhost`` that
is a host name (UseDNS) or empty."""
_CONNECTION_FROM = _re(
    r"(?:banner exchange|ssh_dispatch_run_fatal): Connection from "
    r"(?:(?:invalid|authenticating) user ([^:]*?) )?{A} port (\d+): "
)
"""The first `` ADDR port N: `` after the user name, which cannot hold a ``:`` (as for
``_DISCONNECTING``): the reason after it is not the user's to place an address before."""
_TIMEOUT = _re(r"Timeout before authentication for (?:connection from )?{A}(?:$| |,)")
_DROP = _re(r"drop connection #\d+ from \[{A}\]:(\d+) on ")
_REPEATED = _re(r"message repeated (\d{1,9}) times?: \[ ?(.*)\]$")
"""rsyslog's RepeatedMsgReduction (Ubuntu's default): N more of the message in brackets."""
_MAX_REPEAT = 1000
"""The most times one line counts (what a detector needs is far less)."""
_KERNEL = re.compile(r"kernel:\s*\[\s*[\d.]+\]:?\s*")
_RFC5424 = re.compile(
    r"<\d{1,3}>1 (\S+) \S+ (sshd\S*) (\S+) \S+ (?:-|(?:\[(?:[^\]\"\\]|\"(?:[^\"\\]|\\.)*\")*\])+) "
)

_PRE = SshKind.PREAUTH
_NEG = SshKind.NEGOTIATION
# Module constants: an enum attribute costs ~70 ns a lookup on the hot path.
_FAILED_PASSWORD = SshKind.FAILED_PASSWORD
_FAILED_PUBKEY = SshKind.FAILED_PUBKEY
_INVALID_USER = SshKind.INVALID_USER
_ACCEPTED_KIND = SshKind.ACCEPTED
_PAM_FAILURE = SshKind.PAM_FAILURE
_PREFIXED = frozenset("efk[")
"""First characters of the prefixes ``_message`` strips (error:, fatal:, kernel:, [ID)."""
_new = tuple.__new__


class SshdConfig(StrictModel):
    """``[parsers.sshd]``: no settings of its own."""


class SshdParser(Parser):
    """Parses sshd syslog/journal lines into :class:`SshEvent`."""

    name = "sshd"
    sniff = 40

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._syslog_time = SyslogTime(ctx.clock.now, ctx.timezone)
        self._syslog_cache = self._syslog_time.cache
        self._iso_time = IsoTime()

    def parse(self, line: str) -> SshEvent | None:
        """The authentication event this line reports, or ``None``."""
        if "sshd" not in line:
            return None
        split = self._split(line)
        if split is None:
            return None
        stamp, tag, msg = split
        repeat = 1
        if msg[:1] == "m" and msg.startswith("message repeated "):
            m = _REPEATED(msg)
            if m is None:
                return None
            repeat = min(int(m[1]), _MAX_REPEAT)
            msg = m[2]
        found = self._message(msg)
        if found is None:
            return None
        kind, addr, user, port = found
        ts = self._syslog_cache.get(stamp)
        if ts is None:
            ts = self._iso_time(stamp) if stamp[0].isdigit() else self._syslog_time(stamp)
            if ts is None:
                return None
        if addr[0] == ":":
            addr = normalize_addr(addr)
        pid: int | None
        try:
            if tag[4:5] == "[":  # "sshd[123]": nearly always
                pid = int(tag[5:-1])
            elif tag[-1:] == "]":  # "sshd-session[123]"
                pid = int(tag[tag.find("[") + 1 : -1])
            else:  # "123" (RFC 5424), or "sshd" / "" without one
                pid = int(tag) if tag else None
        except ValueError:  # "[sshd]", "-": no pid
            pid = None
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (hot path).
        port_n = int(port) if port else None
        return _new(SshEvent, (ts, self.source, addr, kind, user, port_n, pid, repeat))

    @staticmethod
    def is_sshd_line(line: str) -> bool:
        """Whether ``line`` is an sshd log line at all (used to sniff formats)."""
        return "sshd" in line and SshdParser._split(line) is not None

    def looks_like(self, line: str) -> bool:
        """Any sshd line counts for sniffing, not only those about authentication."""
        return self.parse(line) is not None or self.is_sshd_line(line)

    def unrecognised(self, lines: Sequence[str], parsed: int) -> int | None:
        """``None``: an sshd log is syslog's auth log, where cron, sudo and logind write
        too (on a host whose sshd is firewalled, only they), so lines that are not sshd's
        say nothing about whether its lines are understood."""
        return None

    @staticmethod
    def _split(line: str) -> tuple[str, str, str] | None:
        """(timestamp text, tag, message) of an sshd line, or ``None`` for another program.

        The tag is ``sshd[PID]`` (or the PID alone in RFC 5424), ``""`` when there is none.
        """
        first = line[:1]
        if first.isalpha():  # "Nov 25 23:14:30 host sshd[1]: " or "Nov 5 ..."
            stamp = line[:15] if line[6:7] == " " else line[:14]
            start = len(stamp)
        elif first.isdigit():  # "2026-11-25T23:14:30.1+00:00 host sshd[1]: "
            start = line.find(" ")
            if start < 0:
                return None
            stamp = line[:start]
        elif first == "<":
            m = _RFC5424.match(line)
            if m is None:
                return None
            return m.group(1), m.group(3), line[m.end() :]
        else:
            return None
        if line.startswith(" [sshd] ", start):  # an old writer: no colon after the tag
            return stamp, "", line[start + 8 :]
        end = line.find(": ", start)
        if end < 0:
            return None
        tag = line[line.rfind(" ", start, end) + 1 : end]
        if not (tag.startswith(("sshd", "[sshd")) and tag.endswith(("]", "sshd"))):
            return None
        return stamp, tag, line[end + 2 :]

    @staticmethod
    def _message(msg: str) -> tuple[SshKind, str, str | None, str | None] | None:
        """(kind, address, user, port) for a message sshd writes about authentication."""
        if msg[:1] in _PREFIXED:  # one test for the prefixes below (hot path)
            if msg.startswith(("error: ", "fatal: ")):
                msg = msg[7:]
            elif msg.startswith("[ID "):
                msg = msg[msg.find("] ") + 2 :]
            elif msg.startswith("kernel:"):
                msg = _KERNEL.sub("", msg, count=1)
        c = msg[:3]
        if c == "Fai":
            m = _auth_match(msg, _FAILED, _FAILED_LOOSE)
            if m is None:
                return None
            method, invalid, user, addr, port = m.groups()
            if method == "publickey":
                kind = _INVALID_USER if invalid else _FAILED_PUBKEY
            else:
                kind = _FAILED_PASSWORD
            return kind, addr, user, port
        if c == "Inv":
            m = _INVALID(msg)
            return None if m is None else (_INVALID_USER, m[2], m[1], m[3])
        if c == "Con":
            if not msg.endswith("[preauth]"):
                return None
            m = _CLOSED(msg)
            return None if m is None else (_PRE, m[2], m[1], m[3])
        if c == "Dis":
            if msg.startswith("Disconnected"):
                if not msg.endswith("[preauth]"):
                    return None
                m = _DISCONNECTED(msg)
                return None if m is None else (_PRE, m[2], m[1], m[3])
            m = _DISCONNECTING(msg)
            return None if m is None else (_PRE, m[2], m[1], m[3])
        if c == "Acc":
            m = _auth_match(msg, _ACCEPTED, _ACCEPTED_LOOSE)
            return None if m is None else (_ACCEPTED_KIND, m[2], m[1], m[3])
        if c == "Rec":
            if not msg.endswith(("[preauth]", "Auth fail")):
                return None
            m = _RECEIVED(msg)
            return None if m is None else (_PRE, m[1], None, m[2])
        if c == "pam":
            if "(sshd:auth): authentication failure;" not in msg:
                return None
            m = _PAM_MODULE(msg)
            return None if m is None else (_PAM_FAILURE, m[1], m[2] or None, None)
        return SshdParser._rare(msg)

    @staticmethod
    def _rare(msg: str) -> tuple[SshKind, str, str | None, str | None] | None:
        """Less frequent messages, tried in turn."""
        m: re.Match[str] | None
        if msg.startswith("User "):
            m = _NOT_ALLOWED(msg)
            return None if m is None else (SshKind.INVALID_USER, m[2], m[1], None)
        if msg.startswith("maximum auth"):
            m = _MAX_AUTH(msg)
            return None if m is None else (SshKind.MAX_AUTH, m[3], m[2], m[4])
        if msg.startswith("PAM: "):
            m = _PAM_SSHD(msg)
            if m is None:
                return None
            # sshd's own line for a keyboard-interactive/PAM try: the attempt itself
            kind = SshKind.FAILED_PASSWORD if m[1] else SshKind.INVALID_USER
            return kind, m[3], m[2], None
        if msg.startswith("Did not receive"):
            m = _NO_IDENT(msg)
            return None if m is None else (_PRE, m[1], None, m[2])
        if msg.startswith(("Bad protocol", "Bad remote protocol")):
            m = _BAD_PROTO(msg)
            return None if m is None else (_NEG, m[1], None, m[2])
        if msg.startswith("Unable to negotiate with "):
            m = _NEGOTIATE(msg)
            return None if m is None else (_NEG, m[1], None, m[2])
        if msg.startswith(("banner exchange", "ssh_dispatch_run_fatal")):
            m = _CONNECTION_FROM(msg)
            return None if m is None else (_NEG, m[2], m[1], m[3])
        if msg.startswith("Protocol major"):
            m = _MAJOR(msg)
            return None if m is None else (_NEG, m[1], None, m[2])
        if msg.startswith("Timeout before"):
            m = _TIMEOUT(msg)
            return None if m is None else (SshKind.TIMEOUT, m[1], None, None)
        if msg.startswith("drop connection"):
            m = _DROP(msg)
            return None if m is None else (SshKind.REFUSED, m[1], None, m[2])
        if msg.startswith("ROOT LOGIN REFUSED"):
            m = _ROOT_REFUSED(msg)
            return None if m is None else (SshKind.INVALID_USER, m[1], "root", m[2])
        if msg.startswith("refused connect"):
            m = _REFUSED_CONNECT(msg)
            return None if m is None else (SshKind.REFUSED, m[1], None, None)
        return None


def message_event(message: str, ts: float, source: str, pid: int | None = None) -> SshEvent | None:
    """The event one sshd message reports, or ``None``.

    ``message`` is the text sshd logged (what follows ``sshd[PID]: `` in syslog), ``ts``
    when (epoch seconds) and ``pid`` which process: the journald source has them as
    separate entry fields, so nothing is formatted into a line and parsed back.
    """
    found = SshdParser._message(message)
    if found is None:
        return None
    kind, addr, user, port = found
    if addr[0] == ":":
        addr = normalize_addr(addr)
    return _new(SshEvent, (ts, source, addr, kind, user, int(port) if port else None, pid, 1))


REGISTRY.register("sshd", SshdConfig, SshdParser)
