"""The ``[decisions]`` table: when to ban, for how long, and whom never to ban."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from aisentinel.configtypes import (
    Duration,
    DurationBounds,
    Interval,
    Network,
    PositiveDuration,
    StrictModel,
)
from aisentinel.events import Severity

_DAY = 86_400.0


def _parse_severity(value: Any) -> Severity:
    if isinstance(value, Severity):
        return value
    if isinstance(value, str):
        try:
            return Severity[value.strip().upper()]
        except KeyError:
            pass
    known = ", ".join(s.label for s in Severity)
    raise ValueError(f"bad severity {value!r}: use one of {known}")


def _severity_label(value: Severity) -> str:
    return value.label


SeverityName = Annotated[
    Severity,
    BeforeValidator(_parse_severity),
    PlainSerializer(_severity_label, return_type=str),
]
"""A :class:`Severity` written in config by its lower-case name (``"high"``)."""


WorkloadAction = Literal["alert", "throttle", "freeze"]
"""What an enforceable finding about a workload becomes."""

Pattern = Annotated[str, Field(min_length=1, max_length=512)]
Port = Annotated[int, Field(ge=1, le=65535)]


class WorkloadAllowlistConfig(StrictModel):
    """``[decisions.workload_allowlist]``: workloads never throttled or frozen.

    Glob patterns (``*``, ``?``, ``[...]``, case-sensitive) matched against the
    workload's systemd unit, container name, container image (its normalised
    reference: :func:`~aisentinel.decisions.allowlist.image_reference`; an ``images``
    entry without glob characters is normalised the same way), executable path.
    """

    units: tuple[Pattern, ...] = ()
    containers: tuple[Pattern, ...] = ()
    images: tuple[Pattern, ...] = ()
    executables: tuple[Pattern, ...] = ()


class DecisionsConfig(StrictModel):
    """How findings become bans or alerts.

    Loopback addresses (``127.0.0.0/8``, ``::1``) are always allowed; there is no key
    to turn that off. ``allowlist`` adds networks, ``allow_host_addresses`` adds the
    host's own addresses. The allowlist always wins over any finding.
    """

    simulate: bool = False
    """Decide and record in the ledger, but never call the responders."""
    ban_ttl: PositiveDuration = 3600.0
    """Ban length for a first offence; more than 0s, at most 366d."""
    escalation_factor: float = Field(default=4.0, ge=1.0, le=1000.0, allow_inf_nan=False)
    """Each earlier ban of the same address within ``recidive_window`` multiplies the TTL;
    1-1000 (the result is capped at ``max_ttl``)."""
    recidive_window: Duration = 7 * _DAY
    """How far back earlier bans count as offences; 0s-366d."""
    max_ttl: PositiveDuration = 30 * _DAY
    """Longest ban escalation gives; at least ``ban_ttl``, at most 366d."""
    allowlist: tuple[Network, ...] = ()
    admin_cidrs: tuple[Network, ...] = ()
    """Where the administrators connect from: never banned (like ``allowlist``);
    ``check-config`` warns when an enforcing responder is on and neither is set."""
    monitoring_hosts: tuple[Network, ...] = ()
    """The Prometheus / Alertmanager hosts (addresses or networks): never banned."""
    allow_host_addresses: bool = True
    """Never ban the host's own addresses (read from /proc every ``host_refresh_interval``)."""
    host_refresh_interval: Interval = 30.0
    """How often the host's own addresses are read again (DHCP, VPNs); 10ms-1h."""
    allow_ssh_sessions: bool = True
    """Never ban the client of a logged-in SSH session: a connection to ``ssh_ports`` in
    the kernel's socket table on which sshd logged ``Accepted ...``, or that has been
    open longer than ``ssh_login_grace_time``. A connection that has not logged in (a
    brute-forcer's own, between its passwords) protects no one."""
    ssh_ports: tuple[Port, ...] = Field(default=(22,), max_length=64)
    """The ports sshd listens on (1-65535; up to 64 of them)."""
    ssh_login_grace_time: Annotated[Duration, DurationBounds(0.0, 86_400.0)] = 120.0
    """sshd's ``LoginGraceTime`` (``sshd -T | grep logingracetime``; OpenSSH's default is
    2m): sshd drops a connection that has not logged in by then, so one open longer
    is a session even when its login was not read. 0s, as in sshd, means no limit:
    then only a logged login counts. Never set it shorter than sshd's; 0s-1d."""
    proc_root: Path = Path("/proc")
    """procfs, where the socket table (``net/tcp``, ``net/tcp6``) and addresses are read."""
    ban_severity: SeverityName = Severity.HIGH
    """Findings at or above this severity are bans, below it alerts."""
    alert_only_detectors: tuple[str, ...] = ()
    """Detectors whose findings are only ever alerts."""
    alert_repeat: Annotated[Duration, DurationBounds(0.0, 86_400.0)] = 3600.0
    """After an alert about a key, that detector's findings about the same key at the
    same or a lower severity are dropped (counted in ``aisentinel_findings_quieted_total``)
    for this long: an attacker who keeps on makes one alert an hour, not one a window.
    A more severe finding always goes through. Alerts of the storm brake hold back for a
    minute at most, so that once it releases the key's next finding is a ban. A reload
    that changes this table lets every held-back key be decided again under the new one.
    0s hands on every finding; 0s-1d."""
    max_bans_per_minute: int = Field(default=60, ge=1, le=10_000)
    """The storm brake: beyond this many bans in 60 s, bans become alerts (the brake stays
    tripped until ``aisentinel brake reset`` or ``brake_cooldown`` of calm); 1-10000."""
    brake_cooldown: Annotated[Duration, DurationBounds(0.0, 86_400.0)] = 600.0
    """A tripped storm brake releases itself once the ban rate stayed below half of
    ``max_bans_per_minute`` this long; 0s-1d."""
    ledger_retention: Duration = 30 * _DAY
    """How long decision history is kept (it feeds the escalation); 0s-366d."""
    ipv6_ban_prefix: int = Field(default=64, ge=32, le=128)
    """An IPv6 address is banned with its whole /N network (one host holds a /64 and
    picks any address in it); 32-128, 128 bans the single address. IPv4 is always /32."""
    workload_action: WorkloadAction = "alert"
    """What an enforceable finding about a workload (container, unit, process) becomes:
    ``alert`` (default: nothing is enforced), ``throttle`` or ``freeze``."""
    workload_actions: dict[str, WorkloadAction] = Field(default_factory=dict)
    """Per-detector overrides of ``workload_action`` (detector name -> action)."""
    workload_allowlist: WorkloadAllowlistConfig = Field(default_factory=WorkloadAllowlistConfig)

    @model_validator(mode="after")
    def _check_durations(self) -> Self:
        if self.max_ttl < self.ban_ttl:
            raise ValueError("max_ttl must be at least ban_ttl")
        if self.ledger_retention < self.recidive_window:
            raise ValueError(
                "ledger_retention must be at least recidive_window "
                "(older history is purged and could not count as an offence)"
            )
        return self
