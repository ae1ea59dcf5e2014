"""Typed, immutable values passed between the stages.

sources -> :class:`LineBatch` -> parsers -> ``Event`` -> detectors -> :class:`Finding`
-> decisions -> :class:`Decision` -> responders.

Parsed events are ``NamedTuple`` rather than frozen dataclasses on purpose: they are
made once per log line on the hot path, and a ``NamedTuple`` is built about 1.6x
faster than a ``@dataclass(frozen=True, slots=True)`` with the same fields (measured:
693k vs 441k parsed nginx lines/s, see ARCHITECTURE.md). They are just as typed and
just as immutable. Findings and decisions are rare and are frozen slotted dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# --------------------------------------------------------------------------- sources


class LineBatch(NamedTuple):
    """Complete lines read from one source in one go.

    ``lines`` hold no trailing newline. ``read_at`` is the reading of the clock's
    ``monotonic()`` when the batch was read; the pipeline's latency histogram
    measures from it.
    """

    source: str
    parser: str
    lines: list[str]
    read_at: float


# --------------------------------------------------------------------------- parsers


class SshKind(enum.StrEnum):
    """What an sshd line says about an authentication attempt."""

    FAILED_PASSWORD = "failed_password"  # noqa: S105 - an event kind, not a secret
    FAILED_PUBKEY = "failed_pubkey"
    INVALID_USER = "invalid_user"
    PREAUTH = "preauth"  # disconnect / connection closed before auth, bad protocol, etc.
    PAM_FAILURE = "pam_failure"
    MAX_AUTH = "max_auth"  # "maximum authentication attempts exceeded"
    ACCEPTED = "accepted"


class SshEvent(NamedTuple):
    """An sshd authentication event. ``client`` is a textual IPv4/IPv6 address."""

    ts: float
    source: str
    client: str
    kind: SshKind
    user: str | None
    port: int | None


class HttpRequest(NamedTuple):
    """One nginx access-log request.

    ``client`` is the peer address, or the forwarded one when the peer is a trusted
    proxy. ``key_id`` identifies an API key (a hash or prefix from the JSON log
    format), never the secret itself.
    """

    ts: float
    source: str
    client: str
    method: str
    path: str
    status: int
    bytes_sent: int
    user: str | None
    user_agent: str
    request_time: float | None = None
    upstream_time: float | None = None
    key_id: str | None = None
    body: str | None = None
    host: str | None = None


class HttpAuthFailure(NamedTuple):
    """nginx error log: an auth_basic failure (``reason``: user_not_found, password_mismatch)."""

    ts: float
    source: str
    client: str
    user: str | None
    reason: str


class HttpRateLimited(NamedTuple):
    """nginx error log: ``limiting requests`` (limit_req) hit a client."""

    ts: float
    source: str
    client: str
    zone: str | None


Event = SshEvent | HttpRequest | HttpAuthFailure | HttpRateLimited
"""Everything a parser can produce."""

EVENT_TYPES: tuple[type, ...] = (SshEvent, HttpRequest, HttpAuthFailure, HttpRateLimited)


# --------------------------------------------------------------------------- detectors


class Severity(enum.IntEnum):
    """How bad a finding is; decisions use it to pick ban or alert."""

    INFO = 10
    LOW = 20
    MEDIUM = 30
    HIGH = 40
    CRITICAL = 50

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's conclusion about one key (usually a client address).

    ``client`` is the address to act on, or ``None`` when the finding is about
    something that cannot be banned (for example one username from many addresses,
    where ``clients`` lists the addresses seen).
    """

    ts: float
    detector: str
    severity: Severity
    client: str | None
    key: str
    count: int
    window: float
    message: str
    evidence: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    source: str = ""


# --------------------------------------------------------------------------- decisions


class Action(enum.StrEnum):
    """What a decision asks the responders to do."""

    BAN = "ban"
    ALERT = "alert"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    """What aisentinel does (or would do) about a finding.

    ``target`` is a validated address or network in its canonical text form.
    ``simulated`` is true when the engine runs in simulate mode: the decision is
    recorded but no responder acts. ``reason`` says why, in particular why nothing
    is done (allowlisted, already banned, alert-only detector).
    """

    ts: float
    action: Action
    target: str | None
    detector: str
    severity: Severity
    reason: str
    ttl: float | None = None
    expires_at: float | None = None
    offence: int = 1
    simulated: bool = False
    evidence_count: int = 0
    finding: Finding | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- output


