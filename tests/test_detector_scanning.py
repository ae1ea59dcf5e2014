"""scanning: sensitive-path probes and 404 bursts per client."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from aisentinel.detectors.paths import (
    PathSignatures,
    PrefixMatcher,
    builtin_patterns,
    normalise_path,
    path_views,
)
from aisentinel.detectors.scanning import FLOOD_MAX_KEYS, ScanningConfig, ScanningDetector
from aisentinel.events import Event, Finding, HttpRequest, Severity

T0 = 1_764_000_000.0
CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
APACHE = CORPUS / "elastic-apache-logs" / "apache_logs"


def req(ts: float, path: str, status: int = 404, client: str = "203.0.113.8") -> HttpRequest:
    return HttpRequest(T0 + ts, "nginx", client, "GET", path, status, 0, None, "ua")


def feed(events: list[Event], **kw: object) -> list[Finding]:
    det = ScanningDetector(ScanningConfig.model_validate(kw))
    return [f for e in events if (f := det.observe(e)) is not None]


def test_three_sensitive_paths_is_high() -> None:
    """Three sensitive-path requests in 10 minutes, one of them a miss, give HIGH."""
    events: list[Event] = [req(0, "/.env"), req(60, "/.git/config", 200), req(120, "/wp-login.php")]
    found = feed(events)
    assert [f.severity for f in found] == [Severity.HIGH]
    assert found[0].evidence == ("/.env", "/.git/config", "/wp-login.php")
    assert feed(events[:2]) == []


def test_404_burst_is_medium_and_ignores_noise_paths() -> None:
    """Twenty 404s within a minute are MEDIUM; favicon/robots 404s do not count."""
    burst: list[Event] = [req(i * 2.0, f"/page{i}") for i in range(20)]
    assert [f.severity for f in feed(burst)] == [Severity.MEDIUM]
    assert feed(burst[:19]) == []
    noise: list[Event] = [
        req(i * 0.5, p) for i in range(50) for p in ("/favicon.ico", "/robots.txt")
    ]
    assert feed(noise) == []


def test_extra_path_files(tmp_path: Path) -> None:
    """extra_path_files add patterns; a bad file is a config error naming file and line."""
    extra = tmp_path / "mine.txt"
    extra.write_text("# mine\n/secret-admin*\n")
    events: list[Event] = [req(float(i), f"/secret-admin/{i}", 200) for i in range(3)]
    assert len(feed(events, extra_path_files=[str(extra)])) == 1
    assert feed(events) == []
    bad = tmp_path / "bad.txt"
    bad.write_text("/ok\n/a*b\n")
    with pytest.raises(ValidationError, match=r"bad\.txt:2"):
        ScanningConfig(extra_path_files=(str(bad),))
    with pytest.raises(ValidationError, match="cannot read"):
        ScanningConfig(extra_path_files=(str(tmp_path / "missing.txt"),))


@pytest.mark.parametrize(
    ("path", "hit"),
    [
        ("/.env", True),
        ("/app/.env", True),
        ("/.ENV?x=1", True),
        ("//.git//config", True),
        ("/phpMyAdmin/index.php", True),
        ("/actuator/env", True),
        ("/server-status", True),
        ("/.aws/credentials", True),
        ("/dump.sql", True),
        ("/api/tags", False),
        ("/api/chat", False),
        ("/v1/chat/completions", False),
        ("/", False),
        ("/admin", False),
        ("/static/app.js", False),
    ],
)
def test_builtin_signatures(path: str, hit: bool) -> None:
    """The shipped list catches common probes and leaves AI server routes alone."""
    sigs = PathSignatures(builtin_patterns())
    assert sigs.match(path) is hit
    assert len(sigs) > 300


def test_normalise_and_fast_reject_agree() -> None:
    """Fast rejection on the path head gives the same answer as full matching."""
    sigs = PathSignatures(["/api/pull", "/api/blobs*"])
    for path in (
        "/api/pull",
        "/API/pull?x",
        "//api/pull",
        "/api/blobs/sha",
        "/apx",
        "/a",
        "",
        "/%61pi/pull",
        "/x/../api/pull",
        "http://h/api/pull",
    ):
        views = path_views(path)
        assert sigs.match(path) is any(sigs.match_normalised(v) for v in views), path


@pytest.mark.parametrize(
    ("raw", "decoded", "resolved"),
    [
        ("/api/%70ull", "/api/pull", "/api/pull"),
        ("/%2eenv", "/.env", "/.env"),
        ("/%252e%252egit/config", "/..git/config", "/..git/config"),
        ("/static/..%2f.git/config", "/static/../.git/config", "/.git/config"),
        ("/a/./b/../.ENV?x=%2e", "/a/b/../.env", "/a/.env"),
        ("/.env;x", "/.env;x", "/.env"),
        ("/\\x2eenv", "/.env", "/.env"),
        ("http://ai.example.org/api/pull", "/api/pull", "/api/pull"),
        ("HTTPS://ai.example.org:443", "/", "/"),
        ("/api/tags/", "/api/tags", "/api/tags"),
        ("/", "/", "/"),
        ("-", "-", "-"),
    ],
)
def test_path_views_decode_what_the_server_decodes(raw: str, decoded: str, resolved: str) -> None:
    """Escapes, dot segments, ;parameters and an absolute-form target's scheme://host
    do not hide a path from the lists (Go's and uvicorn's routers decode the path)."""
    assert path_views(raw) == (decoded, resolved)
    assert normalise_path(raw) == decoded
    assert path_views(decoded) == (decoded, resolved)


def test_prefix_matcher_reads_escaped_and_absolute_targets() -> None:
    """An inference prefix matches its escaped, dot-segment or absolute-form spelling;
    a plain path is still matched as logged (case-sensitive)."""
    match = PrefixMatcher(["/api/generate", "/v1/"]).match
    for path in ("/api/generate", "/api/%67enerate", "http://h/api/generate", "/x/../v1/models"):
        assert match(path), path
    for path in ("/API/generate", "/api/gen", "/v2/x", "http://h/"):
        assert not match(path), path


def test_encoded_and_absolute_probes_hit_the_builtin_list() -> None:
    """/%2eenv, /x/../.git/config and GET http://host/.env are probes of the listed paths."""
    sigs = PathSignatures(builtin_patterns())
    for path in ("/%2eenv", "/x/../.git/config", "http://h/.env", "/.%65nv", "/\\x2eenv"):
        assert sigs.match(path), path


