"""``credential_stuffing``: many usernames from one address, or one username from many.

Looks at failed logins that name a user: sshd failures (any failure kind with a
user), nginx basic-auth failures from the error log, and access-log 401s that
carry ``$remote_user``. Usernames are compared as logged, across services.

* ``threshold`` distinct usernames from one client within ``window`` (default 5 in
  10 minutes): HIGH, about that client (password spraying / stuffing from one host).
* ``clients_threshold`` distinct clients failing as one username within
  ``clients_window`` (default 10 in 10 minutes): MEDIUM, ``client=None`` (nothing
  to ban), ``key`` the username and ``clients`` the addresses seen. A public sshd
  sees this for ``root`` all day; it is an alert, not a ban.

Per key at most ``threshold + 2`` distinct values are held, so memory stays bounded
whatever the attacker rotates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aisentinel.detectors.base import REGISTRY, Detector, WindowedConfig
from aisentinel.detectors.common import (
    MaxKeys,
    Threshold,
    Window,
    all_requests,
    crossing_finding,
)
from aisentinel.detectors.window import DistinctWindows
from aisentinel.events import (
    Event,
    Finding,
    HttpAuthFailure,
    HttpRequest,
    Severity,
    SshEvent,
    SshKind,
)

_MAX_USER = 128


class CredentialStuffingConfig(WindowedConfig):
    """``[detectors.credential_stuffing]``; ``threshold``/``window``: usernames per client."""

    max_keys: MaxKeys = 100_000
    threshold: Threshold = 5
    window: Window = 600.0
    clients_threshold: Threshold = 10
    """Distinct client addresses failing as one username that make a finding."""
    clients_window: Window = 600.0


class CredentialStuffingDetector(Detector):
    """Distinct usernames per client (HIGH) and distinct clients per username (MEDIUM)."""

    name = "credential_stuffing"
    consumes = (SshEvent, HttpAuthFailure, HttpRequest)

    def __init__(self, config: CredentialStuffingConfig) -> None:
        super().__init__(config)
        self._cfg = config
        # Usernames: a few hundred names tried by thousands of addresses, held once.
        self._users = DistinctWindows(
            config.threshold, config.window, config.max_keys, intern_values=True
        )
        self._clients = DistinctWindows(
            config.clients_threshold, config.clients_window, config.max_keys
        )

    def observe(self, event: Event) -> Finding | None:
        if isinstance(event, HttpRequest):
            if event.status != 401:
                return None
        elif isinstance(event, SshEvent):
            if event.kind is SshKind.ACCEPTED:
                return None
        elif not isinstance(event, HttpAuthFailure):
            return None
        user = event.user
        if not user:
            return None
        if len(user) > _MAX_USER:
            user = user[:_MAX_USER]
        client = event.client
        ts = event.ts
        found = self._users.hit(client, user, ts)
        by_user = self._clients.hit(user, client, ts)
        if by_user is not None:
            if found is not None:
                # One event, two crossings: report the bannable one now and let the
                # username cross again on its next failure (nothing is lost).
                self._clients.release(user)
            else:
                return crossing_finding(
                    by_user,
                    ts=ts,
                    detector=self.name,
                    severity=Severity.MEDIUM,
                    client=None,
                    key=user,
                    what=f"clients failed to log in as {user!r}",
                    threshold=self._cfg.clients_threshold,
                    window=self._cfg.clients_window,
                    source=event.source,
                    evidence=(),
                    clients=by_user.evidence,
                )
        if found is None:
            return None
        return crossing_finding(
            found,
            ts=ts,
            detector=self.name,
            severity=Severity.HIGH,
            client=client,
            key=client,
            what="usernames tried",
            threshold=self._cfg.threshold,
            window=self._cfg.window,
            source=event.source,
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        observe = self.observe
        if all_requests(events):
            # Only a 401 that names a user counts: picked out without a call or a
            # type check per request (status and user read by name).
            for i in [
                i
                for i, r in enumerate(cast("Sequence[HttpRequest]", events))
                if r.status == 401 and r.user
            ]:
                found = observe(events[i])
                if found is not None:
                    out.append((i, found))
            return out
        accepted = SshKind.ACCEPTED
        for i, event in enumerate(events):
            if isinstance(event, HttpRequest):
                if event.status != 401:
                    continue  # the common cases, decided without a call
            elif isinstance(event, SshEvent) and (event.kind is accepted or not event.user):
                continue
            found = observe(event)
            if found is not None:
                out.append((i, found))
        return out

    def expire(self, now: float) -> int:
        return self._users.expire(now) + self._clients.expire(now)

    def tracked_keys(self) -> int:
        return len(self._users) + len(self._clients)


REGISTRY.register("credential_stuffing", CredentialStuffingConfig, CredentialStuffingDetector)
