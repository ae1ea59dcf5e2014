"""The allowlist: loopback, configured networks, host addresses, IPv4-mapped IPv6."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from aisentinel.decisions.allowlist import (
    Allowlist,
    canonical_address,
    read_host_addresses,
)

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 192.0.2.9
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 192.0.2.2
              /32 host LOCAL
"""

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""


def nets(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t) for t in texts]


def test_loopback_is_always_allowed() -> None:
    """Loopback (IPv4, IPv6 and IPv4-mapped) is allowlisted with no configuration."""
    allow = Allowlist.build([])
    assert allow.contains("127.0.0.1")
    assert allow.contains("127.45.6.7")
    assert allow.contains("::1")
    assert allow.contains("::ffff:127.0.0.1")
    assert not allow.contains("203.0.113.7")


def test_configured_networks_match_most_specific_first() -> None:
    """An address in several networks reports the most specific one."""
    allow = Allowlist(nets("10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"))
    assert allow.match("10.1.2.3") == ipaddress.ip_network("10.1.0.0/16")
    assert allow.match("10.200.0.1") == ipaddress.ip_network("10.0.0.0/8")
    assert allow.match("2001:db8:1::5") == ipaddress.ip_network("2001:db8::/32")
    assert allow.match("11.0.0.1") is None
    assert allow.match("2001:db9::1") is None


def test_ipv4_mapped_ipv6_counts_as_its_ipv4() -> None:
    """``::ffff:a.b.c.d`` matches IPv4 networks, and mapped networks become IPv4 ones."""
    allow = Allowlist(nets("198.51.100.0/24", "::ffff:192.0.2.0/120"))
    assert allow.contains("::ffff:198.51.100.20")
    assert allow.contains(ipaddress.ip_address("::ffff:198.51.100.20"))
    assert allow.contains("192.0.2.7")
    assert ipaddress.ip_network("192.0.2.0/24") in allow.networks
    assert not allow.contains("::ffff:203.0.113.1")


def test_nat64_addresses_and_networks_count_as_the_ipv4_they_embed() -> None:
    """A NAT64 address of an allowlisted IPv4 client is allowlisted; a network in NAT64
    space overlaps the allowlisted IPv4 networks whose clients it holds; loopback is
    not reached through NAT64 (no gateway shows a 127/8 client)."""
    allow = Allowlist.build([ipaddress.ip_network("198.51.100.5/32")])
    admin = ipaddress.ip_network("198.51.100.5/32")
    assert allow.match("64:ff9b::198.51.100.5") == admin
    assert allow.match("64:ff9b:1:abcd::c633:6405") == admin
    assert allow.match("64:ff9b::198.51.100.6") is None
    assert allow.match("64:ff9b::127.0.0.1") is None
    assert allow.match("2001:db8::c633:6405") is None  # not NAT64: not unfolded
    for wide in ("64:ff9b::/96", "64:ff9b::c633:6400/120", "64:ff9b:1:abcd::/64"):
        assert allow.overlapping(ipaddress.ip_network(wide)) == admin
    assert allow.overlapping(ipaddress.ip_network("64:ff9b::cb00:7100/120")) is None
    assert Allowlist.build([]).overlapping(ipaddress.ip_network("64:ff9b::/96")) is None


def test_invalid_address_raises_but_membership_is_false() -> None:
    """``contains`` rejects non-addresses with ValueError; ``in`` just says no."""
    allow = Allowlist.build(nets("0.0.0.0/0"))
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        allow.contains("not-an-ip")
    assert "not-an-ip" not in allow
    assert 42 not in allow
    assert "10.0.0.1" in allow


def test_cache_is_bounded_and_results_stay_right() -> None:
    """The lookup cache never grows past its size, and evicted entries are recomputed."""
    allow = Allowlist(nets("10.0.0.0/8"), cache_size=8)
    for i in range(100):
        assert allow.contains(f"10.0.0.{i}")
        assert not allow.contains(f"11.0.0.{i}")
    assert len(allow._cache) <= 8
    assert allow.contains("10.0.0.1")


def test_duplicate_networks_are_kept_once() -> None:
    """The same network given twice (in two spellings) is stored once."""
    allow = Allowlist(nets("10.0.0.0/8", "10.0.0.0/8", "::ffff:10.0.0.0/104"))
    assert allow.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert len(allow) == 1


def test_build_adds_host_addresses_and_skips_bad_ones() -> None:
    """Host addresses become /32 or /128 entries; unparsable ones are skipped."""
    allow = Allowlist.build([], ["192.0.2.2", "2001:db8::2", "garbage", "fe80::1%eth0"])
    assert allow.contains("192.0.2.2")
    assert not allow.contains("192.0.2.3")
    assert allow.contains("2001:db8::2")
    assert allow.contains("fe80::1")
    assert not allow.contains("2001:db8::3")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_canonical_address(text: str, canonical: str) -> None:
    """One host has one text form: mapped IPv6 unwrapped, zones dropped, IPv6 compressed."""
    assert str(canonical_address(text)) == canonical


@pytest.mark.parametrize("text", ["", "10.0.0.0/8", "1.2.3", "example.org", " 10.0.0.1"])
def test_canonical_address_rejects_non_addresses(text: str) -> None:
    """Networks, host names and padded text are not single addresses."""
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        canonical_address(text)


def test_read_host_addresses_from_fixture_proc(tmp_path: Path) -> None:
    """Local /32 leaves of fib_trie and every if_inet6 entry are read, without duplicates."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "net" / "if_inet6").write_text(IF_INET6)
    found = read_host_addresses(tmp_path)
    assert found == [
        "127.0.0.1",
        "192.0.2.2",
        "192.0.2.9",
        "::1",
        "2001:db8::2",
        "fe80::fc:ff:fe00:1",
    ]


def test_read_host_addresses_survives_missing_files(tmp_path: Path) -> None:
    """A proc tree without the files yields an empty list, not an error."""
    assert read_host_addresses(tmp_path) == []


def test_read_host_addresses_on_this_host() -> None:
    """On the real /proc the loopback address is among the host's addresses."""
    if not Path("/proc/net/fib_trie").exists():
        pytest.skip("/proc/net/fib_trie is not available here")
    assert "127.0.0.1" in read_host_addresses()


@pytest.mark.parametrize(
    "network",
    [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "9.0.0.0/8",
        "192.0.2.0/24",
        "192.0.2.128/25",
        "192.0.3.0/24",
        "198.51.0.0/16",
        "198.51.100.5/32",
        "198.51.100.6/32",
        "0.0.0.0/0",
        "2001:db8::/32",
        "2001:db8:1::/64",
        "2001:db9::/32",
        "2001:db8:ffff::/48",
        "::/0",
    ],
)
def test_overlapping_prefix_agrees_with_a_scan(network: str) -> None:
    """The integer overlap test finds an allowlisted network exactly when one overlaps."""
    allow = Allowlist.build(
        [
            ipaddress.ip_network("10.1.2.0/24"),
            ipaddress.ip_network("192.0.2.0/25"),
            ipaddress.ip_network("198.51.100.5/32"),
            ipaddress.ip_network("2001:db8:ffff:1::/64"),
        ]
    )
    net = ipaddress.ip_network(network)
    scan = [n for n in allow.networks if n.version == net.version and n.overlaps(net)]
    found = allow.overlapping_prefix(net.network_address, net.prefixlen)
    assert (found is None) == (not scan)
    assert found is None or found in scan
