"""Every problem `aisentinel status` can tell is also a served metric with an alert on it.

On-call is paged through Alertmanager, not by running `aisentinel status`: a kind of
problem that only the status command shows is one nobody is woken for. The kinds are
:data:`aisentinel.status.ProblemKind` (``found_problems`` can only add one of them: mypy
holds the literal), each mapped in :data:`aisentinel.status.WATCHED` to its metric and
alert; these tests hold the mapping to the served metrics (tests/fixtures/metrics.golden,
itself held to a real scrape), docs/metrics.md and the alert rules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import yaml
from metricsdoc import documented

from aisentinel.parsers.base import SETUP_PROBLEMS
from aisentinel.status import WATCHED, ProblemKind, found_problems

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "metrics.golden"
RULES = REPO / "dashboards" / "prometheus" / "aisentinel-rules.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"

_UP = {"name": "web", "up": True, "state": "following"}
_OK: dict[str, Any] = {
    "sources": [_UP],
    "responders": [{"name": "dryrun", "healthy": True, "detail": ""}],
    "degraded": {},
    "decisions": {"brake_tripped_since": None},
    "heartbeat": {"stale": False, "age_seconds": 0.1, "interval_seconds": 5.0},
}
_WRONG: dict[ProblemKind, dict[str, Any]] = {
    "no_sources": {"sources": []},
    "source_down": {"sources": [{"name": "web", "up": False, "reason": "no such file"}]},
    "source_degraded": {"sources": [{**_UP, "state": "degraded", "reason": "disk full"}]},
    "source_blind": {"sources": [{**_UP, "blind": True, "unrecognised_share": 1.0}]},
    "source_setup": {"sources": [{**_UP, "setup_problems": ["every client is 127.0.0.1"]}]},
    "no_responders": {"responders": []},
    "responder_unhealthy": {"responders": [{"name": "nft", "healthy": False, "detail": "x"}]},
    "component_degraded": {"degraded": {"ledger": "disk full"}},
    "brake_tripped": {"decisions": {"brake_tripped_since": 1_764_000_000.0}},
    "heartbeat_stale": {"heartbeat": {"stale": True, "age_seconds": 99.0, "interval_seconds": 5}},
}
"""One snapshot per kind of problem: all well but that."""


def _served() -> set[str]:
    """The families a daemon serves, from the golden list (``# TYPE`` lines)."""
    lines = GOLDEN.read_text().splitlines()
    return {line.split()[2] for line in lines if line.startswith("# TYPE ")}


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


_NOT_READ = re.compile(r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|#[^\n]*""")
"""PromQL text that names no series read: a string (a label value) or a ``#`` comment."""


def _reads(expr: str, recorded: dict[str, str]) -> set[str]:
    """Metric names ``expr`` reads, through the recording rules it names."""
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", _NOT_READ.sub(" ", expr)))
    for name in names & set(recorded):
        names |= _reads(recorded[name], recorded)
    return names


def test_each_kind_of_problem_is_found_and_only_it() -> None:
    """A snapshot with one thing wrong gives one problem, of that kind; every kind has one."""
    assert found_problems(_OK) == []
    assert set(_WRONG) == set(get_args(ProblemKind))
    for kind, wrong in _WRONG.items():
        assert [p.kind for p in found_problems({**_OK, **wrong})] == [kind], kind


def test_every_kind_of_problem_has_a_served_metric_and_an_alert_reading_it() -> None:
    """Each kind maps to a family the daemon serves and docs/metrics.md lists, and to an
    alert rule whose expression reads it (directly or through a recording rule)."""
    assert set(WATCHED) == set(get_args(ProblemKind))
    served, docs = _served(), documented()
    rules = _rules()
    recorded = {r["record"]: r["expr"] for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    for kind, (metric, alert) in WATCHED.items():
        assert metric in served, f"{kind}: {metric} is not served"
        assert metric in docs, f"{kind}: {metric} is not in docs/metrics.md"
        assert alert in alerts, f"{kind}: no alert {alert}"
        assert metric in _reads(alerts[alert]["expr"], recorded), f"{alert} does not read {metric}"


def test_a_name_in_a_comment_or_a_string_is_not_read() -> None:
    """An alert that names a metric only in a ``#`` comment or a label value does not
    read it; one that names it in its expression, or through a recording rule, does."""
    recorded = {"job:x:sum": 'sum by (job) (aisentinel_x{note="#"})  # aisentinel_y'}
    assert "aisentinel_x" not in _reads('# aisentinel_x\nvector(0) > 1{a="aisentinel_x"}', {})
    reads = _reads("job:x:sum > 0  # aisentinel_z", recorded)
    assert {"aisentinel_x", "job:x:sum"} <= reads
    assert not {"aisentinel_y", "aisentinel_z"} & reads


def test_every_setup_problem_a_parser_tells_is_explained() -> None:
    """Each ``problem`` label value of aisentinel_source_setup_problem is in its row of
    docs/metrics.md, its alert's description and its runbook section."""
    row = documented()["aisentinel_source_setup_problem"]
    [alert] = [r for r in _rules() if r.get("alert") == "AisentinelSourceSetupProblem"]
    text = RUNBOOKS.read_text()
    section = text[text.index("## AisentinelSourceSetupProblem") :].split("\n## ", 1)[0]
    for kind in SETUP_PROBLEMS:
        assert kind in row.labels or kind in row.meaning, kind
        assert kind in alert["annotations"]["description"], kind
        assert f"`{kind}`" in section, kind
