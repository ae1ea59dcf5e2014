"""Forgiveness: what the detectors drop of a client an operator unbanned or allowed
(:meth:`Detector.forget`, :class:`Forgiven`, the window stores' ``forget``)."""

from __future__ import annotations

import pytest

from aisentinel.detectors.base import Forgiven
from aisentinel.detectors.credential_stuffing import (
    CredentialStuffingConfig,
    CredentialStuffingDetector,
)
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
from aisentinel.events import AddressTarget, Finding, HttpRequest, SshEvent, SshKind

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
