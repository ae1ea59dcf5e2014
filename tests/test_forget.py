"""Forgiveness: what the detectors drop of a client an operator unbanned or allowed
(:meth:`Detector.forget`, :class:`Forgiven`, the window stores' ``forget``)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from aisentinel.detectors.base import Forgiven
from aisentinel.detectors.credential_stuffing import (
    CredentialStuffingConfig,
    CredentialStuffingDetector,
)
from aisentinel.detectors.gpu_memory import GpuMemoryConfig, GpuMemoryDetector
from aisentinel.detectors.gpu_theft import GpuTheftConfig, GpuTheftDetector
from aisentinel.detectors.rules import RulesConfig, RulesDetector
from aisentinel.detectors.scanning import ScanningConfig, ScanningDetector
from aisentinel.detectors.slow import SlowCounters
from aisentinel.detectors.ssh_bruteforce import SshBruteforceConfig, SshBruteforceDetector
from aisentinel.detectors.window import (
    DistinctWindows,
    EventWindows,
    RateWindows,
    RecentSet,
)
from aisentinel.events import (
    AddressTarget,
    Finding,
    GpuSample,
    HttpRequest,
    SshEvent,
    SshKind,
    canonical_address,
    canonical_network,
)

T0 = 1_764_000_000.0


def forgiven(*texts: str) -> Forgiven:
    return Forgiven(AddressTarget.parse(t) for t in texts)


def test_forgiven_host_matches_its_spellings_and_nothing_else() -> None:
    """A forgiven IPv4 host matches its text and its IPv4-mapped spelling; another
    address, one sharing its text as a prefix, a username and an API key id do not."""
    match = forgiven("203.0.113.3")
    assert match("203.0.113.3")
    assert match("::ffff:203.0.113.3")
    assert not match("203.0.113.30")
    assert not match("203.0.113.4")
    assert not match("root")
    assert not match("key:abc")
    assert not Forgiven(())


def test_forgiven_network_matches_addresses_and_networks_inside_it() -> None:
    """A /24 matches its addresses, not its neighbours'; a /7 (no whole octet) and an
    IPv6 /64 (a /64 key, an address in it) match what lies inside and only that."""
    match = forgiven("203.0.113.0/24")
    assert match("203.0.113.77")
    assert not match("203.0.112.77")
    assert not match("203.0.1.77")
    wide = forgiven("202.0.0.0/7")
    assert wide("203.9.9.9")
    assert not wide("204.0.0.1")
    v6 = forgiven("2001:db8:5:6::7", "2001:db8:5:6::/64")
    assert v6("2001:db8:5:6::/64")
    assert v6("2001:DB8:5:6::8")
    assert not v6("2001:db8:5:7::/64")
    assert not v6("2001:db8:5::/48")  # wider than what was forgiven


def _by_ipaddress(targets: list[AddressTarget]) -> Callable[[str], bool]:
    """The reference test: a key, parsed by ``ipaddress``, is inside a target when its
    network's first ``n`` bits are those of a target ``n`` bits long."""
    prefixes = {
        (t.address.version, t.prefixlen, int(t.address) >> (t.address.max_prefixlen - t.prefixlen))
        for t in targets
    }
    lengths = sorted({(version, n) for version, n, _ in prefixes})

    def test(key: str) -> bool:
        try:
            if "/" in key:
                net = canonical_network(ipaddress.ip_network(key, strict=False))
            else:
                addr = canonical_address(key)
                net = ipaddress.ip_network((addr, addr.max_prefixlen))
        except ValueError:
            return False
        value = int(net.network_address)
        return any(
            (version, n, value >> (net.max_prefixlen - n)) in prefixes
            for version, n in lengths
            if version == net.version and n <= net.prefixlen
        )

    return test


