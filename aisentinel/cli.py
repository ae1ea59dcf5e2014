"""The ``aisentinel`` command: run, check-config, replay, audit, status, demo, rules,
explain, withdraw (with the daemon stopped), and the operators' commands on the running
daemon: bans, unban, ban, allow, brake reset.

Each sub-command is a small function returning the process exit status; argument
parsing is argparse, with no global state.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aisentinel import __version__, compiled
from aisentinel.config import (
    DEFAULT_CONTROL_SOCKET,
    Config,
    ConfigError,
    DaemonConfig,
    load_config,
)
from aisentinel.configtypes import zone_info
from aisentinel.parsers import AUTO, UnknownFormatError
from aisentinel.parsers import names as parser_names
from aisentinel.sources.journald import JournaldSourceConfig, journald_available, matches_problem
from aisentinel.sources.overlap import shared_inputs
from aisentinel.textsafe import escape

if TYPE_CHECKING:
    from aisentinel.access import Account

STATUS_TIMEOUT = 5.0
"""Seconds to wait for the daemon's answer on the control socket (``--timeout``)."""


def _load(path: Path | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"aisentinel: config error: {issue}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground (systemd runs it this way)."""
    from aisentinel.memory import tune_malloc  # noqa: PLC0415

    tuned = tune_malloc()  # first, before any thread or large allocation
    from aisentinel.daemon import (  # noqa: PLC0415 - keep other commands light
        START_REFUSED,
        Daemon,
        lock_state_dir,
        log,
    )
    from aisentinel.logsetup import configure_logging  # noqa: PLC0415

    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_format or config.daemon.log_format, config.daemon.log_level)
    log.debug("allocator tuned (mallopt)", **tuned)
    for warning in config_warnings(config):
        log.warning("config: valid but risky", warning=warning)
    # First: a second daemon on this state directory is refused before it opens anything.
    refused, lock = lock_state_dir(config.daemon.state_dir)
    if refused:
        return START_REFUSED
    daemon = Daemon(config, config_path=args.config, run_lock=lock)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config file; print the effective config with --print.

    Exit 1 when the config is refused, or when the account that reads it cannot read a
    file it names (``--user``; as root on the default config, the account the service
    runs as, from its unit files: root reads them all, the service may not); 2 when
    ``--user`` names no user.
    """
    from aisentinel.access import Account  # noqa: PLC0415

    account: Account | None = None
    if args.user is not None:
        try:
            account = Account.lookup(args.user)
        except KeyError:
            print(f"aisentinel: check-config: --user: no such user {args.user!r}", file=sys.stderr)
            return 2
    config = _load(args.path)
    if config is None:
        return 1
    who = f"user {account.name}" if account is not None else ""
    if account is None and args.path is None and os.geteuid() == 0:
        account, who = _service_reader()
    if account is not None:
        refused = unreadable_files(config, account)
        for path, why in refused:
            shown = escape(str(path), limit=300)
            mode = "g+rx" if path.is_dir() else "g+r"
            print(
                f"aisentinel: config error: {shown}: {who} cannot read it: "
                f"{escape(why, limit=300)}; the daemon would refuse to start (for one: "
                f"chgrp {account.group()} {shown}; chmod {mode} {shown})",
                file=sys.stderr,
            )
        if refused:
            return 1
    if args.print:
        print(json.dumps(config.to_dict(), indent=2))
    else:
        where = config.path
        on = sum(1 for c in config.detectors.values() if c.enabled)
        enabled = "" if on == len(config.detectors) else f", {on} enabled"
        print(
            f"{where}: OK ({len(config.sources)} sources, "
            f"{len(config.detectors)} detectors{enabled})"
        )
        for note in config_notes(config):
            print(f"note: {note}")
    for warning in config_warnings(config):
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0


def _service_reader() -> tuple[Account | None, str]:
    """The account the service runs as, from its unit files and drop-ins, and how to
    name it in a line; ``None`` when there is no unit (a WARNING when its user or a
    group is missing)."""
    from aisentinel.access import service_account  # noqa: PLC0415

    try:
        found = service_account()
    except KeyError as exc:
        print(
            f"WARNING: the aisentinel service names a user or group that does not exist "
            f"({escape(str(exc), limit=100)}): it cannot start",
            file=sys.stderr,
        )
        return None, ""
    if found is None:
        return None, ""
    account, files = found
    return account, f"the service's user {account.name} ({', '.join(map(str, files))})"


def files_read(config: Config) -> list[tuple[Path, bool]]:
    """The files the daemon reads at start and at each reload beside its logs and state
    (``True``: a directory it lists): the config, the rules detector's ``rules_dir``
    and its ``*.toml`` files, the exporter's ``web_config`` and the TLS files it names."""
    out: list[tuple[Path, bool]] = []
    if config.path != "<defaults>":
        out.append((Path(config.path), False))
    rules_dir = getattr(config.detectors.get("rules"), "rules_dir", None)
    if isinstance(rules_dir, Path):
        out.append((rules_dir, True))
        with contextlib.suppress(OSError):  # load_config read it: it lists as root
            out += [(p, False) for p in sorted(rules_dir.iterdir()) if p.suffix == ".toml"]
    if config.exporter.web_config is not None:
        out.append((config.exporter.web_config, False))
    tls = config.web.tls if config.web is not None else None
    if tls is not None:
        out += [(tls.cert_file, False), (tls.key_file, False)]
        if tls.client_ca_file is not None:
            out.append((tls.client_ca_file, False))
    return out


