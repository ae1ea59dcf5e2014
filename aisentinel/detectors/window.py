"""Bounded per-key sliding windows: the detectors' only state.

Every store here maps a key (an address, a username, an API key id) to a small
fixed-size state and holds at most ``max_keys`` keys, so no input can grow memory
without limit. :class:`EventWindows`, :class:`MultiEventWindows` and
:class:`RecentSet` keep no object per key: a plain ``dict`` maps a key to a slot
number (int objects shared by every store, see :data:`_SLOT_NUMBERS`) and the state
lives in one flat ``array('d')`` per store, ``stride`` doubles a slot; slots of
dropped keys are reused. A hit is one dict lookup; it never reorders anything.

Which key goes first: second chance (the CLOCK approximation of least recently
seen; :class:`MultiEventWindows` keeps keys with several events apart from those with
one, see the class). Keys wait in a FIFO queue (a ``deque`` of the key strings) in the order
they were added or last re-queued; each slot records the key's newest event time
when it was queued. When the table is full, keys are taken from the front: a key
that has had a newer event since it was queued is re-queued at the back (its
second chance) and the first key that has not is evicted. Guarantee: the evicted
key has had no newer event since it was (re)queued, and every key that had a
newer event after that moment is kept; a key seen at least once per pass of the
queue is never evicted. Unlike exact LRU order, a key re-queued late may outlive
one whose last event came after the re-queued key's. Each hit can pay for at most
one re-queue, so eviction is amortised O(1).

``expire(now)`` walks the same queue from the front: it drops keys idle for longer
than the window, re-queues keys with a newer event since they were queued, and
stops at the first live key without one, so it costs O(dropped + re-queued).
A key idle past the window but queued behind that live key is dropped by a later
call (at the latest once the keys in front of it expire or are re-queued).
Arrays and dicts never shrink, so when expiry has left a quarter or less of a store
that has had :data:`COMPACT_MIN` keys or more, the store is rebuilt for the keys left
(``compact``: new slots in queue order, a new index; O(keys left), paid for by the
three quarters dropped before it): a drained flood gives its memory back.

Three counting schemes, each the cheapest that gives the detector its answer:

* :class:`EventWindows`: exact "``threshold`` events within ``window``". Per key it
  keeps only the last ``threshold`` timestamps, in a ring inside its slot (no
  per-event allocation, invisible to the garbage collector).
  The key crosses when the oldest of those is no older than ``window``.
  :class:`MultiEventWindows` answers the same for several ``(threshold, window)``
  pairs at once (a detector's long windows) with one key index, queue entry and slot
  per key and one ring of the last ``max(threshold)`` timestamps; it keeps a key as
  long as the longest window needs it, so it differs from one table per window only
  after expiry (and so in eviction order then), see the class.
* :class:`RateWindows`: request rates with large thresholds (hundreds per minute),
  where keeping every timestamp would cost kilobytes per key. Two generations of
  bucket counters shared by all keys (buckets aligned to the window, turned over
  for every key at once): per key a dict entry holding a small int in each of the
  last two buckets, and per event one dict lookup and store. The rate is the
  sliding-window estimate (the previous bucket's count weighted by its overlap
  with the window, plus the current bucket's count), computed only when the
  current count alone could reach the threshold. Exact for a burst inside one
  bucket; otherwise an estimate that assumes the previous bucket's events were
  spread evenly. It has no queue: keys idle for two buckets simply go, and a full
  table counts a new key from the next bucket on (see the class). With a threshold
  of 8 or more, once a bucket holds 4,096 keys, a key's first event in it only sets a
  bit in a 256 KiB filter: the key takes a dict entry from its second event on, so
  the addresses that send one request (most of an Internet scan's) cost no entry.
* :class:`DistinctWindows`: "``threshold`` distinct values within ``window``"
  (credential stuffing). Per key it keeps at most ``threshold + margin`` values
  with their last-seen time in a flat list; a new value replaces the stalest. A key
  that has shown one value (most of a flood) has no list: a slot number in the
  index, the value in a flat list, its two times in an ``array('d')``.

Re-firing (the same in all three): when a key crosses, the store reports one
:class:`Crossing` and then stays quiet for that key until ``window`` has passed
since that report. After that a continuing attack crosses again as soon as the
threshold is met within the window again, so an ongoing attack is reported at
most once per window (decisions dedupe bans; escalation counts repeat offences).
An :class:`EventWindows` report counts the events since the previous report, a
:class:`RateWindows` report the estimated rate, a :class:`DistinctWindows` report
the distinct values in the window. ``unquiet()`` ends every quiet period at once
(the decision that the reports led to ended early: an unban by hand, the ban brake
released): each key still over its threshold crosses again at its next event. It is
O(1) in the array stores: the quiet periods begun before the call are ignored from then
on (each is its crossing time plus the window, so none begun later is older than the
newest begun before, save a key's events arriving out of order: then at most one
extra report).

Evidence samples (usernames, paths) are kept apart from the counters, in one
small LRU per store (``evidence_keys`` keys x ``evidence_max`` distinct samples),
so that a flood of distinct addresses costs counters only. A key that is being
hammered stays in that LRU; under a flood of many addresses some findings may
carry fewer samples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from sys import intern
from typing import Any, NamedTuple

_NEG_INF = -math.inf
ONE_HIT_MIN_THRESHOLD = 8
""":class:`RateWindows` with a threshold this large or larger keep first events in a
filter (one bit per hash), not in the table, once a bucket holds ONE_HIT_AFTER keys."""
ONE_HIT_AFTER = 4096
"""Keys in a bucket's table before its one-hit filter is used (and made)."""
_ONE_HIT_BITS = 1 << 21
_ONE_HIT_MASK = _ONE_HIT_BITS - 1

# EventWindows state layout (``stride`` doubles per key).
_QUIET = 0  # no new crossing before this time
_COUNT = 1  # events since the previous crossing (or since the key appeared)
_FIRST = 2  # time of the first of those events
_IDX = 3  # ring index of the next slot to write (= the oldest of the last n)
_QUEUED = 4  # newest event time when the key was (re)queued
_RING = 5  # ring of the last ``threshold`` timestamps starts here
# Spill layout (threshold > _SPILL_ABOVE): a slot of 5 doubles, as MultiEventWindows'
# (_M_IDX, _M_QUEUED, _M_SPILL, _M_SMALL: the key's first two timestamps); from the key's
# third event on, a block in a second array holds _QUIET, _COUNT, _FIRST and the ring.
_SPILL_ABOVE = 2
"""Thresholds above this keep a key's first two timestamps in its slot and move them
to a full ring (of ``threshold`` doubles, in a second array) at its third event."""

COMPACT_MIN = 4096
"""A store that has had at least this many keys (slots) is compacted once expiry has
left a quarter of them or fewer (see :meth:`_SlotStore.compact`)."""

# MultiEventWindows state layout: 5 doubles per key, and per window 3 more (quiet-until,
# count, first, as _QUIET, _COUNT, _FIRST): after them in the slot (inline layout), or
# at the start of the key's block in ``_spill``, before its ring (spill layout).
_M_IDX = 0  # ring index of the next slot to write, shared by every window
_M_QUEUED = 1  # newest event time when the key was (re)queued
_M_SPILL = 2  # spill layout: offset of the key's block in ``_spill``, or -1 while it has none
_M_SMALL = 3  # spill layout: the key's first two timestamps, while it has no block
_M_RING = 2  # inline layout (largest threshold up to 2): the ring, in slots 2-3
_M_WINDOWS = 5  # inline layout: per window from here
_WINDOW_BLANK = (_NEG_INF, 0.0, 0.0)  # a window's quiet-until, count and first, blank
_RING_OFF = len(_WINDOW_BLANK)  # where an EventWindows block's ring starts


class Crossing(NamedTuple):
    """A key crossed its threshold: what the detector needs to build a finding.

    ``events`` is the number of events since the previous crossing of this key (or
    since it was first seen, within one window gap), ``first_ts`` the time of the
    first of them, ``evidence`` a few distinct samples, oldest first.
    """

    events: int
    first_ts: float
    evidence: tuple[str, ...]


def _check(threshold: int, window: float, max_keys: int) -> None:
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, not {threshold}")
    if window <= 0:
        raise ValueError(f"window must be positive, not {window}")
    if max_keys < 1:
        raise ValueError(f"max_keys must be at least 1, not {max_keys}")


