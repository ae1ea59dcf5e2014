"""Hands decisions to the responders, retrying failures with back-off.

The pipeline thread calls :meth:`ResponderRunner.submit` for each decision,
:meth:`~ResponderRunner.submit_expired` for bans the engine expired,
:meth:`~ResponderRunner.reconcile` at start and on reload, and
:meth:`~ResponderRunner.tick` about once a second. Nothing here sleeps: a failed
operation is queued and retried by a later ``tick`` after 1 s, 2 s, 4 s ... (capped
at 60 s) until ``max_attempts`` attempts have failed, then given up with an error
log. The pipeline is never blocked by a broken backend.

Simulated decisions never reach a responder. Per target and responder only the
newest operation is kept: a delete queued behind a failed add replaces it. A
pending reconcile tracks the adds and deletes submitted after it, so its retry
never undoes them.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog

from aisentinel.clock import Clock
from aisentinel.events import Action, Decision
from aisentinel.responders.base import Responder, ResponderError, ResponderHealth

log = structlog.get_logger(__name__)


class Operation(enum.StrEnum):
    """What the runner asks of a responder (a metrics label)."""

    ADD = "add"
    DELETE = "delete"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class ResponderStats:
    """A snapshot of one responder's numbers for metrics.

    ``ok``, ``failed``, ``retried`` and ``given_up`` are counters per operation
    (``failed`` counts every failed call, first tries and retries alike);
    ``pending`` is a gauge of queued retries; ``health`` is the last health check
    (``None`` before the first).
    """

    name: str
    ok: Mapping[Operation, int]
    failed: Mapping[Operation, int]
    retried: Mapping[Operation, int]
    given_up: Mapping[Operation, int]
    pending: int
    health: ResponderHealth | None
    health_checked_at: float | None


@dataclass(slots=True)
class _Counts:
    ok: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    failed: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    retried: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    given_up: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    health: ResponderHealth | None = None
    health_checked_at: float | None = None


@dataclass(slots=True)
class _Job:
    """One operation for one responder, with its retry state."""

    responder: Responder
    op: Operation
    target: str | None
    decision: Decision | None = None
    active: dict[str, Decision] = field(default_factory=dict)
    attempts: int = 0
    due: float = 0.0

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.responder.name, self.target)


def _enforceable(decision: Decision) -> bool:
    return decision.action is Action.BAN and decision.target is not None and not decision.simulated


class ResponderRunner:
    """Drives a list of responders; see the module docstring for the contract.

    ``backoff`` is the delay before the first retry, doubled for each further one
    up to ``backoff_cap``. At most ``max_pending`` retries are queued; beyond that
    a failure is given up at once. ``health_interval`` is how often ``tick`` runs
    the responders' health checks. Driven by one thread; :meth:`stats` may be read
    from others.
    """

    def __init__(
        self,
        responders: Sequence[Responder],
        clock: Clock,
        *,
        max_attempts: int = 5,
        backoff: float = 1.0,
        backoff_cap: float = 60.0,
        max_pending: int = 100_000,
        health_interval: float = 30.0,
    ) -> None:
        names = [r.name for r in responders]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"responder names must be unique, repeated: {', '.join(duplicates)}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff <= 0 or backoff_cap < backoff:
            raise ValueError("backoff must be positive and backoff_cap at least backoff")
        self.responders = tuple(responders)
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.max_pending = max_pending
        self.health_interval = health_interval
        self._pending: dict[tuple[str, str | None], _Job] = {}
        self._counts = {r.name: _Counts() for r in self.responders}
        self._next_health: float | None = None
        self._skipped_simulated = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ submitting

    def submit(self, decision: Decision) -> None:
        """Enforce a BAN on every responder; other actions and simulated bans are ignored."""
        if decision.action is Action.BAN and decision.simulated:
            with self._lock:
                self._skipped_simulated += 1
            return
        target = decision.target
        if target is None or not _enforceable(decision):
            return
        for responder in self.responders:
            self._track_in_reconcile(responder, target, decision)
            self._start(_Job(responder, Operation.ADD, target, decision=decision))

    def submit_expired(self, decisions: Iterable[Decision]) -> None:
        """Lift expired (or manually lifted) bans on every responder; skips simulated ones."""
        for decision in decisions:
            target = decision.target
            if target is None or not _enforceable(decision):
                continue
            for responder in self.responders:
                self._track_in_reconcile(responder, target, None)
                self._start(_Job(responder, Operation.DELETE, target, decision=decision))

    def reconcile(self, active: Iterable[Decision]) -> None:
        """Make every responder hold exactly the enforceable bans in ``active``.

        It replaces the responder's queued adds and deletes (the reconcile covers
        them). Bans that expire while a reconcile waits for its retry are left out
        of the retry.
        """
        now = self.clock.now()
        wanted = {
            d.target: d
            for d in active
            if _enforceable(d) and d.target is not None and (d.expires_at or 0.0) > now
        }
        for responder in self.responders:
            with self._lock:
                for key in [k for k in self._pending if k[0] == responder.name]:
                    del self._pending[key]
            self._start(_Job(responder, Operation.RECONCILE, None, active=dict(wanted)))

    # ------------------------------------------------------------------ driving

    def tick(self, now: float | None = None) -> int:
        """Retry the operations that are due; returns how many were tried.

        ``now`` is wall-clock epoch seconds (default: the clock's ``now()``); it
        decides which queued bans have expired meanwhile. Retry delays and the
        health-check interval run on the clock's ``monotonic()``, so a wall-clock
        jump neither stalls nor floods the retries.
        """
        mono = self.clock.monotonic()
        wall = self.clock.now() if now is None else now
        with self._lock:
            due = sorted(
                (job for job in self._pending.values() if job.due <= mono), key=lambda j: j.due
            )
            for job in due:
                del self._pending[job.key]
        for job in due:
            decision = job.decision
            if job.op is Operation.ADD and decision and (decision.expires_at or 0.0) <= wall:
                log.info(
                    "retry dropped: the ban expired meanwhile",
                    responder=job.responder.name,
                    target=job.target,
                )
                continue
            if job.op is Operation.RECONCILE:
                job.active = {t: d for t, d in job.active.items() if (d.expires_at or 0.0) > wall}
            self._attempt(job)
        if self._next_health is None or mono >= self._next_health:
            self._next_health = mono + self.health_interval
            self.check_health()
        return len(due)

    def check_health(self) -> dict[str, ResponderHealth]:
        """Ask every responder for its health now; a raising check counts as unhealthy."""
        out: dict[str, ResponderHealth] = {}
        for responder in self.responders:
            try:
                health = responder.health()
            except Exception as exc:  # noqa: BLE001 - a broken check is itself ill health
                health = ResponderHealth(ok=False, detail=f"health check raised: {exc}")
            counts = self._counts[responder.name]
            if counts.health is not None and counts.health.ok != health.ok:
                log.warning(
                    "responder health changed",
                    responder=responder.name,
                    ok=health.ok,
                    detail=health.detail,
                )
            with self._lock:
                counts.health = health
                counts.health_checked_at = self.clock.now()
            out[responder.name] = health
        return out

    def pending(self) -> int:
        """Operations waiting for a retry."""
        with self._lock:
            return len(self._pending)

    def stats(self) -> list[ResponderStats]:
        """One snapshot per responder, in the order they were given."""
        with self._lock:
            waiting: dict[str, int] = {}
            for name, _target in self._pending:
                waiting[name] = waiting.get(name, 0) + 1
            return [
                ResponderStats(
                    name=r.name,
                    ok=MappingProxyType(dict(c.ok)),
                    failed=MappingProxyType(dict(c.failed)),
                    retried=MappingProxyType(dict(c.retried)),
                    given_up=MappingProxyType(dict(c.given_up)),
                    pending=waiting.get(r.name, 0),
                    health=c.health,
                    health_checked_at=c.health_checked_at,
                )
                for r in self.responders
                for c in (self._counts[r.name],)
            ]

    @property
    def skipped_simulated(self) -> int:
        """Simulated bans that were submitted and, as they should be, not enforced."""
        with self._lock:
            return self._skipped_simulated

    def close(self) -> None:
        """Close every responder; queued retries are dropped with a warning."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
        if dropped:
            log.warning("responder retries dropped at shutdown", count=dropped)
        for responder in self.responders:
            try:
                responder.close()
            except Exception:  # one failing close must not stop the others
                log.exception("responder close failed", responder=responder.name)

    # ------------------------------------------------------------------ internals

    def _track_in_reconcile(self, responder: Responder, target: str, ban: Decision | None) -> None:
        """Keep a pending reconcile's snapshot current with a newer add or delete."""
        with self._lock:
            job = self._pending.get((responder.name, None))
            if job is None:
                return
            if ban is None:
                job.active.pop(target, None)
            else:
                job.active[target] = ban

    def _start(self, job: _Job) -> None:
        with self._lock:
            self._pending.pop(job.key, None)
        self._attempt(job)

    def _attempt(self, job: _Job) -> None:
        counts = self._counts[job.responder.name]
        if job.attempts:
            with self._lock:
                counts.retried[job.op] += 1
        job.attempts += 1
        if self._call(job):
            with self._lock:
                counts.ok[job.op] += 1
            if job.attempts > 1:
                log.info(
                    "responder operation succeeded on retry",
                    responder=job.responder.name,
                    operation=job.op.value,
                    target=job.target,
                    attempts=job.attempts,
                )
            return
        with self._lock:
            counts.failed[job.op] += 1
            full = len(self._pending) >= self.max_pending
            if job.attempts < self.max_attempts and not full:
                job.due = self.clock.monotonic() + self._delay(job.attempts)
                self._pending[job.key] = job
                return
            counts.given_up[job.op] += 1
        log.error(
            "responder operation given up",
            responder=job.responder.name,
            operation=job.op.value,
            target=job.target,
            attempts=job.attempts,
            reason="retry queue full" if full else "too many failures",
        )

    def _delay(self, failures: int) -> float:
        return min(self.backoff * 2.0 ** min(failures - 1, 62), self.backoff_cap)

    def _call(self, job: _Job) -> bool:
        """Run the job's operation once; ``True`` on success. Never raises."""
        responder = job.responder
        try:
            if job.op is Operation.ADD and job.decision is not None:
                responder.add(job.decision)
            elif job.op is Operation.DELETE and job.target is not None:
                responder.delete(job.target)
            elif job.op is Operation.RECONCILE:
                responder.reconcile(sorted(job.active.values(), key=lambda d: d.target or ""))
        except ResponderError as exc:
            log.warning(
                "responder operation failed",
                responder=responder.name,
                operation=job.op.value,
                target=job.target,
                attempt=job.attempts,
                error=str(exc),
            )
            return False
        except Exception:  # a bug in one backend must not stop the pipeline
            log.exception(
                "responder operation raised unexpectedly",
                responder=responder.name,
                operation=job.op.value,
                target=job.target,
                attempt=job.attempts,
            )
            return False
        return True
