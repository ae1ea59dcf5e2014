"""Brute-force protection: fail2ban running with jails for sshd and nginx auth.

aisentinel's own enforcement (a ban responder the caller reports as enabled)
satisfies the check by itself, with that as the evidence.
"""

from __future__ import annotations

import re

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.commands import ToolMissingError

FIX = (
    "apt install fail2ban, then /etc/fail2ban/jail.d/ai-server.local:\n"
    "  [sshd]\n  enabled = true\n"
    "  [nginx-http-auth]\n  enabled = true\n"
    "systemctl enable --now fail2ban && fail2ban-client status\n"
    "(or enable an aisentinel ban responder, e.g. [responders.nftables])"
)

_NOT_RUNNING = ("is fail2ban running", "failed to access socket", "connection refused")


def parse_jails(text: str) -> list[str]:
    """Jail names from ``fail2ban-client status``; raises ``CannotCheckError`` without a list."""
    match = re.search(r"Jail list:\s*(.*)$", text, re.MULTILINE)
    if match is None:
        raise CannotCheckError("no 'Jail list' in fail2ban-client status output")
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


def _jails(ctx: AuditContext) -> Verdict:
    if ctx.enforcement:
        return Verdict.of(Status.PASS, [f"aisentinel enforces bans itself: {ctx.enforcement}"])
    try:
        result = ctx.tool("fail2ban_client", "status")
    except ToolMissingError as exc:
        return Verdict.of(
            Status.FAIL, [f"fail2ban: {exc}", "aisentinel enforcement is not enabled"], FIX
        )
    if not result.ok:
        message = result.message()
        if any(marker in message.lower() for marker in _NOT_RUNNING):
            return Verdict.of(
                Status.FAIL, [f"fail2ban is installed but not running: {message}"], FIX
            )
        raise CannotCheckError(message)
    jails = parse_jails(result.stdout)
    evidence = [f"fail2ban jails: {', '.join(jails) or 'none'}"]
    missing = []
    if not any("ssh" in jail for jail in jails):
        missing.append("sshd")
    if ctx.has_tool("nginx") and not any("nginx" in jail for jail in jails):
        missing.append("nginx-http-auth")
    if missing:
        return Verdict.of(Status.FAIL, [*evidence, f"missing jails: {', '.join(missing)}"], FIX)
    return Verdict.of(Status.PASS, evidence)


register("fail2ban.jails", "fail2ban (or aisentinel) bans sshd and nginx auth abusers", _jails)
