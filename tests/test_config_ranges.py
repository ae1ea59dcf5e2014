"""Every config number has a finite range: check-config refuses what would kill the daemon."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo

from aisentinel.audit.config import AuditConfig
from aisentinel.config import ConfigError, DaemonConfig, ExporterConfig, parse_config
from aisentinel.configtypes import (
    MAX_DURATION,
    Duration,
    DurationBounds,
    Interval,
    StrictModel,
    format_duration,
    parse_duration,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.detectors import REGISTRY as DETECTORS
from aisentinel.detectors.common import KEY_BUDGET, MAX_KEYS, MAX_THRESHOLD, PerKeyCount
from aisentinel.parsers import REGISTRY as PARSERS
from aisentinel.parsers.base import ParsersConfig
from aisentinel.responders import REGISTRY as RESPONDERS
from aisentinel.sources import REGISTRY as SOURCES

CORE: dict[str, type[BaseModel]] = {
    "daemon": DaemonConfig,
    "exporter": ExporterConfig,
    "parsers": ParsersConfig,
    "decisions": DecisionsConfig,
    "audit": AuditConfig,
}


def _all_models() -> Iterator[tuple[str, type[BaseModel]]]:
    yield from CORE.items()
    for stage, registry in (
        ("sources", SOURCES),
        ("detectors", DETECTORS),
        ("responders", RESPONDERS),
        ("parsers", PARSERS),
    ):
        for entry in registry:
            yield f"{stage}.{entry.name}", entry.config_model


MODELS = list(_all_models())


class Leaf(typing.NamedTuple):
    """One number somewhere in a model: where, its type, its bounds and whether nan is refused."""

    where: str
    kind: type
    low: float
    high: float
    finite: bool


def _bounds(meta: list[Any]) -> tuple[float, float, bool, bool]:
    low, high, finite, duration = -math.inf, math.inf, False, False
    for item in meta:
        if isinstance(item, FieldInfo):
            more = _bounds(list(item.metadata))
            low, high = max(low, more[0]), min(high, more[1])
            finite = finite or more[2]
        elif isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = max(low, float(getattr(item, "ge", getattr(item, "gt", -math.inf))))
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = min(high, float(getattr(item, "le", getattr(item, "lt", math.inf))))
        elif isinstance(item, DurationBounds):
            low, high, duration = max(low, item.low), min(high, item.high), True
        elif getattr(item, "allow_inf_nan", True) is False:
            finite = True
    # Durations go through parse_duration, which refuses nan and inf (tested below).
    return low, high, finite or duration, duration


def numeric_leaves(
    annotation: Any, meta: list[Any], where: str, seen: frozenset[type] = frozenset()
) -> Iterator[Leaf]:
    """Every int/float reachable from ``annotation``: fields, tuple items, nested models."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        yield from numeric_leaves(base, meta + extra, where, seen)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from numeric_leaves(arg, meta, where, seen)
    elif origin in (tuple, list, set, frozenset, dict):
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                yield from numeric_leaves(arg, [], f"{where}[]", seen)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            for name, field in annotation.model_fields.items():
                yield from numeric_leaves(
                    field.annotation,
                    list(field.metadata),
                    f"{where}.{name}",
                    seen | {annotation},
                )
    elif annotation in (int, float):
        low, high, finite, _ = _bounds(meta)
        yield Leaf(where, annotation, low, high, finite or annotation is int)


def _unbounded(model: type[BaseModel], where: str) -> list[str]:
    return [
        leaf.where
        for leaf in numeric_leaves(model, [], where)
        if not (math.isfinite(leaf.low) and math.isfinite(leaf.high) and leaf.finite)
    ]


@pytest.mark.parametrize(("where", "model"), MODELS, ids=[w for w, _ in MODELS])
def test_every_number_has_a_finite_range(where: str, model: type[BaseModel]) -> None:
    """Each numeric key of a core or registered plug-in model has finite bounds and refuses nan."""
    assert _unbounded(model, where) == []


def test_range_check_catches_a_field_without_one() -> None:
    """A model with an unbounded int, float or tuple item is reported by the range check."""

    class Careless(StrictModel):
        count: int = 1
        ratio: float = Field(default=1.0, ge=0, le=2)
        ports: tuple[int, ...] = ()
        fine: Interval = 1.0

    assert _unbounded(Careless, "x") == ["x.count", "x.ratio", "x.ports[]"]


