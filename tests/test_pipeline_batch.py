"""The pipeline's batch path: findings come out in line order, then detector order."""

from __future__ import annotations

import time
from pathlib import Path

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector
from aisentinel.events import EventBatch, Finding, LineBatch
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.pipeline import Pipeline

T0 = 1_764_000_000.0


def _pipeline(tmp_path: Path, detectors: list[Detector], seen: list[Finding]) -> Pipeline:
    clock = FakeClock(T0)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    return Pipeline(
        detectors=detectors, engine=engine, runner=None, clock=clock, on_finding=seen.append
    )


def _line(second: int, client: str, path: str, status: int) -> str:
    return (
        f'{client} - - [24/Nov/2025:16:00:{second:02d} +0000] "GET {path} HTTP/1.1" '
        f'{status} 0 "-" "x"'
    )


def ssh_line(ts: float, client: str, pid: int) -> str:
    """A failed-password sshd line in RFC 3339 form (no year to infer)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))
    return f"{stamp} host sshd[{pid}]: Failed password for root from {client} port 22 ssh2"


def test_batch_findings_follow_line_then_detector_order(tmp_path: Path) -> None:
    """One batch gives the findings a line-by-line run gives, in the same order."""
    lines = [
        line
        for i in range(30)
        for line in (
            _line(i, "192.0.2.1", "/.env", 404),
            _line(i, "192.0.2.2", ("/api/tags", "/api/ps", "/api/version")[i % 3], 404),
            _line(i, "192.0.2.3", "/login", 401),
            "garbage",
        )
    ]
    batched: list[Finding] = []
    single: list[Finding] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _pipeline(tmp_path / "a", build_detectors({}), batched)
    many = _pipeline(tmp_path / "b", build_detectors({}), single)
    one.process(LineBatch("access", "nginx", lines, 0.0))
    for line in lines:
        many.process(LineBatch("access", "nginx", [line], 0.0))
    assert len(batched) >= 3
    assert {f.detector for f in batched} >= {"scanning", "ai_recon", "http_auth"}
    assert batched == single
    assert one.quieted == many.quieted
    assert sum(one.quieted.values()) >= 1  # repeats about banned clients were held back
    assert one.sources["access"] == many.sources["access"]
    assert one.sources["access"].unparsed == 30
    assert one.findings == many.findings
    assert one.decisions == many.decisions


def test_event_batch_skips_parsing_and_counts_items(tmp_path: Path) -> None:
    """An EventBatch goes to the detectors as it is: same findings as its lines, and
    read/parsed/unparsed count its events and the records that gave none."""
    clock = FakeClock(T0)
    lines = [ssh_line(T0 + i, "198.51.100.9", pid=100 + i) for i in range(6)]
    parser = build_parser("sshd", ParserContext(source="auth", clock=clock))
    events = list(parser.parse_many(lines))
    assert [e.pid for e in events] == list(range(100, 106))
    from_lines: list[Finding] = []
    from_events: list[Finding] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _pipeline(tmp_path / "a", build_detectors({}), from_lines)
    two = _pipeline(tmp_path / "b", build_detectors({}), from_events)
    one.process(LineBatch("auth", "sshd", [*lines, "noise"], 0.0))
    two.process(EventBatch("auth", events, 0.0, unparsed=1))
    assert [f.detector for f in from_events] == ["ssh_bruteforce"]
    assert from_events == from_lines
    assert two.sources["auth"] == one.sources["auth"]
    assert (two.sources["auth"].lines, two.sources["auth"].unparsed) == (7, 1)
    assert ("auth", "sshd") not in two._parsers  # no parser was built for events