def test_forgiven_agrees_with_ipaddress_on_every_spelling() -> None:
    """Networks nested in others, hosts, IPv4-mapped, zoned, upper-case, uncompressed,
    host-bit networks, malformed addresses and names: Forgiven says what ipaddress says."""
    targets = [
        AddressTarget.parse(t)
        for t in (
            "10.0.0.0/8",
            "10.1.2.3",  # inside the /8
            "10.1.0.0/16",  # inside the /8
            "192.0.2.7",
            "198.51.100.0/24",
            "0.0.0.0/1",
            "2001:db8:1:2::/64",
            "2001:db8:1:2::9",  # inside the /64
            "2001:db8:ff::/48",
            "fe80::1",
            "64:ff9b::c000:207",
        )
    ]
    keys = [
        "10.200.3.4",
        "10.0.0.0/8",
        "10.0.0.0/7",
        "11.0.0.1",
        "127.255.255.255",
        "128.0.0.0",
        "192.0.2.7",
        "192.0.2.8",
        "192.0.2.0/24",
        "198.51.100.255",
        "198.51.100.128/25",
        "198.51.100.0/23",
        "198.51.100.9/24",  # host bits set
        "::ffff:192.0.2.7",
        "::ffff:198.51.100.0/120",
        "::ffff:c000:207",
        "2001:db8:1:2::/64",
        "2001:DB8:1:2:0:0:0:1",
        "2001:0db8:0001:0002::/80",
        "2001:db8:1:3::/64",
        "2001:db8:1::/48",
        "2001:db8:ff:1234::/64",
        "fe80::1%eth0",
        "fe80::1%",
        "fe80::2",
        "64:ff9b::192.0.2.7",
        "010.0.0.1",
        "10.0.0.256",
        "10.0.0.1/33",
        "2001:db8::/129",
        "10.0.0.1/x",
        "1.2.3",
        "1.2.3.4\x00",
        "root",
        "2001:db8:1:2::1:root",
        "key:abc",
        "",
    ]
    match = Forgiven(targets)
    reference = _by_ipaddress(targets)
    assert [k for k in keys if match(k)] == [k for k in keys if reference(k)]
    assert match("10.200.3.4")
    assert match("2001:0db8:0001:0002::/80")
    assert not match("198.51.100.0/23")


def test_forgiven_many_targets_at_once_forgets_exactly_theirs() -> None:
    """4,096 targets at once (hosts, their /64s, IPv4 networks of several prefix
    lengths) over a table of 20,000 IPv4 and IPv6 keys and names: every key inside one
    goes, every other stays, as ipaddress judges them."""
    rng = random.Random(7)
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(8000)]
    v6 = [f"2001:db8:{rng.getrandbits(4):x}:{rng.getrandbits(8):x}::{i:x}" for i in range(6000)]
    v6_keys = [str(ipaddress.ip_network(f"{a}/64", strict=False)) for a in v6[:3000]]
    names = [f"user{i}" for i in range(3000)]
    targets: list[AddressTarget] = []
    for addr in rng.sample(v4, 1500):
        targets.append(AddressTarget.parse(addr))
    for addr in rng.sample(v4, 600):
        length = rng.choice((8, 12, 16, 20, 24, 28, 31))
        targets.append(AddressTarget(ipaddress.ip_network(f"{addr}/{length}", strict=False)))
    for addr in rng.sample(v6, 998):
        host = AddressTarget.parse(addr)
        targets += [host, host.grouped(64)]
    assert len(targets) == 4096
    keys = [*v4, *v6, *v6_keys, *names]
    store = EventWindows(1, 600.0, len(keys))
    for key in keys:
        store.hit(key, T0)
    reference = _by_ipaddress(targets)
    expected = {k for k in keys if reference(k)}
    assert 1500 < len(expected) < len(keys) - len(names)
    assert store.forget(Forgiven(targets)) == len(expected)
    assert [k for k in keys if k in store] == [k for k in keys if k not in expected]


