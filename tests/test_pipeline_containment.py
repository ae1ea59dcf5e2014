"""One bad line or event never stops the pipeline: each stage's fault is skipped and counted."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ssh_fail, wait_for
from structlog.testing import capture_logs
from test_daemon import Running

from aisentinel import pipeline as pipeline_module
from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector, DetectorConfigBase
from aisentinel.detectors.scanning import ScanningDetector
from aisentinel.events import Decision, Event, Finding, HttpRequest, LineBatch, Severity
from aisentinel.parsers import Parser, ParserContext
from aisentinel.parsers.base import ParsersConfig
from aisentinel.parsers.nginx_json import NginxJsonParser
from aisentinel.pipeline import EXCERPT_CHARS, Pipeline
from aisentinel.responders.runner import ResponderRunner

T0 = 1_764_000_000.0
POISON = "/poison\n\u202e" + "x" * 400
"""A path that makes the test detectors raise: a newline, a bidi override, and long."""


def _line(i: int, path: str, client: str = "192.0.2.1", time: object = None) -> str:
    return json.dumps(
        {
            "time": T0 + i if time is None else time,
            "remote_addr": client,
            "status": "404",
            "request_method": "GET",
            "request_uri": path,
        }
    )


class Counting(Detector):
    """Records every path it observes; raises on :data:`POISON`; a finding for ``/find``."""

    name = "counting"
    consumes = (HttpRequest,)

    def __init__(self) -> None:
        super().__init__(DetectorConfigBase())
        self.seen: list[str] = []

    def observe(self, event: Event) -> Finding | None:
        assert isinstance(event, HttpRequest)
        if event.path == POISON:
            raise OverflowError("cannot convert float infinity to integer")
        self.seen.append(event.path)
        if event.path != "/find":
            return None
        return Finding(event.ts, self.name, Severity.HIGH, event.client, event.client, 1, 60.0, "f")

    def expire(self, now: float) -> int:
        return 0

    def tracked_keys(self) -> int:
        return 0


class Columnar(Counting):
    """Reads the whole batch first, then raises: no frame holds the failing event."""

    name = "columnar"

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        paths = [e.path for e in events if isinstance(e, HttpRequest)]
        self.seen.extend(p for p in paths if p != POISON)
        if len(events) > 1 and POISON in paths:
            raise OverflowError("column overflow")
        if paths == [POISON]:
            raise OverflowError("column overflow")
        return []


def _pipeline(
    tmp_path: Path, detectors: Sequence[Detector], **hooks: Any
) -> tuple[Pipeline, DecisionEngine]:
    clock = FakeClock(T0)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    pipeline = Pipeline(
        detectors=detectors, engine=engine, runner=hooks.pop("runner", None), clock=clock, **hooks
    )
    return pipeline, engine


def _batch(paths: list[str]) -> LineBatch:
    return LineBatch("web", "nginx-json", [_line(i, p) for i, p in enumerate(paths)], 0.0)


def _errors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["log_level"] == "error"]


def test_detector_raising_on_one_event_skips_only_that_event(tmp_path: Path) -> None:
    """The events after the poison and later batches are observed once; the poison is counted."""
    det = Counting()
    found: list[Finding] = []
    pipeline, _ = _pipeline(tmp_path, [det], on_finding=found.append)
    with capture_logs() as logs:
        pipeline.process(_batch(["/a", "/b", POISON, "/c", "/find"]))
        pipeline.process(_batch(["/d", POISON, "/e"]))
    assert det.seen == ["/a", "/b", "/c", "/find", "/d", "/e"]
    assert [f.detector for f in found] == ["counting"]
    assert pipeline.event_errors == {("detect", "counting"): 2}
    errors = _errors(logs)
    assert len(errors) == 1
    assert errors[0]["stage"] == "detect"
    assert errors[0]["plugin"] == "counting"
    assert errors[0]["source"] == "web"
    assert "OverflowError" in errors[0]["error"]
    assert [e["log_level"] for e in logs].count("debug") == 1


def test_two_poisoned_events_in_one_batch_are_both_skipped(tmp_path: Path) -> None:
    """A second poison after the first is found the same way; nothing is observed twice."""
    det = Counting()
    pipeline, _ = _pipeline(tmp_path, [det])
    pipeline.process(_batch([POISON, "/a", POISON, "/b", POISON]))
    assert det.seen == ["/a", "/b"]
    assert pipeline.event_errors == {("detect", "counting"): 3}


def test_columnar_detector_falls_back_to_one_event_at_a_time(tmp_path: Path) -> None:
    """With no frame naming the event, the batch is re-observed one event at a time."""
    det = Columnar()
    pipeline, _ = _pipeline(tmp_path, [det])
    pipeline.process(_batch(["/a", POISON, "/b"]))
    pipeline.process(_batch(["/c"]))
    # The documented cost: events of the failed batch are seen again by this detector.
    assert det.seen == ["/a", "/b", "/a", "/b", "/c"]
    assert pipeline.event_errors == {("detect", "columnar"): 1}


def test_fault_log_excerpt_is_escaped_and_truncated(tmp_path: Path) -> None:
    """The first fault's excerpt has no raw newline or bidi override and is at most 200 chars."""
    pipeline, _ = _pipeline(tmp_path, [Counting()])
    with capture_logs() as logs:
        pipeline.process(_batch([POISON]))
    (entry,) = _errors(logs)
    excerpt = entry["excerpt"]
    assert len(excerpt) <= EXCERPT_CHARS
    assert "\n" not in excerpt
    assert "\u202e" not in excerpt
    assert "/poison\\n\\u202e" in excerpt
    assert excerpt.endswith("...")


