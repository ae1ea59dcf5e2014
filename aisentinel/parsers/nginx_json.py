"""``nginx-json``: the ``aisentinel`` JSON access-log format.

The nginx side (``log_format aisentinel escape=json '{...}'``) is in
``packaging/nginx/aisentinel-log-format.conf`` and every field is described in
``docs/nginx-log-format.md``. Lines are decoded with the standard library's
:func:`json.loads`: about 3 us for a typical line, well below the cost of the
detectors, and no extra dependency in a security daemon. Unknown keys are
ignored and missing ones take their defaults, so the format can grow.

A line longer than the source's cap (``max_line_bytes``: 1 MiB for this format) comes
cut (a :class:`~aisentinel.events.CutLine`, no longer valid JSON): its fields are read
up to the cut (:func:`cut_object`), the one cut short with what was written of it when
it is a body, a path, a user agent or a referer (an address or a status cut short would
be another one: it is left out). With trusted proxies, a cut line from a trusted proxy
whose forwarded fields were lost to the cut is left unparsed (the proxy is not its
client). The
shipped formats log ``request_body``, the one field that grows that long, last, so only
the end of the body is lost; a field after the cut is missing (a required one: the line
stays unparsed; a path: it is empty).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Container, Iterable
from typing import Any, cast

from aisentinel.configtypes import StrictModel
from aisentinel.events import CutLine, HttpRequest
from aisentinel.parsers.base import (
    ACCESS_LINE_BYTES,
    REGISTRY,
    Parser,
    ParserContext,
    SetupProblem,
)
from aisentinel.parsers.nginx_access import split_request
from aisentinel.parsers.proxy import (
    ADDR_RE,
    LOOPBACK_STARTS,
    LoopbackWatch,
    ProxyResolver,
    normalize_addr,
)
from aisentinel.parsers.timestamps import MAX_TS, MIN_TS, IsoTime

_ADDR = re.compile(ADDR_RE)
_new = tuple.__new__
_DECODER = json.JSONDecoder(strict=False)
_PARTIAL = frozenset(
    {"request_body", "request_uri", "request", "path", "uri", "http_user_agent", "http_referer"}
)
"""The fields read from a cut line even when cut short themselves (see :func:`cut_object`)."""
_XFF_KEYS = ("xff", "http_x_forwarded_for", "x_forwarded_for")
"""The keys read as the ``X-Forwarded-For`` chain, first present wins: the shipped
format's, then those of widely copied JSON formats (ingress-nginx, Loki/ELK examples)."""
_FORWARDED = ("real_ip", *_XFF_KEYS)
_PATH_KEYS = ("request_uri", "request", "path", "uri")
"""The keys a path is read from, first present wins: ``request_uri``; ``request``
(``$request``, ``"GET /x HTTP/1.1"``, split); ``path`` or ``uri`` (``$uri``: no query)."""


def _skip_space(line: str, pos: int) -> int:
    while line.startswith((" ", "\t", "\n", "\r"), pos):
        pos += 1
    return pos


def _cut_string(line: str, pos: int) -> str | None:
    """The JSON string that starts at ``pos`` and runs to the end of ``line``, where it
    was cut: what was written of it, a half escape sequence (or half a surrogate pair)
    at the cut left out."""
    end = len(line)
    last = line.rfind("\\", pos + 1)
    if last >= end - 5:  # a backslash near the cut: the start of an escape, or escaped?
        first = last
        while line[first - 1] == "\\" and first > pos + 1:
            first -= 1
        escape = line[last:end]
        starts = (last - first) % 2 == 0  # odd run: the last one starts an escape
        if starts and (len(escape) < 2 or (escape[1] == "u" and len(escape) < 6)):
            end = last
    try:
        text = _DECODER.decode(f'{line[pos:end]}"')
    except ValueError:
        return None
    if not isinstance(text, str):
        return None
    if text and "\ud800" <= text[-1] <= "\udbff":
        text = text[:-1]  # the first half of a surrogate pair whose second half was cut
    return text