def unreadable_files(config: Config, account: Account) -> list[tuple[Path, str]]:
    """Each file of :func:`files_read` that ``account`` cannot read, and why."""
    from aisentinel.access import unreadable  # noqa: PLC0415

    out = []
    for path, directory in files_read(config):
        why = unreadable(path, account, directory=directory)
        if why is not None:
            out.append((path, why))
    return out


def config_notes(config: Config) -> list[str]:
    """What check-config points out about ``config`` that is neither wrong nor risky."""
    out = []
    proxies = config.parsers.trusted_proxies
    if proxies:
        out.append(
            f"parsers.trusted_proxies ({', '.join(map(str, proxies))}) are never banned, "
            "like decisions.allowlist: a client behind them is judged by its forwarded "
            "address, and a request without one counts as the proxy's own (a ban would "
            "cut off every client behind it)"
        )
    return out


def config_warnings(config: Config) -> list[str]:
    """What is valid but risky in ``config`` (printed by check-config; exit status stays 0)."""
    out = list(config.deprecations)
    if not config.sources:
        out.append(
            "no log source: `sources = []` leaves the daemon reading nothing; remove it for "
            "the default sources or add [[sources]] tables"
        )
    out.extend(shared_inputs(config.sources))
    out.extend(_container_cap_warnings(config))
    out.extend(
        problem
        for s in config.sources
        if isinstance(s, JournaldSourceConfig) and (problem := matches_problem(s)) is not None
    )
    journals = [repr(s.name) for s in config.sources if s.type == "journald"]
    if journals and not journald_available():
        out.append(
            f"journald source(s) {', '.join(journals)}: systemd-python is not installed, so "
            "they will be down and read nothing; install python3-systemd (or pip install "
            "'aisentinel[systemd]')"
        )
    if not any(c.enabled for c in config.detectors.values()):
        out.append("every detector is disabled: nothing read can be detected")
    out.extend(_wide_network_warnings(config))
    out.extend(_ban_prefix_warnings(config))
    if config.parsers.forwarded_header == "real_ip" and not config.parsers.trusted_proxies:
        out.append(
            'parsers.forwarded_header = "real_ip" without parsers.trusted_proxies: '
            "forwarded values are read only from trusted proxies, so it changes nothing"
        )
    if config.parsers.credentials == "checked":
        out.append(
            'parsers.credentials = "checked": a user or API key id in the access log counts '
            "as an authentication on every location, also where nothing checks it (nginx "
            "logs the user of any client's Authorization: Basic header): a client that "
            "sends one is trusted with model management and spared as a known user; "
            'keep it only if every location checks credentials, else use "learned"'
        )
    if not any(c.enabled for c in config.responders.values()):
        out.append(
            "no responder is enabled: decisions are neither enforced nor recorded as a dry "
            "run, only logged and kept in the ledger (a bare [responders] table turns every "
            "responder off, dryrun included); add [responders.dryrun] for a dry run, or an "
            "enforcing responder"
        )
    enforcing = sorted(n for n, c in config.responders.items() if c.enabled and n != "dryrun")
    d = config.decisions
    if enforcing and not d.admin_cidrs and not d.allowlist and not d.simulate:
        out.append(
            f"enforcing responder(s) {', '.join(enforcing)} enabled and no admin CIDR set: "
            "add the networks you administer from to [decisions] admin_cidrs, or a ban may "
            "lock you out (logged-in SSH sessions, loopback and this host's addresses are "
            "always allowed)"
        )
    return out


