"""Which address made the request when nginx sits behind trusted proxies.

``X-Forwarded-For`` is written by every hop that appends the address it saw; only
the entries appended by proxies we trust can be believed. So the client is the
right-most entry that is not itself a trusted proxy, and the header is consulted
only when the peer (``$remote_addr``) is a trusted proxy. Anything else in the
header was written by the client and is ignored.
"""

from __future__ import annotations

import ipaddress
import re

from aisentinel.configtypes import ForwardedHeader
from aisentinel.parsers.base import RecentShare, SetupProblem
from aisentinel.parsers.timestamps import CACHE_LIMIT

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

_WITH_PORT = re.compile(r"\[([^\]]*)\](?::[0-9]{1,5})?|([0-9.]+):[0-9]{1,5}")
"""An address with a port (``198.51.100.5:4433``, ``[2001:db8::1]:443``) or a bracketed
IPv6 address: group 1 the IPv6 address, group 2 the IPv4 one."""

UNFORWARDED_WARN = 20
"""Requests from trusted proxies without a forwarded value before
:meth:`ProxyResolver.layout_suspect` may hold."""

_LONGEST_ENTRY = len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535")
"""Longer forwarded entries are no address (and are not cached)."""


class ProxyResolver:
    """Resolves the client address of a request; caches trust decisions per address,
    and the address each forwarded entry names."""

    __slots__ = (
        "_addresses",
        "_cache",
        "_networks",
        "_told",
        "forwarded",
        "header",
        "unforwarded",
    )

    def __init__(self, networks: tuple[Net, ...], header: ForwardedHeader = "xff") -> None:
        self._networks = networks
        self.header: ForwardedHeader = header
        """``[parsers] forwarded_header``: which forwarded value :meth:`client` believes
        first."""
        self._cache: dict[str, bool] = {}
        self._addresses: dict[str, str | None] = {}
        self.forwarded = 0
        """Requests from a trusted proxy that carried a forwarded value."""
        self.unforwarded = 0
        """Requests from a trusted proxy that carried none (``-``, empty or missing):
        taken as the proxy's own (see :meth:`layout_suspect`)."""
        self._told = False

    @property
    def enabled(self) -> bool:
        """Whether any proxy is trusted (if not, forwarded headers are never read)."""
        return bool(self._networks)

    def is_trusted(self, addr: str) -> bool:
        """Whether ``addr`` (text) lies in a trusted proxy network; junk is not trusted."""
        cached = self._cache.get(addr)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            trusted = False
        else:
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            probe = mapped or ip
            trusted = any(probe in net for net in self._networks)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[addr] = trusted
        return trusted

    def client(self, peer: str, forwarded: str | None, real_ip: str | None = None) -> str:
        """The client for a request from ``peer`` carrying the X-Forwarded-For chain
        ``forwarded`` and (JSON format only) the X-Real-IP value ``real_ip``.

        ``peer`` is returned unless it is a trusted proxy and a forwarded value names a
        valid address. Which value is read first is :attr:`header`:

        * ``xff`` (the default): the chain, right-most entry outside the trusted
          networks (when every entry is trusted, the left-most one); ``real_ip`` only
          when the chain gives none (empty, absent, or a malformed entry where the
          client should be);
        * ``real_ip``: ``real_ip`` when it is one valid address outside the trusted
          networks (the proxy sets it, replacing any the client sent); else the chain.

        A value that is not an address is never believed, and never makes the proxy
        the client while the other value names one. An entry may carry a port (Azure
        Application Gateway writes ``198.51.100.5:4433``, some load balancers
        ``[2001:db8::7]:443``): the address without it is used.
        """
        if not self._networks or not self.is_trusted(peer):
            return peer
        if forwarded == "-":
            forwarded = None
        if real_ip == "-":
            real_ip = None
        if not forwarded and not real_ip:
            self.unforwarded += 1
            return peer
        self.forwarded += 1
        if self.header == "real_ip":
            found = self._single(real_ip) or self._chain(forwarded)
        else:
            found = self._chain(forwarded) or self._chain(real_ip)
        return found or peer

    def _single(self, value: str | None) -> str | None:
        """``value`` as one address outside the trusted networks, else ``None``."""
        if not value:
            return None
        entry = self._address(value.strip())
        return entry if entry and not self.is_trusted(entry) else None

    def _chain(self, forwarded: str | None) -> str | None:
        """The client a forwarded-for chain names: its right-most entry outside the
        trusted networks, the left-most when all are trusted; ``None`` when the chain is
        empty or the entry where the client should be is no address."""
        if not forwarded:
            return None
        entries = [self._address(part.strip()) for part in forwarded.split(",")]
        for entry in reversed(entries):
            if entry is None:
                return None
            if entry and not self.is_trusted(entry):
                return entry
        for entry in entries:
            if entry:
                return entry
        return None

    def layout_suspect(self) -> bool:
        """True once (the first time it holds): most requests from trusted proxies, and at
        least :data:`UNFORWARDED_WARN` of them, carried no forwarded value. A health check
        the proxy sends itself carries none; all its clients' requests lacking one means
        the log format has no forwarded field where the parser reads it, or the proxy
        sets no ``X-Forwarded-For``: every client is then taken for the proxy, which is
        never banned."""
        if self._told or self.unforwarded < UNFORWARDED_WARN or self.unforwarded <= self.forwarded:
            return False
        self._told = True
        return True

    def _address(self, entry: str) -> str | None:
        """:func:`_entry_address`, cached."""
        if len(entry) > _LONGEST_ENTRY:
            return None
        found = self._addresses.get(entry, "-")
        if found == "-":
            found = _entry_address(entry)
            if len(self._addresses) >= CACHE_LIMIT:
                self._addresses.clear()
            self._addresses[entry] = found
        return found