def _apache_events() -> list[Event]:
    rx = re.compile(r'(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+)[^"]*" (\d{3}) ')
    events: list[Event] = []
    for line in APACHE.read_text(encoding="utf-8", errors="replace").splitlines():
        m = rx.match(line)
        if m:
            ts = datetime.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            events.append(
                HttpRequest(
                    ts, "apache", m.group(1), m.group(3), m.group(4), int(m.group(5)), 0, None, ""
                )
            )
    return events


@pytest.mark.skipif(not APACHE.exists(), reason="shared corpus (elastic-apache-logs) not present")
def test_benign_apache_log_gives_no_findings() -> None:
    """The real benign Apache log (10k lines, 2015) gives no scanning findings."""
    events = _apache_events()
    assert len(events) > 9000
    assert feed(events) == []


def test_ipv6_and_expiry() -> None:
    """IPv6 clients are tracked in every table (sensitive, 404s, misses) and expire when
    idle (the 404 rate table at the housekeeping after the one that followed them)."""
    det = ScanningDetector(ScanningConfig())
    det.observe(req(0, "/.env", client="2001:db8::8"))
    assert det.tracked_keys() == 3
    assert det.expire(T0 + 601) == 2
    assert det.expire(T0 + 611) == 1


def test_path_served_to_many_clients_is_the_apps_own() -> None:
    """A sensitive path answered 200 to own_resource_clients clients stops counting."""
    det = ScanningDetector(ScanningConfig(own_resource_clients=2))
    paths = ["/m/1.sql", "/m/2.sql", "/m/3.sql"]
    clients = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    served = [det.observe(req(float(k), p, 200, c)) for k, p in enumerate(paths) for c in clients]
    assert [f for f in served if f is not None] == []
    assert det.own_resources() == 3
    # a miss elsewhere is still a probe, whoever sends it
    probes = ["/a.sql", "/b.sql", "/c.sql"]
    got = [det.observe(req(10.0 + i, p, client="203.0.113.9")) for i, p in enumerate(probes)]
    assert [f.severity for f in got if f is not None] == [Severity.HIGH]