def _ban_prefix_warnings(config: Config) -> list[str]:
    """An enabled responder that refuses every automatic IPv6 ban: the network the engine
    bans (``decisions.ipv6_ban_prefix``) is wider than its ``min_prefix6``."""
    out = []
    prefix = config.decisions.ipv6_ban_prefix
    for name, responder in sorted(config.responders.items()):
        widest = getattr(responder, "min_prefix6", None)
        if responder.enabled and isinstance(widest, int) and prefix < widest:
            out.append(
                f"decisions.ipv6_ban_prefix = {prefix} is wider than responders.{name}."
                f"min_prefix6 = {widest}: {name} refuses every automatic IPv6 ban (a "
                f"/{prefix}), so none is enforced there (each is reported NOT ENFORCED and "
                f"counted given up); set ipv6_ban_prefix to at least {widest}, or "
                f"min_prefix6 to at most {prefix}"
            )
    return out


def _container_cap_warnings(config: Config) -> list[str]:
    """File sources that may read container logs with a ``max_line_bytes`` that cuts a
    Docker record of one piece of a split line (a client can then hide its requests)."""
    from aisentinel.parsers.container import RECORD_BYTES, SPLIT_BYTES  # noqa: PLC0415
    from aisentinel.sources.file import FileSourceConfig  # noqa: PLC0415

    out = []
    for source in config.sources:
        if not isinstance(source, FileSourceConfig) or source.parser not in ("container", AUTO):
            continue
        cap = source.max_line_bytes
        if cap is not None and cap < RECORD_BYTES:
            which = (
                ""
                if source.parser == "container"
                else ' (parser = "auto": if a file is a container log)'
            )
            out.append(
                f"source {source.name!r}: max_line_bytes = {cap} is below {RECORD_BYTES}"
                f"{which}: a Docker json-file record of a line's {SPLIT_BYTES}-byte piece is "
                "up to that long (Docker writes <, >, & and control bytes as 6-byte "
                "escapes), and a record cut there is skipped with the next line of each "
                "stream: a client that pads its requests that way is never seen; remove "
                "max_line_bytes (the default reads records whole)"
            )
    return out


