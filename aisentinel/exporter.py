"""Prometheus metrics, built fresh at scrape time from the daemon's own state.

One custom collector (client_python style) reads the counters that the sources,
pipeline, detectors, decision engine and responder runner already keep: no double
bookkeeping, and series of a removed source disappear by themselves. Labels are
bounded (source, detector, action, severity, responder, operation): never an
address. Metrics live in the daemon's private registry, never the global one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aisentinel import __version__
from aisentinel.sources.base import SOURCE_STATES

if TYPE_CHECKING:
    from aisentinel.daemon import Daemon

DEGRADABLE = ("exporter", "ledger", "state")
"""Components that can run degraded: always exported, so an alert needs no absent()."""


class DaemonCollector(Collector):
    """Everything the daemon exports except the latency histogram (its own metric)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the registry then calls ``collect`` only at scrape time."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families for one scrape."""
        d = self.daemon
        info = GaugeMetricFamily("aisentinel_build_info", "aisentinel version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._sources()
        yield from self._pipeline()
        yield from self._decisions()
        yield from self._responders()
        yield from self._degraded()
        beat = GaugeMetricFamily(
            "aisentinel_pipeline_heartbeat_timestamp_seconds",
            "When the pipeline loop last proved it was alive (Unix time).",
        )
        beat.add_metric([], d.last_heartbeat)
        yield beat
        reloads = CounterMetricFamily(
            "aisentinel_config_reloads",
            "Config reloads (SIGHUP), per result; a failed one keeps the running config.",
            labels=["result"],
        )
        for result, n in sorted(d.reloads.items()):
            reloads.add_metric([result], n)
        yield reloads
        queued = GaugeMetricFamily(
            "aisentinel_pipeline_queue_batches", "Line batches read but not yet processed."
        )
        queued.add_metric([], d.queue.qsize())
        yield queued

    def _sources(self) -> Iterator[Metric]:
        d = self.daemon
        lines = CounterMetricFamily(
            "aisentinel_source_lines_read",
            "Lines (for an event source: records, e.g. journal entries) read from the source.",
            labels=["source"],
        )
        parsed = CounterMetricFamily(
            "aisentinel_source_lines_parsed",
            "Lines or records turned into events.",
            labels=["source"],
        )
        unparsed = CounterMetricFamily(
            "aisentinel_source_lines_unparsed",
            "Lines or records that gave no event (malformed or irrelevant); counted and skipped.",
            labels=["source"],
        )
        dropped = CounterMetricFamily(
            "aisentinel_source_lines_dropped",
            "Lines or records read but not processed: the pipeline was closing (shutdown) "
            "and could not take their batch.",
            labels=["source"],
        )
        truncated = CounterMetricFamily(
            "aisentinel_source_lines_truncated",
            "Lines cut at the line size cap.",
            labels=["source"],
        )
        rotations = CounterMetricFamily(
            "aisentinel_source_rotations", "Log rotations followed.", labels=["source"]
        )
        errors = CounterMetricFamily(
            "aisentinel_source_errors", "Read errors (retried).", labels=["source"]
        )
        up = GaugeMetricFamily(
            "aisentinel_source_up",
            "1 when every log the source reads is open and followed (a pattern: one match), "
            "else 0.",
            labels=["source"],
        )
        state = GaugeMetricFamily(
            "aisentinel_source_state",
            "1 for the source's current state (following, degraded, waiting, error, "
            "stopped), 0 for the others; the reason is in the log.",
            labels=["source", "state"],
        )
        position_errors = CounterMetricFamily(
            "aisentinel_source_position_errors",
            "Failures to load or save read positions (reading goes on; a restart may "
            "skip or repeat lines).",
            labels=["source"],
        )
        gaps = CounterMetricFamily(
            "aisentinel_source_gaps",
            "Stretches of log not read: a file rotated while stopped that is gone or unreadable.",
            labels=["source"],
        )
        lag_bytes = GaugeMetricFamily(
            "aisentinel_source_lag_bytes", "Bytes written but not read yet.", labels=["source"]
        )
        lag_seconds = GaugeMetricFamily(
            "aisentinel_source_lag_seconds",
            "Age of the oldest unread data (lower bound), 0 when caught up.",
            labels=["source"],
        )
        counters = d.pipeline.sources
        for cfg in d.config.sources:
            name = cfg.name
            c = counters.get(name)
            parsed.add_metric([name], c.parsed if c else 0)
            unparsed.add_metric([name], c.unparsed if c else 0)
            source = d.sources.get(name)
            if source is None:  # configured, but it failed to start
                up.add_metric([name], 0)
                for value in SOURCE_STATES:
                    state.add_metric([name, value], 1 if value == "error" else 0)
                continue
            st = source.stats
            lines.add_metric([name], st.lines_read)
            dropped.add_metric([name], st.lines_dropped)
            truncated.add_metric([name], st.lines_truncated)
            rotations.add_metric([name], st.rotations)
            errors.add_metric([name], st.errors)
            up.add_metric([name], 1 if st.up else 0)
            current = st.state
            for value in SOURCE_STATES:
                state.add_metric([name, value], 1 if value == current else 0)
            position_errors.add_metric([name], st.position_errors)
            gaps.add_metric([name], st.gaps)
            lag_bytes.add_metric([name], st.lag_bytes)
            lag_seconds.add_metric([name], st.lag_seconds)
        yield from (lines, parsed, unparsed, dropped, truncated, rotations, errors, up, state)
        yield from (position_errors, gaps, lag_bytes, lag_seconds)

    def _pipeline(self) -> Iterator[Metric]:
        p = self.daemon.pipeline
        findings = CounterMetricFamily(
            "aisentinel_findings",
            "Findings raised, per detector and severity.",
            labels=["detector", "severity"],
        )
        for (detector, severity), n in sorted(p.findings.items()):
            findings.add_metric([detector, severity], n)
        yield findings
        keys = GaugeMetricFamily(
            "aisentinel_detector_tracked_keys",
            "Keys (addresses, usernames) a detector holds in its windows.",
            labels=["detector"],
        )
        for name, n in sorted(p.tracked_keys().items()):
            keys.add_metric([name], n)
        yield keys
        errors = CounterMetricFamily(
            "aisentinel_pipeline_event_errors",
            "Lines or events skipped because a stage raised on them, per stage (parse, detect, "
            "decide, respond, output) and plug-in (parser, detector, engine, runner or hook).",
            labels=["stage", "plugin"],
        )
        for (stage, plugin), n in sorted(p.event_errors.items()):
            errors.add_metric([stage, plugin], n)
        yield errors

    def _decisions(self) -> Iterator[Metric]:
        d = self.daemon
        decisions = CounterMetricFamily(
            "aisentinel_decisions",
            "Decisions taken, per action (ban, alert, none) and detector.",
            labels=["action", "detector"],
        )
        for (action, detector), n in sorted(d.pipeline.decisions.items()):
            decisions.add_metric([action, detector], n)
        yield decisions
        c = d.engine.counters()
        active = GaugeMetricFamily("aisentinel_decisions_active", "Bans in force now.")
        active.add_metric([], c.active_bans)
        yield active
        braked = CounterMetricFamily(
            "aisentinel_bans_braked",
            "Bans turned into alerts by the mass-ban brake.",
        )
        braked.add_metric([], c.bans_braked)
        yield braked
        expired = CounterMetricFamily("aisentinel_bans_expired", "Bans whose TTL ran out.")
        expired.add_metric([], c.expired)
        yield expired
        ledger = CounterMetricFamily("aisentinel_ledger_errors", "Decision ledger (sqlite) errors.")
        ledger.add_metric([], c.ledger_errors)
        yield ledger
        rejected = CounterMetricFamily(
            "aisentinel_decisions_rejected",
            "Finding addresses refused as ban targets (decision none), per reason: invalid, "
            "loopback, allowlisted, unspecified, broadcast, multicast, link_local, reserved.",
            labels=["reason"],
        )
        for reason, n in c.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected

    def _responders(self) -> Iterator[Metric]:
        runner = self.daemon.runner
        ops = CounterMetricFamily(
            "aisentinel_responder_operations",
            "Responder calls, per responder, operation and result (ok, failed, retried, given_up).",
            labels=["responder", "operation", "result"],
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
        for st in runner.stats():
            for result, table in (
                ("ok", st.ok),
                ("failed", st.failed),
                ("retried", st.retried),
                ("given_up", st.given_up),
            ):
                for op, n in table.items():
                    ops.add_metric([st.name, op.value, result], n)
            pending.add_metric([st.name], st.pending)
            up.add_metric([st.name], 1 if st.health is None or st.health.ok else 0)
        yield from (ops, pending, up)

    def _degraded(self) -> Iterator[Metric]:
        degraded = self.daemon.degraded
        gauge = GaugeMetricFamily(
            "aisentinel_degraded",
            "1 while a component runs degraded (the log says why and what to do), else 0.",
            labels=["component"],
        )
        for component in sorted(set(DEGRADABLE) | set(degraded)):
            gauge.add_metric([component], 1 if component in degraded else 0)
        yield gauge
