"""Firewall: incoming traffic is dropped by default, and SSH stays reachable.

The state is read from ufw (when active; ``IPV6=no`` in ``/etc/default/ufw`` leaves
IPv6 unfiltered), else nftables (``nft -j list ruleset``; an ``ip`` table covers IPv4
only, ``ip6`` IPv6 only, ``inet`` both), else iptables (``iptables -S`` for IPv4 and
``ip6tables -S`` for IPv6); the first backend that drops some family by default
wins. Default deny is judged per IP family: one left unfiltered fails while the host
has IPv6 (``<proc_root>/net/tcp6`` exists). The exposure checks reuse the same state
through :func:`firewall_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.context import AuditContext, ToolName
from aisentinel.audit.fwstate import (
    BOTH,
    FirewallParseError,
    FirewallState,
    Reach,
    merge_families,
    parse_iptables_save,
    parse_nft_json,
    parse_ufw_status,
    ufw_ipv6_enabled,
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
        ("ufw", ("status", "verbose"), partial(parse_ufw_status, ipv6=_ufw_ipv6(ctx))),
        ("nft", ("-j", "list", "ruleset"), parse_nft_json),
        ("iptables", ("-S",), parse_iptables_save),
    )
    for tool, args, parse in steps:
        state = _read_one(ctx, tool, args, parse, notes)
        if state is None:
            continue
        if tool == "iptables":
            v6 = _read_one(ctx, "ip6tables", args, partial(parse_iptables_save, family=6), notes)
            if v6 is not None:
                state = merge_families(state, v6)
        if state.default_deny:
            return FirewallReading(state, tuple(notes))
        notes.append(state.summary)
        answered.append(state)
    if not answered:
        raise CannotCheckError("no firewall tool could be read: " + "; ".join(notes))
    deciding = next((s for s in answered if s.active), answered[0])
    return FirewallReading(deciding, tuple(notes))


def _read_one(
    ctx: AuditContext,
    tool: ToolName,
    args: tuple[str, ...],
    parse: Callable[[str], FirewallState],
    notes: list[str],
) -> FirewallState | None:
    """One backend's state, or ``None`` with the reason added to ``notes``."""
    try:
        result = ctx.tool(tool, *args)
    except CommandError as exc:
        notes.append(str(exc))
        return None
    if not result.ok:
        notes.append(result.message())
        return None
    try:
        return parse(result.stdout)
    except FirewallParseError as exc:
        notes.append(f"{tool}: {exc}")
        return None


def _ufw_ipv6(ctx: AuditContext) -> bool:
    """Whether ufw filters IPv6 (``IPV6=`` in ``[audit] ufw_defaults``; absent: yes)."""
    try:
        text = ctx.config.ufw_defaults.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return ufw_ipv6_enabled(text)


def host_has_ipv6(ctx: AuditContext) -> bool:
    """Whether the host has IPv6 (the kernel lists ``<proc_root>/net/tcp6``)."""
    return (ctx.config.proc_root / "net" / "tcp6").exists()


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
    if not state.default_deny:
        return Verdict.of(
            Status.FAIL,
            ["incoming connections are not dropped by default", *reading.notes],
            ufw_fix(ssh_ports),
        )
    evidence = [state.summary]
    missing = sorted(BOTH - state.deny)
    if missing and (missing != [6] or host_has_ipv6(ctx)):
        gap = " and ".join(f"IPv{f}" for f in missing)
        return Verdict.of(
            Status.FAIL,
            [*evidence, f"{gap} incoming connections are not dropped by default", *reading.notes],
            ufw_fix(ssh_ports)
            + "\n# nftables: use a `table inet` chain (IPv4 and IPv6), not `table ip`;"
            "\n# iptables: set the same policy with ip6tables (ip6tables -P INPUT DROP);"
            "\n# ufw: IPV6=yes in /etc/default/ufw, then ufw reload",
        )
    if missing:
        evidence.append("IPv6 not filtered, but this host has no IPv6 (no net/tcp6)")
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
