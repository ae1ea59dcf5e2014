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
8. the ban brake is engaged          -> ALERT "ban brake engaged: ..."
9. otherwise                         -> BAN, TTL escalated by earlier offences

A ban of an IPv6 address covers its ``/ipv6_ban_prefix`` network (/64 by default:
one host holds a /64 and can use any address in it); IPv4 is banned as the /32.
When that network holds an allowlisted address or network, the allowlist wins for
it: the single address (/128) is banned instead and the reason says why. Alerts
and refusals name the single address.

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
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeVar

import structlog

from aisentinel.clock import Clock
from aisentinel.configtypes import format_duration
from aisentinel.decisions.allowlist import (
    LOOPBACK,
    Allowlist,
    IPAddress,
    WorkloadAllowlist,
    read_host_addresses,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Finding,
    Target,
    WorkloadKey,
    WorkloadTarget,
    canonical_address,
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
# Inside ::/8, which the ipaddress module calls reserved, but real clients: a
# SIIT/NAT64 gateway shows an IPv4 client to an IPv6-only server as 64:ff9b::a.b.c.d.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))

HOST_REFRESH_SECONDS = 300.0
"""How often the host's own addresses are read again (they change with DHCP, VPNs)."""
PURGE_INTERVAL_SECONDS = 3600.0
"""How often :meth:`DecisionEngine.expire` purges ledger history older than the retention."""
BRAKE_WINDOW_SECONDS = 60.0
BY_CLIENT_MAX = 100_000
"""Most clients remembered for the one-lookup "already banned" answer (emptied when full)."""


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
    if addr.is_reserved and not any(addr in net for net in _NAT64):
        return "reserved"
    return None


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

    def __init__(
        self,
        config: DecisionsConfig,
        ledger: Ledger,
        clock: Clock,
        *,
        host_addresses: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self._host_source = host_addresses or read_host_addresses
        self._hosts: tuple[str, ...] = ()
        self._hosts_read_at = clock.monotonic()
        self._lock = threading.Lock()
        self._active: dict[str, Decision] = {}
        self._by_client: dict[str, tuple[Decision, Target, str]] = {}
        """``finding.client`` text -> (the enforcement that covers it, the address
        target, its ``_active`` key): "already banned" answered without parsing the
        address. Filled when a ban is decided or found; an entry counts only while
        ``_active`` still holds that very enforcement, unexpired; expired entries go
        at :meth:`expire`, all at an allowlist change."""
        self._lifted: list[Decision] = []
        self._recent_bans: deque[float] = deque()
        self._braking = False
        self._counts = dict.fromkeys(Action, 0)
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._braked = 0
        self._expired = 0
        self._ledger_errors = 0
        self._last_purge: float | None = None
        self._hosts = self._read_hosts()
        self.allowlist = self._build_allowlist()
        self.workload_allowlist = self._build_workload_allowlist()
        restored: list[Decision] = self._ledger(self.ledger.open_bans, [])
        for ban in restored:
            if ban.target is not None:
                self._active[ban.target.text] = ban
        self._sweep()
        log.info(
            "decision engine ready",
            restored_bans=len(self._active),
            to_lift=len(self._lifted),
            allowlisted_networks=len(self.allowlist),
            simulate=config.simulate,
        )

    # ------------------------------------------------------------------ deciding

    def decide(self, finding: Finding) -> Decision:
        """The decision about ``finding`` (recorded in the ledger unless NONE)."""
        now = self.clock.now()
        self._maybe_refresh_hosts()
        client = finding.client
        if client is not None and finding.target is None:
            # A storm's repeat offender: the ban in force answers in one lookup.
            known = self._by_client.get(client)
            if known is not None:
                current, subject, key = known
                # Still the one in force (not lifted by hand or a reload meanwhile)?
                if self._active.get(key) is current and (current.expires_at or 0.0) > now:
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
                self._active[decision.target.text] = decision
        return decision

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
        if target is not None:
            by_client[client] = (enforcement, subject, target.text)

    def _already(
        self, finding: Finding, now: float, current: Decision, subject: Target
    ) -> Decision:
        """NONE "already banned until ...": ``current`` is in force for ``subject``."""
        expires_at = current.expires_at or now
        done = _DONE.get(current.action, "acted on")
        return Decision(
            ts=now,
            action=Action.NONE,
            target=subject,
            detector=finding.detector,
            severity=finding.severity,
            reason=f"already {done} until {_iso(expires_at)}",
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
            return self._enforce(finding, now, make, subject, Action.BAN), None
        if subject is not None:
            addr: IPAddress = subject.network.network_address
        elif finding.client is None:
            return make(Action.ALERT, None, "no single address to ban"), None
        else:
            try:
                # IPv4-mapped IPv6 becomes IPv4 here, before the allowlist sees it.
                addr = canonical_address(finding.client)
            except ValueError:
                return make(Action.NONE, None, f"invalid address {finding.client!r}"), "invalid"
        host = AddressTarget.host(addr)
        network = self.allowlist.match(addr)
        if network is not None:
            why = "loopback" if network in _LOOPBACK_NETS else "allowlisted"
            return make(Action.NONE, host, f"allowlisted ({network})"), why
        kind = unbannable(addr)
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
        held = self.allowlist.overlapping(grouped.network)
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
        if self._brake_engaged(now):
            with self._lock:
                self._braked += 1
            reason = f"ban brake engaged: {cfg.max_bans_per_minute} bans in the last minute"
            return make(Action.ALERT, subject, reason)
        since = now - cfg.recidive_window
        key = target.text
        offence = self._ledger(lambda: self.ledger.offences(key, since), 0) + 1
        ttl = ban_ttl(cfg, offence)
        self._recent_bans.append(now)
        reason = (
            f"{finding.severity.label} finding, offence {offence} within "
            f"{format_duration(cfg.recidive_window)}: {action.value} for {format_duration(ttl)}"
            f"{note}"
        )
        decision = Decision(
            ts=now,
            action=action,
            target=target,
            detector=finding.detector,
            severity=finding.severity,
            reason=reason,
            ttl=ttl,
            expires_at=now + ttl,
            offence=offence,
            simulated=cfg.simulate,
            evidence_count=finding.count,
            finding=finding,
            quiet_until=now + ttl,
        )
        self._remember(finding, decision, subject)
        return decision

    def _brake_engaged(self, now: float) -> bool:
        """Whether ``max_bans_per_minute`` bans were decided within the 60 s before ``now``.

        It counts in decision time (``clock.now()``), so a replay of old logs brakes
        as the live daemon would have. The deque never holds more than
        ``max_bans_per_minute`` entries: no ban is added while the brake is on.
        """
        horizon = now - BRAKE_WINDOW_SECONDS
        while self._recent_bans and self._recent_bans[0] <= horizon:
            self._recent_bans.popleft()
        engaged = len(self._recent_bans) >= self.config.max_bans_per_minute
        if engaged != self._braking:
            self._braking = engaged
            if engaged:
                log.warning(
                    "ban brake engaged: further bans become alerts",
                    max_bans_per_minute=self.config.max_bans_per_minute,
                )
            else:
                log.info("ban brake released")
        return engaged

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
        """Whether ``address`` (any spelling), or the network its ban would cover, is
        banned now; ``ValueError`` if it is not an address, network or workload text."""
        keys = self._keys(address)
        now = self.clock.now()
        with self._lock:
            bans = [self._active.get(k) for k in keys]
        return any(b is not None and (b.expires_at or 0.0) > now for b in bans)

    def expire(self, now: float | None = None) -> list[Decision]:
        """Drop bans whose time is up and return them, so the responders delete them.

        Also returns restored bans lifted for another reason (their address is
        allowlisted now). At most once an hour, purges ledger history older than
        ``ledger_retention``.
        """
        at = self.clock.now() if now is None else now
        with self._lock:
            done = [d for d in self._active.values() if (d.expires_at or 0.0) <= at]
            for ban in done:
                if ban.target is not None:
                    del self._active[ban.target.text]
            done.extend(self._lifted)
            self._lifted.clear()
            self._expired += len(done)
            if done:
                self._by_client = {
                    c: k for c, k in self._by_client.items() if (k[0].expires_at or 0.0) > at
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
            before = at - self.config.ledger_retention
            purged = self._ledger(lambda: self.ledger.purge(before), 0)
            if purged:
                log.info("ledger history purged", rows=purged, before=_iso(before))
        return done

    def unban(self, address: str) -> Decision | None:
        """Manual unban: lift the ban of ``address`` now and forgive its history.

        ``address`` is an address (its own ban or its grouped network's is lifted),
        a network, or a workload's text (``unit:ollama.service``). Returns the lifted
        enforcement for the responders to delete, or ``None`` when there was none.
        ``ValueError`` when ``address`` is none of those.
        """
        ban: Decision | None = None
        self._by_client.clear()
        for key in self._keys(address):
            with self._lock:
                found = self._active.pop(key, None)
            self._ledger(lambda key=key: self.ledger.remove(key), 0)  # type: ignore[misc]
            if found is not None:
                ban = ban or found
                log.info("ban lifted by hand", target=key)
        return ban

    # ------------------------------------------------------------------ config

    def reconfigure(self, config: DecisionsConfig) -> None:
        """Apply a reloaded ``[decisions]`` table, keeping active bans and counters.

        Active bans of addresses that are allowlisted now are reported by the next
        :meth:`expire`; simulated bans are dropped when ``simulate`` was turned off.
        """
        self.config = config
        self._hosts = self._read_hosts()
        self.allowlist = self._build_allowlist()
        self.workload_allowlist = self._build_workload_allowlist()
        self._sweep()

    def counters(self) -> DecisionCounters:
        """Numbers for metrics, consistent with one another."""
        now = self.clock.now()
        with self._lock:
            return DecisionCounters(
                decisions=MappingProxyType(dict(self._counts)),
                rejected=MappingProxyType(dict(self._rejected)),
                bans_braked=self._braked,
                active_bans=sum(1 for d in self._active.values() if (d.expires_at or 0.0) > now),
                expired=self._expired,
                ledger_errors=self._ledger_errors + self.ledger.write_errors,
            )

    # ------------------------------------------------------------------ internals

    def _sweep(self) -> None:
        """Lift active enforcements the current config forbids (allowlisted, or simulated
        in real mode)."""
        dropped: list[str] = []
        self._by_client.clear()
        with self._lock:
            for key, ban in list(self._active.items()):
                why = self._forbidden(ban)
                if ban.simulated and not self.config.simulate:
                    del self._active[key]
                    dropped.append(key)
                elif why is not None:
                    del self._active[key]
                    self._lifted.append(ban)
                    log.warning("ban will be lifted", target=key, why=why)
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
        if not target.is_host:
            net = self.allowlist.overlapping(target.network)
            return None if net is None else f"the network holds allowlisted {net}"
        addr = target.network.network_address
        if self.allowlist.contains(addr):
            return "address allowlisted"
        kind = unbannable(addr)  # recorded by an older version: the responders lift it
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
        return Allowlist.build(self.config.allowlist, self._hosts)

    def _build_workload_allowlist(self) -> WorkloadAllowlist:
        wl = self.config.workload_allowlist
        return WorkloadAllowlist(
            units=wl.units, containers=wl.containers, images=wl.images, executables=wl.executables
        )

    def _maybe_refresh_hosts(self) -> None:
        if self.clock.monotonic() - self._hosts_read_at < HOST_REFRESH_SECONDS:
            return
        hosts = self._read_hosts()
        if hosts != self._hosts:
            log.info("host addresses changed", addresses=list(hosts))
            self._hosts = hosts
            self.allowlist = self._build_allowlist()
            self._by_client.clear()

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
