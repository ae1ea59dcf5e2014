"""``credential_stuffing``: many usernames from one address, or one username from many.

Looks at failed logins that name a user: sshd's failed credentials (``Failed
password``/``keyboard-interactive``, ``Invalid user``, ``maximum authentication attempts
exceeded``, PAM failures; ``Failed publickey`` only with ``count_pubkey_failures``, as an
agent with several keys logs it on a login that succeeds), nginx basic-auth failures from
the error log, and access-log 401s that carry ``$remote_user``. A connection closed before
authentication names a user but tried no credential (a key-only client without the key,
a bot that gives up): it is not a failed login here. Usernames are compared as logged,
across services.

* ``threshold`` distinct usernames from one client within ``window`` (default 5 in
  10 minutes): HIGH, about that client (password spraying / stuffing from one host).
* ``clients_threshold`` distinct clients failing as one username within
  ``clients_window`` (default 10 in 10 minutes): MEDIUM, ``client=None`` (nothing
  to ban), ``key`` the username and ``clients`` the addresses seen (at most
  ``max_members``). A public sshd sees this for ``root`` all day; the finding
  itself is an alert. With ``ban_members`` (default on), each member that never
  logged in successfully (an accepted ssh login, or an access-log request with a
  user or an API key id and status < 400 where something checks them, see
  :class:`~.shared.CredentialTrust`, within ``success_ttl``) and that failed at
  least twice within ``clients_window`` also gets a HIGH finding of its own, right
  after the alert, so the decision engine bans it (the allowlist, and "already
  banned", still apply per member). For one ``clients_window`` after the crossing the
  username is under attack: a client failing as it then is a late member, judged the
  same way. On a public sshd ``root`` is under attack all day, so one failure is
  never enough: it is what an administrator's typo looks like; a member failing
  once is banned at its second failure, if it comes while the name is under attack.
  An operator's ``unban`` of a member forgives its failures so far (:meth:`forget`):
  the username's next crossing, whoever fails next, does not name it again.

The access log's successful logins are read from the table of authenticated clients
that ``ai_recon`` and ``model_exploit`` share (:mod:`~.shared`), not kept a second
time: that table holds a batch's authentications as soon as the batch's facts are
computed, so a member whose first success in the window comes later in the same
batch than the failure that makes it a member is spared, where one line at a time
would have banned it first (a client that logged in moments later).

Per key at most ``threshold + 2`` distinct values are held, so memory stays bounded
whatever the attacker rotates.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import cast

from pydantic import Field

from aisentinel.configtypes import DEFAULT_MAX_KEYS, format_duration
from aisentinel.detectors.base import REGISTRY, BatchDetector, Forgiven, WindowedConfig
from aisentinel.detectors.common import (
    MaxKeys,
    Threshold,
    Window,
    all_requests,
    client_key,
    crossing_finding,
)
from aisentinel.detectors.shared import SharedState, no_path
from aisentinel.detectors.window import DistinctWindows, RecentSet
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
_SSH_FAILURES = frozenset({SshKind.FAILED_PASSWORD, SshKind.INVALID_USER, SshKind.MAX_AUTH})
"""sshd events that are a failed credential (``Failed password|keyboard-interactive`` and
sshd's own ``PAM: Authentication failure`` are FAILED_PASSWORD). PAM_FAILURE is not one:
pam_unix's line repeats, from PAM's side, an attempt sshd logs too."""
_SSH_TRIES = frozenset({SshKind.FAILED_PASSWORD, SshKind.FAILED_PUBKEY, SshKind.MAX_AUTH})
"""sshd events that are a credential tried (``Invalid user`` opens a connection: the
``Failed password for invalid user`` after it is the same attempt)."""
_NEG_INF = float("-inf")
_MAX_PIDS = 4096
"""sshd processes whose latest failure is remembered (see ``_tries``)."""


class CredentialStuffingConfig(WindowedConfig):
    """``[detectors.credential_stuffing]``; ``threshold``/``window``: usernames per client."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    threshold: Threshold = 5
    window: Window = 600.0
    clients_threshold: Threshold = 10
    """Distinct client addresses failing as one username that make a finding."""
    clients_window: Window = 600.0
    max_members: int = Field(default=50, ge=1, le=1000)
    """Most addresses a per-username finding lists (and bans, with ``ban_members``)."""
    ban_members: bool = True
    """Give each listed member that never logged in successfully, and failed at least
    twice within ``clients_window``, a HIGH finding."""
    count_pubkey_failures: bool = False
    """Count sshd's "Failed publickey" for an existing user (off: an agent offering
    several keys logs one before every successful login), as ``ssh_bruteforce``'s."""
    success_ttl: Window = 86_400.0
    """How long a successful login keeps its client out of member bans."""


class CredentialStuffingDetector(BatchDetector):
    """Distinct usernames per client (HIGH) and distinct clients per username (MEDIUM)."""

    name = "credential_stuffing"
    consumes = (SshEvent, HttpAuthFailure, HttpRequest)

    wants_shared = True

    def __init__(
        self, config: CredentialStuffingConfig, *, shared: SharedState | None = None
    ) -> None:
        super().__init__(config)
        self._cfg = config
        self._span = format_duration(config.clients_window)
        # Usernames: a few hundred names tried by thousands of addresses, held once.
        self._users = DistinctWindows(
            config.threshold, config.window, config.max_keys, intern_values=True
        )
        self._clients = DistinctWindows(
            config.clients_threshold,
            config.clients_window,
            config.max_keys,
            margin=max(2, config.max_members - config.clients_threshold),
        )
        self._succeeded = RecentSet(config.success_ttl, config.max_keys)
        """Clients that logged in over ssh (kept out of member bans); the access log's
        are in the shared table of authenticated clients."""
        self._repeated = RecentSet(config.clients_window, config.max_keys)
        """Clients' latest failed login that came within ``clients_window`` of one before:
        a member is banned only when it is held here (two failures)."""
        self._tries: dict[int, tuple[str, int]] = {}
        """sshd pid -> (client, credentials tried) of the latest ssh failure it logged
        (at most :data:`_MAX_PIDS`, oldest forgotten first): one attempt's lines
        (``Invalid user``, then ``Failed password for invalid user``) are no repeat, a
        second try in the connection or another connection is."""
        self._ssh_kinds = _SSH_FAILURES | (
            {SshKind.FAILED_PUBKEY} if config.count_pubkey_failures else set()
        )
        self._attacked: dict[str, float] = {}
        """Username -> until when a failure as it makes its client a member (one
        ``clients_window`` after its crossing; at most ``max_keys``)."""
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._shared = shared
        self._requests = shared.requests
        # No path of its own to test: it reads the clients' credentialed marks only.
        self._requests.register(no_path, ttl=self._cfg.success_ttl, max_keys=self._cfg.max_keys)

    def _failure(self, event: Event, at: int, out: list[tuple[int, Finding]]) -> None:
        """Account for one event that may be a failed login; its findings into ``out``."""
        if isinstance(event, HttpRequest):
            if event.status != 401:
                return  # a success is in the shared table (see the module doc)
        elif isinstance(event, SshEvent):
            if event.kind is SshKind.ACCEPTED:
                self._succeeded.add(event.client, event.ts)
                return
            if event.kind not in self._ssh_kinds:
                return
        elif not isinstance(event, HttpAuthFailure):
            return
        user = event.user
        if not user:
            return
        if len(user) > _MAX_USER:
            user = user[:_MAX_USER]
        client = event.client
        ts = event.ts
        key = client_key(client)
        # A failure before this one: the client's last username, held in its window (no
        # table of its own: 50,000 one-try addresses would cost 5 MB more).
        seen = ts - self._users.last_seen(key) <= self._cfg.clients_window
        if self._again(event, client, ts, seen):
            self._repeated.add(client, ts)
        found = self._users.hit(key, user, ts)
        by_user = self._clients.hit(user, client, ts)
        if by_user is not None:
            if found is not None:
                # One event, two crossings: report the bannable one now and let the
                # username cross again on its next failure (nothing is lost).
                self._clients.release(user)
            else:
                members = by_user.evidence[: self._cfg.max_members]
                out.append(
                    (
                        at,
                        crossing_finding(
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
                            clients=members,
                        ),
                    )
                )
                if self._cfg.ban_members:
                    self._members(event, user, members, at, out)
                    attacked = self._attacked
                    attacked.pop(user, None)
                    if len(attacked) >= self._cfg.max_keys:
                        del attacked[next(iter(attacked))]
                    attacked[user] = ts + self._cfg.clients_window
                return
        elif found is None and self._attacked.get(user, _NEG_INF) >= ts:
            # A late member: the username is under attack (crossed within a window).
            self._members(event, user, (client,), at, out)
            return
        if found is None:
            return
        key = client_key(client)
        out.append(
            (
                at,
                crossing_finding(
                    found,
                    ts=ts,
                    detector=self.name,
                    severity=Severity.HIGH,
                    client=client,
                    key=key,
                    what="usernames tried" + ("" if key == client else f" from {key}"),
                    topic="usernames tried",
                    threshold=self._cfg.threshold,
                    window=self._cfg.window,
                    source=event.source,
                ),
            )
        )

    def _members(
        self,
        event: HttpRequest | HttpAuthFailure | SshEvent,
        user: str,
        members: tuple[str, ...],
        at: int,
        out: list[tuple[int, Finding]],
    ) -> None:
        """A HIGH finding about each of ``members`` that never logged in successfully."""
        cfg = self._cfg
        last = self._succeeded.last
        credentialed = self._requests.credentialed
        ts = event.ts
        horizon = ts - cfg.success_ttl
        span = self._span
        # A member already acted on: the pipeline would drop its finding, so none is
        # built (a storm's thousandth failure as "root" from a banned member).
        hush = self._shared.banned
        repeated = self._repeated
        for member in members:
            if last(member) >= horizon or credentialed(member) >= horizon:
                continue
            if not repeated.seen(member, ts):
                continue  # one failure: a typo as much as an attack (module doc)
            if hush.get(member, _NEG_INF) > ts:
                self._shared.quieted[self.name] += 1
                continue
            out.append(
                (
                    at,
                    Finding(
                        ts=event.ts,
                        detector=self.name,
                        severity=Severity.HIGH,
                        client=member,
                        key=member,
                        count=1,
                        window=cfg.clients_window,
                        message=(
                            f"member of a distributed login attack on {user!r}"
                            f" (threshold {cfg.clients_threshold} clients in {span})"
                        ),
                        evidence=(user,),
                        source=event.source,
                    ),
                )
            )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        failure = self._failure
        if all_requests(events):
            # The batch's successes go into the shared table (computed once for every
            # reader); a 401 that names a user counts, picked out without a call or a
            # type check per request (status and user read by name).
            self._requests.facts(events, self)
            reqs = cast("Sequence[HttpRequest]", events)
            for i in [i for i, r in enumerate(reqs) if r.user and r.status == 401]:
                failure(reqs[i], i, out)
            return out
        if any(isinstance(event, HttpRequest) for event in events):
            self._requests.facts(events, self)
        accepted = SshKind.ACCEPTED
        for i, event in enumerate(events):
            if isinstance(event, HttpRequest):
                if event.user is None or event.status != 401:
                    continue  # the common cases, decided without a call
            elif isinstance(event, SshEvent) and event.kind is not accepted and not event.user:
                continue  # the kind is judged in _failure
            failure(event, i, out)
        return out

    def _again(self, event: Event, client: str, ts: float, seen: bool) -> bool:
        """Whether this failure of ``client`` is another attempt than its one before
        (``seen``: it failed within ``clients_window``, as far as its username window
        still holds it; a member is banned only after two attempts)."""
        if not isinstance(event, SshEvent):
            return seen
        if event.repeat > 1:
            return True
        pid = event.pid
        if pid is None:
            return seen
        tries = self._tries
        before = tries.pop(pid, None)
        same = seen and before is not None and before[0] == client
        tried = event.kind in _SSH_TRIES
        count = (before[1] if same and before is not None else 0) + tried
        if len(tries) >= _MAX_PIDS:
            del tries[next(iter(tries))]
        tries[pid] = (client, count)
        if not same:
            return seen
        return tried and count >= 2

    def forget(self, forgiven: Forgiven) -> None:
        """The usernames the forgiven clients tried, their places in the usernames'
        member lists (a forgiven client is no member of an attack on the strength of
        its failures before the unban: the next crossing, made by anyone, does not list
        it), their repeated failures and sshd processes. Their logins stay (they keep a
        client out of member bans). A username's "under attack" stays: a forgiven
        client that fails as it again is judged as any late member (twice to be banned)."""
        self._users.forget(forgiven)
        self._clients.forget_values(forgiven)
        self._repeated.discard_matching(forgiven)
        tries = self._tries
        for pid in [pid for pid, (client, _) in tries.items() if forgiven(client)]:
            del tries[pid]

    def expire(self, now: float) -> int:
        attacked = self._attacked
        over = [user for user, until in attacked.items() if until < now]
        for user in over:
            del attacked[user]
        return (
            self._users.expire(now)
            + self._clients.expire(now)
            + self._succeeded.expire(now)
            + self._repeated.expire(now)
            + self._requests.expire(now)
            + len(over)
        )

    def tracked_keys(self) -> int:
        """Its windows and ssh logins, plus the authenticated clients (shared with
        ``ai_recon`` and ``model_exploit`` when built together: each counts them)."""
        held: tuple[Sized, ...] = (
            self._users,
            self._clients,
            self._succeeded,
            self._repeated,
            self._attacked,
            self._tries,
        )
        return sum(map(len, held)) + self._requests.authenticated()


REGISTRY.register("credential_stuffing", CredentialStuffingConfig, CredentialStuffingDetector)