def cut_object(line: str, partial: Container[str]) -> dict[str, Any]:
    """The fields of a JSON object cut short: every whole ``"key": value`` before the
    cut, and the string value cut short with what was written of it if its key is in
    ``partial`` (a body or a path cut short is still what was sent; an address, a status
    or a key id cut short would be another one). Reading stops at the cut or at anything
    that is not JSON (an empty dict if the line is no object)."""
    data: dict[str, Any] = {}
    pos = _skip_space(line, 0)
    if not line.startswith("{", pos):
        return data
    pos += 1
    while True:
        pos = _skip_space(line, pos)
        if not line.startswith('"', pos):
            return data
        try:
            key, pos = _DECODER.raw_decode(line, pos)
        except (ValueError, RecursionError):
            return data
        pos = _skip_space(line, pos)
        if not line.startswith(":", pos):
            return data
        pos = _skip_space(line, pos + 1)
        try:
            value, pos = _DECODER.raw_decode(line, pos)
        except (ValueError, RecursionError):
            if key in partial and line.startswith('"', pos):
                data[key] = _cut_string(line, pos)
            return data
        if pos == len(line) and isinstance(value, int | float):
            return data  # a number at the cut may have lost digits
        data[key] = value
        pos = _skip_space(line, pos)
        if not line.startswith(",", pos):
            return data
        pos += 1


