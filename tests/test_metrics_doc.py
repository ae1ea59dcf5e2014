"""docs/metrics.md against a real scrape of a daemon with every stage active, fed an attack."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attackrun
import pytest
from conftest import wait_for
from metricsdoc import DOC, PRESENT, documented
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def scrape(tmp_path: Path, request: pytest.FixtureRequest, now_epoch: float) -> Iterator[str]:
    """The text of one scrape after the attack was processed and the audit has run."""
    with attackrun.start(tmp_path, request) as running:
        running.attack(now_epoch)
        assert wait_for(lambda: attackrun.attacked(running), timeout=30)
        assert wait_for(
            lambda: "aisentinel_audit_last_run_timestamp_seconds " in running.scrape(),
            timeout=30,
        )
        yield running.scrape()


def _served(text: str) -> dict[str, tuple[str, set[str], int]]:
    """Exposition name -> (type, label names, samples) of every family in a scrape."""
    out: dict[str, tuple[str, set[str], int]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        out[name] = (family.type, labels, len(family.samples))
    return out


def test_doc_rows_are_well_formed() -> None:
    """Every documented row has a known type, a present marker, a unit and a meaning."""
    docs = documented()
    assert len(docs) >= 50
    for row in docs.values():
        assert row.type in ("counter", "gauge", "histogram", "summary"), row.name
        assert row.present in PRESENT, row.name
        assert row.unit, row.name
        assert row.meaning, row.name
        assert row.name.endswith("_total") == (row.type == "counter"), row.name
        if row.name.endswith(("_seconds", "_seconds_total")):
            assert row.unit in ("seconds", "Unix seconds"), row.name
        if row.name.endswith("_timestamp_seconds"):
            assert row.unit == "Unix seconds", row.name
        if row.name.endswith("_ratio"):
            assert row.unit == "ratio (0-1)", row.name
        if row.name.endswith("_bytes"):
            assert row.unit == "bytes", row.name
        assert not {"ip", "address", "client", "user", "username"} & row.labels, row.name


def test_doc_parser_sees_a_changed_row() -> None:
    """A row whose type differs from the doc is read as written (the comparison can fail)."""
    text = DOC.read_text().replace(
        "| `aisentinel_decisions_active` | gauge |", "| `aisentinel_decisions_active` | counter |"
    )
    assert documented(text)["aisentinel_decisions_active"].type == "counter"


@pytest.mark.slow
def test_doc_matches_a_real_scrape(scrape: str) -> None:
    """Every served family is documented with its type and labels, and every documented
    family (GPU ones when the nvml source exists) is served, with samples unless `event`."""
    docs = documented()
    served = _served(scrape)
    undocumented = sorted(set(served) - set(docs))
    assert not undocumented, f"families served but not in {DOC.name}: {undocumented}"
    gpu = {"gpu", "gpu_event"} if attackrun.gpu_plugin() else set()
    expected = {"always", "event", "audit"} | gpu
    missing = sorted(n for n, d in docs.items() if d.present in expected and n not in served)
    assert not missing, f"families in {DOC.name} but not served: {missing}"
    for name, (kind, labels, samples) in served.items():
        row = docs[name]
        assert kind == row.type, f"{name}: served as {kind}, documented as {row.type}"
        if row.present not in ("event", "gpu_event"):
            assert samples, f"{name} has no sample but is not marked `event`"
        if samples:
            assert labels == set(row.labels), f"{name}: labels {labels} vs {set(row.labels)}"
    for name in ("aisentinel_findings_total", "aisentinel_decisions_total"):
        assert served[name][2], f"the attack gave no {name} sample"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_full_scrape_passes_promtool(scrape: str) -> None:
    """`promtool check metrics` accepts the scrape of the fully active daemon."""
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
