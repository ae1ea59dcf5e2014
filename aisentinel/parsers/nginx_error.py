"""``nginx-error``: auth_basic failures and request limiting from nginx's error log.

Lines look like ``2015/01/21 10:56:10 [error] 2833#0: *16336 MESSAGE, client: ADDR,
server: NAME, request: "...", host: "..."`` (server local time), at the start of the
line or behind a syslog, journal or container-log prefix (``host nginx[2833]: ``,
``Dec  7 19:00:00 host nginx[2833]: ``, RFC 5424, every ``journalctl -o short*``,
``nginx-1  | ``; the list is in docs/nginx-log-format.md); a head anywhere else is
request text (see :data:`_PREFIXED_HEAD`). Recognised messages:

* ``user "NAME" was not found in "FILE"`` -> :class:`HttpAuthFailure` ``user_not_found``
* ``user "NAME": password mismatch`` -> ``password_mismatch``
* ``no user/password was provided for basic authentication`` -> ``no_credentials``
  (every browser sends one before asking its user: detectors must not treat it as a guess)
* ``PAM: user 'NAME' - not authenticated: ...`` (ngx_http_auth_pam_module) -> ``pam_failure``
* ``limiting requests`` (limit_req) and ``limiting connections`` (limit_conn) ->
  :class:`HttpRateLimited`. Not ``delaying request``: a request within ``burst`` (without
  ``nodelay``) is served, only later; it is no rejection.

With ``[parsers] trusted_proxies``, a line whose client is a trusted proxy returns
``None``: the error log has no X-Forwarded-For, the real client is unknown (nginx's
realip module makes it log the real client).

Everything else returns ``None``, in particular ``open() ... failed (2: No such file
or directory)``: the access log records the same request with its 404, and reading
it from both logs would count every probe twice.

The user name in an auth line is chosen by the client and may contain quotes,
commas and text that looks like ``", client: 6.6.6.6``; headers written after the
client address may too. A basic-auth user name cannot contain ``:`` (nginx splits
the credentials at the first colon), so the real message is the first
``user "..."`` whose name has no colon.
"""

from __future__ import annotations

import re

from aisentinel.configtypes import StrictModel
from aisentinel.events import HttpAuthFailure, HttpRateLimited
from aisentinel.parsers.base import REGISTRY, Parser, ParserContext
from aisentinel.parsers.proxy import ADDR_RE, ProxyResolver, normalize_addr
from aisentinel.parsers.timestamps import NginxErrorTime

Event = HttpAuthFailure | HttpRateLimited

