"""Grafana dashboards: lint (variables, units, rate intervals, titles, descriptions, ids,
documented metric names) and every panel query against a real Prometheus that scraped a
real aisentinel fed an attack."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attackrun
import pytest
import yaml
from conftest import wait_for
from metricsdoc import documented, family_of
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from promstack import REPO, RULES, Server, start_prometheus

GRAFANA = REPO / "dashboards" / "grafana"
BOARDS = sorted(GRAFANA.glob("*.json"))
PROVISIONING = REPO / "dashboards" / "provisioning" / "dashboards" / "aisentinel.yml"
INSTALLED = "/usr/share/aisentinel/dashboards/grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INSTANCE_QUERY = "label_values(aisentinel_build_info, instance)"
JOB_QUERY = "label_values(aisentinel_build_info, job)"
JOB_MATCHER = 'job=~"$job"'
RATE_INTERVAL = "1m"
"""What ``$__rate_interval`` becomes when the queries run (Prometheus scrapes every 1 s)."""

ALLOWED_EMPTY = {
    ("aisentinel-overview", "Events skipped by stage errors"): (
        "aisentinel_pipeline_event_errors_total has a series only once a stage raised on a "
        "line; a healthy run has none (the panel says so)"
    ),
}
"""Panels whose query is legitimately empty after the attack, with why (keep it short)."""
GPU_BOARD = "aisentinel-gpu"
"""Without an ``nvml`` source plug-in in this tree, this dashboard's panels are empty."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_SHARED = re.compile(r'(?<![\w:"])(up|process_\w+|scrape_\w+)\s*(\{[^}]*\})?')
"""Selectors of metrics every scrape target has (``up``, the client library's
``process_*``, Prometheus' ``scrape_*``): only ``job=~"$job"`` keeps them aisentinel's."""


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub(" ", expr))))
    names = set()
    for m in _IDENT.finditer(bare):
        rest = bare[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue
        if m.start() and (bare[m.start() - 1].isdigit() or bare[m.start() - 1] == "."):
            continue  # the "e" of 1e3 or a unit in a number
        names.add(m.group())
    return names


def unscoped(expr: str) -> list[str]:
    """The selectors in ``expr`` of a metric every target has that do not select the
    aisentinel jobs (``job=~"$job"``): with instance "All" they show other targets."""
    return [
        m.group(1) + (m.group(2) or "")
        for m in _SHARED.finditer(expr)
        if JOB_MATCHER not in (m.group(2) or "").replace(" ", "")
    ]


def _query_variable(variable: dict[str, Any], query: str) -> bool:
    """Whether ``variable`` is a query variable asking ``query``."""
    asked = variable.get("query")
    asked = asked.get("query") if isinstance(asked, dict) else asked
    return variable.get("type") == "query" and asked == query


def problems(board: dict[str, Any], docs: dict[str, Any]) -> list[str]:
    """What is wrong with one dashboard (empty when it passes the lint)."""
    out: list[str] = []
    text = json.dumps(board)
    if "${DS_" in text or "__inputs" in board:
        out.append("uses ${DS_...} inputs (file provisioning cannot fill them)")
    if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 39:
        out.append(f"schemaVersion {board.get('schemaVersion')} < 39")
    for key in ("uid", "title", "description"):
        if not board.get(key):
            out.append(f"no {key}")
    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        out.append("no `datasource` variable of type datasource (prometheus)")
    if not _query_variable(variables.get("instance", {}), INSTANCE_QUERY):
        out.append(f"no `instance` variable with {INSTANCE_QUERY}")
    job = variables.get("job", {})
    if not _query_variable(job, JOB_QUERY) or job.get("allValue"):
        out.append(f"no `job` variable with {JOB_QUERY} (and no allValue)")
    for var in variables.values():
        if var.get("type") == "query" and var.get("datasource") != DATASOURCE:
            out.append(f"variable {var.get('name')} not on ${{datasource}}")
    seen: set[int] = set()
    for panel in panels(board):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not isinstance(panel.get("id"), int) or panel["id"] in seen:
            out.append(f"{where}: id missing or not unique")
        seen.add(panel.get("id", -1))
        if not panel.get("title"):
            out.append(f"{where}: no title")
        if not panel.get("description"):
            out.append(f"{where}: no description")
        if panel.get("type") == "row":
            continue
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            out.append(f"{where}: no unit (fieldConfig.defaults.unit)")
        if panel.get("datasource") != DATASOURCE:
            out.append(f"{where}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            out.append(f"{where}: no query")
        for target in targets:
            expr = target.get("expr", "")
            if not expr:
                out.append(f"{where}: a target without expr")
            if target.get("datasource") != DATASOURCE:
                out.append(f"{where}: a target's datasource is not ${{datasource}}")
            for selector in _RANGE.findall(_STRING.sub(" ", expr)):
                if selector != "[$__rate_interval]":
                    out.append(f"{where}: range {selector} is not [$__rate_interval]")
            for name in sorted(metric_names(expr)):
                if family_of(name, docs) is None:
                    out.append(f"{where}: {name} is not in docs/metrics.md")
            for selector in unscoped(expr):
                out.append(f"{where}: {selector} does not select {JOB_MATCHER}")
    return out


# ---------------------------------------------------------------- lint


def test_four_dashboards_with_unique_uids() -> None:
    """Overview, Abuse & bans, GPU and Posture exist, each with its own uid and title."""
    boards = [_load(p) for p in BOARDS]
    titles = {b["title"] for b in boards}
    assert titles == {
        "aisentinel / Overview",
        "aisentinel / Abuse & bans",
        "aisentinel / GPU",
        "aisentinel / Posture",
    }
    assert len({b["uid"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_dashboard_passes_lint(path: Path) -> None:
    """Datasource and instance variables, units, $__rate_interval, titles, descriptions,
    unique ids, documented metric names: no problem found."""
    assert problems(_load(path), documented()) == []


def test_lint_finds_each_problem() -> None:
    """The lint reports a ${DS_} input, an old schema, a missing unit, description and
    variable, a fixed rate range, a duplicate id and an undocumented metric."""
    board = _load(GRAFANA / "aisentinel-overview.json")
    bad = copy.deepcopy(board)
    bad["schemaVersion"] = 36
    bad["templating"]["list"] = [
        v for v in bad["templating"]["list"] if v["name"] not in ("instance", "job")
    ]
    first, second = [p for p in panels(bad) if p["type"] != "row"][:2]
    first["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    del first["fieldConfig"]["defaults"]["unit"]
    first["description"] = ""
    second["id"] = first["id"]
    second["targets"][0]["expr"] = "rate(aisentinel_nope_total[5m])"
    second["targets"].append({"expr": 'up{instance=~"$instance"}', "datasource": DATASOURCE})
    found = "\n".join(problems(bad, documented()))
    for needle in (
        "${DS_",
        "schemaVersion 36",
        "`instance` variable",
        "`job` variable",
        'up{instance=~"$instance"} does not select job=~"$job"',
        "no unit",
        "no description",
        "not unique",
        "range [5m]",
        "aisentinel_nope_total is not in docs",
    ):
        assert needle in found, needle


def test_unscoped_finds_shared_metrics_without_the_job() -> None:
    """up, process_* and scrape_* selectors without job=~"$job" are reported, with it
    not; aisentinel's own metrics and label values named up are not."""
    expr = (
        'up{instance=~"$instance"} + process_open_fds / process_max_fds{job=~"$job"} '
        '+ up{ job=~"$job", instance=~"$instance"} + aisentinel_source_up{x="up"} '
        "+ scrape_duration_seconds"
    )
    assert unscoped(expr) == [
        'up{instance=~"$instance"}',
        "process_open_fds",
        "scrape_duration_seconds",
    ]


def test_metric_names_reads_promql() -> None:
    """Metric names come out of selectors; functions, labels, keywords and numbers do not."""
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x="y or z"}'
        "[$__rate_interval]))) / on (instance) b_total * 1e3 and bool c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_gpu_dashboard_shows_workloads_and_findings_beside_utilization() -> None:
    """The GPU dashboard has per-workload (process/container) panels, and a GPU findings
    panel on the same row as the utilization panel."""
    board = _load(GRAFANA / "aisentinel-gpu.json")
    by_title = {p["title"]: p for p in panels(board)}
    exprs = {t: " ".join(x["expr"] for x in p.get("targets", [])) for t, p in by_title.items()}
    assert any("aisentinel_gpu_process_memory_used_bytes" in e for e in exprs.values())
    assert any("aisentinel_gpu_process_sm_utilization_ratio" in e for e in exprs.values())
    assert any('workload=~"container:.*"' in e for e in exprs.values())
    util = next(p for t, p in by_title.items() if "aisentinel_gpu_utilization_ratio" in exprs[t])
    findings = next(
        p
        for t, p in by_title.items()
        if "aisentinel_findings_total" in exprs[t] and "gpu_workload" in exprs[t]
    )
    assert util["gridPos"]["y"] == findings["gridPos"]["y"]


def test_provisioning_points_at_the_installed_dashboards() -> None:
    """The provisioning file is a Grafana file provider reading the .deb's install path."""
    config = yaml.safe_load(PROVISIONING.read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == INSTALLED
    # build-deb.sh installs dashboards/X as /usr/share/aisentinel/dashboards/X
    relative = GRAFANA.relative_to(REPO / "dashboards")
    assert provider["options"]["path"] == f"/usr/share/aisentinel/dashboards/{relative}"
    assert BOARDS


def test_alert_rules_use_documented_metrics() -> None:
    """Every metric an alert or recording rule reads is in docs/metrics.md (or recorded)."""
    docs = documented()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    unknown = {
        (r.get("alert") or r["record"], name)
        for r in rules
        for name in metric_names(r["expr"])
        if name not in recorded and family_of(name, docs) is None
    }
    assert not unknown


# ---------------------------------------------------------------- the real stack


def _concrete(expr: str, instance: str, job: str) -> str:
    values = {
        "$__rate_interval": RATE_INTERVAL,
        "$instance": instance,
        "$job": job,
        "$gpu": ".+",
    }
    for variable, value in values.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def _result(prom: Server, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prom.get_json("/api/v1/query", query=expr)["data"]["result"]
    return result


def _has_data(prom: Server, expr: str) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in _result(prom, expr))


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; each is stopped at the end, whatever happened."""
    started: list[Server] = []
    yield started
    for server in reversed(started):
        server.stop()


@pytest.fixture
def other_target() -> Iterator[str]:
    """Another scrape target on this host, like node_exporter: it serves ``process_*``
    (of the test process) and has an ``up`` of its own; its ``host:port``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    httpd, _thread = start_http_server(0, "127.0.0.1", registry=registry)
    yield f"127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_every_panel_query_returns_data_after_an_attack(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    now_epoch: float,
    servers: list[Server],
    other_target: str,
) -> None:
    """Real Prometheus scrapes a real aisentinel fed an ssh brute force, an nginx scan, an
    exploit attempt and prompt injection (and the fake GPU when the nvml source exists),
    and another target; every panel query, with its variables filled in, returns a
    finite value, only aisentinel's series with instance "All", and the attack's alerts
    (GPU miner and Xid with the GPU) fire from the shipped rules."""
    with attackrun.start(tmp_path / "aisentinel", request) as running:
        instance = f"127.0.0.1:{running.daemon.metrics_port}"
        prom = start_prometheus(
            tmp_path / "prom",
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "aisentinel", "static_configs": [{"targets": [instance]}]},
                    {"job_name": "node", "static_configs": [{"targets": [other_target]}]},
                ],
            },
        )
        servers.append(prom)
        assert prom.ready(), prom.output()
        assert wait_for(lambda: _has_data(prom, "count(up == 1) == 2"), timeout=30), prom.output()
        running.attack(now_epoch)
        assert wait_for(lambda: attackrun.attacked(running), timeout=30)
        values = prom.get_json(
            "/api/v1/label/instance/values", **{"match[]": "aisentinel_build_info"}
        )
        assert values["data"] == [instance]
        jobs = prom.get_json("/api/v1/label/job/values", **{"match[]": "aisentinel_build_info"})
        job = "(" + "|".join(jobs["data"]) + ")"  # what Grafana sends for the hidden "All"

        exprs = [
            (board["uid"], panel["title"], target["expr"])
            for board in map(_load, BOARDS)
            for panel in panels(board)
            for target in panel.get("targets", [])
        ]
        queries = [(uid, title, _concrete(expr, instance, job)) for uid, title, expr in exprs]
        allowed = set(ALLOWED_EMPTY)
        if not attackrun.gpu_plugin():
            allowed |= {(uid, title) for uid, title, _ in queries if uid == GPU_BOARD}

        def empty() -> list[tuple[str, str, str]]:
            return [q for q in queries if (q[0], q[1]) not in allowed and not _has_data(prom, q[2])]

        wait_for(lambda: not empty(), timeout=45, interval=1.0)
        assert empty() == []
        stale = set(ALLOWED_EMPTY) - {(uid, title) for uid, title, _ in queries}
        assert not stale, f"ALLOWED_EMPTY names panels that do not exist: {stale}"
        others = [  # instance "All" (allValue .+): still aisentinel's series only
            (title, r["metric"])
            for _uid, title, expr in exprs
            for r in _result(prom, _concrete(expr, ".+", job))
            if r["metric"].get("job", "aisentinel") != "aisentinel"
        ]
        assert others == []
        for key in ALLOWED_EMPTY:  # an allowed-empty panel still parses and runs
            [expr] = [q[2] for q in queries if (q[0], q[1]) == key]
            assert prom.get_json("/api/v1/query", query=expr)["status"] == "success"

        expected = {
            "AisentinelBruteForceWave",
            "AisentinelModelExploitAttempt",
            "AisentinelPromptInjection",
        }
        if attackrun.gpu_plugin():
            expected |= {"AisentinelGpuMiner", "AisentinelGpuXidError"}

        def firing() -> set[str]:
            alerts = prom.get_json("/api/v1/alerts")["data"]["alerts"]
            return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

        assert wait_for(lambda: expected <= firing(), timeout=30, interval=0.5), firing()
