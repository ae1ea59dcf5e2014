"""The source contract: something that reads logs and hands them on in batches.

A source owns its reader thread(s). ``start(emit)`` returns at once; from then on
the source calls ``emit`` from its own thread, in order, one batch at a time, with
either kind of :data:`~aisentinel.events.Batch`:

* :class:`~aisentinel.events.LineBatch`: text lines, parsed by the parser the batch
  names (a line source has a ``parser`` key, e.g. the file source);
* :class:`~aisentinel.events.EventBatch`: typed events the source made itself from
  structured records (the journald source); such a source names no parser, and
  ``config.py`` refuses a ``parser`` key on it.

``emit`` is thread-safe and never blocks
for long (the pipeline queues). ``stop()`` stops the threads, saves the read
position and returns within a second or two. A source never raises out of its
thread: failures are logged, counted in :class:`SourceStats` and retried. Each
source reports its own metrics (:meth:`Source.collect`, at scrape time, from
:class:`SourceStats`).

Acknowledged delivery: a consumer that queues batches (the daemon) sets
:attr:`Source.acks` before ``start``; each batch then carries a number (``seq``), the
consumer calls :meth:`Source.ack` once it has processed it, and the position a source
saves only ever covers acknowledged batches (:class:`Checkpoints`), so a crash loses
nothing that was queued. Without it (a source used on its own), a batch counts as
processed once ``emit`` returns.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Generic, Literal, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from aisentinel.clock import Clock
from aisentinel.configtypes import StrictModel
from aisentinel.events import Batch
from aisentinel.metrics import counter, gauge
from aisentinel.parsers import names as parser_names
from aisentinel.registry import Registry

Emit = Callable[[Batch], None]

ACK_WAIT_SECONDS = 3.0
"""Most ``stop()`` waits, once its reader has ended, for the batches it handed on to be
acknowledged (the daemon keeps processing the queue meanwhile)."""

_BATCH_NUMBERS = itertools.count(1)
"""Numbers of acknowledged batches: unique in the process and increasing, so a batch
of a source stopped at a reload is never taken for one of its successor's."""

P = TypeVar("P")

SourceState = Literal["following", "waiting", "degraded", "error", "stopped"]
"""What a source is doing, for machines (the exporter's ``aisentinel_source_state``).

* ``following``: everything it reads is open and followed (``up``);
* ``degraded``: following, but something beside the reading failed, e.g. read positions
  cannot be loaded or saved, so a restart may re-read or skip lines (still ``up``);
* ``waiting``: a configured log (or every match of a pattern) is missing; it is watched
  for and read from its beginning once it appears (not ``up``);
* ``error``: something it must read cannot be opened or read; retried (not ``up``);
* ``stopped``: not started, stopped, or disabled (not ``up``).
"""

SOURCE_STATES: Final[tuple[SourceState, ...]] = (
    "following",
    "waiting",
    "degraded",
    "error",
    "stopped",
)


class SourceConfigBase(StrictModel):
    """Keys every ``[[sources]]`` table has; plug-ins subclass it with their own keys.

    A source of lines adds a ``parser`` key (see :func:`parser_name`); a source of
    events has none.
    """

    name: str
    type: str


def parser_name(value: str) -> str:
    """``value`` if it names a registered parser or ``auto``; else why not, listing them.

    For a line source's ``parser`` field (an ``AfterValidator``): the names come from
    the parser registry, so a new parser needs no change here.
    """
    known = parser_names(auto=True)
    if value not in known:
        raise ValueError(f"unknown parser {value!r}; known: {', '.join(known)}")
    return value


