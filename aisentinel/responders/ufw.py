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

aisentinel's rules are exactly the ``DENY IN`` and ``DENY FWD`` rules from a source to
``Anywhere`` whose comment starts with the marker: an operator's rule for the same
source (a port rule, another comment) is never taken for one and never deleted. When
the operator already has ``deny from ADDR``, ufw skips aisentinel's identical rule
("Skipping inserting existing rule") and keeps the operator's comment, so that rule
is not aisentinel's. A delete reads ``ufw status numbered`` first and removes the
source's rule only when it is aisentinel's, naming its comment: ufw (0.36) deletes a
rule given with a comment only when the comment matches. When ufw is inactive (its
status lists no rules) the comment aisentinel would have given is named instead.
``reconcile`` removes every rule of aisentinel's that the ledger does not hold, then
adds the missing ones (``reconcile_adding``, on a run whose ledger is not the whole
truth: only adds).

Each rule is applied on its own: one that ufw refuses does not hold back the others.
The failed targets are raised together at the end (:class:`PartialError`), so the
worker retries only them; an IPv6 target while ufw's IPv6 is off (``IPV6=no``) is
refused for good, logged once and reported by ``health``. A command that gives no
answer at all (ufw missing, hung) stops the batch: the rest would only wait as long.
Every command goes through the command runner (argument list, timeout, no shell);
every address is parsed again right before it is written.

ufw runs one process and an iptables-restore per change (about a third of a second
each): fine for a few hundred bans, not for ten thousand; use nftables there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandError, CommandRunner
from aisentinel.events import Decision
from aisentinel.responders.base import (
    REGISTRY,
    PartialError,
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
        """``in`` / ``route`` when this is a rule aisentinel makes and owns, else ``None``."""
        if self.to not in _ANYWHERE or self.comment.split(" ")[0] != MARKER:
            return None
        return _KIND_OF_ACTION.get(self.action)


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

    def _apply(self, todo: Iterable[tuple[str, str, str, str]], outcome: _Outcome) -> None:
        """Run each rule change on its own, noting the targets that failed; cut the
        connections of each source newly denied."""
        denied: list[str] = []
        todo = list(todo)
        for i, (op, kind, target, comment) in enumerate(todo):
            if target in outcome.failed or target in outcome.refused:
                continue
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
                else:
                    outcome.failed[target] = str(exc)
                continue
            if op == "prepend" and kind == IN:
                denied.append(target)
        for target in denied:
            if target not in outcome.failed:
                self._cut(target)

    def _note_v6_off(self) -> None:
        if not self._v6_off:
            self._v6_off = True
            log.error(
                "ufw refuses IPv6 rules (IPV6=no in its defaults): IPv6 bans are not "
                "enforced by ufw; set IPV6=yes and `ufw reload`, or use nftables",
                defaults=str(self.cfg.defaults_file),
            )

    def _cut(self, target: str) -> None:
        """Delete ``target``'s conntrack entries: ufw accepts the packets of established
        connections before its user rules, so without this the banned client's open
        connections (keep-alive, streams, SSH) go on. Never fails the ban."""
        if not self.cfg.cut_connections:
            return
        net = ipaddress.ip_network(target, strict=True)
        argv = ["conntrack", "-D", "-s", str(net.network_address)]
        if net.prefixlen != net.max_prefixlen:
            argv += ["--mask-src", str(net.netmask)]
        try:
            result = self.commands.run(argv, timeout=self.cfg.command_timeout)
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
        now = self.clock.now()
        wanted = {
            t: d for d in active if (d.expires_at or now + 1) > now for t in [checked(d)] if t
        }
        own = self._own() or {}
        kinds = self._kinds()
        stale = sorted(k for k in own if k[1] not in wanted or k[0] not in kinds) if lift else []
        missing = sorted((kind, t) for t in wanted for kind in kinds if (kind, t) not in own)
        outcome = _Outcome()
        self._apply(
            [
                *(("delete", kind, t, own[kind, t]) for kind, t in stale),
                *(("prepend", kind, t, self._comment(wanted[t])) for kind, t in missing),
            ],
            outcome,
        )
        log.info(
            "ufw reconciled",
            bans=len(wanted),
            added=len(missing),
            removed=len(stale),
            failed=len(outcome.failed) or None,
            refused=len(outcome.refused) or None,
        )
        outcome.raise_if_any("ufw reconcile")

    def withdraw(self) -> str:
        """Delete every rule of aisentinel's (the operator's stay)."""
        own = self._own()
        if own is None:
            return (
                "ufw is inactive and lists no rules: none deleted (rules commented "
                f"{MARKER} in its files apply again at `ufw enable`: withdraw again then)"
            )
        for (kind, target), comment in sorted(own.items()):
            self._run(*self._argv("delete", kind, target, comment))
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
        """Not ok while ufw is inactive or has refused an IPv6 ban (IPv6 off); notes
        IPv6 off and established connections left uncut."""
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
        return ResponderHealth(ok=not self._v6_off, detail="; ".join(notes))


REGISTRY.register("ufw", UfwConfig, UfwResponder)
