"""The ``ufw`` responder: ``deny from ADDR`` rules per ban, marked by their comment.

For hosts whose firewall is ufw. Each ban is ``ufw prepend deny from ADDR comment
'aisentinel ...'`` (``prepend`` rather than ``insert 1``: ``insert 1`` fails on an
empty rule list and when the first rule is of the other IP version; ``prepend`` puts
the rule first among the rules of its own version), and with ``route = true`` (the
default) also ``ufw route prepend deny from ADDR comment ...`` for routed traffic
(containers, VMs; Docker-published ports only once ``DOCKER-USER`` consults ufw, see
docs/enforcement.md). Both are lifted with ``ufw [route] delete deny from ADDR comment
'<the comment the rule has>'`` when the ban ends (ufw rules have no timeout: the
worker issues the delete when the engine expires the ban). Both are idempotent in ufw
(an existing rule is skipped, a missing one is reported and not an error), so a
retried batch is safe.

ufw's own rules accept the packets of established connections before any user rule,
so after a ban the source's conntrack entries are deleted (``conntrack -D -s ADDR``,
``cut_connections``); without the conntrack tool that is one warning and a health
note, never a failed ban.

aisentinel's rules are exactly the ``DENY IN`` and ``DENY FWD`` rules from an address
or network to ``Anywhere`` whose comment starts with the marker: an operator's rule for
the same source (a port rule, another comment), or one commented like aisentinel's
whose source is no address (``ADDR/tcp`` of a ``proto`` rule, ``Anywhere``), is never
taken for one and never deleted. When
the operator already has ``deny from ADDR``, ufw skips aisentinel's identical rule
("Skipping inserting existing rule") and keeps the operator's comment, so that rule
is not aisentinel's. A delete reads ``ufw status numbered`` first and removes the
source's rule only when it is aisentinel's, naming its comment: ufw (0.36) deletes a
rule given with a comment only when the comment matches. When ufw is inactive (its
status lists no rules) the comment aisentinel would have given is named instead.
``reconcile`` removes every rule of aisentinel's that the ledger does not hold, then
adds the missing ones (``reconcile_adding``, on a run whose ledger is not the whole
truth: only adds), about :data:`RECONCILE_SLICE_SECONDS` of changes per call: with more
left it raises :class:`~aisentinel.responders.base.ReconcileUnfinishedError` and the
worker applies the bans queued meanwhile before the next slice (repairing thousands of
rules takes minutes to hours). ``withdraw`` goes on past a rule ufw refuses and raises
the ones left at the end.

Each rule is applied on its own: one that ufw refuses does not hold back the others.
The failed targets are raised together at the end (:class:`PartialError`), so the
worker retries only them; an IPv6 target while ufw's IPv6 is off (``IPV6=no``) is
refused for good, logged once and noted by ``health`` (which stays ok: the IPv4 bans
are enforced); once ufw refused one, later IPv6 targets are refused without asking it
until its defaults say ``IPV6=yes``. A command that gives no answer at all (ufw or
conntrack missing, hung) stops the batch (its rule changes, or its connection cuts):
the rest would only wait as long.
Every command goes through the command runner (argument list, timeout, no shell);
every address is parsed again right before it is written.

ufw runs one process and an iptables-restore per change (about a third of a second
each): fine for a few hundred bans, not for ten thousand; use nftables there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandError, CommandRunner, CommandTimeoutError
from aisentinel.events import Decision
from aisentinel.responders.base import (
    REGISTRY,
    PartialError,
    ReconcileUnfinishedError,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
    checked,
)

log = structlog.get_logger(__name__)

MARKER = "aisentinel"
"""Every rule this responder adds has a comment starting with it."""

_RULE = re.compile(
    r"^\[\s*\d+\]\s+(?P<to>.+?)\s{2,}(?P<action>[A-Z]+(?: (?:IN|OUT|FWD))?)\s+"
    r"(?P<source>\S+)(?: \(v6\))?\s+# (?P<comment>.*?)\s*$"
)
_ANYWHERE = frozenset({"Anywhere", "Anywhere (v6)"})
IN, ROUTE = "in", "route"
"""The kinds of rule a ban has: ``deny from`` (INPUT) and ``route deny from`` (FORWARD)."""
_KIND_OF_ACTION = {"DENY IN": IN, "DENY FWD": ROUTE}
V6_OFF = "IPv6 support not enabled"
"""What ufw answers to an IPv6 rule while ``IPV6=no``."""
_NOTHING_CUT = "0 flow entries have been deleted"
RECONCILE_SLICE_SECONDS = 5.0
"""About how long one slice of a reconcile runs (at least one rule change): a reconcile
with more to change goes on in the worker's next cycle, after the bans and lifts queued
meanwhile (:class:`~aisentinel.responders.base.ReconcileUnfinishedError`)."""


class UfwConfig(ResponderConfigBase):
    """``[responders.ufw]``."""

    command_timeout: float = Field(default=30.0, ge=0.5, le=300.0, allow_inf_nan=False)
    """Seconds one ufw run may take; 0.5-300."""
    route: bool = True
    """Also deny the source's routed traffic (``ufw route deny``, the FORWARD chain)."""
    cut_connections: bool = True
    """Delete the source's conntrack entries after a ban (``conntrack -D``), so its
    established connections are cut too."""
    defaults_file: Path = Path("/etc/default/ufw")
    """ufw's defaults (read for ``IPV6=no``)."""


