"""``nginx-error``: auth_basic failures and request limiting from nginx's error log.

Lines look like ``2015/01/21 10:56:10 [error] 2833#0: *16336 MESSAGE, client: ADDR,
server: NAME, request: "...", host: "..."`` (server local time), possibly behind a
journal prefix (``host nginx[2833]: ``). Recognised messages:

* ``user "NAME" was not found in "FILE"`` -> :class:`HttpAuthFailure` ``user_not_found``
* ``user "NAME": password mismatch`` -> ``password_mismatch``
* ``no user/password was provided for basic authentication`` -> ``no_credentials``
  (every browser sends one before asking its user: detectors must not treat it as a guess)
* ``PAM: user 'NAME' - not authenticated: ...`` (ngx_http_auth_pam_module) -> ``pam_failure``
* ``limiting requests``, ``delaying request`` (limit_req) and ``limiting connections``
  (limit_conn) -> :class:`HttpRateLimited`

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
from aisentinel.parsers.proxy import ADDR_RE, normalize_addr
from aisentinel.parsers.timestamps import NginxErrorTime

Event = HttpAuthFailure | HttpRateLimited

_HEAD = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[[a-z]+\] \d+#\d+: (?:\*\d+ )?")
_AUTH_TAIL = re.compile(
    r'"(: password mismatch| was not found in "[^"]*"), client: (' + ADDR_RE + r")(?:,|$)"
)
_LIMIT = re.compile(
    r"(?:limiting requests, excess: [\d.]+|delaying request, excess: [\d.]+,|limiting connections)"
    r' by zone "([^"]*)", client: (' + ADDR_RE + r")(?:,|$)"
)
_NO_CREDS = re.compile(
    r"no user/password was provided for basic authentication, client: (" + ADDR_RE + r")(?:,|$)"
)
_PAM = re.compile(
    r"PAM: user '([^:]*)' - not authenticated: [^,]*, client: (" + ADDR_RE + r")(?:,|$)"
)


class NginxErrorConfig(StrictModel):
    """``[parsers.nginx-error]``: no settings of its own."""


class NginxErrorParser(Parser):
    """Parses nginx error-log lines into auth-failure and rate-limit events."""

    name = "nginx-error"
    sniff = 20

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._time = NginxErrorTime()

    def parse(self, line: str) -> Event | None:
        """The auth failure or rate limiting this line reports, or ``None``."""
        # Every message we read names a user, or is limit_req/limit_conn: skip the rest
        # (upstream timeouts, buffering warnings...) before any regex.
        if "client: " not in line or (
            "user" not in line and "limiting " not in line and "delaying " not in line
        ):
            return None
        head = _HEAD.match(line) if line[:1].isdigit() else _HEAD.search(line)
        if head is None:
            return None
        msg = line[head.end() :]
        if msg.startswith("user "):
            found = self._auth(msg)
            if found is None:
                return None
            user, reason, addr = found
        elif msg.startswith(("limiting ", "delaying ")):
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

    def looks_like(self, line: str) -> bool:
        """Any nginx error-log line counts for sniffing, not only auth failures."""
        return self.parse(line) is not None or self.is_error_line(line)

    @staticmethod
    def is_error_line(line: str) -> bool:
        """Whether ``line`` is an nginx error-log line at all (used to sniff formats)."""
        return _HEAD.search(line) is not None

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
