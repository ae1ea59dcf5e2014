"""The responder worker: decisions are queued by the pipeline and enforced on a thread.

The pipeline thread only enqueues (:meth:`ResponderRunner.submit` for each decision,
:meth:`~ResponderRunner.submit_expired` for enforcements the engine ended,
:meth:`~ResponderRunner.reconcile` at start and on reload); none of these blocks or
calls a responder, so a slow ``nft`` or Docker call never stalls parsing or the
watchdog heartbeat. The worker thread (:meth:`~ResponderRunner.start`) takes
everything queued as one batch and hands each responder its share as
``add_many`` -> ``delete_many`` -> ``commit``: one transaction per batch, as
crowdsec's cs-firewall-bouncer does. Without the thread (tests), :meth:`tick` runs
one such cycle on the caller's thread.

Failures are retried with back-off: a failed batch puts each of its operations
back, due after 1 s, 2 s, 4 s ... (capped at 60 s) on the clock's ``monotonic()``,
until ``max_attempts`` attempts have failed, then given up with an error log. A
responder that names the targets that failed
(:class:`~aisentinel.responders.base.PartialError`) gets only those back; the ones
it refuses for good are given up at once, and a reconcile that only met those counts
as done. Due
retries join the next batch. Per target and responder only the newest operation is
kept: a delete queued behind a failed add replaces it. A reconcile covers the adds
and deletes queued before it and absorbs those after it (its retry never undoes
them); a queued add whose ban expired meanwhile is dropped. With :attr:`keep_held`
(the ledger is not the whole truth this run) a reconcile only adds
(:meth:`~aisentinel.responders.base.Responder.reconcile_adding`), and the deletes
queued after it stay jobs of their own, run after it; an add queued after such a
delete cancels it. A reconcile that made one slice of its changes and has more
(:class:`~aisentinel.responders.base.ReconcileUnfinishedError`: ufw, one process per
rule) goes on in the next cycle at once, without back-off and counted once; the adds
and deletes queued meanwhile stay jobs of their own and run before its next slice (its
active set kept current), so a new ban never waits for the whole reconcile. Targets
refused for good, whether by a commit or a reconcile, are given up (counted once per
target) and reported by :meth:`~ResponderRunner.unenforced`.

The queue is bounded (``[daemon] responder_queue``). When it is full, queued
operations are dropped, each in O(1), in the order of :data:`_DROP_ORDER`: lifts of
expired bans first (nftables lifts those itself at their timeout), then manual lifts,
then adds (with :attr:`~ResponderRunner.keep_held` manual lifts are never dropped:
its reconciles lift nothing, so the queue may pass its bound by them, at most the bans
that were in force); a reconcile is never dropped. Each drop is counted in
``aisentinel_responder_queue_dropped_total{operation}``, logged once per streak, and
makes :meth:`~ResponderRunner.resync_wanted` true: the daemon's loop then queues a
reconcile at once, which restores what was lost. A reconcile queued takes out of the
queue what it covers (as :meth:`~ResponderRunner._fold` would), so it makes room. Simulated
decisions never reach a responder, and a responder only gets the actions it
:attr:`~aisentinel.responders.base.Responder.handles`.

:meth:`collect` builds the worker's metric families at scrape time (client_python
custom-collector style) from the state it keeps.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aisentinel.clock import Clock
from aisentinel.events import Action, Decision, IPNetwork
from aisentinel.responders.base import (
    PartialError,
    ReconcileUnfinishedError,
    Responder,
    ResponderError,
    ResponderHealth,
)

log = structlog.get_logger(__name__)

QUEUE_DEFAULT = 10_000
"""Operations the worker's queue holds by default (``[daemon] responder_queue``)."""
IDLE_WAIT_SECONDS = 0.5
"""Longest the worker sleeps before it looks at its retry and health timers again."""


class Operation(enum.StrEnum):
    """What the worker asks of a responder (a metrics label)."""

    ADD = "add"
    DELETE = "delete"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class ResponderStats:
    """A snapshot of one responder's numbers for metrics.

    ``ok``, ``failed``, ``retried`` and ``given_up`` are counters per operation
    (``failed`` counts every failed operation, first tries and retries alike);
    ``batches`` counts commits per result (``ok``, ``failed``); ``pending`` is a
    gauge of queued retries; ``health`` is the last health check (``None`` before
    the first); ``repairs`` counts the damage from outside it found and repaired
    (:attr:`Responder.repairs`).
    """

    name: str
    ok: Mapping[Operation, int]
    failed: Mapping[Operation, int]
    retried: Mapping[Operation, int]
    given_up: Mapping[Operation, int]
    pending: int
    health: ResponderHealth | None
    health_checked_at: float | None
    batches: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    repairs: int = 0


