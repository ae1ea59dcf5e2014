"""Building blocks for config models: strict base model, durations, networks.

Every plug-in's config model derives from :class:`StrictModel` (unknown keys are
errors, values are immutable once loaded) and uses these annotated types so that
durations and CIDRs are written the same way everywhere.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` or a plain number of seconds.

    Raises ``ValueError`` (which pydantic reports with the key) for anything else,
    including negative numbers and booleans.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    text = value.strip().lower()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"bad duration {value!r}: use a number with a unit (ms, s, m, h, d, w), e.g. '10m'"
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact ``1h30m``-style text for a number of seconds."""
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            count = int(rest // size)
            out.append(f"{count}{unit}")
            rest -= count * size
    if rest > 1e-9:
        out.append(f"{round(rest * 1000)}ms")
    return "".join(out)


def _parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("a network is a string like '10.0.0.0/8' or '2001:db8::/32'")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"bad CIDR {value!r}: {exc}") from None


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""Seconds, written in config as ``"10m"`` or a number."""

Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_parse_network),
    PlainSerializer(str, return_type=str),
]
"""An IPv4/IPv6 network; a bare address means a /32 or /128."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, loaded config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