@dataclass(slots=True)
class SourceStats:
    """Counters a source keeps; the exporter reads them at scrape time.

    Written only by the source's own thread; read (without a lock) by the exporter,
    which tolerates a slightly stale value. ``up`` is True exactly when ``state`` is
    ``following`` or ``degraded``; ``reason`` says why in words (paths included: it is
    for logs and people, never a metric label); ``detail`` maps each configured path or
    pattern to what is happening with it (``open``, ``waiting``, or an error).
    """

    lines_read: int = 0
    """Items read and handed on: lines, or records (journal entries) for an event source."""
    lines_dropped: int = 0
    """Items read but not processed: their batch was handed on while the pipeline was
    closing (shutdown) and could not take it (not acknowledged: read again next start)."""
    bytes_read: int = 0
    lines_truncated: int = 0
    rotations: int = 0
    errors: int = 0
    up: bool = False
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    last_error: str = ""
    position_errors: int = 0
    """Failures to load or save read positions (the source keeps reading)."""
    gaps: int = 0
    """Stretches of log that could not be read (a rotated file gone or unreadable)."""
    state: SourceState = "stopped"
    reason: str = "not started"
    detail: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "lines_read",
        "lines_dropped",
        "bytes_read",
        "lines_truncated",
        "rotations",
        "errors",
        "position_errors",
        "gaps",
    )
    """The monotonic counters (exported as ``_total``), carried by :meth:`carry_over`."""

    def carry_over(self, old: SourceStats) -> None:
        """Add the counters of ``old``: a source rebuilt at a reload goes on counting
        where its predecessor of the same name stopped (counters never go back)."""
        for name in self.COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(old, name))

    def set_state(self, state: SourceState, reason: str) -> bool:
        """Set ``state``, ``reason`` and ``up`` together; True if state or reason changed."""
        changed = state != self.state or reason != self.reason
        self.reason = reason
        self.state = state
        self.up = state in ("following", "degraded")
        return changed


def merge_counts(
    into: dict[tuple[str, str], list[float]], old: dict[tuple[str, str], list[float]]
) -> None:
    """Add ``old``'s ``[count, last seen]`` series to ``into`` (a source's Xid counts,
    carried over a reload)."""
    for key, (count, last) in old.items():
        entry = into.setdefault(key, [0.0, 0.0])
        entry[0] += count
        entry[1] = max(entry[1], last)


class Checkpoints(Generic[P]):
    """Read positions of one source, each savable once the batches before it are processed.

    The source thread :meth:`add` s a position taken between two batches (every line
    before it handed on), tagged with the number of the last batch handed on; it may be
    saved once that batch is acknowledged (:meth:`settled`). Without acknowledgements
    both numbers stay 0 and a position is savable at once. At most ``LIMIT`` wait: past
    it the newest replaces the last (saving later, never past an unprocessed line).
    """

    LIMIT: ClassVar[int] = 64

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: deque[tuple[int, P]] = deque()

    def add(self, position: P, emitted: int) -> None:
        """Record ``position``, taken after batch number ``emitted`` was handed on."""
        pending = self._pending
        if pending and (pending[-1][0] == emitted or len(pending) >= self.LIMIT):
            pending[-1] = (emitted, position)
        else:
            pending.append((emitted, position))

    def settled(self, acked: int) -> P | None:
        """The newest position whose batches are all processed (up to number ``acked``),
        forgetting it and older ones; None when there is none (yet)."""
        pending = self._pending
        best: P | None = None
        while pending and pending[0][0] <= acked:
            best = pending.popleft()[1]
        return best