def _wide_network_warnings(config: Config) -> list[str]:
    """Networks wider than ``aisentinel allow`` accepts (/8, IPv6 /32) in the lists of
    addresses never banned, and in ``trusted_proxies`` (whose clients may pose as anyone)."""
    from aisentinel.decisions.engine import MIN_PREFIX  # noqa: PLC0415 - keep the CLI light

    out = []
    d = config.decisions
    for key, nets in (
        ("allowlist", d.allowlist),
        ("admin_cidrs", d.admin_cidrs),
        ("monitoring_hosts", d.monitoring_hosts),
    ):
        for net in nets:
            if net.prefixlen < MIN_PREFIX[net.version]:
                every = f" (every IPv{net.version} address: banning is off)"
                out.append(
                    f"decisions.{key} holds {net}: no address in it is ever banned"
                    f"{every if net.prefixlen == 0 else ''}; `aisentinel allow` refuses "
                    f"networks wider than /{MIN_PREFIX[net.version]}"
                )
    for net in config.parsers.trusted_proxies:
        if net.prefixlen < MIN_PREFIX[net.version]:
            out.append(
                f"parsers.trusted_proxies holds {net}: any client in it can set "
                "X-Forwarded-For and pose as any address (to dodge a ban or get another "
                "address banned), and is never banned itself; name only your proxies' "
                "addresses"
            )
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    """Run parsers, detectors and decisions offline over log files.

    Exit status: 0, or 1 when a file could not be read to its end (each named on
    stderr, the others replayed), or 2 for a missing file or an unknown format.
    """
    from aisentinel.replay import (  # noqa: PLC0415
        READ_ERRORS,
        detect_format,
        print_summary,
        replay,
    )

    config = _load(args.config)
    if config is None:
        return 1
    unreadable = [(p, why) for p in args.files if (why := _unreadable(p)) is not None]
    if unreadable:
        for p, why in unreadable:
            print(f"aisentinel: replay: {p}: {why}", file=sys.stderr)
        return 2
    jobs: list[tuple[Path, str]] = []
    for p in args.files:
        try:
            jobs.append((p, detect_format(p) if args.format == AUTO else args.format))
        except READ_ERRORS:
            jobs.append((p, AUTO))  # replay() reports the fault when it reads the file
        except ValueError as exc:
            print(f"aisentinel: replay: {p}: {exc}; name it with --format", file=sys.stderr)
            return 2
    out = sys.stdout
    zone = None
    if args.timezone is not None:
        try:
            zone = zone_info(args.timezone)
        except ValueError as exc:
            print(f"aisentinel: replay: --timezone: {exc}", file=sys.stderr)
            return 2
    summary = replay(jobs, config, out, as_json=args.json, summary_only=args.summary, zone=zone)
    print_summary(summary, out, as_json=args.json)
    return 1 if summary.failed_files else 0


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be replayed (missing, not a file, unreadable), or None."""
    if path.is_dir():
        return "is a directory; name the log files in it"
    if not path.is_file():
        return "no such file" if not path.exists() else "not a regular file"
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None


def cmd_audit(args: argparse.Namespace) -> int:
    """Check this host against the AI-server hardening checklist."""
    from aisentinel.audit.cli import run as run_audit  # noqa: PLC0415

    config = _load(args.config)
    if config is None:
        return 2
    from aisentinel.daemon import audit_facts  # noqa: PLC0415

    facts = audit_facts(config)
    if facts["enforcement"] is not None:
        facts["enforcement"], facts["enforcement_note"] = _running_enforcement(
            args, config, facts["enforcement"]
        )
    return run_audit(args, config.audit, **facts)


def _running_enforcement(
    args: argparse.Namespace, config: Config, configured: str
) -> tuple[str | None, str]:
    """aisentinel's own banning as `aisentinel audit` counts it: the ban responders
    ``configured`` that the running daemon's `status` shows at work (not unhealthy);
    none, with a note saying why, when no daemon runs or it cannot be asked."""
    from aisentinel.control import (  # noqa: PLC0415
        CommandError,
        ControlError,
        DaemonNotRunning,
        PermissionRefused,
        request,
    )
    from aisentinel.daemon import live_enforcement  # noqa: PLC0415
    from aisentinel.responders.base import ResponderHealth  # noqa: PLC0415

    lead = f"aisentinel is configured to ban ({configured}) but"
    path = config.daemon.control_socket
    if path is None:
        return None, (
            f"{lead} its control socket is off ([daemon] control_socket), so whether a "
            "daemon runs and bans cannot be asked"
        )
    try:
        snap = request(path, "status", timeout=STATUS_TIMEOUT)
    except DaemonNotRunning:
        running = _running_without_socket(args, path)
        if running is not None:
            return None, f"{lead} its daemon cannot be asked: {running}"
        return None, f"{lead} no daemon is running (nothing answers on {path})"
    except PermissionRefused as exc:
        return None, (
            f"{lead} its daemon cannot be asked: {exc}; run as root or as a member of the "
            "aisentinel group"
        )
    except (CommandError, ControlError) as exc:
        return None, f"{lead} its daemon cannot be asked: {exc}"
    rows = snap.get("responders") if isinstance(snap, dict) else None
    if not isinstance(rows, list):
        return None, f"{lead} its daemon gave an unexpected answer on {path}"
    health = {
        str(row.get("name")): None
        if row.get("healthy") is None
        else ResponderHealth(ok=row.get("healthy") is True, detail=str(row.get("detail") or ""))
        for row in rows
        if isinstance(row, dict)
    }
    return live_enforcement(config, health)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the daemon on a generated scenario and show what it detects and would do."""
    from aisentinel.demo.runner import run_demo  # noqa: PLC0415

    return run_demo(duration=args.duration, seed=args.seed, workdir=args.workdir)


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running daemon what it is doing.

    Exit 0 when all is up, 1 when something is down, 2 when refused, 3 when not running.
    """
    from aisentinel.control import (  # noqa: PLC0415
        CommandError,
        ControlError,
        DaemonNotRunning,
        PermissionRefused,
        request,
    )
    from aisentinel.status import problems, render  # noqa: PLC0415

    path = _socket(args, "status")
    if path is None:
        return 2
    try:
        snap = request(path, "status", timeout=args.timeout)
    except DaemonNotRunning as exc:
        running = _running_without_socket(args, path)
        if running is not None:
            print(f"aisentinel: status: {running}", file=sys.stderr)
            return 1
        print(f"aisentinel: status: {exc}", file=sys.stderr)
        return 3
    except PermissionRefused as exc:
        print(
            f"aisentinel: status: {exc}; run as root or as a member of the aisentinel group",
            file=sys.stderr,
        )
        return 2
    except (CommandError, ControlError) as exc:
        print(f"aisentinel: status: {exc}", file=sys.stderr)
        return 2
    if not isinstance(snap, dict):
        print(f"aisentinel: status: unexpected answer from {path}", file=sys.stderr)
        return 2
    if isinstance(sys.stdout, io.TextIOWrapper):  # never fail on a terminal's encoding
        sys.stdout.reconfigure(errors="backslashreplace")
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render(snap))
    return 1 if problems(snap) else 0


def _running_without_socket(args: argparse.Namespace, socket_path: Path) -> str | None:
    """What to say when nobody answers on the control socket but a process holds the
    state directory's run lock (a daemon whose socket file was removed); ``None`` when
    none does (the config's ``state_dir``, else the default one)."""
    from aisentinel.runlock import LOCK_FILE, holder  # noqa: PLC0415

    try:
        state_dir = load_config(args.config).daemon.state_dir
    except ConfigError:
        state_dir = DaemonConfig().state_dir
    lock = state_dir / LOCK_FILE
    pid = holder(lock)
    if pid is None:
        return None
    return (
        f"a daemon runs (pid {pid} holds {lock}) but its control socket {socket_path} is "
        "missing: it binds it again within seconds unless something else is at that path "
        "(its log says `control socket`); else restart it (systemctl restart aisentinel)"
    )


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Lift every enforcement aisentinel holds, with the daemon stopped.

    Exit 0 when every withdrawal succeeded, 1 when one failed (its line says why), 2
    when a daemon runs (nothing done). A refused config is said, then what can still be
    read of it and what the state directory records are withdrawn (the package's prerm
    runs this: a typo must not leave the bans in force after the program is gone).
    """
    from aisentinel.withdraw import fallback_config, withdraw_all  # noqa: PLC0415

    config = _load(args.config)
    if config is None:
        config, notes = fallback_config(args.config)
        print(
            f"aisentinel: withdraw: the config is refused (see above); withdrawing what "
            f"{config.daemon.state_dir} records and the responders the file names",
            file=sys.stderr,
        )
        for note in notes:
            print(f"aisentinel: withdraw: {note}", file=sys.stderr)
    if isinstance(sys.stdout, io.TextIOWrapper):  # never fail on a terminal's encoding
        sys.stdout.reconfigure(errors="backslashreplace")
    return withdraw_all(config, sys.stdout, sys.stderr, force=args.force)


def _socket(args: argparse.Namespace, command: str) -> Path | None:
    """The control socket: ``--socket``, else the config's (``None``: off, said on stderr)."""
    path: Path | None = args.socket
    if path is None:
        try:
            path = load_config(args.config).daemon.control_socket
        except ConfigError as exc:  # a broken config must not hide the running daemon
            path = DEFAULT_CONTROL_SOCKET
            print(
                f"aisentinel: {command}: config unusable ({len(exc.issues)} problems, see "
                f"`aisentinel check-config`); asking {path}",
                file=sys.stderr,
            )
        if path is None:
            print(
                f"aisentinel: {command}: the control socket is off in the config", file=sys.stderr
            )
    return path


def _positive_int(text: str) -> int:
    """``--limit``: a whole number from 1 to ``LIMIT_MAX`` (argparse says why not)."""
    from aisentinel.decisions.admin import LIMIT_MAX  # noqa: PLC0415

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"must be from 1 to {LIMIT_MAX:,}: {value}")
    return value


