"""Which address made the request when nginx sits behind trusted proxies.

``X-Forwarded-For`` is written by every hop that appends the address it saw; only
the entries appended by proxies we trust can be believed. So the client is the
right-most entry that is not itself a trusted proxy, and the header is consulted
only when the peer (``$remote_addr``) is a trusted proxy. Anything else in the
header was written by the client and is ignored.
"""

from __future__ import annotations

import ipaddress

from aisentinel.parsers.timestamps import CACHE_LIMIT

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyResolver:
    """Resolves the client address of a request; caches trust decisions per address."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, networks: tuple[Net, ...]) -> None:
        self._networks = networks
        self._cache: dict[str, bool] = {}

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

    def client(self, peer: str, forwarded: str | None) -> str:
        """The client for a request from ``peer`` carrying ``forwarded`` (XFF / real-IP).

        ``peer`` is returned unless it is a trusted proxy and ``forwarded`` names a
        valid address outside the trusted networks (right-most such entry). When
        every entry is trusted, the left-most one is the client. A malformed entry
        where the client should be yields ``peer``: the header is not believed.
        """
        if not forwarded or forwarded == "-" or not self._networks or not self.is_trusted(peer):
            return peer
        entries = [part.strip() for part in forwarded.split(",")]
        for entry in reversed(entries):
            if not entry:
                continue
            if not _is_address(entry):
                return peer
            if not self.is_trusted(entry):
                return entry
        for entry in entries:
            if entry:
                return entry
        return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