def test_misses_on_the_apps_own_paths_do_not_count() -> None:
    """A 403/404/503 on a sensitive path that was served 2xx to own_resource_clients
    clients (Jenkins' /jenkins/ajaxBuildQueue to the team) is the app's users' (an
    expired session), not a probe; other paths under it and secret files still count."""
    det = ScanningDetector(ScanningConfig())
    for c in ("198.51.100.60", "198.51.100.61", "198.51.100.62"):
        assert det.observe(req(0.0, "/backup/report.sql", 200, c)) is None
    user = "198.51.100.70"
    got = [det.observe(req(10.0 + i, "/backup/report.sql", 403, user)) for i in range(4)]
    assert [f for f in got if f is not None] == []
    prober = "198.51.100.71"
    misses = ["/backup/other.sql", "/backup/x.sql", "/backup/y.sql"]
    got = [det.observe(req(20.0 + i, p, 404, prober)) for i, p in enumerate(misses)]
    assert [f.severity for f in got if f is not None] == [Severity.HIGH]
    secrets = ["/backup/.env", "/backup/.git/config", "/backup/.aws/credentials"]
    got = [det.observe(req(30.0 + i, p, 404, user)) for i, p in enumerate(secrets)]
    assert [f.severity for f in got if f is not None] == [Severity.HIGH]


@pytest.mark.parametrize(
    "paths",
    [
        [
            "/acme/webapp/src/branch/dev/.env.example",
            "/acme/webapp/commits/branch/dev/.env.example",
            "/acme/webapp/src/branch/v2/.env.sample",
        ],
        ["/api/v1/settings/huggingface/token"] * 3,
    ],
)
def test_templates_and_app_routes_are_no_secret_files(paths: list[str]) -> None:
    """A .env template browsed on a git forge and an app's API route ending in
    huggingface/token (no dot: not the token file) are not secret-file probes."""
    assert feed([req(float(i), p) for i, p in enumerate(paths)]) == []


@pytest.mark.parametrize(
    "path",
    [
        "/.env.production.local",
        "/.env.dev.local",
        "/.env.stage",
        "/.env.live",
        "/.env.txt",
        "/.env.1",
        "/app/.git/config",
        "/backend/.git/HEAD",
        "/api/.git/config",
        "/backend/.aws/credentials",
        "/app/.aws/config",
        "/home/ubuntu/.bash_history",
        "/docker-compose.prod.yml",
        "/phpinfo",
        "/php-info.php",
        "/.huggingface/token",
        "/.cache/huggingface/token",
        "/.ollama/id_ed25519",
        "/.streamlit/secrets.toml",
        "/litellm_config.yaml",
        "/.kaggle/kaggle.json",
    ],
)
def test_secret_file_probes_are_counted_whatever_the_status(path: str) -> None:
    """Three misses on a secret or credential file (any .env variant, Git and AWS files
    in a subfolder, shell history, AI tooling tokens) are a HIGH sensitive-path finding."""
    found = feed([req(float(i), path) for i in range(3)])
    assert [f.severity for f in found] == [Severity.HIGH]


@pytest.mark.parametrize(
    ("path", "hit"),
    [
        ("/actuator/health/readiness", False),
        ("/actuator/health", False),
        ("/actuator/info", False),
        ("/actuator/prometheus", False),
        ("/actuator/env", True),
        ("/actuator/heapdump", True),
        ("/actuator/gateway/routes", True),
        ("/actuator/jolokia/read", True),
        ("/actuator", True),
        ("/zabbix/assets/img/browsers/edge.png", False),
        ("/zabbix/jsrpc.php", False),
        ("/zabbix/setup.php", True),
        ("/jenkins/ajaxBuildQueue", False),
        ("/jenkins/script", True),
        ("/portainer/api/motd", False),
        ("/portainer/api/users/admin/init", True),
    ],
)
def test_actuator_and_admin_ui_entries_are_their_probe_paths(path: str, hit: bool) -> None:
    """Actuator's health, info and metrics (kubelet, Prometheus) and an admin UI's assets
    are not sensitive; their dump, setup and script endpoints are."""
    assert PathSignatures(builtin_patterns()).match(path) is hit


