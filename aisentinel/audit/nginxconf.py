"""Parsing ``nginx -T`` output and finding the locations that proxy to an AI backend.

``nginx -T`` prints every config file it read, each after a ``# configuration file
PATH:`` line, with ``include`` directives left in place. :func:`parse_dump` splits
the dump into files, tokenizes them (quotes, comments, braces) and rebuilds one tree
by resolving each ``include`` against the dumped file names, as nginx does (relative
patterns against the main file's directory, glob matches in sorted order).

:func:`ai_locations` then walks ``http > server > location`` and, for each location
whose ``proxy_pass`` reaches an AI upstream, works out the *effective* auth and
rate-limit directives with nginx's inheritance rule: a directive set at an inner
level replaces the outer level's, otherwise the outer one applies. The rewrite
module's ``if``/``return`` are not inherited that way: those of the server block run
for every request, those of a location only for requests that location itself
matches (not for its nested locations), so a bearer check counts only there.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_HEADER = re.compile(r"^# configuration file (?P<path>.+):$")
_MAX_INCLUDE_DEPTH = 16


class NginxParseError(Exception):
    """The dump could not be parsed; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive: name, arguments, child block (``None`` for simple ones), origin."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None
    file: str
    line: int

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"

    def children(self, name: str) -> list[Directive]:
        """Direct children called ``name``."""
        return [d for d in self.block or () if d.name == name]


def split_dump(text: str) -> dict[str, str]:
    """``{path: content}`` of the files in an ``nginx -T`` dump, in dump order."""
    files: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            if current is not None:
                files[current] = "\n".join(lines)
            current, lines = header.group("path"), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        files[current] = "\n".join(lines)
    return files


def _tokens(text: str, file: str) -> Iterator[tuple[str, int, bool]]:
    """``(token, line, is_syntax)``; syntax tokens are ``{``, ``}`` and ``;``."""
    i, line, n = 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in "{};":
            yield ch, line, True
            i += 1
        elif ch in "\"'":
            start_line, quote, i = line, ch, i + 1
            out = []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                if text[i] == "\n":
                    line += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise NginxParseError(f"{file}:{start_line}: unterminated quoted string")
            i += 1
            yield "".join(out), start_line, False
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";{}":
                if text[i] == "$" and i + 1 < n and text[i + 1] == "{":  # ${var}
                    close = text.find("}", i)
                    i = close if close != -1 else i + 1
                i += 1
            yield text[start:i], line, False


def _parse_block(
    tokens: Iterator[tuple[str, int, bool]], file: str, *, top: bool
) -> tuple[Directive, ...]:
    out: list[Directive] = []
    words: list[str] = []
    first_line = 0
    for token, line, syntax in tokens:
        if not syntax:
            if not words:
                first_line = line
            words.append(token)
            continue
        if token == ";":  # noqa: S105 - a config token, not a secret
            if not words:
                continue
            out.append(Directive(words[0], tuple(words[1:]), None, file, first_line))
        elif token == "{":  # noqa: S105 - a config token, not a secret
            if not words:
                raise NginxParseError(f"{file}:{line}: block without a directive name")
            block = _parse_block(tokens, file, top=False)
            out.append(Directive(words[0], tuple(words[1:]), block, file, first_line))
        else:  # "}"
            if top:
                raise NginxParseError(f"{file}:{line}: unexpected '}}'")
            if words:
                raise NginxParseError(f"{file}:{line}: directive {words[0]!r} has no ';'")
            return tuple(out)
        words = []
    if words:
        raise NginxParseError(f"{file}: directive {words[0]!r} at line {first_line} has no ';'")
    if not top:
        raise NginxParseError(f"{file}: unexpected end of file (missing '}}')")
    return tuple(out)


def parse_file(text: str, file: str) -> tuple[Directive, ...]:
    """The directives of one config file (``include`` not resolved)."""
    return _parse_block(_tokens(text, file), file, top=True)


def parse_dump(text: str) -> tuple[Directive, ...]:
    """The whole configuration of an ``nginx -T`` dump, with includes resolved."""
    files = split_dump(text)
    if not files:
        raise NginxParseError("no '# configuration file' sections in nginx -T output")
    parsed = {path: parse_file(content, path) for path, content in files.items()}
    main = next(iter(files))
    conf_dir = posixpath.dirname(main)
    return _resolve(parsed[main], parsed, conf_dir, 0)