@pytest.mark.parametrize("threshold", [2, 5])
def test_event_windows_forget_drops_the_key_and_keeps_the_others(threshold: int) -> None:
    """A forgotten key counts from nothing (no crossing at its next event, a crossing
    at the threshold-th new one); another key keeps its count; the table is still
    evicted and expired in order afterwards."""
    store = EventWindows(threshold, 600.0, 4)
    for i in range(threshold):
        store.hit("203.0.113.3", T0 + i, "root")
        if i < threshold - 1:
            store.hit("198.51.100.1", T0 + i)
    assert store.forget(forgiven("203.0.113.3")) == 1
    assert "203.0.113.3" not in store
    assert store.hit("198.51.100.1", T0 + 10) is not None
    crossings = [store.hit("203.0.113.3", T0 + 20 + i, "admin") for i in range(threshold)]
    assert crossings[:-1] == [None] * (threshold - 1)
    last = crossings[-1]
    assert last is not None
    assert last.events == threshold
    assert "root" not in last.evidence
    for i in range(4):  # fill and overflow: second-chance order still holds
        store.hit(f"192.0.2.{i}", T0 + 30 + i)
    assert len(store) == 4
    assert store.expire(T0 + 10_000) == 4


def test_distinct_windows_forget_values_drops_a_member_everywhere() -> None:
    """The forgiven client leaves every username's members (a key left with none
    goes; a username's quiet period stays); the next crossing lists the others only;
    expiry still works."""
    store = DistinctWindows(3, 600.0, 10)
    for i, client in enumerate(("203.0.113.3", "198.51.100.1", "198.51.100.2")):
        store.hit("root", client, T0 + i)
    store.hit("admin", "203.0.113.3", T0 + 3)
    assert store.forget_values(forgiven("203.0.113.3")) == 2
    assert len(store) == 1
    assert store.hit("root", "198.51.100.3", T0 + 4) is None  # quiet: it crossed
    store.unquiet()
    crossing = store.hit("root", "198.51.100.4", T0 + 5)
    assert crossing is not None
    assert "203.0.113.3" not in crossing.evidence
    assert store.expire(T0 + 10_000) == 1


def test_distinct_windows_forget_drops_keys() -> None:
    """A forgotten key (a client's usernames) is gone; the next crossing needs the
    threshold of new values."""
    store = DistinctWindows(2, 600.0, 10)
    store.hit("203.0.113.3", "root", T0)
    store.hit("203.0.113.3", "admin", T0 + 1)
    assert store.forget(forgiven("203.0.113.3")) == 1
    assert store.last_seen("203.0.113.3") == float("-inf")
    assert store.hit("203.0.113.3", "root", T0 + 2) is None
    assert store.hit("203.0.113.3", "admin", T0 + 3) is not None


def test_rate_windows_forget_drops_the_count_and_the_quiet_period() -> None:
    """A forgotten key's requests so far no longer count toward its rate."""
    store = RateWindows(5, 60.0, 100)
    for i in range(4):
        store.hit("203.0.113.3", T0 + i)
    assert store.forget(forgiven("203.0.113.3")) == 1
    assert "203.0.113.3" not in store
    assert store.hit("203.0.113.3", T0 + 5) is None


def test_slow_counters_and_recent_set_forget() -> None:
    """The long windows forget a client's slow failures; a RecentSet drops its marks
    only when asked by name (``discard_matching``)."""
    slow = SlowCounters([(3, 3600.0)], 100)
    slow.hit("203.0.113.3", T0)
    slow.hit("203.0.113.3", T0 + 60)
    assert slow.forget(forgiven("203.0.113.3")) == 1
    assert slow.hit("203.0.113.3", T0 + 120) is None
    marks = RecentSet(600.0, 10)
    marks.add("203.0.113.3", T0)
    marks.add("198.51.100.1", T0)
    assert marks.discard_matching(forgiven("203.0.113.3")) == 1
    assert marks.last("203.0.113.3") == float("-inf")
    assert marks.last("198.51.100.1") == T0