@dataclass(slots=True)
class _Counts:
    ok: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    failed: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    retried: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    given_up: dict[Operation, int] = field(default_factory=lambda: dict.fromkeys(Operation, 0))
    batches: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    health: ResponderHealth | None = None
    health_checked_at: float | None = None
    repairs: int = 0
    """Repairs of the responder objects of this name that came before the current one
    (its own are :attr:`Responder.repairs`)."""

    def counters(self, repairs: int) -> _Counts:
        """A copy of the counters (no health: that is the responder object's), with
        ``repairs`` more repairs."""
        return _Counts(
            ok=dict(self.ok),
            failed=dict(self.failed),
            retried=dict(self.retried),
            given_up=dict(self.given_up),
            batches=dict(self.batches),
            repairs=self.repairs + repairs,
        )


@dataclass(frozen=True, slots=True)
class _Failure:
    """How one transaction failed: why, and which targets (``failed`` ``None``: all)."""

    error: str
    failed: frozenset[str] | None = None
    refused: frozenset[str] = frozenset()
    unfinished: bool = False
    """A reconcile that made one slice of its changes and has more (not a failure)."""

    def hit(self, job: _Job) -> bool:
        """Whether ``job`` failed: every job when the responder did not say which; a
        reconcile when any target is worth a retry (one refused for good is not)."""
        if self.failed is None:
            return True
        if job.target is None:
            return bool(self.failed)
        return job.target in self.failed or job.target in self.refused


@dataclass(slots=True)
class _Item:
    """One queued operation, for every responder."""

    op: Operation
    decision: Decision | None
    active: tuple[Decision, ...]
    queued_at: float


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
    resumed: bool = False
    """A reconcile going on after a slice: it runs after the adds and lifts of its cycle."""

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.responder.name, self.target)


@dataclass(slots=True)
class _Retiree:
    """A responder removed from the config, whose enforcements are to be lifted."""

    responder: Responder
    on_lifted: Callable[[Responder], None] | None = None
    attempts: int = 0
    due: float = 0.0


_REFUSED_WHY = "refused by the backend"
_REFUSED = f"given up: {_REFUSED_WHY}"
"""Why a target refused for good is not enforced (:meth:`ResponderRunner.unenforced`),
whether its add or a reconcile met the refusal."""


_LIFT_EXPIRED = "delete_expired"
_LIFT = "delete"
_ADD = "add"
_DROP_ORDER = (_LIFT_EXPIRED, _LIFT, _ADD)
"""What a full queue drops first: lifts of expired bans, manual lifts, adds (with
:attr:`ResponderRunner.keep_held`: lifts of expired bans, adds, never manual lifts)."""


def _target_text(decision: Decision) -> str:
    return decision.target.text if decision.target is not None else ""


def _enforceable(decision: Decision) -> bool:
    return decision.action.enforces and decision.target is not None and not decision.simulated


