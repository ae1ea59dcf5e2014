"""The daemon's decision log: one line per decision, up to a budget per period.

Every decision is logged with its finding (``decision`` at info), so an operator reads
what was done and why once. But a storm makes decisions by the ten thousand: the alert
the mass-ban brake makes of a ban (``[decisions] max_bans_per_minute``), one per
attacking address a minute, 33,000 lines in a few seconds for a credential-stuffing
campaign of 100,000 addresses; or the alerts of a distributed scan, two per new address
(``scanning`` and ``rules``), 18,000 lines in 30 s at 250 new addresses a second. That
many lines cost the daemon a sixth of its time while it is busiest, bury everything else
in the journal, and journald drops a service's lines beyond its rate limit (10,000 in
30 s by default), our own warnings among them.

So the first :data:`BRAKED_LINES` braked decisions of each :data:`BRAKED_PERIOD` are
logged one by one, and the rest of that period in one summary line (a warning: how
many, from which detectors, the first and last target). Of the other decisions, the
first :data:`DECISION_LINES` of each action and detector per :data:`BRAKED_PERIOD` are
logged one by one (a flood of one detector's alerts never silences another's), and the
rest of that period in one summary line per action and detector (how many, the first
and last target and the most frequent ones; info for alerts and decisions none, a
warning for bans, throttles and freezes). The summaries are logged when the period is
over: at the next decision of the kind, or at the daemon's housekeeping tick
(:meth:`DecisionLog.flush`), and at stop. Nothing is lost: every decision is in the
ledger, ``aisentinel_decisions_total`` counts each one, and
``aisentinel_decision_lines_summarised_total`` those that were only summarised. Only
decision lines are budgeted: warnings and errors are never held back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import structlog

from aisentinel.events import Action, Decision, decision_fields, finding_fields

log = structlog.get_logger(__name__)

BRAKED_LINES = 10
"""Braked decisions logged one by one per :data:`BRAKED_PERIOD`."""
BRAKED_PERIOD = 60.0
"""Seconds (monotonic) of one period of the log's budgets."""
DECISION_LINES = 100
"""Decisions of one action and detector (not braked) logged one by one per period."""
TOP_TARGETS = 5
"""The most frequent targets a summary names."""
TRACKED_TARGETS = 1000
"""Distinct targets a period's summary counts at most (the first ones)."""
_ENFORCING = frozenset({Action.BAN, Action.THROTTLE, Action.FREEZE})


class _Held:
    """One action and detector's decisions of the current period: how many were logged,
    and of the others how many, the first and last target and the targets counted."""

    __slots__ = ("first", "held", "last", "logged", "targets")

    def __init__(self) -> None:
        self.logged = 0
        self.held = 0
        self.first = ""
        self.last = ""
        self.targets: Counter[str] = Counter()

    def hold(self, target: str) -> None:
        if not self.held:
            self.first = target
        self.last = target
        self.held += 1
        if target in self.targets or len(self.targets) < TRACKED_TARGETS:
            self.targets[target] += 1


class DecisionLog:
    """Logs decisions (call it with each one); braked ones as the module doc says."""

    __slots__ = (
        "_by_detector",
        "_decision_lines",
        "_first",
        "_groups",
        "_groups_since",
        "_last",
        "_lines",
        "_logged",
        "_monotonic",
        "_period",
        "_since",
        "held",
        "summarised",
    )

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        lines: int = BRAKED_LINES,
        period: float = BRAKED_PERIOD,
        decision_lines: int = DECISION_LINES,
    ) -> None:
        self._monotonic = monotonic
        self._lines = lines
        self._period = period
        self._decision_lines = decision_lines
        self._groups: dict[tuple[Action, str], _Held] = {}
        self._groups_since: float | None = None
        """When the current period of the other decisions began (None: none yet)."""
        self.summarised = 0
        """Decisions only counted in a summary line, not logged one by one (all runs'
        periods, those of the current one included)."""
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
            self._budgeted(decision)

    def _budgeted(self, decision: Decision) -> None:
        now = self._monotonic()
        if self._groups_since is None or now - self._groups_since >= self._period:
            self._flush_groups(now)
            self._groups_since = now
        key = (decision.action, decision.detector)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Held()
        if group.logged < self._decision_lines:
            group.logged += 1
            _line(decision)
            return
        group.hold("" if decision.target is None else decision.target.text)
        self.summarised += 1

    def _braked(self, decision: Decision) -> None:
        now = self._monotonic()
        if self._since is None or now - self._since >= self._period:
            self._flush_braked(now, force=True)
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
        self.summarised += 1
        self._by_detector[decision.detector] += 1

    def flush(self, now: float | None = None, *, force: bool = False) -> int:
        """Log the summaries of the decisions held back once their period is over (at
        once with ``force``); returns how many they summarised."""
        at = self._monotonic() if now is None else now
        done = 0
        since = self._groups_since
        if since is not None and (force or at - since >= self._period):
            done = self._flush_groups(at)
            self._groups_since = None
        return done + self._flush_braked(at, force=force)

    def _flush_groups(self, at: float) -> int:
        """Log one summary per action and detector that held decisions back; start afresh."""
        since = at if self._groups_since is None else self._groups_since
        done = 0
        for (action, detector), group in sorted(self._groups.items()):
            if not group.held:
                continue
            done += group.held
            emit = log.warning if action in _ENFORCING else log.info
            emit(
                "decisions over the log's budget, not logged one by one: every one is in "
                "the ledger and in aisentinel_decisions_total",
                action=action.value,
                detector=detector,
                not_logged=group.held,
                logged=group.logged,
                period_seconds=round(at - since, 1),
                first_target=group.first,
                last_target=group.last,
                top_targets=dict(group.targets.most_common(TOP_TARGETS)),
            )
        self._groups.clear()
        return done

    def _flush_braked(self, at: float, *, force: bool) -> int:
        held = self.held
        if not held:
            return 0
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
