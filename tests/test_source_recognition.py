"""A source whose log is of another format than its parser is blind: told, logged, exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import nginx_line, nginx_ts, ssh_fail, syslog_ts
from prometheus_client.core import Metric
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Event, EventBatch, LineBatch
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.base import Parser, SetupProblem
from aisentinel.pipeline import Pipeline

T0 = 1_764_000_000.0


def _pipeline(tmp_path: Path) -> Pipeline:
    clock = FakeClock(T0)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    return Pipeline(detectors=[], engine=engine, runner=None, clock=clock)


def _vhost(i: int) -> str:
    """A ``vhost_combined`` line (``host:port`` first): not nginx's combined format."""
    return (
        f'ai.example.com:443 203.0.113.7 - - [{nginx_ts(T0 + i)}] "GET /.env HTTP/1.1" '
        f'404 153 "-" "curl/8"'
    )


def _good(i: int) -> str:
    return nginx_line(T0 + i, "198.51.100.9", f"/v1/models?{i}")


def _feed(pipeline: Pipeline, source: str, parser: str, lines: list[str], size: int = 10) -> None:
    for at in range(0, len(lines), size):
        pipeline.process(LineBatch(source, parser, lines[at : at + size], 0.0))


def _gauges(pipeline: Pipeline) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    metric: Metric
    for metric in pipeline.collect():
        if metric.name in ("aisentinel_source_blind", "aisentinel_source_unrecognised_ratio"):
            out[metric.name] = {s.labels["source"]: s.value for s in metric.samples}
    return out


def _warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["log_level"] == "warning" and e.get("source") is not None]


def test_a_log_of_another_format_makes_the_source_blind_once_and_it_recovers(
    tmp_path: Path,
) -> None:
    """vhost_combined lines on an nginx source: blind (gauge 1, one warning naming the
    source and the share); lines of the format again: sees again (one warning, gauge 0)."""
    pipeline = _pipeline(tmp_path)
    with capture_logs() as logs:
        _feed(pipeline, "web", "nginx", [_vhost(i) for i in range(40)])
        assert _gauges(pipeline)["aisentinel_source_blind"] == {"web": 0.0}  # too few yet
        assert _gauges(pipeline)["aisentinel_source_unrecognised_ratio"] == {}
        _feed(pipeline, "web", "nginx", [_vhost(i) for i in range(40, 300)])
    assert pipeline.sources["web"].parsed == 0
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"web": 1.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {"web": 1.0}
    [warning] = _warnings(logs)
    assert warning["event"] == "source is blind: its lines are not of its format"
    assert warning["source"] == "web"
    assert warning["parser"] == "nginx"
    assert warning["unrecognised_share"] == 1.0
    assert "aisentinel explain" in warning["hint"]
    assert "docs/nginx-log-format.md" in warning["hint"]
    with capture_logs() as logs:
        _feed(pipeline, "web", "nginx", [_good(i) for i in range(300)])
    [warning] = _warnings(logs)
    assert warning["event"] == "source sees again: its lines are of its format"
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"web": 0.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {"web": 0.0}


def test_a_log_with_some_junk_never_goes_blind_or_flaps(tmp_path: Path) -> None:
    """Bursts of junk lines up to 80% of a window are never blind; once blind, a log that
    parses 30% of its lines does not flap back and forth."""
    pipeline = _pipeline(tmp_path)
    lines = [_vhost(i) if i % 10 < 8 else _good(i) for i in range(2000)]
    with capture_logs() as logs:
        _feed(pipeline, "web", "nginx", lines, size=7)
    assert _warnings(logs) == []
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"web": 0.0}
    _feed(pipeline, "web", "nginx", [_vhost(i) for i in range(300)])
    with capture_logs() as logs:
        mixed = [_vhost(i) if i % 10 < 7 else _good(i) for i in range(2000)]
        _feed(pipeline, "web", "nginx", mixed)
    assert _warnings(logs) == []
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"web": 1.0}


def test_an_auth_log_of_other_programs_is_not_blind(tmp_path: Path) -> None:
    """An sshd source reading an auth log of cron and sudo lines only is not judged."""
    pipeline = _pipeline(tmp_path)
    cron = [
        f"{syslog_ts(T0 + i)} gpu-box CRON[{900 + i}]: pam_unix(cron:session): session opened "
        "for user root(uid=0) by (uid=0)"
        for i in range(300)
    ]
    with capture_logs() as logs:
        _feed(pipeline, "auth", "sshd", [*cron, ssh_fail(T0, "198.51.100.3")])
    assert _warnings(logs) == []
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"auth": 0.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {}