class ResponderRunner:
    """The responder worker; see the module docstring for the contract.

    ``queue_size`` bounds the operations waiting for the thread. ``backoff`` is the
    delay before the first retry, doubled for each further one up to
    ``backoff_cap``. At most ``max_pending`` retries are kept; beyond that a failure
    is given up at once. ``health_interval`` is how often the responders' health is
    checked. Thread-safe: the pipeline thread submits, the worker thread enforces,
    the exporter reads :meth:`stats` and :meth:`collect`.
    """

    def __init__(
        self,
        responders: Sequence[Responder],
        clock: Clock,
        *,
        queue_size: int = QUEUE_DEFAULT,
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
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.responders = tuple(responders)
        self.clock = clock
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.max_pending = max_pending
        self.health_interval = health_interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._cycle_lock = threading.Lock()
        """Held while a cycle runs, so :meth:`tick` and the thread never overlap."""
        self._queue: dict[int, _Item] = {}  # by sequence number, in order (O(1) drops)
        self._seq = 0
        self._victims: dict[str, deque[int]] = {kind: deque() for kind in _DROP_ORDER}
        """Sequence numbers of the queued adds and lifts, oldest first, by what dropping
        one costs (:data:`_DROP_ORDER`); stale numbers are skipped."""
        self._resync = False  # something was dropped: a reconcile is wanted now
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pending: dict[tuple[str, str | None], _Job] = {}
        self._counts = {r.name: _Counts() for r in self.responders}
        self._next_health: float | None = None
        self._skipped_simulated = 0
        self._dropped: dict[str, int] = dict.fromkeys(_DROP_ORDER, 0)  # by kind
        self._retiring: list[_Retiree] = []
        self._unenforced: dict[tuple[str, str], str] = {}
        """(responder, target) -> why an add was given up; gone once it is applied or lifted."""
        """Responders removed from the config whose enforcements are to be lifted (a
        failed withdrawal waits here for its retry)."""
        self._retired: set[str] = set()
        """Names of this runner's own responders that were withdrawn: out of the active
        set, they get no operation, retry or health check (which could rebuild what the
        withdrawal lifted)."""
        self._withdrawals: dict[tuple[str, str], int] = {}
        """(responder, result) -> withdrawals tried."""
        self._dormant: dict[str, _Counts] = {}
        """The counters of responders an earlier runner had and this one has not (removed
        at a reload), by name: one added again at a later reload goes on counting."""
        self._streak = 0
        """Operations dropped since the queue was last found with room (0: no streak)."""
        self.keep_held = False
        """True: a reconcile adds what the responders lack and lifts nothing they hold
        (:meth:`Responder.reconcile_adding`): the ledger is not the whole truth this run
        (unreadable at start, or in memory); lifts of ended enforcements still run."""

    def carry_over(self, previous: ResponderRunner) -> None:
        """Go on counting from ``previous`` (the worker this one replaces at a reload,
        stopped): counters never go back while the process runs. Its withdrawals (most of
        which a reload makes just before it is replaced), dropped and skipped operations,
        and each responder's operations,
        batches and repairs, under the responder's name: those of a responder this runner
        has too go on in it, the others are kept for a later reload that adds it again.
        Its marks of what is not enforced carry over for the responders this runner has
        (the reconcile queued at the reload clears those it gets through), so a ban
        refused for good is not counted given up again at each reload."""
        with previous._lock:
            carried = dict(previous._withdrawals)
            marks = dict(previous._unenforced)
            dropped, skipped = dict(previous._dropped), previous._skipped_simulated
            counts = {name: c.counters(0) for name, c in previous._dormant.items()}
            for responder in previous.responders:
                counts[responder.name] = previous._counts[responder.name].counters(
                    responder.repairs
                )
        with self._lock:
            for kind, n in dropped.items():
                self._dropped[kind] += n
            self._skipped_simulated += skipped
            for key, n in carried.items():
                self._withdrawals[key] = self._withdrawals.get(key, 0) + n
            for name, c in counts.items():
                if name in self._counts:
                    self._counts[name] = c
                else:
                    self._dormant[name] = c
            for (name, target), why in marks.items():
                if name in self._counts:
                    self._unenforced.setdefault((name, target), why)
        old = {r.name: r for r in previous.responders}
        for responder in self.responders:
            was = old.get(responder.name)
            if was is not None and was is not responder:
                responder.carry_over(was)

    # ------------------------------------------------------------------ submitting

    def submit(self, decision: Decision) -> None:
        """Queue the enforcement of a ban, throttle or freeze; never blocks.

        Alerts, NONE and simulated decisions are ignored (simulated ones counted).
        """
        if decision.simulated and decision.action.enforces:
            with self._lock:
                self._skipped_simulated += 1
            return
        if _enforceable(decision):
            self._enqueue(_Item(Operation.ADD, decision, (), self.clock.monotonic()))

    def submit_expired(self, decisions: Iterable[Decision]) -> None:
        """Queue lifting expired (or manually lifted) enforcements; skips simulated ones."""
        mono, now = self.clock.monotonic(), self.clock.now()
        with self._wake:
            for decision in decisions:
                if _enforceable(decision):
                    expired = (decision.expires_at or 0.0) <= now
                    kind = _LIFT_EXPIRED if expired else _LIFT
                    self._put(_Item(Operation.DELETE, decision, (), mono), kind)
            self._wake.notify_all()

    def reconcile(self, active: Iterable[Decision]) -> None:
        """Queue making every responder hold exactly the enforceable decisions in ``active``.

        It replaces the responder's earlier queued adds, deletes and retries (the
        reconcile covers them). Enforcements that expire while a reconcile waits for
        its retry are left out of the retry.
        """
        now = self.clock.now()
        wanted = tuple(d for d in active if _enforceable(d) and (d.expires_at or 0.0) > now)
        self._enqueue(_Item(Operation.RECONCILE, None, wanted, self.clock.monotonic()))

    def withdraw(
        self,
        responders: Iterable[Responder],
        on_lifted: Callable[[Responder], None] | None = None,
    ) -> None:
        """Queue lifting every enforcement of ``responders`` (removed from the config:
        :meth:`Responder.withdraw`), ahead of everything else queued. Each is closed
        once lifted, unless it is one of this runner's own (closed with the runner).
        ``on_lifted(responder)`` is called on the worker thread once it succeeded (the
        daemon then forgets it in ``responders.json``). A failed withdrawal is retried
        with the usual back-off (capped, never given up) until it succeeds or the runner
        closes.

        One of this runner's own leaves the active set at once: its queued operations
        and retries are dropped and it gets no further batch or health check, so
        nothing puts back what the withdrawal lifts."""
        with self._wake:
            for responder in responders:
                self._retiring.append(_Retiree(responder, on_lifted))
                if self._own(responder):
                    self._retired.add(responder.name)
            self._drop_retired()
            self._wake.notify_all()

    def _own(self, responder: Responder) -> bool:
        return any(r is responder for r in self.responders)

    def _active(self) -> tuple[Responder, ...]:
        """This runner's responders that were not withdrawn."""
        with self._lock:
            retired = set(self._retired)
        return tuple(r for r in self.responders if r.name not in retired)

    def refusals(self, net: IPNetwork) -> list[str]:
        """``RESPONDER: why`` for each responder (not withdrawn) that enforces bans and
        whose config makes it refuse a ban of ``net`` for good (:meth:`Responder.refusal`)."""
        out = []
        for responder in self._active():
            if Action.BAN not in responder.handles:
                continue
            why = responder.refusal(net)
            if why is not None:
                out.append(f"{responder.name}: {why}")
        return out

    def _untried(self) -> bool:
        """Whether a withdrawal waits for its first try (lock held)."""
        return any(r.attempts == 0 for r in self._retiring)

    def _drop_retired(self) -> None:
        """Forget the retries of withdrawn responders (lock held)."""
        for key in [k for k in self._pending if k[0] in self._retired]:
            del self._pending[key]

    def _enqueue(self, item: _Item) -> None:
        with self._wake:
            if item.op is Operation.RECONCILE:
                self._covered()
            self._put(item, _ADD if item.op is Operation.ADD else None)
            self._wake.notify_all()

    def _put(self, item: _Item, kind: str | None) -> None:
        """Queue ``item`` (lock held); past the bound, drop queued adds and lifts in the
        order of :data:`_DROP_ORDER` (a reconcile is never dropped, and is allowed past
        the bound: it replaces what it covers)."""
        seq = self._seq = self._seq + 1
        self._queue[seq] = item
        if kind is not None:
            self._victims[kind].append(seq)
        if len(self._queue) <= self.queue_size:
            if self._streak:
                log.info("responder queue has room again", dropped=self._streak)
                self._streak = 0
            return
        while len(self._queue) > self.queue_size and self._drop_one():
            pass

    def _drop_one(self) -> bool:
        """Drop the queued operation whose loss costs least (lock held): a lift of an
        expired ban (a timeout in the kernel lifts it too), a manual lift (never with
        :attr:`keep_held`: no reconcile would lift it then; the lifts queued are at most
        the bans that were in force), an add (the reconcile it asks for puts it back);
        counted, and the next reconcile is wanted at once. ``False`` when nothing can
        be dropped."""
        order = (_LIFT_EXPIRED, _ADD) if self.keep_held else _DROP_ORDER
        for kind in order:
            victims = self._victims[kind]
            while victims:
                dropped = self._queue.pop(victims.popleft(), None)
                if dropped is None:
                    continue  # gone already: covered by a reconcile
                self._dropped[kind] += 1
                self._streak += 1
                self._resync = True
                if self._streak == 1:
                    log.error(
                        "responder queue full; queued operations are dropped (counted in "
                        "aisentinel_responder_queue_dropped_total) and a reconcile is "
                        "queued at once to restore them",
                        queue_size=self.queue_size,
                        operation=kind,
                    )
                return True
        return False

    def _covered(self) -> None:
        """Take out of the queue what a reconcile queued now covers (lock held), as
        :meth:`_fold` would: everything, but with :attr:`keep_held` the lifts no later
        add cancels."""
        last: dict[str, Operation] = {}
        if self.keep_held:
            for item in self._queue.values():
                if item.decision is not None and item.op is not Operation.RECONCILE:
                    last[_target_text(item.decision)] = item.op
        kept = {
            seq: item
            for seq, item in self._queue.items()
            if item.op is Operation.DELETE
            and item.decision is not None
            and last.get(_target_text(item.decision)) is Operation.DELETE
        }
        self._queue = kept
        for victims in self._victims.values():
            live = [seq for seq in victims if seq in kept]
            victims.clear()
            victims.extend(live)

    def resync_wanted(self) -> bool:
        """Whether operations were dropped since the last call: the caller (the daemon's
        loop) then queues a reconcile at once, which restores them."""
        with self._lock:
            wanted, self._resync = self._resync, False
            return wanted

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        """Start the worker thread (once); from then on it enforces what is queued."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="aisentinel-responders", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wake:
                while (
                    not self._queue
                    and not self._untried()
                    and not self._stopping
                    and not self._timers_due()
                ):
                    self._wake.wait(self._idle_wait())
                if self._stopping and not self._queue and not self._untried():
                    return
            try:
                self.tick()
            except Exception:  # a bug here must not kill enforcement for good
                log.exception("responder worker cycle failed")

    def _timers_due(self) -> bool:
        """Whether a retry or a health check is due (lock held)."""
        mono = self.clock.monotonic()
        if self._next_health is None or mono >= self._next_health:
            return True
        if any(r.due <= mono for r in self._retiring):
            return True
        return any(job.due <= mono for job in self._pending.values())

    def _idle_wait(self) -> float:
        """Seconds to sleep before the next timer (lock held), at most IDLE_WAIT_SECONDS."""
        mono = self.clock.monotonic()
        dues = [job.due for job in self._pending.values()]
        dues += [r.due for r in self._retiring]
        if self._next_health is not None:
            dues.append(self._next_health)
        if not dues:
            return IDLE_WAIT_SECONDS
        return min(max(min(dues) - mono, 0.01), IDLE_WAIT_SECONDS)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything queued has been tried.

        Retries scheduled for later (withdrawals included) do not count. Without the
        thread, runs one cycle here. Returns whether the queue was emptied and no batch
        is in flight.
        """
        if not self.running:
            self.tick()
            with self._lock:
                return not self._queue and not self._untried()
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._untried() or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread (waiting up to ``timeout`` seconds) and close every responder.

        Queued operations and retries still waiting are dropped with a warning. When
        the thread is stuck in a responder call, the responders are left as they are
        (the thread is a daemon thread and ends with the process).
        """
        thread = self._thread
        with self._wake:
            self._stopping = True
            dropped = len(self._queue)
            self._queue = {}
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error(
                    "responder worker still busy in a responder call at shutdown; left behind",
                    waited_seconds=timeout,
                )
                return
        with self._lock:
            dropped += len(self._pending)
            self._pending.clear()
            retiring, self._retiring = self._retiring, []
        for retiree in retiring:
            responder = retiree.responder
            log.warning(
                "responder removed from the config; its enforcements were not lifted before "
                "the worker stopped: it stays in responders.json, the next start or reload "
                "tries again",
                responder=responder.name,
                attempts=retiree.attempts,
            )
            if not retiree.attempts:
                self._count_withdrawal(responder.name, "failed")
            if not self._own(responder):
                self._close(responder)
        if dropped:
            log.warning("responder operations dropped at shutdown", count=dropped)
        for responder in self.responders:
            self._close(responder)

    @staticmethod
    def _close(responder: Responder) -> None:
        try:
            responder.close()
        except Exception:  # one failing close must not stop the others
            log.exception("responder close failed", responder=responder.name)

    # ------------------------------------------------------------------ one cycle

    def tick(self, now: float | None = None) -> int:
        """Run one cycle: the queued operations and the due retries as one batch per
        responder, then the health checks if due. Returns how many operations were tried.

        ``now`` is wall-clock epoch seconds (default: the clock's ``now()``); it
        decides which queued enforcements expired meanwhile. Retry delays and the
        health interval run on the clock's ``monotonic()``, so a wall-clock jump
        neither stalls nor floods the retries. The worker thread calls it; call it
        directly only when the thread is not started.
        """
        with self._cycle_lock:
            with self._lock:
                items = list(self._queue.values())
                self._queue = {}
                for victims in self._victims.values():
                    victims.clear()
                mono = self.clock.monotonic()
                retiring = [r for r in self._retiring if r.due <= mono]
                self._retiring = [r for r in self._retiring if r.due > mono]
                self._busy = True
            try:
                for retiree in retiring:
                    self._withdraw(retiree)
                return self._cycle(items, self.clock.now() if now is None else now)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _cycle(self, items: list[_Item], wall: float) -> int:
        active = self._active()
        batches: dict[str, dict[str | None, _Job]] = {r.name: {} for r in active}
        for item in items:
            for responder in active:
                self._fold(batches[responder.name], responder, item)
        mono = self.clock.monotonic()
        with self._lock:
            self._drop_retired()  # a retry a batch in flight at withdraw() scheduled
            due = sorted((j for j in self._pending.values() if j.due <= mono), key=lambda j: j.due)
            for job in due:
                del self._pending[job.key]
        for job in due:
            decision = job.decision
            if job.op is Operation.ADD and decision and (decision.expires_at or 0.0) <= wall:
                log.info(
                    "retry dropped: the enforcement expired meanwhile",
                    responder=job.responder.name,
                    target=job.target,
                )
                continue
            if job.op is Operation.RECONCILE:
                job.active = {t: d for t, d in job.active.items() if (d.expires_at or 0.0) > wall}
            batches[job.responder.name].setdefault(job.target, job)
        tried = 0
        for responder in active:
            jobs = list(batches[responder.name].values())
            tried += len(jobs)
            if jobs:
                self._apply(responder, jobs)
        if self._next_health is None or mono >= self._next_health:
            self._next_health = mono + self.health_interval
            self.check_health()
        return tried

    def _fold(self, batch: dict[str | None, _Job], responder: Responder, item: _Item) -> None:
        """Add ``item`` to one responder's batch: newest per target wins, a reconcile
        replaces what came before it and absorbs what comes after."""
        name = responder.name
        if item.op is Operation.RECONCILE:
            # An adding-only reconcile lifts nothing: the lifts queued stay.
            def covered(job: _Job) -> bool:
                return not (self.keep_held and job.op is Operation.DELETE)

            with self._lock:
                for stale in [k for k, j in self._pending.items() if k[0] == name and covered(j)]:
                    del self._pending[stale]
            lifts = {key: job for key, job in batch.items() if not covered(job)}
            batch.clear()
            active = {
                d.target.text: d
                for d in item.active
                if d.target is not None and d.action in responder.handles
            }
            batch[None] = _Job(responder, Operation.RECONCILE, None, active=active)
            batch.update(lifts)
            return
        decision = item.decision
        if decision is None or decision.target is None or decision.action not in responder.handles:
            return
        key = decision.target.text
        with self._lock:
            self._pending.pop((name, key), None)
            waiting = self._pending.get((name, None))
        for job in (batch.get(None), waiting):
            if job is not None:  # a reconcile: keep its snapshot current instead
                if item.op is Operation.ADD:
                    job.active[key] = decision
                else:
                    job.active.pop(key, None)
        if None in batch and (item.op is Operation.ADD or not self.keep_held):
            # An adding-only reconcile lifts nothing: a lift stays a job of its own,
            # and runs after the reconcile, so a later add must cancel it here.
            batch.pop(key, None)
            return
        batch.pop(key, None)
        batch[key] = _Job(responder, item.op, key, decision=decision)

    def _apply(self, responder: Responder, jobs: list[_Job]) -> None:
        """Run one responder's batch: a reconcile first (it covers what was queued before
        it), unless it goes on after a slice (then the adds and lifts queued meanwhile go
        first: a new ban never waits for a long reconcile)."""
        reconcile = next((j for j in jobs if j.op is Operation.RECONCILE), None)
        resumed = reconcile is not None and reconcile.resumed
        if reconcile is not None and not resumed:
            self._reconcile(responder, reconcile)
        adds = [j for j in jobs if j.op is Operation.ADD]
        deletes = [j for j in jobs if j.op is Operation.DELETE]
        if adds or deletes:
            failure = self._call(responder, Operation.ADD, [*adds, *deletes], (), deletes=deletes)
            with self._lock:
                self._counts[responder.name].batches["ok" if failure is None else "failed"] += 1
            self._settle(responder, [*adds, *deletes], failure)
        if reconcile is not None and resumed:
            self._reconcile(responder, reconcile)

    def _reconcile(self, responder: Responder, job: _Job) -> None:
        """One reconcile call; one that made a slice and has more goes on in the next
        cycle, at once (no back-off, no attempt counted)."""
        active = sorted(job.active.values(), key=lambda d: d.target.text if d.target else "")
        failure = self._call(responder, job.op, [job], active)
        if failure is None or not failure.unfinished:
            self._settle(responder, [job], failure)
            return
        with self._lock:
            self._refused(responder.name, job, failure.refused)
            job.resumed = True
            job.due = self.clock.monotonic()
            self._pending[job.key] = job
        log.debug("responder reconcile goes on", responder=responder.name, left=failure.error)

    def _call(
        self,
        responder: Responder,
        op: Operation,
        jobs: list[_Job],
        active: Sequence[Decision],
        *,
        deletes: Sequence[_Job] = (),
    ) -> _Failure | None:
        """One transaction on ``responder``; ``None`` on success, else how it failed.

        For adds and deletes: ``add_many``, ``delete_many``, ``commit`` (``discard``
        after a failure). Never raises.
        """
        try:
            if op is Operation.RECONCILE and self.keep_held:
                responder.reconcile_adding(active)
            elif op is Operation.RECONCILE:
                responder.reconcile(active)
            else:
                adds = [j.decision for j in jobs if j.op is Operation.ADD and j.decision]
                if adds:
                    responder.add_many(adds)
                gone = [j.decision for j in deletes if j.decision is not None]
                if gone:
                    responder.delete_many(gone)
                responder.commit()
        except ReconcileUnfinishedError as exc:
            if op is Operation.RECONCILE:
                return _Failure(str(exc), frozenset(), exc.refused, unfinished=True)
            self._discard(responder, op)
            return _Failure(str(exc), exc.failed, exc.refused)
        except PartialError as exc:
            self._discard(responder, op)
            return _Failure(str(exc), exc.failed, exc.refused)
        except ResponderError as exc:
            self._discard(responder, op)
            return _Failure(str(exc))
        except Exception as exc:  # a bug in one backend must not stop the others
            log.exception(
                "responder raised unexpectedly",
                responder=responder.name,
                operation=op.value if op is Operation.RECONCILE else "batch",
            )
            self._discard(responder, op)
            return _Failure(f"{type(exc).__name__}: {exc}")
        return None

    def _withdraw(self, retiree: _Retiree) -> None:
        """Lift what a removed responder enforces (counted; the first failure logged as
        an error). On success call ``on_lifted`` and close the responder unless it is one
        of this runner's own; on failure schedule a retry with back-off. Never raises."""
        responder = retiree.responder
        retiree.attempts += 1
        try:
            lifted = responder.withdraw()
        except ResponderError as exc:
            self._withdraw_failed(retiree, str(exc))
            return
        except Exception as exc:  # a bug in one backend must not stop the worker
            log.exception("responder withdraw raised unexpectedly", responder=responder.name)
            self._withdraw_failed(retiree, f"{type(exc).__name__}: {exc}", logged=True)
            return
        log.warning(
            "responder removed from the config; its enforcements lifted",
            responder=responder.name,
            lifted=lifted,
            **({"attempts": retiree.attempts} if retiree.attempts > 1 else {}),
        )
        self._count_withdrawal(responder.name, "ok")
        if retiree.on_lifted is not None:
            try:
                retiree.on_lifted(responder)
            except Exception:
                log.exception("responder withdrawal callback failed", responder=responder.name)
        if not self._own(responder):
            self._close(responder)

    def _withdraw_failed(self, retiree: _Retiree, error: str, *, logged: bool = False) -> None:
        """Count a failed withdrawal, log it (the first time) and schedule its retry."""
        responder = retiree.responder
        self._count_withdrawal(responder.name, "failed")
        delay = self._delay(retiree.attempts)
        if retiree.attempts == 1 and not logged:
            log.error(
                "responder removed from the config, but lifting its enforcements failed: "
                "retried with back-off, and at the next start (see docs/enforcement.md)",
                responder=responder.name,
                owns=responder.config.owns() or None,
                error=error,
                retry_in=delay,
            )
        else:
            log.debug(
                "responder withdrawal failed again",
                responder=responder.name,
                attempts=retiree.attempts,
                error=error,
            )
        with self._wake:
            retiree.due = self.clock.monotonic() + delay
            self._retiring.append(retiree)
            self._wake.notify_all()

    def _count_withdrawal(self, name: str, result: str) -> None:
        with self._lock:
            key = (name, result)
            self._withdrawals[key] = self._withdrawals.get(key, 0) + 1

    @staticmethod
    def _discard(responder: Responder, op: Operation) -> None:
        if op is Operation.RECONCILE:
            return
        try:
            responder.discard()
        except Exception:
            log.exception("responder discard failed", responder=responder.name)

    def _settle(self, responder: Responder, jobs: list[_Job], failure: _Failure | None) -> None:
        """Count the outcome of one transaction for its jobs; schedule retries (of the
        jobs that failed, when the responder said which)."""
        counts = self._counts[responder.name]
        given_up: list[tuple[_Job, str]] = []
        recovered: list[_Job] = []
        failed: list[_Job] = []
        with self._lock:
            for job in jobs:
                if job.attempts:
                    counts.retried[job.op] += 1
                job.attempts += 1
                if failure is None or not failure.hit(job):
                    counts.ok[job.op] += 1
                    self._enforced(responder.name, job, failure.refused if failure else ())
                    if job.attempts > 1:
                        recovered.append(job)
                    continue
                counts.failed[job.op] += 1
                failed.append(job)
                if job.target is not None and job.target in failure.refused:
                    counts.given_up[job.op] += 1
                    given_up.append((job, _REFUSED_WHY))
                    continue
                full = len(self._pending) >= self.max_pending
                if job.attempts < self.max_attempts and not full:
                    job.due = self.clock.monotonic() + self._delay(job.attempts)
                    self._pending[job.key] = job
                    continue
                counts.given_up[job.op] += 1
                given_up.append((job, "retry queue full" if full else "too many failures"))
        if failure is not None and failed:
            log.warning(
                "responder operation failed",
                responder=responder.name,
                operations=len(failed),
                operation=failed[0].op.value if len(failed) == 1 else "batch",
                target=failed[0].target if len(failed) == 1 else None,
                attempt=max(j.attempts for j in failed),
                error=failure.error,
            )
        for job in recovered:
            log.info(
                "responder operation succeeded on retry",
                responder=responder.name,
                operation=job.op.value,
                target=job.target,
                attempts=job.attempts,
            )
        with self._lock:
            for job, why in given_up:
                if job.target is None:
                    continue
                if job.op is Operation.ADD:
                    self._unenforced[responder.name, job.target] = f"given up: {why}"
                else:  # a lift: the ban is over either way
                    self._unenforced.pop((responder.name, job.target), None)
            for job in jobs:  # what a reconcile met refused is not enforced either
                if job.op is Operation.RECONCILE and failure is not None:
                    self._refused(responder.name, job, failure.refused)
        for job, why in given_up:
            log.error(
                "responder operation given up",
                responder=responder.name,
                operation=job.op.value,
                target=job.target,
                attempts=job.attempts,
                reason=why,
            )

    def _enforced(self, name: str, job: _Job, refused: Iterable[str] = ()) -> None:
        """Forget what was given up for ``job``'s target(s) now that it went through
        (caller holds the lock); a reconcile covers every target it was given but those
        it met ``refused``."""
        if job.target is not None:
            self._unenforced.pop((name, job.target), None)
            return
        for target in job.active.keys() - set(refused):
            self._unenforced.pop((name, target), None)

    def _refused(self, name: str, job: _Job, refused: frozenset[str]) -> None:
        """Mark the targets a reconcile met refused for good as not enforced (caller
        holds the lock); each is counted given up once, when it gets the mark (not again
        at every reconcile that meets it refused)."""
        for target in refused & job.active.keys():
            if self._unenforced.get((name, target)) != _REFUSED:
                self._counts[name].given_up[job.op] += 1
                self._unenforced[name, target] = _REFUSED

    def unenforced(self, decision: Decision) -> list[str]:
        """``RESPONDER: why`` for each responder that does not enforce ``decision`` now:
        it gave its add up (until a later add or reconcile gets it through), or its last
        health check failed. Empty for a simulated decision."""
        if decision.simulated or decision.target is None:
            return []
        target = decision.target.text
        out: list[str] = []
        for responder in self._active():
            if decision.action not in responder.handles:
                continue
            with self._lock:
                why = self._unenforced.get((responder.name, target))
                health = self._counts[responder.name].health
            if why is not None:
                out.append(f"{responder.name}: {why}")
            elif health is not None and not health.ok:
                out.append(f"{responder.name}: failing ({health.detail})")
        return out

    def _delay(self, failures: int) -> float:
        return min(self.backoff * 2.0 ** min(failures - 1, 62), self.backoff_cap)

    # ------------------------------------------------------------------ health, stats

    def check_health(self) -> dict[str, ResponderHealth]:
        """Ask every responder for its health now (the withdrawn ones excepted: a repair
        would rebuild what was lifted); a raising check counts as unhealthy."""
        out: dict[str, ResponderHealth] = {}
        for responder in self._active():
            try:
                health = responder.health()
            except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
                health = ResponderHealth(ok=False, detail=f"health check raised: {exc}")
            counts = self._counts[responder.name]
            if counts.health is None and not health.ok:
                # Unhealthy from the start (ufw inactive, fail2ban-server not running):
                # there is no change to report, so say it once here.
                log.warning(
                    "responder unhealthy; its enforcements may not take effect",
                    responder=responder.name,
                    detail=health.detail,
                )
            elif counts.health is not None and counts.health.ok != health.ok:
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

    def queued(self) -> tuple[int, float]:
        """Operations queued for the thread, and the age in seconds of the oldest (0 if none)."""
        with self._lock:
            depth = len(self._queue)
            oldest = next(iter(self._queue.values())).queued_at if self._queue else None
        return depth, 0.0 if oldest is None else max(0.0, self.clock.monotonic() - oldest)

    @property
    def dropped(self) -> int:
        """Queued operations dropped because the queue was full."""
        with self._lock:
            return sum(self._dropped.values())

    def dropped_by_kind(self) -> dict[str, int]:
        """Queued operations dropped because the queue was full, by kind
        (:data:`_DROP_ORDER`)."""
        with self._lock:
            return dict(self._dropped)

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
                    batches=MappingProxyType(dict(c.batches)),
                    repairs=r.repairs + c.repairs,
                )
                for r in self.responders
                for c in (self._counts[r.name],)
            ]

    @property
    def skipped_simulated(self) -> int:
        """Simulated enforcements that were submitted and, as they should be, not enforced."""
        with self._lock:
            return self._skipped_simulated

    def collect(self) -> Iterator[Metric]:
        """The worker's metric families, built now from the state it keeps."""
        ops = CounterMetricFamily(
            "aisentinel_responder_operations",
            "Responder calls, per responder, operation and result (ok, failed, retried, given_up).",
            labels=["responder", "operation", "result"],
        )
        batches = CounterMetricFamily(
            "aisentinel_responder_batches",
            "Add/delete batches committed, per responder and result (ok, failed).",
            labels=["responder", "result"],
        )
        pending = GaugeMetricFamily(
            "aisentinel_responder_pending_retries",
            "Failed operations queued for retry.",
            labels=["responder"],
        )
        up = GaugeMetricFamily(
            "aisentinel_responder_up",
            "1 when the responder's last health check passed.",
            labels=["responder"],
        )
        repairs = CounterMetricFamily(
            "aisentinel_responder_repairs",
            "Times the responder found what it enforces damaged from outside (nftables: "
            "its table flushed, deleted or its rules changed) and re-created it.",
            labels=["responder"],
        )
        stats = self.stats()
        enabled = GaugeMetricFamily(
            "aisentinel_responders_enabled",
            "Responders enabled (dry-run included); 0: nothing is enforced, decisions are "
            "only logged and kept in the ledger.",
        )
        enabled.add_metric([], len(stats))
        for st in stats:
            for result, table in (
                ("ok", st.ok),
                ("failed", st.failed),
                ("retried", st.retried),
                ("given_up", st.given_up),
            ):
                for op, n in table.items():
                    ops.add_metric([st.name, op.value, result], n)
            for result, n in st.batches.items():
                batches.add_metric([st.name, result], n)
            pending.add_metric([st.name], st.pending)
            up.add_metric([st.name], 1 if st.health is None or st.health.ok else 0)
            repairs.add_metric([st.name], st.repairs)
        yield from (enabled, ops, batches, pending, up, repairs)
        depth, age = self.queued()
        queue = GaugeMetricFamily(
            "aisentinel_responder_queue_depth",
            "Decisions queued for the responder worker thread.",
        )
        queue.add_metric([], depth)
        oldest = GaugeMetricFamily(
            "aisentinel_responder_queue_oldest_seconds",
            "Age of the oldest queued decision (0 when the queue is empty).",
        )
        oldest.add_metric([], age)
        dropped = CounterMetricFamily(
            "aisentinel_responder_queue_dropped",
            "Queued operations dropped because the queue was full, per operation (add; "
            "delete_expired: the lift of an expired ban; delete: a manual lift); a "
            "reconcile is queued at once to restore them.",
            labels=["operation"],
        )
        for kind, n in self.dropped_by_kind().items():
            dropped.add_metric([kind], n)
        withdrawals = CounterMetricFamily(
            "aisentinel_responder_withdrawals",
            "Responders removed from the config whose enforcements were lifted, per "
            "responder and result (ok, failed).",
            labels=["responder", "result"],
        )
        with self._lock:
            for (name, result), n in sorted(self._withdrawals.items()):
                withdrawals.add_metric([name, result], n)
        yield from (queue, oldest, dropped, withdrawals)