def finding_fields(finding: Finding) -> dict[str, Any]:
    """A finding as log/JSON fields."""
    return {
        "detector": finding.detector,
        "severity": finding.severity.label,
        "client": finding.client,
        "key": finding.key,
        "count": finding.count,
        "window": finding.window,
        "message": finding.message,
        "evidence": list(finding.evidence),
        "source": finding.source,
    }


def decision_fields(decision: Decision) -> dict[str, Any]:
    """A decision as log/JSON fields."""
    return {
        "action": decision.action.value,
        "target": decision.target,
        "detector": decision.detector,
        "severity": decision.severity.label,
        "reason": decision.reason,
        "ttl": decision.ttl,
        "expires_at": decision.expires_at,
        "offence": decision.offence,
        "simulated": decision.simulated,
        "evidence_count": decision.evidence_count,
    }


# --------------------------------------------------------------------------- GPUs
#
# Values from the GPU sampler (aisentinel/gpu/). A few per GPU per second, so frozen
# slotted dataclasses; read them by field name. Units follow Prometheus conventions:
# bytes, ratios 0-1, celsius, watts, joules. ``None`` means the GPU or driver does not
# report that value (NVML_ERROR_NOT_SUPPORTED) or reading it failed.


@dataclass(frozen=True, slots=True)
class ProcessAttribution:
    """Who runs a GPU process, read from ``/proc/PID``.

    ``exe`` is the ``/proc/PID/exe`` link (None without permission, e.g. another user's
    process when not root); ``cmdline`` is capped. ``unit`` is the systemd unit and
    ``container_id`` / ``container_runtime`` (docker, containerd, cri-o, podman,
    kubernetes) come from ``/proc/PID/cgroup``; ``container_name`` from a resolver
    (the Docker API) when one is configured. All of it is process-controlled text:
    escape it for human output.
    """

    pid: int
    exe: str | None
    cmdline: tuple[str, ...]
    uid: int | None
    user: str | None
    unit: str | None
    container_id: str | None = None
    container_runtime: str | None = None
    container_name: str | None = None
    start_time: int | None = None

    def label(self) -> str:
        """``container ollama``, ``unit vllm.service`` or ``pid 4242 /tmp/.x/xmrig``."""
        if self.container_id is not None:
            return f"container {self.container_name or self.container_id[:12]}"
        if self.unit is not None and self.unit.endswith(".service"):
            return f"unit {self.unit}"
        what = self.exe or (self.cmdline[0] if self.cmdline else "?")
        return f"pid {self.pid} {what}"


@dataclass(frozen=True, slots=True)
class GpuProcessSample:
    """One process on one GPU (or, with ``count`` > 1, the sum of several: pid 0)."""

    gpu_index: int
    gpu_uuid: str
    pid: int
    kind: str  # "compute", "graphics", "both" (or "other" for a summed entry)
    used_memory_bytes: int | None
    sm_util: float | None
    memory_util: float | None
    attribution: ProcessAttribution | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one sampling instant. ``lost``: it fell off the bus; gauges are None."""

    ts: float
    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    lost: bool
    utilization_gpu: float | None
    utilization_memory: float | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    memory_reserved_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None
    energy_joules: float | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    throttle_reasons: int | None
    mig_enabled: bool | None
    processes: tuple[GpuProcessSample, ...] = ()


@dataclass(frozen=True, slots=True)
class XidEvent:
    """A GPU Xid error, from NVML's event API (``source="nvml"``) or a kernel log line.

    ``pci_bus_id`` is normalised to ``dddd:bb:dd`` (lower case, no function) so the two
    sources match; ``process_name`` and ``message`` come from the kernel line (untrusted).
    """

    ts: float
    xid: int
    source: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    pci_bus_id: str | None = None
    pid: int | None = None
    process_name: str | None = None
    message: str = ""