def test_other_detectors_are_unaffected_by_one_detector_fault(tmp_path: Path) -> None:
    """A detector that raises does not keep the real detectors from seeing the batch."""
    real = build_detectors({})
    pipeline, _ = _pipeline(tmp_path, [Counting(), *real])
    found: list[Finding] = []
    pipeline.on_finding = found.append
    lines = [_line(i, "/.env", "198.51.100.9") for i in range(5)]
    lines.insert(2, _line(2, POISON))
    pipeline.process(LineBatch("web", "nginx-json", lines, 0.0))
    assert "scanning" in {f.detector for f in found}
    assert pipeline.event_errors == {("detect", "counting"): 1}


class StuckQuiet(Counting):
    """Cannot end its quiet periods: unquiet() raises."""

    name = "stuck"

    def unquiet(self) -> None:
        raise RuntimeError("no way out")


def test_detector_raising_in_unquiet_is_contained_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A detector whose unquiet() raises (after an unban) is counted once; the batch
    is still read by every detector, and the other detectors' quiet periods end (a
    client still banned, not the one unbanned, whose counts are forgotten, is found
    again at once)."""
    stuck = StuckQuiet()
    pipeline, engine = _pipeline(tmp_path, [stuck, *build_detectors({})])
    found: list[Finding] = []
    pipeline.on_finding = found.append
    pipeline.process(_batch(["/.env"] * 5))
    engine.manual_ban("192.0.2.9", 3600.0, "", "test")
    assert engine.unban("192.0.2.9", who="test") is not None
    with capture_logs() as logs:
        pipeline.process(LineBatch("web", "nginx-json", [_line(0, "/.env", time=T0 + 10)], 0.0))
    assert pipeline.event_errors == {("detect", "stuck"): 1}
    assert [e["plugin"] for e in _errors(logs)] == ["stuck"]
    assert stuck.seen[-1] == "/.env"
    scanning = [f.detector for f in found if f.detector == "scanning"]
    assert scanning == ["scanning", "scanning"]  # reported again at once
    assert engine.is_banned("192.0.2.1")


def test_parser_raising_on_one_line_skips_and_counts_that_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line whose parse raises is unparsed; the rest of its batch and later batches parse."""
    real_time = NginxJsonParser._time

    def time_or_raise(self: NginxJsonParser, value: Any) -> float | None:
        if value == "boom":
            raise KeyError(value)
        return real_time(self, value)

    monkeypatch.setattr(NginxJsonParser, "_time", time_or_raise)
    det = Counting()
    pipeline, _ = _pipeline(tmp_path, [det])
    bad = _line(1, "/b\u202e" + "y" * 300, time="boom").replace("\\u202e", "\u202e")
    assert "\u202e" in bad  # raw in the line, as JSON allows
    lines = [_line(0, "/a"), bad, _line(2, "/c")]
    with capture_logs() as logs:
        pipeline.process(LineBatch("web", "nginx-json", lines, 0.0))
        pipeline.process(LineBatch("web", "nginx-json", [_line(3, "/d")], 0.0))
    assert det.seen == ["/a", "/c", "/d"]
    counters = pipeline.sources["web"]
    assert (counters.lines, counters.parsed, counters.unparsed) == (4, 3, 1)
    assert pipeline.event_errors == {("parse", "nginx-json"): 1}
    (entry,) = _errors(logs)
    assert entry["stage"] == "parse"
    assert "boom" in entry["excerpt"]
    assert "\\u202e" in entry["excerpt"]
    assert "\u202e" not in entry["excerpt"]
    assert len(entry["excerpt"]) <= EXCERPT_CHARS