def _resolve(
    block: tuple[Directive, ...],
    parsed: dict[str, tuple[Directive, ...]],
    conf_dir: str,
    depth: int,
) -> tuple[Directive, ...]:
    if depth > _MAX_INCLUDE_DEPTH:
        raise NginxParseError("include nesting too deep")
    out: list[Directive] = []
    for d in block:
        if d.name == "include" and d.block is None and d.args:
            pattern = d.args[0]
            if not pattern.startswith("/"):
                pattern = posixpath.join(conf_dir, pattern)
            for path in sorted(p for p in parsed if fnmatch.fnmatchcase(p, pattern)):
                out.extend(_resolve(parsed[path], parsed, conf_dir, depth + 1))
        elif d.block is not None:
            inner = _resolve(d.block, parsed, conf_dir, depth + 1)
            out.append(Directive(d.name, d.args, inner, d.file, d.line))
        else:
            out.append(d)
    return tuple(out)


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True, slots=True)
class Listen:
    """One ``listen`` of a server block."""

    text: str
    tls: bool
    loopback: bool


@dataclass(frozen=True, slots=True)
class AiLocation:
    """A location that proxies to an AI upstream, with what protects it."""

    server: str
    location: str
    target: str
    where: str
    auth: str | None
    """``auth_basic``, ``auth_request /x``, ``auth_jwt`` or ``bearer check``; ``None`` if open.

    A bearer check is an ``if`` (in the server block or this location) that returns
    401/403 unless ``$http_authorization``, or a ``map`` of it, has a given value."""
    weak_auth: str | None
    """Without ``auth``: a bearer check that refuses only a missing header (any token passes)."""
    outer_auth: str | None
    """Without ``auth``: a bearer check of an enclosing location, which does not apply here."""
    partial_auth: str | None
    """With ``auth``: the networks ``satisfy any`` with ``allow`` lets in without it."""
    ineffective_auth: str | None
    """Without ``auth``: why an authentication directive here does nothing (``auth_basic``
    without a user file, ``satisfy any`` with ``allow all``)."""
    address_filter: bool
    """``deny all`` with ``allow`` rules applies (an address allowlist, not authentication);
    not when an ``allow all`` comes first (the first matching rule wins)."""
    rate_limit: str | None
    """The effective ``limit_req`` arguments, or ``None``."""
    listens: tuple[Listen, ...]
    tls_protocols: tuple[str, ...] | None = None
    """The effective ``ssl_protocols`` of its server (set there or in ``http``), or
    ``None`` when neither sets it (nginx's compiled-in default)."""

    def label(self) -> str:
        """``server X location /y -> target (file:line)``."""
        return f"server {self.server} location {self.location} -> {self.target} ({self.where})"


def _effective(chain: Sequence[Directive], *names: str) -> list[Directive]:
    """The directives called ``names`` at the innermost level of ``chain`` that sets any."""
    for level in reversed(chain):
        found = [d for d in level.block or () if d.name in names]
        if found:
            return found
    return []


def _listen(d: Directive) -> Listen:
    address = d.args[0] if d.args else "80"
    params = set(d.args[1:])
    host = address.rsplit(":", 1)[0] if ":" in address and not address.startswith("[") else address
    if address.startswith("["):
        host = address[1 : address.find("]")]
    loopback = (
        address.startswith("unix:") or host.startswith("127.") or host in ("::1", "localhost")
    )
    return Listen(" ".join(d.args), bool(params & {"ssl", "quic"}), loopback)


def _server_label(server: Directive) -> str:
    names = [a for d in server.children("server_name") for a in d.args]
    if names:
        return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"
    listens = [" ".join(d.args) for d in server.children("listen")]
    return f"listen {listens[0]}" if listens else "(default)"


def _upstream_servers(http: Directive) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for upstream in http.children("upstream"):
        if upstream.args:
            out[upstream.args[0]] = [d.args[0] for d in upstream.children("server") if d.args]
    return out


