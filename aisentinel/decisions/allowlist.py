"""What is never acted on: addresses (loopback, the host's own, configured networks)
and workloads (units, containers, images, executables matched by glob).

The allowlist always wins: the engine checks it before anything else, so no
detector, severity or escalation can ban an allowlisted address or throttle an
allowlisted workload. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) are treated
as the IPv4 address they carry. A NAT64 address (``64:ff9b::10.0.0.1``: that IPv4
client behind a NAT64 gateway) is allowlisted when it is, or when the IPv4 address it
embeds is, and a network in NAT64 space overlaps every allowlisted IPv4 address it
embeds (see :func:`~aisentinel.events.nat64_ipv4`); loopback excepted, which no
gateway translates.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

import structlog

from aisentinel.events import (
    IPAddress,
    IPNetwork,
    WorkloadKey,
    WorkloadTarget,
    canonical_address,
    canonical_network,
    is_nat64,
)

__all__ = [
    "LOOPBACK",
    "Allowlist",
    "IPAddress",
    "IPNetwork",
    "WorkloadAllowlist",
    "canonical_address",
    "image_reference",
    "read_host_addresses",
]

log = structlog.get_logger(__name__)

LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)
"""Always allowed; there is no setting to ban loopback."""
_LOOPBACK_SET = frozenset(LOOPBACK)
"""Not matched through NAT64: no gateway shows a client from 127.0.0.0/8."""


class Allowlist:
    """A fixed set of networks with a fast membership test.

    Lookup masks the address once per distinct prefix length present (most
    specific first), so its cost does not grow with the number of networks;
    results for textual addresses are cached in a bounded dict. Not thread-safe:
    the pipeline thread owns it.
    """

    def __init__(self, networks: Iterable[IPNetwork], *, cache_size: int = 4096) -> None:
        unique = dict.fromkeys(canonical_network(n) for n in networks)
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
        self._starts: dict[int, tuple[list[int], list[IPNetwork]]] = {}
        """Per IP version, the networks' first addresses (ints, sorted) and the networks."""
        for version in (4, 6):
            ordered = sorted(
                (int(n.network_address), n) for n in self.networks if n.version == version
            )
            self._starts[version] = ([s for s, _ in ordered], [n for _, n in ordered])
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

    def overlapping(self, network: IPNetwork) -> IPNetwork | None:
        """An allowlisted network that shares an address with ``network``, or ``None``.

        For a ban wider than one host (an IPv6 /64): it must not cover an allowlisted
        address. A network in NAT64 space also overlaps the allowlisted IPv4 networks
        whose clients it holds (their NAT64 addresses).
        """
        return self.overlapping_prefix(network.network_address, network.prefixlen)

    def overlapping_prefix(self, address: IPAddress, prefixlen: int) -> IPNetwork | None:
        """:meth:`overlapping` for the network ``address/prefixlen`` (its first address),
        in integers: an allowlisted network holding that first address (one dict probe per
        prefix length), else one that starts inside it (a bisection). No ``ipaddress``
        network object is built: the engine asks this of every restored network ban. In
        NAT64 space (a /96 embeds the IPv4 client in its last 32 bits) the IPv4 networks
        it holds are asked too, loopback left out."""
        found = self._overlapping_int(address.version, int(address), prefixlen)
        if found is not None or address.version != 6 or not is_nat64(address):
            return found
        if prefixlen < 96:  # holds every IPv4 client's NAT64 address
            return next(
                (n for n in self.networks if n.version == 4 and n not in _LOOPBACK_SET), None
            )
        return self._overlapping_int(
            4, int(address) & 0xFFFFFFFF, prefixlen - 96, skip=_LOOPBACK_SET
        )

    def _overlapping_int(
        self, version: int, first: int, prefixlen: int, skip: frozenset[IPNetwork] = frozenset()
    ) -> IPNetwork | None:
        for _prefix, mask, table in self._tables[version]:
            net = table.get(first & mask)
            if net is not None and net not in skip:
                return net
        starts, nets = self._starts[version]
        last = first | ((1 << ((32 if version == 4 else 128) - prefixlen)) - 1)
        at = bisect_left(starts, first)
        while at < len(starts) and starts[at] <= last:
            if nets[at] not in skip:
                return nets[at]
            at += 1
        return None

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
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            elif is_nat64(addr):  # one IPv4 client: allowlisted as itself or as that
                found = self._probe(6, int(addr)) or self._probe(4, int(addr) & 0xFFFFFFFF)
                return None if found in _LOOPBACK_SET else found
        return self._probe(addr.version, int(addr))

    def _probe(self, version: int, value: int) -> IPNetwork | None:
        for _prefix, mask, table in self._tables[version]:
            net = table.get(value & mask)
            if net is not None:
                return net
        return None