def test_every_model_is_walked() -> None:
    """The walk reaches the plug-ins and nested models it is meant to check."""
    names = {w for w, _ in MODELS}
    assert {"sources.file", "sources.journald", "detectors.ssh_bruteforce"} <= names
    assert {"responders.dryrun", "daemon", "decisions", "audit"} <= names
    leaves = {leaf.where for _, m in MODELS for leaf in numeric_leaves(m, [], "")}
    assert {".heartbeat_interval", ".poll_interval", ".ai_ports[]", ".max_keys"} <= leaves


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, "nan", "inf", "1e400s", "9" * 400 + "s", 10**400, -1, True],
)
def test_duration_refuses_non_finite(value: object) -> None:
    """nan, infinities and numbers beyond a float are refused by every duration key."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "seconds", [math.nan, math.inf, -math.inf, -90.0, 0.0, 5e-324, 1e-9, 0.9996, 1e308, 1e300]
)
def test_format_duration_never_raises(seconds: float) -> None:
    """format_duration gives text for any float, even values no accepted config holds."""
    text = format_duration(seconds)
    assert isinstance(text, str)
    assert text


def test_duration_text_of_plain_seconds_is_seconds() -> None:
    """ "3600" (what `aisentinel ban --ttl 3600` sends) is 3600 s, as the number 3600 is;
    a sign, an exponent or trailing text is still refused."""
    assert parse_duration("3600") == 3600.0
    assert parse_duration(" 1.5 ") == 1.5
    for bad in ("-5", "1e9", "3600x", "1.", ".5"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_format_duration_round_trips_the_bounds() -> None:
    """The largest accepted duration prints as text that parses back to the same seconds."""
    assert parse_duration(format_duration(MAX_DURATION)) == MAX_DURATION


def test_duration_bounds_give_readable_reasons() -> None:
    """Out-of-range durations say the bound in duration units."""

    class Timers(StrictModel):
        tick: Interval = 1.0
        span: Duration = 1.0

    for value, reason in [
        ("0s", "must be at least 10ms"),
        ("2h", "must be at most 1h"),
        (math.nan, "not nan"),
    ]:
        with pytest.raises(ValidationError, match=reason):
            Timers(tick=value)
    with pytest.raises(ValidationError, match="must be at most 366d"):
        Timers(span="367d")


def test_exact_threshold_and_max_keys_share_a_memory_budget() -> None:
    """max_keys x (threshold + 5) beyond 2 GiB is refused at the threshold key; within, accepted."""
    fits = KEY_BUDGET // (MAX_THRESHOLD + 5)
    ok = parse_config({"detectors": {"ssh_bruteforce": {"threshold": 1000, "max_keys": fits}}})
    assert ok.detectors["ssh_bruteforce"].max_keys == fits
    with pytest.raises(ConfigError) as info:
        parse_config({"detectors": {"http_auth": {"status_threshold": 1000, "max_keys": fits + 1}}})
    assert [(i.key, "2 GiB" in i.reason) for i in info.value.issues] == [
        ("detectors.http_auth.status_threshold", True)
    ]


# ----------------------------------------------------------------- largest accepted config


def _top(model: type[BaseModel]) -> dict[str, Any]:
    """Each numeric key of ``model`` set to its upper bound (tuples get one such item)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        leaves = list(numeric_leaves(field.annotation, list(field.metadata), name))
        if not leaves or leaves[0].where not in (name, f"{name}[]"):
            continue  # none, or in a nested table ([audit.side_services]: ports must differ)
        high = leaves[0].high
        value: Any = int(high) if leaves[0].kind is int else high
        out[name] = [value] if leaves[0].where.endswith("[]") else value
    if any(isinstance(m, PerKeyCount) for f in model.model_fields.values() for m in f.metadata):
        out["max_keys"] = min(MAX_KEYS, KEY_BUDGET // (MAX_THRESHOLD + 5))
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _toml_table(header: str, values: dict[str, Any]) -> str:
    lines = [header] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _largest_config(tmp_path: Path) -> Path:
    parts = [_toml_table(f"[{name}]", _top(model)) for name, model in CORE.items()]
    parts += [_toml_table(f"[detectors.{e.name}]", _top(e.config_model)) for e in DETECTORS]
    parts += [_toml_table(f"[responders.{e.name}]", _top(e.config_model)) for e in RESPONDERS]
    required = {
        "file": {"paths": [str(tmp_path / "a.log")]},
        "journald": {},
    }
    for entry in SOURCES:
        values: dict[str, object] = {"name": entry.name, "type": entry.name}
        if "parser" in entry.config_model.model_fields:  # a line source
            values["parser"] = "auto"
        values |= required.get(entry.name, {}) | _top(entry.config_model)
        parts.append(_toml_table("[[sources]]", values))
    path = tmp_path / "largest.toml"
    path.write_text("".join(parts))
    return path


def test_check_config_prints_the_largest_accepted_config(tmp_path: Path) -> None:
    """check-config --print on a config at every maximum exits 0 with JSON that loads back."""
    path = _largest_config(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "aisentinel", "check-config", "--print", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    printed = json.loads(res.stdout)
    assert printed["decisions"]["ban_ttl"] == format_duration(MAX_DURATION)
    assert printed["daemon"]["heartbeat_interval"] == "30s"
    assert printed["detectors"]["rate_abuse"]["ai_threshold"] == 1_000_000
    assert parse_config(printed).to_dict() == printed