@dataclass(frozen=True, slots=True)
class UfwRule:
    """One commented rule of ``ufw status numbered``."""

    to: str
    action: str
    source: str
    comment: str

    @property
    def kind(self) -> str | None:
        """``in`` / ``route`` when this is a rule aisentinel makes and owns, else ``None``:
        a source that is not an address or network (``ADDR/tcp`` of a ``proto`` rule,
        ``Anywhere``) is an operator's rule, whatever its comment."""
        if self.to not in _ANYWHERE or self.comment.split(" ")[0] != MARKER:
            return None
        if not _is_network(self.source):
            return None
        return _KIND_OF_ACTION.get(self.action)


def _is_network(source: str) -> bool:
    """Whether ``source`` (a ufw status column, `` (v6)`` stripped) is an address or
    network as aisentinel writes them."""
    try:
        ipaddress.ip_network(source.removesuffix(" (v6)"), strict=True)
    except ValueError:
        return False
    return True


def parse_status(text: str) -> list[UfwRule]:
    """The rules with a comment in ``ufw status numbered``, in order."""
    out: list[UfwRule] = []
    for line in text.splitlines():
        match = _RULE.match(line.strip())
        if match:
            out.append(UfwRule(match["to"], match["action"], match["source"], match["comment"]))
    return out


class _UnansweredError(ResponderError):
    """ufw gave no answer (missing, hung): the other rules would fare no better."""


@dataclass(slots=True)
class _Outcome:
    """What went wrong while applying a batch rule by rule."""

    failed: dict[str, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)

    def raise_if_any(self, what: str) -> None:
        if not self.failed and not self.refused:
            return
        first = next(iter(self.failed.values()), f"ufw: {V6_OFF}")
        raise PartialError(
            f"{what}: {len(self.failed)} failed, {len(self.refused)} refused for good"
            f" (first: {first})",
            failed=self.failed,
            refused=self.refused,
        )


@dataclass(slots=True)
class _Repair:
    """A reconcile made in slices, between two of them."""

    failed: dict[str, str] = field(default_factory=dict)
    """Targets that failed in an earlier slice: not tried again before the last slice
    reports them (the worker retries the reconcile with back-off)."""
    refused: set[str] = field(default_factory=set)
    """Targets refused for good in an earlier slice, reported again by the last one."""
    done: set[tuple[str, str, str]] = field(default_factory=set)
    """(op, kind, target) of the changes made so far: not made again (while ufw is
    inactive its status lists none of them), so every slice gets further."""


def _is_v6(target: str) -> bool:
    return ipaddress.ip_network(target, strict=False).version == 6