def cmd_admin(args: argparse.Namespace) -> int:
    """bans / unban / ban / allow / brake reset, on the running daemon.

    Exit 0 when done, 1 when the daemon refused (the reason on stderr), 2 when this
    user may not ask or the request is bad, 3 when the daemon is not running.
    """
    from aisentinel.control import (  # noqa: PLC0415
        CommandError,
        ControlError,
        DaemonNotRunning,
        PermissionRefused,
        request,
    )
    from aisentinel.decisions.admin import render_bans, render_result  # noqa: PLC0415
    from aisentinel.events import AddressTarget  # noqa: PLC0415

    command: str = args.admin
    name = command.replace("_", " ")  # brake_reset, ledger_accept: two words on the line
    fields: dict[str, str | bool | int] = {}
    target = getattr(args, "target", None)
    if target is not None:
        if command != "unban":  # unban also takes a workload's kind:id; the daemon checks it
            try:
                AddressTarget.parse(target)
            except ValueError:
                shown = escape(target, limit=60)
                print(f"aisentinel: {name}: {shown} is not an IP address or CIDR", file=sys.stderr)
                return 2
        fields["target"] = target
    for key in ("ttl", "reason", "limit"):
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = value
    for flag in ("force", "replace"):
        if getattr(args, flag, False):
            fields[flag] = True
    path = _socket(args, name)
    if path is None:
        return 2
    try:
        result = request(path, command, timeout=args.timeout, **fields)
    except DaemonNotRunning as exc:
        print(f"aisentinel: {name}: {exc}", file=sys.stderr)
        return 3
    except PermissionRefused as exc:
        print(
            f"aisentinel: {name}: {exc}; run as root or as a member of the aisentinel group",
            file=sys.stderr,
        )
        return 2
    except CommandError as exc:
        print(f"aisentinel: {name}: {escape(str(exc), limit=300)}", file=sys.stderr)
        return 1
    except ControlError as exc:
        print(f"aisentinel: {name}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(result, dict):
        print(f"aisentinel: {name}: unexpected answer from {path}", file=sys.stderr)
        return 2
    if isinstance(sys.stdout, io.TextIOWrapper):  # never fail on a terminal's encoding
        sys.stdout.reconfigure(errors="backslashreplace")
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
    elif command == "bans":
        sys.stdout.write(render_bans(result))
    else:
        sys.stdout.write(render_result(command, result))
    return 0


def _admin_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, command: str, help: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.add_argument(
        "--socket", type=Path, default=None, help="control socket (default: from the config)"
    )
    p.add_argument("--config", type=Path, default=None, help="TOML config file")
    p.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_admin, admin=command)
    return p


