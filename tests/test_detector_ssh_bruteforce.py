"""ssh_bruteforce: failed sshd logins per client."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aisentinel.detectors.common import client_key, set_ipv6_key_prefix
from aisentinel.detectors.ssh_bruteforce import SshBruteforceConfig, SshBruteforceDetector
from aisentinel.events import Finding, Severity, SshEvent, SshKind
from aisentinel.parsers.sshd import message_event

T0 = 1_764_000_000.0


def ssh(
    ts: float,
    kind: SshKind = SshKind.FAILED_PASSWORD,
    client: str = "203.0.113.7",
    user: str | None = "root",
    pid: int | None = None,
) -> SshEvent:
    return SshEvent(T0 + ts, "auth", client, kind, user, 22, pid)


def feed(det: SshBruteforceDetector, events: list[SshEvent]) -> list[Finding]:
    return [f for e in events if (f := det.observe(e)) is not None]


def make(**kw: object) -> SshBruteforceDetector:
    return SshBruteforceDetector(SshBruteforceConfig.model_validate(kw))


def test_defaults_match_fail2ban_sshd_jail() -> None:
    """Defaults are fail2ban's stock sshd jail: 5 failures in 10 minutes."""
    cfg = SshBruteforceConfig()
    assert (cfg.threshold, cfg.window, cfg.enabled) == (5, 600.0, True)


def test_fifth_failure_in_window_is_high_finding() -> None:
    """Five failures within 10 minutes give one HIGH finding about the client."""
    det = make()
    found = feed(det, [ssh(i * 100.0, user=f"u{i}") for i in range(5)])
    assert len(found) == 1
    finding = found[0]
    assert finding.severity is Severity.HIGH
    assert finding.client == finding.key == "203.0.113.7"
    assert finding.count == 5
    assert finding.detector == "ssh_bruteforce"
    assert finding.message == "5 failed ssh logins in 6m40s (threshold 5 in 10m)"
    assert finding.evidence == ("u0", "u1", "u2", "u3", "u4")
    assert finding.source == "auth"
    assert finding.ts == T0 + 400


def test_four_failures_or_slow_failures_do_not_fire() -> None:
    """Four failures, or five spread over more than the window, give nothing."""
    assert feed(make(), [ssh(i) for i in range(4)]) == []
    assert feed(make(), [ssh(i * 151.0) for i in range(5)]) == []


def test_pam_line_does_not_count_beside_its_failed_password() -> None:
    """PAM's failure line repeats its attempt's Failed password (fail2ban: NOFAIL)."""
    events = [
        ssh(0, SshKind.PAM_FAILURE),
        ssh(1),
        ssh(2, SshKind.PAM_FAILURE),
        ssh(3),
        ssh(4, SshKind.INVALID_USER),
    ]
    assert feed(make(), events) == []
    assert len(feed(make(), [*events, ssh(5), ssh(6)])) == 1


def test_three_typos_and_the_closing_line_count_three() -> None:
    """An admin's three prompts (PAM line, 3 Failed password, Connection closed by
    authenticating user) count 3, as in fail2ban: no finding at 5."""
    det = make()
    events = [
        ssh(0, SshKind.PAM_FAILURE, pid=2001),
        ssh(1, pid=2001),
        ssh(2, pid=2001),
        ssh(3, pid=2001),
        ssh(3, SshKind.PREAUTH, pid=2001),
        ssh(3, SshKind.PREAUTH, user=None, pid=2001),
    ]
    assert feed(det, events) == []
    again = [ssh(10, pid=2002), ssh(11, pid=2002)]
    assert [f.count for f in feed(det, again)] == [5]


def test_key_only_bot_is_counted() -> None:
    """A bot on a key-only server leaves only "Connection closed by authenticating user":
    each connection counts once (its user-less "Received disconnect" does not)."""
    events = []
    for i in range(5):
        events += [ssh(i * 20, SshKind.PREAUTH, user=None, pid=4000 + i)]
        events += [ssh(i * 20, SshKind.PREAUTH, pid=4000 + i)]
    found = feed(make(), events)
    assert [f.count for f in found] == [5]


