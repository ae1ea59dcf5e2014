"""``ssh_bruteforce``: failed sshd authentications per client address.

Counts every sshd event that fail2ban's stock ``sshd`` filter counts, one per
line, as fail2ban does: one password attempt usually logs a PAM failure *and* a
"Failed password" line, and an unknown user logs "Invalid user" *and* "Failed
password for invalid user"; each is an event and each counts. With the default
5 events in 10 minutes (fail2ban's stock jail: ``maxretry = 5``, ``findtime =
10m``) every client that jail bans is flagged here too, no later than fail2ban.

Public-key failures are *not* counted by default: a client whose agent offers
several keys logs one failure per rejected key before the right one is accepted,
and fail2ban marks them ``NOFAIL`` for the same reason. "Too many
authentication failures" (``MAX_AUTH``) is counted, so a client that exhausts
``MaxAuthTries`` with keys is still seen. Set ``count_pubkey_failures = true`` to
count them anyway.

Pre-authentication failures are counted too (``count_preauth``): connections closed
before authentication, key-exchange / negotiation failures ("Unable to negotiate",
"no matching key exchange method", bad banners), refused connections, and
"Timeout before authentication": a flood of those is the CVE-2024-6387
("regreSSHion") exploitation pattern, and the message says so.

Slow brute force (one try every few minutes) is caught by long windows beside the
fast one (``slow_thresholds`` / ``slow_windows``, default 10 in an hour and 20 in a
day, see :mod:`~.slow`): a HIGH finding too, whose ban counts as an offence for
escalation.
"""

from __future__ import annotations

from collections.abc import Sequence

from aisentinel.configtypes import DEFAULT_MAX_KEYS, Duration
from aisentinel.detectors.base import REGISTRY, Detector, WindowedConfig
from aisentinel.detectors.common import MaxKeys, Threshold, Window, client_finding, client_key
from aisentinel.detectors.slow import SlowConfig, SlowCounters
from aisentinel.detectors.window import Crossing, EventWindows
from aisentinel.events import Event, Finding, Severity, SshEvent, SshKind

_FAILURES = frozenset(
    {
        SshKind.FAILED_PASSWORD,
        SshKind.INVALID_USER,
        SshKind.PREAUTH,
        SshKind.PAM_FAILURE,
        SshKind.MAX_AUTH,
        SshKind.NEGOTIATION,
        SshKind.TIMEOUT,
        SshKind.REFUSED,
    }
)
_PREAUTH_KINDS = (SshKind.PREAUTH, SshKind.NEGOTIATION, SshKind.TIMEOUT, SshKind.REFUSED)
_LABELS = {
    SshKind.NEGOTIATION: "(key exchange failed)",
    SshKind.TIMEOUT: "(timeout before authentication)",
    SshKind.REFUSED: "(connection refused)",
}
"""Evidence samples of the user-less kinds, which name what happened instead."""


def _what(crossing: Crossing) -> str:
    """What the counted events were, for the message."""
    evidence = crossing.evidence
    if _LABELS[SshKind.TIMEOUT] in evidence:
        return "failed ssh logins incl. timeouts before authentication (CVE-2024-6387 pattern)"
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
        self._windows = EventWindows(config.threshold, config.window, config.max_keys)
        self._slow = SlowCounters(config.slow(), config.slow_max_keys)

    def observe(self, event: Event) -> Finding | None:
        return next((f for _, f in self.observe_many((event,))), None)

    def _count(self, event: SshEvent) -> Finding | None:
        sample = event.user or _LABELS.get(event.kind)
        key = client_key(event.client)
        crossing = self._windows.hit(key, event.ts, sample)
        slow = (
            self._slow.hit(key, event.ts, sample, fast=crossing is not None) if self._slow else None
        )
        if crossing is not None:
            return self._finding(event, crossing)
        if slow is None:
            return None
        return client_finding(
            self.name,
            slow.crossing,
            event,
            severity=Severity.HIGH,
            what=f"{_what(slow.crossing)} (slow)",
            threshold=slow.threshold,
            window=slow.window,
        )

    def _finding(self, event: SshEvent, crossing: Crossing) -> Finding:
        return client_finding(
            self.name,
            crossing,
            event,
            severity=Severity.HIGH,
            what=_what(crossing),
            threshold=self._threshold,
            window=self._window,
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        kinds = self._kinds
        count = self._count
        for i, event in enumerate(events):
            if not isinstance(event, SshEvent) or event.kind not in kinds:
                if type(event) is SshEvent and event.kind is SshKind.ACCEPTED and self._slow:
                    # a user who typos, then gets in (counted under its /64, as below)
                    self._slow.forgive(client_key(event.client))
                continue
            found = count(event)
            if found is not None:
                out.append((i, found))
        return out

    def expire(self, now: float) -> int:
        return self._windows.expire(now) + self._slow.expire(now)

    def tracked_keys(self) -> int:
        return len(self._windows) + len(self._slow)

    def window_counts(self) -> tuple[int, int]:
        evicted, overflow = super().window_counts()
        return evicted + self._slow.evicted, overflow


REGISTRY.register("ssh_bruteforce", SshBruteforceConfig, SshBruteforceDetector)
