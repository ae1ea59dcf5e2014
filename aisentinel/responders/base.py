"""The responder contract: enforce decisions in batches, one transaction each.

Modelled on crowdsec's cs-firewall-bouncer (Init / Add / Delete / Commit / ShutDown /
CollectMetrics). The responder worker
(:class:`~aisentinel.responders.runner.ResponderRunner`, on its own thread) hands a
responder each batch as

    ``add_many(decisions)`` -> ``delete_many(decisions)`` -> ``commit()``

``add_many`` and ``delete_many`` stage changes (they may also apply them at once when
the backend has no transactions); ``commit`` applies what was staged as one
transaction (for nftables: one ``nft -f -`` script). When any of the three raises,
the worker calls :meth:`Responder.discard` so nothing half-staged leaks into the next
batch, and retries every operation of the batch with back-off. ``reconcile`` makes
the backend hold exactly the given active decisions (at start, after a reload) and is
a transaction of its own (one that would run long may do a bounded slice at a time:
:class:`ReconcileUnfinishedError`); ``health`` says whether the backend works; ``close`` runs at
shutdown. ``reconcile_adding`` is the reconcile of a run whose ledger is not the
whole truth (unreadable at start, or in memory): it adds what is missing and lifts
nothing. Methods raise :class:`ResponderError` on failure.

A responder declares the actions it enforces in :attr:`Responder.handles` (a
firewall: ``ban``; a cgroup responder: ``throttle`` and ``freeze``) and only ever
sees decisions with one of them: validated, canonical targets (address targets for
``ban``, workload targets for ``throttle`` / ``freeze``) that passed the allowlist,
never simulated ones. Its factory is called as ``factory(config, clock=...,
commands=..., state_dir=...)``; ``commands`` is the shared
:class:`~aisentinel.commands.CommandRunner` (argument lists, timeouts, captured output,
never a shell), so tests inject a fake; ``state_dir`` is the daemon's state directory
(``None``: keep nothing on disk), for a responder whose backend cannot list what it
enforced (throttle: a CPU quota or a freeze does not say who set it), so a restart
can lift what an earlier run left.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import structlog

from aisentinel.clock import Clock
from aisentinel.commands import CommandRunner, SubprocessRunner
from aisentinel.configtypes import StrictModel
from aisentinel.events import Action, AddressTarget, Decision, IPNetwork
from aisentinel.registry import Registry

log = structlog.get_logger(__name__)


class ResponderError(Exception):
    """An enforcement step failed; the worker retries it."""


class PartialError(ResponderError):
    """Some targets of a commit or reconcile were applied and some were not.

    ``failed``: canonical target texts worth a retry; ``refused``: those the backend
    refuses for good (ufw with IPv6 off and an IPv6 target), never retried. Every other
    target of the transaction was applied. Raised after every target was tried, so one
    refused rule never holds back the others.
    """

    def __init__(
        self, message: str, *, failed: Iterable[str] = (), refused: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.failed = frozenset(failed)
        self.refused = frozenset(refused)


class ReconcileUnfinishedError(PartialError):
    """A reconcile made one bounded slice of its changes and has more to make (ufw: one
    process per rule, so repairing thousands of rules takes minutes to hours).

    Not a failure: the worker runs the bans and lifts queued meanwhile, then calls the
    reconcile again at once (no back-off, no attempt counted) with its active set kept
    current, so a new ban waits one slice, never the whole reconcile. ``refused``: the
    targets refused for good so far (given up as usual); ``failed`` stays empty (the
    responder keeps the targets that failed and reports them from its last slice).
    """


class ResponderConfigBase(StrictModel):
    """Keys every ``[responders.<name>]`` table has."""

    enabled: bool = True

    def owns(self) -> str:
        """What this responder owns in its backend, beside its name (nftables: its
        table). A reload or restart that drops a responder, or changes what it owns,
        withdraws the old one (:meth:`Responder.withdraw`)."""
        return ""


@dataclass(frozen=True, slots=True)
class ResponderHealth:
    """Whether a responder can enforce right now, and why not."""

    ok: bool
    detail: str = ""


class Responder(ABC):
    """An enforcement backend. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]
    handles: ClassVar[frozenset[Action]] = frozenset({Action.BAN})
    """The actions this responder enforces; decisions with others never reach it."""
    repairs: int = 0
    """Times the responder found what it enforces damaged from outside (nftables: its
    table deleted or flushed, a chain flushed or a rule changed) and put it back;
    exported as ``aisentinel_responder_repairs_total``."""

    def __init__(
        self,
        config: ResponderConfigBase,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.commands: CommandRunner = commands if commands is not None else SubprocessRunner()
        self.state_dir = state_dir

    @abstractmethod
    def add_many(self, decisions: Sequence[Decision]) -> None:
        """Stage the enforcement of ``decisions`` (each with a target, a TTL and an
        action in :attr:`handles`)."""

    @abstractmethod
    def delete_many(self, decisions: Sequence[Decision]) -> None:
        """Stage lifting the enforcements ``decisions`` made; lifting an absent one is
        not an error."""

    @abstractmethod
    def commit(self) -> None:
        """Apply what was staged since the last commit, as one transaction."""

    @abstractmethod
    def reconcile(self, active: Sequence[Decision]) -> None:
        """Make the backend hold exactly ``active`` (add missing, drop stale), at once or a
        bounded slice of the changes per call (:class:`ReconcileUnfinishedError`)."""

    def reconcile_adding(self, active: Sequence[Decision]) -> None:
        """Make the backend hold at least ``active`` and lift nothing it holds, at once:
        the daemon's ledger is not the whole truth this run (it was unreadable at start,
        or lives in memory), so what the backend holds beyond it may be a ban still due.
        Default: ``add_many(active)`` and ``commit()`` (adds are idempotent)."""
        self.add_many(active)
        self.commit()

    @abstractmethod
    def health(self) -> ResponderHealth:
        """Whether the backend works now."""

    def discard(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Forget what was staged and not committed (the batch failed; it is retried)."""

    def withdraw(self) -> str:
        """Lift every enforcement this responder put in its backend, now: it was removed
        from the config (at a reload, or at a start after a run that had it). Returns
        what was lifted, for the log. Default: hold nothing (``reconcile([])``)."""
        self.reconcile([])
        return "every enforcement it held lifted"

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release resources at shutdown (bans stay: they carry their own timeouts)."""

    def carry_over(self, previous: Responder) -> None:  # noqa: B027 - optional hook
        """Go on from ``previous``, the responder of the same name this one replaces at a
        reload (the worker calls it before this one gets any operation). Default: nothing."""

    def refusal(self, net: IPNetwork) -> str | None:
        """Why this responder's config makes it refuse a ban of ``net`` for good (nftables:
        wider than its ``min_prefix4`` / ``min_prefix6``), naming the key; ``None`` when
        it does not. ``aisentinel ban`` asks before banning by hand."""
        del net
        return None


class BufferedResponder(Responder):
    """A responder that stages whole decisions until :meth:`commit` takes them
    (:meth:`take`); ``discard`` forgets them. For backends that act on the decisions
    themselves at commit time (dryrun, nftables, throttle)."""

    def __init__(
        self,
        config: ResponderConfigBase,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self._adds: list[Decision] = []
        self._deletes: list[Decision] = []

    def add_many(self, decisions: Sequence[Decision]) -> None:
        self._adds.extend(decisions)

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        self._deletes.extend(decisions)

    def discard(self) -> None:
        self._adds, self._deletes = [], []

    def take(self) -> tuple[list[Decision], list[Decision]]:
        """The staged adds and deletes, leaving none staged."""
        adds, deletes = self._adds, self._deletes
        self._adds, self._deletes = [], []
        return adds, deletes


def checked(decision: Decision) -> str | None:
    """The canonical text of ``decision``'s address target, parsed again; ``None`` if
    it is not one (logged)."""
    target = decision.target
    if isinstance(target, AddressTarget):
        try:
            net = ipaddress.ip_network(target.text, strict=True)
        except ValueError:
            pass
        else:
            addr = net.network_address
            if not (addr.is_unspecified or addr.is_multicast or addr.is_loopback):
                return str(addr) if net.prefixlen == net.max_prefixlen else str(net)
    log.error("responder refused a target", reason="not a bannable address")
    return None


REGISTRY: Registry[type[Responder]] = Registry("responder")
"""Responders by name; each plug-in module registers itself in one line."""