def test_successes_alone_from_one_client_are_medium() -> None:
    """Three sensitive paths answered 200 to one client only: MEDIUM (alert), not HIGH."""
    det = ScanningDetector(ScanningConfig())
    paths = ("/.env", "/.git/config", "/wp-login.php")
    found = [det.observe(req(float(i), p, status=200)) for i, p in enumerate(paths)]
    assert [f.severity for f in found if f is not None] == [Severity.MEDIUM]


def test_a_monitor_scraping_one_status_page_is_not_a_scan() -> None:
    """An exporter fetching /stub_status every 15 s for 30 minutes gives no finding and
    leaves nothing quiet: probes after it are found; a repeated /.env still is."""
    det = ScanningDetector(ScanningConfig())
    scrapes = [det.observe(req(i * 15.0, "/stub_status", status=200)) for i in range(120)]
    assert [f for f in scrapes if f is not None] == []
    probes = ("/.env", "/.git/config", "/wp-login.php")
    found = [det.observe(req(1800.0 + i, p, status=404)) for i, p in enumerate(probes)]
    assert [f.severity for f in found if f is not None] == [Severity.HIGH]
    env = ScanningDetector(ScanningConfig())
    found = [env.observe(req(float(i), "/.env", status=200)) for i in range(3)]
    assert [f.severity for f in found if f is not None] == [Severity.MEDIUM]


def test_learned_paths_are_bounded() -> None:
    """At most own_resource_paths paths are remembered (oldest forgotten)."""
    det = ScanningDetector(ScanningConfig(own_resource_paths=2, own_resource_clients=2))
    for i in range(5):
        for c in ("192.0.2.1", "192.0.2.2"):
            det.observe(req(float(i), f"/x{i}.sql", client=c, status=200))
    assert det.own_resources() == 2


def test_secret_files_are_never_learned_as_the_apps_own() -> None:
    """On a server that serves /.env, /.git/config and /.aws/credentials, every client
    that downloads them is found, however many did before (they are never the app's own)."""
    det = ScanningDetector(ScanningConfig())
    secrets = ("/.env", "/.git/config", "/.aws/credentials")
    for i in range(6):
        client = f"203.0.113.{i + 1}"
        found = [
            det.observe(req(3600.0 * i + k, p, status=200, client=client))
            for k, p in enumerate(secrets)
        ]
        assert [f.severity for f in found if f is not None] == [Severity.MEDIUM], client
    assert det.own_resources() == 0


def test_a_404_flood_of_distinct_paths_is_high() -> None:
    """300 distinct 404s at 5 a second: the burst is MEDIUM, then 100 distinct paths
    within a minute make it HIGH, once."""
    flood: list[Event] = [req(i * 0.2, f"/probe/{i}.php") for i in range(300)]
    found = feed(flood)
    assert [f.severity for f in found] == [Severity.MEDIUM, Severity.HIGH]
    assert "distinct not-found paths" in found[1].message
    assert found[1].evidence == ("/probe/118.php",)  # the path, not its digest
    assert [f.severity for f in feed(flood, not_found_high_threshold=400)] == [Severity.MEDIUM]


def test_distinct_not_found_paths_are_counted_for_a_bounded_number_of_clients() -> None:
    """Clients counting distinct not-found paths are capped at FLOOD_MAX_KEYS, whatever max_keys."""
    det = ScanningDetector(ScanningConfig(max_keys=100_000))
    for n in range(FLOOD_MAX_KEYS + 200):
        client = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        for i in range(21):
            det.observe(req(n + i * 0.01, f"/p{i}", client=client))
    assert len(det._not_found_paths) <= FLOOD_MAX_KEYS


def test_many_404s_on_a_few_paths_stay_medium() -> None:
    """A NAT of many users asking for 40 stale chunks after a deploy, 600 404s in two
    minutes: never HIGH (distinct paths are counted, not requests)."""
    chunks: list[Event] = [req(i * 0.2, f"/assets/chunk-{i % 40}.js") for i in range(600)]
    assert {f.severity for f in feed(chunks)} == {Severity.MEDIUM}


def test_not_found_high_threshold_is_validated() -> None:
    """not_found_high_threshold must be 1-1000 and not_found_high_window a duration."""
    assert ScanningConfig(not_found_high_threshold=50).not_found_high_threshold == 50
    for bad in ({"not_found_high_threshold": 0}, {"not_found_high_window": "soon"}):
        with pytest.raises(ValidationError):
            ScanningConfig.model_validate(bad)