LOOPBACK_WINDOW = 200
"""A source's recent lines for :class:`LoopbackWatch`: the batches holding its last this
many lines (at least)."""
LOOPBACK_MIN = 50
"""Fewest recent lines :class:`LoopbackWatch` judges on."""
LOOPBACK_SHARE = 2 / 3
"""The share of recent lines from an untrusted loopback peer with a forwarded address
at which every client is taken to be that peer ..."""
LOOPBACK_CLEAR = 1 / 3
"""... and the share at or below which that no longer holds (no flapping in between)."""
LOOPBACK_STARTS = ("127.", "::1")
"""How a loopback peer's text starts once IPv4-mapped addresses are made IPv4 (nginx
writes ``$remote_addr`` canonical): the cheap look a parser takes at every request's
peer before asking :meth:`LoopbackWatch.counts`."""
_CHAIN_LOOK = 8
"""Most forwarded-for entries :func:`names_client` looks at, from the right."""
_CLIENT_CACHED = 256
"""Longest forwarded value whose verdict :meth:`LoopbackWatch.counts` caches."""


class LoopbackWatch:
    """Whether most of a source's recent requests come from a loopback peer that is not
    a trusted proxy and carry a forwarded client address (X-Forwarded-For, X-Real-IP).

    That is a proxy on this host (an HTTP reverse proxy such as Caddy, Traefik,
    cloudflared or a second nginx) in front of nginx, not in ``[parsers]
    trusted_proxies``, with no realip module: every client is then taken to be the
    loopback address, which the allowlist always holds, so no attacker is ever banned or
    alerted on, silently. The parser tells of every request it parses whether it is one
    (:meth:`counts`: a cheap look at the peer first, :data:`LOOPBACK_STARTS`), so the
    share is exact whatever the order of the lines; each batch's count
    (:meth:`add`) is kept over the batches holding the source's last
    :data:`LOOPBACK_WINDOW` lines (as the blind-source check counts). :attr:`proxied`
    holds from a share of :data:`LOOPBACK_SHARE` over at least :data:`LOOPBACK_MIN` lines
    until the share is down to :data:`LOOPBACK_CLEAR`: nginx proxying to itself with one
    log for both server blocks (half its lines from loopback) does not raise it.

    A forwarded value counts only when it names a client that is not loopback itself
    (:func:`names_client`): a local health check sending ``X-Forwarded-For: 127.0.0.1``,
    a ``real_ip`` equal to the peer, or a ``"$upstream_addr"`` logged after the user agent
    (``127.0.0.1:11434``: a port, no client) do not.
    """

    __slots__ = ("_clients", "_loopback", "_proxy", "peer", "recent")

    def __init__(self, proxy: ProxyResolver) -> None:
        self.recent = RecentShare(LOOPBACK_WINDOW, LOOPBACK_MIN, LOOPBACK_SHARE, LOOPBACK_CLEAR)
        """Of the source's recent lines, those from an untrusted loopback peer with a
        forwarded address."""
        self._proxy = proxy
        self._loopback: dict[str, bool] = {}
        self._clients: dict[str, bool] = {}
        self.peer = ""
        """The loopback peer of the latest such request."""

    @property
    def proxied(self) -> bool:
        """Whether most recent requests are such (see the class notes)."""
        return self.recent.holds

    def untrusted(self, peer: str) -> bool:
        """Whether ``peer`` (text, IPv4-mapped already made IPv4) is a loopback address
        outside the trusted proxies (cached)."""
        found = self._loopback.get(peer)
        if found is None:
            try:
                found = ipaddress.ip_address(peer).is_loopback
            except ValueError:
                found = False
            found = found and not self._proxy.is_trusted(peer)
            if len(self._loopback) >= CACHE_LIMIT:
                self._loopback.clear()
            self._loopback[peer] = found
        return found

    def counts(self, peer: str, forwarded: str | None) -> bool:
        """Whether a request from ``peer`` (normalised) carrying the forwarded value
        ``forwarded`` is one from an untrusted loopback peer on behalf of another client
        (and remember ``peer`` if so)."""
        return self.untrusted(peer) and self.forwards(peer, forwarded)

    def forwards(self, peer: str, forwarded: str | None) -> bool:
        """:meth:`counts` for a ``peer`` known :meth:`untrusted`: whether ``forwarded``
        names a client (:func:`names_client`, cached)."""
        if not forwarded:
            return False
        if len(forwarded) > _CLIENT_CACHED:
            found = names_client(forwarded)
        else:
            cached = self._clients.get(forwarded)
            if cached is None:
                cached = names_client(forwarded)
                if len(self._clients) >= CACHE_LIMIT:
                    self._clients.clear()
                self._clients[forwarded] = cached
            found = cached
        if found:
            self.peer = peer
        return found

    def add(self, lines: int, hits: int) -> bool:
        """Count a batch of ``lines`` lines, ``hits`` of them such requests
        (:meth:`counts`); whether :attr:`proxied` changed."""
        if not lines:
            return False
        return self.recent.add(lines, min(hits, lines))

    def problems(self) -> list[SetupProblem]:
        """What :attr:`proxied` means, in one short line with the fixes (for ``aisentinel
        status``, which shows 240 characters of a problem); none if it does not hold."""
        if not self.proxied:
            return []
        peer = self.peer
        text = (
            f"every client is {peer}, an untrusted proxy: if it is an HTTP proxy setting "
            f'X-Forwarded-For, set [parsers] trusted_proxies = ["{self._network()}"] or use '
            "nginx's realip module; a TCP/TLS tunnel: the PROXY protocol"
        )
        return [SetupProblem("untrusted_local_proxy", text)]

    def notice(self) -> str:
        """What :attr:`proxied` means for the operator's log, with the fixes."""
        peer = self.peer
        return (
            f"most requests come from {peer} (loopback, not a trusted proxy) carrying a "
            f"forwarded client address: every client is taken to be {peer}, and loopback is "
            "never banned nor alerted on. If an HTTP proxy on this host that sets or "
            "appends X-Forwarded-For (Caddy, Traefik, cloudflared, nginx, HAProxy in http "
            f'mode) forwards them, trust it: [parsers] trusted_proxies = ["{self._network()}"]; '
            f"or log the real client with nginx's realip module (set_real_ip_from {peer}; "
            "real_ip_header X-Forwarded-For; real_ip_recursive on). Trust no TCP or TLS "
            "tunnel (stunnel, HAProxy in tcp mode, socat, an SSH tunnel): it adds no "
            "X-Forwarded-For, so every one in the log was written by the client; have it "
            f"send the PROXY protocol instead (listen ... proxy_protocol; set_real_ip_from "
            f"{peer}; real_ip_header proxy_protocol). See docs/nginx-log-format.md"
        )

    def _network(self) -> str:
        """:attr:`peer` as the network ``trusted_proxies`` would name it."""
        return f"{self.peer}/{128 if ':' in self.peer else 32}"


