"""The ``dryrun`` responder: says what it would enforce and enforces nothing.

Useful to try a configuration on a live host, and in tests and demos: every
operation is logged (at info, or at debug with one summary line at info for a reconcile
and a commit of more than :data:`BATCH_LINES`) and kept in a bounded in-memory list
(:attr:`DryRunResponder.actions`),
every committed batch in :attr:`DryRunResponder.batches`, and what it would hold is
tracked so ``reconcile`` reports a true difference. It handles every enforcing
action: bans of addresses, throttles and freezes of workloads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandRunner
from aisentinel.configtypes import format_duration
from aisentinel.events import ENFORCING, Decision
from aisentinel.responders.base import (
    REGISTRY,
    BufferedResponder,
    ResponderConfigBase,
    ResponderHealth,
)

log = structlog.get_logger(__name__)

BATCH_LINES = 20
"""Operations of one commit logged one by one at info. A larger commit (a storm's bans,
a tick's expiries) logs them at debug and one summary line at info, as a reconcile
always does (a restart with 20,000 bans in the ledger wrote 20,000 lines at once)."""


class DryRunConfig(ResponderConfigBase):
    """``[responders.dryrun]``."""

    keep: int = Field(default=1_000, ge=1, le=1_000_000)
    """How many recent actions (and batches) are kept in memory; 1-1,000,000. Every
    action is logged as well (a large batch's at debug level): the in-memory list is
    for tests and inspection, and a storm's 10,000 bans held about 1.6 MB more with
    10,000 of them."""


@dataclass(frozen=True, slots=True)
class DryRunAction:
    """One thing the dry-run responder would have done, at ``ts`` (epoch seconds)."""

    ts: float
    text: str


@dataclass(frozen=True, slots=True)
class DryRunBatch:
    """One committed batch: the target texts added and deleted, in order."""

    ts: float
    added: tuple[str, ...]
    deleted: tuple[str, ...]


class DryRunResponder(BufferedResponder):
    """Records ``ban 203.0.113.7 for 1h (ssh_bruteforce)``-style entries; always healthy."""

    name = "dryrun"
    handles = ENFORCING

    def __init__(
        self,
        config: DryRunConfig,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self.actions: deque[DryRunAction] = deque(maxlen=config.keep)
        self.batches: deque[DryRunBatch] = deque(maxlen=config.keep)
        self.banned: dict[str, float | None] = {}
        """What the backend would hold now: target text -> when it would expire (None:
        never). Not the decisions: a copy of each (with its reason) cost a storm's
        10,000 bans about 3 MB."""

    def commit(self) -> None:
        adds, deletes = self.take()
        if not adds and not deletes:
            return
        each = len(adds) + len(deletes) <= BATCH_LINES
        for decision in adds:
            self._add(decision, each=each)
        for decision in deletes:
            target = decision.target.text if decision.target is not None else "?"
            present = self.banned.pop(target, None) is not None
            undo = f"un{decision.action.value}"
            self._note(f"{undo} {target}" if present else f"{undo} {target} (not held)", each)
        if not each:
            self._note(f"commit: {len(adds)} added, {len(deletes)} deleted (each at debug level)")
        self.batches.append(
            DryRunBatch(
                self.clock.now(),
                tuple(d.target.text for d in adds if d.target is not None),
                tuple(d.target.text for d in deletes if d.target is not None),
            )
        )

    def reconcile(self, active: Sequence[Decision]) -> None:
        self._reconcile(active, lift=True)

    def reconcile_adding(self, active: Sequence[Decision]) -> None:
        self._reconcile(active, lift=False)

    def _reconcile(self, active: Sequence[Decision], *, lift: bool) -> None:
        wanted = {d.target.text: d for d in active if d.target is not None}
        stale = sorted(set(self.banned) - set(wanted)) if lift else []
        missing = sorted(set(wanted) - set(self.banned))
        for target in stale:
            del self.banned[target]
            self._note(f"unban {target} (reconcile)", each=False)
        for target in missing:
            self._add(wanted[target], each=False)
        self.banned.update((target, d.expires_at) for target, d in wanted.items())
        self._note(f"reconcile: {len(wanted)} active, {len(missing)} added, {len(stale)} removed")

    def health(self) -> ResponderHealth:
        return ResponderHealth(ok=True, detail=f"dry run: {len(self.banned)} bans would be held")

    def withdraw(self) -> str:
        self.banned.clear()
        return "nothing to lift (dry run)"

    def _add(self, decision: Decision, *, each: bool) -> None:
        target = decision.target.text if decision.target is not None else "?"
        ttl = format_duration(decision.ttl) if decision.ttl is not None else "ever"
        self.banned[target] = decision.expires_at
        self._note(f"{decision.action.value} {target} for {ttl} ({decision.detector})", each)

    def _note(self, text: str, each: bool = True) -> None:
        """Record ``text``; log it at info (``each``) or debug (a summary line says it)."""
        self.actions.append(DryRunAction(self.clock.now(), text))
        (log.info if each else log.debug)("dry run", action=text)


REGISTRY.register("dryrun", DryRunConfig, DryRunResponder)