def _host_port(address: str, default_port: int) -> tuple[str, int | None]:
    if address.startswith("unix:"):
        return address, None
    if address.startswith("["):
        end = address.find("]")
        rest = address[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
        return address[1:end], port
    host, sep, port_text = address.rpartition(":")
    if sep and port_text.isdigit():
        return host, int(port_text)
    return address, default_port


def is_ai_target(
    proxy_pass: str,
    upstreams: dict[str, list[str]],
    ai_ports: Sequence[int],
    ai_names: Sequence[str],
) -> bool:
    """Whether a ``proxy_pass`` URL reaches an AI backend (by port or by name)."""
    url = proxy_pass
    scheme, sep, rest = url.partition("://")
    if not sep:
        rest, scheme = url, "http"
    if rest.startswith("unix:"):
        address = rest.rsplit(":", 1)[0] if rest.count(":") > 1 else rest
    else:
        address = rest.split("/", 1)[0]
    default_port = 443 if scheme == "https" else 80

    def named(text: str) -> bool:
        lower = text.lower()
        return any(name.lower() in lower for name in ai_names)

    if address in upstreams:
        if named(address):
            return True
        for server in upstreams[address]:
            host, port = _host_port(server, 80)
            if named(host) or (port is not None and port in ai_ports):
                return True
        return False
    host, port = _host_port(address, default_port)
    return named(host) or (port is not None and port in ai_ports)


_HEADER_VAR = "$http_authorization"
_MAP_PARAMS = ("default", "hostnames", "volatile", "include")


@dataclass(frozen=True, slots=True)
class _TokenMap:
    """What a ``map`` of the Authorization header gives: its entries and default value.

    Entry keys are header values (``~``/``~*`` regexes as written); a map of such a
    map is folded into one, its entries' values looked up in the outer map.
    """

    entries: tuple[tuple[str, str], ...]
    default: str

    def lookup(self, value: str) -> str:
        """The map's value for ``value``: exact keys first, then regexes in order, as nginx."""
        return _map_lookup(self.entries, self.default, value)


def _map_lookup(entries: Sequence[tuple[str, str]], default: str, value: str) -> str:
    for key, result in entries:
        if not key.startswith("~") and key == value:
            return result
    for key, result in entries:
        if key.startswith("~") and _regex_matches(key, value):
            return result
    return default


def _regex_matches(key: str, value: str) -> bool | None:
    """Whether nginx regex ``key`` (``~re`` or ``~*re``) matches; ``None`` if unreadable."""
    caseless = key.startswith("~*")
    try:
        return (
            re.search(key[2 if caseless else 1 :], value, re.IGNORECASE if caseless else 0)
            is not None
        )
    except re.error:
        return None


def _token_maps(http: Directive) -> dict[str, _TokenMap]:
    """``{$variable: map}`` for the maps of the Authorization header (and maps of those)."""
    out: dict[str, _TokenMap] = {}
    for m in http.children("map"):
        if len(m.args) < 2:
            continue
        source, target = m.args[0].lower(), m.args[1].lower()
        rows = [(d.name, d.args[0] if d.args else "") for d in m.block or ()]
        entries = tuple((k, v) for k, v in rows if k not in _MAP_PARAMS)
        default = next((v for k, v in rows if k == "default"), "")
        if source == _HEADER_VAR:
            out[target] = _TokenMap(entries, default)
        elif source in out:
            inner = out[source]
            folded = tuple((k, _map_lookup(entries, default, v)) for k, v in inner.entries)
            out[target] = _TokenMap(folded, _map_lookup(entries, default, inner.default))
    return out


def _condition(d: Directive) -> tuple[str, str | None, str]:
    """An ``if`` directive's ``(variable, operator, operand)``; ``("", None, "")`` if other."""
    words = list(d.args)
    if words and words[0].startswith("("):
        words[0] = words[0][1:]
    if words and words[-1].endswith(")"):
        words[-1] = words[-1][:-1]
    if words and words[0] == "":
        words.pop(0)
    if len(words) > 1 and words[-1] == "" and d.args[-1] == ")":
        words.pop()
    if len(words) == 1:
        return words[0].lower(), None, ""
    if len(words) == 3:
        return words[0].lower(), words[1], words[2]
    return "", None, ""


def _refused(op: str | None, operand: str, value: str) -> bool | None:
    """Whether an ``if`` with ``op`` / ``operand`` is true for ``value``; ``None``: unknown."""
    if op is None:
        return value not in ("", "0")
    if op in ("=", "!="):
        return (value == operand) is (op == "=")
    if op in ("~", "~*", "!~", "!~*"):
        matched = _regex_matches(op.lstrip("!") + operand, value)
        return None if matched is None else matched is not op.startswith("!")
    return None


_ANY_TOKENS = ("Bearer aisentinel-made-up-token-0", "Basic YWlzZW50aW5lbDpub3Bl", "x")
"""Authorization values nobody configured: a check that lets one in accepts any token."""


def _bearer_strength(d: Directive, maps: dict[str, _TokenMap]) -> str | None:
    """How an ``if`` that returns 401/403 checks the Authorization header.

    ``"token"``: it refuses a request without the header and every made-up value
    (it compares against given values: ``!=`` / ``!~`` a secret, or a ``map`` whose
    default is refused); ``"presence"``: it refuses a missing header but lets some
    made-up value in (``= ""``, a ``map`` that only lists ``""``); ``None``: it lets a
    request without the header in, or is no check of the header at all.
    """
    if not any(r.args and r.args[0] in ("401", "403") for r in d.children("return")):
        return None
    var, op, operand = _condition(d)
    token_map = maps.get(var)
    if var != _HEADER_VAR and token_map is None:
        return None

    def refused(header: str) -> bool | None:
        value = header if token_map is None else token_map.lookup(header)
        return _refused(op, operand, value)

    if refused("") is False:
        return None
    if all(refused(header) is True for header in ("", *_ANY_TOKENS)):
        return "token"
    return "presence"


@dataclass(frozen=True, slots=True)
class _Auth:
    """What protects a location: ``auth`` (``None``: nothing that counts), ``weak`` (a
    bearer check that lets any token in), ``outer`` (a bearer check in an enclosing
    location, which does not run for this one), ``partial`` (who ``satisfy any`` lets
    past ``auth``), ``ineffective`` (an authentication directive that does nothing)."""

    auth: str | None = None
    weak: str | None = None
    outer: str | None = None
    partial: str | None = None
    ineffective: str | None = None


def _auth(chain: Sequence[Directive], maps: dict[str, _TokenMap]) -> _Auth:
    """The location's effective authentication.

    An ``if`` counts only in the server block or in the proxying location itself: the
    rewrite module's ``if``/``return`` of an enclosing location do not run for a
    request a nested location matches (unlike ``auth_basic``, which is inherited).
    """
    module, unset = _module_auth(chain)
    if module is not None:
        bypass, networks = _satisfy_any(chain)
        if bypass is not None:
            return _Auth(ineffective=f"{bypass}: every client gets in without {module}")
        if networks:
            return _Auth(module, partial=f"{', '.join(networks)} get in without it (satisfy any)")
        return _Auth(module)
    weak = None
    for level in (chain[1], chain[-1]):  # the server, the proxying location
        for d in level.children("if"):
            strength = _bearer_strength(d, maps)
            if strength == "token":
                return _Auth(f"bearer check ({_if_label(d)})")
            if strength == "presence" and weak is None:
                weak = f"bearer check ({_if_label(d)}) accepts any token"
    outer = next(
        (
            f"the bearer check ({_if_label(d)}) of an enclosing location does not run here"
            for level in chain[2:-1]
            for d in level.children("if")
            if _bearer_strength(d, maps) is not None
        ),
        None,
    )
    return _Auth(weak=weak, outer=outer, ineffective=unset)


def _module_auth(chain: Sequence[Directive]) -> tuple[str | None, str | None]:
    """The effective access-phase authentication (``auth_basic``, ``auth_request``,
    ``auth_jwt``), and otherwise why an ``auth_basic`` there does nothing.

    ``auth_basic`` asks for credentials only with an effective ``auth_basic_user_file``
    (inherited like ``auth_basic``): without one nginx lets every request through.
    """
    unset = None
    basic = _effective(chain, "auth_basic")
    if basic and basic[-1].args and basic[-1].args[0] != "off":
        if _effective(chain, "auth_basic_user_file"):
            return "auth_basic", None
        unset = f"auth_basic at {basic[-1].where} has no auth_basic_user_file: nginx ignores it"
    request = _effective(chain, "auth_request")
    if request and request[-1].args and request[-1].args[0] != "off":
        return f"auth_request {request[-1].args[0]}", None
    jwt = _effective(chain, "auth_jwt")
    if jwt and jwt[-1].args and jwt[-1].args[0] != "off":
        return "auth_jwt", None
    return None, unset


_EVERYONE = frozenset(("all", "0.0.0.0/0", "::/0"))


def _satisfy_any(chain: Sequence[Directive]) -> tuple[str | None, list[str]]:
    """Who ``satisfy any`` lets in without authentication, by the ``allow`` rules.

    With an effective ``satisfy any`` a client that an ``allow`` rule matches (before a
    ``deny all``) needs no credentials. Returns the text of an ``allow`` of everyone
    (then nobody needs credentials), or else the narrower networks allowed.
    """
    satisfy = _effective(chain, "satisfy")
    if not (satisfy and satisfy[-1].args and satisfy[-1].args[0].lower() == "any"):
        return None, []
    networks: list[str] = []
    for rule in _effective(chain, "allow", "deny"):
        target = rule.args[0] if rule.args else ""
        if rule.name == "deny":
            if target == "all":
                break
            continue
        if target in _EVERYONE:
            return f"satisfy any with allow {target} at {rule.where}", []
        networks.append(target)
    return None, networks


def _if_label(d: Directive) -> str:
    words = (f'"{a}"' if a == "" or any(c.isspace() for c in a) else a for a in d.args)
    return f"if {' '.join(words)} at {d.where}"


def _address_filter(chain: Sequence[Directive]) -> bool:
    """Whether the effective rules end in ``deny all`` that no ``allow`` of everyone precedes."""
    for rule in _effective(chain, "allow", "deny"):
        if rule.name == "allow" and rule.args and rule.args[0] in _EVERYONE:
            return False
        if rule.name == "deny" and rule.args == ("all",):
            return True
    return False


def _locations(chain: list[Directive]) -> Iterator[list[Directive]]:
    for d in chain[-1].block or ():
        if d.name == "location" and d.block is not None:
            yield [*chain, d]
            yield from _locations([*chain, d])


def ai_locations(
    config: Sequence[Directive], ai_ports: Sequence[int], ai_names: Sequence[str]
) -> tuple[list[AiLocation], int]:
    """The locations proxying to an AI upstream, and the number of server blocks seen."""
    found: list[AiLocation] = []
    servers_seen = 0
    for http in (d for d in config if d.name == "http" and d.block is not None):
        upstreams = _upstream_servers(http)
        maps = _token_maps(http)
        for server in http.children("server"):
            servers_seen += 1
            ssl_on = any(d.args == ("on",) for d in server.children("ssl"))
            listens = tuple(
                Listen(ls.text, ls.tls or ssl_on, ls.loopback)
                for ls in (_listen(d) for d in server.children("listen"))
            ) or (Listen("80 (default)", ssl_on, False),)
            for chain in _locations([http, server]):
                location = chain[-1]
                for proxy in location.children("proxy_pass"):
                    if not proxy.args or not is_ai_target(
                        proxy.args[0], upstreams, ai_ports, ai_names
                    ):
                        continue
                    limit = _effective(chain, "limit_req")
                    protocols = _effective([http, server], "ssl_protocols")
                    auth = _auth(chain, maps)
                    found.append(
                        AiLocation(
                            server=_server_label(server),
                            location=" ".join(location.args),
                            target=proxy.args[0],
                            where=proxy.where,
                            auth=auth.auth,
                            weak_auth=auth.weak,
                            outer_auth=auth.outer,
                            partial_auth=auth.partial,
                            ineffective_auth=auth.ineffective,
                            address_filter=_address_filter(chain),
                            rate_limit=" ".join(limit[0].args) if limit else None,
                            listens=listens,
                            tls_protocols=protocols[-1].args if protocols else None,
                        )
                    )
    return found, servers_seen
