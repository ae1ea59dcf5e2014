"""``ssh_bruteforce``: failed sshd authentications per client address.

Counts one event per attempt, as fail2ban's stock ``sshd`` filter (mode ``normal``)
does: each ``Failed password`` (or ``keyboard-interactive``, ...) line, sshd's own
``error: PAM: Authentication failure for U from A`` (its one line per keyboard-
interactive/PAM try), ``Invalid user`` (one per connection, and fail2ban counts it
too), "maximum authentication attempts exceeded", ``User U from A not allowed``,
``ROOT LOGIN REFUSED``. Not counted: pam_unix's ``authentication failure`` line, which
repeats the
``Failed password`` line of the same attempt (fail2ban marks it ``NOFAIL``), and the
``Connection closed by authenticating user U ... [preauth]`` (or ``Disconnected
from``, ``Received disconnect``) that ends a connection whose attempts were already
counted (same sshd pid). With the default 5 in 10 minutes (fail2ban's stock jail:
``maxretry = 5``, ``findtime = 10m``) an administrator's three typos (the OpenSSH
client's three prompts) count 3, as in fail2ban.

Public-key failures are *not* counted by default: a client whose agent offers
several keys logs one failure per rejected key before the right one is accepted,
and fail2ban marks them ``NOFAIL`` for the same reason. "Too many
authentication failures" (``MAX_AUTH``) is counted, so a client that exhausts
``MaxAuthTries`` with keys is still seen. Set ``count_pubkey_failures = true`` to
count them anyway.

Pre-authentication failures are counted too (``count_preauth``): a connection that
named a user and was closed before authentication with no failure logged (a bot
on a key-only server offers no password: that is all it leaves), key-exchange /
negotiation failures ("Unable to negotiate", bad banners), refused connections,
and "Timeout before authentication": a flood of those is the CVE-2024-6387
("regreSSHion") exploitation pattern, and the message says so when timeouts are at
least half the events counted. A connection closed before it named a user
("Connection closed|reset by A port P [preauth]", "Did not receive identification
string") is what a monitoring probe or a load balancer's TCP health check leaves
every few seconds: those count against ``probe_threshold`` in ``probe_window``
(default 20 in a minute, like fail2ban's ``ddos`` mode but at a rate no health
check reaches), so a scanner hammering the port is banned and a checker is not.

Slow brute force (one try every few minutes) is caught by long windows beside the
fast one (``slow_thresholds`` / ``slow_windows``, default 10 in an hour and 20 in a
day, see :mod:`~.slow`): a HIGH finding too, whose ban counts as an offence for
escalation. Probes do not count there.
"""

from __future__ import annotations

from collections.abc import Sequence

from aisentinel.configtypes import DEFAULT_MAX_KEYS, Duration
from aisentinel.detectors.base import REGISTRY, Detector, Forgiven, WindowedConfig
from aisentinel.detectors.common import MaxKeys, Threshold, Window, client_finding, client_key
from aisentinel.detectors.slow import SlowConfig, SlowCounters
from aisentinel.detectors.window import Crossing, EventWindows
from aisentinel.events import Event, Finding, Severity, SshEvent, SshKind

_FAILURES = frozenset(
    {
        SshKind.FAILED_PASSWORD,
        SshKind.INVALID_USER,
        SshKind.PREAUTH,
        SshKind.MAX_AUTH,
        SshKind.NEGOTIATION,
        SshKind.TIMEOUT,
        SshKind.REFUSED,
    }
)
"""PAM_FAILURE is not one: it repeats the ``Failed password`` line of its attempt."""
_PREAUTH_KINDS = (SshKind.PREAUTH, SshKind.NEGOTIATION, SshKind.TIMEOUT, SshKind.REFUSED)
_ATTEMPTS = frozenset(
    {SshKind.FAILED_PASSWORD, SshKind.FAILED_PUBKEY, SshKind.INVALID_USER, SshKind.MAX_AUTH}
)
"""Kinds after which the connection's closing PREAUTH line is no attempt of its own
(when they are counted: a ``Failed publickey`` that is not leaves the closing line to
count the connection)."""
_MAX_PIDS = 4096
"""sshd processes remembered as having logged an attempt (oldest forgotten first)."""
_LABELS = {
    SshKind.NEGOTIATION: "(key exchange failed)",
    SshKind.TIMEOUT: "(timeout before authentication)",
    SshKind.REFUSED: "(connection refused)",
}
"""Evidence samples of the user-less kinds, which name what happened instead."""


def _what(crossing: Crossing, timeouts: int = 0) -> str:
    """What the counted events were, for the message; ``timeouts`` of them were
    timeouts before authentication."""
    evidence = crossing.evidence
    if timeouts * 2 >= crossing.events > 0:
        return "failed ssh logins incl. timeouts before authentication (CVE-2024-6387 pattern)"
    if _LABELS[SshKind.TIMEOUT] in evidence:
        return "failed ssh logins incl. timeouts before authentication"
    if _LABELS[SshKind.NEGOTIATION] in evidence:
        return "failed ssh logins incl. key-exchange failures"
    return "failed ssh logins"


