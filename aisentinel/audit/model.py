"""The audit's results: one :class:`CheckResult` per check, gathered in an :class:`AuditReport`.

Statuses mean:

- ``pass``: the check ran and the host is hardened on this point (evidence says why);
- ``fail``: the check ran and found a hardening gap; ``remediation`` says the fix;
- ``warn``: a weaker gap, or a state that needs a human look;
- ``unknown``: the check could not run (tool missing, no permission, timeout, no
  engine); ``evidence`` gives the reason. An ``unknown`` is never turned into a pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Status(enum.StrEnum):
    """Outcome of one check."""

    PASS = "pass"  # noqa: S105 - a check status, not a password
    FAIL = "fail"
    WARN = "warn"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check.

    ``id`` is stable (``family.name``, e.g. ``ssh.password-auth``) and is the label
    in metrics and the key for ``--only``. ``evidence`` holds short facts, one per
    line, that led to the status. ``remediation`` is the exact command or config
    snippet that fixes a ``fail``/``warn`` (empty on a pass).
    """

    id: str
    title: str
    status: Status
    evidence: tuple[str, ...] = ()
    remediation: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "evidence": list(self.evidence),
            "remediation": self.remediation,
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """All results of one audit run, in check order, with when and how long it ran."""

    results: tuple[CheckResult, ...]
    started_at: float
    duration_seconds: float

    def counts(self) -> dict[Status, int]:
        """Number of results per status (every status present, possibly 0)."""
        out = dict.fromkeys(Status, 0)
        for result in self.results:
            out[result.status] += 1
        return out

    def exit_code(self) -> int:
        """0 when nothing failed and every check ran, 1 when any check failed, else 2.

        A ``warn`` does not change the exit code; an ``unknown`` (a check that could
        not run) gives 2 unless something failed, so an incomplete audit never
        reads as a clean one.
        """
        counts = self.counts()
        if counts[Status.FAIL]:
            return 1
        if counts[Status.UNKNOWN]:
            return 2
        return 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the ``--json`` output)."""
        return {
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 6),
            "counts": {status.value: n for status, n in self.counts().items()},
            "exit_code": self.exit_code(),
            "results": [result.to_dict() for result in self.results],
        }


def evidence(lines: Iterable[str]) -> tuple[str, ...]:
    """Evidence lines as a tuple, dropping empty ones."""
    return tuple(line for line in lines if line)
