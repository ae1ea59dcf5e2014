"""The ``nftables`` responder: bans as elements of sets in aisentinel's own table.

aisentinel owns exactly one table, ``inet aisentinel`` (``table`` in the config), and
touches nothing outside it. The table holds:

- one set per prefix length in use, ``v4_32`` (IPv4 hosts), ``v6_64`` (IPv6 /64
  networks, how IPv6 bans are made), ``v6_128`` and, on demand, e.g. ``v4_24`` for a
  manual ``/24`` ban. Each is a plain hash set with ``flags timeout``: every ban is
  an element with its own kernel timeout, so a ban ends on time even when the daemon
  is down. A network is looked up by masking the source address
  (``ip6 saddr & ffff:ffff:ffff:ffff:: @v6_64``), which keeps every add and lookup
  O(1); an interval set (``flags interval``) would do the same matching but makes
  nft read the whole set before each change (measured: 25-35 ms per add at 10,000
  bans, against under 1 ms here) and refuses overlapping networks;
- a named counter ``dropped``;
- chain ``input`` (hook input) and chain ``forward`` (hook forward: traffic to
  Docker-published ports is DNATed in prerouting and then forwarded, never seen by
  input), both at ``priority`` (default -200), with one drop rule per set.

Priority -200 runs before every filter-priority chain (iptables-nft, ufw and Docker
at 0, firewalld at +10) and before mangle (-150): a drop in any base chain is final,
so the priority only decides who sees a banned packet first, and the earliest
costs the least.

Every commit is one transaction (one JSON document): it declares the sets of new
prefix lengths, the counter and the chains (``add`` is idempotent), replaces the
chains' rules (flush + add, atomically), then for each ban ``add`` / ``delete`` /
``add timeout T`` (the first add makes the delete safe when the element is absent;
the last sets the new timeout) and for each lift ``add`` / ``delete``. The table
and the sets it made already are not declared again, so after someone flushed the
ruleset (``systemctl restart nftables``) the document fails on the missing table
and the commit re-creates it with every ban this responder holds plus the batch
(logged, counted in ``repairs``), instead of an empty table with only the batch.
:meth:`NftablesResponder.health` (every 30 s) lists the table and re-creates it the
same way when chain ``input`` or ``forward`` is missing, off its hook or priority, or
holds other rules than one drop rule per set (``nft flush chain``, a rule replaced by
an ``accept``); when only bans held are missing from their sets (``nft flush set``) it
adds those back, keeping the table (a listing can leave out live elements while the
kernel expires others, so the sets are listed again first: :meth:`_lost`); the next
reconcile applies the ledger. Element timeouts are the whole seconds left when the
transaction is built (:meth:`_elements`). ``reconcile`` deletes and
re-creates the whole table with exactly the active bans in one transaction (20,000
bans in well under a second), after the same check as the health check's, so damage it
happens to fix first is logged and counted all the same. Damage is only counted on a
table the responder made (:attr:`~NftablesResponder.made`): a responder just enabled by
a reload, whose first reconcile is still to come, finds no table and says so (unhealthy,
"not made yet") without re-creating or counting anything; ``reconcile_adding`` (a run
whose ledger is not the whole truth) adds them to the table as it is, keeping its
elements and the drop rule of each of its sets. Every address is parsed again with
``ipaddress`` right before it is written; unspecified, loopback, multicast, link-local,
reserved (NAT64 addresses excepted, as the engine's ``unbannable``) or too wide networks
are refused and counted, and a commit or reconcile that refused a ban raises
:class:`~aisentinel.responders.base.PartialError` naming it (after writing the others),
so the worker reports it not enforced and counts it given up.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandRunner
from aisentinel.events import AddressTarget, Decision, IPNetwork, is_nat64
from aisentinel.responders.base import (
    REGISTRY,
    BufferedResponder,
    PartialError,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
)
from aisentinel.responders.libnftables import NftBackend, NftCommand, NftError, load_library

log = structlog.get_logger(__name__)

FAMILY = "inet"
DEFAULT_LENGTHS = frozenset({(4, 32), (6, 64), (6, 128)})
"""Prefix lengths whose set always exists (hosts, IPv6 /64 and /128)."""
COUNTER = "dropped"
MISSING = "No such file or directory"
"""nft's words (ENOENT) for a table, set or chain that is not there."""
RELISTS = 2
"""How many more times the sets are listed before bans missing from them count as lost."""
SOON = 2.0
"""Seconds: a ban this close to its expiry missing from its set is no evidence of damage
(the kernel expires elements by its own clock, a moment before or after the ledger's)."""


