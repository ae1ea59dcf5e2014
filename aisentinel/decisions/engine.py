"""Findings in, decisions out: ban, throttle, freeze, alert, or nothing, and for how long.

A finding is about a target: ``finding.target`` when the detector set one (a
workload, or an address target), else the address in ``finding.client``. The checks
run in a fixed order, and the first that applies decides.

For an address:

1. ``client`` is ``None``            -> ALERT "no single address to ban"
2. ``client`` is not an IP address   -> NONE  "invalid address 'x'"
3. the address is allowlisted        -> NONE  "allowlisted (10.0.0.0/8)"
4. it can never be a ban target      -> NONE  "not a bannable address (multicast)"
5. it (or its /64) is banned already -> NONE  "already banned until <iso time>"
6. the detector is alert-only        -> ALERT
7. severity below ``ban_severity``   -> ALERT
8. the storm brake is tripped        -> ALERT "ban brake engaged: ..."
9. otherwise                         -> BAN, TTL escalated by earlier offences

The allowlist of step 3 is loopback, the configured ``allowlist``, ``admin_cidrs``
and ``monitoring_hosts``, ``[parsers] trusted_proxies`` (a ban of the proxy would cut
off every client behind it), the host's own addresses (re-read every
``host_refresh_interval``), the networks an operator allowed at run time
(``aisentinel allow``, until their expiry; kept in the ledger and restored at start)
and the client of every logged-in SSH session (the kernel's socket table,
``ssh_ports``, read at most once a second: a connection on which sshd logged a login,
:meth:`DecisionEngine.ssh_login`, or that outlived ``ssh_login_grace_time``; a
brute-forcer's own connection is none). When one of them changes,
:meth:`DecisionEngine.expire` lifts the active bans it now covers.

The storm brake (:class:`~aisentinel.decisions.brakes.StormBrake`): new enforcements of
more than ``max_bans_per_minute`` parties within a minute trip it (an IPv6 /48 is one
party: one holder's many /64s must not trip it); it stays tripped
(every would-be ban an alert) until ``aisentinel brake reset`` or until the rate of
would-be bans stayed below half the limit for ``brake_cooldown``. Its state (since
when it is tripped, since when it is calm) is kept in the ledger, and a starting
engine restores it with the would-be bans of the last minute: a restart releases
nothing.

A ban of an IPv6 address covers its ``/ipv6_ban_prefix`` network (/64 by default:
one host holds a /64 and can use any address in it); IPv4 is banned as the /32.
When that network holds an allowlisted address or network, the allowlist wins for
it: the single address (/128) is banned instead and the reason says why. A NAT64
address (``64:ff9b::/96``, ``64:ff9b:1::/48``) is one IPv4 client behind a gateway
whose /64 holds every other one: it is banned as itself. Alerts and refusals name
the single address.

For a workload (container, unit, cgroup, process): 3 is the workload allowlist
(NONE "allowlisted (unit sshd.service)"), 4 does not apply, and step 9's action is
the policy's: ``workload_actions[detector]``, else ``workload_action``, ``alert`` by
default (throttle and freeze are off until configured), which makes it an ALERT.

IPv4-mapped IPv6 (``::ffff:127.0.0.1``) is read as the IPv4 address it carries
before step 3, so it is loopback. Step 4 (:func:`unbannable`) refuses addresses that
name no single remote host: unspecified, broadcast, multicast, reserved, and
link-local. Link-local is refused on purpose: ``fe80::/10`` is where the default
router's advertisements and neighbour discovery come from and ``169.254.169.254`` is
the cloud metadata service, so a ban there (from a forged or misread client field)
cuts the host off its own network; the zone is dropped from the text form, so one
ban would also hit every link's host of that address. Steps 2-4 are counted per
reason (:data:`REJECT_REASONS`).

Every decision is returned; everything but NONE is recorded in the ledger. Times
are the engine clock's ``now()`` (not the finding's ``ts``): a ban lasts its TTL
from when it is decided, even when the finding comes from an old log line.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from sys import intern
from types import MappingProxyType
from typing import TypeVar

import structlog

from aisentinel.clock import Clock
from aisentinel.configtypes import DEFAULT_MAX_KEYS, format_duration
from aisentinel.decisions.allowlist import (
    LOOPBACK,
    Allowlist,
    IPAddress,
    WorkloadAllowlist,
    read_host_addresses,
)
from aisentinel.decisions.brakes import (
    WINDOW_SECONDS,
    AllowEntry,
    RuntimeAllowlist,
    SshConnection,
    SshSessions,
    StormBrake,
    read_ssh_connections,
    storm_party,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.ledger import Ledger
from aisentinel.decisions.netindex import NetworkIndex, span
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Finding,
    IPNetwork,
    Severity,
    Target,
    WorkloadKey,
    WorkloadTarget,
    canonical_address,
    is_nat64,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

REJECT_REASONS = (
    "invalid",
    "loopback",
    "allowlisted",
    "unspecified",
    "broadcast",
    "multicast",
    "link_local",
    "reserved",
    "workload_allowlisted",
)
"""Why a finding's target was refused (decision none); a bounded metric label."""

_DONE = {Action.BAN: "banned", Action.THROTTLE: "throttled", Action.FREEZE: "frozen"}

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_LOOPBACK_NETS = frozenset(LOOPBACK)

FORGIVEN_MAX = 4096
"""Most forgiven addresses and networks waiting for the pipeline
(:meth:`DecisionEngine.forgiven`)."""
PURGE_INTERVAL_SECONDS = 3600.0
"""How often :meth:`DecisionEngine.expire` purges ledger history older than the retention."""
PURGE_BATCH_ROWS = 1000
"""Rows of a table one purge transaction deletes at most: 10-30 ms of SQLite's time."""
PURGE_TICK_SECONDS = 0.1
"""Seconds of purge batches one :meth:`DecisionEngine.expire` runs at most (it stops after
the batch that crosses it): a purge of a large history (1.5M rows after ``ledger_retention``
was lowered) goes on over the following ticks instead of holding the daemon's loop, and
with it systemd's watchdog and detection, for half a minute."""
MANUAL = "manual"
"""The ``detector`` of a ban an operator asked for (``aisentinel ban``)."""
OPERATOR = "operator"
"""The ``detector`` of the ledger's notes of operators' other acts (unban, allow, brake reset)."""
MIN_PREFIX = {4: 8, 6: 32}
"""The widest network an operator may ban or allow at run time, per IP version."""
FORCE_PREFIX = {4: 16, 6: 48}
"""A manual ban wider than this (65,536 IPv4 addresses, a whole IPv6 site) needs
``force``: ``aisentinel ban 1.0.0.0/8`` by a slip of the finger drops 16.7M addresses."""
SEEN_SECONDS = 60.0
"""How often (monotonic seconds) :meth:`DecisionEngine.expire` stores the wall time it
looked at in the ledger (:meth:`~aisentinel.decisions.ledger.Ledger.mark_seen`): a start
on a wall clock stepped back while the daemon was down moves what the ledger holds in
force back by the step measured from it, at most this much too little."""

CLOCK_STEP_SECONDS = 5.0
"""A change of the wall clock against the monotonic one larger than this between two
looks (each :meth:`DecisionEngine.expire`, every second in the daemon) is a step of the
wall clock, not NTP's slewing (at most 0.5 ms a second)."""
BRAKE_HOLD = 60.0
"""Seconds an alert of the engaged ban brake holds back its detector's repeats about the
key (at most; ``alert_repeat`` when shorter): one alert a minute per key in a storm, and
once the brake releases, the key's next finding after that minute is a ban."""
BY_CLIENT_MAX = DEFAULT_MAX_KEYS
"""Most clients remembered for the one-lookup "already banned" answer (emptied when full)."""
ADDRESSES_MAX = 4096
"""Most client texts whose canonical address, host target and bannability the
engine remembers (the oldest forgotten first): a storm decides about the same
addresses again within seconds (storm access.log: 2 of 3 lookups hit). At 16,384,
emptied when full, a storm of distinct addresses held up to 4 MB of them."""


