"""Operators' commands on the running daemon, served on the control socket.

=============  =============================================  ==========================
command        request fields                                 what it does
=============  =============================================  ==========================
``bans``       ``target``, ``limit`` (both optional)          the enforcements in force
                                                              (those overlapping
                                                              ``target``; the first
                                                              ``limit``, soonest to end)
``unban``      ``target``                                     lifts it now, forgives it
``ban``        ``target``, ``ttl``, ``reason``, ``force``     bans an address or CIDR
                                                              (``force``: wider than
                                                              /16 or /48)
``allow``      ``target``, ``ttl``, ``reason``                a runtime allowlist entry
                                                              that also lifts its bans
``brake_reset`` (none)                                        releases the storm brake
=============  =============================================  ==========================

Each handler runs on the control thread: the engine serialises it with the pipeline
(its operation lock) and the responder worker picks the change up on its next cycle,
well within a second. Every act is recorded in the ledger with who asked (the peer's
user name and uid from ``SO_PEERCRED``). Every target is parsed with ``ipaddress``
(:meth:`~aisentinel.events.AddressTarget.parse`) before anything else; anything else
is refused with a one-line error. The human-readable renderings escape every text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aisentinel.configtypes import MAX_DURATION, format_duration, parse_duration
from aisentinel.control import CommandError, Peer, PeerHandler
from aisentinel.decisions.engine import MANUAL, DecisionEngine, parse_target_text
from aisentinel.decisions.netindex import span
from aisentinel.events import AddressTarget, Decision, IPNetwork
from aisentinel.responders.runner import ResponderRunner
from aisentinel.status import table
from aisentinel.textsafe import escape

TARGET_MAX = 128
"""Longest target text accepted (a CIDR or a workload's kind:id)."""
REASON_MAX = 200
"""Longest reason an operator may give."""
DEFAULT_ALLOW_TTL = 3600.0
MIN_TTL = 1.0
LIMIT_MAX = 10_000_000
"""Largest ``limit`` of ``bans`` accepted."""
NAMES_SHOWN = 20
"""Targets named in one line of ``allow`` / ``unban`` (lifted, stray); ``--json`` has all."""


NO_RESPONDER = "no responder is enabled: nothing is enforced"
DRY_RUN_ONLY = "dry run: logged, not enforced; enable nftables, ufw or fail2ban to enforce"
"""The note of a ban that no responder acts on (a bare ``[responders]`` table)."""


def who_of(decision: Decision) -> str:
    """Who made ``decision``: the operator of a manual ban, else ``aisentinel``."""
    if decision.detector == MANUAL and decision.reason.startswith("by "):
        return decision.reason[3:].split(": ", 1)[0]
    return "aisentinel"


def decision_json(d: Decision, now: float) -> dict[str, Any]:
    """One enforcement for ``aisentinel bans --json`` (exact values, not escaped)."""
    return {
        "target": d.target.text if d.target is not None else None,
        "target_kind": d.target.kind.value if d.target is not None else None,
        "action": d.action.value,
        "detector": d.detector,
        "severity": d.severity.label,
        "reason": d.reason,
        "who": who_of(d),
        "decided_at": d.ts,
        "expires_at": d.expires_at,
        "expires_in_seconds": max(0.0, d.expires_at - now) if d.expires_at else None,
        "simulated": d.simulated,
    }


def _text(args: Mapping[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = args.get(key, "")
    if not isinstance(value, str):
        raise CommandError(f"bad request: {key} must be text")
    if required and not value:
        raise CommandError(f"bad request: {key} is missing")
    if len(value) > limit:
        raise CommandError(f"refused: {key} is longer than {limit} characters")
    if not value.isprintable():
        raise CommandError(f"refused: {key} must be printable text on one line")
    return value


def _flag(args: Mapping[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise CommandError(f"bad request: {key} must be true or false")
    return value


def _ttl(args: Mapping[str, Any], default: float) -> float:
    raw = args.get("ttl")
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise CommandError("bad request: ttl must be a duration like 1h or a number of seconds")
    try:
        ttl = parse_duration(raw)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"refused: bad ttl: {escape(str(exc), limit=120)}") from None
    if not math.isfinite(ttl) or ttl < MIN_TTL or ttl > MAX_DURATION:
        raise CommandError(f"refused: ttl must be 1s to {format_duration(MAX_DURATION)}")
    return ttl


def _address(text: str) -> AddressTarget:
    try:
        return AddressTarget.parse(text)
    except ValueError:
        raise CommandError(
            f"refused: {escape(text, limit=60)} is not an IP address or CIDR network"
        ) from None


def _overlaps(decision: Decision, within: AddressTarget) -> bool:
    """Whether ``decision``'s target is an address or network sharing an address with
    ``within`` (inside it, or a wider ban holding part of it)."""
    target = decision.target
    if not isinstance(target, AddressTarget):
        return False
    return _overlaps_network(target.network, within)


def _overlaps_network(net: IPNetwork, within: AddressTarget) -> bool:
    """Whether ``net`` shares an address with ``within``."""
    if net.version != within.address.version:
        return False
    first, last = span(net.network_address, net.prefixlen)
    low, high = span(within.address, within.prefixlen)
    return first <= high and low <= last


class AdminCommands:
    """The handlers; ``engine`` and ``runner`` are read at each call (a reload replaces
    the runner)."""

    def __init__(
        self,
        engine: Callable[[], DecisionEngine],
        runner: Callable[[], ResponderRunner],
    ) -> None:
        self._engine = engine
        self._runner = runner

    def handlers(self) -> dict[str, PeerHandler]:
        """Command name -> handler, for :meth:`ControlServer.register_with_peer`."""
        return {
            "bans": self.bans,
            "unban": self.unban,
            "ban": self.ban,
            "allow": self.allow,
            "brake_reset": self.brake_reset,
        }

    def bans(self, args: Mapping[str, Any], _peer: Peer) -> dict[str, Any]:
        text = _text(args, "target", TARGET_MAX, required=False)
        within = _address(text) if text else None
        limit = args.get("limit")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX
        ):
            raise CommandError(f"refused: limit must be a whole number from 1 to {LIMIT_MAX}")
        engine = self._engine()
        now = engine.clock.now()
        active = engine.active(now)
        matched = active if within is None else [d for d in active if _overlaps(d, within)]
        shown = matched if limit is None else matched[:limit]
        runner = self._runner()
        return {
            "now": now,
            "bans": [
                {**decision_json(d, now), "not_enforced": runner.unenforced(d)} for d in shown
            ],
            "in_force": len(active),
            "matched": len(matched),
            "allowed": [
                {
                    "network": str(e.network),
                    "expires_at": e.expires_at,
                    "who": e.who,
                    "reason": e.reason,
                }
                for e in engine.allow_entries()
                if within is None or _overlaps_network(e.network, within)
            ],
            "brake_tripped_since": engine.brake_tripped_since(),
        }

    def unban(self, args: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
        text = _text(args, "target", TARGET_MAX)
        try:
            parse_target_text(text)
        except ValueError:
            raise CommandError(
                f"refused: {escape(text, limit=60)} is not an IP address, a CIDR network "
                "or a workload (kind:id)"
            ) from None
        engine = self._engine()
        try:
            lifted = engine.unban(text, who=peer.who)
        except ValueError as exc:  # inside a wider ban: named, never lifted for one address
            raise CommandError(escape(str(exc), limit=300)) from None
        stray = self._stray(text, peer, [lifted] if lifted is not None else [])
        if lifted is not None:
            self._runner().submit_expired([lifted])
        cover = engine.covering(text)  # its own ban lifted, a wider one still drops it
        held = {} if cover is None or cover.target is None else {"covered_by": cover.target.text}
        return (
            {
                "target": lifted.target.text if lifted and lifted.target else text,
                "lifted": lifted is not None,
            }
            | held
            | stray
        )

    def ban(self, args: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
        target = _address(_text(args, "target", TARGET_MAX))
        reason = _text(args, "reason", REASON_MAX, required=False)
        engine = self._engine()
        ttl = _ttl(args, engine.config.ban_ttl)
        force, replace = _flag(args, "force"), _flag(args, "replace")
        runner = self._runner()

        def check(covered: AddressTarget) -> None:
            """Refuse a ban a responder would refuse for good (recorded and reported
            banned, never enforced): of the network the ban covers, which for an IPv6
            host is its ``ipv6_ban_prefix`` network."""
            refusals = [] if engine.config.simulate else runner.refusals(covered.network)
            if not refusals:
                return
            widened = (
                f" (what a ban of {target.text} covers: [decisions] ipv6_ban_prefix)"
                if covered.text != target.text
                else ""
            )
            raise CommandError(
                f"refused: {covered.text}{widened}: {escape('; '.join(refusals), limit=300)}:"
                " it would not be enforced; ban a narrower network, or lower that key"
            )

        try:
            decision, kept = engine.manual_ban_kept(
                target.text, ttl, reason, peer.who, force=force, replace=replace, check=check
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        runner.submit(decision)
        # Which responders act on it: none (a bare [responders] table) enforces nothing.
        # kept_longer: a ban in force ended later than asked, and was kept.
        return decision_json(decision, engine.clock.now()) | {
            "responders": [r.name for r in runner.responders],
            "kept_longer": kept,
        }

    def allow(self, args: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
        target = _address(_text(args, "target", TARGET_MAX))
        reason = _text(args, "reason", REASON_MAX, required=False)
        ttl = _ttl(args, DEFAULT_ALLOW_TTL)
        engine = self._engine()
        try:
            lifted = engine.allow(target.text, ttl, peer.who, reason)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stray = self._stray(target.text, peer, lifted)
        if lifted:
            self._runner().submit_expired(lifted)
        return {
            "network": target.text,
            "expires_at": engine.clock.now() + ttl,
            "lifted": [d.target.text for d in lifted if d.target is not None],
        } | stray

    def _stray(self, text: str, peer: Peer, lifted: list[Decision]) -> dict[str, Any]:
        """On a run that keeps what the firewalls hold (the ledger was lost: the runner's
        ``keep_held``), send the lifts of ``text`` the engine did not hold (not in
        ``lifted``) to the responders as well, so an operator can lift a ban only the
        lost ledger knew; ``{"stray": [targets]}`` then, else ``{}``."""
        runner = self._runner()
        if not runner.keep_held:
            return {}
        known = {d.target.text for d in lifted if d.target is not None}
        stray = [
            d
            for d in self._engine().stray_lifts(text, peer.who)
            if d.target is not None and d.target.text not in known
        ]
        if not stray:
            return {}
        runner.submit_expired(stray)
        return {"stray": [d.target.text for d in stray if d.target is not None]}

    def brake_reset(self, _args: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
        return {"released": self._engine().reset_brake(peer.who)}


# ---------------------------------------------------------------------- rendering


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def render_bans(result: Mapping[str, Any]) -> str:
    """``aisentinel bans`` for people: one escaped line per enforcement."""
    lines: list[str] = []
    tripped = result.get("brake_tripped_since")
    if isinstance(tripped, int | float):
        lines.append(
            f"STORM BRAKE TRIPPED since {_iso(float(tripped))}: bans are alerts until "
            "`aisentinel brake reset`"
        )
    bans = result.get("bans") or []
    rows = []
    for b in bans:
        expires = b.get("expires_in_seconds")
        # Whole seconds, rounded up: "in 1h" right after a 1h ban, not "in 59m59s621ms".
        left = (
            f"in {format_duration(float(math.ceil(expires)))}"
            if isinstance(expires, int | float) and math.isfinite(expires)
            else "-"
        )
        sim = " (simulated)" if b.get("simulated") else ""
        off = b.get("not_enforced") or []
        if off:
            sim += " (NOT ENFORCED: " + "; ".join(str(w) for w in off) + ")"
        fields = (b.get("target"), b.get("action"), left, b.get("detector"), b.get("who"))
        row = [escape(str(f), limit=120) for f in fields]
        rows.append([*row, escape(str(b.get("reason")), limit=120) + escape(sim, limit=400)])
    if rows:
        headers = ("TARGET", "ACTION", "EXPIRES", "DETECTOR", "WHO", "REASON")
        lines += table(headers, rows, indent="")
    in_force, matched = result.get("in_force"), result.get("matched")
    if isinstance(in_force, int) and isinstance(matched, int) and len(rows) < in_force:
        which = "" if matched == in_force else f", {matched} of them match --target"
        lines.append(f"{len(rows)} shown of {in_force} in force{which}")
    elif not rows:
        lines.append("no bans in force")
    for a in result.get("allowed") or []:
        lines.append(
            f"allowed {escape(str(a.get('network')), limit=60)} until "
            f"{_iso(a.get('expires_at'))} by {escape(str(a.get('who')), limit=60)}"
        )
    return "\n".join(lines) + "\n"


def _stray(result: Mapping[str, Any]) -> str:
    """What ``unban`` / ``allow`` lifted from the firewalls beyond the engine's bans."""
    stray = result.get("stray") or []
    if not stray:
        return ""
    return f"; {_names(stray)} not in the ledger; lifted from the firewalls anyway"


def _names(targets: Sequence[object]) -> str:
    """The first :data:`NAMES_SHOWN` of ``targets``, escaped, and how many more."""
    shown = ", ".join(escape(str(t), limit=60) for t in targets[:NAMES_SHOWN])
    more = len(targets) - NAMES_SHOWN
    return f"{shown} and {more:,} more (--json lists every one)" if more > 0 else shown


def render_result(command: str, result: Mapping[str, Any]) -> str:
    """One escaped line saying what ``unban`` / ``ban`` / ``allow`` / ``brake_reset`` /
    ``ledger_accept`` did."""
    if command == "unban":
        target = escape(str(result.get("target")), limit=80)
        cover = result.get("covered_by")
        still = f" (still dropped by the ban of {escape(str(cover), limit=80)})" if cover else ""
        if result.get("lifted"):
            return f"lifted {target}{still}{_stray(result)}\n"
        if result.get("stray"):
            return f"{target}{_stray(result)}{still}\n"
        return f"{target} was not banned{still}\n"
    if command == "ban":
        sim = ""
        if result.get("simulated"):
            sim = " (simulated: nothing is enforced)"
        elif result.get("responders") == []:
            sim = f" ({NO_RESPONDER})"
        elif set(result.get("responders") or ["?"]) <= {"dryrun"}:
            sim = f" ({DRY_RUN_ONLY})"
        expires = _iso(result.get("expires_at"))
        kept = ""
        if result.get("kept_longer"):
            kept = " (the ban in force ends later than asked and is kept; --replace shortens it)"
        target = escape(str(result.get("target")), limit=80)
        return f"banned {target} until {expires}{kept}{sim}\n"
    if command == "allow":
        lifted = result.get("lifted") or []
        many = f"{len(lifted):,} bans: " if len(lifted) > NAMES_SHOWN else ""
        also = f"; lifted {many}{_names(lifted)}" if lifted else ""
        net = escape(str(result.get("network")), limit=80)
        return f"allowed {net} until {_iso(result.get('expires_at'))}{also}{_stray(result)}\n"
    if command == "brake_reset":
        return "storm brake released\n" if result.get("released") else "storm brake was not on\n"
    if command == "ledger_accept":
        if not result.get("accepted"):
            return "the ledger was not lost: nothing to accept\n"
        bans = result.get("bans")
        count = bans if isinstance(bans, int) else "?"
        return (
            f"ledger accepted ({count} bans in force): what the responders hold beyond "
            "them is lifted now\n"
        )
    return escape(str(dict(result)), limit=400) + "\n"
