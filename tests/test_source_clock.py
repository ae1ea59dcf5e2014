"""A line source whose log times stand steadily off the clock (a log read in another zone)
is told: a log warning once, a setup problem in status and its metric, an offset gauge."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.events import LineBatch
from aisentinel.pipeline import Pipeline
from aisentinel.sourceclock import SourceClock

T0 = float(calendar.timegm((2026, 12, 8, 1, 0, 0, 0, 0, 0)))
NINE_HOURS = 9 * 3600.0


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is Asia/Tokyo (UTC+9) for the test."""
    if not Path("/usr/share/zoneinfo/Asia/Tokyo").exists():
        pytest.skip("no tzdata for Asia/Tokyo")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_steady_offset_is_flagged_after_ten_minutes_and_names_utc() -> None:
    """Events steadily 9 h behind are flagged once, after 10 minutes and 3 batches, and the
    advice on a UTC+9 host is timezone = "UTC"; back near the clock, the flag goes."""
    clock = SourceClock()
    flagged = [clock.observe(T0 + i * 60 - NINE_HOURS + (i % 3), T0 + i * 60) for i in range(12)]
    assert flagged == [False] * 10 + [True, False]
    assert clock.flagged
    assert 'timezone = "UTC"' in clock.advice(9 * 3600)
    assert "9h00m behind" in clock.advice(9 * 3600)
    assert "Area/City" in clock.advice(0)  # a UTC host reading a log in UTC-09:00
    assert not clock.observe(T0 + 800, T0 + 801)
    assert not clock.flagged


def test_a_backlog_being_caught_up_or_a_short_stretch_is_not_flagged() -> None:
    """A backlog whose age shrinks as it is read, an offset under 15 minutes, or a large
    one for less than 10 minutes never flags the source."""
    backlog = SourceClock()  # 5 hours behind, caught up at 20 minutes an minute
    assert not any(backlog.observe(T0 + i * 60 - 18000 + i * 1200, T0 + i * 60) for i in range(16))
    near = SourceClock()
    assert not any(near.observe(T0 + i * 60 - 800, T0 + i * 60) for i in range(30))
    short = SourceClock()
    assert not any(short.observe(T0 + i * 60 - NINE_HOURS, T0 + i * 60) for i in range(10))
    assert not short.flagged


def _pipeline(tmp_path: Path, clock: FakeClock) -> Pipeline:
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    return Pipeline(detectors=build_detectors({}), engine=engine, runner=None, clock=clock)


@pytest.mark.usefixtures("tokyo")
def test_a_utc_error_log_read_on_a_tokyo_host_is_told_once(tmp_path: Path) -> None:
    """A UTC-written nginx error log on a Tokyo host: after 10 minutes the source has a
    clock_offset setup problem naming timezone = "UTC", its gauge reads -9 h and one
    warning is logged; with timezone UTC the source has none."""
    clock = FakeClock(T0)
    for zones, expected in (({}, True), ({"web": UTC}, False)):
        pipeline = _pipeline(tmp_path / str(expected), clock)
        pipeline.set_zones(zones)
        with capture_logs() as logs:
            for i in range(25):
                clock.set(T0 + 30 * i)
                stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(clock.now()))
                line = (
                    f'{stamp} [error] 29#29: *{i} user "admin": password mismatch, '
                    f'client: 203.0.113.77, server: s, request: "GET / HTTP/1.1", host: "s"'
                )
                pipeline.process(LineBatch("web", "nginx-error", [line], clock.monotonic()))
        warned = [e for e in logs if e["event"] == "log times stand off the clock"]
        problems = pipeline.source_problems("web")
        gauges = {
            s.labels["source"]: s.value
            for m in pipeline.collect()
            if m.name == "aisentinel_source_clock_offset_seconds"
            for s in m.samples
        }
        setup = {
            s.labels["problem"]: s.value
            for m in pipeline.collect()
            if m.name == "aisentinel_source_setup_problem"
            for s in m.samples
        }
        if expected:
            assert len(warned) == 1
            assert [p.kind for p in problems] == ["clock_offset"]
            assert 'timezone = "UTC"' in problems[0].text
            assert gauges == {"web": -NINE_HOURS}
            assert setup["clock_offset"] == 1.0
        else:
            assert (warned, problems, gauges) == ([], [], {"web": 0.0})
            assert setup["clock_offset"] == 0.0


@pytest.mark.usefixtures("tokyo")
def test_replay_never_flags_a_source_clock(tmp_path: Path) -> None:
    """A pipeline built as replay builds it (its clock is the log's own time) never flags a
    source standing off its clock: no warning, no clock_offset problem."""
    clock = FakeClock(T0)
    pipeline = Pipeline(
        detectors=[],
        engine=DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.db", clock), clock),
        runner=None,
        clock=clock,
        watch_source_clocks=False,
    )
    with capture_logs() as logs:
        for i in range(25):
            clock.set(T0 + 30 * i)
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(clock.now()))
            line = (
                f'{stamp} [error] 29#29: *{i} user "admin": password mismatch, '
                f'client: 203.0.113.77, server: s, request: "GET / HTTP/1.1", host: "s"'
            )
            pipeline.process(LineBatch("web", "nginx-error", [line], clock.monotonic()))
    assert [e for e in logs if e["event"] == "log times stand off the clock"] == []
    assert pipeline.source_problems("web") == []
