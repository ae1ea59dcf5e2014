"""Listening TCP sockets, read from ``<proc_root>/net/tcp`` and ``net/tcp6``.

Only TCP sockets in the LISTEN state are returned. Unix sockets are not network
reachable and are never listed (a service bound to one counts as safe).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from aisentinel.audit.model import Status

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LISTEN = "0A"


@dataclass(frozen=True, slots=True)
class ListeningSocket:
    """A TCP socket in LISTEN state: its local address and port."""

    port: int
    address: IPAddress

    @property
    def loopback(self) -> bool:
        """Whether only this host can connect (127.0.0.0/8, ::1, or ::ffff:127.x)."""
        addr = self.address
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return addr.ipv4_mapped.is_loopback
        return addr.is_loopback

    @property
    def wildcard(self) -> bool:
        """Whether it listens on every address (0.0.0.0 or ::)."""
        return self.address.is_unspecified

    @property
    def families(self) -> frozenset[int]:
        """IP versions that can reach it: ``[::]`` is taken as dual-stack (the Linux default,
        ``bindv6only=0``: /proc does not show a socket's ``IPV6_V6ONLY``), so both; an
        IPv4-mapped address IPv4 only."""
        addr = self.address
        if isinstance(addr, ipaddress.IPv4Address):
            return frozenset((4,))
        if addr.is_unspecified:
            return frozenset((4, 6))
        return frozenset((4,) if addr.ipv4_mapped is not None else (6,))

    def __str__(self) -> str:
        if isinstance(self.address, ipaddress.IPv6Address):
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


_LAN_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def is_lan(address: IPAddress) -> bool:
    """Whether ``address`` is in a private-use / CGNAT / link-local range (not loopback)."""
    return any(address in net for net in _LAN_NETWORKS)


def bind_scope(host: str, unparsed: str) -> tuple[Status, str]:
    """Who can reach a service bound to ``host`` (an IP address), as a status and a few words.

    Every interface (``host`` empty too) or a public address = fail, a LAN address =
    warn, loopback = pass; an IPv4-mapped IPv6 address is judged as the IPv4 address.
    A ``host`` that is not an IP address warns with the words ``unparsed``.
    """
    if not host:
        return Status.FAIL, "every interface"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return Status.WARN, unparsed
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return Status.FAIL, "every interface"
    if address.is_loopback:
        return Status.PASS, "loopback"
    if is_lan(address):
        return Status.WARN, f"LAN address {address}"
    return Status.FAIL, f"public address {address}"


class ProcNetError(Exception):
    """``/proc/net/tcp`` could not be read or parsed."""


def _decode_v4(hex_addr: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(bytes.fromhex(hex_addr)[::-1])


def _decode_v6(hex_addr: str) -> ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # four 32-bit words, each in host (little-endian) byte order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(words)


def parse_proc_net_tcp(text: str, *, v6: bool) -> list[ListeningSocket]:
    """Listening sockets in the text of ``/proc/net/tcp`` (``v6=False``) or ``tcp6``.

    Raises :class:`ProcNetError` on a line that does not have the kernel's format.
    """
    out: list[ListeningSocket] = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            local, state = fields[1], fields[3]
            hex_addr, hex_port = local.split(":")
            if state != _LISTEN:
                continue
            address: IPAddress = _decode_v6(hex_addr) if v6 else _decode_v4(hex_addr)
            out.append(ListeningSocket(int(hex_port, 16), address))
        except (IndexError, ValueError) as exc:
            raise ProcNetError(f"line {number}: unexpected format {line.strip()[:80]!r}") from exc
    return out


def listening_sockets(proc_root: Path) -> list[ListeningSocket]:
    """All TCP listening sockets of the network namespace that ``proc_root`` shows.

    ``net/tcp6`` may be absent (IPv6 disabled); ``net/tcp`` must exist. Raises
    :class:`ProcNetError` with the path and reason otherwise.
    """
    found: list[ListeningSocket] = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        path = proc_root / "net" / name
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            if v6:
                continue
            raise ProcNetError(f"{path} does not exist") from None
        except OSError as exc:
            raise ProcNetError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            found.extend(parse_proc_net_tcp(text, v6=v6))
        except ProcNetError as exc:
            raise ProcNetError(f"{path}: {exc}") from None
    return sorted(set(found), key=sort_key)


def sort_key(sock: ListeningSocket) -> tuple[int, int, int]:
    """Port, then IPv4 before IPv6, then address: IPv4 and IPv6 addresses do not compare."""
    return sock.port, sock.address.version, int(sock.address)
