"""AI services not exposed: AI ports and side services beyond loopback, ``OLLAMA_HOST``.

Listening sockets come from ``<proc_root>/net/tcp{,6}``; the firewall state from
:func:`~aisentinel.audit.checks.firewall.firewall_state`. A service on a Unix
socket never appears in those tables and counts as safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register, worse
from aisentinel.audit.checks.firewall import firewall_state
from aisentinel.audit.containers import Published, docker_published
from aisentinel.audit.context import AuditContext
from aisentinel.audit.fwstate import Reach
from aisentinel.audit.model import Status
from aisentinel.audit.sideservices import DOCKER_FIX, FIREWALL_FIX, describe_ports, side_listeners
from aisentinel.audit.sockets import ListeningSocket, bind_scope, listening_sockets
from aisentinel.audit.units import (
    EnvironmentFileError,
    EnvSetting,
    environment_files,
    environment_words,
    systemctl_show,
    systemd_absent,
    unit_environment,
)


def all_listeners(ctx: AuditContext) -> list[ListeningSocket]:
    """Every TCP listening socket (computed once per context; raises ProcNetError)."""
    return ctx.memo("sockets", lambda: listening_sockets(ctx.config.proc_root))


def exposed_ai_listeners(ctx: AuditContext) -> list[ListeningSocket]:
    """Sockets on an AI port bound to a non-loopback address."""
    ports = set(ctx.config.ai_ports)
    return [s for s in all_listeners(ctx) if s.port in ports and not s.loopback]


BIND_FIX = (
    "Bind the service to loopback and publish it through nginx with auth + TLS:\n"
    "  Ollama:  systemctl edit ollama  ->  [Service]\n"
    '           Environment="OLLAMA_HOST=127.0.0.1:11434"\n'
    "  vLLM:    vllm serve ... --host 127.0.0.1\n"
    "  Docker:  -p 127.0.0.1:11434:11434   (not -p 11434:11434)\n"
    "or at least limit it to the LAN:\n"
    "  ufw allow from 192.168.1.0/24 to any port {port} proto tcp && ufw deny {port}/tcp"
)


@dataclass(frozen=True, slots=True)
class Exposure:
    """How far one socket bound beyond loopback is reachable, with its evidence line.

    ``status`` is fail when anyone can reach it (the firewall accepts it from anywhere,
    cannot be read, or Docker publishes it on a public or wildcard address), warn when
    only some networks can, pass when the firewall accepts it from nowhere.
    """

    sock: ListeningSocket
    status: Status
    line: str
    published: Published | None = None
    """What Docker publishes the port for (container, its port), if it does."""


def exposures(ctx: AuditContext, exposed: list[ListeningSocket]) -> list[Exposure]:
    """Judge each socket of ``exposed`` against the firewall and Docker's published ports."""
    if not exposed:
        return []
    try:
        state = firewall_state(ctx).state
    except CannotCheckError as exc:
        return [
            Exposure(s, Status.FAIL, f"{s} listens beyond loopback; firewall unknown ({exc})")
            for s in exposed
        ]
    by_docker = docker_published(ctx)
    out = []
    for sock in exposed:
        published = by_docker.get(sock.port)
        if published is not None:
            # Docker DNATs published ports in PREROUTING and accepts them in FORWARD:
            # the INPUT rules (ufw's too) never see that traffic.
            verdict, where = bind_scope(str(sock.address), "")
            line = (
                f"{sock} listens beyond loopback ({where}); published by Docker"
                f" ({published.container}):"
                f" {state.backend}'s INPUT rules do not apply (DOCKER-USER rules are not read)"
            )
        else:
            access = state.access(sock.port, sock.families)
            line = f"{sock} listens beyond loopback; {state.backend}: {access.describe()}"
            verdict = {Reach.OPEN: Status.FAIL, Reach.RESTRICTED: Status.WARN}.get(
                access.reach, Status.PASS
            )
        out.append(Exposure(sock, verdict, line, published))
    return out


def _ai_ports(ctx: AuditContext) -> Verdict:
    sockets = all_listeners(ctx)
    ports = set(ctx.config.ai_ports)
    ai = [s for s in sockets if s.port in ports]
    exposed = [s for s in ai if not s.loopback]
    if not exposed:
        if ai:
            local = ", ".join(str(s) for s in ai)
            return Verdict.of(Status.PASS, [f"AI ports listen on loopback only: {local}"])
        listed = ", ".join(str(p) for p in sorted(ports))
        return Verdict.of(Status.PASS, [f"nothing listens on the AI ports ({listed})"])
    judged = exposures(ctx, exposed)
    status = Status.PASS
    for item in judged:
        status = worse(status, item.status)
    worst = next((e.sock for e in judged if e.status is not Status.PASS), exposed[0])
    return Verdict.of(status, [e.line for e in judged], BIND_FIX.format(port=worst.port))


_DOWNGRADE = {Status.FAIL: Status.WARN, Status.WARN: Status.PASS, Status.PASS: Status.PASS}
"""An exporter only discloses: reachable by anyone warns, by some networks passes."""


