"""docs/metrics.md read as data: one row per metric family (name, type, unit, labels, present)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
PRESENT = ("always", "event", "audit", "gpu", "gpu_event", "kernel_xid", "prometheus")
_ROW = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)` \| (\w+) \| ([^|]+) \| ([^|]+) \| (\w+) \| (.+) \|$")


@dataclass(frozen=True)
class Documented:
    """One documented family."""

    name: str
    type: str
    unit: str
    labels: frozenset[str]
    present: str
    meaning: str


def documented(text: str | None = None) -> dict[str, Documented]:
    """Every table row of docs/metrics.md, by exposition name (counters with ``_total``)."""
    rows: dict[str, Documented] = {}
    for line in (DOC.read_text() if text is None else text).splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        name, kind, unit, labels, present, meaning = m.groups()
        assert name not in rows, f"{name} documented twice"
        names = frozenset(re.findall(r"`([a-z_]+)`", labels)) - {"le"}
        rows[name] = Documented(name, kind, unit.strip(), names, present, meaning.strip())
    return rows


def family_of(series: str, docs: dict[str, Documented]) -> str | None:
    """The documented family a series name belongs to (``_bucket`` of a histogram...)."""
    if series in docs:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and base in docs and docs[base].type == "histogram":
            return base
    return None