class SshBruteforceConfig(WindowedConfig, SlowConfig):
    """``[detectors.ssh_bruteforce]``."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    threshold: Threshold = 5
    window: Window = 600.0
    count_pubkey_failures: bool = False
    """Count "Failed publickey" lines too (off: clients offering several keys log them)."""
    count_preauth: bool = True
    """Count connections dropped before authentication ("Connection closed ... [preauth]",
    key-exchange failures, timeouts before authentication, refused connections)."""
    probe_threshold: Threshold = 20
    """Connections closed before they named a user (monitoring probes, health checks,
    port scanners) that make a finding within ``probe_window``."""
    probe_window: Window = 60.0


class SshBruteforceDetector(Detector):
    """HIGH when a client has ``threshold`` failed sshd authentications within ``window``."""

    name = "ssh_bruteforce"
    consumes = (SshEvent,)

    def __init__(self, config: SshBruteforceConfig) -> None:
        super().__init__(config)
        kinds = set(_FAILURES)
        if config.count_pubkey_failures:
            kinds.add(SshKind.FAILED_PUBKEY)
        if not config.count_preauth:
            kinds.difference_update(_PREAUTH_KINDS)
        self._kinds = frozenset(kinds)
        self._threshold = config.threshold
        self._window: Duration = config.window
        self._max_keys = config.max_keys
        self._probe_threshold = config.probe_threshold
        self._probe_window: Duration = config.probe_window
        self._windows = EventWindows(config.threshold, config.window, config.max_keys)
        self._probes = EventWindows(config.probe_threshold, config.probe_window, config.max_keys)
        self._slow = SlowCounters(config.slow(), config.slow_max_keys)
        self._attempted: dict[int, tuple[str, float]] = {}
        """sshd pid -> (client, time) of its latest counted attempt (a pid is reused, so
        the client and the time must fit too)."""
        self._timeouts: dict[str, int] = {}
        """Client key -> timeouts counted since its last crossing (or since expiry)."""

    def observe(self, event: Event) -> Finding | None:
        return next((f for _, f in self.observe_many((event,))), None)

    def _ends_an_attempt(self, event: SshEvent) -> bool:
        """Whether ``event`` (a PREAUTH line) closes a connection whose attempts counted;
        records the attempt when ``event`` is one."""
        pid = event.pid
        if pid is None:
            return False
        attempted = self._attempted
        if event.kind in _ATTEMPTS and event.kind in self._kinds:
            attempted.pop(pid, None)
            if len(attempted) >= _MAX_PIDS:
                del attempted[next(iter(attempted))]
            attempted[pid] = (event.client, event.ts)
            return False
        if event.kind is not SshKind.PREAUTH:
            return False
        seen = attempted.get(pid)
        return (
            seen is not None and seen[0] == event.client and 0 <= event.ts - seen[1] <= self._window
        )

    def _probe(self, event: SshEvent) -> Finding | None:
        """A connection closed before it named a user: counted at ``probe_threshold``."""
        crossing = self._probes.hit(client_key(event.client), event.ts, "(closed before login)")
        if crossing is None:
            return None
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.HIGH,
            what="ssh connections closed before login",
            threshold=self._probe_threshold,
            window=self._probe_window,
        )

    def _count(self, event: SshEvent) -> Finding | None:
        sample = event.user or _LABELS.get(event.kind)
        key = client_key(event.client)
        if event.kind is SshKind.TIMEOUT:
            timeouts = self._timeouts
            if key not in timeouts and len(timeouts) >= self._max_keys:
                del timeouts[next(iter(timeouts))]
            timeouts[key] = timeouts.get(key, 0) + 1
        crossing = self._windows.hit(key, event.ts, sample)
        slow = (
            self._slow.hit(key, event.ts, sample, fast=crossing is not None) if self._slow else None
        )
        if crossing is not None:
            return self._finding(event, crossing, self._timeouts.pop(key, 0))
        if slow is None:
            return None
        return client_finding(
            self.name,
            slow.crossing,
            event,
            severity=Severity.HIGH,
            what=f"{_what(slow.crossing, self._timeouts.get(key, 0))} (slow)",
            threshold=slow.threshold,
            window=slow.window,
        )

    def _finding(self, event: SshEvent, crossing: Crossing, timeouts: int) -> Finding:
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.HIGH,
            what=_what(crossing, timeouts),
            threshold=self._threshold,
            window=self._window,
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        kinds = self._kinds
        count = self._count
        preauth = SshKind.PREAUTH
        for i, event in enumerate(events):
            if not isinstance(event, SshEvent):
                continue
            if self._ends_an_attempt(event):
                continue  # the end of a connection whose attempts were counted
            if event.kind not in kinds:
                if event.kind is SshKind.ACCEPTED and self._slow:
                    # a user who typos, then gets in (counted under its /64, as below)
                    self._slow.forgive(client_key(event.client))
                continue
            probe = event.kind is preauth and not event.user  # closed before naming one
            for _ in range(event.repeat):  # rsyslog's "message repeated N times"
                found = self._probe(event) if probe else count(event)
                if found is not None:
                    out.append((i, found))
        return out

    def expire(self, now: float) -> int:
        attempted = self._attempted
        stale = [at for at, (_, ts) in attempted.items() if ts < now - self._window]
        for at in stale:
            del attempted[at]
        held = self._windows.expire(now)
        timeouts = self._timeouts
        for key in [key for key in timeouts if key not in self._windows]:
            del timeouts[key]
        return held + self._probes.expire(now) + self._slow.expire(now) + len(stale)

    def forget(self, forgiven: Forgiven) -> None:
        """The windows, fast, slow and of probes, and the timeouts counted (the default
        and :attr:`_timeouts`)."""
        super().forget(forgiven)
        timeouts = self._timeouts
        for key in [key for key in timeouts if forgiven(key)]:
            del timeouts[key]

    def tracked_keys(self) -> int:
        return len(self._windows) + len(self._probes) + len(self._slow) + len(self._attempted)

    def window_counts(self) -> tuple[int, int]:
        evicted, overflow = super().window_counts()
        return evicted + self._slow.evicted, overflow


REGISTRY.register("ssh_bruteforce", SshBruteforceConfig, SshBruteforceDetector)
