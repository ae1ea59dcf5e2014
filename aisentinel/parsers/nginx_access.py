"""``nginx``: the access log in nginx's ``combined`` format.

``$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
"$http_referer" "$http_user_agent"``, optionally followed by more fields; a third
quoted field is read as ``$http_x_forwarded_for``. Referer and user agent may be
missing (``common`` format). nginx escapes ``"`` inside fields as ``\\x22``, so a
quoted field never contains a bare quote. A request line that is not
``METHOD TARGET HTTP/x`` with a version nginx serves (``"-"``, ``""``, a TLS
handshake sent to a plain-HTTP port, ``HTTP/9.9``) is kept: ``method`` is ``""``
and ``path`` is the request text as logged.

A line longer than the source's cap (``max_line_bytes``: 1 MiB for this format) comes cut
(a :class:`~aisentinel.events.CutLine`). Cut in the referer, the user agent or a field
after them, it reads as usual up to the last whole field. Cut inside the request line
(a long URL: up to ``large_client_header_buffers``, each byte escaped into up to 4), the
request is read from what is left (:meth:`NginxAccessParser.cut_request`): its method and
the target up to the cut, status 0 (unknown), no user. With trusted proxies, a cut line
from a trusted proxy whose forwarded-for field was lost to the cut is left unparsed: its
client cannot be told, and the proxy must not be taken for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aisentinel.configtypes import StrictModel
from aisentinel.events import CutLine, HttpRequest
from aisentinel.parsers.base import (
    ACCESS_LINE_BYTES,
    REGISTRY,
    Parser,
    ParserContext,
    SetupProblem,
)
from aisentinel.parsers.proxy import (
    LOOPBACK_STARTS,
    LoopbackWatch,
    ProxyResolver,
    normalize_addr,
)
from aisentinel.parsers.timestamps import NginxTimeLocal

_USER = r"([^ ]++)"
_REST = (
    r' \[([^\]]{26})\] "(?:([A-Z]++) ([^" ]*+) HTTP/(?:1\.[01]|[23]\.0)|([^"]*+))" '
    r'([0-9]{3}) ([0-9]++|-)(?: "([^"]*+)")?(?: "([^"]*+)")?'
)
_HEAD = r"([0-9A-Fa-f.:]++) [^ ]++ " + _USER + _REST
_LINE = re.compile(_HEAD + r'(?: "([^"]*+)")?')
"""One combined line and the ``$http_x_forwarded_for`` after it; the request is split
by the regex when it is well formed.