def test_engine_raising_on_one_finding_skips_only_that_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finding the engine cannot decide is counted; the next findings are decided."""
    decided: list[Decision] = []
    pipeline, engine = _pipeline(tmp_path, [Counting()], on_decision=decided.append)
    real_decide = engine.decide

    def decide(finding: Finding) -> Decision:
        if finding.client == "192.0.2.66":
            raise RuntimeError("ledger exploded")
        return real_decide(finding)

    monkeypatch.setattr(engine, "decide", decide)
    lines = [_line(0, "/find", "192.0.2.66"), _line(1, "/find", "192.0.2.7")]
    pipeline.process(LineBatch("web", "nginx-json", lines, 0.0))
    assert [d.target.text for d in decided if d.target] == ["192.0.2.7"]
    assert pipeline.event_errors == {("decide", "engine"): 1}
    assert sum(pipeline.findings.values()) == 2


def test_runner_raising_on_submit_keeps_the_decision_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit that raises is counted; the decision is still recorded and reported."""
    runner = ResponderRunner([], FakeClock(T0))

    def submit(decision: Decision) -> None:
        raise OSError("nft missing")

    monkeypatch.setattr(runner, "submit", submit)
    decided: list[Decision] = []
    pipeline, _ = _pipeline(tmp_path, [Counting()], runner=runner, on_decision=decided.append)
    lines = [_line(0, "/find", "192.0.2.8"), _line(1, "/find", "192.0.2.9")]
    pipeline.process(LineBatch("web", "nginx-json", lines, 0.0))
    assert [d.target.text for d in decided if d.target] == ["192.0.2.8", "192.0.2.9"]
    assert pipeline.event_errors == {("respond", "runner"): 2}
    assert sum(pipeline.decisions.values()) == 2


def test_output_hooks_raising_are_counted_per_hook(tmp_path: Path) -> None:
    """on_finding and on_decision faults are counted apart; decisions are still taken."""

    def broken(item: object) -> None:
        raise ValueError("timestamp out of range")

    pipeline, _ = _pipeline(tmp_path, [Counting()], on_finding=broken, on_decision=broken)
    lines = [_line(0, "/find", "198.51.100.5"), _line(1, "/find", "198.51.100.6")]
    with capture_logs() as logs:
        pipeline.process(LineBatch("web", "nginx-json", lines, 0.0))
    assert pipeline.event_errors == {("output", "on_finding"): 2, ("output", "on_decision"): 2}
    assert sum(pipeline.decisions.values()) == 2
    assert sorted(e["plugin"] for e in _errors(logs)) == ["on_decision", "on_finding"]


def test_overflowing_json_times_are_unparsed_end_to_end(tmp_path: Path) -> None:
    """Times of 1e308 / -1e308 make the lines unparsed; the real detectors see the rest."""
    found: list[Finding] = []
    pipeline, _ = _pipeline(tmp_path, build_detectors({}), on_finding=found.append)
    poison = [_line(0, "/.env", "198.51.100.3", time=t) for t in ("1e308", "1e308", "-1e308")]
    good = [_line(i, "/.env", "198.51.100.4") for i in range(5)]
    pipeline.process(LineBatch("web", "nginx-json", poison + good, 0.0))
    counters = pipeline.sources["web"]
    assert (counters.parsed, counters.unparsed) == (5, 3)
    assert {f.client for f in found} == {"198.51.100.4"}
    assert not pipeline.event_errors


