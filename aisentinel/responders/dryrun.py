"""The ``dryrun`` responder: says what it would enforce and enforces nothing.

Useful to try a configuration on a live host, and in tests and demos: every
operation is logged and kept in a bounded in-memory list (:attr:`DryRunResponder.actions`),
and the bans it would hold are tracked so ``reconcile`` reports a true difference.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.configtypes import format_duration
from aisentinel.events import Decision
from aisentinel.responders.base import (
    REGISTRY,
    Responder,
    ResponderConfigBase,
    ResponderHealth,
)

log = structlog.get_logger(__name__)


class DryRunConfig(ResponderConfigBase):
    """``[responders.dryrun]``."""

    keep: int = Field(default=10_000, ge=1, le=1_000_000)
    """How many recent actions :attr:`DryRunResponder.actions` keeps; 1-1,000,000."""


@dataclass(frozen=True, slots=True)
class DryRunAction:
    """One thing the dry-run responder would have done, at ``ts`` (epoch seconds)."""

    ts: float
    text: str


class DryRunResponder(Responder):
    """Records ``ban 203.0.113.7 for 1h (ssh_bruteforce)``-style entries; always healthy."""

    name = "dryrun"

    def __init__(self, config: DryRunConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self.actions: deque[DryRunAction] = deque(maxlen=config.keep)
        self.banned: dict[str, Decision] = {}
        """What the backend would hold now, by target."""

    def add(self, decision: Decision) -> None:
        target = decision.target or "?"
        ttl = format_duration(decision.ttl) if decision.ttl is not None else "ever"
        self.banned[target] = decision
        self._note(f"ban {target} for {ttl} ({decision.detector})")

    def delete(self, target: str) -> None:
        present = self.banned.pop(target, None) is not None
        self._note(f"unban {target}" if present else f"unban {target} (not banned)")

    def reconcile(self, active: Sequence[Decision]) -> None:
        wanted = {d.target: d for d in active if d.target is not None}
        stale = sorted(set(self.banned) - set(wanted))
        missing = sorted(set(wanted) - set(self.banned))
        for target in stale:
            del self.banned[target]
            self._note(f"unban {target} (reconcile)")
        for target in missing:
            self.add(wanted[target])
        self.banned.update(wanted)
        self._note(f"reconcile: {len(wanted)} active, {len(missing)} added, {len(stale)} removed")

    def health(self) -> ResponderHealth:
        return ResponderHealth(ok=True, detail=f"dry run: {len(self.banned)} bans would be held")

    def _note(self, text: str) -> None:
        self.actions.append(DryRunAction(self.clock.now(), text))
        log.info("dry run", action=text)


REGISTRY.register("dryrun", DryRunConfig, DryRunResponder)
