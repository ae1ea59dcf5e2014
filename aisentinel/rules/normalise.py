"""What a rule sees of a request: the target decoded and normalised, the raw kept.

Attackers write the same path many ways (``%2e%2e%2f``, ``%252e``, ``..;/``,
``%c0%ae``, ``\\x5c`` in nginx's escaped log text, upper case, ``//``, ``/./``). A
rule is written once, against the canonical form :func:`normalise_target` gives:

1. nginx's log escapes (``\\xHH``: quotes, backslashes, control and non-ASCII bytes)
   become ``%HH``, so that both escapes are decoded the same way;
2. the target is split at its first ``?`` into path and query (``+`` in the query is
   a space, as in a form);
3. each part is percent-decoded (also ``%uHHHH``) repeatedly until it no longer
   changes, at most :data:`MAX_ROUNDS` times; overlong UTF-8 forms of ``.``, ``/``
   and ``\\`` (``%c0%ae``, ``%e0%80%af`` ...) are read as those characters;
4. case is folded, ``\\`` becomes ``/``, ``//`` and ``/./`` are collapsed: that is
   ``uri`` (with ``?`` and the query), where ``..`` and ``;`` are still visible;
5. a segment's ``;parameters`` are dropped (Tomcat's ``..;/``, Jira's
   ``/_/;/WEB-INF``) and ``..`` segments are resolved (never above the root): that
   is ``path``.

Only the first :data:`MAX_TARGET` characters are looked at: nginx refuses longer
request lines by default (large_client_header_buffers 8k), and the cost stays bounded.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

MAX_ROUNDS = 4
"""Most percent-decoding passes (``%25252e`` needs three)."""

MAX_TARGET = 8192
"""Characters of a target (or user agent) that are normalised and matched."""

_NGINX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
_UNICODE_ESCAPE = re.compile(r"%u([0-9A-Fa-f]{4})")
_OVERLONG = (
    (b"\xc0\xae", b"."),
    (b"\xe0\x80\xae", b"."),
    (b"\xc0\xaf", b"/"),
    (b"\xe0\x80\xaf", b"/"),
    (b"\xc1\x9c", b"\\"),
    (b"\xc1\x1c", b"\\"),
    (b"\xc0\x2f", b"/"),
    (b"\xc0\x5c", b"\\"),
)


class Target(NamedTuple):
    """The normalised views of one request target.

    ``path``: decoded, folded, collapsed, ``..`` resolved, no query. ``uri``: the
    same before ``..`` is resolved, with ``?query`` when there is one. ``query``:
    decoded and folded query text (``""`` if none).
    """

    path: str
    uri: str
    query: str


def _unicode_escape(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def _decode_once(text: str) -> str:
    if "%u" in text or "%U" in text:
        text = _UNICODE_ESCAPE.sub(_unicode_escape, text)
    raw = unquote_to_bytes(text)
    if b"\xc0" in raw or b"\xc1" in raw or b"\xe0\x80" in raw:
        for overlong, plain in _OVERLONG:
            raw = raw.replace(overlong, plain)
    return raw.decode("utf-8", errors="replace")


def decode(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (bounded)."""
    for _ in range(MAX_ROUNDS):
        if "%" not in text:
            break
        decoded = _decode_once(text)
        if decoded == text:
            break
        text = decoded
    return text


def unescape_log(text: str) -> str:
    """nginx's ``\\xHH`` log escapes as ``%HH`` (decoded with the rest)."""
    if "\\x" in text:
        return _NGINX_ESCAPE.sub(r"%\1", text)
    return text


def fold_text(text: str) -> str:
    """A header value (user agent) as rules see it: log escapes decoded, case folded."""
    text = text[:MAX_TARGET]
    if "\\x" in text:
        text = decode(unescape_log(text))
    return text.lower()


def _segments(path: str) -> list[str]:
    """Segments of a decoded, folded path: ``;params`` dropped, empty and ``.`` removed."""
    out = []
    for part in path.split("/"):
        segment = part.split(";", 1)[0] if ";" in part else part
        if segment and segment != ".":
            out.append(segment)
    return out


def normalise_target(raw: str) -> Target:
    """The :class:`Target` views of a raw request target (path and query as logged)."""
    text = unescape_log(raw[:MAX_TARGET])
    cut = text.find("?")
    if cut >= 0:
        path_text, query_text = text[:cut], text[cut + 1 :]
    else:
        path_text, query_text = text, ""
    path_text = decode(path_text).lower().replace("\\", "/")
    query = decode(query_text.replace("+", " ")).lower() if query_text else ""
    absolute = path_text.startswith("/")
    lead = "/" if absolute else ""
    kept = [s for s in path_text.split("/") if s and s != "."]
    trailing = len(kept) > 0 and path_text.endswith("/")
    uri = lead + "/".join(kept) + ("/" if trailing else "")
    resolved: list[str] = []
    for segment in _segments(path_text):
        if segment == "..":
            if resolved:
                resolved.pop()
        else:
            resolved.append(segment)
    path = lead + "/".join(resolved)
    if not path:
        path = "/"
    if cut >= 0:
        uri = f"{uri}?{query}"
    return Target(path, uri or "/", query)
