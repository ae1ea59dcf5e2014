"""Firewall: incoming traffic is dropped by default, and SSH stays reachable.

The state is read from ufw (when active), else nftables (``nft -j list ruleset``),
else iptables (``iptables -S``); the first backend that drops by default wins. The
exposure checks reuse the same state through :func:`firewall_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext, ToolName
from aisentinel.audit.fwstate import (
    FirewallParseError,
    FirewallState,
    Reach,
    parse_iptables_save,
    parse_nft_json,
    parse_ufw_status,
)
from aisentinel.audit.model import Status
from aisentinel.commands import CommandError


@dataclass(frozen=True, slots=True)
class FirewallReading:
    """The deciding backend's state, plus what the other backends said."""

    state: FirewallState
    notes: tuple[str, ...]


def firewall_state(ctx: AuditContext) -> FirewallReading:
    """The firewall as this run sees it (computed once per context).

    Raises :class:`CannotCheckError` when no backend could be read at all.
    """
    return ctx.memo("firewall", lambda: _read_firewall(ctx))


def _read_firewall(ctx: AuditContext) -> FirewallReading:
    notes: list[str] = []
    answered: list[FirewallState] = []
    steps: tuple[tuple[ToolName, tuple[str, ...], Callable[[str], FirewallState]], ...] = (
        ("ufw", ("status", "verbose"), parse_ufw_status),
        ("nft", ("-j", "list", "ruleset"), parse_nft_json),
        ("iptables", ("-S",), parse_iptables_save),
    )
    for tool, args, parse in steps:
        try:
            result = ctx.tool(tool, *args)
        except CommandError as exc:
            notes.append(str(exc))
            continue
        if not result.ok:
            notes.append(result.message())
            continue
        try:
            state = parse(result.stdout)
        except FirewallParseError as exc:
            notes.append(f"{tool}: {exc}")
            continue
        if state.active and state.default_deny:
            return FirewallReading(state, tuple(notes))
        notes.append(state.summary)
        answered.append(state)
    if not answered:
        raise CannotCheckError("no firewall tool could be read: " + "; ".join(notes))
    deciding = next((s for s in answered if s.active), answered[0])
    return FirewallReading(deciding, tuple(notes))


def ufw_fix(ssh_ports: tuple[int, ...]) -> str:
    """The ufw commands that turn on default deny without locking SSH out."""
    allow = "\n".join(f"ufw allow {port}/tcp" for port in ssh_ports)
    return (
        f"{allow}            # keep SSH reachable BEFORE enabling\n"
        "ufw default deny incoming\nufw default allow outgoing\nufw enable\n"
        "# or with nftables, in /etc/nftables.conf:\n"
        "#   chain input { type filter hook input priority 0; policy drop;\n"
        "#     ct state established,related accept; iif lo accept;\n"
        f"#     tcp dport {{ {', '.join(str(p) for p in ssh_ports)} }} accept }}"
    )


def _default_deny(ctx: AuditContext) -> Verdict:
    reading = firewall_state(ctx)
    state = reading.state
    ssh_ports = ctx.config.ssh_ports
    if not (state.active and state.default_deny):
        return Verdict.of(
            Status.FAIL,
            ["incoming connections are not dropped by default", *reading.notes],
            ufw_fix(ssh_ports),
        )
    evidence = [state.summary]
    reachable = [p for p in ssh_ports if state.access(p).reach is not Reach.CLOSED]
    if not reachable:
        ports = ", ".join(str(p) for p in ssh_ports)
        return Verdict.of(
            Status.WARN,
            [*evidence, f"no rule accepts SSH (port {ports}): remote admin access is blocked"],
            "\n".join(
                f"ufw allow {p}/tcp   # or: nft add rule inet filter input tcp dport {p} accept"
                for p in ssh_ports
            ),
        )
    for port in reachable:
        evidence.append(f"SSH port {port}: {state.access(port).describe()}")
    return Verdict.of(Status.PASS, evidence)


register(
    "firewall.default-deny",
    "Firewall drops incoming traffic by default, SSH allowed",
    _default_deny,
)
