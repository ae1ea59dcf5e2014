"""The daemon's decision log: one line per decision, except the bans the brake holds back.

Every decision is logged with its finding (``decision`` at info), so an operator reads
what was done and why once. The one kind that a storm makes by the ten thousand is the
alert the mass-ban brake makes of a ban (``[decisions] max_bans_per_minute``): one per
attacking address a minute, 33,000 lines in a few seconds for a credential-stuffing
campaign of 100,000 addresses. That many lines cost the daemon a sixth of its time while
it is busiest, bury everything else in the journal, and journald drops a service's lines
beyond its rate limit (10,000 in 30 s by default), our own warnings among them.

So the first :data:`BRAKED_LINES` braked decisions of each :data:`BRAKED_PERIOD` are
logged one by one, and the rest of that period in one summary line (how many, from
which detectors, the first and last target), logged when the period is over: at the
next braked decision, or at the daemon's housekeeping tick (:meth:`DecisionLog.flush`),
and at stop. Nothing is lost: every decision is in the ledger, and
``aisentinel_bans_braked_total`` counts each one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import structlog

from aisentinel.events import Decision, decision_fields, finding_fields

log = structlog.get_logger(__name__)

BRAKED_LINES = 10
"""Braked decisions logged one by one per :data:`BRAKED_PERIOD`."""
BRAKED_PERIOD = 60.0
"""Seconds (monotonic) of one period of braked decisions."""


class DecisionLog:
    """Logs decisions (call it with each one); braked ones as the module doc says."""

    __slots__ = (
        "_by_detector",
        "_first",
        "_last",
        "_lines",
        "_logged",
        "_monotonic",
        "_period",
        "_since",
        "held",
    )

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        lines: int = BRAKED_LINES,
        period: float = BRAKED_PERIOD,
    ) -> None:
        self._monotonic = monotonic
        self._lines = lines
        self._period = period
        self._since: float | None = None
        """When the current period of braked decisions began (None: none yet)."""
        self._logged = 0
        self._by_detector: Counter[str] = Counter()
        self._first = ""
        self._last = ""
        self.held = 0
        """Braked decisions of the current period not logged one by one (yet)."""

    def __call__(self, decision: Decision) -> None:
        if decision.braked:
            self._braked(decision)
        else:
            _line(decision)

    def _braked(self, decision: Decision) -> None:
        now = self._monotonic()
        if self._since is None or now - self._since >= self._period:
            self.flush(now, force=True)
            self._since = now
            self._logged = 0
        if self._logged < self._lines:
            self._logged += 1
            _line(decision)
            return
        target = "" if decision.target is None else decision.target.text
        if not self.held:
            self._first = target
        self._last = target
        self.held += 1
        self._by_detector[decision.detector] += 1

    def flush(self, now: float | None = None, *, force: bool = False) -> int:
        """Log the summary of the held braked decisions once their period is over (at
        once with ``force``); returns how many it summarised."""
        held = self.held
        if not held:
            return 0
        at = self._monotonic() if now is None else now
        since = at if self._since is None else self._since
        if not force and at - since < self._period:
            return 0
        log.warning(
            "bans held back by the brake, not logged one by one: every one is in the "
            "ledger and in aisentinel_bans_braked_total",
            not_logged=held,
            logged=self._logged,
            period_seconds=round(at - since, 1),
            detectors=dict(sorted(self._by_detector.items())),
            first_target=self._first,
            last_target=self._last,
        )
        self.held = 0
        self._by_detector.clear()
        return held


def _line(decision: Decision) -> None:
    """One line: the decision with the finding it was taken on (message, key, count,
    evidence, source): what an operator needs, once."""
    finding = decision.finding
    if finding is None:
        log.info("decision", **decision_fields(decision))
    else:
        log.info("decision", **{**finding_fields(finding), **decision_fields(decision)})
