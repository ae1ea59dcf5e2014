"""``aisentinel withdraw``: lift every enforcement aisentinel holds, with the daemon stopped.

Stopping the daemon leaves its bans in force on purpose (a restart must not open the
gate), and a start lifts only what a responder dropped from the config left. This
command is for when aisentinel goes away (the package's prerm runs it on removal) or
an operator wants the host back as it was: each responder the config enables, each
the last run had (``state_dir/responders.json``) and each whose withdrawal is still
pending there is built from its config and withdrawn (:meth:`Responder.withdraw`:
nftables deletes its table, ufw deletes the rules commented ``aisentinel``, fail2ban
unbans its jail, throttle undoes what ``state_dir/throttle.json`` records), one line
each. The ledger is left as it is: a later start puts its active bans back (the
start's reconcile), as after any stop.

It refuses while a daemon uses this config's state directory or answers on its
control socket (the daemon would put back what is lifted), unless ``force``.

A config this release refuses (a typo in an unrelated section, an upgrade that refuses
an old value) must not keep the bans after the package is gone: :func:`fallback_config`
keeps what can still be read of it (``[daemon]`` ``state_dir`` and ``control_socket``,
each ``[responders.NAME]`` table, with that responder's defaults where its table is
refused), and the record in the state directory names the rest.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError

from aisentinel.clock import Clock, SystemClock
from aisentinel.commands import CommandRunner, SubprocessRunner
from aisentinel.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    DaemonConfig,
    read_config_data,
)
from aisentinel.control import (
    CommandError,
    ControlError,
    DaemonNotRunning,
    PermissionRefused,
    request,
)
from aisentinel.daemon import (
    Withdrawal,
    enabled_responders,
    recorded_responders,
    write_responders_record,
)
from aisentinel.faults import reason
from aisentinel.responders import REGISTRY as RESPONDERS
from aisentinel.responders.base import ResponderConfigBase, ResponderError
from aisentinel.runlock import LOCK_FILE
from aisentinel.runlock import release as release_lock
from aisentinel.runlock import take as take_lock
from aisentinel.textsafe import escape

EXIT_OK = 0
EXIT_FAILED = 1
"""A withdrawal failed (its line says why); the others were still tried."""
EXIT_REFUSED = 2
"""A daemon runs (or it could not be told): nothing was done."""
SOCKET_TIMEOUT = 3.0


def planned(config: Config) -> tuple[list[Withdrawal], list[Withdrawal]]:
    """Every responder to withdraw (the last run's, those pending, the config's; one per
    backend object, the recorded config first: it is what enforced), and the pending
    ones among them."""
    recorded, pending = recorded_responders(config.daemon.state_dir)
    found: dict[tuple[str, str], Withdrawal] = {}
    for w in [
        *(Withdrawal(n, cfg) for n, cfg in recorded.items()),
        *pending,
        *(Withdrawal(n, cfg) for n, cfg in enabled_responders(config).items()),
    ]:
        found.setdefault(w.key, w)
    return sorted(found.values(), key=lambda w: w.key), pending


def fallback_config(path: Path | None) -> tuple[Config, list[str]]:
    """What :func:`withdraw_all` needs of a config that :func:`load_config` refuses, and
    a note for each part left at its defaults: ``state_dir`` and ``control_socket`` when
    they are valid, each named responder with its table, or its defaults when the
    table is refused (what a responder owns by default is aisentinel's by name: table
    ``inet aisentinel``, rules commented ``aisentinel``, jail ``aisentinel``). When not
    even the TOML can be read, nftables with its defaults stands for the responders."""
    notes: list[str] = []
    tables: Any = {"nftables": {}}
    try:
        file, data = read_config_data(path)
        tables = data.get("responders")
    except ConfigError:
        file, data = str(path or DEFAULT_CONFIG_PATH), {}
        notes.append(
            "the file cannot be read: the state directory and control socket are the "
            "defaults, and the nftables table inet aisentinel is deleted too"
        )
    daemon_table = data.get("daemon")
    settings: dict[str, Any] = {}
    for key in ("state_dir", "control_socket"):
        if isinstance(daemon_table, dict) and key in daemon_table:
            try:
                DaemonConfig.model_validate({key: daemon_table[key]})
            except ValidationError:
                notes.append(f"daemon.{key} is refused: the default is used")
            else:
                settings[key] = daemon_table[key]
    daemon = DaemonConfig.model_validate(settings)
    responders: dict[str, ResponderConfigBase] = {}
    for name, table in tables.items() if isinstance(tables, dict) else ():
        if not isinstance(name, str) or name not in RESPONDERS:
            continue
        if isinstance(table, dict) and table.get("enabled") is False:
            continue  # switched off by the operator, refused or not
        model = RESPONDERS.get(name).config_model
        cfg: BaseModel
        try:
            cfg = model.model_validate(table)
        except ValidationError:
            try:
                cfg = model()
            except ValidationError:  # no defaults to fall back on: the record must do
                notes.append(f"responders.{name} is refused and has no defaults: left out")
                continue
            notes.append(f"responders.{name} is refused: its defaults are used")
        if isinstance(cfg, ResponderConfigBase) and cfg.enabled:
            responders[name] = cfg
    return Config(daemon=daemon, responders=responders, path=file), notes


def daemon_answers(socket_path: Path | None) -> str | None:
    """Why a daemon looks to be running behind ``socket_path`` (``None``: none answers)."""
    if socket_path is None:
        return None
    try:
        if not stat.S_ISSOCK(socket_path.stat().st_mode):
            return None  # a daemon started with it runs without its socket: see the lock
    except OSError:
        return None
    try:
        request(socket_path, "status", timeout=SOCKET_TIMEOUT)
    except DaemonNotRunning:
        return None
    except PermissionRefused:
        return f"a daemon answers on {socket_path} (and refused this user)"
    except ControlError as exc:
        return f"something listens on {socket_path} ({exc})"
    except CommandError as exc:  # the daemon's error answer: it runs
        return f"a daemon answers on {socket_path} ({escape(str(exc), limit=200)})"
    return f"a daemon answers on {socket_path}"


def withdraw_all(
    config: Config,
    out: TextIO,
    err: TextIO,
    *,
    force: bool = False,
    clock: Clock | None = None,
    commands: CommandRunner | None = None,
) -> int:
    """Withdraw every responder :func:`planned` names; one line each on ``out``.
    Returns :data:`EXIT_OK`, :data:`EXIT_FAILED` or :data:`EXIT_REFUSED`."""
    state_dir = config.daemon.state_dir
    lock_path = state_dir / LOCK_FILE
    try:
        lock = take_lock(lock_path, create=False)
    except OSError as exc:
        if not force:
            print(
                f"aisentinel: withdraw: cannot check {lock_path} ({reason(exc)}): run as root",
                file=err,
            )
            return EXIT_REFUSED
        lock = -1
    why = f"a process holds {lock_path} (a daemon using this state directory)"
    if lock is not None:
        why = daemon_answers(config.daemon.control_socket) or ""
    if why and not force:
        release_lock(lock)
        print(
            f"aisentinel: withdraw: {why}; it would put back what is lifted: stop it first "
            "(systemctl stop aisentinel), or pass --force if it is not aisentinel",
            file=err,
        )
        return EXIT_REFUSED
    try:
        return _withdraw(config, out, err, clock or SystemClock(), commands or SubprocessRunner())
    finally:
        release_lock(lock)


def _withdraw(config: Config, out: TextIO, err: TextIO, clock: Clock, cmds: CommandRunner) -> int:
    withdrawals, pending = planned(config)
    if not withdrawals:
        print("nothing to withdraw: no responder enabled or recorded", file=out)
        return EXIT_OK
    state_dir = config.daemon.state_dir
    failed: list[Withdrawal] = []
    for w in withdrawals:
        ok, detail = _one(w, clock, cmds, state_dir)
        if not ok:
            failed.append(w)
        mark = "" if ok else "FAILED: "
        print(f"{w.name}: {mark}{escape(detail, limit=500)}", file=out, flush=True)
    left = [p for p in pending if p.key in {f.key for f in failed}]
    if len(left) < len(pending):  # the next start need not try those again
        recorded, _ = recorded_responders(state_dir)
        try:
            write_responders_record(state_dir, recorded, left)
        except OSError as exc:
            print(
                f"aisentinel: withdraw: cannot update {state_dir}: {reason(exc)}; the next "
                "start lifts the pending ones again (harmless)",
                file=err,
            )
    return EXIT_FAILED if failed else EXIT_OK


def _one(w: Withdrawal, clock: Clock, cmds: CommandRunner, state_dir: Path) -> tuple[bool, str]:
    """(succeeded, what was lifted or why not) for one withdrawal."""
    try:
        responder = RESPONDERS.get(w.name).factory(
            w.config, clock=clock, commands=cmds, state_dir=state_dir
        )
    except Exception as exc:  # noqa: BLE001 - a broken plug-in must not stop the others
        return False, f"cannot be built: {type(exc).__name__}: {exc}"
    try:
        return True, responder.withdraw()
    except ResponderError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug in one backend must not stop the others
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):  # closing is best effort here
            responder.close()