def names_client(value: str) -> bool:
    """Whether a forwarded value (an X-Forwarded-For chain, an X-Real-IP) names a client
    other than this host: read from the right past loopback entries (local proxies one
    behind the other), the first entry is a bare address (no port: a proxy appends the
    address it saw; ``addr:port`` is what ``$upstream_addr`` writes) that is neither
    loopback nor unspecified. Junk, ``-`` and an all-loopback chain: no. At most
    :data:`_CHAIN_LOOK` entries are looked at."""
    rest = value
    for _ in range(_CHAIN_LOOK):
        rest, _sep, last = rest.rpartition(",")
        entry = last.strip()
        if len(entry) > _LONGEST_ENTRY:
            return False
        try:
            ip = ipaddress.ip_address(entry)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_loopback:
            return not ip.is_unspecified
        if not _sep:
            return False
    return False


def _entry_address(entry: str) -> str | None:
    """``entry`` as an address without its port; empty if empty, None if not an address.

    ``a.b.c.d:port`` and ``[v6]:port`` (or ``[v6]``) lose the port and brackets; a bare
    IPv6 address keeps every colon; an IPv4-mapped one is its IPv4 address (as the peer).
    """
    if not entry:
        return entry
    if (entry[0] == "[" or entry.count(":") == 1) and (
        with_port := _WITH_PORT.fullmatch(entry)
    ) is not None:
        v6, v4 = with_port.groups()
        try:
            if v4 is None:
                ipaddress.IPv6Address(v6)
            else:
                ipaddress.IPv4Address(v4)
        except ValueError:
            return None
        return v4 or normalize_addr(v6)
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        return None
    return normalize_addr(entry)


ADDR_RE = (
    r"(?:\d{1,3}\.){3}\d{1,3}"
    r"|(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})"
)
"""Regex text for an IPv4 or IPv6 address (syntax only; no named group)."""


def normalize_addr(addr: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``; other addresses unchanged.

    IPv4-mapped IPv6 addresses are the same host as the IPv4 address, and the
    firewall bans the IPv4 form.
    """
    if addr[:7].lower() == "::ffff:" and "." in addr:
        return addr[7:]
    return addr
