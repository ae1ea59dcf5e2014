"""Running the checks and collecting an :class:`~aisentinel.audit.model.AuditReport`.

Checks run concurrently (they mostly wait on subprocesses and sockets); the report
keeps registration order. Any exception out of a check becomes an ``unknown``
result with the reason: a known "cannot look" error gives its message, anything
else is logged as an internal error. No check can crash the audit or pass by
accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from aisentinel.audit.checks import CHECKS, CannotCheckError, Check
from aisentinel.audit.context import AuditContext, DockerUnavailableError
from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.sockets import ProcNetError
from aisentinel.commands import CommandError

log = structlog.get_logger(__name__)

_CANNOT_LOOK = (
    CannotCheckError,
    CommandError,
    ProcNetError,
    DockerUnavailableError,
    PermissionError,
)
_WORKERS = 6


class UnknownCheckError(ValueError):
    """A check id that is not registered."""


def select_checks(only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[Check]:
    """Registered checks in order, limited to ``only`` (if given) minus ``skip``.

    Raises :class:`UnknownCheckError` naming any id that does not exist.
    """
    wanted = list(only) if only is not None else None
    skipped = set(skip)
    unknown = [cid for cid in [*(wanted or []), *skipped] if cid not in CHECKS]
    if unknown:
        raise UnknownCheckError(
            f"unknown check id(s) {', '.join(unknown)}; known: {', '.join(CHECKS.names())}"
        )
    return [
        entry.factory
        for entry in CHECKS
        if (wanted is None or entry.name in wanted) and entry.name not in skipped
    ]


def run_check(check: Check, ctx: AuditContext) -> CheckResult:
    """Run one check; never raises."""
    try:
        verdict = check.function(ctx)
    except _CANNOT_LOOK as exc:
        return CheckResult(check.id, check.title, Status.UNKNOWN, (str(exc) or type(exc).__name__,))
    except Exception as exc:  # a broken check must not break the audit
        log.exception("audit check crashed", check=check.id)
        return CheckResult(
            check.id, check.title, Status.UNKNOWN, (f"internal error: {type(exc).__name__}: {exc}",)
        )
    return CheckResult(check.id, check.title, verdict.status, verdict.evidence, verdict.remediation)


def run_audit(ctx: AuditContext, checks: Sequence[Check] | None = None) -> AuditReport:
    """Run ``checks`` (default: all but ``config.skip``) against ``ctx``."""
    selected = list(checks) if checks is not None else select_checks(skip=ctx.config.skip)
    started = ctx.clock.now()
    begin = ctx.clock.monotonic()
    if not selected:
        return AuditReport((), started, 0.0)
    with ThreadPoolExecutor(
        max_workers=min(_WORKERS, len(selected)), thread_name_prefix="audit"
    ) as pool:
        results = tuple(pool.map(lambda check: run_check(check, ctx), selected))
    return AuditReport(results, started, max(0.0, ctx.clock.monotonic() - begin))
