"""The pipeline's batch path: findings come out in line order, then detector order."""

from __future__ import annotations

from pathlib import Path

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector
from aisentinel.events import Finding, LineBatch
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


def test_batch_findings_follow_line_then_detector_order(tmp_path: Path) -> None:
    """One batch gives the findings a line-by-line run gives, in the same order."""
    lines = [
        line
        for i in range(30)
        for line in (
            _line(i, "192.0.2.1", "/.env", 404),
            _line(i, "192.0.2.2", "/api/tags", 200),
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
    assert len(batched) >= 4
    assert {f.detector for f in batched} >= {"scanning", "ai_recon", "http_auth"}
    assert batched == single
    assert one.sources["access"] == many.sources["access"]
    assert one.sources["access"].unparsed == 30
    assert one.findings == many.findings
    assert one.decisions == many.decisions