class _Evidence:
    """A small LRU of distinct samples per key, cleared when the key crosses.

    A plain ``dict`` kept in least-recently-used order (a hit moves its key to the
    end by taking it out and putting it back). One sample is held as the string
    itself and more as a tuple, and samples are interned (``sys.intern``), so a
    flood of one-event keys costs a dict entry each and a path sent by thousands of
    addresses is stored once.
    """

    __slots__ = ("_data", "_max_keys", "_max_samples")

    def __init__(self, max_keys: int, max_samples: int) -> None:
        self._data: dict[str, str | tuple[str, ...]] = {}
        self._max_keys = max_keys
        self._max_samples = max_samples

    def add(self, key: str, sample: str) -> None:
        data = self._data
        held = data.pop(key, None)
        if held is None:
            if len(data) >= self._max_keys:
                del data[next(iter(data))]
            data[key] = intern(sample)
            return
        if isinstance(held, str):
            if sample != held and self._max_samples > 1:
                held = (held, intern(sample))
        elif len(held) < self._max_samples and sample not in held:
            held = (*held, intern(sample))
        data[key] = held

    def take(self, key: str) -> tuple[str, ...]:
        held = self._data.pop(key, None)
        if held is None:
            return ()
        return (held,) if isinstance(held, str) else held

    def drop(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


_SLOT_NUMBERS: list[Any] = []
"""``_SLOT_NUMBERS[i] == i``: one int object per slot number, shared by every store,
so that 100,000 keys in five stores cost 100,000 int objects rather than 500,000.
Typed ``Any`` so that, compiled by mypyc, the objects are handed on as they are: read
as ``int`` they would be unboxed, and boxed again into a new object for every key
(with the distinct-values times below, about 6 MB more with 100,000 clients,
``bench/rss.py --compiled``)."""


def _slot_object(i: int) -> Any:
    """The shared int object for slot number ``i`` (what a store's index holds)."""
    numbers = _SLOT_NUMBERS
    if i >= len(numbers):
        # Grow by an eighth: the pool is as large as the largest store ever was.
        numbers.extend(range(len(numbers), max(i + 1, len(numbers) + len(numbers) // 8, 1024)))
    return numbers[i]


class _SlotStore(ABC):
    """Keys mapped to slots of ``stride`` doubles in one ``array('d')``, evicted and
    expired in second-chance order (see the module doc).

    A subclass keeps, at offset ``queued`` of each slot, the key's newest event time
    when it was (re)queued, and says through :meth:`_newest` what the key's newest
    event time is now.
    """

    __slots__ = (
        "_blank",
        "_data",
        "_free",
        "_keys",
        "_queue",
        "_queued",
        "_stride",
        "evicted",
        "max_keys",
    )

    def __init__(self, max_keys: int, blank: tuple[float, ...], queued: int) -> None:
        self.max_keys = max_keys
        self.evicted = 0
        """Keys dropped because the table was full (not by expiry)."""
        self._keys: dict[str, int] = {}
        self._queue: deque[str] = deque()
        self._data = array("d")
        self._free: list[int] = []
        self._stride = len(blank)
        self._blank = array("d", blank)
        self._queued = queued

    @abstractmethod
    def _newest(self, base: int) -> float:
        """The newest event time of the key whose slot starts at ``base``."""

    def _allocate(self, key: str, ts: float) -> int:
        """A blank slot for new ``key`` first seen at ``ts``; evicts a key when full."""
        keys = self._keys
        index: dict[str, Any] = keys  # stores the shared object itself (_SLOT_NUMBERS)
        if len(keys) >= self.max_keys:
            slot = self._evict()
        elif self._free:
            slot = self._free.pop()
        else:
            slot = len(self._data) // self._stride
            self._data.extend(self._blank)
            self._data[slot * self._stride + self._queued] = ts
            index[key] = _slot_object(slot)
            self._queue.append(key)
            return slot
        base = slot * self._stride
        self._data[base : base + self._stride] = self._blank
        self._data[base + self._queued] = ts
        index[key] = _slot_object(slot)
        self._queue.append(key)
        return slot

    def _evict(self) -> int:
        """Drop the first queued key without a newer event since it was queued; its slot."""
        keys = self._keys
        queue = self._queue
        data = self._data
        stride = self._stride
        queued = self._queued
        while True:
            key = queue.popleft()
            slot = keys[key]
            base = slot * stride
            newest = self._newest(base)
            if newest > data[base + queued]:
                data[base + queued] = newest
                if self._spared(key, base):
                    continue
            del keys[key]
            self._forget(key, base)
            self.evicted += 1
            return slot

    def _spared(self, key: str, base: int) -> bool:
        """Eviction took ``key`` (slot at ``base``), which had a newer event since it was
        queued (its queued time is set now), from the queue: whether it stays (re-queued)."""
        self._queue.append(key)
        return True

    def trim(self) -> int:
        """Evict keys (second-chance order) until at most ``max_keys`` are held; how many.

        Only needed after ``max_keys`` was lowered; adding keys never overfills a table.
        """
        dropped = 0
        while len(self._keys) > self.max_keys:
            self._free.append(self._evict())
            dropped += 1
        return dropped

    def _forget(self, key: str, base: int) -> None:  # noqa: B027 - optional hook
        """Hook: ``key``, whose slot starts at ``base``, was dropped (evicted or expired)."""

    def _drop_matching(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts (an operator forgave it), as if never seen:
        its slot is free and it leaves the queues; how many. O(keys held): an
        operator's act, not the hot path."""
        keys = self._keys
        gone = [key for key in keys if match(key)]
        if not gone:
            return 0
        stride = self._stride
        for key in gone:
            slot = keys.pop(key)
            self._forget(key, slot * stride)
            self._free.append(slot)
        for queue in self._queues():
            kept = [key for key in queue if key in keys]
            queue.clear()
            queue.extend(kept)
        return len(gone)

    def _expire(self, horizon: float) -> int:
        """Drop queued keys whose newest event is before ``horizon`` (see module doc)."""
        dropped = 0
        for queue in self._queues():
            dropped += self._expire_queue(queue, horizon)
        if dropped:
            self.compact()
        return dropped

    def _queues(self) -> tuple[deque[str], ...]:
        """The queues that hold the keys (each key in one)."""
        return (self._queue,)

    def _requeue(self, queue: deque[str], base: int) -> None:
        """Expiry found the front key of ``queue`` (slot at ``base``) with a newer event
        since it was queued: to the back (its queued time is set already)."""
        queue.rotate(-1)

    def _expire_queue(self, queue: deque[str], horizon: float) -> int:
        keys = self._keys
        data = self._data
        stride = self._stride
        queued = self._queued
        free = self._free
        dropped = 0
        while queue:
            key = queue[0]
            slot = keys[key]
            base = slot * stride
            newest = self._newest(base)
            if newest < horizon:
                queue.popleft()
                del keys[key]
                free.append(slot)
                self._forget(key, base)
                dropped += 1
            elif newest > data[base + queued]:
                data[base + queued] = newest
                self._requeue(queue, base)
            else:
                break
        return dropped

    def compact(self) -> bool:
        """Give back the room of keys gone, once the table has had at least
        :data:`COMPACT_MIN` slots and at most a quarter of them are held: the keys get
        slots 0, 1, ... in queue order in a new array, and a new index. A flood's keys
        otherwise leave the table the size of its fullest moment (arrays and dicts do
        not shrink). Keys, states and their order are kept; whether it compacted."""
        keys = self._keys
        stride = self._stride
        slots = len(self._data) // stride
        if slots < COMPACT_MIN or 4 * len(keys) > slots:
            return False
        old = self._data
        data = array("d")
        index: dict[str, Any] = {}
        for key in (key for queue in self._queues() for key in queue):
            base = keys[key] * stride
            index[key] = _slot_object(len(data) // stride)
            data.extend(old[base : base + stride])
        self._data = data
        self._keys = index
        self._free = []
        self._compacted()
        return True

    def _compacted(self) -> None:  # noqa: B027 - optional hook
        """Hook: :meth:`compact` gave the keys new slots in a new ``_data``."""

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class _SpillStore(_SlotStore):
    """A :class:`_SlotStore` whose keys keep their last ``size`` event times in a ring:
    in the slot, or (spill layout, ``size`` above 2) the first two in the slot and,
    from the third event on, a ring of ``size`` doubles in a second flat array, given
    back when the key goes or is cleared.

    A slot holds, at offset ``idx_at``, the ring index of the next time to write and,
    at ``ring_at``, the ring; in the spill layout, at ``ring_at`` instead, the offset of
    the key's ring in ``_spill`` (-1 while it has none) and after it its first two times.
    A spilled key's block in ``_spill`` may start with more state (``spill_head``, its
    blank values): the ring then follows it.
    """

    __slots__ = (
        "_idx_at",
        "_ring_at",
        "_ring_off",
        "_size",
        "_spill",
        "_spill_blank",
        "_spill_free",
    )

    def __init__(
        self,
        max_keys: int,
        blank: tuple[float, ...],
        queued: int,
        size: int,
        *,
        idx_at: int,
        ring_at: int,
        spill_head: tuple[float, ...] = (),
    ) -> None:
        super().__init__(max_keys, blank, queued)
        self._idx_at = idx_at
        self._ring_at = ring_at
        self._size = size
        """Times a key's ring holds."""
        self._spill: array[float] | None = array("d") if size > _SPILL_ABOVE else None
        """Blocks of the keys that have a ring (spill layout): ``spill_head``, then the
        ring of ``size`` doubles."""
        self._ring_off = len(spill_head)
        """Where the ring starts in a key's block."""
        self._spill_blank = array("d", (*spill_head, *(_NEG_INF,) * size))
        self._spill_free: list[int] = []

    def _newest(self, base: int) -> float:
        data = self._data
        idx = int(data[base + self._idx_at])
        spill = self._spill
        if spill is None:
            return data[base + self._ring_at + (idx - 1) % self._size]
        at = int(data[base + self._ring_at])
        if at >= 0:
            return spill[at + self._ring_off + (idx - 1) % self._size]
        return data[base + self._ring_at + idx] if idx else _NEG_INF

    def _compacted(self) -> None:
        """Move the held keys' blocks into a new spill array, in slot order."""
        spill = self._spill
        if spill is None:
            return
        data = self._data
        ring_at = self._ring_at
        size = len(self._spill_blank)
        fresh = array("d")
        for base in range(0, len(data), self._stride):
            at = int(data[base + ring_at])
            if at >= 0:
                data[base + ring_at] = len(fresh)
                fresh.extend(spill[at : at + size])
        self._spill = fresh
        self._spill_free = []

    def _give_back(self, base: int) -> None:
        """Free the key's spilled ring, if it has one (spill layout only)."""
        data = self._data
        at = int(data[base + self._ring_at])
        if at >= 0:
            self._spill_free.append(at)
            data[base + self._ring_at] = -1.0

    def _spill_ring(self, base: int) -> int:
        """Give the key at ``base`` its block, its ring holding its two timestamps; the
        block's offset (its ring's, without a ``spill_head``)."""
        spill: array[float] = self._spill  # type: ignore[assignment]
        blank = self._spill_blank
        if self._spill_free:
            at = self._spill_free.pop()
            spill[at : at + len(blank)] = blank
        else:
            at = len(spill)
            spill.extend(blank)
        data = self._data
        small = base + self._ring_at + 1
        ring = at + self._ring_off
        spill[ring] = data[small]
        spill[ring + 1] = data[small + 1]
        data[base + self._ring_at] = at
        return at

    def _counts_from(self, block: int, base: int, held: int, windows: Sequence[float]) -> None:
        """Write at the start of the new block at ``block``, per window of ``windows`` (3
        doubles each: quiet-until, count, first), the count and first time that the
        key's ``held`` times in its slot (0-2, in event order) make by the gap rule."""
        spill: array[float] = self._spill  # type: ignore[assignment]
        data = self._data
        small = base + self._ring_at + 1
        w = block
        for window in windows:
            count = 0.0
            first = 0.0
            newest = _NEG_INF
            for j in range(held):
                t = data[small + j]
                if t - newest > window:  # a gap longer than the window: a new episode
                    count = 0.0
                    first = t
                count += 1.0
                newest = t
            spill[w + _COUNT] = count
            spill[w + _FIRST] = first
            w += 3

    def _reset(self, base: int) -> None:
        """Blank the slot at ``base`` but its queued time, giving its ring back."""
        if self._spill is not None:
            self._give_back(base)
        data = self._data
        queued = data[base + self._queued]
        data[base : base + self._stride] = self._blank
        data[base + self._queued] = queued


class EventWindows(_SpillStore):
    """Exact ``threshold`` events within ``window`` seconds, per key.

    Memory per key: a dict entry, a queue entry and ``threshold + 5`` doubles; with a
    ``threshold`` above 2, 5 doubles (the key's first two timestamps are kept in the
    slot, its count and first time follow from them) plus, from its third event on,
    ``threshold + 3`` more: its quiet-until, count and first time and a ring, in a
    second flat array, given back when the key goes or is cleared. A flood of
    addresses with one or two events each costs 5 doubles per key, whatever the
    threshold. At most ``max_keys`` keys.
    """

    __slots__ = ("_evidence", "_floor", "_issued", "threshold", "window")

    def __init__(
        self,
        threshold: int,
        window: float,
        max_keys: int,
        *,
        evidence_keys: int = 4096,
        evidence_max: int = 5,
    ) -> None:
        _check(threshold, window, max_keys)
        if threshold > _SPILL_ABOVE:  # spill layout: quiet, count and first in the block
            blank: tuple[float, ...] = (0.0, _NEG_INF, -1.0, _NEG_INF, _NEG_INF)
            super().__init__(
                max_keys,
                blank,
                _M_QUEUED,
                threshold,
                idx_at=_M_IDX,
                ring_at=_M_RING,
                spill_head=_WINDOW_BLANK,
            )
        else:
            blank = (*_WINDOW_BLANK, 0.0, _NEG_INF, *(_NEG_INF,) * threshold)
            super().__init__(max_keys, blank, _QUEUED, threshold, idx_at=_IDX, ring_at=_RING)
        self.threshold = threshold
        self.window = window
        self._evidence = _Evidence(min(evidence_keys, max_keys), evidence_max)
        self._issued = _NEG_INF
        """The latest quiet-until a crossing has set."""
        self._floor = _NEG_INF
        """Quiet-until times at or below this are void (see :meth:`unquiet`)."""

    def unquiet(self) -> None:
        """End every key's quiet period: a key still over its threshold crosses again
        at its next event (O(1): the periods begun so far are void from now on)."""
        self._floor = self._issued

    def _forget(self, key: str, base: int) -> None:
        if self._spill is not None:
            self._give_back(base)
        self._evidence.drop(key)

    def clear(self, key: str) -> None:
        """Forget ``key``'s events (its slot stays until expiry drops it)."""
        slot = self._keys.get(key)
        if slot is None:
            return
        self._reset(slot * self._stride)
        self._evidence.drop(key)

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts, its events, quiet period and evidence: as if
        never seen (an operator forgave it); how many."""
        return self._drop_matching(match)

    def hit(self, key: str, ts: float, sample: str | None = None) -> Crossing | None:
        """Count one event for ``key`` at ``ts``; a :class:`Crossing` when it crosses."""
        if self._spill is not None:
            return self._hit_spill(key, ts, sample)
        data = self._data
        n = self.threshold
        slot = self._keys.get(key)
        if slot is None:
            base = self._begin(key, ts)
            idx = 0
        else:
            base = slot * self._stride
            idx = int(data[base + _IDX])
            # A gap longer than the window starts a new episode.
            if ts - data[base + _RING + (idx - 1) % n] > self.window:
                data[base + _COUNT] = 0.0
                data[base + _FIRST] = ts
        ring = base + _RING
        data[ring + idx] = ts
        idx += 1
        if idx == n:
            idx = 0
        data[base + _IDX] = idx
        count = data[base + _COUNT] + 1.0
        data[base + _COUNT] = count
        if sample is not None:
            self._evidence.add(key, sample)
        if ts - data[ring + idx] > self.window or ts < data[base + _QUIET] > self._floor:
            return None
        return self._cross(key, data, base, ts, count)

    def _hit_spill(self, key: str, ts: float, sample: str | None) -> Crossing | None:
        """:meth:`hit` in the spill layout (``threshold`` above 2): the same counts and
        crossings. A key's first two times wait in its slot, where no count is kept (it
        follows from them); at the third, its block takes the count, first time,
        quiet-until and the ring."""
        data = self._data
        n = self.threshold
        window = self.window
        slot = self._keys.get(key)
        if slot is None:
            base = self._allocate(key, ts) * self._stride
            idx = 0
            block = -1
        else:
            base = slot * self._stride
            idx = int(data[base + _M_IDX])
            block = int(data[base + _M_SPILL])
        if sample is not None:
            self._evidence.add(key, sample)
        spill: array[float] = self._spill  # type: ignore[assignment]
        if block < 0:
            if idx < 2:
                # Two timestamps in the slot: below every spill threshold, no crossing.
                data[base + _M_SMALL + idx] = ts
                data[base + _M_IDX] = idx + 1
                return None
            newest = data[base + _M_SMALL + 1]
            block = self._spill_ring(base)
            self._counts_from(block, base, 2, (window,))
        else:
            newest = spill[block + _RING_OFF + (idx - 1) % n]
        # A gap longer than the window starts a new episode.
        if ts - newest > window:
            spill[block + _COUNT] = 0.0
            spill[block + _FIRST] = ts
        count = spill[block + _COUNT] + 1.0
        spill[block + _COUNT] = count
        ring = block + _RING_OFF
        spill[ring + idx] = ts
        idx += 1
        if idx == n:
            idx = 0
        data[base + _M_IDX] = idx
        if ts - spill[ring + idx] > window or ts < spill[block + _QUIET] > self._floor:
            return None
        return self._cross(key, spill, block, ts, count)

    def _begin(self, key: str, ts: float) -> int:
        """A slot for new ``key``, its episode starting at ``ts``; the slot's base."""
        base = self._allocate(key, ts) * self._stride
        self._data[base + _FIRST] = ts
        return base

    def _cross(self, key: str, state: array[float], at: int, ts: float, count: float) -> Crossing:
        """Report the crossing of the key whose quiet, count and first are at
        ``state[at]``: quiet for a window from ``ts``."""
        until = state[at + _QUIET] = ts + self.window
        self._issued = max(self._issued, until)
        state[at + _COUNT] = 0.0
        first = state[at + _FIRST]
        state[at + _FIRST] = ts
        return Crossing(int(count), first, self._evidence.take(key))

    def expire(self, now: float) -> int:
        """Drop keys whose newest event is older than ``now - window``; how many."""
        return self._expire(now - self.window)


class MultiEventWindows(_SpillStore):
    """Exact ``threshold_i`` events within ``window_i`` seconds for several windows, per
    key: what one :class:`EventWindows` per ``(threshold_i, window_i)`` pair answers, with
    one key index, queue entry and slot per key instead of one per window.

    A slot holds the shared part (ring index, queued time, and the spill offset and
    first two timestamps as in the spill layout of :class:`EventWindows`) and, per
    window, its quiet-until time, the events since its last crossing and the time of
    the first of them. The last ``N = max(threshold_i)`` timestamps are one ring shared
    by every window (window i's ``threshold_i``-th newest is ``ring[(idx - threshold_i)
    mod N]``): in the slot when ``N`` is at most 2 (with the windows' state after it:
    ``5 + 3 x windows`` doubles per key), otherwise in a second flat array from the
    key's third event on, in a block that starts with the windows' state. Until then
    the slot holds only the shared part (5 doubles) and the windows' counts and first
    times follow from its one or two times (no window can cross on them: with a
    threshold of 1 or 2 the block is given at the first event). Memory per key: a dict
    entry, a queue entry and 5 doubles, plus ``3 x windows + N`` once it has three
    events (two windows of 10 and 20: 31 doubles, against 2 x 8 + 30 in two tables). A
    flood of addresses with one or two failures each costs 5 doubles a key. One
    :class:`_Evidence` LRU per window, so each window's samples are the ones its own
    table would give.

    Differences from separate tables, all from keeping a key as long as the longest
    window needs it: :meth:`expire` drops keys idle for longer than the longest window
    (a shorter window's state of a key idle past it stays: its gap rule restarts the
    count on the key's next event as a fresh table would, but its evidence samples
    from before the gap stay until it crosses, where a separate table's expiry may
    have dropped them), and a full table evicts a key from every window at once in the
    order of the longest window's queue (separate tables evict in the same order until
    their expiry walks, with shorter horizons, have reordered their queues). Without
    :meth:`expire` calls the answers are those of separate tables that forget a key
    when this store evicts it.

    Eviction (probation and protected, as a segmented LRU): a new key enters the
    probation queue; a key taken from its front that holds two or more events, one of
    them since it was queued, moves to the protected queue instead of being evicted, and
    only probation keys are evicted (second chance is the promotion). The protected
    queue holds at most ``max_keys // 2`` keys: past that, its front key without a newer
    event since it was queued goes back to probation (with one, to its back). So:

    * a key with two or more events is never evicted by keys with one event each,
      whatever their number (an address flood of one-line connections from other /64s
      meant to push a slow attacker out of the long windows: it only replaces other
      one-event keys); to push it out, at least ``max_keys // 2`` keys must each make
      two events, and then ``max_keys - max_keys // 2`` more keys before its next
      event;
    * a key's first event outlasts at least ``max_keys - max_keys // 2`` new keys (half
      what a single second-chance queue gives; a key with one event is no slow attack).

    No per-key memory: a key is in one of the two queues.
    """

    __slots__ = (
        "_early",
        "_evidence",
        "_floors",
        "_issued",
        "_none",
        "_protected",
        "_room",
        "_specs",
        "longest",
        "thresholds",
        "windows",
    )

    def __init__(
        self,
        windows: Sequence[tuple[int, float]],
        max_keys: int,
        *,
        evidence_keys: int = 4096,
        evidence_max: int = 5,
    ) -> None:
        if not windows:
            raise ValueError("give at least one (threshold, window) pair")
        for threshold, window in windows:
            _check(threshold, window, max_keys)
        size = max(threshold for threshold, _ in windows)
        head = _WINDOW_BLANK * len(windows)
        if size > _SPILL_ABOVE:  # spill layout: the windows' state in the key's block
            blank: tuple[float, ...] = (0.0, _NEG_INF, -1.0, _NEG_INF, _NEG_INF)
            super().__init__(
                max_keys, blank, _M_QUEUED, size, idx_at=_M_IDX, ring_at=_M_RING, spill_head=head
            )
        else:
            blank = (0.0, _NEG_INF, *(_NEG_INF,) * 3, *head)
            super().__init__(max_keys, blank, _M_QUEUED, size, idx_at=_M_IDX, ring_at=_M_RING)
        self._early = min(threshold for threshold, _ in windows) < 3
        """A window may cross on a key's first or second event: the key gets its block
        at its first event (spill layout)."""
        self.thresholds: tuple[int, ...] = tuple(threshold for threshold, _ in windows)
        self.windows: tuple[float, ...] = tuple(float(window) for _, window in windows)
        self.longest = max(self.windows)
        self._evidence = tuple(
            _Evidence(min(evidence_keys, max_keys), evidence_max) for _ in windows
        )
        self._specs = tuple(
            (i, window, threshold, evidence)
            for i, (window, threshold, evidence) in enumerate(
                zip(self.windows, self.thresholds, self._evidence, strict=True)
            )
        )
        """Per window: its index, length, threshold and evidence (what :meth:`hit` reads)."""
        self._none: tuple[Crossing | None, ...] = (None,) * len(windows)
        """What :meth:`hit` returns when no window crosses (shared, no allocation)."""
        self._issued = array("d", (_NEG_INF,) * len(windows))
        """Per window, the latest quiet-until a crossing has set."""
        self._floors = array("d", (_NEG_INF,) * len(windows))
        """Per window, quiet-until times at or below this are void (see :meth:`unquiet`).
        Per window: a long window's quiet periods end after every short one's."""
        self._protected: deque[str] = deque()
        """The keys promoted from ``_queue`` (probation): never evicted from here."""
        self._room = max_keys // 2
        """Most keys ``_protected`` holds."""

    def _queues(self) -> tuple[deque[str], ...]:
        return (self._queue, self._protected)

    def _several(self, base: int) -> bool:
        """Whether the key whose slot starts at ``base`` holds two or more event times."""
        data = self._data
        idx = int(data[base + _M_IDX])
        spill = self._spill
        if spill is None:
            return data[base + _M_RING + (idx - 2) % self._size] > _NEG_INF
        at = int(data[base + _M_SPILL])
        if at < 0:
            return idx >= 2
        return spill[at + self._ring_off + (idx - 2) % self._size] > _NEG_INF

    def _promote(self, key: str) -> None:
        """Move ``key`` (taken from probation, its queued time set) to the protected
        queue; when that is over :attr:`_room`, its front key without a newer event
        since it was queued (second chance) goes back to probation."""
        protected = self._protected
        protected.append(key)
        if len(protected) <= self._room:
            return
        keys = self._keys
        data = self._data
        stride = self._stride
        while True:
            first = protected.popleft()
            base = keys[first] * stride
            newest = self._newest(base)
            if newest > data[base + _M_QUEUED]:
                data[base + _M_QUEUED] = newest
                protected.append(first)
                continue
            self._queue.append(first)
            return

    def _requeue(self, queue: deque[str], base: int) -> None:
        if queue is self._queue and self._several(base):
            self._promote(queue.popleft())
        else:
            queue.rotate(-1)

    def _spared(self, key: str, base: int) -> bool:
        """Promoted when it holds two or more events, else evicted (see the class)."""
        if self._several(base):
            self._promote(key)
            return True
        return False

    def unquiet(self) -> None:
        """End every key's quiet period in every window: a window the key is still over
        crosses again at its next event (O(1): the periods begun so far are void)."""
        self._floors[:] = self._issued

    def _forget(self, key: str, base: int) -> None:
        if self._spill is not None:
            self._give_back(base)
        for evidence in self._evidence:
            evidence.drop(key)

    def clear(self, key: str) -> None:
        """Forget ``key``'s events in every window (its slot stays until expiry drops it)."""
        slot = self._keys.get(key)
        if slot is None:
            return
        self._reset(slot * self._stride)
        for evidence in self._evidence:
            evidence.drop(key)

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts, in every window: as if never seen (an
        operator forgave it); how many."""
        return self._drop_matching(match)

    def hit(self, key: str, ts: float, sample: str | None = None) -> tuple[Crossing | None, ...]:
        """Count one event for ``key`` at ``ts`` in every window; per window, its
        :class:`Crossing` or None (the same all-None tuple when none crosses)."""
        data = self._data
        n = self._size
        slot = self._keys.get(key)
        # A new key's blank slot reads as a key without events (newest: -inf); queued at
        # -inf, so that a second event, even at the same time, promotes it.
        base = (self._allocate(key, _NEG_INF) if slot is None else slot) * self._stride
        idx = int(data[base + _M_IDX])
        # Where the key's last times are: ``ring[at + (idx - k) % n]`` is the k-th newest
        # (once ts is written) for every k up to ``n`` (blank times are -inf); the
        # windows' state is at ``state[w]``, 3 doubles a window.
        spill = self._spill
        ring = data
        at = base + _M_RING
        state = data
        w = base + _M_WINDOWS
        if spill is None:
            newest = data[at + (idx - 1) % n]
        else:
            block = int(data[base + _M_SPILL])
            if block >= 0:
                at = block + self._ring_off
                newest = spill[at + (idx - 1) % n]
            elif idx < 2 and not self._early:
                # One or two times, in the slot: no window crosses on them (every
                # threshold is 3 or more), and their counts follow from the times.
                data[base + _M_SMALL + idx] = ts
                data[base + _M_IDX] = idx + 1
                if sample is not None:
                    for evidence in self._evidence:
                        evidence.add(key, sample)
                return self._none
            else:
                newest = data[base + _M_SMALL + idx - 1] if idx else _NEG_INF
                block = self._spill_ring(base)
                self._counts_from(block, base, idx, self.windows)
                at = block + self._ring_off
            ring = spill
            state = spill
            w = block
        ring[at + idx] = ts
        idx += 1
        if idx == n:
            idx = 0
        data[base + _M_IDX] = idx
        found: list[Crossing | None] | None = None
        floors = self._floors
        for i, window, k, evidence in self._specs:
            # A gap longer than the window starts a new episode.
            if ts - newest > window:
                state[w + _COUNT] = 0.0
                state[w + _FIRST] = ts
            count = state[w + _COUNT] + 1.0
            state[w + _COUNT] = count
            if sample is not None:
                evidence.add(key, sample)
            if ts - ring[at + (idx - k) % n] <= window and not ts < state[w + _QUIET] > floors[i]:
                if found is None:
                    found = list(self._none)
                found[i] = self._cross(key, i, state, w, ts=ts, count=count)
            w += 3
        return self._none if found is None else tuple(found)

    def _cross(
        self, key: str, i: int, state: array[float], w: int, *, ts: float, count: float
    ) -> Crossing:
        """Report window ``i``'s crossing (its state at ``state[w]``): quiet for a window
        from ``ts``."""
        until = state[w + _QUIET] = ts + self.windows[i]
        self._issued[i] = max(self._issued[i], until)
        state[w + _COUNT] = 0.0
        first = state[w + _FIRST]
        state[w + _FIRST] = ts
        return Crossing(int(count), first, self._evidence[i].take(key))

    def expire(self, now: float) -> int:
        """Drop keys whose newest event is older than ``now - longest window``; how many."""
        return self._expire(now - self.longest)


class RateWindows:
    """Approximate ``threshold`` events per ``window`` seconds, per key: two
    generations of bucket counters (see the module doc).

    Buckets are aligned to the window (``[k * window, (k + 1) * window)``) and
    shared by every key: ``_cur`` counts each key's events in the current bucket,
    ``_prev`` in the one before. The store's clock is the newest time it was given
    (:meth:`advance`, :meth:`hit`, :meth:`expire`); when that reaches the end of the
    current bucket, both generations turn over for all keys at once (the current
    bucket becomes the previous one, or both empty after an idle window). An event
    older than the current bucket but not than the previous one (out of order) counts
    in the current bucket. Only events move the store's clock forward: :meth:`expire`
    (the daemon's housekeeping, on the wall clock) turns the buckets over only when no
    event came since its previous call, so a backlog read after a restart or a stall is
    counted in its own buckets (idle keys go one call later than they would otherwise).
    An event older than the previous bucket is not counted (``late``) once
    :meth:`expire` has given the store the wall clock: another source more than a window
    behind the newest one (counting it in the current bucket, which never turns over for
    it, would add up minutes or hours of a busy client's requests as one window's; it is
    undercounted, never overcounted, and never disturbs the current counts). Without a
    wall clock (``replay``: files one after the other) it rewinds the store to its own
    bucket, both generations empty (:meth:`_rewind`). A line stamped in the future moves
    the store ahead of the events that follow, which are then late; the next
    :meth:`expire` finds the store ahead of the wall clock and rewinds it to the wall
    clock.

    The estimate at time ``ts`` is ``cur + prev * (1 - (ts - start) / window)``:
    exact for a burst inside one bucket, otherwise it assumes the previous bucket's
    events were spread evenly. It is only computed when ``cur`` alone could reach
    the threshold (``cur >= threshold - max(prev)``), so most hits are one dict
    lookup, one store and one comparison. A crossing's ``events`` is that estimate.

    Memory: two dict entries (the count, and the time of the key's first event, which
    starts a crossing's span) per key active in the current bucket, one per key active
    in the previous one, and the quiet-until time of
    keys that crossed lately. No key index, queue or expiry walk. At most
    ``max_keys`` keys in both generations together: when a new key finds them full,
    the previous bucket is dropped early (estimates then use the current bucket
    alone); when the current bucket alone is full, the new key is not counted until
    the next bucket (``overflow`` counts such hits), so a flood of addresses cannot
    grow memory nor push out a key already counted in the current bucket.

    One-hit filter (threshold :data:`ONE_HIT_MIN_THRESHOLD` or more, and the current
    bucket's table holding :data:`ONE_HIT_AFTER` keys already): a key's first event in
    the bucket sets one bit (chosen by its hash) in a bit array of 2 MiBit, made then
    and dropped when the bucket turns over; the key gets its dict entry, with a
    count of 2, on its next event. Below that size the table is exact, and a storm of
    a few thousand attackers a bucket never pays for the filter.
    Most addresses of a scan or a crawl send one request, and they then cost no entry
    and take no room under ``max_keys``. What it changes: a key whose bit another key
    set first is counted one high (about 5% of new keys when 100,000 distinct ones
    arrived in the bucket), so it may cross one event early; and a key's single event
    in the previous bucket does not weigh in its estimate, so it may cross one event
    late.
    """

    __slots__ = (
        "_cur",
        "_end",
        "_first",
        "_hit",
        "_need",
        "_once",
        "_prev",
        "_quiet",
        "_start",
        "_wall",
        "late",
        "max_keys",
        "one_hit",
        "overflow",
        "rewinds",
        "threshold",
        "window",
    )

    def __init__(self, threshold: int, window: float, max_keys: int) -> None:
        _check(threshold, window, max_keys)
        self.threshold = threshold
        self.window = window
        self.max_keys = max_keys
        self.overflow = 0
        """Hits not counted because the current bucket's table was full."""
        self.rewinds = 0
        """Times the store went back to an older bucket (see the class)."""
        self.late = 0
        """Events not counted: older than the previous bucket, the wall clock known."""
        self._wall = math.inf
        """The wall clock of the last :meth:`expire` (none yet: infinity)."""
        self._hit = False
        """Whether an event came since the last :meth:`expire`."""
        self._cur: dict[str, int] = {}
        self._first: dict[str, float] = {}
        """The time of each key's first counted event in the current bucket (its second
        when the one-hit filter took the first): where a crossing's span starts."""
        self._prev: dict[str, int] = {}
        self._quiet: dict[str, float] = {}
        self._start = _NEG_INF
        self._end = _NEG_INF
        self._need = 1
        """No estimate can reach the threshold while ``cur`` is below this."""
        self._once: bytearray | None = None
        """The current bucket's one-hit filter (see the class); None until its first use."""
        self.one_hit = threshold >= ONE_HIT_MIN_THRESHOLD
        """Whether first events go to the one-hit filter."""

    def advance(self, now: float) -> None:
        """Move the store's clock to ``now``: turn the buckets over if the current one ended."""
        if now >= self._end:
            self._rotate(now)

    def _rotate(self, now: float) -> None:
        window = self.window
        start = (now // window) * window
        self._prev = self._cur if now < self._end + window else {}
        self._cur = {}
        self._first = {}
        self._once = None
        self._start = start
        self._end = start + window
        self._need = self.threshold - max(self._prev.values(), default=0)
        if self._quiet:
            self._quiet = {k: t for k, t in self._quiet.items() if t > now}

    def _rewind(self, ts: float) -> None:
        """Go back to the bucket of ``ts``, older than the previous one: both generations
        empty, quiet periods that began after ``ts`` ended (see the class)."""
        self.rewinds += 1
        window = self.window
        if self._quiet:
            self._quiet = {k: t for k, t in self._quiet.items() if t <= ts + window}
        self._end = _NEG_INF
        self._rotate(ts)

    def _room(self) -> bool:
        """The table is full: drop the previous bucket early if there is one (its
        weights are lost: estimates fall back to the current bucket's counts)."""
        if not self._prev:
            return False
        self._prev = {}
        self._need = self.threshold
        return True

    def hit(self, key: str, ts: float) -> Crossing | None:
        """Count one event for ``key`` at ``ts``; a :class:`Crossing` when the rate crosses."""
        if ts >= self._end:
            self._rotate(ts)
        elif ts < self._start - self.window:
            if self._wall != math.inf:
                self.late += 1
                return None
            self._rewind(ts)
        self._hit = True
        cur = self._cur
        count = cur.get(key, 0) + 1
        if count == 1:
            if self.one_hit and len(cur) >= ONE_HIT_AFTER:
                once = self._once
                if once is None:
                    once = self._once = bytearray(_ONE_HIT_BITS >> 3)
                bit = hash(key) & _ONE_HIT_MASK
                at = bit >> 3
                mask = 1 << (bit & 7)
                if not once[at] & mask:
                    once[at] |= mask  # the key's first event in this bucket
                    return None
                count = 2
            if len(cur) + len(self._prev) >= self.max_keys and not self._room():
                self.overflow += 1
                return None
            # The key's first counted event (its very first went to the one-hit filter
            # at an unknown time when count is 2: this one is the nearest known).
            self._first[key] = ts
        cur[key] = count
        if count < self._need:
            return None
        return self._check(key, count, ts)

    def _check(self, key: str, count: int, ts: float) -> Crossing | None:
        """The crossing, if ``key``'s estimate with ``count`` in the current bucket crosses."""
        prev = self._prev.get(key, 0)
        start = self._start
        if prev:
            overlap = 1.0 - (ts - start) / self.window
            estimate = count + prev * min(max(overlap, 0.0), 1.0)
        else:
            estimate = float(count)
        if estimate < self.threshold:
            return None
        quiet = self._quiet
        if ts < quiet.get(key, _NEG_INF):
            return None
        quiet[key] = ts + self.window
        # The estimate is of the rate over the last window (exact within one bucket):
        # its events began at the key's first one in this bucket when it had none in the
        # previous one (its second when the one-hit filter took the first).
        first = ts - self.window if prev else min(self._first.get(key, start), ts)
        return Crossing(int(estimate), first, ())

    def release(self, key: str) -> None:
        """End ``key``'s quiet period: its next hit crosses again if still over the threshold."""
        self._quiet.pop(key, None)

    def unquiet(self) -> None:
        """End every key's quiet period (see :meth:`release`)."""
        self._quiet.clear()

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts from both generations, with its quiet period:
        as if never seen (an operator forgave it); how many. The one-hit filter keeps its
        bits (a key's next first event in the bucket may count two, as for a key whose
        bit another set)."""
        gone = 0
        for table in (self._cur, self._prev):
            for key in [key for key in table if match(key)]:
                del table[key]
                gone += 1
        for table2 in (self._first, self._quiet):
            for key in [key for key in table2 if match(key)]:
                del table2[key]
        return gone

    def expire(self, now: float) -> int:
        """Housekeeping at wall-clock time ``now`` (see the class): turn the buckets
        over up to ``now`` when the store holds keys and no event came since the last
        call (keys idle for two buckets go; an empty store keeps its clock for the
        events to come, a backlog's included), go back to ``now`` when a future-stamped
        event moved the store beyond it; how many keys went."""
        before = len(self)
        self._wall = now
        if self._start > now + self.window:
            self._rewind(now)
        elif not self._hit and (self._cur or self._prev):
            self.advance(now)
        self._hit = False
        return before - len(self)

    def __len__(self) -> int:
        """Distinct keys held in either generation."""
        cur = self._cur
        prev = self._prev
        if not prev:
            return len(cur)
        return len(cur) + len(prev) - len(prev.keys() & cur.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._cur or key in self._prev


class DistinctWindows:
    """``threshold`` distinct values within ``window`` seconds, per key.

    Per key: a flat list ``[quiet_until, queued, value, last_seen, value, last_seen,
    ...]`` with at most ``threshold + margin`` values; when full, a new value
    replaces the one seen longest ago. ``queued`` is the key's newest time when it
    was (re)queued: keys are evicted and expired in second-chance order (module
    doc). The crossing's evidence is the distinct values seen within the window,
    oldest first. A key that has shown one value only (with a ``threshold`` above 1:
    it cannot have crossed) has no list until its second value: the index holds a
    slot number (a pooled int, see :data:`_SLOT_NUMBERS`), the value is in a flat
    list and its last-seen and queued times are two doubles in a flat array. That is
    most keys of a flood of addresses, each trying one username: 24 bytes a key
    besides its index entry, where a ``(value, last_seen, queued)`` tuple with its
    float cost about 110.
    """

    __slots__ = (
        "_cap",
        "_floor",
        "_intern",
        "_issued",
        "_keys",
        "_one_free",
        "_one_times",
        "_one_values",
        "_peak",
        "_queue",
        "evicted",
        "max_keys",
        "threshold",
        "window",
    )

    def __init__(
        self,
        threshold: int,
        window: float,
        max_keys: int,
        *,
        margin: int = 2,
        intern_values: bool = False,
    ) -> None:
        _check(threshold, window, max_keys)
        if margin < 0:
            raise ValueError(f"margin cannot be negative, not {margin}")
        self.threshold = threshold
        self.window = window
        self.max_keys = max_keys
        self.evicted = 0
        self._cap = threshold + margin
        self._intern = intern_values
        """Store values through ``sys.intern``: for values many keys share (usernames
        tried by many addresses), which are then held once."""
        # Flat [quiet_until, queued, value, seen, value, seen, ...]: one small list per
        # key, or a single-value slot number while it has one value (see the class doc).
        # Times in a list are held as objects (Any): compiled by mypyc, a float read as
        # float is unboxed and boxed again into a new object at every store.
        self._keys: dict[str, list[Any] | int] = {}
        self._queue: deque[str] = deque()
        self._one_values: list[str | None] = []
        """Single-value slots: the value of slot ``i`` (None while the slot is free)."""
        self._one_times = array("d")
        """Single-value slots: ``[2i]`` last seen, ``[2i + 1]`` queued."""
        self._one_free: list[int] = []
        self._peak = 0
        """The most keys :meth:`expire` has seen held since the last :meth:`compact`."""
        self._issued = _NEG_INF
        """The latest quiet-until a crossing has set."""
        self._floor = _NEG_INF
        """Quiet-until times at or below this are void (see :meth:`unquiet`)."""

    def _one_slot(self, value: str, ts: float) -> Any:
        """A single-value slot holding ``value`` seen (and queued) at ``ts``: its pooled
        slot object, what the index holds."""
        times = self._one_times
        if self._one_free:
            i = self._one_free.pop()
            self._one_values[i] = value
            times[2 * i] = ts
            times[2 * i + 1] = ts
        else:
            i = len(self._one_values)
            self._one_values.append(value)
            times.append(ts)
            times.append(ts)
        return _slot_object(i)

    def _one_drop(self, i: int) -> None:
        """Give single-value slot ``i`` back."""
        self._one_values[i] = None
        self._one_free.append(i)

    def _drop(self, key: str) -> None:
        """Forget ``key`` (evicted or expired), giving its single-value slot back."""
        held = self._keys.pop(key)
        if not isinstance(held, list):
            self._one_drop(held)

    def hit(self, key: str, value: str, ts: Any) -> Crossing | None:
        """Record ``value`` for ``key`` at ``ts`` (a float); a :class:`Crossing` when
        enough are distinct.

        ``ts`` is typed ``Any`` so that, compiled by mypyc, the caller's float object
        (the event's own) is stored as it is: a ``float`` parameter is unboxed on entry
        and boxed into a new object for the store, one more object per key held."""
        keys = self._keys
        held = keys.get(key)
        stamp: Any = ts  # one object for every store below (see __init__)
        state: list[Any]
        if held is None:
            if len(keys) >= self.max_keys:
                self._evict()
            if self._intern:
                value = intern(value)
            self._queue.append(key)
            if self.threshold > 1:
                keys[key] = self._one_slot(value, ts)
                return None
            keys[key] = state = [_NEG_INF, stamp, value, stamp]
        elif not isinstance(held, list):
            first = self._one_values[held]
            times = self._one_times
            if first == value:  # still one value: below the threshold, never quiet
                times[2 * held] = ts
                return None
            if self._intern:
                value = intern(value)
            # The cap is at least the threshold, above 1 here: room for a second value.
            queued, seen = times[2 * held + 1], times[2 * held]
            keys[key] = state = [_NEG_INF, queued, first, seen, value, stamp]
            self._one_drop(held)
        else:
            state = held
            size = len(state)
            for i in range(2, size, 2):
                if state[i] == value:
                    state[i + 1] = stamp
                    break
            else:
                if self._intern:
                    value = intern(value)
                if size < 2 + 2 * self._cap:
                    state.append(value)
                    state.append(stamp)
                else:
                    stalest = min(range(3, size, 2), key=state.__getitem__)
                    state[stalest - 1] = value
                    state[stalest] = stamp
        if ts < state[0] > self._floor:  # reported lately: quiet until then (no need to count)
            return None
        horizon = ts - self.window
        live = [
            (seen, state[i - 1]) for i in range(3, len(state), 2) if (seen := state[i]) >= horizon
        ]
        if len(live) < self.threshold:
            return None
        until = state[0] = ts + self.window
        self._issued = max(self._issued, until)
        live.sort()
        first_ts = live[0][0]
        return Crossing(len(live), float(first_ts), tuple(str(v) for _, v in live))

    def last_seen(self, key: str) -> float:
        """When ``key`` last showed a value (any); ``-inf`` when it is not held."""
        held = self._keys.get(key)
        if held is None:
            return _NEG_INF
        if not isinstance(held, list):
            return float(self._one_times[2 * held])
        return float(max(held[3::2]))

    def _requeue(self, key: str, horizon: float) -> bool | None:
        """The second-chance test of queued ``key``: True when it has a newer value
        since it was queued (its queued time is moved to that), None when its newest
        value is before ``horizon``, else False."""
        state = self._keys[key]
        if not isinstance(state, list):
            times = self._one_times
            seen = times[2 * state]
            if seen < horizon:
                return None
            if seen > times[2 * state + 1]:
                times[2 * state + 1] = seen
                return True
            return False
        newest = max(state[3::2])
        if newest < horizon:
            return None
        if newest > state[1]:
            state[1] = newest
            return True
        return False

    def _evict(self) -> None:
        """Drop the first queued key without a newer value since it was queued."""
        queue = self._queue
        while True:
            key = queue.popleft()
            if self._requeue(key, _NEG_INF):
                queue.append(key)
                continue
            self._drop(key)
            self.evicted += 1
            return

    def release(self, key: str) -> None:
        """End ``key``'s quiet period: its next hit crosses again if still over the threshold."""
        state = self._keys.get(key)
        if isinstance(state, list):
            state[0] = _NEG_INF

    def unquiet(self) -> None:
        """End every key's quiet period (O(1): the periods begun so far are void)."""
        self._floor = self._issued

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts, its values and quiet period: as if never seen
        (an operator forgave it); how many."""
        gone = [key for key in self._keys if match(key)]
        for key in gone:
            self._drop(key)
        if gone:
            self._requeue_held()
        return len(gone)

    def forget_values(self, match: Callable[[str], bool]) -> int:
        """Drop every value ``match`` accepts from every key (the clients an operator
        forgave, where the keys are usernames): a key left with no value goes; how many
        values went. A key's quiet period stays (its other values still crossed)."""
        dropped = 0
        emptied: list[str] = []
        values = self._one_values
        for key, held in self._keys.items():
            if not isinstance(held, list):
                value = values[held]
                if value is not None and match(value):
                    emptied.append(key)
                    dropped += 1
                continue
            kept = [held[0], held[1]]
            for i in range(2, len(held), 2):
                if match(str(held[i])):
                    dropped += 1
                else:
                    kept.append(held[i])
                    kept.append(held[i + 1])
            if len(kept) == 2:
                emptied.append(key)
            elif len(kept) < len(held):
                held[:] = kept
        for key in emptied:
            self._drop(key)
        if emptied:
            self._requeue_held()
        return dropped

    def _requeue_held(self) -> None:
        """Keys were dropped out of queue order: the queue keeps only the keys held."""
        keys = self._keys
        queue = self._queue
        kept = [key for key in queue if key in keys]
        queue.clear()
        queue.extend(kept)

    def expire(self, now: float) -> int:
        """Drop keys whose newest value is older than ``now - window``; how many."""
        queue = self._queue
        self._peak = max(self._peak, len(self._keys))
        horizon = now - self.window
        dropped = 0
        while queue:
            key = queue[0]
            again = self._requeue(key, horizon)
            if again is None:
                queue.popleft()
                self._drop(key)
                dropped += 1
            elif again:
                queue.rotate(-1)
            else:
                break
        if dropped:
            self.compact()
        return dropped

    def compact(self) -> bool:
        """As :meth:`_SlotStore.compact`: once the table has held at least
        :data:`COMPACT_MIN` keys (as :meth:`expire` saw it) and a quarter of that or fewer
        are left, a new index and new single-value slots 0, 1, ... in queue order."""
        keys = self._keys
        if self._peak < COMPACT_MIN or 4 * len(keys) > self._peak:
            return False
        old_values = self._one_values
        old_times = self._one_times
        values: list[str | None] = []
        times = array("d")
        index: dict[str, Any] = {}
        for key in self._queue:
            held = keys[key]
            if isinstance(held, list):
                index[key] = held
                continue
            index[key] = _slot_object(len(values))
            values.append(old_values[held])
            times.append(old_times[2 * held])
            times.append(old_times[2 * held + 1])
        self._keys = index
        self._one_values = values
        self._one_times = times
        self._one_free = []
        self._peak = len(index)
        return True

    def __len__(self) -> int:
        return len(self._keys)


class RecentSet(_SlotStore):
    """Keys seen within ``ttl`` seconds (e.g. clients that authenticated), capped at
    ``max_keys`` in second-chance order (module doc): two doubles per key."""

    __slots__ = ("ttl",)

    def __init__(self, ttl: float, max_keys: int) -> None:
        _check(1, ttl, max_keys)
        super().__init__(max_keys, (_NEG_INF, _NEG_INF), 1)
        self.ttl = ttl

    def _newest(self, base: int) -> float:
        return self._data[base]

    def add(self, key: str, ts: float) -> None:
        """Mark ``key`` as seen at ``ts`` (its latest mark, even if older than the last)."""
        slot = self._keys.get(key)
        if slot is None:
            slot = self._allocate(key, ts)
        self._data[slot * 2] = ts

    def last(self, key: str) -> float:
        """When ``key`` was last marked; ``-inf`` when it is not held."""
        slot = self._keys.get(key)
        return _NEG_INF if slot is None else self._data[slot * 2]

    def seen(self, key: str, ts: float) -> bool:
        """Whether ``key`` was marked no longer than ``ttl`` before ``ts``."""
        return ts - self.last(key) <= self.ttl

    def discard(self, key: str) -> None:
        """Forget ``key``'s time (its slot stays until expiry drops it)."""
        slot = self._keys.get(key)
        if slot is not None:
            self._data[slot * self._stride] = _NEG_INF

    def discard_matching(self, match: Callable[[str], bool]) -> int:
        """Drop every key ``match`` accepts (an operator forgave it); how many. Not named
        ``forget``: whether a mark is evidence against its key (a failure) or for it (a
        login) is its detector's to say."""
        return self._drop_matching(match)

    def clear(self) -> None:
        """Drop every key and give back its room; :attr:`evicted` keeps counting (it is
        exported as a counter)."""
        self._keys = {}
        self._queue = deque()
        self._data = array("d")
        self._free = []

    def expire(self, now: float) -> int:
        """Drop keys marked before ``now - ttl``; how many."""
        return self._expire(now - self.ttl)


# _Streaks slot layout: _STRIDE doubles per client.
_STRIDE = 13
_SIG = 0  # hash of the streak's one credential or request (0: no streak)
_START = 1  # its first rejection
_LAST = 2  # its latest rejection
_STEP = 3  # the interval between its first two rejections (-1: one so far)
_REGULAR = 4  # 1.0 while every interval since matched _STEP
_SUCCESS = 5  # the client's latest counting login (while held)
_HIGH = 6  # when the streak's key was last reported HIGH
_TOLD = 7  # when a repeat of it was last reported at MEDIUM (or withheld)
_STREAK_QUEUED = 8
_BURST = 9  # the first rejection of the client's latest expired-session burst
_EXCUSED = 10  # that burst's rejections not counted so far
_PATHS_ONE = 11  # its paths, a Bloom filter: one bit of 52 per path (see _Streaks.excuse)
_PATHS_TWO = 12  # its paths, a second bit of 52 per path


def _jitter(step: float) -> float:
    """How far an interval may stray from a streak's ``step`` and still be regular: 5%,
    at least 2 s but never more than a fifth of ``step`` (1 s at 5 s: a scheduler's
    jitter, not a script's pauses)."""
    return max(min(2.0, 0.2 * step), 0.05 * step)


class _Streaks(_SlotStore):
    """Per client: its latest run of identical access-log rejections (the same API key
    id, or the same request without credentials), whether they came at a fixed
    interval, and its latest login while held (see
    :class:`~aisentinel.detectors.http_auth.HttpAuthDetector`, its one user; it lives in
    this module, which mypyc compiles, because an interpreted class cannot subclass a
    compiled one), and its latest burst of rejections after a sign-in (:meth:`excuse`).
    Thirteen doubles a client, at most ``max_keys``, expired ``ttl`` (http_auth: a day, or
    the longest window) after its last event (second-chance order, see :mod:`~.window`)."""

    __slots__ = ("ttl",)

    def __init__(self, max_keys: int, ttl: float) -> None:
        blank = (
            0.0,
            _NEG_INF,
            _NEG_INF,
            -1.0,
            1.0,
            _NEG_INF,
            _NEG_INF,
            _NEG_INF,
            _NEG_INF,
            _NEG_INF,
        )
        super().__init__(max_keys, (*blank, 0.0, 0.0, 0.0), _STREAK_QUEUED)
        self.ttl = ttl

    def _newest(self, base: int) -> float:
        data = self._data
        return max(data[base + _LAST], data[base + _SUCCESS])

    def note(self, key: str, ts: float, signature: str | None) -> int:
        """A rejection of ``key`` at ``ts``, identical to the streak's when its
        ``signature`` is (``None``: one that never repeats: a user's password is not in
        the log); the base of its slot."""
        slot = self._keys.get(key)
        if slot is None:
            slot = self._allocate(key, ts)
        base = slot * _STRIDE
        data = self._data
        sig = 0.0 if signature is None else float(hash(signature) or 1)
        if sig == 0.0 or data[base + _SIG] != sig:
            data[base + _SIG] = sig
            data[base + _START] = ts
            data[base + _STEP] = -1.0
            data[base + _REGULAR] = 1.0
            data[base + _HIGH] = _NEG_INF
            data[base + _TOLD] = _NEG_INF
        else:
            step = ts - data[base + _LAST]
            if data[base + _STEP] < 0.0:
                data[base + _STEP] = step
            elif abs(step - data[base + _STEP]) > _jitter(data[base + _STEP]):
                data[base + _REGULAR] = 0.0
        data[base + _LAST] = ts
        return base

    def excuse(
        self, base: int, ts: float, path: int, signed_in: float, *, span: float, burst: int
    ) -> bool:
        """Whether the rejection at ``ts`` of the client whose slot is at ``base`` (one of
        a signed-in client's rejections that may be its session's end; it last signed in
        at ``signed_in``), on the path whose hash is ``path``, goes uncounted: the first of
        a burst (none before it within ``span`` and since its client signed in) counts,
        the next ``burst - 1`` within ``span`` of it do not while each is on a path new to
        the burst (a page loads distinct resources; a guesser repeats its endpoint), any
        more count again. The burst's paths are held as a Bloom filter of two 52-bit
        masks (two doubles, a bit in each per path): a path taken for seen though it is
        new counts, as a repeat does (about one in 40 of a 15-path burst's; none of the
        paths Open WebUI's page loads, with http_auth's CRC-32)."""
        data = self._data
        one = 1 << (path % 52)
        two = 1 << ((path // 52) % 52)
        start = data[base + _BURST]
        if ts - start > span or ts < start or signed_in > start:
            data[base + _BURST] = ts
            data[base + _EXCUSED] = 0.0
            data[base + _PATHS_ONE] = float(one)
            data[base + _PATHS_TWO] = float(two)
            return False
        first = int(data[base + _PATHS_ONE])
        second = int(data[base + _PATHS_TWO])
        if (first & one and second & two) or data[base + _EXCUSED] >= burst - 1:
            return False
        data[base + _PATHS_ONE] = float(first | one)
        data[base + _PATHS_TWO] = float(second | two)
        data[base + _EXCUSED] += 1.0
        return True

    def succeeded(self, key: str, ts: float) -> None:
        """``key`` logged in at ``ts`` (remembered only for a client held)."""
        slot = self._keys.get(key)
        if slot is not None:
            at = slot * _STRIDE + _SUCCESS
            self._data[at] = max(self._data[at], ts)

    def expire(self, now: float) -> int:
        """Drop clients with no event since ``now - ttl``; how many."""
        return self._expire(now - self.ttl)
