"""Prometheus metrics of the latest audit, built at scrape time from the last report.

Series (one per check and status, so about 60 in all):

- ``aisentinel_audit_check_status{check="<id>",status="pass|fail|warn|unknown"}``:
  1 for the check's current status, 0 for the other three (the state-set pattern:
  alert on ``aisentinel_audit_check_status{status="fail"} == 1``);
- ``aisentinel_audit_checks{status=...}``: how many checks have each status;
- ``aisentinel_audit_last_run_timestamp_seconds``: when the last audit started;
- ``aisentinel_audit_duration_seconds``: how long it took.

Nothing is exported before the first audit has finished. Register with
``registry.register(collector)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from aisentinel.audit.model import AuditReport, Status

_STATUS_DOC = "Audit check status: 1 for the check's current status, 0 for the others."


class AuditCollector(Collector):
    """Holds the latest :class:`AuditReport`; thread-safe ``update`` and ``collect``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: AuditReport | None = None

    def update(self, report: AuditReport) -> None:
        """Replace the exported report."""
        with self._lock:
            self._report = report

    @property
    def report(self) -> AuditReport | None:
        """The report being exported, if any."""
        with self._lock:
            return self._report

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "aisentinel_audit_check_status", _STATUS_DOC, labels=["check", "status"]
            ),
            GaugeMetricFamily(
                "aisentinel_audit_checks", "Number of audit checks per status.", labels=["status"]
            ),
            GaugeMetricFamily(
                "aisentinel_audit_last_run_timestamp_seconds",
                "Unix time when the last audit started.",
            ),
            GaugeMetricFamily(
                "aisentinel_audit_duration_seconds", "Duration of the last audit in seconds."
            ),
        )

    def describe(self) -> Iterator[Metric]:
        """The metric names (so a registry detects collisions before the first audit)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        """The metrics of the current report; nothing before the first one."""
        report = self.report
        if report is None:
            return
        status_family, counts_family, last_run, duration = self._families()
        for result in report.results:
            for status in Status:
                status_family.add_metric(
                    [result.id, status.value], 1.0 if result.status is status else 0.0
                )
        for status, count in report.counts().items():
            counts_family.add_metric([status.value], float(count))
        last_run.add_metric([], report.started_at)
        duration.add_metric([], report.duration_seconds)
        yield status_family
        yield counts_family
        yield last_run
        yield duration