_HEAD_TEXT = r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[[a-z]+\] \d+#\d+: (?:\*\d+ )?"
_HEAD = re.compile(_HEAD_TEXT)
"""The head of an error-log line, at its start: time, level, pid#tid, connection."""
_ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
"""RFC 3339 (rsyslog's file format, ``journalctl -o short-iso[-precise]``, docker)."""
_BSD_TIME = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d{1,9})?"
"""BSD syslog / ``journalctl -o short`` (``Dec  7 19:00:00``), ``-o short-precise``
(``Dec 07 19:00:00.123456``)."""
_SYSLOG_TIME = (
    f"(?:{_BSD_TIME}|{_ISO_TIME}"
    r"|[A-Z][a-z]{2} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [\w+/-]+"  # -o short-full
    r"|\[ *\d+\.\d+\]"  # -o short-monotonic: [ 1234.567890]
    r"|\d+\.\d+)"  # -o short-unix: 1733598000.123456
)
"""The times a syslog file or ``journalctl`` writes before the host."""
_HOST = r"[\w.:/-]*[\w./-]"
"""A host (name, address, syslog-ng's ``web/10.0.0.5``); not ending in ``:``, so that
a tag's ``prog:`` is never read as a host."""
_TAG = r"[\w./@-]+(?:\[\d+\])?: "
"""A syslog tag and pid (``nginx[983]: ``, ``docker/1a2b3c4d5e6f[983]: ``,
``nginx@site[1]: ``)."""
_RELAYED = f"(?:{_BSD_TIME}|{_ISO_TIME}) {_HOST} {_TAG}"
"""The whole syslog header of a relayed line, after the relay's own."""
_PREFIX = (
    r"\ufeff?\s*+(?:"  # a BOM or blanks left at the start of a file or line
    # syslog / journal: [<PRI>][TIME ][HOST ]TAG[pid]: ; relayed, the relay's TIME HOST
    # [TAG: ] before a whole second header TIME HOST TAG: (never a bare "a b: ", which
    # any program's message may start with); nginx's own syslog header after journald
    # took its time (error_log syslog:server=unix:/dev/log): nginx[pid]: HOST TAG:
    rf"(?:<\d{{1,3}}>)?(?:{_SYSLOG_TIME} )?(?:"
    rf"(?:{_HOST} )?nginx(?:\[\d+\])?: {_HOST} \w{{1,32}}: "
    rf"|(?:{_HOST} )?{_TAG}(?:{_RELAYED})?|{_HOST} {_RELAYED})"
    # RFC 5424: <PRI>1 TIME HOST APP PROCID MSGID STRUCTURED-DATA [BOM]
    rf"|<\d{{1,3}}>1 (?:{_ISO_TIME}|-) \S+ \S+ \S+ \S+ "
    r'(?:-|(?:\[[^\]"]*(?:"(?:[^"\\]|\\.)*"[^\]"]*)*\])+) \ufeff?'
    # docker compose logs: "nginx-1  | " (an optional docker -t time after it)
    rf"|[\w.-]+ +\| (?:{_ISO_TIME} )?"
    # docker logs -t, kubectl logs --timestamps, a CRI log file (containerd, podman)
    rf"|{_ISO_TIME} (?:(?:stdout|stderr) [FP] )?"
    "|)"  # none: the head after the blanks alone
)
_PREFIXED_HEAD = re.compile(_PREFIX + _HEAD_TEXT)
"""The head after a syslog, journal or container-log prefix (``Dec  7 19:00:00 host
nginx[983]: ``, ``nginx-1  | ``, ``<163>1 2026-12-07T19:00:00Z web nginx 983 - - ``),
and nothing else: only the writer of the log writes there. A head found anywhere else
in a line is text of the request (a user agent, a user name, a path in an access log or
in an sshd line read as nginx's error log) and reads as nothing: a client must not
write an error-log line of its own, framing another address or poisoning sniffing."""
_AUTH_TAIL = re.compile(
    r'"(: password mismatch| was not found in "[^"]*"), client: (' + ADDR_RE + r")(?:,|$)"
)
_LIMIT = re.compile(
    r"(?:limiting requests, excess: [\d.]+|limiting connections)"
    r' by zone "([^"]*)", client: (' + ADDR_RE + r")(?:,|$)"
)
_NO_CREDS = re.compile(
    r"no user/password was provided for basic authentication, client: (" + ADDR_RE + r")(?:,|$)"
)
_PAM = re.compile(
    r"PAM: user '([^:]*)' - not authenticated: [^,]*, client: (" + ADDR_RE + r")(?:,|$)"
)


def _head(line: str) -> re.Match[str] | None:
    """The error-log head at the start of ``line`` or after a syslog/journal prefix."""
    if line[:1].isdigit() and (head := _HEAD.match(line)) is not None:
        return head
    return _PREFIXED_HEAD.match(line)


class NginxErrorConfig(StrictModel):
    """``[parsers.nginx-error]``: no settings of its own."""


