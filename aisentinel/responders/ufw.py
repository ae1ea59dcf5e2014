"""The ``ufw`` responder: one ``deny from ADDR`` rule per ban, marked by its comment.

For hosts whose firewall is ufw. Each ban is ``ufw prepend deny from ADDR comment
'aisentinel ...'`` (``prepend`` rather than ``insert 1``: ``insert 1`` fails on an
empty rule list and when the first rule is of the other IP version; ``prepend`` puts
the rule first among the rules of its own version), lifted with ``ufw delete deny
from ADDR comment '<the comment the rule has>'`` when the ban ends (ufw rules have
no timeout: the worker issues the delete when the engine expires the ban). Both are
idempotent in ufw (an existing rule is skipped, a missing one is reported and not an
error), so a retried batch is safe.

Only rules aisentinel made are ever deleted: when the operator already has ``deny
from ADDR``, ufw skips aisentinel's identical rule ("Skipping inserting existing
rule") and keeps the operator's comment, so that rule is not aisentinel's. A delete
reads ``ufw status numbered`` first and removes the source's rule only when its
comment starts with the marker, naming that comment: ufw (0.36) deletes a rule
given with a comment only when the comment matches. When ufw is inactive (its
status lists no rules) the comment aisentinel would have given is named instead.
``reconcile`` removes every rule whose comment starts with the marker and that the
ledger does not hold, then adds the missing ones (``reconcile_adding``, on a run whose
ledger is not the whole truth: only adds). Every command goes through the
command runner (argument list, timeout, no shell); every address is parsed again
right before it is written.

ufw runs one process and an iptables-restore per change (about a third of a second
each): fine for a few hundred bans, not for ten thousand; use nftables there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandError, CommandRunner
from aisentinel.events import Decision
from aisentinel.responders.base import (
    REGISTRY,
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


class UfwConfig(ResponderConfigBase):
    """``[responders.ufw]``."""

    command_timeout: float = Field(default=30.0, ge=0.5, le=300.0, allow_inf_nan=False)
    """Seconds one ufw run may take; 0.5-300."""


def parse_status(text: str) -> dict[str, str]:
    """Source address -> comment of each ``DENY`` rule with a comment in ``ufw status numbered``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _RULE.match(line.strip())
        if match and match["action"].startswith("DENY"):
            out[match["source"]] = match["comment"]
    return out


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

    def _run(self, *args: str) -> str:
        try:
            result = self.commands.run(["ufw", *args], timeout=self.cfg.command_timeout)
        except CommandError as exc:
            raise ResponderError(f"ufw: {exc}") from None
        if not result.ok:
            raise ResponderError(f"ufw: {result.message()}")
        return result.stdout

    @staticmethod
    def _comment(decision: Decision) -> str:
        detector = re.sub(r"[^a-z0-9_.-]", "", decision.detector.lower())[:40]
        return f"{MARKER} {detector or 'ban'}"

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
        for target, given in deletes:
            if own is not None and target not in own:
                continue  # no rule, or the operator's own: never aisentinel's to delete
            comment = given if own is None else own[target]
            self._run("delete", "deny", "from", target, "comment", comment)
        for target, comment in adds:
            self._run("prepend", "deny", "from", target, "comment", comment)

    def _own(self) -> dict[str, str] | None:
        """Source -> comment of the deny rules this responder made (by comment);
        ``None`` when ufw is inactive and lists no rules."""
        out = self._run("status", "numbered")
        if "Status: active" not in out:
            return None
        rules = parse_status(out)
        return {src: comment for src, comment in rules.items() if comment.split(" ")[0] == MARKER}

    def held(self) -> set[str]:
        """Sources of the deny rules this responder made (by comment)."""
        return set(self._own() or {})

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
        held = set(own)
        stale = sorted(held - set(wanted)) if lift else []
        missing = sorted(set(wanted) - held)
        for target in stale:
            self._run("delete", "deny", "from", target, "comment", own[target])
        for target in missing:
            self._run("prepend", "deny", "from", target, "comment", self._comment(wanted[target]))
        log.info("ufw reconciled", bans=len(wanted), added=len(missing), removed=len(stale))

    def withdraw(self) -> str:
        """Delete every deny rule commented ``aisentinel ...`` (the operator's stay)."""
        own = self._own()
        if own is None:
            return (
                "ufw is inactive and lists no rules: none deleted (rules commented "
                f"{MARKER} in its files apply again at `ufw enable`: withdraw again then)"
            )
        for target, comment in sorted(own.items()):
            self._run("delete", "deny", "from", target, "comment", comment)
        return f"{len(own)} deny rules commented {MARKER} deleted"

    def health(self) -> ResponderHealth:
        try:
            out = self._run("status")
        except ResponderError as exc:
            return ResponderHealth(ok=False, detail=str(exc))
        if "Status: active" not in out:
            return ResponderHealth(ok=False, detail="ufw is not active: its rules are not applied")
        return ResponderHealth(ok=True, detail="ufw active")


REGISTRY.register("ufw", UfwConfig, UfwResponder)