@dataclass(frozen=True, slots=True)
class DecisionCounters:
    """A snapshot of the engine's numbers for metrics.

    ``decisions`` counts every decision returned, per action (counters);
    ``rejected`` counts addresses refused as ban targets, per reason (every one of
    :data:`REJECT_REASONS`); ``active_bans`` is a gauge; the rest are counters.
    """

    decisions: Mapping[Action, int]
    rejected: Mapping[str, int]
    bans_braked: int
    active_bans: int
    expired: int
    ledger_errors: int
    """Ledger calls that failed, including writes kept in the ledger's backlog for a retry."""
    brake_tripped_since: float | None = None
    """When the storm brake tripped (epoch seconds); ``None`` while it is not tripped."""
    ledger_bytes: int = 0
    """Bytes the ledger takes on disk (its file and write-ahead log; a gauge)."""


def ban_ttl(config: DecisionsConfig, offence: int) -> float:
    """``min(ban_ttl * escalation_factor ** (offence - 1), max_ttl)``, without overflow."""
    ttl = config.ban_ttl
    for _ in range(max(0, offence - 1)):
        ttl *= config.escalation_factor
        if ttl >= config.max_ttl:
            break
    return min(ttl, config.max_ttl)


def unbannable(addr: IPAddress) -> str | None:
    """Why ``addr`` can never be a ban target (a :data:`REJECT_REASONS` value), or ``None``.

    ``addr`` is canonical (IPv4-mapped IPv6 already made IPv4). Loopback is not
    tested here: the allowlist always holds it.
    """
    if addr.is_unspecified:
        return "unspecified"
    if addr == _BROADCAST:
        return "broadcast"
    if addr.is_multicast:
        return "multicast"
    if addr.is_link_local:
        return "link_local"
    if isinstance(addr, ipaddress.IPv4Address):
        return "reserved" if addr.is_reserved or addr in _THIS_NETWORK else None
    # Inside ::/8, which the ipaddress module calls reserved, but real clients: a
    # SIIT/NAT64 gateway shows an IPv4 client to an IPv6-only server as 64:ff9b::a.b.c.d
    # (banned as that address alone: AddressTarget.grouped never widens it).
    if addr.is_reserved and not is_nat64(addr):
        return "reserved"
    return None


def unbannable_network(net: IPNetwork) -> str | None:
    """Why the network ``net`` can never be a ban target, or ``None``: an end of it
    cannot be (``64:ff9b::/64`` holds every NAT64 client and reserved space)."""
    kind = unbannable(net.network_address)
    if kind is None and net.num_addresses > 1:
        kind = unbannable(net.broadcast_address)
    return kind


_V4_PLAIN = (0x01000000, 0xDFFFFFFF)
"""1.0.0.0-223.255.255.255: no address in it is :func:`unbannable` but 169.254.0.0/16."""
_V4_LINK_LOCAL = (0xA9FE0000, 0xA9FEFFFF)
_V6_GLOBAL = 1
"""The top three bits of 2000::/3, global unicast: no :func:`unbannable` address in it."""


def unbannable_target(target: AddressTarget) -> str | None:
    """:func:`unbannable_network` (:func:`unbannable` for a host) of ``target``, with the
    common answer (``None`` for an address or network of global unicast space) found in
    integers: a sweep asks it of every ban, and building the network objects cost
    ~60 us a ban (100,000 restored bans: seconds)."""
    address = target.address
    first, last = span(address, target.prefixlen)
    if address.version == 4:
        plain = _V4_PLAIN[0] <= first and last <= _V4_PLAIN[1]
        if plain and (last < _V4_LINK_LOCAL[0] or first > _V4_LINK_LOCAL[1]):
            return None
    elif first >> 125 == _V6_GLOBAL and last >> 125 == _V6_GLOBAL:
        return None
    if target.is_host:
        return unbannable(address)
    return unbannable_network(target.network)


def parse_target_text(text: str) -> AddressTarget | str:
    """An address or network target for ``text``, else ``text`` itself when it is a
    workload's text form (``unit:ollama.service``); ``ValueError`` for anything else."""
    try:
        return AddressTarget.parse(text)
    except ValueError:
        pass
    prefix, sep, rest = text.partition(":")
    if sep and rest and prefix in WorkloadKey.__members__.values():
        return text
    raise ValueError(f"not an address, a network or a workload (kind:id): {text!r}")


def _party_of(text: str) -> Hashable:
    """Whom the storm brake counts the enforcement of the target ``text`` as (see
    :func:`~aisentinel.decisions.brakes.storm_party`)."""
    try:
        parsed = parse_target_text(text)
    except ValueError:
        return text
    return parsed if isinstance(parsed, str) else storm_party(parsed)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