def _add_two_word_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``brake reset`` and ``ledger accept``: control-socket commands of two words."""
    for group, help, action, command, what in (
        ("brake", "the storm brake", "reset", "brake_reset", "release the tripped storm brake"),
        (
            "ledger",
            "the decision ledger after a loss",
            "accept",
            "ledger_accept",
            "after a lost ledger: take the ledger as the whole truth again and lift what "
            "the responders hold beyond it",
        ),
    ):
        parser = sub.add_parser(group, help=f"{help}: `aisentinel {group} {action}`")
        actions = parser.add_subparsers(dest=f"{group}_command", required=True, metavar="ACTION")
        _admin_parser(actions, action, command, what)


def _read_text_lines(path: Path, fmt: str) -> list[str] | None:
    """The lines of ``path``, each cut at the cap the daemon uses for format ``fmt`` (for
    ``auto``, the largest: the format is told from the lines afterwards)."""
    from aisentinel.parsers import line_cap  # noqa: PLC0415
    from aisentinel.replay import READ_ERRORS, read_lines  # noqa: PLC0415

    cap = line_cap(fmt)
    why = _unreadable(path)
    if why is not None:
        print(f"aisentinel: {path}: {why}", file=sys.stderr)
        return None
    lines: list[str] = []
    try:
        for batch in read_lines(path, max_line_bytes=cap):
            lines.extend(batch)
    except READ_ERRORS as exc:
        print(f"aisentinel: {path}: cannot read to the end: {exc}", file=sys.stderr)
    return lines


def cmd_rules(args: argparse.Namespace) -> int:
    """List, show or test the detection rules the config loads.

    Exit status: 0; 1 for a bad config or an unknown rule id; 2 for an unreadable file.
    """
    from aisentinel.explain import (  # noqa: PLC0415
        rules_list,
        rules_show,
        rules_test,
        ruleset_of,
    )

    config = _load(args.config)
    if config is None:
        return 1
    ruleset = ruleset_of(config)
    if args.rules_command == "list":
        rules_list(ruleset, sys.stdout, as_json=args.json)
        return 0
    if args.rules_command == "show":
        loaded = ruleset.get(args.id)
        if loaded is None:
            print(f"aisentinel: rules show: no enabled rule {args.id!r}", file=sys.stderr)
            return 1
        rules_show(loaded, sys.stdout, as_json=args.json)
        return 0
    lines = _read_text_lines(args.file, args.format)
    if lines is None:
        return 2
    try:
        rules_test(
            lines,
            ruleset,
            sys.stdout,
            fmt=args.format,
            as_json=args.json,
            parsers=config.parsers,
        )
    except ValueError as exc:
        print(f"aisentinel: rules test: {args.file}: {_line_problem(exc)}", file=sys.stderr)
        return 2
    return 0


def _line_problem(exc: ValueError) -> str:
    """What ``explain`` / ``rules test`` say when the lines could not be handled: only a
    format that could not be told asks for ``--format``."""
    if isinstance(exc, UnknownFormatError):
        return f"{exc}; name it with --format"
    if isinstance(exc, UnicodeError):
        return (
            "a line holds text that is not valid Unicode (a lone surrogate, e.g. from a JSON "
            f"\\udcff escape, or bytes that are not UTF-8) and could not be processed: {exc}"
        )
    return f"the lines could not be processed: {exc}"


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain what parsers, rules and detectors make of log lines.

    Exit status: 0; 1 for a bad config or when no line was understood; 2 for an
    unreadable file or an unknown format.
    """
    from aisentinel.explain import explain_lines  # noqa: PLC0415

    config = _load(args.config)
    if config is None:
        return 1
    if args.file is not None:
        lines = _read_text_lines(args.file, args.format)
        if lines is None:
            return 2
    elif args.line is not None:
        lines = [args.line]
    else:
        print("aisentinel: explain: give a LINE or --file FILE", file=sys.stderr)
        return 2
    if not lines:
        print("aisentinel: explain: no lines", file=sys.stderr)
        return 1
    try:
        unparsed = explain_lines(lines, config, sys.stdout, fmt=args.format, as_json=args.json)
    except ValueError as exc:
        print(f"aisentinel: explain: {_line_problem(exc)}", file=sys.stderr)
        return 2
    return 1 if unparsed == len(lines) else 0


