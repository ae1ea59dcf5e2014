"""The exporter composes the stages' own collectors and never depends on the daemon."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from aisentinel.clock import FakeClock
from aisentinel.detectors.ssh_bruteforce import SshBruteforceConfig, SshBruteforceDetector
from aisentinel.events import SshEvent, SshKind
from aisentinel.exporter import DaemonValues, Exporter
from aisentinel.metrics import Collecting, gauge

T0 = 1_764_000_000.0


class Broken:
    """A stage collector that raises."""

    def collect(self) -> Iterator[Metric]:
        yield gauge("aisentinel_broken_partial", "Never served.", {}, 1)
        raise RuntimeError("state torn")


class Fine:
    """A stage collector with one sample."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> Iterator[Metric]:
        yield gauge("aisentinel_fine", "A fine value.", {"which": self.name}, 7)


def _scrape(
    stages: list[tuple[str, Collecting]], clock: FakeClock | None = None, sources: int = 2
) -> str:
    values = DaemonValues(
        heartbeat=lambda: 5.0,
        reloads=lambda: {"ok": 1, "failed": 0},
        queue_depth=lambda: 3,
        degraded=lambda: {},
        decisions_summarised=lambda: 11,
        sources_configured=lambda: sources,
    )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(Exporter(lambda: stages, values, clock or FakeClock(T0)))
    return generate_latest(registry).decode()


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in scrape")


def test_a_failing_collector_loses_only_its_own_metrics() -> None:
    """One collector raising is reported as down (and counted); the others are served."""
    text = _scrape([("a", Fine("a")), ("broken", Broken()), ("b", Fine("b"))])
    assert _value(text, 'aisentinel_fine{which="a"}') == 7
    assert _value(text, 'aisentinel_fine{which="b"}') == 7
    assert "aisentinel_broken_partial" not in text
    assert _value(text, 'aisentinel_collector_up{collector="broken"}') == 0
    assert _value(text, 'aisentinel_collector_errors_total{collector="broken"}') == 1
    assert _value(text, 'aisentinel_collector_up{collector="a"}') == 1
    assert _value(text, 'aisentinel_collector_last_success_timestamp_seconds{collector="a"}') == T0
    assert _value(text, "aisentinel_pipeline_queue_batches") == 3


def test_decisions_only_summarised_in_the_log_are_counted() -> None:
    """The daemon's count of decisions its log only summarised is served as a counter."""
    text = _scrape([])
    assert "# TYPE aisentinel_decision_lines_summarised_total counter" in text
    assert _value(text, "aisentinel_decision_lines_summarised_total") == 11


def test_a_daemon_reading_no_log_is_told_by_its_sources_configured() -> None:
    """aisentinel_sources_configured serves the configured sources; 0 when there is none
    (`aisentinel status`: no log source is configured; alert AisentinelNoSources)."""
    assert _value(_scrape([]), "aisentinel_sources_configured") == 2
    assert _value(_scrape([], sources=0), "aisentinel_sources_configured") == 0


def test_families_of_one_name_from_several_stages_are_merged() -> None:
    """Two stages reporting the same family give one HELP/TYPE and both samples."""
    text = _scrape([("a", Fine("a")), ("b", Fine("b"))])
    assert text.count("# TYPE aisentinel_fine gauge") == 1


def test_an_address_flood_shows_in_detector_evictions() -> None:
    """Addresses beyond max_keys evict keys, and the detector's own collector exports it
    (long windows off: their own cap is slow_max_keys)."""
    detector = SshBruteforceDetector(
        SshBruteforceConfig(max_keys=10, slow_thresholds=(), slow_windows=())
    )
    for i in range(50):
        detector.observe(
            SshEvent(T0 + i, "auth", f"198.51.100.{i}", SshKind.FAILED_PASSWORD, "root", 22)
        )
    text = _scrape([("detector:ssh_bruteforce", detector)])
    assert _value(text, 'aisentinel_detector_evictions_total{detector="ssh_bruteforce"}') == 40
    assert _value(text, 'aisentinel_detector_tracked_keys{detector="ssh_bruteforce"}') == 10
    assert "198.51.100" not in text


def test_exporter_does_not_import_the_daemon() -> None:
    """Importing the exporter pulls in no daemon module (no cycle)."""
    code = "import sys, aisentinel.exporter; print('aisentinel.daemon' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
