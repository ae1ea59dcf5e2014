"""Prometheus metrics, composed at scrape time from the collectors the stages own.

Every source, detector and the pipeline reports its own metric families
(``collect()``, built from the counters it already keeps: no double bookkeeping,
and series of a removed source disappear with it). :class:`Exporter` runs each
stage collector in turn, merges families of the same name, and reports on the
collectors themselves, like node_exporter's per-collector success and duration:
``aisentinel_collector_up``, ``aisentinel_collector_duration_seconds``,
``aisentinel_collector_last_success_timestamp_seconds`` and
``aisentinel_collector_errors_total``, per ``collector``. A collector that raises
loses its own families for that scrape, is logged once per kind of fault and
counted; the others are served. Labels are bounded (source, detector, action,
severity, responder, operation, collector): never an address. Metrics live in the
daemon's private registry, never the global one.

This module never imports the daemon: the daemon hands in the stage collectors
and small callables for its own values (:class:`DaemonValues`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aisentinel import __version__
from aisentinel.clock import Clock
from aisentinel.decisions.engine import DecisionCounters
from aisentinel.metrics import Collecting

log = structlog.get_logger(__name__)

DEGRADABLE = ("control", "exporter", "ledger", "log", "state")
"""Components that can run degraded: always exported, so an alert needs no absent()."""

Stages = Callable[[], Iterable[tuple[str, Collecting]]]
"""The stage collectors to read now, each with its ``collector`` label value."""


@dataclass(frozen=True, slots=True)
class DaemonValues:
    """What the daemon itself exports, as callables read at scrape time."""

    heartbeat: Callable[[], float]
    """When the pipeline loop last proved it was alive (Unix time)."""
    reloads: Callable[[], Mapping[str, int]]
    """Config reloads per result (ok, failed)."""
    queue_depth: Callable[[], int]
    """Batches read but not yet processed."""
    degraded: Callable[[], Mapping[str, str]]
    """Components running degraded now, each with why."""
    ledgers_lost: Callable[[], int] = lambda: 0
    """Ledger files whose bans could not be restored at start."""
    keeping_held: Callable[[], bool] = lambda: False
    """Whether reconciles only add (the ledger is not the whole truth)."""
    decisions_summarised: Callable[[], int] = lambda: 0
    """Decisions the decision log only counted in a summary line."""
    sources_configured: Callable[[], int] = lambda: 0
    """Log sources in the running config."""


class DaemonMetrics:
    """The daemon-level families: build info, heartbeat, reloads, queue, degraded."""

    def __init__(self, values: DaemonValues) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        """The families, from :class:`DaemonValues`."""
        v = self.values
        info = GaugeMetricFamily("aisentinel_build_info", "aisentinel version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        beat = GaugeMetricFamily(
            "aisentinel_pipeline_heartbeat_timestamp_seconds",
            "When the pipeline loop last proved it was alive (Unix time).",
        )
        beat.add_metric([], v.heartbeat())
        yield beat
        reloads = CounterMetricFamily(
            "aisentinel_config_reloads",
            "Config reloads (SIGHUP), per result; a failed one keeps the running config.",
            labels=["result"],
        )
        for result, n in sorted(v.reloads().items()):
            reloads.add_metric([result], n)
        yield reloads
        queued = GaugeMetricFamily(
            "aisentinel_pipeline_queue_batches", "Line batches read but not yet processed."
        )
        queued.add_metric([], v.queue_depth())
        yield queued
        degraded = v.degraded()
        gauge = GaugeMetricFamily(
            "aisentinel_degraded",
            "1 while a component runs degraded (the log says why and what to do), else 0.",
            labels=["component"],
        )
        for component in sorted(set(DEGRADABLE) | set(degraded)):
            gauge.add_metric([component], 1 if component in degraded else 0)
        yield gauge
        lost = CounterMetricFamily(
            "aisentinel_ledger_lost",
            "Ledger files whose bans could not be restored at start (unreadable: moved aside, "
            "or not readable by the daemon's user); the responders keep what they enforce "
            "until `aisentinel ledger accept`.",
        )
        lost.add_metric([], v.ledgers_lost())
        yield lost
        held = GaugeMetricFamily(
            "aisentinel_ledger_keeping_held",
            "1 while every reconcile only adds, never lifts (a ledger was lost, this run or "
            "an earlier one, until `aisentinel ledger accept`; or it is kept in memory), "
            "else 0.",
        )
        held.add_metric([], 1 if v.keeping_held() else 0)
        yield held
        summarised = CounterMetricFamily(
            "aisentinel_decision_lines_summarised",
            "Decisions not logged one by one but counted in a summary line (over the "
            "decision log's budget per detector and minute, or held back by the brake).",
        )
        summarised.add_metric([], v.decisions_summarised())
        yield summarised
        sources = GaugeMetricFamily(
            "aisentinel_sources_configured",
            "Sources in the config ([[sources]]); 0: nothing is read, so nothing is seen.",
        )
        sources.add_metric([], v.sources_configured())
        yield sources


class DecisionMetrics:
    """The decision engine's families, from its counters."""

    def __init__(self, counters: Callable[[], DecisionCounters]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        """Bans in force, braked, expired; ledger errors; rejected targets per reason."""
        c = self.counters()
        active = GaugeMetricFamily("aisentinel_decisions_active", "Bans in force now.")
        active.add_metric([], c.active_bans)
        yield active
        braked = CounterMetricFamily(
            "aisentinel_bans_braked",
            "Bans turned into alerts by the mass-ban brake.",
        )
        braked.add_metric([], c.bans_braked)
        yield braked
        tripped = GaugeMetricFamily(
            "aisentinel_brake_tripped",
            "1 while the storm brake is tripped (new bans are alerts until `aisentinel brake "
            "reset` or the rate stays low for brake_cooldown).",
        )
        tripped.add_metric([], 0 if c.brake_tripped_since is None else 1)
        yield tripped
        since = GaugeMetricFamily(
            "aisentinel_brake_tripped_since_seconds",
            "When the storm brake tripped (Unix time); 0 while it is not tripped.",
        )
        since.add_metric([], c.brake_tripped_since or 0.0)
        yield since
        expired = CounterMetricFamily("aisentinel_bans_expired", "Bans whose TTL ran out.")
        expired.add_metric([], c.expired)
        yield expired
        ledger = CounterMetricFamily("aisentinel_ledger_errors", "Decision ledger (sqlite) errors.")
        ledger.add_metric([], c.ledger_errors)
        yield ledger
        size = GaugeMetricFamily(
            "aisentinel_ledger_size_bytes",
            "Bytes the decision ledger takes on disk (its file and write-ahead log; 0 in memory).",
        )
        size.add_metric([], c.ledger_bytes)
        yield size
        rejected = CounterMetricFamily(
            "aisentinel_decisions_rejected",
            "Finding addresses refused as ban targets (decision none), per reason: invalid, "
            "loopback, allowlisted, unspecified, broadcast, multicast, link_local, reserved.",
            labels=["reason"],
        )
        for reason, n in c.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected


class Exporter(Collector):
    """Every stage collector's families, merged, plus how each collector fared."""

    def __init__(self, stages: Stages, daemon: DaemonValues, clock: Clock) -> None:
        self.stages = stages
        self.daemon = DaemonMetrics(daemon)
        self.clock = clock
        self._last_success: dict[str, float] = {}
        self._errors: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the registry then calls ``collect`` only at scrape time."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families for one scrape."""
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "aisentinel_collector_up",
            "1 when the collector's last scrape succeeded, 0 when it raised (its metrics "
            "are missing from that scrape; the log says why).",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "aisentinel_collector_duration_seconds",
            "How long the collector took in the last scrape.",
            labels=["collector"],
        )
        last = GaugeMetricFamily(
            "aisentinel_collector_last_success_timestamp_seconds",
            "When the collector last succeeded (Unix time; 0: never).",
            labels=["collector"],
        )
        errors = CounterMetricFamily(
            "aisentinel_collector_errors",
            "Scrapes in which the collector raised.",
            labels=["collector"],
        )
        for name, stage in [("daemon", self.daemon), *self._stages()]:
            started = self.clock.monotonic()
            ok = self._run(name, stage, merged)
            up.add_metric([name], 1 if ok else 0)
            duration.add_metric([name], max(0.0, self.clock.monotonic() - started))
            last.add_metric([name], self._last_success.get(name, 0.0))
            errors.add_metric([name], self._errors.get(name, 0))
        yield from merged.values()
        yield from (up, duration, last, errors)

    def _stages(self) -> list[tuple[str, Collecting]]:
        try:
            return list(self.stages())
        except Exception as exc:  # noqa: BLE001 - a scrape must never fail as a whole
            self._failed("stages", exc)
            return []

    def _run(self, name: str, stage: Collecting, merged: dict[str, Metric]) -> bool:
        """Add ``stage``'s families to ``merged``; False (nothing added) when it raised."""
        try:
            families = list(stage.collect())
        except Exception as exc:  # noqa: BLE001 - one failing collector never breaks the scrape
            self._failed(name, exc)
            return False
        for family in families:
            known = merged.get(family.name)
            if known is None:
                known = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            known.samples.extend(family.samples)
        self._last_success[name] = self.clock.now()
        return True

    def _failed(self, name: str, exc: Exception) -> None:
        self._errors[name] = self._errors.get(name, 0) + 1
        kind = (name, type(exc).__name__)
        if kind in self._logged:
            return
        self._logged.add(kind)
        log.error(
            "metrics collector failed; its metrics are missing from this scrape",
            collector=name,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )
