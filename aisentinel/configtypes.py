"""Building blocks for config models: strict base model, durations, networks.

Every plug-in's config model derives from :class:`StrictModel` (unknown keys are
errors, values are immutable once loaded) and uses these annotated types so that
durations and CIDRs are written the same way everywhere.

Every number a config accepts has a finite lower and upper bound (the test suite
checks every registered model for it): a value the daemon cannot live with (``nan``,
``inf``, a threshold of 10**20) is refused by ``check-config``, which systemd runs
before start and reload, instead of stalling or killing the running daemon. Durations
are at most :data:`MAX_DURATION` unless a field narrows them with
:class:`DurationBounds`; ints and floats use ``Field(ge=..., le=...)``.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler, PlainSerializer
from pydantic_core import CoreSchema, ErrorDetails, core_schema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

MAX_DURATION = 366 * 86400.0
"""The longest duration any key accepts (a year): longer is a typo, not a policy."""

MAX_INTERVAL = 3600.0
"""The longest period of the daemon's own timers (polling, heartbeat, expiry)."""

MIN_INTERVAL = 0.01
"""The shortest period of a timer: below 10ms a loop is busy-waiting."""

DEFAULT_MAX_KEYS = 87_000
"""The default bound of a per-key table (a detector's ``max_keys``, the decision engine's
"already banned" lookup, the pipeline's quiet keys). Just under CPython's dict cliff:
a dict whose keys come and go is rebuilt with 2^18 slots while it holds at most 87,381
keys, and with 2^19 from 87,382 on, twice the memory (string keys: 3.8 MB against 7.7
MB at 87,000 and 100,000 keys). With 100,000 as the bound, ``bench/memory.py --ips
1000000 --daemon`` settled at 194.2 MB; with this one, at 156.3 MB."""


def absolute_path(value: Any) -> Any:
    """``value`` as given when it is not a path or is an absolute one; ``ValueError`` for
    a relative path (``""`` is ``.``), which would depend on where the daemon started."""
    if isinstance(value, str | Path) and not Path(value).is_absolute():
        raise ValueError(f"must be an absolute path, not {str(value)!r}")
    return value


def parse_duration(value: Any) -> float:
    """Seconds from ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` or a plain number of seconds.

    Raises ``ValueError`` (which pydantic reports with the key) for anything else,
    including negative numbers, booleans, ``nan``, ``inf`` and numbers too large for a
    float (``1e400s``). The upper bound is checked afterwards by :class:`DurationBounds`.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(_TOO_LONG) from None
        if math.isnan(seconds):
            raise ValueError("a duration must be a number of seconds, not nan")
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        if math.isinf(seconds):
            raise ValueError(_TOO_LONG)
        return seconds
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    text = value.strip().lower()
    if not text:
        raise ValueError("empty duration")
    if _PLAIN_SECONDS.fullmatch(text):  # "3600", as `aisentinel ban --ttl 3600` gives it
        return parse_duration(float(text))
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"bad duration {value[:40]!r}: use a number with a unit (ms, s, m, h, d, w), e.g. "
            "'10m', or a number of seconds"
        )
    if not math.isfinite(total):
        raise ValueError(_TOO_LONG)
    return total


_TOO_LONG = "a duration must be a finite number of seconds (at most 366d)"
_PLAIN_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
"""A duration written as a plain number of seconds."""


@functools.lru_cache(maxsize=256)  # findings' messages: a few distinct windows, many calls
def format_duration(seconds: float) -> str:
    """The shortest exact ``1h30m``-style text for a number of seconds.

    Never raises: ``nan``, infinities and negative numbers (which no accepted config
    holds) come back as ``"nan"``, ``"inf"`` and ``"-1h"``-style text.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
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
    return "".join(out) or "0s"


def unknown_name(name: str, known: Sequence[str], what: str, *, hint: str = "") -> str:
    """Why ``name`` is refused: not one of ``known``; the closest ones, else ``hint``
    (where the known ones are listed), else all of them."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r}; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"unknown {what} {name!r}; {hint or 'known: ' + ', '.join(known)}"


_ARRAY_ERRORS = frozenset({"list_type", "tuple_type", "set_type", "frozen_set_type"})
"""pydantic's errors for a value that is not a sequence: a TOML array is wanted."""