class NginxErrorParser(Parser):
    """Parses nginx error-log lines into auth-failure and rate-limit events."""

    name = "nginx-error"
    sniff = 20

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._time = NginxErrorTime(ctx.timezone, ctx.clock.now)
        self._proxy = ProxyResolver(ctx.trusted_proxies)

    def parse(self, line: str) -> Event | None:
        """The auth failure or rate limiting this line reports, or ``None`` (also when
        its client is a trusted proxy: see :meth:`skipped`)."""
        event = self._event(line)
        if event is None or self._from_proxy(event.client):
            return None
        return event

    def skipped(self, line: str) -> str | None:
        """Why a line that reports an auth failure or a rate limiting gave no event: its
        client is a trusted proxy (``None`` for any other line)."""
        event = self._event(line)
        if event is None or not self._proxy.enabled or not self._proxy.is_trusted(event.client):
            return None
        return (
            f"its client {event.client} is a trusted proxy: the error log has no "
            "X-Forwarded-For, so the real client is unknown and the line is left unparsed "
            "rather than blamed on the proxy (nginx's realip module logs the real client)"
        )

    def _event(self, line: str) -> HttpAuthFailure | HttpRateLimited | None:
        """The auth failure or rate limiting this line reports, whoever its client."""
        # Every message we read names a user, or is limit_req/limit_conn: skip the rest
        # (upstream timeouts, buffering warnings...) before any regex.
        if "client: " not in line or ("user" not in line and "limiting " not in line):
            return None
        head = _head(line)
        if head is None:
            return None
        msg = line[head.end() :]
        if msg.startswith("user "):
            found = self._auth(msg)
            if found is None:
                return None
            user, reason, addr = found
        elif msg.startswith("limiting "):
            m = _LIMIT.match(msg)
            if m is None:
                return None
            ts = self._time(head.group(1))
            if ts is None:
                return None
            return HttpRateLimited(ts, self.source, normalize_addr(m.group(2)), m.group(1) or None)
        elif msg.startswith("no user/password"):
            m = _NO_CREDS.match(msg)
            if m is None:
                return None
            user, reason, addr = None, "no_credentials", m.group(1)
        elif msg.startswith("PAM: user '"):
            m = _PAM.match(msg)
            if m is None:
                return None
            user, reason, addr = m.group(1), "pam_failure", m.group(2)
        else:
            return None
        ts = self._time(head.group(1))
        if ts is None:
            return None
        return HttpAuthFailure(ts, self.source, normalize_addr(addr), user, reason)

    def _from_proxy(self, addr: str) -> bool:
        """Whether ``addr`` is a trusted proxy: the error log has no X-Forwarded-For, so
        the client behind it is unknown and the line is left unparsed (with a notice
        once), never blamed on the proxy. nginx's realip module logs the real client."""
        if not self._proxy.enabled or not self._proxy.is_trusted(addr):
            return False
        self.notice(
            "from-proxy",
            "error-log lines name a trusted proxy as the client (the error log has no "
            "X-Forwarded-For): they are left unparsed, not blamed on the proxy; enable "
            "nginx's realip module (set_real_ip_from, real_ip_header X-Forwarded-For, "
            "real_ip_recursive on) to log the real client (docs/nginx-log-format.md)",
            proxy=addr,
        )
        return True

    def looks_like(self, line: str) -> bool:
        """Any nginx error-log line counts for sniffing, not only auth failures."""
        return self.parse(line) is not None or self.is_error_line(line)

    def recognises(self, line: str) -> bool:
        """An nginx error-log line at all (its head), without parsing it again."""
        return _head(line) is not None

    @staticmethod
    def is_error_line(line: str) -> bool:
        """Whether ``line`` is an nginx error-log line at all (used to sniff formats)."""
        return _head(line) is not None

    @staticmethod
    def _auth(msg: str) -> tuple[str, str, str] | None:
        """(user, reason, address) of a ``user "..."`` message; see the module notes."""
        if not msg.startswith('user "'):
            return None
        for m in _AUTH_TAIL.finditer(msg, 6):
            user = msg[6 : m.start()]
            if ":" in user:
                continue
            reason = "password_mismatch" if m.group(1)[0] == ":" else "user_not_found"
            return user, reason, m.group(2)
        return None


REGISTRY.register("nginx-error", NginxErrorConfig, NginxErrorParser)