def test_keyboard_interactive_tries_and_verbose_key_bots_are_counted() -> None:
    """sshd's "PAM: Authentication failure" (one per keyboard-interactive try, no Failed
    line) counts each try; a key bot on a VERBOSE server ("Failed publickey", not counted,
    then the closing line) still counts once per connection."""
    kbd = message_event("error: PAM: Authentication failure for root from 203.0.113.7", T0, "auth")
    assert kbd is not None
    tries = [kbd._replace(ts=T0 + i, pid=5000 + i // 3) for i in range(5)]
    assert [f.count for f in feed(make(), tries)] == [5]
    events = []
    for i in range(5):
        events += [ssh(i * 20, SshKind.FAILED_PUBKEY, pid=6000 + i)]
        events += [ssh(i * 20, SshKind.PREAUTH, pid=6000 + i)]
    assert [f.count for f in feed(make(), events)] == [5]


def test_probes_count_at_their_own_threshold() -> None:
    """Connections closed before naming a user (health checks) count at probe_threshold
    in probe_window: one every 10 s never crosses, a scanner hammering does."""
    check = [ssh(i * 10.0, SshKind.PREAUTH, user=None) for i in range(100)]
    assert feed(make(), check) == []
    scan = [ssh(i * 2.0, SshKind.PREAUTH, user=None) for i in range(20)]
    found = feed(make(), scan)
    assert len(found) == 1
    assert "closed before login" in found[0].message
    assert feed(make(count_preauth=False), scan) == []


def test_one_timeout_among_failures_is_not_labelled_regresshion() -> None:
    """The CVE-2024-6387 label needs timeouts to be at least half of what was counted."""
    mixed = [ssh(0, SshKind.TIMEOUT, user=None)] + [ssh(float(i)) for i in range(1, 5)]
    found = feed(make(), mixed)
    assert len(found) == 1
    assert "CVE-2024-6387" not in found[0].message
    assert "timeouts" in found[0].message
    flood = [ssh(float(i), SshKind.TIMEOUT, user=None) for i in range(5)]
    assert "CVE-2024-6387" in feed(make(), flood)[0].message


def test_pubkey_failures_and_accepted_not_counted_by_default() -> None:
    """Publickey failures (agents offering keys) and successes are not failures."""
    events = [ssh(i, SshKind.FAILED_PUBKEY) for i in range(10)] + [ssh(11, SshKind.ACCEPTED)]
    assert feed(make(), events) == []
    assert len(feed(make(count_pubkey_failures=True), events)) == 1


def test_preauth_and_max_auth_count() -> None:
    """Pre-auth disconnects and MaxAuthTries exhaustion count unless preauth is disabled."""
    events = [ssh(i, SshKind.PREAUTH) for i in range(4)] + [ssh(5, SshKind.MAX_AUTH)]
    assert len(feed(make(), events)) == 1
    assert feed(make(count_preauth=False), events) == []


def test_ipv6_clients_and_no_allowlist() -> None:
    """IPv6 and private/loopback clients are reported: allowlisting is the decisions' job."""
    for client in ("2001:db8::dead:beef", "127.0.0.1", "10.0.0.5"):
        found = feed(make(), [ssh(i, client=client) for i in range(5)])
        assert [f.client for f in found] == [client]


def test_ipv6_addresses_of_one_64_are_counted_together() -> None:
    """An attacker taking a new address of its /64 for every attempt is counted per /64
    (named in the message, the finding about the address that crossed); another /64
    and an IPv4 address are counted apart; at prefix 128 every address is alone."""
    rotating = [ssh(i, client=f"2001:db8:77:1::{i + 1:x}") for i in range(5)]
    found = feed(make(), rotating)
    assert [(f.client, f.key) for f in found] == [("2001:db8:77:1::5", "2001:db8:77:1::/64")]
    assert "from 2001:db8:77:1::/64" in found[0].message
    spread = [ssh(i, client=f"2001:db8:77:{i}::1") for i in range(5)]
    assert feed(make(), spread) == []
    set_ipv6_key_prefix(128)
    try:
        assert feed(make(), rotating) == []
    finally:
        set_ipv6_key_prefix(64)


def test_client_key() -> None:
    """IPv4 and non-addresses are their own key; IPv6 text of any spelling its network."""
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:DB8:0:0:1::9") == "2001:db8::/64"
    assert client_key("::ffff:zz") == "::ffff:zz"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("64:ff9b::cb00:7107") == "64:ff9b::cb00:7107"  # NAT64: one IPv4 host
    set_ipv6_key_prefix(48)
    try:
        assert client_key("2001:db8:1:2::9") == "2001:db8:1::/48"
    finally:
        set_ipv6_key_prefix(64)
    with pytest.raises(ValueError, match="1-128"):
        set_ipv6_key_prefix(0)


def test_continuing_attack_refires_once_per_window() -> None:
    """One failure a second for 25 minutes gives three findings (t=4s, ~10m, ~20m)."""
    found = feed(make(), [ssh(float(i)) for i in range(1500)])
    assert [f.ts - T0 for f in found] == [4.0, 604.0, 1204.0]
    assert found[1].count == 600


def test_expire_and_lru_cap() -> None:
    """Idle clients are expired; at most max_keys clients are tracked (fast window)."""
    det = make(max_keys=3, slow_thresholds=[], slow_windows=[])
    for i in range(10):
        det.observe(ssh(float(i), client=f"198.51.100.{i}"))
    assert det.tracked_keys() == 3
    assert det.expire(T0 + 608.5) == 2
    assert det.tracked_keys() == 1


def test_slow_brute_force_crosses_long_windows() -> None:
    """One failure every 5 minutes: 10 in 1h crosses (HIGH, slow), then 20 in 24h."""
    det = make()
    found = feed(det, [ssh(i * 300.0) for i in range(40)])
    assert [(f.window, f.count) for f in found][:2] == [(3600.0, 10), (86_400.0, 20)]
    assert all("(slow)" in f.message and f.severity is Severity.HIGH for f in found)


def test_a_user_who_logs_in_between_typos_is_no_slow_attacker() -> None:
    """A successful login forgets the client's long-window failures: an admin who mistypes
    a few times an hour all day is never a slow brute force (one who never gets in is)."""
    det = make()
    typos = []
    for hour in range(24):
        typos += [ssh(hour * 3600.0 + 60 * i, user="admin") for i in range(4)]
        typos.append(ssh(hour * 3600.0 + 300, SshKind.ACCEPTED, user="admin"))
    assert feed(det, typos) == []
    never = [e for e in typos if e.kind is not SshKind.ACCEPTED]
    assert feed(make(), never) != []


def test_an_ipv6_user_who_logs_in_between_typos_is_no_slow_attacker() -> None:
    """A login forgets the long-window failures counted under the IPv6 client's /64."""
    det = make()
    typos = []
    for hour in range(24):
        at = hour * 3600.0
        typos += [ssh(at + 60 * i, client="2001:db8:5:6::20", user="admin") for i in range(2)]
        typos.append(ssh(at + 300, SshKind.ACCEPTED, client="2001:db8:5:6::20", user="admin"))
    assert feed(det, typos) == []


def test_slow_windows_are_bounded_and_validated() -> None:
    """slow_max_keys caps the long windows' clients (one store for both windows); more
    than four long windows, a window over 366d or unpaired lists are refused."""
    det = make(slow_max_keys=2)
    for i in range(10):
        det.observe(ssh(float(i), client=f"198.51.100.{i}"))
    assert det.tracked_keys() == 10 + 2
    assert det.evictions() == 8  # eight clients pushed out of both long windows at once
    with pytest.raises(ValidationError):
        make(slow_thresholds=[10] * 5, slow_windows=["1h"] * 5)
    with pytest.raises(ValidationError):
        make(slow_thresholds=[10], slow_windows=["400d"])
    with pytest.raises(ValidationError, match="one threshold per window"):
        make(slow_thresholds=[10, 20], slow_windows=["1h"])


def test_unquiet_keeps_the_eviction_counter() -> None:
    """unquiet() forgets which clients the fast window reported without lowering
    evictions() (exported as a counter), and a fast attacker is still found after it."""
    det = make(slow_max_keys=2)
    for i in range(10):
        feed(det, [ssh(i * 10.0 + k, client=f"198.51.100.{i}") for k in range(5)])
    before = det.evictions()
    assert before > 8  # the long windows' store and the reported set were both full
    det.unquiet()
    assert det.evictions() == before
    assert feed(det, [ssh(700.0 + k, client="192.0.2.1") for k in range(5)]) != []


def test_a_repeated_line_counts_as_often_as_it_says() -> None:
    """One Failed password and rsyslog's "repeated 4 times" of it are five attempts."""
    events = [ssh(0, pid=9500), ssh(8, pid=9500)._replace(repeat=4)]
    assert [f.count for f in feed(make(), events)] == [5]
