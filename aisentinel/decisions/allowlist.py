"""Addresses that are never banned: loopback, the host's own, and configured networks.

The allowlist always wins: the engine checks it before anything else, so no
detector, severity or escalation can ban an allowlisted address. IPv4-mapped IPv6
addresses (``::ffff:10.0.0.1``) are treated as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)
"""Always allowed; there is no setting to ban loopback."""

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def canonical_address(text: str) -> IPAddress:
    """The address ``text`` names, in the form decisions use.

    IPv4-mapped IPv6 becomes IPv4 and an IPv6 zone (``%eth0``) is dropped, so one
    host has one text form (``str()`` of the result). Raises ``ValueError`` for
    anything that is not a single address.
    """
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            return ipaddress.IPv6Address(int(addr))
    return addr


def _canonical_network(net: IPNetwork) -> IPNetwork:
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        base = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((base, net.prefixlen - 96))
    return net


class Allowlist:
    """A fixed set of networks with a fast membership test.

    Lookup masks the address once per distinct prefix length present (most
    specific first), so its cost does not grow with the number of networks;
    results for textual addresses are cached in a bounded dict. Not thread-safe:
    the pipeline thread owns it.
    """

    def __init__(self, networks: Iterable[IPNetwork], *, cache_size: int = 4096) -> None:
        unique = dict.fromkeys(_canonical_network(n) for n in networks)
        self.networks: tuple[IPNetwork, ...] = tuple(unique)
        self._tables: dict[int, list[tuple[int, int, dict[int, IPNetwork]]]] = {4: [], 6: []}
        by_version: dict[int, dict[int, dict[int, IPNetwork]]] = {4: {}, 6: {}}
        for net in self.networks:
            table = by_version[net.version].setdefault(net.prefixlen, {})
            table.setdefault(int(net.network_address), net)
        for version, bits in ((4, 32), (6, 128)):
            for prefix in sorted(by_version[version], reverse=True):
                mask = ((1 << prefix) - 1) << (bits - prefix)
                self._tables[version].append((prefix, mask, by_version[version][prefix]))
        self._cache: dict[str, IPNetwork | None] = {}
        self._cache_size = max(1, cache_size)

    @classmethod
    def build(
        cls, configured: Iterable[IPNetwork], host_addresses: Iterable[str] = ()
    ) -> Allowlist:
        """Loopback, then ``configured`` networks, then each host address as a /32 or /128.

        Host addresses that do not parse are skipped with a warning.
        """
        nets: list[IPNetwork] = [*LOOPBACK, *configured]
        for text in host_addresses:
            try:
                addr = canonical_address(text)
            except ValueError:
                log.warning("host address ignored", address=text, reason="not an IP address")
                continue
            nets.append(ipaddress.ip_network(addr))
        return cls(nets)

    def match(self, addr: str | IPAddress) -> IPNetwork | None:
        """The most specific allowlisted network holding ``addr``, or ``None``.

        Raises ``ValueError`` when a textual ``addr`` is not an IP address.
        """
        if not isinstance(addr, str):
            return self._lookup(addr)
        try:
            return self._cache[addr]
        except KeyError:
            pass
        found = self._lookup(canonical_address(addr))
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[addr] = found
        return found

    def contains(self, addr: str | IPAddress) -> bool:
        """Whether ``addr`` is allowlisted (``ValueError`` when it is not an address)."""
        return self.match(addr) is not None

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        try:
            return self.contains(addr)
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self.networks)

    def _lookup(self, addr: IPAddress) -> IPNetwork | None:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        value = int(addr)
        for _prefix, mask, table in self._tables[addr.version]:
            net = table.get(value & mask)
            if net is not None:
                return net
        return None


def read_host_addresses(proc: Path = Path("/proc")) -> list[str]:
    """The host's own unicast addresses, read from procfs without running anything.

    IPv4: every ``/32 host LOCAL`` leaf of ``net/fib_trie`` (all addresses of all
    interfaces, secondaries included). IPv6: every entry of ``net/if_inet6``. A
    family whose file cannot be read is skipped with a warning, so the result may
    be empty but the call never fails. ``proc`` lets tests use a fixture tree.
    """
    found: dict[str, None] = {}
    fib_trie = proc / "net" / "fib_trie"
    if_inet6 = proc / "net" / "if_inet6"
    try:
        last: str | None = None
        for line in fib_trie.read_text(encoding="ascii").splitlines():
            stripped = line.strip()
            if stripped.startswith("|--"):
                last = stripped[3:].strip()
            elif last is not None and stripped.startswith("/32 host LOCAL"):
                found[last] = None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read host IPv4 addresses", path=str(fib_trie), error=str(exc))
    try:
        for line in if_inet6.read_text(encoding="ascii").splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                try:
                    found[str(ipaddress.IPv6Address(int(fields[0], 16)))] = None
                except ValueError:
                    continue
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read host IPv6 addresses", path=str(if_inet6), error=str(exc))
    return list(found)
