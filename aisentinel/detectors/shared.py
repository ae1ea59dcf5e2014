"""State that several detectors read, kept once: the clients that authenticated.

``ai_recon`` and ``model_exploit`` both need "did this client make an authenticated
request (``user`` or ``key_id`` set, status < 400) lately?". Each used to keep its
own set of such clients; :func:`~aisentinel.detectors.build_detectors` now builds
one :class:`SharedState` and hands it to every detector whose class sets
``wants_shared = True`` (as the keyword ``shared``), so the detectors built together
share one :class:`AuthenticatedClients` per ``max_keys``.

The pipeline hands every detector the same batch in turn, so a detector that
marked the whole batch first would let the next one see marks from requests later
in the batch. :meth:`AuthenticatedClients.marks` therefore answers per event, in
event order, "when was this client last marked, counting this event": it walks the
batch once, marking as it goes, and serves that same answer to the other detectors
that ask for the same batch object. The answers are those each detector got from
its own set before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from aisentinel.detectors.common import all_requests
from aisentinel.detectors.window import RecentSet
from aisentinel.events import Event, HttpRequest

_NEG_INF = -math.inf


class AuthenticatedClients:
    """Clients that made an authenticated request, with the time of the latest one.

    Bounded by ``max_keys`` (second-chance eviction, see :mod:`~.window`); a client
    is held for the longest ``ttl`` any user registered, and each user applies its
    own ``ttl`` to the times :meth:`marks` returns.
    """

    __slots__ = ("_batch", "_batch_len", "_marks", "_served", "_set", "_users")

    def __init__(self, max_keys: int) -> None:
        self._set = RecentSet(1.0, max_keys)
        self._users = 0
        self._batch: Sequence[Event] | None = None
        self._batch_len = 0
        self._marks: list[float] = []
        self._served: list[int] = []
        """``id`` of the readers that got the cached batch's marks."""

    def register(self, ttl: float) -> None:
        """One more detector reads this set and trusts a client for ``ttl`` seconds."""
        if self._users == 0 or ttl > self._set.ttl:
            self._set.ttl = ttl
        self._users += 1

    def marks(self, events: Sequence[Event], reader: object) -> list[float]:
        """Per event of ``events``: when its client last authenticated, this event
        included (``-inf``: not held; also for events that are not HTTP requests).

        Marks the batch's authenticated requests the first time a batch is asked
        for; another ``reader`` asking for the same events (the same sequence, or
        one holding the same event objects, as ``observe`` builds) gets the same list
        without marking again; the same reader asking again recomputes. Readers must
        ask for each batch in turn, as the pipeline does: one that read ahead would
        let the others see marks of requests they have not reached yet.
        """
        if self._is_cached(events) and id(reader) not in self._served:
            out = self._marks
            self._served.append(id(reader))
            if len(self._served) >= self._users:
                self._forget_batch()
            return out
        out = self._compute(events)
        if self._users > 1:
            self._batch = events
            self._batch_len = len(events)
            self._marks = out
            self._served = [id(reader)]
        return out

    def _is_cached(self, events: Sequence[Event]) -> bool:
        """Whether ``events`` holds the same event objects as the cached batch."""
        batch = self._batch
        if batch is None or len(events) != self._batch_len:
            return False
        if events is batch:
            return True
        if len(events) == 1:  # observe(): a fresh 1-tuple holding the same event
            return events[0] is batch[0]
        return all(a is b for a, b in zip(events, batch, strict=True))

    def _forget_batch(self) -> None:
        self._batch = None
        self._marks = []
        self._served = []

    def _compute(self, events: Sequence[Event]) -> list[float]:
        recent = self._set
        add = recent.add
        last = recent.last
        if all_requests(events):
            # Fields by index (user 7, key_id 11, status 5): no type check per event.
            out: list[float] = []
            append = out.append
            for request in cast("Sequence[HttpRequest]", events):
                if (request[7] is not None or request[11] is not None) and request[5] < 400:
                    ts = request[0]
                    add(request[2], ts)
                    append(ts)
                else:
                    append(last(request[2]))
            return out
        out = []
        append = out.append
        for event in events:
            if not isinstance(event, HttpRequest):
                append(_NEG_INF)
            elif (event.user is not None or event.key_id is not None) and event.status < 400:
                add(event.client, event.ts)
                append(event.ts)
            else:
                append(last(event.client))
        return out

    def expire(self, now: float) -> int:
        """Drop clients whose latest mark is older than the longest ``ttl``; how many."""
        return self._set.expire(now)

    def __len__(self) -> int:
        return len(self._set)


class SharedState:
    """What the detectors built together share (one per :func:`build_detectors` call)."""

    __slots__ = ("_authenticated",)

    def __init__(self) -> None:
        self._authenticated: dict[int, AuthenticatedClients] = {}

    def authenticated(self, max_keys: int, ttl: float) -> AuthenticatedClients:
        """The shared set of authenticated clients holding up to ``max_keys``; registers
        the caller as a reader that trusts a client for ``ttl`` seconds."""
        found = self._authenticated.get(max_keys)
        if found is None:
            found = self._authenticated[max_keys] = AuthenticatedClients(max_keys)
        found.register(ttl)
        return found
