"""Posture audit: the AI-server hardening checklist as code.

``aisentinel audit`` (see :mod:`aisentinel.audit.cli`) runs every check once and
prints which hardening steps are missing and how to fix each; the daemon re-runs
them with :class:`AuditScheduler` and exports them through :class:`AuditCollector`.
Checks live in :mod:`aisentinel.audit.checks`, one module per family, and read the
host only through an :class:`AuditContext` (paths, command runner, HTTP prober,
Docker inspector), so tests point them at fixtures or at real local stand-ins.
"""

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.collector import AuditCollector
from aisentinel.audit.config import AuditConfig, AuditTools
from aisentinel.audit.context import AuditContext
from aisentinel.audit.engine import run_audit, select_checks
from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.scheduler import AuditScheduler

__all__ = [
    "CHECKS",
    "AuditCollector",
    "AuditConfig",
    "AuditContext",
    "AuditReport",
    "AuditScheduler",
    "AuditTools",
    "CheckResult",
    "Status",
    "run_audit",
    "select_checks",
]
