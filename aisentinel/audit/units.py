"""Reading systemd unit files directly, for hosts where ``systemctl`` cannot answer.

Only what the checks need: ``Environment=`` / ``EnvironmentFile=`` and the
``MemoryMax=`` / ``CPUQuota=`` settings of the ``[Service]`` section, from the unit
file (the first unit dir that has it wins, as in systemd) and its ``<unit>.d/*.conf``
drop-ins (all dirs, applied in file-name order).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

_NO_SYSTEMD = ("not been booted with systemd", "failed to connect to bus", "host is down")


def systemd_absent(message: str) -> bool:
    """Whether a systemctl error message says systemd is not running on this host."""
    lower = message.lower()
    return any(marker in lower for marker in _NO_SYSTEMD)


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


def unit_environment(unit_dirs: Sequence[Path], unit: str) -> dict[str, str] | None:
    """The environment a unit's files set, or ``None`` when no unit file exists.

    An empty ``Environment=`` resets the list, as in systemd; ``EnvironmentFile=``
    files are read when present (a ``-`` prefix only marks them optional).
    """
    files = unit_files(unit_dirs, unit)
    if not files:
        return None
    env: dict[str, str] = {}
    for key, value in service_settings(files):
        if key == "Environment":
            if not value:
                env.clear()
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            for word in words:
                name, sep, val = word.partition("=")
                if sep:
                    env[name] = val
        elif key == "EnvironmentFile" and value:
            env.update(_env_file(Path(value.lstrip("-"))))
    return env


def _env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
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
