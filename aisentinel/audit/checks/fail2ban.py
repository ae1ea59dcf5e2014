"""Brute-force protection: fail2ban running with jails for sshd and nginx auth.

aisentinel's own enforcement (ban responders the caller found at work: the CLI asks
the running daemon, the daemon its responder worker) satisfies the check by itself,
with that as the evidence. A ban responder configured but not at work (no daemon runs,
it is unhealthy) does not count: the caller's note saying so leads the evidence, and
fail2ban is judged alone.
"""

from __future__ import annotations

import re

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.commands import CommandError, ToolMissingError

FIX = (
    "apt install fail2ban, then /etc/fail2ban/jail.d/ai-server.local:\n"
    "  [sshd]\n  enabled = true\n"
    "  [nginx-http-auth]\n  enabled = true\n"
    "systemctl enable --now fail2ban && fail2ban-client status\n"
    "(or enable an aisentinel ban responder, e.g. [responders.nftables], with its daemon\n"
    " running: systemctl enable --now aisentinel)"
)

_NOT_RUNNING = ("is fail2ban running", "failed to access socket", "connection refused")


def parse_jails(text: str) -> list[str]:
    """Jail names from ``fail2ban-client status``; raises ``CannotCheckError`` without a list."""
    match = re.search(r"Jail list:\s*(.*)$", text, re.MULTILINE)
    if match is None:
        raise CannotCheckError("no 'Jail list' in fail2ban-client status output")
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


def _jails(ctx: AuditContext) -> Verdict:
    note = ctx.enforcement_note
    if ctx.enforcement:
        return Verdict.of(
            Status.PASS, [f"aisentinel enforces bans itself: {ctx.enforcement}", note]
        )
    try:
        verdict = _fail2ban(ctx)
    except (CannotCheckError, CommandError) as exc:
        if not note:
            raise
        raise CannotCheckError(f"{str(exc) or type(exc).__name__}; {note}") from None
    return Verdict.of(verdict.status, [note, *verdict.evidence], verdict.remediation)


def _fail2ban(ctx: AuditContext) -> Verdict:
    try:
        result = ctx.tool("fail2ban_client", "status")
    except ToolMissingError as exc:
        unused = "" if ctx.enforcement_note else "aisentinel enforcement is not enabled"
        return Verdict.of(Status.FAIL, [f"fail2ban: {exc}", unused], FIX)
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
