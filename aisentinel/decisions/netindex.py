"""The address bans wider than one address, indexed by IP version and prefix length.

An address inside a banned network (``203.0.113.7`` under a ban of ``203.0.113.0/24``,
``2001:db8::1`` under its ``/64``) is found with one dict probe per prefix length in
use (:meth:`NetworkIndex.covering`): masked integers, no ``ipaddress`` network
objects, and no scan of the bans. Host bans need no index: their ``_active`` key is
the address's own text.

Not thread-safe: the decision engine keeps it beside its active bans, under its lock.
"""

from __future__ import annotations

from aisentinel.events import AddressTarget, IPAddress

_BITS = {4: 32, 6: 128}


def span(address: IPAddress, prefixlen: int) -> tuple[int, int]:
    """The first and last address of ``address/prefixlen`` as integers."""
    first = int(address)
    return first, first | ((1 << (_BITS[address.version] - prefixlen)) - 1)


class NetworkIndex:
    """Network targets (wider than a host) -> their ``_active`` key."""

    def __init__(self) -> None:
        self._tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        """IP version -> prefix length -> the network's first address (int) -> key."""

    def add(self, target: AddressTarget) -> None:
        """Index ``target`` (a network; a host is ignored)."""
        if target.is_host:
            return
        tables = self._tables[target.address.version]
        tables.setdefault(target.prefixlen, {})[int(target.address)] = target.text

    def discard(self, target: AddressTarget) -> None:
        """Forget ``target`` (nothing when it is not indexed)."""
        tables = self._tables[target.address.version]
        table = tables.get(target.prefixlen)
        if table is None:
            return
        table.pop(int(target.address), None)
        if not table:
            del tables[target.prefixlen]

    def clear(self) -> None:
        """Forget every network."""
        for tables in self._tables.values():
            tables.clear()

    def __len__(self) -> int:
        return sum(len(t) for tables in self._tables.values() for t in tables.values())

    def covering(self, address: IPAddress, prefixlen: int | None = None) -> list[str]:
        """The keys of the indexed networks that hold all of ``address/prefixlen`` (the
        address alone by default) and are wider than it, most specific first."""
        bits = _BITS[address.version]
        width = bits if prefixlen is None else prefixlen
        value = int(address)
        found: list[str] = []
        tables = self._tables[address.version]
        for prefix in sorted(tables, reverse=True):
            if prefix >= width:
                continue
            shift = bits - prefix
            key = tables[prefix].get(value >> shift << shift)
            if key is not None:
                found.append(key)
        return found

    def overlapping(self, address: IPAddress, prefixlen: int) -> list[str]:
        """The keys of the indexed networks that share an address with
        ``address/prefixlen``: those holding it (one probe per prefix length) and those
        inside it (the smaller of enumerating its subnets and scanning that prefix
        length's networks)."""
        bits = _BITS[address.version]
        first, last = span(address, prefixlen)
        found: list[str] = []
        tables = self._tables[address.version]
        for prefix, table in tables.items():
            shift = bits - prefix
            if prefix <= prefixlen:
                key = table.get(first >> shift << shift)
                if key is not None:
                    found.append(key)
                continue
            subnets = 1 << (prefix - prefixlen)
            if subnets <= len(table):
                step = 1 << shift
                for base in range(first, last + 1, step):
                    key = table.get(base)
                    if key is not None:
                        found.append(key)
            else:
                found.extend(key for base, key in table.items() if first <= base <= last)
        return found