DAEMON_CONFIG = """
[daemon]
state_dir = "{state}"
log_format = "json"
heartbeat_interval = "200ms"
expire_interval = "1s"

[exporter]
port = 0

[[sources]]
name = "web"
type = "file"
parser = "nginx-json"
paths = ["{logs}/web.log"]

[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{logs}/auth.log"]
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    """A daemon (in a thread, as tests/test_daemon.py runs it) on a JSON and an sshd log."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = tmp_path / "aisentinel.toml"
    path.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", logs=logs))
    r = Running(path)
    yield r
    if r.thread.is_alive():
        r.stop()


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def test_daemon_fed_overflowing_times_keeps_running(
    daemon: Running, tmp_path: Path, now_epoch: float
) -> None:
    """Three 1e308/-1e308 lines are unparsed; the daemon lives on and bans a later attacker."""
    logs = tmp_path / "logs"
    poison = [_line(0, "/.env", "198.51.100.50", time=t) for t in ("1e308", "1e308", "-1e308")]
    _append(logs / "web.log", poison)
    unparsed = 'aisentinel_source_lines_unparsed_total{source="web"} 3.0'
    # The log files appear after the daemon started, so each source finds its file on its
    # own poll: wait until the poison has been read before the attacker comes.
    assert wait_for(lambda: unparsed in daemon.scrape(), timeout=15)
    _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.51") for i in range(6)])
    assert wait_for(lambda: "198.51.100.51" in daemon.active(), timeout=15)
    assert daemon.thread.is_alive()
    text = daemon.scrape()
    assert unparsed in text
    assert "aisentinel_pipeline_event_errors_total{" not in text


def test_daemon_contains_a_detector_fault_and_exports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now_epoch: float
) -> None:
    """A detector raising on one event is counted in the metric; later lines are still acted on."""
    real = ScanningDetector.observe_many

    def observe_many(self: ScanningDetector, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        for event in events:
            if isinstance(event, HttpRequest) and event.path == "/boom":
                raise OverflowError("cannot convert float infinity to integer")
        return real(self, events)

    monkeypatch.setattr(ScanningDetector, "observe_many", observe_many)
    logs = tmp_path / "logs"
    logs.mkdir()
    path = tmp_path / "aisentinel.toml"
    path.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", logs=logs))
    r = Running(path)
    try:
        _append(logs / "web.log", [_line(int(now_epoch - T0), "/boom", "198.51.100.52")])
        assert wait_for(lambda: r.daemon.pipeline.event_errors[("detect", "scanning")] == 1)
        scan = [_line(int(now_epoch - T0) + i, "/.env", "198.51.100.53") for i in range(5)]
        _append(logs / "web.log", scan)
        assert wait_for(lambda: "198.51.100.53" in r.active(), timeout=15)
        assert r.thread.is_alive()
        text = r.scrape()
        (sample,) = [x for x in text.splitlines() if x.startswith("aisentinel_pipeline_event_")]
        assert 'stage="detect"' in sample
        assert 'plugin="scanning"' in sample
        assert sample.endswith("} 1.0")
        assert "198.51.100.52" not in text
    finally:
        r.stop()


class _BareParser(Parser):
    """A plug-in parser whose ``__init__`` does not call ``Parser.__init__``."""

    name = "bare"

    def __init__(self, ctx: ParserContext) -> None:  # no super().__init__, on purpose
        self.source = ctx.source

    def parse(self, line: str) -> HttpRequest | None:
        return HttpRequest(T0, self.source, "192.0.2.1", "GET", line, 404, 0, None, "")


def test_plugin_parser_without_base_init_parses_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plug-in parser that skips Parser.__init__ (no notices queue) parses batch after
    batch: the pipeline does not fail reading its notices."""
    monkeypatch.setattr(pipeline_module, "build_parser", lambda fmt, ctx: _BareParser(ctx))
    det = Counting()
    pipeline, _ = _pipeline(tmp_path, [det])
    pipeline.process(LineBatch("web", "bare", ["/a", "/b"], 0.0))
    pipeline.process(LineBatch("web", "bare", ["/c"], 0.0))
    assert det.seen == ["/a", "/b", "/c"]
    assert pipeline.sources["web"].parsed == 3


def test_forwarded_header_reaches_the_parsers(tmp_path: Path) -> None:
    """[parsers] forwarded_header is handed to the parsers the pipeline builds: with
    "real_ip" a JSON line's real_ip names the client, by default its xff does."""
    line = json.dumps(
        {
            "time": T0,
            "remote_addr": "10.0.0.2",
            "status": "404",
            "request_uri": "/",
            "xff": "198.51.100.99",
            "real_ip": "203.0.113.50",
        }
    )
    for header, client in (("xff", "198.51.100.99"), ("real_ip", "203.0.113.50")):
        config = ParsersConfig.model_validate(
            {"trusted_proxies": ["10.0.0.2/32"], "forwarded_header": header}
        )
        pipeline, _ = _pipeline(tmp_path, [], parsers_config=config)
        event = pipeline.parser_for("web", "nginx-json").parse(line)
        assert isinstance(event, HttpRequest)
        assert event.client == client
