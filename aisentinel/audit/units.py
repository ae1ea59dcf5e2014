"""systemd units: :func:`systemctl_show`, and the unit files read directly for hosts
where ``systemctl`` cannot answer.

Only what the checks need: ``Environment=`` / ``EnvironmentFile=`` and the
``MemoryMax=`` / ``CPUQuota=`` settings of the ``[Service]`` section, from the unit
file (the first unit dir that has it wins, as in systemd) and its ``<unit>.d/*.conf``
drop-ins (all dirs, applied in file-name order). The ``EnvironmentFile=`` reader
(:func:`environment_files`) also serves the files ``systemctl show`` lists: systemd
reads them only when it starts the unit, so no property holds their variables.
"""

from __future__ import annotations

import glob
import shlex
from collections.abc import Sequence
from pathlib import Path

from aisentinel.audit.context import AuditContext
from aisentinel.commands import CommandError

_NO_SYSTEMD = ("not been booted with systemd", "failed to connect to bus", "host is down")


def systemd_absent(message: str) -> bool:
    """Whether a systemctl error message says systemd is not running on this host."""
    lower = message.lower()
    return any(marker in lower for marker in _NO_SYSTEMD)


def systemctl_show(ctx: AuditContext, unit: str, *properties: str) -> dict[str, list[str]] | str:
    """``systemctl show -p LoadState -p PROPERTY... unit`` as ``{property: values}``.

    Returns the reason instead when systemctl cannot answer. A property printed once
    per item (``EnvironmentFiles``) keeps every value, in order.
    """
    args = ["show", "-p", "LoadState"]
    for prop in properties:
        args += ["-p", prop]
    try:
        result = ctx.tool("systemctl", *args, unit)
    except CommandError as exc:
        return str(exc)
    if not result.ok:
        return result.message()
    props: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        props.setdefault(key, []).append(value)
    return props


def unit_files(unit_dirs: Sequence[Path], unit: str) -> list[Path]:
    """The unit file and its drop-ins in the order systemd applies them; empty if none."""
    main = next((d / unit for d in unit_dirs if (d / unit).is_file()), None)
    if main is None:
        return []
    dropins: dict[str, Path] = {}
    for directory in reversed(unit_dirs):  # earlier dirs override same-named drop-ins
        conf_dir = directory / f"{unit}.d"
        if conf_dir.is_dir():
            for conf in conf_dir.glob("*.conf"):
                dropins[conf.name] = conf
    return [main, *(dropins[name] for name in sorted(dropins))]


def service_settings(files: Sequence[Path]) -> list[tuple[str, str]]:
    """``(key, value)`` pairs of the ``[Service]`` sections of ``files``, in order.

    Unreadable files are skipped (a missing setting is then reported as missing).
    """
    out: list[tuple[str, str]] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section == "Service" and "=" in line:
                key, _, value = line.partition("=")
                out.append((key.strip(), value.strip()))
    return out


EnvSetting = tuple[str, Path | None]
"""A variable's value and the ``EnvironmentFile=`` file that set it (``None``: ``Environment=``)."""


class EnvironmentFileError(Exception):
    """An ``EnvironmentFile=`` file exists but cannot be read: the unit's variables are unknown."""


def environment_words(text: str) -> dict[str, str]:
    """The ``NAME=value`` words of one ``Environment=`` value (shell-style quotes), in order."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    out: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if sep:
            out[name] = value
    return out


def environment_files(entries: Sequence[str]) -> dict[str, EnvSetting]:
    """The variables the ``EnvironmentFile=`` ``entries`` set, later files winning.

    Each entry is an absolute path or glob pattern (a leading ``-`` only marks it
    optional); its matches are read in sorted order, as systemd does. A file that
    does not exist sets nothing (systemd skips it or refuses to start the unit). One
    that exists but cannot be read raises :class:`EnvironmentFileError`: a bind address
    could be set in it.
    """
    out: dict[str, EnvSetting] = {}
    for entry in entries:
        pattern = entry.removeprefix("-")
        if not pattern.startswith("/"):
            continue  # systemd refuses a relative path
        # glob.glob, not Path.glob: glob(3)'s rules, as systemd's (``*`` skips dot files)
        for name in sorted(glob.glob(pattern)):  # noqa: PTH207
            path = Path(name)
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                message = f"cannot read EnvironmentFile {path}: {reason}"
                raise EnvironmentFileError(message) from None
            out.update((key, (value, path)) for key, value in _env_file_lines(text).items())
    return out


def unit_environment(unit_dirs: Sequence[Path], unit: str) -> dict[str, EnvSetting] | None:
    """The environment a unit's files set, or ``None`` when no unit file exists.

    As in systemd: an empty ``Environment=`` resets the variables and an empty
    ``EnvironmentFile=`` the list of files; the files' variables override
    ``Environment=`` whatever the order of the lines (:func:`environment_files`).
    """
    files = unit_files(unit_dirs, unit)
    if not files:
        return None
    words: dict[str, str] = {}
    env_files: list[str] = []
    for key, value in service_settings(files):
        if key == "Environment":
            if not value:
                words.clear()
            words.update(environment_words(value))
        elif key == "EnvironmentFile":
            if not value:
                env_files.clear()
            else:
                env_files.append(value)
    env: dict[str, EnvSetting] = {name: (value, None) for name, value in words.items()}
    env.update(environment_files(env_files))
    return env


def _env_file_lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip("\"'")
    return out


def unit_limits(unit_dirs: Sequence[Path], unit: str) -> dict[str, str] | None:
    """The last ``MemoryMax=`` and ``CPUQuota=`` a unit's files set, or ``None`` if no unit."""
    files = unit_files(unit_dirs, unit)
    if not files:
        return None
    limits: dict[str, str] = {}
    for key, value in service_settings(files):
        if key in ("MemoryMax", "CPUQuota", "MemoryLimit"):
            limits["MemoryMax" if key == "MemoryLimit" else key] = value
    return limits