def _add_rules_commands(sub: Any) -> None:
    """The ``rules`` and ``explain`` sub-commands."""
    rules = sub.add_parser("rules", help="list, show or test the detection rules")
    rules.add_argument("--config", type=Path, default=None, help="TOML config file")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rlist = rsub.add_parser("list", help="the enabled rules, one a line")
    rlist.add_argument("--json", action="store_true")
    rshow = rsub.add_parser("show", help="every field of one rule")
    rshow.add_argument("id", metavar="ID")
    rshow.add_argument("--json", action="store_true")
    rtest = rsub.add_parser("test", help="replay a log through the rules only")
    rtest.add_argument("file", type=Path, metavar="FILE")
    rtest.add_argument("--format", choices=parser_names(auto=True), default=AUTO)
    rtest.add_argument("--json", action="store_true", help="JSON Lines output")
    for p in (rlist, rshow, rtest):
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    rules.set_defaults(func=cmd_rules)

    explain = sub.add_parser(
        "explain", help="which parser, event, rules and detectors a log line meets, and why"
    )
    explain.add_argument("line", nargs="?", default=None, metavar="LINE")
    explain.add_argument("--file", type=Path, default=None, help="explain every line of FILE")
    explain.add_argument("--format", choices=parser_names(auto=True), default=AUTO)
    explain.add_argument("--json", action="store_true", help="JSON Lines output")
    explain.add_argument("--config", type=Path, default=None, help="TOML config file")
    explain.set_defaults(func=cmd_explain)


def _add_replay_command(sub: Any) -> None:
    """``aisentinel replay``."""
    rep = sub.add_parser("replay", help="run detection offline over log files")
    rep.add_argument("files", type=Path, nargs="+", metavar="FILE")
    rep.add_argument(
        "--format",
        choices=parser_names(auto=True),
        default=AUTO,
        help="the parser to use (default: sniffed per file from its first lines)",
    )
    rep.add_argument(
        "--timezone",
        default=None,
        metavar="ZONE",
        help="the zone the files' syslog and nginx error-log times are written in, as a "
        "source's timezone key (IANA name or UTC; default: the local zone)",
    )
    rep.add_argument("--json", action="store_true", help="JSON Lines output")
    rep.add_argument(
        "--summary",
        action="store_true",
        help="print only the closing summary, not each finding and decision",
    )
    rep.add_argument("--config", type=Path, default=None)
    rep.set_defaults(func=cmd_replay)


DEMO_MAX_SECONDS = 3600.0
"""The longest ``demo --duration``: the scenario is planned in memory up front."""


