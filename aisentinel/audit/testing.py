"""Test helpers shipped with the audit: fake prober, fake Docker, a context builder.

Used by aisentinel's own tests and usable by anyone writing a check::

    ctx = make_context(runner=FakeRunner({("sshd", "-T"): FakeRunner.ok(["sshd", "-T"], text)}))
    result = run_check(CHECKS.get("ssh.password-auth").factory, ctx)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import (
    AuditContext,
    DockerInspector,
    DockerUnavailableError,
    ProbeResult,
)
from aisentinel.clock import FakeClock
from aisentinel.commands import CommandRunner, FakeRunner


@dataclass
class FakeProber:
    """Answers GETs from ``{url: status}`` (and ``{url: body}``, given only to a caller
    that asks for the body); an unlisted URL gets "connection refused"."""

    statuses: Mapping[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    bodies: Mapping[str, bytes] = field(default_factory=dict)

    def get(self, url: str, *, timeout: float, read_body: bool = False) -> ProbeResult:
        self.calls.append(url)
        status = self.statuses.get(url)
        if status is None:
            return ProbeResult(url, None, "connection refused (fake)")
        return ProbeResult(url, status, body=self.bodies.get(url, b"") if read_body else b"")


def fake_docker(containers: Sequence[Mapping[str, Any]]) -> DockerInspector:
    """An inspector returning ``containers`` (inspect data as the Engine API gives it)."""

    def inspect(timeout: float) -> list[Mapping[str, Any]]:
        return list(containers)

    return inspect


def no_docker(reason: str = "no Docker engine (fake)") -> DockerInspector:
    """An inspector that finds no engine."""

    def inspect(timeout: float) -> list[Mapping[str, Any]]:
        raise DockerUnavailableError(reason)

    return inspect


def empty_proc(root: Path) -> Path:
    """A fake proc root under ``root`` with no listening sockets; returns it."""
    net = root / "proc" / "net"
    net.mkdir(parents=True, exist_ok=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (net / "tcp").write_text(header)
    (net / "tcp6").write_text(header)
    return root / "proc"


def make_context(
    config: AuditConfig | None = None,
    *,
    runner: CommandRunner | None = None,
    prober: FakeProber | None = None,
    docker: DockerInspector | None = None,
    metrics_listen: str = "",
    metrics_protection: str = "plain HTTP",
    enforcement: str | None = None,
    enforcement_note: str = "",
) -> AuditContext:
    """A context of fakes: no tools, no HTTP answers, no Docker, a fake clock."""
    return AuditContext(
        config=config or AuditConfig(),
        runner=runner or FakeRunner(),
        prober=prober or FakeProber(),
        docker=docker or no_docker(),
        clock=FakeClock(),
        metrics_listen=metrics_listen,
        metrics_protection=metrics_protection,
        enforcement=enforcement,
        enforcement_note=enforcement_note,
    )
