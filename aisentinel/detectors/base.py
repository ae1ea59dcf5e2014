"""The detector contract: events in, findings out, with bounded memory.

A detector declares the event types it ``consumes``; the pipeline hands it the
events of each batch, from one thread, through ``observe_many(events)`` (whose
default calls ``observe(event)`` for each event of a consumed type; hot
detectors derive from :class:`BatchDetector`, write ``observe_many`` as one tight
loop and get ``observe`` from it). Time inside a detector is
the event's own ``ts`` (so replaying old logs gives the same answer as live), and
``expire(now)`` drops keys idle for longer than the window. Every per-key table is
capped (``max_keys``, evicting keys not seen lately first: see
:mod:`~aisentinel.detectors.window`), so no input can grow memory without limit.
State that several detectors need (the clients that authenticated) is kept once,
in a :class:`~aisentinel.detectors.shared.SharedState` (see ``wants_shared``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import ValidationInfo, field_validator

from aisentinel.clock import Clock
from aisentinel.configtypes import StrictModel
from aisentinel.detectors.common import (
    KEY_BUDGET,
    MaxKeys,
    PerKeyCount,
    Threshold,
    Window,
)
from aisentinel.detectors.window import DistinctWindows, EventWindows, RateWindows, RecentSet
from aisentinel.events import Event, Finding
from aisentinel.registry import Registry


class DetectorConfigBase(StrictModel):
    """Keys every ``[detectors.<name>]`` table has."""

    enabled: bool = True
    max_keys: MaxKeys = 100_000
    """Most keys (addresses, usernames) tracked at once per table; keys not seen lately go
    first (second chance, see :mod:`~aisentinel.detectors.window`)."""

    @field_validator("*")
    @classmethod
    def _fits_budget(cls, value: Any, info: ValidationInfo) -> Any:
        """An exact-window threshold times ``max_keys`` stays within :data:`KEY_BUDGET`."""
        field = cls.model_fields.get(info.field_name or "")
        max_keys = info.data.get("max_keys")
        if field is None or not isinstance(max_keys, int):
            return value
        if any(isinstance(m, PerKeyCount) for m in field.metadata):
            need = max_keys * (value + 5)
            if need > KEY_BUDGET:
                raise ValueError(
                    f"with max_keys = {max_keys} one table may keep {need} timestamps "
                    f"({need * 8 / (1 << 30):.1f} GiB); keep max_keys x (threshold + 5) "
                    f"at most {KEY_BUDGET} (2 GiB): lower max_keys or this threshold"
                )
        return value


class WindowedConfig(DetectorConfigBase):
    """A threshold of events within a sliding window."""

    threshold: Threshold = 5
    window: Window = 600.0


class Detector(ABC):
    """One detection rule family. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]
    consumes: ClassVar[tuple[type, ...]]
    wants_shared: ClassVar[bool] = False
    """When true, the constructor also takes a keyword ``shared`` (a
    :class:`~aisentinel.detectors.shared.SharedState`, or ``None`` for state of its
    own) and :func:`~aisentinel.detectors.build_detectors` passes the one it built
    for the detectors it builds together."""

    def __init__(self, config: DetectorConfigBase, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    @abstractmethod
    def observe(self, event: Event) -> Finding | None:
        """Account for one event; a finding when a threshold is crossed, else ``None``."""

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        """Account for a batch of events, in order: ``(index, finding)`` for each event
        that made a finding, in event order.

        Events of types the detector does not consume are skipped. Same state changes
        and findings as calling :meth:`observe` on each consumed event in order, which
        is what this default does.
        """
        consumes = self.consumes
        observe = self.observe
        return [
            (i, found)
            for i, event in enumerate(events)
            if isinstance(event, consumes) and (found := observe(event)) is not None
        ]

    @abstractmethod
    def expire(self, now: float) -> int:
        """Forget keys idle since before ``now - window``; returns how many were dropped."""

    @abstractmethod
    def tracked_keys(self) -> int:
        """How many keys the detector holds now (exported as a gauge)."""

    def evictions(self) -> int:
        """Keys pushed out of a full table, plus hits a full rate table could not count.

        Non-zero means ``max_keys`` is small for the traffic (or a flood of addresses is
        under way). The default adds up the counters of the window stores
        (:mod:`~aisentinel.detectors.window`) held as the detector's attributes; it is
        read by ``aisentinel status``, never on the hot path.
        """
        total = 0
        for value in vars(self).values():
            if isinstance(value, RateWindows):
                total += value.overflow
            elif isinstance(value, EventWindows | DistinctWindows | RecentSet):
                total += value.evicted
        return total


class BatchDetector(Detector):
    """A detector written batch-first: its :meth:`observe_many` is the rule, and
    :meth:`observe` is that rule applied to a batch of one event."""

    def observe(self, event: Event) -> Finding | None:
        found = self.observe_many((event,))
        return found[0][1] if found else None

    @abstractmethod
    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        """See :meth:`Detector.observe_many`."""


REGISTRY: Registry[type[Detector]] = Registry("detector")
"""Detectors by name; each plug-in module registers itself in one line."""
