"""Loading and strict validation of the TOML configuration.

The file has one table per stage: ``[daemon]``, ``[exporter]``, ``[parsers]``,
``[[sources]]``, ``[detectors.<name>]``, ``[decisions]``, ``[responders.<name>]``
and ``[audit]``. Plug-in tables are validated by the config model their plug-in
registered, so adding a plug-in never touches this module. Every problem is
reported as a :class:`ConfigIssue` naming the file, the dotted key and the reason;
:class:`ConfigError` carries all of them at once.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from aisentinel.audit.config import AuditConfig
from aisentinel.configtypes import (
    MAX_INTERVAL,
    MIN_INTERVAL,
    Duration,
    DurationBounds,
    Interval,
    StrictModel,
    absolute_path,
    error_reason,
    format_duration,
    unknown_name,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.detectors import REGISTRY as DETECTORS
from aisentinel.detectors.base import DetectorConfigBase
from aisentinel.parsers import REGISTRY as PARSERS
from aisentinel.parsers.base import ParsersConfig
from aisentinel.responders import REGISTRY as RESPONDERS
from aisentinel.responders.base import ResponderConfigBase
from aisentinel.sources import REGISTRY as SOURCES
from aisentinel.sources.base import SourceConfigBase
from aisentinel.sources.journald import journald_problem
from aisentinel.webconfig import WebConfig, WebConfigError, load_web_config

DEFAULT_CONFIG_PATH = Path("/etc/aisentinel/aisentinel.toml")
DEFAULT_METRICS_PORT = 9847
"""Outside the ports of the common exporters (node 9100, dcgm 9400, blackbox 9115...)."""
DEFAULT_CONTROL_SOCKET = Path("/run/aisentinel/control.sock")
MAX_SOCKET_PATH_BYTES = 107
"""``sun_path`` holds 108 bytes on Linux, the last one the terminating NUL."""
MAX_HEARTBEAT_INTERVAL = 30.0
"""The longest ``heartbeat_interval``: AisentinelHeartbeatStale fires when the heartbeat
gauge has not moved in any scrape of 2 minutes, so with scrapes up to a minute apart a
healthy daemon's gauge must move between every two of them, and the shipped unit's
``WatchdogSec`` is 30s (under systemd the daemon beats at least every half of it anyway)."""

HEARTBEAT_WHY = (
    "AisentinelHeartbeatStale fires once the heartbeat has not moved in 2 minutes of "
    "scrapes, and the unit's WatchdogSec is 30s"
)

HeartbeatInterval = Annotated[
    Duration,
    DurationBounds(
        MIN_INTERVAL,
        MAX_INTERVAL,
        why=(
            f"more than {format_duration(MAX_HEARTBEAT_INTERVAL)} is accepted but used as "
            f"{format_duration(MAX_HEARTBEAT_INTERVAL)}"
        ),
    ),
]
"""``heartbeat_interval``: 10ms to 1h accepted, more than 30s used as 30s (its own
refusal says so, not the other timers' hourly limit)."""


class DaemonConfig(StrictModel):
    """``[daemon]``: process-wide settings."""

    state_dir: Path = Path("/var/lib/aisentinel")
    log_format: Literal["auto", "json", "console", "journal"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    heartbeat_interval: HeartbeatInterval = 5.0
    """How often the pipeline proves it is alive (systemd watchdog, STATUS line, the
    heartbeat gauge); 10ms-30s (see :data:`MAX_HEARTBEAT_INTERVAL`). Up to 1h is still
    accepted, as before 30s was the most: :func:`parse_config` uses 30s and warns."""
    expire_interval: Interval = 10.0
    """How often idle detector keys and expired bans are dropped; 10ms-1h."""
    reconcile_interval: Interval = 300.0
    """How often every responder is made to hold exactly the ledger's active bans
    (re-applied after a ruleset flush, expired and unknown ones removed); 10ms-1h."""
    queue_batches: int = Field(default=8, ge=1, le=1024)
    """Batches waiting between the sources and the pipeline before sources wait; 1-1024
    (each batch holds up to a source's ``batch_lines`` lines, all in memory)."""
    responder_queue: int = Field(default=10_000, ge=16, le=1_000_000)
    """Decisions waiting for the responder worker thread; 16-1,000,000. When full the
    oldest queued bans are dropped and counted (the next reconcile restores them)."""
    decision_lines: int = Field(default=100, ge=0, le=1_000_000)
    """Decisions of one action and detector logged one by one a minute; the rest of the
    minute is one summary line (0: every decision its own line, as a benchmark that
    watches the log for each one needs). Braked decisions have their own budget."""
    control_socket: Path | None = DEFAULT_CONTROL_SOCKET
    """Unix socket that ``aisentinel status`` asks; ``""`` turns it off. An absolute
    path of at most 107 bytes (the kernel's limit for a socket's address)."""

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_path(cls, value: Any) -> Any:
        return absolute_path(value)  # "" or "state" would put the ledger in the cwd

    @field_validator("control_socket", mode="before")
    @classmethod
    def _socket_path(cls, value: Any) -> Any:
        if value == "":
            return None
        if isinstance(value, str | Path):
            if not Path(value).is_absolute():
                raise ValueError('must be an absolute path (or "" to turn the socket off)')
            size = len(os.fsencode(value))
            if size > MAX_SOCKET_PATH_BYTES:
                raise ValueError(
                    f"is {size} bytes long: a Unix socket's path is at most "
                    f"{MAX_SOCKET_PATH_BYTES} bytes; pick a shorter one"
                )
        return value


class ExporterConfig(StrictModel):
    """``[exporter]``: the Prometheus endpoint."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535)
    """0 picks a free port (tests); the chosen one is logged."""
    web_config: Path | None = None
    """A Prometheus ``web-config.yml`` (TLS, basic auth) for the endpoint; none: plain HTTP.
    An absolute path, as every path in this file (a relative one would depend on the
    directory the daemon or ``check-config`` was started in)."""

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise ValueError(
                f"{value!r}: an IPv6 zone (%{address.scope_id}) cannot be listened on; "
                "use the address without it"
            )
        return str(address)

    @field_validator("web_config", mode="before")
    @classmethod
    def _web_config_path(cls, value: Any) -> Any:
        return absolute_path(value)


class _Root(BaseModel):
    """The file's top level; plug-in tables are checked afterwards by their own models."""

    model_config = {"extra": "forbid"}

    daemon: dict[str, Any] = Field(default_factory=dict)
    exporter: dict[str, Any] = Field(default_factory=dict)
    parsers: dict[str, Any] = Field(default_factory=dict)
    sources: list[dict[str, Any]] | None = None
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    decisions: dict[str, Any] = Field(default_factory=dict)
    responders: dict[str, dict[str, Any]] | None = None
    audit: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: which file, which dotted key, and why."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<top level>'}: {self.reason}"


class ConfigError(Exception):
    """The configuration was refused; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration, every plug-in table typed by its own model."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    parsers: ParsersConfig = field(default_factory=ParsersConfig)
    sources: tuple[SourceConfigBase, ...] = ()
    detectors: Mapping[str, DetectorConfigBase] = field(default_factory=dict)
    decisions: DecisionsConfig = field(default_factory=DecisionsConfig)
    responders: Mapping[str, ResponderConfigBase] = field(default_factory=dict)
    audit: AuditConfig = field(default_factory=AuditConfig)
    path: str = "<defaults>"
    deprecations: tuple[str, ...] = ()
    """Values an older release took that this one adjusts, each naming file and key
    (warned of by ``check-config`` and at start; see :func:`_adjust_deprecated`)."""
    web: WebConfig | None = None
    """The exporter's ``web_config`` file, read and validated (``None``: plain HTTP)."""

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain data (for ``check-config --print``)."""
        return {
            "daemon": self.daemon.model_dump(mode="json"),
            "exporter": self.exporter.model_dump(mode="json"),
            "parsers": self.parsers.model_dump(mode="json")
            | {k: v.model_dump(mode="json") for k, v in self.parsers.tables().items()},
            "sources": [s.model_dump(mode="json") for s in self.sources],
            "detectors": {k: v.model_dump(mode="json") for k, v in self.detectors.items()},
            "decisions": self.decisions.model_dump(mode="json"),
            "responders": {k: v.model_dump(mode="json") for k, v in self.responders.items()},
            "audit": self.audit.model_dump(mode="json"),
        }


def journald_usable() -> bool:
    """True when systemd-python imports and a journal directory exists on this host."""
    return journald_problem() is None


def default_sources(*, journald: bool | None = None) -> list[dict[str, Any]]:
    """The sources used when the file has no ``[[sources]]``.

    nginx's access and error logs at their Debian paths, and sshd from journald when
    journald can be read (Debian 12 has no /var/log/auth.log by default), else from
    /var/log/auth.log. Never both: the same attempt would be counted twice. If that file
    is missing too, the file source says so at start, with why the journal was not used
    (:func:`~aisentinel.sources.journald.journald_problem`) and what to do.
    """
    use_journald = journald_usable() if journald is None else journald
    sources: list[dict[str, Any]] = [
        {
            "name": "nginx-access",
            "type": "file",
            "parser": "nginx",
            "paths": ["/var/log/nginx/access.log"],
        },
        {
            "name": "nginx-error",
            "type": "file",
            "parser": "nginx-error",
            "paths": ["/var/log/nginx/error.log"],
        },
    ]
    if use_journald:
        sources.append({"name": "sshd-journal", "type": "journald"})
    else:
        sources.append(
            {"name": "sshd", "type": "file", "parser": "sshd", "paths": ["/var/log/auth.log"]}
        )
    return sources


def _loc(prefix: str, loc: Sequence[int | str]) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    return ".".join(parts)


def _validate(
    model: type[BaseModel], data: Any, file: str, prefix: str, issues: list[ConfigIssue]
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues.extend(
            ConfigIssue(file, _loc(prefix, err["loc"]), error_reason(err)) for err in exc.errors()
        )
        return None


def _validate_sources(
    raw: list[dict[str, Any]], file: str, issues: list[ConfigIssue]
) -> list[SourceConfigBase]:
    out: list[SourceConfigBase] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        prefix = f"sources[{i}]"
        kind = table.get("type")
        if not isinstance(kind, str) or kind not in SOURCES:
            known = ", ".join(SOURCES.names())
            issues.append(ConfigIssue(file, f"{prefix}.type", f"must be one of: {known}"))
            continue
        model = SOURCES.get(kind).config_model
        if "parser" in table and "parser" not in model.model_fields:
            issues.append(
                ConfigIssue(
                    file,
                    f"{prefix}.parser",
                    f"a {kind} source hands on typed events, not lines, so it takes no "
                    "parser; remove this key",
                )
            )
        fields = {k: v for k, v in table.items() if k in model.model_fields or k != "parser"}
        cfg = _validate(model, fields, file, prefix, issues)
        if cfg is None:
            continue
        if cfg.name in seen:
            issues.append(ConfigIssue(file, f"{prefix}.name", f"duplicate source {cfg.name!r}"))
            continue
        seen.add(cfg.name)
        out.append(cfg)
    return out


def _validate_plugins(
    registry: Any, raw: Mapping[str, Any], file: str, section: str, issues: list[ConfigIssue]
) -> dict[str, Any]:
    """Every registered plug-in with defaults, overridden by its table; unknown names are errors."""
    out: dict[str, Any] = {}
    for name in raw:
        if name not in registry:
            known = ", ".join(registry.names())
            issues.append(ConfigIssue(file, f"{section}.{name}", f"unknown; known: {known}"))
    for entry in registry:
        table = raw.get(entry.name, {})
        if not isinstance(table, dict):
            issues.append(ConfigIssue(file, f"{section}.{entry.name}", "must be a table"))
            continue
        cfg = _validate(entry.config_model, table, file, f"{section}.{entry.name}", issues)
        if cfg is not None:
            out[entry.name] = cfg
    return out


def _validate_parsers(
    raw: Mapping[str, Any], file: str, issues: list[ConfigIssue]
) -> ParsersConfig:
    """``[parsers]``: the shared keys, and a ``[parsers.<name>]`` table per parser.

    A key that is a table names a parser: it is validated by that parser's registered
    model (an unknown name is refused with the known ones); every parser gets its
    model's defaults when the file has no table for it. The other keys are shared.
    """
    shared = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    for name in tables:
        if name in ParsersConfig.model_fields:
            issues.append(ConfigIssue(file, f"parsers.{name}", "must not be a table"))
    tables = {k: v for k, v in tables.items() if k not in ParsersConfig.model_fields}
    parsers = _validate(ParsersConfig, shared, file, "parsers", issues)
    per_parser = _validate_plugins(PARSERS, tables, file, "parsers", issues)
    # With an issue recorded the file is refused, so the fallback is never used.
    return (parsers or ParsersConfig()).with_tables(per_parser)


def _check_detector_names(decisions: DecisionsConfig, file: str, issues: list[ConfigIssue]) -> None:
    """``[decisions]`` keys that name detectors must name registered ones (a typo would
    silently leave the detector banning, or its workloads at the default action)."""
    known = DETECTORS.names()
    for i, name in enumerate(decisions.alert_only_detectors):
        if name not in DETECTORS:
            reason = unknown_name(name, known, "detector")
            issues.append(ConfigIssue(file, f"decisions.alert_only_detectors[{i}]", reason))
    for name in decisions.workload_actions:
        if name not in DETECTORS:
            reason = unknown_name(name, known, "detector")
            issues.append(ConfigIssue(file, f"decisions.workload_actions.{name}", reason))


def _adjust_deprecated(daemon: DaemonConfig, file: str, out: list[str]) -> DaemonConfig:
    """``daemon`` with the values an older release accepted and this one does not use
    brought into range, each adjustment described in ``out``. A config that loaded before
    must not stop the upgraded daemon from starting (the package's postinst leaves the old
    daemon running when check-config refuses it, and its next restart would fail)."""
    every = daemon.heartbeat_interval
    if every <= MAX_HEARTBEAT_INTERVAL:
        return daemon
    most = format_duration(MAX_HEARTBEAT_INTERVAL)
    out.append(
        f"{file}: daemon.heartbeat_interval = {format_duration(every)} is more than {most} "
        f"({HEARTBEAT_WHY}): {most} is used; set it to at most {most} (deprecated: a later "
        "release will refuse more)"
    )
    return daemon.model_copy(update={"heartbeat_interval": MAX_HEARTBEAT_INTERVAL})


def parse_config(data: Mapping[str, Any], file: str = "<defaults>") -> Config:
    """Validate already-parsed TOML data; raise :class:`ConfigError` listing every issue."""
    issues: list[ConfigIssue] = []
    root = _validate(_Root, data, file, "", issues)
    if root is None:
        raise ConfigError(issues)
    daemon = _validate(DaemonConfig, root.daemon, file, "daemon", issues)
    deprecations: list[str] = []
    if daemon is not None:
        daemon = _adjust_deprecated(daemon, file, deprecations)
    exporter = _validate(ExporterConfig, root.exporter, file, "exporter", issues)
    parsers = _validate_parsers(root.parsers, file, issues)
    decisions = _validate(DecisionsConfig, root.decisions, file, "decisions", issues)
    if decisions is not None:
        _check_detector_names(decisions, file, issues)
    audit = _validate(AuditConfig, root.audit, file, "audit", issues)
    raw_sources = root.sources if root.sources is not None else default_sources()
    sources = _validate_sources(raw_sources, file, issues)
    detectors = _validate_plugins(DETECTORS, root.detectors, file, "detectors", issues)
    raw_responders = root.responders if root.responders is not None else {"dryrun": {}}
    responders = _validate_plugins(RESPONDERS, raw_responders, file, "responders", issues)
    if root.responders is not None:
        # Only the responders named in the file are active; the rest are disabled.
        responders = {k: v for k, v in responders.items() if k in root.responders}
    else:
        responders = {k: v for k, v in responders.items() if k == "dryrun"}
    web = None
    if exporter is not None and exporter.web_config is not None:
        try:
            web = load_web_config(exporter.web_config)
        except WebConfigError as exc:
            # The key that names the file, then the web config file's own key and reason.
            issues.extend(
                ConfigIssue(
                    file,
                    "exporter.web_config",
                    f"{exc.file}: {key}: {why}" if key else f"{exc.file}: {why}",
                )
                for key, why in exc.issues
            )
    if issues:
        raise ConfigError(issues)
    return Config(
        daemon=daemon,
        exporter=exporter,
        parsers=parsers,
        sources=tuple(sources),
        detectors=detectors,
        decisions=decisions,
        responders=responders,
        audit=audit,
        path=file,
        deprecations=tuple(deprecations),
        web=web,
    )


def load_config(path: Path | None = None) -> Config:
    """Read and validate ``path``; ``None`` means the default path if it exists, else defaults.

    ``AISENTINEL_CONFIG`` in the environment overrides the default path.
    """
    file, data = read_config_data(path)
    try:
        return parse_config(data, file)
    except RecursionError:
        raise ConfigError([ConfigIssue(file, "", _TOO_DEEP)]) from None


def read_config_data(path: Path | None = None) -> tuple[str, dict[str, Any]]:
    """The file :func:`load_config` reads (``"<defaults>"`` when none) and its TOML
    document, not yet validated; :class:`ConfigError` when it cannot be read or parsed."""
    if path is None:
        env = os.environ.get("AISENTINEL_CONFIG")
        path = Path(env) if env else DEFAULT_CONFIG_PATH
        # lexists: a symbolic link whose target is missing (a config kept elsewhere, on a
        # mount not up yet) is refused below, never replaced by the built-in defaults
        if not os.path.lexists(path) and not env:
            return "<defaults>", {}
    file = str(path)
    dangling = _dangling_link(path)
    if dangling is not None:
        raise ConfigError([ConfigIssue(file, "", dangling)])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(file, "", "not UTF-8 text")]) from None
    return file, _parse_toml(text, file)


def _dangling_link(path: Path) -> str | None:
    """Why ``path`` cannot be read when it is a symbolic link to nothing, or one of links
    that lead back to themselves (``path.exists()`` is False for both); else None."""
    try:
        if not path.is_symlink():
            return None
        target = str(path.readlink())
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symbolic link to {target!r} that leads back to itself (a loop of links)"
        if exc.errno == errno.ENOENT:
            return f"a symbolic link to {target!r}, which does not exist"
    return None  # a file behind it, or reading it says why


_TOO_DEEP = "values nested too deeply to read (arrays or inline tables inside each other)"


def _parse_toml(text: str, file: str) -> dict[str, Any]:
    """The TOML document in ``text``; any failure to parse is a :class:`ConfigError`.

    Besides syntax errors, tomllib raises a plain ``ValueError`` for an integer longer
    than Python's 4300-digit limit and ``RecursionError`` for values nested a few
    hundred deep: both are refusals with the file and the reason, never a traceback
    (``check-config``) nor the end of a running daemon (a reload).
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = f"TOML syntax: {exc}"
    except RecursionError:
        reason = _TOO_DEEP
    except ValueError as exc:
        # Only int() raises a bare ValueError in tomllib: more than 4300 digits.
        reason = f"cannot read a value: {exc}".split("; use sys.set_int_max_str_digits")[0]
    except Exception as exc:  # noqa: BLE001 - a parser fault is a refusal, whatever it is
        reason = f"cannot parse: {type(exc).__name__}: {exc}"
    raise ConfigError([ConfigIssue(file, "", reason)])