def test_an_error_log_of_irrelevant_lines_is_not_blind_but_another_format_is(
    tmp_path: Path,
) -> None:
    """nginx-error: error-log lines that give no event are of the format; access-log lines
    read as an error log are not."""
    pipeline = _pipeline(tmp_path)
    upstream = [
        "2026/11/25 23:14:30 [error] 1234#1234: *5 connect() failed (111: Connection refused) "
        'while connecting to upstream, client: 192.0.2.1, server: _, request: "GET / HTTP/1.1"'
        for _ in range(300)
    ]
    _feed(pipeline, "err", "nginx-error", upstream, size=100)
    assert _gauges(pipeline)["aisentinel_source_unrecognised_ratio"] == {"err": 0.0}
    _feed(pipeline, "err", "nginx-error", [_good(i) for i in range(300)], size=100)
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"err": 1.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {"err": 1.0}


def test_another_parser_after_a_reload_starts_the_window_again(tmp_path: Path) -> None:
    """A source blind under one parser is judged afresh under the parser a reload names
    (the daemon's reload calls judge_afresh for a source it changed)."""
    pipeline = _pipeline(tmp_path)
    _feed(pipeline, "web", "nginx", [_vhost(i) for i in range(300)])
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"web": 1.0}
    pipeline.judge_afresh("web")
    _feed(pipeline, "web", "nginx-json", ['{"time": 1, "remote_addr": "192.0.2.1"}'] * 10)
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"web": 0.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {}


def test_a_problem_of_the_parser_a_reload_replaced_goes_with_it(tmp_path: Path) -> None:
    """A setup problem the source's old parser saw (every client an untrusted local
    proxy) is no longer listed once a reload names another parser for the source."""
    pipeline = _pipeline(tmp_path)
    proxied = nginx_line(T0, "127.0.0.1", "/api/tags") + ' "198.51.100.9"'
    _feed(pipeline, "web", "nginx", [proxied] * 300)
    [(kind, problem)] = pipeline.source_problems("web")
    assert kind == "untrusted_local_proxy"
    assert problem.startswith("every client is 127.0.0.1")
    pipeline.judge_afresh("web")
    record = '{"time": 1764000000, "remote_addr": "198.51.100.9", "status": "200", "uri": "/"}'
    _feed(pipeline, "web", "nginx-json", [record] * 300)
    assert pipeline.source_problems("web") == []


def test_a_problem_of_a_parser_the_source_no_longer_uses_goes(tmp_path: Path) -> None:
    """A parser = "auto" source whose file is read in another format since (no reload):
    the old parser's problem is listed while it read some of the source's last 1000
    lines, and no longer once it read none of them."""
    pipeline = _pipeline(tmp_path)
    proxied = nginx_line(T0, "127.0.0.1", "/api/tags") + ' "198.51.100.9"'
    _feed(pipeline, "web", "nginx", [proxied] * 300)
    record = '{"time": 1764000000, "remote_addr": "198.51.100.9", "status": "200", "uri": "/"}'
    _feed(pipeline, "web", "nginx-json", [record] * 1000)
    [(kind, problem)] = pipeline.source_problems("web")
    assert kind == "untrusted_local_proxy"
    assert problem.startswith("every client is 127.0.0.1")
    _feed(pipeline, "web", "nginx-json", [record] * 10)
    assert pipeline.source_problems("web") == []
    _feed(pipeline, "web", "nginx", [proxied] * 10)  # the old format is read again
    assert pipeline.source_problems("web") == [(kind, problem)]


def test_an_auto_source_whose_lines_no_format_is_told_for_is_blind_until_they_are(
    tmp_path: Path,
) -> None:
    """parser = "auto": windows of lines whose format could not be sniffed (handed on as
    unrecognised) make the source blind; once its files are sniffed and read, it sees."""
    pipeline = _pipeline(tmp_path)
    with capture_logs() as logs:
        for _ in range(4):
            pipeline.process(EventBatch("web", [], 0.0, 50, 0, 50))
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"web": 1.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {"web": 1.0}
    [warning] = _warnings(logs)
    assert (warning["event"], warning["parser"]) == (
        "source is blind: its lines are not of its format",
        "auto",
    )
    with capture_logs() as logs:
        _feed(pipeline, "web", "nginx", [_good(i) for i in range(300)])
    [warning] = _warnings(logs)
    assert warning["event"] == "source sees again: its lines are of its format"
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"web": 0.0}


def test_an_event_source_with_unparsed_records_is_not_judged(tmp_path: Path) -> None:
    """Records an event source reads and makes no event of (journald entries not about
    logins) are not lines of another format: the source is never blind."""
    pipeline = _pipeline(tmp_path)
    for _ in range(10):
        pipeline.process(EventBatch("journal", [], 0.0, 50, 0))
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"journal": 0.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {}


