"""systemd: AI units run with ``MemoryMax`` and ``CPUQuota`` limits.

Read with ``systemctl show``; where systemd is not running, from the unit files
under ``unit_dirs``. A unit that is not installed is reported as such and passes.
"""

from __future__ import annotations

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.audit.units import systemctl_show, systemd_absent, unit_limits

_UNLIMITED = ("", "infinity")


def _limits(ctx: AuditContext, unit: str) -> tuple[dict[str, str], str] | None:
    """``({"MemoryMax": ..., "CPUQuota": ...}, origin)``, or ``None`` if not installed."""
    shown = systemctl_show(ctx, unit, "MemoryMax", "CPUQuotaPerSecUSec")
    if isinstance(shown, dict):
        props = {key: values[-1] for key, values in shown.items()}
        if props.get("LoadState") == "not-found":
            return None
        limits = {
            "MemoryMax": props.get("MemoryMax", ""),
            "CPUQuota": props.get("CPUQuotaPerSecUSec", ""),
        }
        return limits, "systemctl show"
    reason = shown
    from_files = unit_limits(ctx.config.unit_dirs, unit)
    if from_files is None:
        if ctx.has_tool("systemctl") and not systemd_absent(reason):
            raise CannotCheckError(reason)
        return None
    return from_files, "unit files (systemctl unavailable)"


def _resource_limits(ctx: AuditContext) -> Verdict:
    lines = []
    missing_units = []
    for unit in ctx.config.ai_units:
        found = _limits(ctx, unit)
        if found is None:
            lines.append(f"{unit}: not installed")
            continue
        limits, origin = found
        missing = [key for key in ("MemoryMax", "CPUQuota") if limits.get(key, "") in _UNLIMITED]
        shown = ", ".join(f"{k}={limits.get(k) or 'unset'}" for k in ("MemoryMax", "CPUQuota"))
        lines.append(f"{unit}: {shown} ({origin})")
        if missing:
            missing_units.append(unit)
    if not missing_units:
        return Verdict.of(Status.PASS, lines)
    fix = (
        "\n".join(
            f"systemctl set-property {unit} MemoryMax=48G CPUQuota=800%   # size to the host"
            for unit in missing_units
        )
        + "\n# or a drop-in [Service] section with MemoryMax= and CPUQuota= (systemctl edit <unit>)"
    )
    return Verdict.of(Status.FAIL, lines, fix)


register(
    "systemd.resource-limits", "AI systemd units have MemoryMax and CPUQuota", _resource_limits
)
