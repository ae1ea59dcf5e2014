"""Re-running the audit in the daemon on a schedule (APScheduler), feeding the collector.

Usage in the daemon::

    audit = AuditScheduler(config.audit, metrics_listen="127.0.0.1:9464")
    registry.register(audit.collector)
    audit.start()        # first audit at once, then every config.audit.interval
    ...
    audit.shutdown()

Each run gets a fresh :class:`AuditContext` (tool output is never reused between
runs), told how aisentinel bans as of that run: ``enforcement`` is asked each time
(the daemon answers from its responder worker: a responder found unhealthy, or gone
at a reload, no longer counts). Runs never overlap; a run that is late is merged with the next.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from aisentinel.audit.collector import AuditCollector
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import AuditContext
from aisentinel.audit.engine import run_audit
from aisentinel.audit.model import AuditReport
from aisentinel.clock import Clock, SystemClock

log = structlog.get_logger(__name__)

_JOB_ID = "aisentinel-audit"


class AuditScheduler:
    """Runs the audit every ``config.interval`` seconds in a background thread."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        metrics_listen: str = "",
        metrics_protection: str = "plain HTTP",
        enforcement: Callable[[], tuple[str | None, str]] | None = None,
        collector: AuditCollector | None = None,
        clock: Clock | None = None,
        context_factory: Callable[[], AuditContext] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.collector = collector or AuditCollector()
        self._metrics = (metrics_listen, metrics_protection)
        self._enforcement = enforcement or (lambda: (None, ""))
        self._context_factory = context_factory or self._host_context
        self._scheduler: BackgroundScheduler | None = None

    def _host_context(self) -> AuditContext:
        """A context reading the host, told how aisentinel bans as of now."""
        enforcement, note = self._enforcement()
        return AuditContext.for_host(
            self.config,
            metrics_listen=self._metrics[0],
            metrics_protection=self._metrics[1],
            enforcement=enforcement,
            enforcement_note=note,
            clock=self.clock,
        )

    def run_once(self) -> AuditReport | None:
        """Run one audit now and export it; logs and returns ``None`` if it broke."""
        try:
            report = run_audit(self._context_factory())
        except Exception:
            log.exception("audit run failed")
            return None
        self.collector.update(report)
        counts = report.counts()
        log.info("audit finished", **{status.value: n for status, n in counts.items()})
        return report

    def start(self) -> None:
        """Start the background scheduler; the first audit runs at once."""
        if self._scheduler is not None:
            raise RuntimeError("audit scheduler already started")
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.config.interval,
            id=_JOB_ID,
            next_run_time=datetime.fromtimestamp(self.clock.now(), UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.start()
        self._scheduler = scheduler

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the scheduler (waiting for a running audit when ``wait``); idempotent."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
