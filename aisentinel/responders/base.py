"""The responder contract: enforce decisions (ban, unban) and report health.

Modelled on a firewall bouncer: ``add`` enforces one decision, ``delete`` lifts the
ban on one target, ``reconcile`` makes the enforcement point hold exactly the given
active decisions (run at start, after a reload, and periodically), ``health`` says
whether the backend works. Methods raise :class:`ResponderError` on failure; the
:class:`~aisentinel.responders.runner.ResponderRunner` retries with back-off and
counts failures in metrics. A responder never sees an address that has not been
validated with :mod:`ipaddress` and checked against the allowlist.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from aisentinel.clock import Clock
from aisentinel.configtypes import StrictModel
from aisentinel.events import Decision
from aisentinel.registry import Registry


class ResponderError(Exception):
    """An enforcement step failed; the runner retries it."""


class ResponderConfigBase(StrictModel):
    """Keys every ``[responders.<name>]`` table has."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ResponderHealth:
    """Whether a responder can enforce right now, and why not."""

    ok: bool
    detail: str = ""


class Responder(ABC):
    """An enforcement backend. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]

    def __init__(self, config: ResponderConfigBase, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    @abstractmethod
    def add(self, decision: Decision) -> None:
        """Enforce a ban (``decision.action`` is BAN, ``target`` validated, TTL set)."""

    @abstractmethod
    def delete(self, target: str) -> None:
        """Lift the ban on ``target``; lifting an absent ban is not an error."""

    @abstractmethod
    def reconcile(self, active: Sequence[Decision]) -> None:
        """Make the backend hold exactly ``active`` bans (add missing, drop stale)."""

    @abstractmethod
    def health(self) -> ResponderHealth:
        """Whether the backend works now."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release resources at shutdown (bans stay: they carry their own timeouts)."""


REGISTRY: Registry[type[Responder]] = Registry("responder")
"""Responders by name; each plug-in module registers itself in one line."""