class Source(ABC):
    """A running log source. Subclasses register with ``REGISTRY`` in their module."""

    def __init__(self, config: SourceConfigBase, *, clock: Clock, state_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.state_dir = state_dir
        self.stats = SourceStats()
        self.acks = False
        """Set (before :meth:`start`) by a consumer that calls :meth:`ack` for each
        numbered batch once processed: the saved position then never passes a batch
        not acknowledged. False: a batch counts as processed once ``emit`` returns."""
        self._emitted = 0
        """Number of the last batch handed on (0: none, or no acks); source thread."""
        self._acked = 0
        """Number of the last batch acknowledged; written by the consumer only."""
        self._acks_ended = False
        self._ack_wanted = False
        self._ack_event = threading.Event()

    @abstractmethod
    def start(self, emit: Emit) -> None:
        """Open what can be opened, start the reader thread(s), and return at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop reading, persist positions/cursors, join the threads."""

    def carry_over(self, old: Source) -> None:
        """Go on counting where ``old``, the source of the same name this one replaces at a
        reload, stopped: its stats (counters never go back); sources with counters of
        their own add them too."""
        self.stats.carry_over(old.stats)

    def request_stop(self) -> None:  # noqa: B027 - an optional hook; stop() still stops
        """Stop reading soon, without waiting (thread-safe; ``stop()`` must still follow).

        Called at shutdown from the source's own thread (inside ``emit``) or another one:
        the reader hands on no further batch once it sees it, and saves its position just
        past the last line handed on. The default does nothing.
        """

    def ready(self) -> bool:
        """True once the source has opened (or is watching for) everything it follows."""
        return True

    def notes(self) -> list[str]:
        """What it reads but cannot fully see, for ``aisentinel status`` (not a fault: the
        source is up); e.g. a GPU value NVML does not support. None by default."""
        return []

    def ack(self, seq: int) -> None:
        """The consumer has processed this source's batches up to number ``seq`` (it
        acknowledges them in the order they were handed on). One consumer thread."""
        if seq > self._acked:
            self._acked = seq
            if self._ack_wanted:
                self._ack_event.set()

    def acks_end(self) -> None:
        """The consumer acknowledges nothing more (it is closing): :meth:`stop` no longer
        waits; what is not acknowledged is read again at the next start."""
        self._acks_ended = True
        self._ack_event.set()

    def _number(self) -> int:
        """The number of the batch about to be handed on (0 without acks); source thread."""
        if not self.acks:
            return 0
        seq = self._emitted = next(_BATCH_NUMBERS)
        return seq

    def _await_acks(self, timeout: float = ACK_WAIT_SECONDS) -> bool:
        """Wait (on the source's clock, at most ``timeout``) until every batch handed on
        is acknowledged or the consumer ended acknowledging; True if all were."""
        clock = self.clock
        deadline = clock.monotonic() + timeout
        self._ack_wanted = True
        try:
            while self._acked < self._emitted and not self._acks_ended:
                left = deadline - clock.monotonic()
                if left <= 0:
                    break
                clock.wait(self._ack_event, left)
                self._ack_event.clear()
        finally:
            self._ack_wanted = False
        return self._acked >= self._emitted

    def collect(self) -> Iterator[Metric]:
        """This source's metric families, built from :attr:`stats` at scrape time."""
        st = self.stats
        labels = {"source": self.name}
        yield counter(
            "aisentinel_source_lines_read",
            "Lines (for an event source: records, e.g. journal entries) read from the source.",
            labels,
            st.lines_read,
        )
        yield counter(
            "aisentinel_source_lines_dropped",
            "Lines or records read but not processed: the pipeline was closing (shutdown) "
            "and could not take their batch.",
            labels,
            st.lines_dropped,
        )
        yield counter(
            "aisentinel_source_lines_truncated",
            "Lines cut at the line size cap.",
            labels,
            st.lines_truncated,
        )
        yield counter(
            "aisentinel_source_rotations", "Log rotations followed.", labels, st.rotations
        )
        yield counter("aisentinel_source_errors", "Read errors (retried).", labels, st.errors)
        yield from state_families(self.name, st.state)
        yield counter(
            "aisentinel_source_position_errors",
            "Failures to load or save read positions (reading goes on; a restart may "
            "skip or repeat lines).",
            labels,
            st.position_errors,
        )
        yield counter(
            "aisentinel_source_gaps",
            "Stretches of log not read: a file rotated while stopped that is gone or unreadable, "
            "or a file truncated with no copy of it found.",
            labels,
            st.gaps,
        )
        yield gauge(
            "aisentinel_source_lag_bytes", "Bytes written but not read yet.", labels, st.lag_bytes
        )
        yield gauge(
            "aisentinel_source_lag_seconds",
            "Age of the oldest unread data (lower bound), 0 when caught up.",
            labels,
            st.lag_seconds,
        )


def state_families(name: str, current: SourceState) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """``aisentinel_source_up`` and ``aisentinel_source_state`` of source ``name``
    in state ``current`` (also for a configured source that failed to start: ``error``)."""
    up = gauge(
        "aisentinel_source_up",
        "1 when every log the source reads is open and followed (a pattern: one match), else 0.",
        {"source": name},
        1 if current in ("following", "degraded") else 0,
    )
    state = GaugeMetricFamily(
        "aisentinel_source_state",
        "1 for the source's current state (following, degraded, waiting, error, "
        "stopped), 0 for the others; the reason is in the log.",
        labels=["source", "state"],
    )
    for value in SOURCE_STATES:
        state.add_metric([name, value], 1 if value == current else 0)
    return up, state


class UnstartedSource:
    """The metrics of a configured source that failed to start: not up, in ``error``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> Iterator[Metric]:
        """``up`` 0 and ``state`` error for the source."""
        yield from state_families(self.name, "error")


REGISTRY: Registry[type[Source]] = Registry("source")
"""Sources by name; each plug-in module registers itself in one line."""