Possessive quantifiers (Python 3.11) never backtrack into a field: about 12% faster
than the same pattern with greedy ones, and the same matches on valid lines."""

_LINE_NO_XFF = re.compile(_HEAD + "()")
"""The same without looking for a forwarded-for field (its group is always empty),
for when no proxy is trusted and that field would be ignored: about 13% less time
per line."""

_SPACED = re.compile(r"([0-9A-Fa-f.:]++) - ([^\"]+?)" + _REST + r'(?: "([^"]*+)")?')
"""The same as :data:`_LINE` for a ``$remote_user`` with spaces in it, tried when that
fails. nginx fills ``$remote_user`` from any ``Authorization: Basic`` header (with or
without ``auth_basic``) and does not escape spaces, so a client can send ``a b:c`` on
every request; without this its lines would not parse and it would be invisible to
every HTTP detector. nginx does escape ``"`` in the field (``\\x22``), and a user
name holds no ``:`` (nginx splits the credentials at the first one) where a time has
three, so the time is the first `` [...] "`` after the address: the user field cannot
forge another time or request. A user that ends in `` -`` (``curl -u 'x -:pw'``) reads
as no user (``None``): the same text is what a format with another field before the
time writes (``$remote_addr - $host - [$time_local]``), which must not be taken for a
user (detectors count one as a credential), and a client must not be able to make its
lines unparsed by choosing its user name."""

_XFF_FIELD = re.compile(r' "([^"]*+)"')
"""The quoted field after the user agent (``$http_x_forwarded_for`` in ``combined_xff``),
read from where :data:`_LINE_NO_XFF` stopped, for a request from a loopback peer."""

_CUT_REQUEST = re.compile(r'([0-9A-Fa-f.:]++) [^ ]++ ([^ ]++) \[([^\]]{26})\] "([^"]*+)\Z')
"""A combined line cut inside its request line: address, user, time, the request so far."""

_new = tuple.__new__

_STATUS = {f"{code:03d}": code for code in range(1000)}
"""Every status the regex accepts (three digits) -> its value: one dict lookup a line
instead of an ``int()`` call."""


HTTP_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0"})
"""The versions nginx writes in ``$request`` for requests it served (HTTP/2 and 3 as
``2.0``/``3.0``); a request line with another is kept whole as not understood."""


_SERVED_VERSION = re.compile(r"HTTP/(?:1\.[0-9]++|[23]\.0)")
"""The versions nginx serves: HTTP/1 with any minor version (``HTTP/1.2``, ``HTTP/1.01``
are served as 1.1), and the 2.0 and 3.0 it writes for HTTP/2 and 3."""

_METHOD = re.compile(r"[A-Z_-]++")
"""The characters nginx accepts in a method."""


def split_request(request: str) -> tuple[str, str]:
    """``"GET /x HTTP/1.1"`` -> ``("GET", "/x")``, also when written otherwise but served
    by nginx (``"GET  /x HTTP/1.2 "``); anything else (an HTTP version nginx does not
    serve included) -> ``("", request)``."""
    parts = request.split(" ")
    if len(parts) == 3 and parts[2] in HTTP_VERSIONS:
        return parts[0], parts[1]
    if len(parts) == 2 and parts[0].isalpha() and parts[0].isupper():
        return parts[0], parts[1]  # HTTP/0.9 style "GET /"
    # Served too, so a client must not hide its target with them: runs of spaces
    # between or after the parts, another HTTP/1 minor version, a target with spaces
    # (nginx served those before 1.21.1). Linear: no regex runs over the spaces.
    head, sep, version = request.rstrip(" ").rpartition(" ")
    if sep and _SERVED_VERSION.fullmatch(version) is not None:
        method, sep, target = head.partition(" ")
        target = target.strip(" ")
        if sep and target and _METHOD.fullmatch(method) is not None:
            return method, target
    return "", request


class NginxAccessConfig(StrictModel):
    """``[parsers.nginx]``: no settings of its own (trusted proxies are in ``[parsers]``)."""


class NginxAccessParser(Parser):
    """Parses ``combined`` access-log lines into :class:`HttpRequest`."""

    name = "nginx"
    sniff = 15
    max_line_bytes = ACCESS_LINE_BYTES

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._time = NginxTimeLocal()
        self._time_cache = self._time.cache
        proxy = self._proxy = ProxyResolver(ctx.trusted_proxies, ctx.forwarded_header)
        self._resolve = proxy.client if proxy.enabled else None
        self._match = (_LINE if proxy.enabled else _LINE_NO_XFF).match
        self._loopback = LoopbackWatch(proxy)

    def parse(self, line: str) -> HttpRequest | None:
        """The request this line records, or ``None`` if it is not a combined line."""
        found, _ = self._requests((line,))
        return found[0] if found else None

    def parse_many(self, lines: Iterable[str]) -> list[HttpRequest]:
        """The requests of ``lines``, in order; lines that are not combined lines are
        skipped. Whether every client is an untrusted local proxy
        (:class:`~aisentinel.parsers.proxy.LoopbackWatch`) is judged over the batches."""
        if not isinstance(lines, list | tuple):
            lines = list(lines)
        out, via_loopback = self._requests(lines)
        watch = self._loopback
        if watch.add(len(lines), via_loopback) and watch.proxied:
            self.notice("loopback-proxy", watch.notice(), peer=watch.peer)
        return out

    def _requests(self, lines: Iterable[str]) -> tuple[list[HttpRequest], int]:
        """The requests of ``lines``, in order (see :meth:`parse_many`), and how many of
        them came from an untrusted loopback peer on behalf of another client
        (:meth:`~aisentinel.parsers.proxy.LoopbackWatch.counts`)."""
        match = self._match
        times = self._time_cache
        to_time = self._time
        source = self.source
        resolve = self._resolve
        statuses = _STATUS
        out: list[HttpRequest] = []
        append = out.append
        via_loopback = 0
        untrusted = self._loopback.untrusted
        for line in lines:
            m = match(line)
            spaced = False
            if m is None:
                m = _SPACED.match(line)
                if m is None:
                    if type(line) is CutLine and (cut := self.cut_request(line)) is not None:
                        append(cut)
                    continue
                spaced = True
            peer, user, when, method, path, raw, status, sent, referer, agent, xff = m.groups()
            if spaced and user.endswith(" -"):
                user = "-"  # no user: see _SPACED
            ts = times.get(when)
            if ts is None:
                ts = to_time(when)
                if ts is None:
                    continue
            if peer[0] == ":":
                peer = normalize_addr(peer)
            if (
                peer.startswith(LOOPBACK_STARTS)
                and untrusted(peer)
                and self._forwards(line, m, peer, spaced)
            ):
                via_loopback += 1
            if (
                xff is None
                and resolve is not None
                and type(line) is CutLine
                and self._proxy.is_trusted(peer)
            ):
                continue  # its forwarded-for field was cut off: the client is unknown
            if method is None:
                method, path = split_request(raw)
            if user == "-":
                user = None
            elif user[0] == '"':
                user = user.strip('"') or None
            # tuple.__new__ skips the NamedTuple's Python-level __new__ (hot path); the
            # field order is HttpRequest's.
            append(
                _new(
                    HttpRequest,
                    (
                        ts,
                        source,
                        peer if resolve is None else resolve(peer, xff),
                        method,
                        path,
                        statuses[status],
                        0 if sent == "-" else int(sent),
                        user,
                        agent or "",
                        None,
                        None,
                        None,
                        None,
                        None,
                        None if not referer or referer == "-" else referer,
                    ),
                )
            )
        if resolve is not None and self._proxy.layout_suspect():
            self.notice(
                "unforwarded",
                "most requests from trusted proxies carry no X-Forwarded-For field: each "
                "is taken as the proxy's own request, and the proxy is never banned; the "
                '`nginx` parser reads it as the quoted field right after "$http_user_agent" '
                "(see docs/nginx-log-format.md)",
            )
        return out, via_loopback

    def problems(self) -> list[SetupProblem]:
        """Every client taken for a local proxy that is not trusted (:class:`LoopbackWatch`)."""
        return self._loopback.problems()

    def _forwards(self, line: str, m: re.Match[str], peer: str, spaced: bool) -> bool:
        """Whether the request ``m`` matched, from ``peer`` (an untrusted loopback peer),
        is one :class:`~aisentinel.parsers.proxy.LoopbackWatch` counts: its
        forwarded-for field (the quoted one right after the user agent, read whether or
        not a proxy is trusted) names a client."""
        if spaced or self._resolve is not None:
            forwarded = m.group(11)
        else:  # _LINE_NO_XFF stopped after the user agent
            field = _XFF_FIELD.match(line, m.end())
            forwarded = None if field is None else field.group(1)
        return self._loopback.forwards(peer, forwarded)

    def cut_request(self, line: str) -> HttpRequest | None:
        """The request of a line cut inside its request line, or ``None``.

        Method and target come from what is left of the request line (the target up to
        the cut); the status, sent bytes, referer and user agent are lost: status 0
        (unknown; nginx's own ``000``) and no user, so that
        a request of unknown outcome never counts as an authenticated one.
        """
        m = _CUT_REQUEST.match(line)
        if m is None:
            return None
        peer, _user, when, raw = m.groups()
        ts = self._time(when)
        if ts is None:
            return None
        if peer[0] == ":":
            peer = normalize_addr(peer)
        if self._resolve is not None and self._proxy.is_trusted(peer):
            return None  # the forwarded-for field is lost: the client is unknown
        method, sep, target = raw.partition(" ")
        if sep and method.isalpha() and method.isupper():
            path = target.partition(" ")[0]
        else:
            method, path = "", raw
        return HttpRequest(ts, self.source, peer, method, path, 0, 0, None, "")


REGISTRY.register("nginx", NginxAccessConfig, NginxAccessParser)
