"""Findings in, decisions out: ban, alert, or nothing, and for how long.

The checks run in a fixed order, and the first that applies decides:

1. ``client`` is ``None``            -> ALERT "no single address to ban"
2. ``client`` is not an IP address   -> NONE  "invalid address 'x'"
3. the address is allowlisted        -> NONE  "allowlisted (10.0.0.0/8)"
4. it can never be a ban target      -> NONE  "not a bannable address (multicast)"
5. it is banned already              -> NONE  "already banned until <iso time>"
6. the detector is alert-only        -> ALERT
7. severity below ``ban_severity``   -> ALERT
8. the ban brake is engaged          -> ALERT "ban brake engaged: ..."
9. otherwise                         -> BAN, TTL escalated by earlier offences

IPv4-mapped IPv6 (``::ffff:127.0.0.1``) is read as the IPv4 address it carries
before step 3, so it is loopback. Step 4 (:func:`unbannable`) refuses addresses that
name no single remote host: unspecified, broadcast, multicast, reserved, and
link-local. Link-local is refused on purpose: ``fe80::/10`` is where the default
router's advertisements and neighbour discovery come from and ``169.254.169.254`` is
the cloud metadata service, so a ban there (from a forged or misread client field)
cuts the host off its own network; the zone is dropped from the text form, so one
ban would also hit every link's host of that address. Steps 2-4 are counted per
reason (:data:`REJECT_REASONS`).

Every decision is returned; BAN and ALERT are recorded in the ledger. Times are
the engine clock's ``now()`` (not the finding's ``ts``): a ban lasts its TTL from
when it is decided, even when the finding comes from an old log line.
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
    canonical_address,
    read_host_addresses,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, Decision, Finding

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
)
"""Why a finding's address was refused as a ban target; a bounded metric label."""

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


def _is_address(text: str) -> bool:
    try:
        canonical_address(text)
    except ValueError:
        return False
    return True


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
        restored: list[Decision] = self._ledger(self.ledger.open_bans, [])
        for ban in restored:
            if ban.target is not None:
                self._active[ban.target] = ban
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
        """The decision about ``finding`` (recorded in the ledger when BAN or ALERT)."""
        now = self.clock.now()
        self._maybe_refresh_hosts()
        decision, rejected = self._decide(finding, now)
        if decision.action is not Action.NONE:
            self._ledger(lambda: self.ledger.record(decision), 0)
        with self._lock:
            self._counts[decision.action] += 1
            if rejected is not None:
                self._rejected[rejected] += 1
            if decision.action is Action.BAN and decision.target is not None:
                self._active[decision.target] = decision
        return decision

    def _decide(self, finding: Finding, now: float) -> tuple[Decision, str | None]:
        """The decision, and the reject reason when the address can be no ban target."""
        cfg = self.config

        def make(action: Action, target: str | None, reason: str) -> Decision:
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

        if finding.client is None:
            return make(Action.ALERT, None, "no single address to ban"), None
        try:
            # IPv4-mapped IPv6 becomes IPv4 here, before the allowlist sees it.
            addr = canonical_address(finding.client)
        except ValueError:
            return make(Action.NONE, None, f"invalid address {finding.client!r}"), "invalid"
        target = str(addr)
        network = self.allowlist.match(addr)
        if network is not None:
            why = "loopback" if network in _LOOPBACK_NETS else "allowlisted"
            return make(Action.NONE, target, f"allowlisted ({network})"), why
        kind = unbannable(addr)
        if kind is not None:
            return make(Action.NONE, target, f"not a bannable address ({kind})"), kind
        with self._lock:
            current = self._active.get(target)
        if current is not None and current.expires_at is not None and current.expires_at > now:
            reason = f"already banned until {_iso(current.expires_at)}"
            return make(Action.NONE, target, reason), None
        if finding.detector in cfg.alert_only_detectors:
            return make(Action.ALERT, target, f"detector {finding.detector!r} is alert-only"), None
        if finding.severity < cfg.ban_severity:
            reason = (
                f"severity {finding.severity.label} is below ban_severity {cfg.ban_severity.label}"
            )
            return make(Action.ALERT, target, reason), None
        if self._brake_engaged(now):
            with self._lock:
                self._braked += 1
            reason = f"ban brake engaged: {cfg.max_bans_per_minute} bans in the last minute"
            return make(Action.ALERT, target, reason), None
        since = now - cfg.recidive_window
        offence = self._ledger(lambda: self.ledger.offences(target, since), 0) + 1
        ttl = ban_ttl(cfg, offence)
        self._recent_bans.append(now)
        reason = (
            f"{finding.severity.label} finding, offence {offence} within "
            f"{format_duration(cfg.recidive_window)}: ban for {format_duration(ttl)}"
        )
        ban = Decision(
            ts=now,
            action=Action.BAN,
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
        )
        return ban, None

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
        """Bans in force at ``now`` (default: the clock's), soonest expiry first."""
        at = self.clock.now() if now is None else now
        with self._lock:
            bans = [d for d in self._active.values() if (d.expires_at or 0.0) > at]
        return sorted(bans, key=lambda d: (d.expires_at or 0.0, d.target or ""))

    def is_banned(self, address: str) -> bool:
        """Whether ``address`` (any spelling) is banned now; ``ValueError`` if not an address."""
        target = str(canonical_address(address))
        with self._lock:
            ban = self._active.get(target)
        return ban is not None and (ban.expires_at or 0.0) > self.clock.now()

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
                    del self._active[ban.target]
            done.extend(self._lifted)
            self._lifted.clear()
            self._expired += len(done)
        if done:
            targets = [d.target for d in done if d.target is not None]
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

        Returns the lifted ban for the responders to delete, or ``None`` when the
        address was not banned. ``ValueError`` when ``address`` is not an address.
        """
        target = str(canonical_address(address))
        with self._lock:
            ban = self._active.pop(target, None)
        self._ledger(lambda: self.ledger.remove(target), 0)
        if ban is not None:
            log.info("ban lifted by hand", target=target)
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
        """Lift active bans the current config forbids (allowlisted, or simulated in real mode)."""
        dropped: list[str] = []
        with self._lock:
            for target, ban in list(self._active.items()):
                if ban.simulated and not self.config.simulate:
                    del self._active[target]
                    dropped.append(target)
                elif not _is_address(target):
                    del self._active[target]
                    dropped.append(target)
                    log.error("restored ban of a non-address dropped", target=target)
                elif self.allowlist.contains(target):
                    del self._active[target]
                    self._lifted.append(ban)
                    log.warning("ban of an allowlisted address will be lifted", target=target)
                elif (kind := unbannable(canonical_address(target))) is not None:
                    # Recorded by an older version: the responders lift it.
                    del self._active[target]
                    self._lifted.append(ban)
                    log.warning(
                        "ban of a non-bannable address will be lifted", target=target, kind=kind
                    )
        if dropped:
            now = self.clock.now()
            self._ledger(lambda: self.ledger.end(dropped, now), 0)
            log.info("simulated bans dropped: simulate is off", count=len(dropped))

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

    def _maybe_refresh_hosts(self) -> None:
        if self.clock.monotonic() - self._hosts_read_at < HOST_REFRESH_SECONDS:
            return
        hosts = self._read_hosts()
        if hosts != self._hosts:
            log.info("host addresses changed", addresses=list(hosts))
            self._hosts = hosts
            self.allowlist = self._build_allowlist()

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
