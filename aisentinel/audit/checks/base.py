"""What a check is, and the registry of checks by id.

A check is a plain function ``(AuditContext) -> Verdict``. It may raise
:class:`CannotCheckError` (or let a :class:`~aisentinel.commands.CommandError`,
:class:`~aisentinel.audit.sockets.ProcNetError` or
:class:`~aisentinel.audit.context.DockerUnavailableError` escape): the engine turns
those into an ``unknown`` result carrying the reason, so a check that could not
look never passes. Each family module registers its checks in one line each::

    register("ssh.password-auth", "SSH password authentication is off", _password_auth)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.registry import Registry


class CannotCheckError(Exception):
    """The check could not establish the facts; the message is the reason."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check function returns; the engine adds id and title."""

    status: Status
    evidence: tuple[str, ...] = ()
    remediation: str = ""

    @classmethod
    def of(cls, status: Status, evidence: Iterable[str], remediation: str = "") -> Verdict:
        """A verdict from any iterable of evidence lines (empty lines dropped)."""
        lines = tuple(line for line in evidence if line)
        return cls(status, lines, remediation if status is not Status.PASS else "")


_SEVERITY = {Status.PASS: 0, Status.WARN: 1, Status.UNKNOWN: 2, Status.FAIL: 3}


def worse(status: Status, other: Status) -> Status:
    """The more severe of two statuses (pass < warn < unknown < fail)."""
    return other if _SEVERITY[other] > _SEVERITY[status] else status


CheckFunction = Callable[[AuditContext], Verdict]


@dataclass(frozen=True, slots=True)
class Check:
    """A registered check: stable id, one-line title (the hardened state), function."""

    id: str
    title: str
    function: CheckFunction


CHECKS: Registry[Check] = Registry("audit check")
"""Checks by id, in registration order (the order of the report)."""


def register(check_id: str, title: str, function: CheckFunction) -> Check:
    """Register one check under ``check_id`` (``family.name``)."""
    return CHECKS.register(check_id, AuditConfig, Check(check_id, title, function))
