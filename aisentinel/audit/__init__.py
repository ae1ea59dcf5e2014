"""Posture audit: the AI-server hardening checklist as code.

``aisentinel audit`` (see :mod:`aisentinel.audit.cli`) runs every check once and
prints which hardening steps are missing and how to fix each; the daemon re-runs
them with :class:`AuditScheduler` and exports them through :class:`AuditCollector`.
Checks live in :mod:`aisentinel.audit.checks`, one module per family, and read the
host only through an :class:`AuditContext` (paths, command runner, HTTP prober,
Docker inspector), so tests point them at fixtures or at real local stand-ins.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports are resolved on first use (PEP 562): `aisentinel.audit.config` is imported by
# every command for config validation, and must not pull in every check module.
_EXPORTS = {
    "CHECKS": "aisentinel.audit.checks",
    "AuditCollector": "aisentinel.audit.collector",
    "AuditConfig": "aisentinel.audit.config",
    "AuditTools": "aisentinel.audit.config",
    "AuditContext": "aisentinel.audit.context",
    "run_audit": "aisentinel.audit.engine",
    "select_checks": "aisentinel.audit.engine",
    "AuditReport": "aisentinel.audit.model",
    "CheckResult": "aisentinel.audit.model",
    "Status": "aisentinel.audit.model",
    "AuditScheduler": "aisentinel.audit.scheduler",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aisentinel.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