class UfwResponder(Responder):
    """Bans as ufw deny rules commented ``aisentinel ...``."""

    name = "ufw"

    def __init__(
        self,
        config: UfwConfig,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self.cfg = config
        self._adds: list[tuple[str, str]] = []
        self._deletes: list[tuple[str, str]] = []
        self._v6_off = False
        self._conntrack_note = ""
        self._repair: _Repair | None = None
        self.slice_seconds = RECONCILE_SLICE_SECONDS

    def _run(self, *args: str) -> str:
        try:
            result = self.commands.run(["ufw", *args], timeout=self.cfg.command_timeout)
        except CommandError as exc:
            raise _UnansweredError(f"ufw: {exc}") from None
        if not result.ok:
            raise ResponderError(f"ufw: {result.message()}")
        return result.stdout

    @staticmethod
    def _comment(decision: Decision) -> str:
        detector = re.sub(r"[^a-z0-9_.-]", "", decision.detector.lower())[:40]
        return f"{MARKER} {detector or 'ban'}"

    def _kinds(self) -> tuple[str, ...]:
        return (IN, ROUTE) if self.cfg.route else (IN,)

    @staticmethod
    def _argv(op: str, kind: str, target: str, comment: str) -> list[str]:
        return [
            *(["route"] if kind == ROUTE else []),
            op,
            "deny",
            "from",
            target,
            "comment",
            comment,
        ]

    def add_many(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            target = checked(decision)
            if target is not None:
                self._adds.append((target, self._comment(decision)))

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            target = checked(decision)
            if target is not None:
                self._deletes.append((target, self._comment(decision)))

    def discard(self) -> None:
        self._adds, self._deletes = [], []

    def commit(self) -> None:
        adds, deletes = self._adds, self._deletes
        self._adds, self._deletes = [], []
        own = self._own() if deletes else {}
        outcome = _Outcome()
        todo: list[tuple[str, str, str, str]] = []
        for target, given in deletes:
            for kind in (IN, ROUTE):
                if own is None:  # inactive: name the comment aisentinel would have given
                    if kind in self._kinds():
                        todo.append(("delete", kind, target, given))
                elif (kind, target) in own:  # else none, or the operator's own: not ours
                    todo.append(("delete", kind, target, own[kind, target]))
        for target, comment in adds:
            todo.extend(("prepend", kind, target, comment) for kind in self._kinds())
        self._apply(todo, outcome)
        outcome.raise_if_any("ufw commit")

    def _apply(
        self,
        todo: Sequence[tuple[str, str, str, str]],
        outcome: _Outcome,
        *,
        until: float | None = None,
    ) -> int:
        """Run each rule change on its own, noting the targets that failed; cut the
        connections of each source newly denied. With ``until`` (the clock's monotonic
        time) stop once it is past, after at least one change. Returns how many changes
        of ``todo`` were dealt with: all unless stopped."""
        denied: list[str] = []
        v6_refused: bool | None = None
        tried = 0
        for i, (op, kind, target, comment) in enumerate(todo):
            if target in outcome.failed or target in outcome.refused:
                continue
            if until is not None and tried and self.clock.monotonic() >= until:
                self._cut_all([t for t in denied if t not in outcome.failed])
                return i
            if op == "prepend" and _is_v6(target):
                if v6_refused is None:
                    v6_refused = self._v6_refused()
                if v6_refused:  # known off: ufw would only refuse it again
                    outcome.refused.add(target)
                    continue
            tried += 1
            try:
                self._run(*self._argv(op, kind, target, comment))
            except _UnansweredError as exc:
                for _, _, rest, _ in todo[i:]:
                    outcome.failed.setdefault(rest, str(exc))
                break
            except ResponderError as exc:
                if V6_OFF in str(exc) and _is_v6(target):
                    outcome.refused.add(target)
                    self._note_v6_off()
                    v6_refused = True
                else:
                    outcome.failed[target] = str(exc)
                continue
            if op == "prepend" and kind == IN:
                denied.append(target)
        self._cut_all([t for t in denied if t not in outcome.failed])
        return len(todo)

    def _v6_refused(self) -> bool:
        """Whether ufw is known to refuse IPv6 rules now: it refused one, and its defaults
        have not said ``IPV6=yes`` since."""
        if self._v6_off and self._ipv6_disabled() is False:
            self._v6_off = False
        return self._v6_off

    def _note_v6_off(self) -> None:
        if not self._v6_off:
            self._v6_off = True
            log.error(
                "ufw refuses IPv6 rules (IPV6=no in its defaults): IPv6 bans are not "
                "enforced by ufw; set IPV6=yes and `ufw reload`, or use nftables",
                defaults=str(self.cfg.defaults_file),
            )

    def _cut_all(self, targets: Sequence[str]) -> None:
        """Cut the connections of each of ``targets``; a conntrack that gives no answer in
        time skips the rest (each would wait as long). Never fails the ban."""
        if not self.cfg.cut_connections:
            return
        for i, target in enumerate(targets):
            try:
                self._cut(target)
            except CommandTimeoutError as exc:
                skipped = len(targets) - i - 1
                more = f"; the cuts of {skipped} more sources skipped" if skipped else ""
                self._conntrack_failed(f"{exc}{more}")
                return

    def _cut(self, target: str) -> None:
        """Delete ``target``'s conntrack entries: ufw accepts the packets of established
        connections before its user rules, so without this the banned client's open
        connections (keep-alive, streams, SSH) go on. Raises CommandTimeoutError when
        conntrack gives no answer in time; any other failure is noted."""
        net = ipaddress.ip_network(target, strict=True)
        argv = ["conntrack", "-D", "-s", str(net.network_address)]
        if net.prefixlen != net.max_prefixlen:
            argv += ["--mask-src", str(net.netmask)]
        try:
            result = self.commands.run(argv, timeout=self.cfg.command_timeout)
        except CommandTimeoutError:
            raise
        except CommandError as exc:
            self._conntrack_failed(str(exc))
            return
        if result.ok or _NOTHING_CUT in result.stderr + result.stdout:
            self._conntrack_note = ""
            return
        self._conntrack_failed(result.message())

    def _conntrack_failed(self, why: str) -> None:
        if not self._conntrack_note:
            log.warning(
                "ufw bans do not cut established connections: deleting the source's "
                "conntrack entries failed (install the conntrack package; see "
                "docs/enforcement.md)",
                error=why,
            )
        self._conntrack_note = f"established connections of banned sources are not cut ({why})"

    def _own(self) -> dict[tuple[str, str], str] | None:
        """(kind, source) -> comment of the rules this responder made; ``None`` when
        ufw is inactive and lists no rules."""
        out = self._run("status", "numbered")
        if "Status: active" not in out:
            return None
        own: dict[tuple[str, str], str] = {}
        for rule in parse_status(out):
            kind = rule.kind
            if kind is not None:
                own.setdefault((kind, rule.source), rule.comment)
        return own

    def held(self) -> set[str]:
        """Sources of the deny rules this responder made."""
        return {source for _, source in self._own() or {}}

    def reconcile(self, active: Sequence[Decision]) -> None:
        self._reconcile(active, lift=True)

    def reconcile_adding(self, active: Sequence[Decision]) -> None:
        """Add the missing rules; keep every rule aisentinel made (ufw rules have no
        timeout: those the ledger does not know stay until a reconcile after
        `aisentinel ledger accept` lifts them)."""
        self._reconcile(active, lift=False)

    def _reconcile(self, active: Sequence[Decision], *, lift: bool) -> None:
        """One slice of the reconcile: the changes it has to make, in order, until
        :attr:`slice_seconds` have passed; raises ReconcileUnfinishedError when more are left
        (the worker runs the bans and lifts queued meanwhile, then calls it again)."""
        until = self.clock.monotonic() + self.slice_seconds
        repair, self._repair = self._repair or _Repair(), None
        now = self.clock.now()
        wanted = {
            t: d for d in active if (d.expires_at or now + 1) > now for t in [checked(d)] if t
        }
        own = self._own() or {}
        kinds = self._kinds()
        stale = sorted(k for k in own if k[1] not in wanted or k[0] not in kinds) if lift else []
        missing = sorted((kind, t) for t in wanted for kind in kinds if (kind, t) not in own)
        todo = [
            change
            for change in (
                *(("delete", kind, t, own[kind, t]) for kind, t in stale),
                *(("prepend", kind, t, self._comment(wanted[t])) for kind, t in missing),
            )
            if change[2] not in repair.failed and change[:3] not in repair.done
        ]
        outcome = _Outcome()
        first = not repair.done
        done = self._apply(todo, outcome, until=until)
        repair.done.update(change[:3] for change in todo[:done])
        if done < len(todo):
            if first:
                log.info(
                    "ufw reconcile has many rules to change: made in slices, the bans and "
                    "lifts queued meanwhile go between them",
                    changes=len(todo),
                    slice_seconds=self.slice_seconds,
                )
            repair.failed.update(outcome.failed)
            repair.refused.update(outcome.refused)
            self._repair = repair
            raise ReconcileUnfinishedError(
                f"ufw reconcile: {len(todo) - done} rule changes left",
                refused=outcome.refused,
            )
        outcome.failed.update(repair.failed)
        outcome.refused.update(repair.refused)
        log.info(
            "ufw reconciled",
            bans=len(wanted),
            changes=len(repair.done),
            failed=len(outcome.failed) or None,
            refused=len(outcome.refused) or None,
        )
        outcome.raise_if_any("ufw reconcile")

    def withdraw(self) -> str:
        """Delete every rule of aisentinel's (the operator's stay). One that ufw refuses
        does not stop the others: those left are raised together at the end."""
        own = self._own()
        if own is None:
            return (
                "ufw is inactive and lists no rules: none deleted (rules commented "
                f"{MARKER} in its files apply again at `ufw enable`: withdraw again then)"
            )
        outcome = _Outcome()
        self._apply([("delete", k, t, c) for (k, t), c in sorted(own.items())], outcome)
        left = [rule for rule in own if rule[1] in outcome.failed]
        if left:
            sources = sorted(outcome.failed)
            more = " ..." if len(sources) > 5 else ""
            raise PartialError(
                f"ufw withdraw: {len(own) - len(left)} deny rules commented {MARKER} "
                f"deleted, {len(left)} left (from {', '.join(sources[:5])}{more}; first "
                f"error: {next(iter(outcome.failed.values()))})",
                failed=outcome.failed,
            )
        return f"{len(own)} deny rules commented {MARKER} deleted"

    def _ipv6_disabled(self) -> bool | None:
        """Whether ufw's defaults say ``IPV6=no``; ``None`` when they cannot be read."""
        try:
            text = self.cfg.defaults_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "IPV6":
                return value.strip().strip("\"'").lower() != "yes"
        return None

    def health(self) -> ResponderHealth:
        """Not ok while ufw is inactive; notes IPv6 off (the refused IPv6 bans are marked
        each on its own: the IPv4 bans are enforced) and established connections left
        uncut."""
        try:
            out = self._run("status")
        except ResponderError as exc:
            return ResponderHealth(ok=False, detail=str(exc))
        if "Status: active" not in out:
            return ResponderHealth(ok=False, detail="ufw is not active: its rules are not applied")
        notes = ["ufw active"]
        disabled = self._ipv6_disabled()
        if disabled is False:
            self._v6_off = False  # IPV6=yes again (and ufw reloaded): retried as usual
        if disabled or self._v6_off:
            notes.append(f"IPv6 disabled (IPV6=no in {self.cfg.defaults_file}): IPv6 bans refused")
        if self._conntrack_note:
            notes.append(self._conntrack_note)
        return ResponderHealth(ok=True, detail="; ".join(notes))


REGISTRY.register("ufw", UfwConfig, UfwResponder)