def _ssh(ts: float, client: str, kind: SshKind = SshKind.FAILED_PASSWORD) -> SshEvent:
    return SshEvent(T0 + ts, "auth", client, kind, "root", 22, None)


def test_ssh_bruteforce_forgets_a_client_its_next_failure_counts_from_one() -> None:
    """After forget, one more failure of an address whose window is full is no
    finding, even with its quiet period ended (the unban's unquiet); five are; its
    timeouts are forgotten too (the message says none)."""
    det = SshBruteforceDetector(SshBruteforceConfig())
    client = "203.0.113.3"
    found = [det.observe(_ssh(i, client, SshKind.TIMEOUT)) for i in range(5)]
    assert found[-1] is not None
    det.forget(forgiven(client))
    det.unquiet()
    assert det.observe(_ssh(10, client)) is None
    again = [det.observe(_ssh(11 + i, client)) for i in range(4)]
    last = again[-1]
    assert again[:-1] == [None] * 3
    assert last is not None
    assert last.message.startswith("5 failed ssh logins in")


def test_credential_stuffing_forgets_a_member_and_its_repeats() -> None:
    """A forgiven member is not named by the username's next crossing, and needs two
    new failures to be a late member again."""
    det = CredentialStuffingDetector(CredentialStuffingConfig(clients_threshold=3))
    admin = "203.0.113.3"
    found: list[Finding] = []
    events = [_ssh(0, admin), _ssh(1, admin)]
    events += [_ssh(2 + i, f"198.51.100.{i // 2}") for i in range(4)]
    for event in events:
        found.extend(f for _, f in det.observe_many((event,)))
    assert admin in [f.client for f in found]
    det.forget(forgiven(admin))
    det.unquiet()
    found = [f for _, f in det.observe_many((_ssh(10, "198.51.100.9"),))]
    assert [f.clients for f in found if f.client is None] == [
        ("198.51.100.0", "198.51.100.1", "198.51.100.9")
    ]
    assert admin not in [f.client for f in found]
    assert det.observe_many((_ssh(11, admin),)) == []
    late = [f.client for _, f in det.observe_many((_ssh(12, admin),))]
    assert late == [admin]


def test_scanning_forgets_a_clients_probes_and_its_miss() -> None:
    """A forgotten client's sensitive-path probes no longer count: after forget and
    unquiet, one more probe is no finding."""
    det = ScanningDetector(ScanningConfig())
    client = "203.0.113.3"
    paths = ["/.env", "/.git/config", "/wp-login.php", "/.aws/credentials"]
    found = [
        det.observe(HttpRequest(T0 + i, "web", client, "GET", p, 404, 0, None, "ua"))
        for i, p in enumerate(paths[:3])
    ]
    assert found[-1] is not None
    det.forget(forgiven(client))
    det.unquiet()
    probe = HttpRequest(T0 + 10, "web", client, "GET", paths[3], 404, 0, None, "ua")
    assert det.observe(probe) is None


def test_rules_forget_reads_the_client_part_of_its_keys() -> None:
    """The rules' tables key a client under its rule's id: a forgiven client's next
    match of a one-shot rule is reported (the threshold is 1) and a counted rule's is
    counted from nothing."""
    det = RulesDetector(RulesConfig(rules_dir=None, builtin=True, packs=("traversal",)))
    probe = "/a/../../etc/passwd"
    client = "203.0.113.3"
    ask = HttpRequest(T0, "web", client, "GET", probe, 404, 0, None, "ua")
    assert det.observe(ask) is not None
    assert det.observe(ask._replace(ts=T0 + 1)) is None  # quiet for the window
    det.forget(forgiven("198.51.100.1"))
    assert det.observe(ask._replace(ts=T0 + 2)) is None  # another client forgiven
    det.forget(forgiven(client))
    assert det.observe(ask._replace(ts=T0 + 3)) is not None