def test_one_parser_of_a_source_blind_makes_it_blind_whatever_the_others_read(
    tmp_path: Path,
) -> None:
    """A source reading files of two formats (parser = "auto" on a glob) keeps a window per
    parser: batches of an error log between those of a blind access log neither restart
    nor hide its window; the source sees again only once no window of it is blind."""
    pipeline = _pipeline(tmp_path)
    error = (
        "2026/11/25 23:14:30 [error] 1234#1234: *5 connect() failed (111: Connection "
        'refused) while connecting to upstream, client: 192.0.2.1, server: _, request: "GET / '
        'HTTP/1.1"'
    )
    with capture_logs() as logs:
        for at in range(0, 300, 20):
            pipeline.process(
                LineBatch("glob", "nginx", [_vhost(i) for i in range(at, at + 20)], 0.0)
            )
            pipeline.process(LineBatch("glob", "nginx-error", [error] * 5, 0.0))
    [warning] = _warnings(logs)
    assert (warning["event"], warning["parser"]) == (
        "source is blind: its lines are not of its format",
        "nginx",
    )
    gauges = _gauges(pipeline)
    assert gauges["aisentinel_source_blind"] == {"glob": 1.0}
    assert gauges["aisentinel_source_unrecognised_ratio"] == {"glob": 1.0}
    with capture_logs() as logs:
        _feed(pipeline, "glob", "nginx-error", ["not an error log line"] * 300)
        _feed(pipeline, "glob", "nginx", [_good(i) for i in range(300)])
    assert _warnings(logs) == []  # the error log's window went blind while nginx's was
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"glob": 1.0}
    with capture_logs() as logs:
        _feed(pipeline, "glob", "nginx-error", [error] * 300)
    [warning] = _warnings(logs)
    assert (warning["event"], warning["parser"]) == (
        "source sees again: its lines are of its format",
        "nginx-error",
    )
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"glob": 0.0}


class _Asked(Parser):
    """Parses lines starting with "ok"; its looks_like says no to every line and counts
    the lines it was asked about."""

    name = "asked"

    def __init__(self) -> None:
        super().__init__(ParserContext(source="t"))
        self.asked = 0

    def parse(self, line: str) -> Event | None:
        return Event(T0, "t") if line.startswith("ok") else None

    def looks_like(self, line: str) -> bool:
        self.asked += 1
        return False


def test_lines_that_gave_an_event_are_never_asked_or_counted_unrecognised() -> None:
    """unrecognised(): a batch whose every line gave an event asks no line again (0); one
    with misses asks a sample, and never counts more lines than gave no event."""
    parser = _Asked()
    assert parser.unrecognised(["ok 1"], 1) == 0
    assert parser.unrecognised(["ok"] * 100, 100) == 0
    assert parser.asked == 0
    assert parser.unrecognised(["ok", "ok", "ok", "junk"], 3) == 1
    assert parser.asked == 4


def test_nginx_error_recognises_a_line_by_its_head_without_parsing_it() -> None:
    """nginx-error's recognises(): an error-log line giving no event is of the format, an
    access-log line is not."""
    parser = build_parser("nginx-error", ParserContext(source="e"))
    upstream = (
        "2026/11/25 23:14:30 [error] 1234#1234: *5 connect() failed (111: Connection refused)"
    )
    assert parser.parse(upstream) is None
    assert parser.recognises(upstream)
    assert not parser.recognises(_good(1))
    assert parser.unrecognised([upstream, _good(1), _good(2), upstream], 0) == 2


def _setup_problems(pipeline: Pipeline) -> dict[tuple[str, str], float]:
    """``aisentinel_source_setup_problem`` of one scrape, by (source, problem)."""
    [family] = [m for m in pipeline.collect() if m.name == "aisentinel_source_setup_problem"]
    return {(s.labels["source"], s.labels["problem"]): s.value for s in family.samples}