def _side_services(ctx: AuditContext) -> Verdict:
    ports = ctx.config.side_services
    found = side_listeners(ports, all_listeners(ctx))
    exposed = [(kind, s) for kind, s in found if not s.loopback]
    if not exposed:
        if found:
            local = ", ".join(f"{s} ({kind.label})" for kind, s in found)
            return Verdict.of(Status.PASS, [f"side services listen on loopback only: {local}"])
        listed = describe_ports(ports)
        return Verdict.of(Status.PASS, [f"nothing listens on the side-service ports ({listed})"])
    judged = exposures(ctx, [s for _, s in exposed])
    status = Status.PASS
    lines = []
    fixes: list[str] = []
    docker_fixes: list[str] = []
    firewalled: ListeningSocket | None = None
    problems = False
    for (kind, _), item in zip(exposed, judged, strict=True):
        verdict = item.status if kind.runs_code else _DOWNGRADE[item.status]
        lines.append(f"{kind.label}: {item.line}")
        status = worse(status, verdict)
        if verdict is Status.PASS:
            continue
        problems = True
        if kind.fix not in fixes:
            fixes.append(kind.fix)
        if item.published is None:
            firewalled = firewalled or item.sock
            continue
        inner = item.published.port
        fix = DOCKER_FIX.format(port=item.sock.port, inner=inner or "<container port>")
        if fix not in docker_fixes:
            docker_fixes.append(fix)
    fixes.extend(docker_fixes)
    if firewalled is not None or not problems:
        # the INPUT rules ufw writes do not see a port Docker publishes
        fixes.append(FIREWALL_FIX.format(port=(firewalled or exposed[0][1]).port))
    return Verdict.of(status, lines, "Bind each service to loopback:\n" + "\n".join(fixes))


def _ollama_bind(value: str) -> tuple[Status, str]:
    """Classify an ``OLLAMA_HOST`` value: wildcard or public = fail, LAN = warn, loopback = pass.

    An empty value (after spaces and quotes, as Ollama trims them) is Ollama's default,
    127.0.0.1:11434; ``:11434`` (an empty host with a port) is every interface.
    """
    text = value.strip().strip("\"'").strip().split("://", 1)[-1].split("/", 1)[0]
    if not text:
        return Status.PASS, "loopback (empty: Ollama's default 127.0.0.1:11434)"
    if text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text
    if host == "localhost":
        return Status.PASS, "loopback"
    unparsed = f"host name {host!r} (resolves at start)"
    return bind_scope("" if host == "*" else host, unparsed)


def _ollama_host(ctx: AuditContext) -> Verdict:
    units = [u for u in ctx.config.ai_units if u.startswith("ollama")]
    if not units:
        return Verdict.of(Status.PASS, ["no ollama unit in [audit] ai_units"])
    status = Status.PASS
    lines: list[str] = []
    from_files: set[Path] = set()
    for unit in units:
        try:
            env = _environment(ctx, unit)
        except EnvironmentFileError as exc:
            raise CannotCheckError(f"{unit}: {exc}") from None
        if env is None:
            lines.append(f"{unit} is not installed")
            continue
        values, origin = env
        setting = values.get("OLLAMA_HOST")
        if setting is None:
            lines.append(f"{unit}: OLLAMA_HOST not set ({origin}): Ollama binds 127.0.0.1:11434")
            continue
        value, env_file = setting
        if env_file is not None:
            origin = f"{origin}; from EnvironmentFile {env_file}"
        verdict, where = _ollama_bind(value)
        lines.append(f"{unit}: OLLAMA_HOST={value} binds {where} ({origin})")
        if verdict is not Status.PASS and env_file is not None:
            from_files.add(env_file)
        status = worse(status, verdict)
    fix = (
        "systemctl edit ollama.service   # then write:\n"
        "[Service]\n"
        'Environment="OLLAMA_HOST=127.0.0.1:11434"\n'
        "# and: systemctl restart ollama.service"
    )
    for path in sorted(from_files):
        fix += (
            f"\n# {path} sets OLLAMA_HOST and an EnvironmentFile= overrides Environment=:"
            f"\n# set OLLAMA_HOST=127.0.0.1:11434 in {path} (or remove the line there)"
        )
    return Verdict.of(status, lines, fix)


_SHOWN_ENV_FILE = re.compile(r"^(?P<path>.*) \(ignore_errors=(?:yes|no)\)$")


def _environment(ctx: AuditContext, unit: str) -> tuple[dict[str, EnvSetting], str] | None:
    """The unit's environment and where it was read, or ``None`` if the unit does not exist.

    ``systemctl show``'s ``Environment`` holds only ``Environment=`` lines; the files of
    ``EnvironmentFile=`` (one ``EnvironmentFiles=PATH (ignore_errors=yes|no)`` line each)
    are read here and override it, as when systemd starts the unit (raises
    :class:`EnvironmentFileError` for a file that exists but cannot be read).
    """
    shown = systemctl_show(ctx, unit, "Environment", "EnvironmentFiles")
    if isinstance(shown, dict):
        if shown.get("LoadState") == ["not-found"]:
            return None
        words = environment_words(" ".join(shown.get("Environment", [])))
        env: dict[str, EnvSetting] = {name: (value, None) for name, value in words.items()}
        files = (_SHOWN_ENV_FILE.match(v) for v in shown.get("EnvironmentFiles", []))
        env.update(environment_files([m.group("path") for m in files if m]))
        return env, "systemctl show"
    reason = shown
    from_files = unit_environment(ctx.config.unit_dirs, unit)
    if from_files is None:
        dirs = ", ".join(str(d) for d in ctx.config.unit_dirs)
        if ctx.has_tool("systemctl") and not systemd_absent(reason):
            raise CannotCheckError(f"{reason}; and no {unit} file under {dirs}")
        return None
    return from_files, f"unit files; systemctl unavailable: {reason}"


register("exposure.ai-ports", "AI ports listen on loopback only (or are firewalled)", _ai_ports)
register("exposure.ollama-host", "Ollama's OLLAMA_HOST does not bind every interface", _ollama_host)
register(
    "exposure.side-services",
    "Ray, Jupyter, ComfyUI and the metrics exporters listen on loopback only (or are firewalled)",
    _side_services,
)