def _demo_duration(text: str) -> float:
    """``demo --duration``: a finite number of seconds, 1 to an hour (argparse type)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1.0 <= seconds <= DEMO_MAX_SECONDS:  # also refuses nan and the infinities
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 1 to {DEMO_MAX_SECONDS:.0f}, not {text}"
        )
    return seconds


def _add_check_command(sub: Any) -> None:
    check = sub.add_parser("check-config", help="validate a config file (exit 1 if bad)")
    check.add_argument("path", type=Path, nargs="?", default=None)
    check.add_argument("--print", action="store_true", help="print the effective config")
    check.add_argument(
        "--user",
        default=None,
        help=(
            "also refuse a file the config names that this user cannot read (as root, on "
            "the default config: the user the service's unit runs as)"
        ),
    )
    check.set_defaults(func=cmd_check_config)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and man-page generation)."""
    from aisentinel.audit.args import add_arguments as audit_arguments  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="aisentinel",
        description="Security daemon for self-hosted AI servers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"aisentinel {__version__} ({compiled.describe()})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, default=None, help="TOML config file")
    run.add_argument("--log-format", choices=["auto", "json", "console", "journal"], default=None)
    run.set_defaults(func=cmd_run)

    _add_check_command(sub)
    _add_replay_command(sub)

    audit = sub.add_parser("audit", help="audit host hardening")
    audit.add_argument("--config", type=Path, default=None)
    audit_arguments(audit)
    audit.set_defaults(func=cmd_audit)

    status = sub.add_parser(
        "status",
        help=(
            "what the running daemon is doing (exit 1 if something is down, 2 if it cannot "
            "be asked, 3 if not running)"
        ),
    )
    status.add_argument("--json", action="store_true", help="the full snapshot as JSON")
    status.add_argument(
        "--socket", type=Path, default=None, help="control socket (default: from the config)"
    )
    status.add_argument("--config", type=Path, default=None, help="TOML config file")
    status.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)

    bans = _admin_parser(sub, "bans", "bans", "bans, throttles and freezes in force")
    bans.add_argument("--json", action="store_true", help="exact values as JSON")
    bans.add_argument(
        "--target",
        metavar="ADDR_OR_CIDR",
        default=None,
        help="only the bans of this address or network (inside it, or holding part of it)",
    )
    bans.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N bans, the soonest to end first",
    )
    unban = _admin_parser(sub, "unban", "unban", "lift a ban now (and forgive its history)")
    unban.add_argument("target", help="an address, a CIDR, or a workload (unit:NAME)")
    unban.add_argument("--json", action="store_true", help="exact values as JSON")
    ban = _admin_parser(sub, "ban", "ban", "ban an address or CIDR by hand")
    ban.add_argument("target", help="an address or CIDR")
    ban.add_argument("--ttl", default=None, help="how long, e.g. 1h (default: ban_ttl)")
    ban.add_argument("--reason", default="", help="recorded in the ledger")
    ban.add_argument(
        "--force",
        action="store_true",
        help="ban a network wider than /16 (IPv4) or /48 (IPv6); /8 and /32 stay the limit",
    )
    ban.add_argument(
        "--replace",
        action="store_true",
        help="end a ban of the target in force after --ttl even when it would end later "
        "(without it the later end is kept)",
    )
    allow = _admin_parser(
        sub, "allow", "allow", "allowlist an address or CIDR for a while (lifts its bans)"
    )
    allow.add_argument("target", metavar="CIDR", help="an address or CIDR")
    allow.add_argument("--ttl", default="1h", help="how long, e.g. 8h (default: 1h)")
    allow.add_argument("--reason", default="", help="recorded in the ledger")
    allow.add_argument(
        "--json", action="store_true", help="exact values as JSON (every ban lifted)"
    )
    withdraw = sub.add_parser(
        "withdraw",
        help=(
            "with the daemon stopped: lift every ban, throttle and freeze aisentinel holds "
            "(nftables table, ufw rules, fail2ban jail, throttles); the ledger stays"
        ),
    )
    withdraw.add_argument("--config", type=Path, default=None, help="TOML config file")
    withdraw.add_argument(
        "--force",
        action="store_true",
        help="go on even when a daemon seems to run (its lock is held or its socket answers)",
    )
    withdraw.set_defaults(func=cmd_withdraw)
    _add_two_word_commands(sub)
    _add_rules_commands(sub)

    demo = sub.add_parser("demo", help="run on a bundled attack scenario (dry-run)")
    demo.add_argument(
        "--duration",
        type=_demo_duration,
        default=45.0,
        help=f"seconds of traffic, 1 to {DEMO_MAX_SECONDS:.0f} (default: 45)",
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the files here: an empty folder or an earlier demo's (its state/ and "
        "logs/ start afresh at each run)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aisentinel`` command."""
    args = build_parser().parse_args(argv)
    # The hot path allocates millions of short-lived tuples (one event per line), most of
    # them freed by reference counting. Start-up objects are frozen out of the cyclic
    # collector's scans and young collections run less often (measured: about 3% of
    # replay time); cyclic garbage is still collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sigpipe: Any = None
    restore = args.command != "run"
    if restore:
        # A closed pipe (`| head`) ends the command quietly, as it does for other tools.
        sigpipe = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        # Only warnings, on stderr: stdout carries the command's own output (JSON, tables).
        from aisentinel.logsetup import configure_logging  # noqa: PLC0415

        configure_logging("auto", "warning", sys.stderr)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, sqlite3.Error) as exc:
        # Last resort: a fault of the surroundings (a file, the disk, a port) is one line,
        # never a traceback. Programming errors still show theirs.
        from aisentinel.faults import describe  # noqa: PLC0415

        _quiet_stdout()
        print(f"aisentinel: {args.command}: {describe(exc)}", file=sys.stderr)
        return 1
    finally:
        if restore:
            # An in-process caller (the tests, an embedding program) gets its handler
            # back: left at SIG_DFL, its next write to a closed pipe or socket would kill
            # the whole process instead of raising BrokenPipeError.
            signal.signal(signal.SIGPIPE, sigpipe)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null when it failed (a full disk), so exit adds no second error."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