def test_an_untrusted_local_proxy_is_exported_while_it_lasts(tmp_path: Path) -> None:
    """aisentinel_source_setup_problem{problem="untrusted_local_proxy"} is 0 for a source
    whose clients are seen, 1 once every client is an untrusted local proxy, 0 again once
    the real clients are logged; a source that read no line has no series."""
    pipeline = _pipeline(tmp_path)
    assert _setup_problems(pipeline) == {}
    _feed(pipeline, "web", "nginx", [_good(i) for i in range(100)])
    assert _setup_problems(pipeline) == {
        ("web", "clock_offset"): 0.0,
        ("web", "untrusted_local_proxy"): 0.0,
    }
    proxied = nginx_line(T0, "127.0.0.1", "/api/tags") + ' "198.51.100.9"'
    _feed(pipeline, "web", "nginx", [proxied] * 300)
    _feed(pipeline, "api", "nginx", [_good(i) for i in range(100)])
    assert _setup_problems(pipeline) == {
        ("api", "clock_offset"): 0.0,
        ("api", "untrusted_local_proxy"): 0.0,
        ("web", "clock_offset"): 0.0,
        ("web", "untrusted_local_proxy"): 1.0,
    }
    _feed(pipeline, "web", "nginx", [_good(i) for i in range(300)])
    assert _setup_problems(pipeline)["web", "untrusted_local_proxy"] == 0.0


def _entries(pipeline: Pipeline, unrecognised: int, batches: int) -> None:
    """Hand on ``batches`` batches of 50 journal entries that gave no event, ``unrecognised``
    of each not sshd's (as a journald source tells them)."""
    for _ in range(batches):
        pipeline.process(EventBatch("ssh-journal", [], 0.0, 50, 0, unrecognised, "journald"))


def test_a_journald_source_whose_entries_are_not_sshds_is_blind_and_sees_again(
    tmp_path: Path,
) -> None:
    """Entries of another program (nginx through syslog) on a journald source: blind (gauge
    1, one warning that says what a journald source reads, not to widen sshd_uids);
    sshd's entries again (not about authentication, so no event): sees again."""
    pipeline = _pipeline(tmp_path)
    with capture_logs() as logs:
        _entries(pipeline, 50, 6)
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"ssh-journal": 1.0}
    [warning] = _warnings(logs)
    assert warning["event"] == "source is blind: its lines are not of its format"
    assert warning["parser"] == "journald"
    assert "reads sshd's entries" in warning["hint"]
    assert "nginx must log to a file" in warning["hint"]
    assert "sshd_uids" not in warning["hint"]  # a security boundary, not a fix for this
    with capture_logs() as logs:
        _entries(pipeline, 0, 6)
    [warning] = _warnings(logs)
    assert warning["event"] == "source sees again: its lines are of its format"
    assert _gauges(pipeline)["aisentinel_source_blind"] == {"ssh-journal": 0.0}
    assert _gauges(pipeline)["aisentinel_source_unrecognised_ratio"] == {"ssh-journal": 0.0}


def test_a_source_the_pipeline_no_longer_counts_has_no_setup_problem(tmp_path: Path) -> None:
    """A source whose counters are gone (removed by a reload) has no
    aisentinel_source_setup_problem series and no problem, whatever its parser saw."""
    pipeline = _pipeline(tmp_path)
    proxied = nginx_line(T0, "127.0.0.1", "/api/tags") + ' "198.51.100.9"'
    _feed(pipeline, "web", "nginx", [proxied] * 300)
    _feed(pipeline, "api", "nginx", [_good(i) for i in range(100)])
    assert _setup_problems(pipeline)["web", "untrusted_local_proxy"] == 1.0
    del pipeline.sources["web"]
    assert _setup_problems(pipeline) == {
        ("api", "clock_offset"): 0.0,
        ("api", "untrusted_local_proxy"): 0.0,
    }
    assert pipeline.source_problems("web") == []


def test_a_plug_in_parser_whose_problems_are_not_setup_problems_harms_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """problems() raising, or giving a str or an unknown kind, leaves every other metric
    and the known kinds' series (0) in the scrape; each fault is logged once."""
    pipeline = _pipeline(tmp_path)
    _feed(pipeline, "web", "nginx", [_good(i) for i in range(100)])
    parser = pipeline.parser_for("web", "nginx")
    found: list[object] = []

    def problems() -> list[object]:
        if not found:
            raise RuntimeError("plug-in bug")
        return found

    monkeypatch.setattr(parser, "problems", problems)
    with capture_logs() as logs:
        unknown = SetupProblem("no_xff", "x")  # type: ignore[arg-type]  # a plug-in's own kind
        for given in ([], ["every client is 10.0.0.1"], [unknown]):
            found[:] = given
            for _scrape in range(2):
                names = {m.name for m in pipeline.collect()}
                assert "aisentinel_source_lines_parsed" in names
                assert _setup_problems(pipeline) == {
                    ("web", "clock_offset"): 0.0,
                    ("web", "untrusted_local_proxy"): 0.0,
                }
                assert pipeline.source_problems("web") == []
    ignored = [e["what"] for e in logs if e["event"].startswith("parser setup problem ignored")]
    assert ignored == ["raised RuntimeError", "str", "kind 'no_xff'"]