def error_reason(err: ErrorDetails) -> str:
    """One pydantic error's reason in the words of a TOML file: ``unknown key``, ``must
    be an array`` (not pydantic's "valid tuple"/"valid list", Python type names), or the
    validator's own message without pydantic's "Value error, " prefix."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _ARRAY_ERRORS:
        value = err.get("input")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            shown = json.dumps(value) if isinstance(value, str) else repr(value)
            if len(shown) <= 60:
                return f"must be an array (for one value: [{shown}])"
        return "must be an array"
    return err["msg"].removeprefix("Value error, ")


def _parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("a network is a string like '10.0.0.0/8' or '2001:db8::/32'")
    text = value.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"bad CIDR {value!r}: {exc}") from None
        # Host bits set (203.0.113.7/8): refused rather than silently widened.
        host = text.partition("/")[0]
        raise ValueError(
            f"bad CIDR {value!r}: host bits set; write {loose} for that whole network, "
            f"or {host}/{loose.max_prefixlen} for the one address"
        ) from None


@dataclass(frozen=True, slots=True)
class DurationBounds:
    """Annotation metadata: a duration key's range, with reasons in duration units.

    ``Annotated[Duration, DurationBounds(60, 86400)]`` narrows :data:`Duration`'s
    default range (0s to 366d). ``low_exclusive`` makes the lower bound "more than".
    ``why`` is appended to the "at most" reason. The config-range test reads these.
    """

    low: float
    high: float
    low_exclusive: bool = False
    why: str = ""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        inner = handler(source)
        schema = core_schema.no_info_after_validator_function(self.check, inner)
        if "serialization" in inner:
            schema["serialization"] = inner["serialization"]
        return schema

    def check(self, seconds: float) -> float:
        """``seconds`` if within the bounds, else ``ValueError`` with a readable reason."""
        if self.low_exclusive and seconds <= self.low:
            raise ValueError(f"must be more than {_bound_text(self.low)}")
        if seconds < self.low:
            raise ValueError(f"must be at least {_bound_text(self.low)}")
        if seconds > self.high:
            why = f" ({self.why})" if self.why else ""
            raise ValueError(f"must be at most {_bound_text(self.high)}{why}")
        return seconds


def _bound_text(seconds: float) -> str:
    """``366d`` rather than ``52w2d``: bounds read best in whole days."""
    days, rest = divmod(seconds, 86400.0)
    if days >= 1 and rest == 0:
        return f"{int(days)}d"
    return format_duration(seconds)


_SERIALIZE_DURATION = PlainSerializer(format_duration, return_type=str)

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    DurationBounds(0.0, MAX_DURATION),
    _SERIALIZE_DURATION,
]
"""Seconds, written in config as ``"10m"`` or a number; finite, 0s to 366d."""

PositiveDuration = Annotated[Duration, DurationBounds(0.0, MAX_DURATION, low_exclusive=True)]
"""A duration that must be more than 0s (windows, TTLs)."""

Interval = Annotated[
    Duration,
    DurationBounds(MIN_INTERVAL, MAX_INTERVAL, why="the daemon's own timers run at least hourly"),
]
"""The period of one of the daemon's own timers: 10ms to 1h (shorter busy-waits)."""

Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_parse_network),
    PlainSerializer(str, return_type=str),
]
"""An IPv4/IPv6 network; a bare address means a /32 or /128. Host bits must be clear
(``203.0.113.7/8`` is refused, naming ``203.0.0.0/8`` and ``203.0.113.7/32``)."""


CredentialsMode = Literal["learned", "checked", "unchecked"]
"""``[parsers] credentials``: whether a user or API key id in the access log proves an
authentication: learned per location from the traffic, always, or never (see
:class:`aisentinel.detectors.shared.CredentialTrust`)."""

ForwardedHeader = Literal["xff", "real_ip"]
"""``[parsers] forwarded_header``: which forwarded value of a request from a trusted
proxy names its client first: the X-Forwarded-For chain (``xff``, right-most entry
outside the trusted proxies; X-Real-IP only when the chain names none) or the
X-Real-IP the proxy sets (``real_ip``; the chain only when it names none). See
:meth:`aisentinel.parsers.proxy.ProxyResolver.client`."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, loaded config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def zone_info(name: str) -> tzinfo:
    """The zone an IANA name (``Europe/Berlin``) or ``UTC`` names; ``ValueError`` saying
    why for a name the system's zone database (or the ``tzdata`` package) lacks."""
    if name in ("UTC", "Etc/UTC"):
        return UTC  # needs no zone database
    if not name or name != name.strip():
        raise ValueError(f"time zone {name!r}: not an IANA zone name (e.g. 'UTC', 'Europe/Berlin')")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: not in the zone database (IANA names such as "
            "'UTC' or 'Europe/Berlin'; `timedatectl list-timezones` lists them)"
        ) from exc


def _zone_name(value: Any) -> Any:
    if isinstance(value, str):
        zone_info(value)
    return value


TimeZoneName = Annotated[str, BeforeValidator(_zone_name)]
"""An IANA time zone name or ``UTC``, refused unless the zone database knows it."""