DOCKER_HUB: Final = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
"""Names of Docker Hub that an image reference may start with."""
OFFICIAL: Final = "library/"
_GLOB: Final = re.compile(r"[*?\[]")
"""Docker Hub's namespace of official images (``docker.io/library/ubuntu`` is ``ubuntu``)."""


def image_reference(image: str) -> str:
    """An image reference as the ``images`` allowlist sees it: without a Docker Hub
    registry (``docker.io/``, ``index.docker.io/``) or ``library/`` namespace, and with
    ``:latest`` where it has neither tag nor digest (``docker run ollama/ollama`` stores
    ``ollama/ollama``: ``ollama/ollama:latest``). A digest stays (``ollama/ollama@sha256:
    ...``, matched by ``ollama/ollama@sha256:*``); a registry's port is not a tag
    (``registry.local:5000/team/llm`` is ``registry.local:5000/team/llm:latest``)."""
    ref = next((image[len(hub) :] for hub in DOCKER_HUB if image.startswith(hub)), image)
    if ref.startswith(OFFICIAL) and "/" not in ref[len(OFFICIAL) :]:
        ref = ref[len(OFFICIAL) :]
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


class WorkloadAllowlist:
    """Workloads never throttled or frozen, by glob pattern (``fnmatch``, case-sensitive).

    ``units`` match the systemd unit, ``containers`` the container name, ``images``
    the container image (as :func:`image_reference` writes it: ``ollama/ollama:latest``
    for ``docker.io/ollama/ollama``; a pattern without glob characters is normalised the
    same way, so ``ollama/ollama`` allows it too), ``executables`` the executable path. A field the
    target does not know matches nothing.
    """

    def __init__(
        self,
        *,
        units: Iterable[str] = (),
        containers: Iterable[str] = (),
        images: Iterable[str] = (),
        executables: Iterable[str] = (),
    ) -> None:
        self.units = tuple(units)
        self.containers = tuple(containers)
        # An exact reference is normalised as the image is (``ollama/ollama`` allows
        # ``ollama/ollama:latest``); a glob pattern is matched as written.
        self.images = tuple(p if _GLOB.search(p) else image_reference(p) for p in images)
        self.executables = tuple(executables)

    def match(self, target: WorkloadTarget) -> str | None:
        """Why ``target`` is allowlisted (``unit ollama.service``), or ``None``."""
        unit = target.unit or (target.id if target.identified_by is WorkloadKey.UNIT else None)
        container = target.container
        if container is None and target.identified_by is WorkloadKey.CONTAINER:
            container = target.name or None
        image = None if target.image is None else image_reference(target.image)
        for what, value, patterns in (
            ("unit", unit, self.units),
            ("container", container, self.containers),
            ("image", image, self.images),
            ("executable", target.exe, self.executables),
        ):
            if value is None:
                continue
            for pattern in patterns:
                if fnmatchcase(value, pattern):
                    return f"{what} {pattern}"
        return None

    def __len__(self) -> int:
        return len(self.units) + len(self.containers) + len(self.images) + len(self.executables)


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