def test_rules_forget_keeps_a_per_user_rules_count_under_an_address_like_name(
    tmp_path: Path,
) -> None:
    """A rule counting per user keeps its count for a username that reads as the
    forgiven address (the sender's choice): its third match still crosses."""
    (tmp_path / "local.toml").write_text(
        "[[rules]]\n"
        'id = "local-admin-probe"\n'
        'description = "Basic-auth attempts at /admin, counted per user"\n'
        'key = "user"\n'
        "threshold = 3\n"
        "window = 600.0\n"
        'match.path.prefix = ["/admin"]\n'
        'tests = [ { request = "GET /admin/x HTTP/1.1", user = "bob" } ]\n'
    )
    det = RulesDetector(RulesConfig(rules_dir=tmp_path, builtin=False))
    admin = "203.0.113.30"

    def ask(i: int) -> HttpRequest:
        return HttpRequest(T0 + i, "web", "198.51.100.66", "GET", "/admin/x", 401, 0, admin, "ua")

    assert det.observe(ask(0)) is None
    assert det.observe(ask(1)) is None
    det.forget(forgiven(admin))
    found = det.observe(ask(2))
    assert found is not None
    assert found.key == admin
    assert found.client == "198.51.100.66"


GiB = 1 << 30


def _gpu(ts: float, *, used: float = 0.1, util: float = 0.9, index: int = 0) -> GpuSample:
    total = 80 * GiB
    return GpuSample(
        T0 + ts,
        index,
        f"GPU-{index}",
        "NVIDIA H100",
        None,
        False,
        util,
        0.1,
        total,
        int(used * total),
        total - int(used * total),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def _inference(ts: float, client: str) -> HttpRequest:
    return HttpRequest(T0 + ts, "web", client, "POST", "/api/generate", 200, 0, None, "ua")


def test_gpu_memory_forgets_a_flooders_requests() -> None:
    """An unbanned flooder is not named again by the GPU's next memory climb on the
    requests it made before the unban; its new flood names it."""
    det = GpuMemoryDetector(GpuMemoryConfig())
    flooder = "203.0.113.30"
    det.observe_many([_gpu(0, used=0.2)])
    det.observe_many([_inference(1 + i * 0.01, flooder) for i in range(150)])
    first = [f for _, f in det.observe_many([_gpu(5, used=0.8)])]
    assert flooder in [f.client for f in first]
    det.forget(forgiven(flooder))
    det.unquiet()
    det.observe_many([_gpu(20, used=0.2)])
    assert [f for _, f in det.observe_many([_gpu(36, used=0.8)])] == []
    det.observe_many([_gpu(70, used=0.2)])
    det.observe_many([_inference(71 + i * 0.01, flooder) for i in range(150)])
    again = [f for _, f in det.observe_many([_gpu(75, used=0.8)])]
    assert [f.count for f in again if f.client == flooder] == [150]


def test_gpu_theft_forgets_a_clients_requests_and_its_report() -> None:
    """A forgiven thief that goes on is reported on its requests after the unban alone
    (not its old ones), and at once: its earlier report no longer keeps it quiet."""
    det = GpuTheftDetector(GpuTheftConfig(window=300.0))
    thief = "203.0.113.30"
    det.observe_many([_gpu(0), _gpu(100, index=1)])
    det.observe_many([_inference(150 + i, thief) for i in range(30)])
    det.observe_many([_gpu(200), _gpu(200, index=1)])
    first = [f for _, f in det.observe_many([_gpu(300)])]
    assert [f.count for f in first if f.client == thief] == [30]
    det.forget(forgiven(thief))
    det.unquiet()
    det.observe_many([_inference(310 + i, thief) for i in range(25)])
    again = [f for _, f in det.observe_many([_gpu(400, index=1)])]
    assert [f.count for f in again if f.client == thief] == [25]