class DecisionEngine:
    """Turns findings into decisions, tracks active bans and persists them in a ledger.

    At construction the engine restores the open bans from ``ledger``; bans that
    expired while the daemon was down, and bans of addresses allowlisted since,
    are reported by the first :meth:`expire` so the responders lift them.

    ``host_addresses`` returns the host's own addresses (default: read from
    ``/proc``); it is ignored when ``allow_host_addresses`` is off. The engine is
    driven by one thread; :meth:`counters` and :meth:`active` may be read from others.
    """

    forgiveness = 0
    """Bumped whenever an operator forgave addresses or networks (:meth:`forgiven` has
    some): one comparison a batch tells the pipeline to take them."""

    clock_shift = 0.0
    """Seconds the engine has moved the expiries in force by, all steps together
    (negative: the wall clock stepped back, see :meth:`_follow_clock_step`): whoever holds
    a wall-clock "until" of its own (the pipeline's alert hold-backs) moves it by as much
    when this changes."""

    _seen_at: float | None = None
    """When (monotonic) the wall time was last stored in the ledger (:meth:`mark_seen`)."""

    def __init__(
        self,
        config: DecisionsConfig,
        ledger: Ledger,
        clock: Clock,
        *,
        host_addresses: Callable[[], Iterable[str]] | None = None,
        ssh_clients: Callable[[], Iterable[SshConnection]] | None = None,
        trusted_proxies: Iterable[IPNetwork] = (),
    ) -> None:
        self.config = config
        self.trusted_proxies = tuple(trusted_proxies)
        """``[parsers] trusted_proxies``: never banned (the clients behind them are judged
        by their forwarded address; the proxy's own requests are theirs too)."""
        self.ledger = ledger
        self.clock = clock
        self._host_source = host_addresses or read_host_addresses
        self._hosts: tuple[str, ...] = ()
        self._hosts_read_at = clock.monotonic()
        self._lock = threading.Lock()
        self._op = threading.RLock()
        """Held by every call that changes state: the pipeline thread and the control
        thread (operators' commands) never interleave."""
        self._active: dict[str, Decision] = {}
        self._nets = NetworkIndex()
        """The address enforcements of ``_active`` wider than one address, by prefix: an
        address inside one is found without a scan (kept with ``_hold`` / ``_drop``)."""
        self._by_client: dict[str, Decision | tuple[Decision, Target]] = {}
        """``finding.client`` text -> the enforcement that covers it (whose target is the
        client's own address and whose target text is its ``_active`` key), or
        (enforcement, the client's address target) when the enforcement covers more
        (an IPv6 network): "already banned" answered without parsing the address (a
        storm's 10,000 bans: 0.6 MB less than a tuple each). Filled when a ban is
        decided or found; an entry counts only while ``_active`` still holds that very
        enforcement, unexpired; expired entries go at :meth:`expire`, all at an
        allowlist change."""
        self._addresses: dict[str, tuple[IPAddress, AddressTarget, str | None]] = {}
        """Client text -> (canonical address, host target, :func:`unbannable` reason)."""
        self._lifted: list[Decision] = []
        # Addresses and networks an operator forgave (``unban``, ``allow``) since the
        # pipeline last took them (:meth:`forgiven`).
        self._forgiven: list[AddressTarget] = []
        self.epoch = 0
        """Bumped whenever an enforcement ends before its time (unban, a runtime allow,
        the sweep at a reload or an allowlist change): whoever remembers "banned until"
        (the pipeline's quiet keys) must forget it then."""
        self.policy = 0
        """Bumped when a reload changed the ``[decisions]`` table: whoever holds findings
        back because of a decision taken under the old one (the pipeline's alert
        hold-backs) must let them be decided again under the new one."""
        self._brake = StormBrake(config.max_bans_per_minute, config.brake_cooldown, clock.monotonic)
        self._runtime = RuntimeAllowlist()
        self._ssh = SshSessions(
            ssh_clients
            or (lambda: read_ssh_connections(self.config.proc_root, self.config.ssh_ports)),
            clock.monotonic,
            config.ssh_login_grace_time,
        )
        self._ssh.restore(self._ledger(self.ledger.ssh_logins, []))
        self._ssh_swept: frozenset[IPAddress] = frozenset()
        self._counts = dict.fromkeys(Action, 0)
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._braked = 0
        self._expired = 0
        self._ledger_errors = 0
        self._last_purge: float | None = None
        self._purge_before: float | None = None  # the horizon of the purge under way
        self._purged = 0
        self.purge_batch, self.purge_tick = PURGE_BATCH_ROWS, PURGE_TICK_SECONDS
        self._offset = clock.now() - clock.monotonic()
        """Wall minus monotonic time at the last look: a step of the wall clock moves it."""
        self._brake_saved = self._restore_brake()
        self._hosts = self._read_hosts()
        allows, restored = self._restore()
        self.allowlist = self._build_allowlist()
        self.workload_allowlist = self._build_workload_allowlist()
        with self._lock:
            for ban in restored:
                self._hold(ban)
        self._sweep()
        log.info(
            "decision engine ready",
            restored_bans=len(self._active),
            restored_allows=allows,
            to_lift=len(self._lifted),
            allowlisted_networks=len(self.allowlist),
            simulate=config.simulate,
        )

    # ------------------------------------------------------------------ deciding

    def decide(self, finding: Finding) -> Decision:
        """The decision about ``finding`` (recorded in the ledger unless NONE)."""
        with self._op:
            return self._decide_locked(finding)

    def _decide_locked(self, finding: Finding) -> Decision:
        now = self.clock.now()
        self._follow_clock_step(now)
        self._maybe_refresh_hosts()
        client = finding.client
        if client is not None and finding.target is None:
            # A storm's repeat offender: the ban in force answers in one lookup.
            known = self._by_client.get(client)
            if known is not None:
                current, subject = (known, known.target) if isinstance(known, Decision) else known
                # Still the one in force (not lifted by hand or a reload meanwhile)?
                key = current.target.text if current.target is not None else ""
                if (
                    subject is not None
                    and self._active.get(key) is current
                    and (current.expires_at or 0.0) > now
                ):
                    with self._lock:
                        self._counts[Action.NONE] += 1
                    return self._already(finding, now, current, subject)
        decision, rejected = self._decide(finding, now)
        if decision.action is not Action.NONE:
            self._ledger(lambda: self.ledger.record(decision), 0)
        with self._lock:
            self._counts[decision.action] += 1
            if rejected is not None:
                self._rejected[rejected] += 1
            if decision.action.enforces and decision.target is not None:
                self._hold(self._kept(finding, decision))
        return decision

    def _kept(self, finding: Finding, decision: Decision) -> Decision:
        """``decision`` as held while in force: without its finding (message, evidence),
        which the ledger and the output have; ``_by_client`` is pointed at the same object
        (it is matched by identity). A storm's 10,000 bans then hold a third less. The
        reason is interned: bans of one detector and offence share one string."""
        d = decision  # built field by field: dataclasses.replace took 10 us a ban
        kept = Decision(
            ts=d.ts,
            action=d.action,
            target=d.target,
            detector=d.detector,
            severity=d.severity,
            reason=intern(d.reason),
            ttl=d.ttl,
            expires_at=d.expires_at,
            offence=d.offence,
            simulated=d.simulated,
            evidence_count=d.evidence_count,
            finding=None,
            quiet_until=d.quiet_until,
            braked=d.braked,
        )
        client = finding.client
        if client is not None:
            entry = self._by_client.get(client)
            if entry is decision:
                self._by_client[client] = kept
            elif isinstance(entry, tuple) and entry[0] is decision:
                self._by_client[client] = (kept, entry[1])
        return kept

    def _remember(self, finding: Finding, enforcement: Decision, subject: Target) -> None:
        """The findings about ``finding.client`` (an address, no target of their own) are
        answered "already ..." by ``enforcement`` about ``subject`` while it is in force."""
        client = finding.client
        if client is None or finding.target is not None:
            return
        by_client = self._by_client
        if len(by_client) >= BY_CLIENT_MAX:
            by_client.clear()
        target = enforcement.target
        if target == subject:
            by_client[client] = enforcement
        elif target is not None:
            by_client[client] = (enforcement, subject)

    def _already(
        self, finding: Finding, now: float, current: Decision, subject: Target
    ) -> Decision:
        """NONE "already banned until ...": ``current`` is in force for ``subject``."""
        expires_at = current.expires_at or now
        done = _DONE.get(current.action, "acted on")
        held = current.target
        by = ""  # a wider ban than the subject's own (or its /64's) is named
        if isinstance(held, AddressTarget) and held != subject:
            grouped = held.address.version == 6 and held.prefixlen == self.config.ipv6_ban_prefix
            by = "" if grouped else f" (by {held.text})"
        return Decision(
            ts=now,
            action=Action.NONE,
            target=subject,
            detector=finding.detector,
            severity=finding.severity,
            reason=f"already {done} until {_iso(expires_at)}{by}",
            simulated=self.config.simulate,
            evidence_count=finding.count,
            finding=finding,
            quiet_until=expires_at,
        )

    def hold(self) -> None:
        """Keep the ledger writes of the next decisions for one transaction at
        :meth:`commit` (the pipeline holds them for one batch)."""
        self.ledger.hold()

    def commit(self) -> None:
        """Write the decisions held since :meth:`hold` in one transaction."""
        self._ledger(self.ledger.release, 0)

    def _decide(self, finding: Finding, now: float) -> tuple[Decision, str | None]:
        """The decision, and the reject reason when the target can be acted on by no one."""
        cfg = self.config

        # An alert holds back the detector's repeats about its key (``alert_repeat``).
        repeat = now + cfg.alert_repeat if cfg.alert_repeat > 0 else None

        def make(action: Action, target: Target | None, reason: str) -> Decision:
            return Decision(
                ts=now,
                action=action,
                target=target,
                detector=finding.detector,
                severity=finding.severity,
                reason=reason,
                simulated=cfg.simulate,
                evidence_count=finding.count,
                finding=finding,
                quiet_until=repeat if action is Action.ALERT else None,
            )

        subject = finding.target
        if isinstance(subject, WorkloadTarget):
            why = self.workload_allowlist.match(subject)
            if why is not None:
                return make(Action.NONE, subject, f"allowlisted ({why})"), "workload_allowlisted"
            action = cfg.workload_actions.get(finding.detector, Action(cfg.workload_action))
            return self._enforce(finding, now, make, subject, Action(action)), None
        if subject is not None and not subject.is_host:
            net = self.allowlist.overlapping(subject.network)
            if net is not None:
                return make(Action.NONE, subject, f"allowlisted ({net})"), "allowlisted"
            client = self._ssh_client_in(subject.network)
            if client is not None:
                why = f"allowlisted (live SSH session from {client})"
                return make(Action.NONE, subject, why), "allowlisted"
            return self._enforce(finding, now, make, subject, Action.BAN), None
        if subject is not None:
            addr: IPAddress = subject.address
        elif finding.client is None:
            return make(Action.ALERT, None, "no single address to ban"), None
        else:
            known = self._addresses.get(finding.client)
            if known is None:
                try:
                    # IPv4-mapped IPv6 becomes IPv4 here, before the allowlist sees it.
                    addr = canonical_address(finding.client)
                except ValueError:
                    why = f"invalid address {finding.client!r}"
                    return make(Action.NONE, None, why), "invalid"
                if len(self._addresses) >= ADDRESSES_MAX:
                    del self._addresses[next(iter(self._addresses))]
                known = (addr, AddressTarget.host(addr, finding.client), unbannable(addr))
                self._addresses[finding.client] = known
            return self._decide_host(finding, now, make, known)
        return self._decide_host(
            finding, now, make, (addr, AddressTarget.host(addr), unbannable(addr))
        )

    def _decide_host(
        self,
        finding: Finding,
        now: float,
        make: Callable[[Action, Target | None, str], Decision],
        known: tuple[IPAddress, AddressTarget, str | None],
    ) -> tuple[Decision, str | None]:
        """Steps 2-4 for one host address (``known``: the address, its target and why it
        is not bannable): the allowlist, live SSH sessions, bannability."""
        addr, host, kind = known
        network = self.allowlist.match(addr)
        if network is not None:
            why = "loopback" if network in _LOOPBACK_NETS else "allowlisted"
            return make(Action.NONE, host, f"allowlisted ({network})"), why
        if self.config.allow_ssh_sessions and addr in self._ssh.current():
            return make(Action.NONE, host, "allowlisted (live SSH session)"), "allowlisted"
        if kind is not None:
            return make(Action.NONE, host, f"not a bannable address ({kind})"), kind
        return self._enforce(finding, now, make, host, Action.BAN), None

    def _ban_target(self, host: AddressTarget) -> tuple[AddressTarget, str]:
        """The target a ban of ``host`` covers, and a note for the reason.

        IPv6 is grouped by ``ipv6_ban_prefix``; when that network holds an
        allowlisted network the single address is banned instead.
        """
        grouped = host.grouped(self.config.ipv6_ban_prefix)
        if grouped is host:
            return host, ""
        held: object = self.allowlist.overlapping(grouped.network)
        if held is None:
            client = self._ssh_client_in(grouped.network)
            held = None if client is None else f"SSH client {client}"
        if held is None:
            return grouped, ""
        return host, f" (the address only: {grouped.text} holds allowlisted {held})"

    def _enforce(
        self,
        finding: Finding,
        now: float,
        make: Callable[[Action, Target | None, str], Decision],
        subject: Target,
        action: Action,
    ) -> Decision:
        """Steps 5-9 for a target that may be acted on; ``action`` is what step 9 gives
        (ALERT when the workload policy says so)."""
        cfg = self.config
        target: Target = subject
        note = ""
        if isinstance(subject, AddressTarget) and subject.is_host:
            target, note = self._ban_target(subject)
        with self._lock:
            current = self._active.get(target.text) or self._active.get(subject.text)
        if (current is None or (current.expires_at or 0.0) <= now) and isinstance(
            subject, AddressTarget
        ):
            current = self._covering(subject, now)  # a wider ban (an operator's /24)
        if current is not None and current.expires_at is not None and current.expires_at > now:
            self._remember(finding, current, subject)
            return self._already(finding, now, current, subject)
        if finding.detector in cfg.alert_only_detectors:
            return make(Action.ALERT, subject, f"detector {finding.detector!r} is alert-only")
        if finding.severity < cfg.ban_severity:
            reason = (
                f"severity {finding.severity.label} is below ban_severity {cfg.ban_severity.label}"
            )
            return make(Action.ALERT, subject, reason)
        if action is Action.ALERT:
            return make(
                Action.ALERT, subject, "workload action is alert (throttle and freeze are off)"
            )
        allowed = self._brake.attempt(now, storm_party(target))
        if self._brake.tripped_since != self._brake_saved:  # tripped or released
            self._save_brake(now)
        if not allowed:
            with self._lock:
                self._braked += 1
            tripped = self._brake.tripped_since or now
            reason = (
                f"ban brake engaged: more than {cfg.max_bans_per_minute} bans a minute since "
                f"{_iso(tripped)} (`aisentinel brake reset` releases it)"
            )
            # Held back for a minute at most, not alert_repeat: the key's next finding
            # after the brake releases is a ban; a storm of braked findings is one alert
            # a minute per key.
            decision = make(Action.ALERT, subject, reason)
            quiet = decision.quiet_until
            return replace(
                decision,
                braked=True,
                quiet_until=None if quiet is None else min(quiet, now + BRAKE_HOLD),
            )
        since = now - cfg.recidive_window
        key = target.text
        offence = self._ledger(lambda: self.ledger.offences(key, since), 0) + 1
        ttl = ban_ttl(cfg, offence)
        reason = (
            f"{finding.severity.label} finding, offence {offence} within "
            f"{format_duration(cfg.recidive_window)}: {action.value} for {format_duration(ttl)}"
            f"{note}"
        )
        expires_at = now + ttl  # one float object for both fields
        decision = Decision(
            ts=now,
            action=action,
            target=target,
            detector=finding.detector,
            severity=finding.severity,
            reason=reason,
            ttl=ttl,
            expires_at=expires_at,
            offence=offence,
            simulated=cfg.simulate,
            evidence_count=finding.count,
            finding=finding,
            quiet_until=expires_at,
        )
        self._remember(finding, decision, subject)
        return decision

    # ------------------------------------------------------------------ active bans

    def active(self, now: float | None = None) -> list[Decision]:
        """Bans, throttles and freezes in force at ``now`` (default: the clock's),
        soonest expiry first."""
        at = self.clock.now() if now is None else now
        with self._lock:
            bans = [d for d in self._active.values() if (d.expires_at or 0.0) > at]
        return sorted(bans, key=lambda d: (d.expires_at or 0.0, d.target.text if d.target else ""))

    def _keys(self, text: str) -> list[str]:
        """The ``_active`` keys that may hold an enforcement of ``text``: an address's own
        and its grouped network's, a network's or a workload's text."""
        parsed = parse_target_text(text)
        if isinstance(parsed, str):
            return [parsed]
        grouped = parsed.grouped(self.config.ipv6_ban_prefix) if parsed.is_host else parsed
        return list(dict.fromkeys((parsed.text, grouped.text)))

    def is_banned(self, address: str) -> bool:
        """Whether ``address`` (any spelling), the network its ban would cover, or a
        network ban holding it is in force now; ``ValueError`` if it is not an address,
        network or workload text."""
        keys = self._keys(address)
        now = self.clock.now()
        with self._lock:
            bans = [self._active.get(k) for k in keys]
        if any(b is not None and (b.expires_at or 0.0) > now for b in bans):
            return True
        return self.covering(address) is not None

    def covering(self, text: str) -> Decision | None:
        """The network ban in force that holds all of the address or network ``text``
        and is wider than it (the most specific), or ``None``; ``ValueError`` if ``text``
        is not an address, network or workload text."""
        parsed = parse_target_text(text)
        if isinstance(parsed, str):
            return None
        return self._covering(parsed, self.clock.now())

    def _covering(self, target: AddressTarget, now: float) -> Decision | None:
        """An enforcement in force of a network wider than ``target`` that holds it: one
        dict probe per prefix length of the network bans, not a scan."""
        with self._lock:
            for key in self._nets.covering(target.address, target.prefixlen):
                ban = self._active.get(key)
                if ban is not None and (ban.expires_at or 0.0) > now:
                    return ban
        return None

    def expire(self, now: float | None = None) -> list[Decision]:
        """Drop bans whose time is up and return them, so the responders delete them.

        Also returns restored bans lifted for another reason (their address is
        allowlisted now). At most once an hour, purges ledger history older than
        ``ledger_retention``.
        """
        with self._op:
            return self._expire_locked(now)

    def _expire_locked(self, now: float | None) -> list[Decision]:
        self._follow_clock_step(self.clock.now())
        at = self.clock.now() if now is None else now
        self._refresh_allow_sources(at)
        self._brake.poll()
        if self._brake.tripped_since != self._brake_saved:
            self._save_brake(at)
        with self._lock:
            done = [d for d in self._active.values() if (d.expires_at or 0.0) <= at]
            for ban in done:
                if ban.target is not None:
                    self._drop(ban.target.text)
            done.extend(self._lifted)
            self._lifted.clear()
            self._expired += len(done)
            if done:
                self._by_client = {
                    c: k
                    for c, k in self._by_client.items()
                    if ((k if isinstance(k, Decision) else k[0]).expires_at or 0.0) > at
                }
        if done:
            targets = [d.target.text for d in done if d.target is not None]
            self._ledger(lambda: self.ledger.end(targets, at), 0)
            log.info("bans expired", count=len(done))
        else:
            self._ledger(self.ledger.flush, 0)  # writes that failed earlier (disk full)
        mono = self.clock.monotonic()
        if self._last_purge is None or mono - self._last_purge >= PURGE_INTERVAL_SECONDS:
            self._last_purge = mono
            if self._purge_before is None:  # else the last one goes on
                self._purge_before = at - self.config.ledger_retention
                self._purged = 0
        self._purge_some()
        if self._seen_at is None or mono - self._seen_at >= SEEN_SECONDS:
            self.mark_seen()
        return done

    def mark_seen(self) -> None:
        """Store the wall time now in the ledger, the clock's step followed first: a start
        measures a step back while the daemon was down from it (see :meth:`_restore`).
        :meth:`expire` does so every :data:`SEEN_SECONDS`; the daemon at its stop."""
        with self._op:
            now = self.clock.now()
            self._follow_clock_step(now)
            self._seen_at = self.clock.monotonic()
            self._ledger(lambda: self.ledger.mark_seen(now), None)

    def _purge_some(self) -> None:
        """Run batches of the purge under way for :attr:`purge_tick` seconds at most."""
        before = self._purge_before
        if before is None:
            return
        limit = self.purge_batch
        started = time.perf_counter()
        while True:
            rows = self._ledger(lambda: self.ledger.purge(before, limit), 0)
            self._purged += rows
            if rows < limit:
                self._purge_before = None
                if self._purged:
                    log.info("ledger history purged", rows=self._purged, before=_iso(before))
                return
            if time.perf_counter() - started >= self.purge_tick:
                return

    def unban(self, address: str, who: str | None = None) -> Decision | None:
        """Manual unban: lift the ban of ``address`` now and forgive its history.

        ``address`` is an address (its own ban or its grouped network's is lifted),
        a network, or a workload's text (``unit:ollama.service``). Returns the lifted
        enforcement for the responders to delete, or ``None`` when there was none.
        ``ValueError`` when ``address`` is none of those, or when it has no ban of its
        own but lies inside a wider network ban (``203.0.113.7`` under an operator's
        ``203.0.113.0/24``): the message names that ban and how to lift it, and nothing
        is lifted (one address asked for never lifts a /24). ``who`` (the operator) is
        recorded in the ledger with the unban.
        """
        with self._op:
            self._follow_clock_step(self.clock.now())  # before anything new is timed
            keys = self._keys(address)
            with self._lock:
                own = any(k in self._active for k in keys)
            cover = None if own else self.covering(address)
            if cover is not None and cover.target is not None:
                raise ValueError(
                    f"refused: {keys[0]} has no ban of its own; it is inside the ban of "
                    f"{cover.target.text} until {_iso(cover.expires_at or 0.0)}: "
                    f"`aisentinel unban {cover.target.text}` lifts that whole ban"
                )
            self._by_client.clear()
            # Forgiven whether or not a ban was held: what the detectors counted of it
            # (its own key, and the network its ban would cover) must not ban it again.
            self._forgive(t for k in keys if isinstance(t := parse_target_text(k), AddressTarget))
            ban: Decision | None = None
            for key in keys:
                with self._lock:
                    found = self._drop(key)
                self._ledger(lambda key=key: self.ledger.remove(key), 0)  # type: ignore[misc]
                if found is not None:
                    self.epoch += 1
                    ban = ban or found
                    log.info("ban lifted by hand", target=key, who=who)
            if who is not None:
                lifted = ban.target if ban is not None else None
                note = f"unban by {who}" + ("" if ban is not None else " (nothing was held)")
                self._note(lifted, note)
            return ban

    def _forgive(self, targets: Iterable[AddressTarget]) -> None:
        """Hand ``targets`` to the pipeline (:meth:`forgiven`): an operator forgave them.
        At most :data:`FORGIVEN_MAX` wait (the oldest go first; the pipeline takes them
        at its next batch)."""
        with self._lock:
            self._forgiven.extend(targets)
            del self._forgiven[:-FORGIVEN_MAX]
            self.forgiveness += 1

    def forgiven(self) -> list[AddressTarget]:
        """The addresses and networks an operator forgave (an ``unban``: the address and
        the network its ban covers, or the network; an ``allow``: its network) since the
        last call, oldest first: the pipeline has the detectors forget what they counted
        of them (:meth:`~aisentinel.detectors.base.Detector.forget`), as the ledger
        forgets their past bans."""
        with self._lock:
            taken, self._forgiven = self._forgiven, []
        return taken

    def stray_lifts(self, text: str, who: str) -> list[Decision]:
        """Lifts for the responders of the ban of address or network ``text`` (an
        address's own and its grouped network's) that the engine does not hold, for a
        run whose ledger is not the whole truth (the daemon's ``keeping_held``): the
        firewalls may still hold what a lost ledger knew, and an operator's ``unban`` or
        ``allow`` must reach it. Lifting an absent enforcement is not an error, so this
        costs nothing where there is none. A workload's text gives none; ``ValueError``
        when ``text`` is none of those. Nothing in the engine or the ledger changes."""
        now = self.clock.now()
        lifts: list[Decision] = []
        for key in self._keys(text):
            target = parse_target_text(key)
            with self._lock:
                held = key in self._active
            if isinstance(target, AddressTarget) and not held:
                reason = f"lifted by {who}: not in the ledger"
                lifts.append(
                    Decision(
                        now,
                        Action.BAN,
                        target,
                        MANUAL,
                        Severity.HIGH,
                        reason,
                        0.0,
                        now,
                        simulated=self.config.simulate,
                    )
                )
        return lifts

    # ------------------------------------------------------------------ operators

    def manual_ban(
        self,
        text: str,
        ttl: float,
        reason: str,
        who: str,
        *,
        force: bool = False,
        replace: bool = False,
    ) -> Decision:
        """An operator's ban of ``text`` (an address or a CIDR) for ``ttl`` seconds:
        :meth:`manual_ban_kept`'s decision."""
        return self.manual_ban_kept(text, ttl, reason, who, force=force, replace=replace)[0]

    def manual_ban_kept(
        self,
        text: str,
        ttl: float,
        reason: str,
        who: str,
        *,
        force: bool = False,
        replace: bool = False,
        check: Callable[[AddressTarget], None] | None = None,
    ) -> tuple[Decision, bool]:
        """An operator's ban of ``text`` (an address or a CIDR) for ``ttl`` seconds, and
        whether a ban in force that ends later was kept (told by the comparison of the
        two ends, not by the decision's ``ttl``: ``(now + ttl) - now`` is not always
        ``ttl`` in floating point).

        A ban of the same target in force that ends later is kept: the decision ends when
        it does (its ``ttl`` longer than ``ttl``), so a quick ban never frees a known
        attacker early; with ``replace`` the new ban's end stands, earlier or not.

        Refused with ``ValueError`` (a one-line reason) when ``text`` is not an
        address or network, is wider than :data:`MIN_PREFIX`, is wider than
        :data:`FORCE_PREFIX` without ``force``, is allowlisted (the
        allowlist always wins, operators included), holds a live SSH client, or can
        never be a ban target. It is not counted by the storm brake. In simulate mode
        the decision is recorded and nothing is enforced.

        ``check`` is called with the target the ban covers (an IPv6 host grouped by
        ``ipv6_ban_prefix``) before anything is recorded, and raises to refuse it (the
        admin command: a responder that would refuse that network for good).
        """
        target = AddressTarget.parse(text)
        with self._op:
            self._follow_clock_step(self.clock.now())  # else its end moves by the step
            self._refresh_allow_sources(self.clock.now())
            why = self._refusal(target, force=force)
            if why is not None:
                raise ValueError(f"refused: {target.text} {why}")
            if target.is_host:
                target, _note = self._ban_target(target)
            if check is not None:
                check(target)
            now = self.clock.now()
            expires_at = now + ttl
            why = f"by {who}: {reason}" if reason else f"by {who}"
            with self._lock:
                current = self._active.get(target.text)
            kept = False
            if (
                not replace
                and current is not None
                and current.action is Action.BAN
                and current.expires_at is not None
                and current.expires_at > expires_at
            ):
                kept, expires_at = True, current.expires_at
                why += f" (kept the ban in force until {_iso(expires_at)}: it ends later)"
            decision = Decision(
                ts=now,
                action=Action.BAN,
                target=target,
                detector=MANUAL,
                severity=Severity.HIGH,
                reason=why,
                ttl=expires_at - now,
                expires_at=expires_at,
                simulated=self.config.simulate,
            )
            self._ledger(lambda: self.ledger.record(decision), 0)
            with self._lock:
                self._counts[Action.BAN] += 1
                self._hold(decision)
            log.info("manual ban", target=target.text, ttl=decision.ttl, who=who)
            return decision, kept

    def _refusal(self, target: AddressTarget, *, force: bool) -> str | None:
        """Why ``target`` may not be banned by hand, or ``None``."""
        net = target.network
        if net.prefixlen < MIN_PREFIX[net.version]:
            return f"is wider than /{MIN_PREFIX[net.version]}"
        wide = FORCE_PREFIX[net.version]
        if net.prefixlen < wide and not force:
            size = f"{net.num_addresses:,}" if net.version == 4 else f"2^{128 - net.prefixlen}"
            return f"is wider than /{wide} ({size} addresses): repeat with --force if you mean it"
        held = self.allowlist.overlapping(net)
        if held is not None:
            return f"is allowlisted ({held})"
        client = self._ssh_client_in(net)
        if client is not None:
            return f"holds the client of a live SSH session ({client})"
        kind = unbannable_network(net)
        return None if kind is None else f"is not a bannable address ({kind})"

    def allow(self, text: str, ttl: float, who: str, reason: str = "") -> list[Decision]:
        """Allow the address or network ``text`` for ``ttl`` seconds (a runtime allowlist
        entry) and lift the active bans it covers, which are returned for the
        responders to delete. ``ValueError`` when ``text`` is not an address or network
        or is wider than :data:`MIN_PREFIX`."""
        target = AddressTarget.parse(text)
        net = target.network
        if net.prefixlen < MIN_PREFIX[net.version]:
            raise ValueError(f"refused: {target.text} is wider than /{MIN_PREFIX[net.version]}")
        with self._op:
            self._follow_clock_step(self.clock.now())  # else its end moves by the step
            now = self.clock.now()
            entry = AllowEntry(net, now + ttl, who, reason)
            self._runtime.add(entry)
            self._ledger(  # restored at start: a restart must not end it early
                lambda: self.ledger.record_allow(target.text, now, entry.expires_at, who, reason),
                None,
            )
            self.allowlist = self._build_allowlist()
            self._forgive((target,))
            lifted = self._lift(self._overlapping(target))
            note = f"allow by {who} until {_iso(entry.expires_at)}"
            self._note(target, f"{note}: {reason}" if reason else note)
            log.info("runtime allow", network=str(net), ttl=ttl, who=who, lifted=len(lifted))
            return lifted

    def _restore(self) -> tuple[int, list[Decision]]:
        """What the ledger holds in force: the runtime allows put back (how many) and the
        open enforcements. First, where the wall clock is behind the last time the engine
        looked (stepped back while the daemon was down: ``chronyc makestep`` on a clock that
        ran a day fast, then a start), each is moved back by the step, keeping the time it
        had left (one that had ended stays ended), and capped at its TTL from now: else a
        1h ban, and an operator's 1h allow, would last the step longer, and one that had
        ended would come back (a running engine follows a step, see
        :meth:`_follow_clock_step`; :meth:`~aisentinel.decisions.ledger.Ledger.cap_expiries`)."""
        now = self.clock.now()
        capped = self._ledger(lambda: self.ledger.cap_expiries(now, CLOCK_STEP_SECONDS), 0)
        if capped:
            log.warning(
                "wall clock behind the ledger (stepped back while stopped); the bans and "
                "allows it held keep the time they had left, at most their TTL from now",
                capped=capped,
            )
        return self._restore_allows(), self._ledger(self.ledger.open_bans, [])

    def _restore_allows(self) -> int:
        """Put the runtime allowlist entries the ledger holds that have not ended yet
        back in force (``aisentinel allow`` survives a restart); returns how many."""
        rows: list[tuple[str, float, str, str]] = self._ledger(
            lambda: self.ledger.allows(self.clock.now()), []
        )
        for text, expires_at, who, reason in rows:
            try:
                net = AddressTarget.parse(text).network
            except ValueError as exc:
                log.error(  # noqa: TRY400 - the reason is the message
                    "runtime allow entry in the ledger unreadable, skipped", error=str(exc)[:120]
                )
                continue
            self._runtime.add(AllowEntry(net, expires_at, who, reason))
        return len(self._runtime.networks())

    def allow_entries(self) -> list[AllowEntry]:
        """The runtime allowlist entries in force."""
        with self._op:
            self._runtime.prune(self.clock.now())
            return self._runtime.entries()

    def reset_brake(self, who: str) -> bool:
        """An operator releases the storm brake; ``False`` when it was not tripped."""
        with self._op:
            self._follow_clock_step(self.clock.now())
            released = self._brake.release(f"reset by {who}")
            if released:
                self._save_brake(self.clock.now())
            self._note(None, f"brake reset by {who}" + ("" if released else " (was not tripped)"))
            return released

    def _restore_brake(self) -> float | None:
        """Put the storm brake back as the ledger left it, tripped (since when) or not,
        and the would-be bans of the last minute since its last release: a restart must
        neither release it nor empty its window. Its calm starts afresh: while tripped its
        would-be bans were alerts, which the window rebuilt from the ledger's bans does
        not hold, so calm counted from before the restart could release it too soon."""
        saved = self._ledger(self.ledger.brake, None)
        tripped = None if saved is None else saved[0]
        since = self.clock.now() - WINDOW_SECONDS
        if saved is not None and tripped is None:
            since = max(since, saved[2])  # a release empties the window
        recent: list[tuple[float, str]] = self._ledger(
            lambda: self.ledger.enforcement_times(since, MANUAL), []
        )
        self._brake.restore(
            tripped, [(at, _party_of(text)) for at, text in recent], self.clock.now()
        )
        if tripped is not None:
            log.warning(
                "ban storm brake still tripped from before the restart: new bans are alerts "
                "until `aisentinel brake reset`, or until the rate stays below half the limit "
                "for the cool-down (counted from now)",
                tripped_since=_iso(tripped),
            )
        return tripped

    def _save_brake(self, at: float) -> None:
        """Persist whether the brake is tripped (and since when): written when it trips
        or is released only, never for the calm, which flips on the decide path."""
        tripped = self._brake.tripped_since
        self._brake_saved = tripped
        self._ledger(lambda: self.ledger.save_brake(tripped, None, at), None)

    def _note(self, target: Target | None, reason: str) -> None:
        """Record an operator's act in the ledger (a decision ``none`` by ``operator``)."""
        note = Decision(
            ts=self.clock.now(),
            action=Action.NONE,
            target=target,
            detector=OPERATOR,
            severity=Severity.INFO,
            reason=reason,
        )
        self._ledger(lambda: self.ledger.record(note), 0)

    def _hold(self, decision: Decision) -> None:
        """Put ``decision`` in force (``_lock`` held): ``_active`` and its network index."""
        target = decision.target
        if target is None:
            return
        self._active[target.text] = decision
        if isinstance(target, AddressTarget):
            self._nets.add(target)

    def _drop(self, key: str) -> Decision | None:
        """Take the enforcement of ``key`` out of force (``_lock`` held); it, or ``None``."""
        ban = self._active.pop(key, None)
        if ban is not None and isinstance(ban.target, AddressTarget):
            self._nets.discard(ban.target)
        return ban

    def _overlapping(self, target: AddressTarget) -> list[Decision]:
        """The address enforcements in force that share an address with ``target``:
        networks from the index; hosts by their key, enumerated when ``target`` holds
        fewer addresses than there are enforcements, else by one integer scan."""
        address = target.address
        with self._lock:
            keys = self._nets.overlapping(address, target.prefixlen)
            if target.is_host:
                keys.append(target.text)
            elif 1 << (address.max_prefixlen - target.prefixlen) <= len(self._active):
                base = int(address)
                for n in range(1 << (address.max_prefixlen - target.prefixlen)):
                    keys.append(str(type(address)(base + n)))
            else:
                first, last = span(address, target.prefixlen)
                version = address.version
                for ban in self._active.values():
                    t = ban.target
                    if (
                        isinstance(t, AddressTarget)
                        and t.is_host
                        and t.address.version == version
                        and first <= int(t.address) <= last
                    ):
                        keys.append(t.text)
            found = (self._active.get(k) for k in dict.fromkeys(keys))
            return [d for d in found if d is not None]

    def _lift(self, lifted: list[Decision]) -> list[Decision]:
        """Take ``lifted`` out of force now and end them in the ledger; returns them."""
        with self._lock:
            for d in lifted:
                if d.target is not None:
                    self._drop(d.target.text)
        if lifted:
            self.epoch += 1
            targets = [d.target.text for d in lifted if d.target is not None]
            now = self.clock.now()
            self._ledger(lambda: self.ledger.end(targets, now), 0)
        return lifted

    def _ssh_client_in(self, network: IPNetwork) -> IPAddress | None:
        if not self.config.allow_ssh_sessions:
            return None
        return self._ssh.holding(network)

    def _ssh_client_within(self, target: AddressTarget) -> IPAddress | None:
        """:meth:`_ssh_client_in` in integers, for a sweep: no network object a ban."""
        if not self.config.allow_ssh_sessions:
            return None
        first, last = span(target.address, target.prefixlen)
        version = target.address.version
        for addr in self._ssh.current():
            if addr.version == version and first <= int(addr) <= last:
                return addr
        return None

    def ssh_login(self, client: str, port: int | None, at: float) -> None:
        """sshd logged a login (``Accepted ... from CLIENT port PORT``) at ``at``: the
        open connection it names is a session whose client is never banned (while
        ``allow_ssh_sessions``), kept in the ledger until it closes. A connection
        that is not open (any more) gets nothing; neither does a bad address."""
        if not self.config.allow_ssh_sessions:
            return
        try:
            addr = canonical_address(client)
        except ValueError:
            return
        with self._op:
            bound = self._ssh.login(addr, port, at)
            if bound:  # restored at start: a restart must not unprotect the admin
                self._ledger(lambda: self.ledger.record_ssh_login(bound, str(addr), at), None)
                log.info("SSH login: never banned while connected", client=str(addr))

    def _refresh_allow_sources(self, now: float) -> None:
        """Re-read what may have changed (host addresses, SSH sessions, runtime entries)
        and queue the lifting of active bans the allowlist covers now.

        Only new addresses (a new host address, a new SSH client) can forbid a ban, and
        only the bans that hold one of them are checked (:meth:`_sweep_addresses`): a
        runtime entry that ended allows less and lifts nothing."""
        changed = bool(self._runtime.prune(now))
        if changed:  # ended: a start must not put them back
            self._ledger(lambda: self.ledger.forget_allows(now), 0)
        new_hosts = self._hosts_changed()
        if changed or new_hosts is not None:  # one rebuild, whichever of them changed
            self.allowlist = self._build_allowlist()
        clients = self._ssh.current() if self.config.allow_ssh_sessions else frozenset()
        closed = self._ssh.closed()
        if closed:
            self._ledger(lambda: self.ledger.forget_ssh_logins(closed), None)
        self._sweep_addresses([*(new_hosts or ()), *(clients - self._ssh_swept)])
        self._ssh_swept = clients

    # ------------------------------------------------------------------ config

    def reconfigure(
        self, config: DecisionsConfig, trusted_proxies: Iterable[IPNetwork] | None = None
    ) -> None:
        """Apply a reloaded ``[decisions]`` table (and ``[parsers] trusted_proxies``, kept
        when ``None``), keeping active bans and counters.

        Active bans of addresses that are allowlisted now are reported by the next
        :meth:`expire`; simulated bans are dropped when ``simulate`` was turned off.
        :attr:`policy` moves when the table changed.
        """
        with self._op:
            if config != self.config:
                self.policy += 1
            self.config = config
            if trusted_proxies is not None:
                self.trusted_proxies = tuple(trusted_proxies)
            self._ssh.grace = config.ssh_login_grace_time
            self._brake.configure(config.max_bans_per_minute, config.brake_cooldown)
            self._hosts = self._read_hosts()
            self.allowlist = self._build_allowlist()
            self.workload_allowlist = self._build_workload_allowlist()
            self._sweep()

    def brake_releases(self) -> int:
        """How many times the storm brake was released (by an operator or by calm)."""
        return self._brake.releases

    def brake_tripped_since(self) -> float | None:
        """When the storm brake tripped (epoch seconds), or ``None`` when it is not tripped."""
        return self._brake.tripped_since

    def counters(self) -> DecisionCounters:
        """Numbers for metrics, consistent with one another."""
        now = self.clock.now()
        size = self.ledger.size_bytes()
        with self._lock:
            return DecisionCounters(
                decisions=MappingProxyType(dict(self._counts)),
                rejected=MappingProxyType(dict(self._rejected)),
                bans_braked=self._braked,
                active_bans=sum(1 for d in self._active.values() if (d.expires_at or 0.0) > now),
                expired=self._expired,
                ledger_errors=self._ledger_errors + self.ledger.write_errors,
                brake_tripped_since=self._brake.tripped_since,
                ledger_bytes=size,
            )

    # ------------------------------------------------------------------ internals

    def _follow_clock_step(self, now: float) -> None:
        """Keep the time the enforcements in force have left when the wall clock steps
        back (NTP correcting a clock that ran an hour fast): their expiry is wall time (the
        ledger's, for restarts), so without this a 1h ban stepped back a day would last 25h.
        The kernel measures nftables timeouts on its monotonic clock; this does the same
        for the engine's expiries (bans and runtime allows), in memory and in the ledger,
        logged once per step. A
        step forward (a slow clock corrected, a resume from suspend) is not undone: bans
        end by the wall clock, at worst early by the step."""
        offset = now - self.clock.monotonic()
        step = offset - self._offset
        self._offset = offset
        if step >= -CLOCK_STEP_SECONDS:
            return
        with self._lock:
            shifted = {
                key: replace(
                    d,
                    expires_at=d.expires_at + step,
                    quiet_until=None if d.quiet_until is None else d.quiet_until + step,
                )
                for key, d in self._active.items()
                if d.expires_at is not None
            }
            self._active.update(shifted)
        self._by_client.clear()  # they point at the replaced decisions
        self.epoch += 1  # the pipeline forgets its "banned until" of the old clock
        self.clock_shift += step  # and moves its alert hold-backs
        self._ledger(lambda: self.ledger.shift_expiries(step), 0)
        # An operator's allow for 1h must not become one for 25h either: the runtime
        # entries (and the ledger's, for a restart) keep the time they had left too.
        allows = self._runtime.shift(step)
        self._ledger(lambda: self.ledger.shift_allows(step, now - step), 0)
        self._seen_at = self.clock.monotonic()  # the old clock's mark would move them again
        self._ledger(lambda: self.ledger.mark_seen(now), None)
        log.warning(
            "wall clock stepped back; the bans and allows in force keep the time they had left",
            seconds=round(-step, 1),
            bans=len(shifted),
            allows=allows,
        )

    def _sweep_addresses(self, added: Iterable[IPAddress]) -> None:
        """Lift the active enforcements that hold one of the addresses ``added`` to the
        allowlist (a host address, an SSH client) and that the allowlist forbids now:
        their own ban (one lookup) and the network bans holding them (one probe per
        prefix length), not every ban (:meth:`_sweep`: 100,000 bans took seconds, under
        the operation lock, at each new SSH client)."""
        keys: dict[str, None] = {}
        for addr in added:
            keys[str(addr)] = None
            keys.update(dict.fromkeys(self._nets.covering(addr)))
        if not keys:
            return
        self._by_client.clear()  # the one-lookup answers may name an allowlisted client
        lifted = 0
        with self._lock:
            for key in keys:
                ban = self._active.get(key)
                why = None if ban is None else self._forbidden(ban)
                if ban is not None and why is not None:
                    self._drop(key)
                    self._lifted.append(ban)
                    lifted += 1
                    log.warning("ban will be lifted", target=key, why=why)
        if lifted:
            self.epoch += 1

    def _sweep(self) -> None:
        """Lift active enforcements the current config forbids (allowlisted, or simulated
        in real mode); every ban is checked (at start and at a reload)."""
        dropped: list[str] = []
        lifted = len(self._lifted)
        self._by_client.clear()
        with self._lock:
            for key, ban in list(self._active.items()):
                why = self._forbidden(ban)
                if ban.simulated and not self.config.simulate:
                    self._drop(key)
                    dropped.append(key)
                elif why is not None:
                    self._drop(key)
                    self._lifted.append(ban)
                    log.warning("ban will be lifted", target=key, why=why)
        if dropped or len(self._lifted) > lifted:
            self.epoch += 1
        if dropped:
            now = self.clock.now()
            self._ledger(lambda: self.ledger.end(dropped, now), 0)
            log.info("simulated bans dropped: simulate is off", count=len(dropped))

    def _forbidden(self, ban: Decision) -> str | None:
        """Why the current config forbids ``ban`` (restored, or decided before a
        reload), or ``None``."""
        target = ban.target
        if isinstance(target, WorkloadTarget):
            why = self.workload_allowlist.match(target)
            return None if why is None else f"workload allowlisted ({why})"
        if target is None:
            return "no target"
        # Integers only (no ipaddress network objects): a sweep asks this of every ban.
        if not target.is_host:
            net = self.allowlist.overlapping_prefix(target.address, target.prefixlen)
            if net is not None:
                return f"the network holds allowlisted {net}"
            client = self._ssh_client_within(target)  # what a manual ban refuses too
            if client is not None:
                return f"the network holds the client of a live SSH session ({client})"
            kind = unbannable_target(target)  # what a manual ban refuses too
            if kind is not None:
                return f"not a bannable network ({kind})"
            if ban.detector != MANUAL and is_nat64(target.address):
                # An older version widened a NAT64 client like any IPv6 host (its /64,
                # or ipv6_ban_prefix): that network holds other NAT64 clients, each of
                # them one IPv4 host. An operator's range ban of NAT64 space stays.
                return "a NAT64 network banned for one NAT64 client"
            return None
        addr = target.address
        if self.allowlist.contains(addr):
            return "address allowlisted"
        if self.config.allow_ssh_sessions and addr in self._ssh.current():
            return "the client of a live SSH session"
        kind = unbannable_target(target)  # recorded by an older version: the responders lift it
        return None if kind is None else f"not a bannable address ({kind})"

    def _read_hosts(self) -> tuple[str, ...]:
        self._hosts_read_at = self.clock.monotonic()
        if not self.config.allow_host_addresses:
            return ()
        try:
            return tuple(sorted(set(self._host_source())))
        except Exception as exc:  # noqa: BLE001 - a failing probe keeps the last known set
            log.warning("cannot read host addresses; keeping the last known", error=str(exc))
            return self._hosts

    def _build_allowlist(self) -> Allowlist:
        cfg = self.config
        configured = (*cfg.allowlist, *cfg.admin_cidrs, *cfg.monitoring_hosts)
        return Allowlist.build(
            (*configured, *self.trusted_proxies, *self._runtime.networks()), self._hosts
        )

    def _build_workload_allowlist(self) -> WorkloadAllowlist:
        wl = self.config.workload_allowlist
        return WorkloadAllowlist(
            units=wl.units, containers=wl.containers, images=wl.images, executables=wl.executables
        )

    def _maybe_refresh_hosts(self) -> None:
        """Re-read the host's addresses when ``host_refresh_interval`` has passed; when
        they changed, rebuild the allowlist and queue the lifting of the active bans it
        covers now (returned by the next :meth:`expire`). Whichever path reads them
        first (a decision or the periodic expiry) sweeps, once."""
        added = self._hosts_changed()
        if added is not None:
            self.allowlist = self._build_allowlist()
            self._sweep_addresses(added)  # also forgets the one-lookup "already banned" answers

    def _hosts_changed(self) -> list[IPAddress] | None:
        """Re-read the host's addresses when ``host_refresh_interval`` has passed and
        keep them; ``None`` when they did not change (else the caller rebuilds the
        allowlist), else the addresses that are new."""
        if self.clock.monotonic() - self._hosts_read_at < self.config.host_refresh_interval:
            return None
        hosts = self._read_hosts()
        if hosts == self._hosts:
            return None
        log.info("host addresses changed", addresses=list(hosts))
        added: list[IPAddress] = []
        for text in set(hosts) - set(self._hosts):
            try:
                added.append(canonical_address(text))
            except ValueError:  # Allowlist.build warns about it
                continue
        self._hosts = hosts
        return added

    def _ledger(self, call: Callable[[], T], fallback: T) -> T:
        """Run a ledger call; a database error is logged and counted, never raised.

        Enforcement must go on when the disk is full or the file went bad; what
        is lost is history, not protection.
        """
        try:
            return call()
        except sqlite3.Error as exc:
            with self._lock:
                self._ledger_errors += 1
            log.error(  # noqa: TRY400 - an expected operational failure, not a bug
                "ledger operation failed", path=str(self.ledger.path), error=str(exc)
            )
            return fallback