def _text(value: Any) -> str:
    """A field as text; nginx writes ``""`` or ``"-"`` for an unset variable."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


_MISSING: Any = object()
"""A key the record does not hold (``data.get(key, _MISSING)``)."""

_UNSET = ("", "-")
"""What nginx writes for an unset variable."""


def _opt_text(value: Any) -> str | None:
    text = _text(value)
    return None if text in _UNSET else text


def _seconds(value: Any) -> float | None:
    """``"0.123"`` -> 0.123; ``"0.100, 0.050"`` (several upstreams) -> their sum; else None."""
    if type(value) is str:
        # One number, as nginx writes nearly always: what the loop below gives for it.
        try:
            one = float(value)
        except ValueError:
            pass
        else:
            return one if math.isfinite(one) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    text = _text(value)
    if not text or text == "-":
        return None
    total = 0.0
    seen = False
    for raw in text.replace(":", ",").split(","):
        part = raw.strip()
        if not part or part == "-":
            continue
        try:
            total += float(part)
        except ValueError:
            return None
        seen = True
    return total if seen and math.isfinite(total) else None


class NginxJsonConfig(StrictModel):
    """``[parsers.nginx-json]``: no settings of its own."""


class NginxJsonParser(Parser):
    """Parses ``aisentinel`` JSON access-log lines into :class:`HttpRequest`."""

    name = "nginx-json"
    sniff = 10
    max_line_bytes = ACCESS_LINE_BYTES

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._iso = IsoTime()
        self._proxy = ProxyResolver(ctx.trusted_proxies, ctx.forwarded_header)
        self._loopback = LoopbackWatch(self._proxy)

    def parse_many(self, lines: Iterable[str]) -> list[HttpRequest]:
        """The requests of ``lines``, in order; what :meth:`parse` gives, in one loop.
        Whether every client is an untrusted local proxy
        (:class:`~aisentinel.parsers.proxy.LoopbackWatch`) is judged over the batches."""
        if not isinstance(lines, list | tuple):
            lines = list(lines)
        out: list[HttpRequest] = []
        append = out.append
        record = self._record
        event = self._event
        via_loopback = 0
        for line in lines:
            data = record(line)
            if data is None:
                continue
            try:
                found = event(data, type(line) is CutLine)
            except (ValueError, TypeError, OverflowError):
                continue
            if found is None:
                continue
            append(found)
            peer = data["remote_addr"]  # an address (_event read it)
            if type(peer) is str and (peer.startswith(LOOPBACK_STARTS) or peer[0] == ":"):
                via_loopback += self._via_loopback(normalize_addr(peer), data)
        if self._proxy.enabled and self._proxy.layout_suspect():
            self.notice(
                "unforwarded",
                "most requests from trusted proxies carry no forwarded address (keys "
                f"{', '.join(_FORWARDED)}): each is taken as the proxy's own request, and "
                "the proxy is never banned (see docs/nginx-log-format.md)",
            )
        watch = self._loopback
        if watch.add(len(lines), via_loopback) and watch.proxied:
            self.notice("loopback-proxy", watch.notice(), peer=watch.peer)
        return out

    def problems(self) -> list[SetupProblem]:
        """Every client taken for a local proxy that is not trusted (:class:`LoopbackWatch`)."""
        return self._loopback.problems()

    def _via_loopback(self, peer: str, data: dict[str, Any]) -> bool:
        """Whether a record from ``peer`` (a loopback-looking address) is one
        :class:`~aisentinel.parsers.proxy.LoopbackWatch` counts: one of its forwarded
        keys (:data:`_FORWARDED`) names a client."""
        watch = self._loopback
        if not watch.untrusted(peer):
            return False
        for key in _FORWARDED:
            value = data.get(key)
            if value and watch.forwards(peer, value if type(value) is str else _text(value)):
                return True
        return False

    def parse(self, line: str) -> HttpRequest | None:
        """The request this line records, or ``None`` (not JSON, or lacking address/status)."""
        data = self._record(line)
        if data is None:
            return None
        try:
            return self._event(data, type(line) is CutLine)
        except (ValueError, TypeError, OverflowError):
            return None

    def looks_like(self, line: str) -> bool:
        """A JSON object with a ``remote_addr`` and a ``status``, also one that lacks
        a path: the format is this one (such lines are then counted as unparsed, with a
        notice naming the keys), not an unknown one."""
        data = self._record(line)
        return data is not None and "remote_addr" in data and "status" in data

    def _record(self, line: str) -> dict[str, Any] | None:
        """The JSON object of ``line`` (what was read of it up to the cut, for a cut
        line), or ``None``: not an object, or a cut line that lost its forwarded fields."""
        text = line
        if not text.startswith("{"):
            text = text.lstrip()
            if not text.startswith("{"):
                return None
        data: object
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            if type(line) is not CutLine:
                return None
            data = cut_object(text, _PARTIAL)
            if self._lost_forwarded(data):
                return None
        if not isinstance(data, dict):
            return None
        record = cast(dict[str, Any], data)  # JSON object keys are strings
        if "\\ud" in text or "\\uD" in text:
            record = _no_lone_surrogates(record)
        return record

    def _lost_forwarded(self, data: dict[str, Any]) -> bool:
        """Whether a cut line came from a trusted proxy and its forwarded fields
        (:data:`_FORWARDED`) are not among those read before the cut: its client cannot be told,
        and the proxy must not be taken for it."""
        if not self._proxy.enabled or any(key in data for key in _FORWARDED):
            return False
        peer = data.get("remote_addr")
        return isinstance(peer, str) and self._proxy.is_trusted(normalize_addr(peer))

    def _event(self, data: dict[str, Any], cut: bool = False) -> HttpRequest | None:
        """The request of a record; ``cut``: read from a line cut short (a path key
        missing from it may have been lost to the cut: the path is then empty)."""
        # nginx's escape=json writes every field as a string: that case is read inline,
        # anything else goes through _text / _opt_text (same result either way).
        get = data.get
        peer = get("remote_addr")
        if type(peer) is not str:
            peer = _text(peer)
        if not peer or _ADDR.fullmatch(peer) is None:
            return None
        if peer[0] == ":":
            peer = normalize_addr(peer)
        status_text = get("status")
        if type(status_text) is not str:
            status_text = _text(status_text)
        if not status_text.isdigit():
            return None
        ts = self._time(get("time"))
        if ts is None:
            return None
        method, path = self._request(get)
        if path is None and cut:
            path = ""  # its path came after the cut: the request still counts
        elif path is None:
            self.notice(
                "no-path",
                "JSON access-log lines carry no path (none of the keys "
                f"{', '.join(_PATH_KEYS)}): they are counted as unparsed; add "
                '"request_uri":"$request_uri" to the log_format (docs/nginx-log-format.md)',
            )
            return None
        client = peer
        if self._proxy.enabled:
            # [parsers] forwarded_header says which of the two to believe first.
            forwarded = None
            for key in _XFF_KEYS:
                if key in data:
                    forwarded = _opt_text(data[key])
                    break
            client = normalize_addr(self._proxy.client(peer, forwarded, _opt_text(get("real_ip"))))
        sent = get("body_bytes_sent")
        if type(sent) is not str:
            sent = _text(sent)
        agent = get("http_user_agent")
        user = get("remote_user")
        user = (None if user in _UNSET else user) if type(user) is str else _opt_text(user)
        key_id = get("key_id")
        key_id = (
            (None if key_id in _UNSET else key_id) if type(key_id) is str else _opt_text(key_id)
        )
        body = get("request_body")
        body = (None if body in _UNSET else body) if type(body) is str else _opt_text(body)
        host = get("host")
        host = (None if host in _UNSET else host) if type(host) is str else _opt_text(host)
        referer = get("http_referer", _MISSING)
        if referer is _MISSING:
            referer = get("http_referrer")  # the spelling of some widely copied formats
        referer = (
            (None if referer in _UNSET else referer) if type(referer) is str else _opt_text(referer)
        )
        # tuple.__new__ skips the NamedTuple's Python-level __new__; HttpRequest's order.
        return _new(
            HttpRequest,
            (
                ts,
                self.source,
                client,
                method,
                path,
                int(status_text),
                int(sent) if sent.isdigit() else 0,
                user,
                agent if type(agent) is str else _text(agent),
                _seconds(get("request_time")),
                _seconds(get("upstream_response_time")),
                key_id,
                body,
                host,
                referer,
            ),
        )

    @staticmethod
    def _request(get: Any) -> tuple[str, str | None]:
        """(method, path) of a record: ``request_method`` (else ``method``) and the first
        of :data:`_PATH_KEYS` present; a ``request`` split as in the combined format,
        which also gives the method when no key does. Path ``None``: no key holds one."""
        method = get("request_method", _MISSING)
        if method is _MISSING:
            method = get("method", _MISSING)
        path = get("request_uri", _MISSING)
        if path is not _MISSING:
            pass
        elif (request := get("request", _MISSING)) is not _MISSING:
            verb, path = split_request(_text(request))
            if method is _MISSING:
                method = verb
        else:
            path = get("path", _MISSING)
            if path is _MISSING:
                path = get("uri", _MISSING)
                if path is _MISSING:
                    return _text(None if method is _MISSING else method), None
        return (
            method if type(method) is str else _text(None if method is _MISSING else method),
            path if type(path) is str else _text(path),
        )

    def _time(self, value: Any) -> float | None:
        """``$msec`` (``"1764112470.123"``) or ``$time_iso8601`` -> epoch; ``None`` when
        unreadable or outside the sane window (``timestamps.MIN_TS`` .. ``MAX_TS``)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = _text(value)
            if not text:
                return None
            if "T" in text:
                return self._iso(text)
            try:
                seconds = float(text)
            except ValueError:
                return None
        return seconds if MIN_TS <= seconds < MAX_TS else None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_lone_surrogates(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each lone surrogate (a ``\\udcff`` escape not in a pair, which
    ``json.loads`` keeps) in its text values replaced by ``?``: such text cannot be
    encoded as UTF-8, which the rules' RE2, the ledger and the JSON output need. nginx
    never writes one (it escapes the backslash of a client's ``\\u``); a line made
    some other way may."""
    return {
        key: _LONE_SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value
        for key, value in data.items()
    }


REGISTRY.register("nginx-json", NginxJsonConfig, NginxJsonParser)