@dataclass(frozen=True, slots=True)
class _Damage:
    """How the table differs from what the responder made: why (for the log and health),
    and, when the only difference is bans missing from intact sets, which (``lost``:
    they are added back, the table kept)."""

    why: str
    lost: frozenset[str] = frozenset()


class NftablesConfig(ResponderConfigBase):
    """``[responders.nftables]``."""

    table: str = Field(default="aisentinel", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    """The ``inet`` table aisentinel owns (and deletes and re-creates at reconcile)."""
    priority: int = Field(default=-200, ge=-400, le=400)
    """Priority of the input and forward chains; -400 to 400 (default -200: before
    mangle, ufw, Docker and firewalld)."""
    forward: bool = True
    """Also drop banned sources in the forward hook (Docker-published ports, routed
    traffic)."""
    backend: Literal["auto", "libnftables", "nft"] = "auto"
    """``libnftables``: in process, no fork; ``nft``: ``nft -j -f -`` per batch;
    ``auto``: libnftables when it loads, else nft."""
    command_timeout: float = Field(default=10.0, ge=0.1, le=120.0, allow_inf_nan=False)
    """Seconds one ``nft`` run may take (nft backend); 0.1-120."""
    min_prefix4: int = Field(default=8, ge=1, le=32)
    """The widest IPv4 network a ban may cover (prefix length); 1-32."""
    min_prefix6: int = Field(default=32, ge=1, le=128)
    """The widest IPv6 network a ban may cover (prefix length); 1-128."""

    def owns(self) -> str:
        return f"table {FAMILY} {self.table}"


def _set_name(net: IPNetwork) -> str:
    return f"v{net.version}_{net.prefixlen}"


def _too_wide(net: IPNetwork, config: NftablesConfig) -> str | None:
    """Why ``net`` is wider than the config lets a ban be (``None``: it is not)."""
    key = "min_prefix4" if net.version == 4 else "min_prefix6"
    widest: int = getattr(config, key)
    if net.prefixlen < widest:
        return f"network wider than /{widest} (responders.nftables.{key})"
    return None


def _refusal(net: IPNetwork, config: NftablesConfig) -> str | None:
    """Why ``net`` must not be written (``None``: it may)."""
    wide = _too_wide(net, config)
    if wide is not None:
        return wide
    ends = (net.network_address, net.broadcast_address)
    for flag in ("is_unspecified", "is_loopback", "is_multicast", "is_link_local", "is_reserved"):
        for addr in ends:
            # NAT64 addresses are in ::/8 (reserved to ipaddress) but are IPv4 clients.
            if getattr(addr, flag) and not (flag == "is_reserved" and is_nat64(addr)):
                return flag.removeprefix("is_").replace("_", "-") + " address"
    return None


class NftablesResponder(BufferedResponder):
    """Bans addresses and networks with per-element timeouts in ``inet aisentinel``."""

    name = "nftables"

    def __init__(
        self,
        config: NftablesConfig,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        backend: NftBackend | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self.cfg = config
        self._backend_error = ""
        self.backend: NftBackend | None = backend if backend is not None else self._pick()
        self.held: dict[str, tuple[IPNetwork, float | None]] = {}
        """What this responder put in the table: target text -> (network, expires_at)."""
        self.lengths: set[tuple[int, int]] = set(DEFAULT_LENGTHS)
        self.made = False
        """Whether this responder has put its table in place (a commit or a reconcile
        succeeded, not withdrawn since): only then is a table found damaged a repair."""
        self.refused = 0
        """Targets refused by the last-moment validation (never written)."""
        self._refused_now: dict[str, str] = {}
        """The bans refused by the commit or reconcile under way: target text -> why."""
        self._refusals_logged: set[str] = set()
        """Targets whose refusal was logged as an error: a later refusal of one (each
        reconcile meets a refused ban in force again) is logged at debug; a reconcile
        keeps only those it met refused again."""
        self._logged_now: set[str] = set()
        """Targets logged as an error by the commit or reconcile under way."""

    def _pick(self) -> NftBackend | None:
        cli = NftCommand(self.commands, timeout=self.cfg.command_timeout)
        if self.cfg.backend == "nft":
            return cli
        lib = load_library()
        if lib is not None:
            return lib
        if self.cfg.backend == "libnftables":
            self._backend_error = "libnftables.so.1 cannot be loaded (install libnftables1)"
            return None
        if not cli.available():
            self._backend_error = "neither libnftables.so.1 nor nft is installed"
        return cli

    # ------------------------------------------------------------------ the contract

    def refusal(self, net: IPNetwork) -> str | None:
        return _too_wide(net, self.cfg)

    def carry_over(self, previous: Responder) -> None:
        """Keep which refusals were logged as errors: the reconcile at the reload meets
        the refused bans in force again (one warning line for them, not an error each)."""
        if isinstance(previous, NftablesResponder):
            self._refusals_logged = set(previous._refusals_logged)

    def commit(self) -> None:
        """Apply the staged bans and lifts; raises :class:`PartialError` naming the bans
        refused for good (never written: a network wider than ``min_prefix4`` /
        ``min_prefix6``, an address that is no ban target) after the others are applied."""
        adds, deletes = self.take()
        now = self.clock.now()
        self._refused_now, self._logged_now = {}, set()
        added = [b for b in self._valid(adds) if b[2] is None or b[2] > now]
        lifted = list(self._valid(deletes, lifts=True))
        if not added and not lifted:
            self._raise_refused("commit")
            return
        lengths = self.lengths | {(net.version, net.prefixlen) for _, net, _ in [*lifted, *added]}
        # The table and the sets already made are not declared again: when someone
        # removed them (`nft flush ruleset`, `systemctl restart nftables`), the batch
        # fails on the missing object instead of re-creating it empty with only this
        # batch's bans, and the table is re-created with every ban held.
        cmds = self._skeleton(lengths, declared=self.lengths)
        first = [(net, None) for _, net, _ in [*lifted, *added]]
        cmds += self._elements("add", first)
        cmds += self._elements("delete", first)
        cmds += self._elements("add", [(net, exp) for _, net, exp in added])
        held = dict(self.held)
        for text, _, _ in lifted:
            held.pop(text, None)
        for text, net, exp in added:
            held[text] = (net, exp)
        if self.backend is None:
            raise ResponderError(self._backend_error)
        try:
            self.backend.run({"nftables": cmds})
        except NftError as exc:
            if MISSING not in str(exc):
                raise ResponderError(f"nftables: {exc}") from None
            self._recreate(held, now, f"commit found the table incomplete ({exc})")
            self._raise_refused("commit")
            return
        self.lengths = lengths
        self.held = held
        self.made = True
        self._raise_refused("commit")

    def _raise_refused(self, what: str) -> None:
        """Raise :class:`PartialError` with the bans refused by this ``what`` (commit,
        reconcile), so the worker reports them not enforced and counts them given up."""
        refused, self._refused_now = self._refused_now, {}
        if what == "reconcile":
            self._refusals_logged &= refused.keys()
            again = len(refused.keys() - self._logged_now)
            if again:
                log.warning(
                    "nftables reconcile met bans it refused before, still not enforced",
                    refused=again,
                    first=next(iter(sorted(refused.keys() - self._logged_now))),
                )
        self._logged_now = set()
        if refused:
            text, why = next(iter(refused.items()))
            raise PartialError(
                f"nftables {what}: {len(refused)} bans refused for good, never written "
                f"(first: {text}: {why})",
                refused=refused,
            )

    def reconcile(self, active: Sequence[Decision]) -> None:
        now = self.clock.now()
        self._refused_now, self._logged_now = {}, set()
        wanted = {
            text: (net, exp) for text, net, exp in self._valid(active) if exp is None or exp > now
        }
        damage = self._damage() if self.made else None
        if damage is not None:  # replaced all the same, but counted as health() would
            self._recreate(wanted, now, f"{damage.why} (found by a reconcile)")
        else:
            self._replace(wanted)
        log.info("nftables reconciled", table=self.cfg.table, bans=len(wanted))
        self._raise_refused("reconcile")

    def reconcile_adding(self, active: Sequence[Decision]) -> None:
        """Add the active bans to the table as it is, keeping every element in it (each
        ends by its own kernel timeout) and the drop rule of every set it has."""
        now = self.clock.now()
        self._refused_now, self._logged_now = {}, set()
        wanted = {
            text: (net, exp) for text, net, exp in self._valid(active) if exp is None or exp > now
        }
        damage = self._damage() if self.made else None
        if damage is not None:
            self._log_damage(f"{damage.why} (found by a reconcile)", len({**self.held, **wanted}))
        lengths = set(DEFAULT_LENGTHS) | self._listed_lengths()
        lengths |= {(net.version, net.prefixlen) for net, _ in wanted.values()}
        first = [(net, None) for net, _ in wanted.values()]
        cmds = self._skeleton(lengths)
        cmds += self._elements("add", first)
        cmds += self._elements("delete", first)
        cmds += self._elements("add", list(wanted.values()))
        self._run(cmds)
        self.lengths = lengths
        self.held = {**self.held, **wanted}
        self.made = True
        if damage is not None:
            self.repairs += 1
        log.info("nftables reconciled, adding only", table=self.cfg.table, bans=len(wanted))
        self._raise_refused("reconcile")

    def _listed_lengths(self) -> set[tuple[int, int]]:
        """The prefix lengths of the sets the table has now (none: no table)."""
        if self.backend is None:
            raise ResponderError(self._backend_error)
        table = {"family": FAMILY, "name": self.cfg.table}
        try:
            listed = self.backend.run({"nftables": [{"list": {"table": table}}]})
        except NftError as exc:
            if MISSING in str(exc):
                return set()
            raise ResponderError(f"nftables: {exc}") from None
        out: set[tuple[int, int]] = set()
        for item in listed.get("nftables", []):
            found = item.get("set") if isinstance(item, dict) else None
            name = str(found.get("name", "")) if isinstance(found, dict) else ""
            match = re.fullmatch(r"v([46])_(\d{1,3})", name)
            if match is not None:
                version, length = int(match[1]), int(match[2])
                widest = self.cfg.min_prefix4 if version == 4 else self.cfg.min_prefix6
                if widest <= length <= (32 if version == 4 else 128):  # never a wider rule
                    out.add((version, length))
        return out

    def health(self) -> ResponderHealth:
        if self.backend is None:
            return ResponderHealth(ok=False, detail=self._backend_error)
        try:
            damage = self._damage()
        except ResponderError as exc:
            return ResponderHealth(ok=False, detail=str(exc))
        if damage is not None and not self.made:
            # Nothing was made yet (the first reconcile is queued or failing): no damage.
            return ResponderHealth(
                ok=False, detail=f"{self._where()} not made yet (the first reconcile makes it)"
            )
        if damage is not None and damage.lost:
            return self._add_back(damage)
        if damage is not None:
            return self._repair(damage.why)
        return ResponderHealth(
            ok=True, detail=f"{self.backend.name}: {len(self.held)} bans in {self._where()}"
        )

    def _damage(self) -> _Damage | None:
        """How the table differs from what this responder made (``None``: it does not):
        missing, a chain changed (:meth:`_damaged_chain`) or bans held missing from the
        sets (:meth:`_lost`). Raises :class:`ResponderError` when the table cannot be
        listed for another reason than its absence (nft failing is no damage: nothing is
        repaired or counted)."""
        if self.backend is None:
            raise ResponderError(self._backend_error)
        table = {"family": FAMILY, "name": self.cfg.table}
        try:
            listed = self.backend.run({"nftables": [{"list": {"table": table}}]})
        except NftError as exc:
            if MISSING in str(exc):
                return _Damage(f"table missing ({exc})")
            raise ResponderError(f"nftables: cannot list {self._where()}: {exc}") from None
        items = [item for item in listed.get("nftables", []) if isinstance(item, dict)]
        damage = self._damaged_chain(items)
        if damage is not None:
            return _Damage(damage)
        lost = self._lost(items)
        if lost:
            return _Damage(
                f"{len(lost)} of the {len(self.held)} bans held are not in the sets", lost
            )
        return None

    def withdraw(self) -> str:
        """Delete the table (every ban in it with it)."""
        table = {"family": FAMILY, "name": self.cfg.table}
        self._run([{"add": {"table": table}}, {"delete": {"table": table}}])
        self.held = {}
        self.lengths = set(DEFAULT_LENGTHS)
        self.made = False
        return f"{self._where()} deleted"

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    # ------------------------------------------------------------------ helpers

    def _damaged_chain(self, items: list[dict[str, Any]]) -> str | None:
        """How the listed chains differ from what :meth:`_skeleton` makes (``None``: they
        do not): each of ``input`` (and ``forward``) is a filter chain on its hook at the
        configured priority, policy accept, holding exactly one drop rule per set: the
        same match, counter and ``drop`` verdict. A flushed ``forward`` chain (Docker's
        published ports open to banned sources) or a rule turned to ``accept`` is
        damage as much as a missing table."""
        chains: dict[str, dict[str, Any]] = {}
        rules: dict[str, list[str]] = {}
        for item in items:
            chain, rule = item.get("chain"), item.get("rule")
            if isinstance(chain, dict):
                chains[str(chain.get("name"))] = chain
            if isinstance(rule, dict):
                rules.setdefault(str(rule.get("chain")), []).append(_shape(rule.get("expr")))
        wanted = sorted(_shape(_drop(version, length)) for version, length in self.lengths)
        for hook in ["input", "forward"] if self.cfg.forward else ["input"]:
            chain = chains.get(hook)
            if chain is None:
                return f"chain {hook} missing"
            hooked = (chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy"))
            if hooked != ("filter", hook, self.cfg.priority, "accept"):
                return (
                    f"chain {hook} is not a filter chain on hook {hook} at priority "
                    f"{self.cfg.priority}, policy accept"
                )
            listed = sorted(rules.get(hook, []))
            if listed != wanted:
                kept = sum(min(listed.count(r), wanted.count(r)) for r in set(wanted))
                return (
                    f"chain {hook} holds {len(listed)} rules, {len(wanted) - kept} of its "
                    f"{len(wanted)} drop rules missing or changed"
                )
        return None

    def _lost(self, items: list[dict[str, Any]]) -> frozenset[str]:
        """The unexpired bans held that are not in their sets (``nft flush set``, or a
        table re-created by someone else), confirmed: a listing of a large set while the
        kernel expires elements can leave out elements that are there (measured: 1,370 of
        40,000 one-hour elements, all listed again by the next listing), so the sets with
        elements missing are listed again, up to :data:`RELISTS` times, and only what
        every listing left out counts."""
        lost = self._absent(_present(items), self.held)
        for _ in range(RELISTS):
            if not lost:
                break
            names = sorted({_set_name(self.held[text][0]) for text in lost})
            cmds = [
                {"list": {"set": {"family": FAMILY, "table": self.cfg.table, "name": name}}}
                for name in names
            ]
            try:
                listed = self._listing(cmds)
            except NftError as exc:
                if MISSING in str(exc):  # a set or the table went meanwhile: lost indeed
                    return lost
                raise ResponderError(f"nftables: cannot list {self._where()}: {exc}") from None
            lost &= self._absent(_present(listed), lost)
        return lost

    def _absent(
        self,
        present: dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]],
        among: Iterable[str],
    ) -> frozenset[str]:
        """The bans of ``among`` held, not about to expire, whose element ``present``
        (addresses per set name) lacks."""
        soon = self.clock.now() + SOON  # the kernel may be a moment from expiring it
        out: set[str] = set()
        for text in among:
            net, expires = self.held[text]
            if (expires is None or expires > soon) and net.network_address not in present.get(
                _set_name(net), ()
            ):
                out.add(text)
        return frozenset(out)

    def _listing(self, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items nft lists for ``cmds`` (``list`` commands); raises :class:`NftError`."""
        if self.backend is None:
            raise ResponderError(self._backend_error)
        listed = self.backend.run({"nftables": cmds})
        return [item for item in listed.get("nftables", []) if isinstance(item, dict)]

    def _where(self) -> str:
        return f"table {FAMILY} {self.cfg.table}"

    def _repair(self, why: str) -> ResponderHealth:
        """Re-create the table with what this responder holds (someone flushed it)."""
        now = self.clock.now()
        try:
            bans = self._recreate(self.held, now, why)
        except ResponderError as exc:
            return ResponderHealth(ok=False, detail=f"{why}; re-creating failed: {exc}")
        return ResponderHealth(ok=True, detail=f"{why}; re-created with {bans} bans")

    def _add_back(self, damage: _Damage) -> ResponderHealth:
        """Add the bans ``damage`` found missing from their sets back, with their
        remaining time, keeping the table and every other element (logged, counted in
        :attr:`repairs`); re-create the table when a set is gone meanwhile."""
        now = self.clock.now()
        held = [self.held[text] for text in sorted(damage.lost)]
        bans = [(net, expires) for net, expires in held if expires is None or expires > now]
        log.warning(
            "nftables table damaged (bans missing from its sets: flushed by hand?); "
            "adding them back",
            table=self.cfg.table,
            reason=damage.why,
            bans=len(bans),
        )
        if self.backend is None:
            return ResponderHealth(ok=False, detail=self._backend_error)
        try:
            self.backend.run({"nftables": self._elements("add", bans)})
        except NftError as exc:
            if MISSING in str(exc):
                return self._repair(f"{damage.why}, then {exc}")
            return ResponderHealth(
                ok=False, detail=f"{damage.why}; adding them back failed: nftables: {exc}"
            )
        self.repairs += 1
        return ResponderHealth(ok=True, detail=f"{damage.why}; {len(bans)} added back")

    def _recreate(
        self, held: dict[str, tuple[IPNetwork, float | None]], now: float, why: str
    ) -> int:
        """Replace the damaged table with the unexpired bans of ``held`` (logged, counted
        in :attr:`repairs`); how many. Raises :class:`ResponderError` when that fails."""
        wanted = {t: b for t, b in held.items() if b[1] is None or b[1] > now}
        made = self.made  # a table this responder never made is not damaged: just made
        if made:
            self._log_damage(why, len(wanted))
        self._replace(wanted)
        if made:
            self.repairs += 1
        return len(wanted)

    def _log_damage(self, why: str, bans: int) -> None:
        """Say that the table this responder made was found damaged (then repaired)."""
        log.warning(
            "nftables table damaged (flushed or changed by hand?); re-creating it with "
            "every ban held",
            table=self.cfg.table,
            reason=why,
            bans=bans,
        )

    def _replace(self, wanted: dict[str, tuple[IPNetwork, float | None]]) -> None:
        table = {"family": FAMILY, "name": self.cfg.table}
        lengths = set(DEFAULT_LENGTHS) | {(n.version, n.prefixlen) for n, _ in wanted.values()}
        cmds: list[dict[str, Any]] = [{"add": {"table": table}}, {"delete": {"table": table}}]
        cmds += self._skeleton(lengths)
        cmds += self._elements("add", list(wanted.values()))
        self._run(cmds)
        self.lengths = lengths
        self.held = wanted
        self.made = True

    def _valid(
        self, decisions: Iterable[Decision], *, lifts: bool = False
    ) -> Iterable[tuple[str, IPNetwork, float | None]]:
        """(text, network, expires_at) of each decision whose target passes the last check.

        ``lifts``: the targets that fail it were never written (their adds were refused
        the same way), so there is nothing to lift: skipped, neither logged nor reported."""
        for decision in decisions:
            target = decision.target
            if not isinstance(target, AddressTarget):
                if not lifts:
                    self._refuse(getattr(target, "text", "?"), "not an address target")
                continue
            try:
                net = ipaddress.ip_network(target.text, strict=True)
            except ValueError:
                if not lifts:
                    self._refuse(target.text, "not an address or network")
                continue
            why = _refusal(net, self.cfg)
            if why is not None:
                if not lifts:
                    self._refuse(target.text, why)
                continue
            yield target.text, net, decision.expires_at

    def _refuse(self, text: str, why: str) -> None:
        """Count and report a refused target: an error the first time, at debug after
        (a reconcile logs one line for those it met again)."""
        self.refused += 1
        self._refused_now[text] = why
        shown = text[:64].encode("ascii", "backslashreplace").decode()
        if text in self._refusals_logged:
            log.debug("nftables responder refused a target again", target=shown, reason=why)
            return
        self._refusals_logged.add(text)
        self._logged_now.add(text)
        log.error("nftables responder refused a target", target=shown, reason=why)

    def _chain_id(self, name: str) -> dict[str, str]:
        return {"family": FAMILY, "table": self.cfg.table, "name": name}

    def _skeleton(
        self, lengths: set[tuple[int, int]], declared: Iterable[tuple[int, int]] | None = None
    ) -> list[dict[str, Any]]:
        """Table, sets, counter and chains (idempotent) and the chains' rules (replaced).

        With ``declared`` (the sets made already), the table and those sets are left out:
        the document then fails with ``MISSING`` when one of them is gone."""
        t = self.cfg.table
        cmds: list[dict[str, Any]] = []
        if declared is None:
            cmds.append({"add": {"table": {"family": FAMILY, "name": t}}})
        cmds.append({"add": {"counter": {"family": FAMILY, "table": t, "name": COUNTER}}})
        order = sorted(lengths)
        known = set(declared or ())
        for version, length in order:
            if (version, length) in known:
                continue
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            cmds.append(
                {
                    "add": {
                        "set": {
                            "family": FAMILY,
                            "table": t,
                            "name": f"v{version}_{length}",
                            "type": kind,
                            "flags": ["timeout"],
                        }
                    }
                }
            )
        hooks = ["input", "forward"] if self.cfg.forward else ["input"]
        for hook in hooks:
            chain = {
                **self._chain_id(hook),
                "type": "filter",
                "hook": hook,
                "prio": self.cfg.priority,
                "policy": "accept",
            }
            cmds.append({"add": {"chain": chain}})
            cmds.append({"flush": {"chain": self._chain_id(hook)}})
            for version, length in order:
                cmds.append(
                    {"add": {"rule": {**_rule_id(t, hook), "expr": _drop(version, length)}}}
                )
        return cmds

    def _elements(
        self, op: str, bans: Sequence[tuple[IPNetwork, float | None]]
    ) -> list[dict[str, Any]]:
        """One ``op`` element command per set for ``bans`` (timeouts when given).

        A timeout is the whole seconds left (rounded down, at least 1) by the clock read
        here, as the transaction is built, not before the listing or validation that came
        first (seconds at tens of thousands of bans): the kernel counts it from when it
        adds the element, so a ban never outlasts its expiry by that time."""
        now = self.clock.now()
        per_set: dict[str, list[Any]] = {}
        for net, expires in bans:
            value = str(net.network_address)
            if expires is None:
                elem: Any = value
            else:
                timeout = max(1, math.floor(expires - now))
                elem = {"elem": {"val": value, "timeout": timeout}}
            per_set.setdefault(_set_name(net), []).append(elem)
        return [
            {
                op: {
                    "element": {
                        "family": FAMILY,
                        "table": self.cfg.table,
                        "name": name,
                        "elem": elems,
                    }
                }
            }
            for name, elems in per_set.items()
        ]

    def _run(self, cmds: list[dict[str, Any]]) -> None:
        if self.backend is None:
            raise ResponderError(self._backend_error)
        try:
            self.backend.run({"nftables": cmds})
        except NftError as exc:
            raise ResponderError(f"nftables: {exc}") from None


def _shape(expr: object) -> str:
    """A rule's statements as comparable text: addresses (masks) in canonical form, so a
    listed rule equals the one :func:`_drop` writes whatever spelling nft lists it in."""

    def canonical(value: object) -> object:
        if isinstance(value, dict):
            return {str(k): canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            return [canonical(v) for v in value]
        if isinstance(value, str) and ("." in value or ":" in value):
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                return value
        return value

    return json.dumps(canonical(expr), sort_keys=True)


def _present(
    items: list[dict[str, Any]],
) -> dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The addresses of each listed set's elements, by set name."""
    present: dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    for item in items:
        found = item.get("set")
        if isinstance(found, dict):
            present[str(found.get("name"))] = set(_addresses(found.get("elem", [])))
    return present


def _addresses(elems: object) -> Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of a listed set's elements (plain, or with their timeout)."""
    for elem in elems if isinstance(elems, list) else []:
        value = elem.get("elem", {}).get("val") if isinstance(elem, dict) else elem
        try:
            yield ipaddress.ip_address(str(value))
        except ValueError:
            continue


def _rule_id(table: str, chain: str) -> dict[str, str]:
    return {"family": FAMILY, "table": table, "chain": chain}


def _drop(version: int, length: int) -> list[dict[str, Any]]:
    """``ip saddr @v4_32 counter name dropped drop``, masked for networks."""
    field: Any = {"payload": {"protocol": "ip" if version == 4 else "ip6", "field": "saddr"}}
    bits = 32 if version == 4 else 128
    if length < bits:
        mask_int = ((1 << length) - 1) << (bits - length)
        mask = ipaddress.IPv4Address(mask_int) if version == 4 else ipaddress.IPv6Address(mask_int)
        field = {"&": [field, str(mask)]}
    return [
        {"match": {"op": "==", "left": field, "right": f"@v{version}_{length}"}},
        {"counter": COUNTER},
        {"drop": None},
    ]


REGISTRY.register("nftables", NftablesConfig, NftablesResponder)
