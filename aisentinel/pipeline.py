"""The processing core shared by the daemon and ``replay``.

``Pipeline.process(batch)`` runs every line of a :class:`LineBatch` through the
source's parser, hands each event to the detectors that consume its type, turns
findings into decisions and submits them to the responders. It is single-threaded
by design: the daemon calls it from one thread, fed by a queue that the sources
fill. Counters live here as plain integers and are read by the exporter at scrape
time (no double bookkeeping).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client import Histogram

from aisentinel.clock import Clock
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.detectors.base import Detector
from aisentinel.events import Decision, Finding, LineBatch
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.base import Parser, ParsersConfig
from aisentinel.responders.runner import ResponderRunner

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class SourceCounters:
    """Lines a source delivered, and what the parser made of them."""

    lines: int = 0
    parsed: int = 0
    unparsed: int = 0


def _by_event(item: tuple[int, int, Finding]) -> tuple[int, int]:
    return item[0], item[1]


FindingHook = Callable[[Finding], None]
DecisionHook = Callable[[Decision], None]


class Pipeline:
    """Parsers -> detectors -> decisions -> responders for batches of lines."""

    def __init__(
        self,
        *,
        detectors: Iterable[Detector],
        engine: DecisionEngine,
        runner: ResponderRunner | None,
        clock: Clock,
        parser_clock: Clock | None = None,
        parsers_config: ParsersConfig | None = None,
        on_finding: FindingHook | None = None,
        on_decision: DecisionHook | None = None,
    ) -> None:
        self.detectors = list(detectors)
        self.engine = engine
        self.runner = runner
        self.clock = clock
        self.parser_clock = parser_clock or clock
        """What parsers read the current year from (syslog lines carry none)."""
        self.parsers_config = parsers_config or ParsersConfig()
        self.on_finding = on_finding
        self.on_decision = on_decision
        self.sources: dict[str, SourceCounters] = {}
        self.findings: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.latency = Histogram(
            "aisentinel_pipeline_latency_seconds",
            "Time from a log line being read to the decision taken on it.",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._parsers: dict[tuple[str, str], Parser] = {}
        self._dispatch: dict[frozenset[type], tuple[Detector, ...]] = {}
        """Detectors to run for a batch holding events of these types, in order."""
        self.reconfigure(
            detectors=self.detectors,
            engine=engine,
            runner=runner,
            parsers_config=self.parsers_config,
        )

    def parser_for(self, source: str, fmt: str) -> Parser:
        """The parser instance for one source (made once, it holds caches)."""
        key = (source, fmt)
        parser = self._parsers.get(key)
        if parser is None:
            ctx = ParserContext(
                source=source,
                clock=self.parser_clock,
                trusted_proxies=tuple(self.parsers_config.trusted_proxies),
            )
            parser = self._parsers[key] = build_parser(fmt, ctx)
        return parser

    def process(self, batch: LineBatch) -> None:
        """Run every line of ``batch`` through the stages.

        The batch is parsed first, then each detector consuming one of the event
        types present sees all of its events in one ``observe_many`` call. Findings
        are then handled in the order a line-by-line run would give: by event, and
        for one event in detector order.
        """
        counters = self.sources.get(batch.source)
        if counters is None:
            counters = self.sources[batch.source] = SourceCounters()
        parser = self.parser_for(batch.source, batch.parser)
        lines = batch.lines
        events = parser.parse_many(lines)
        counters.lines += len(lines)
        counters.parsed += len(events)
        counters.unparsed += len(lines) - len(events)
        if not events:
            return
        kinds = frozenset(map(type, events))
        detectors = self._dispatch.get(kinds)
        if detectors is None:
            detectors = self._dispatch[kinds] = tuple(
                d for d in self.detectors if any(issubclass(k, d.consumes) for k in kinds)
            )
        found: list[tuple[int, int, Finding]] = []
        for rank, detector in enumerate(detectors):
            for index, finding in detector.observe_many(events):
                found.append((index, rank, finding))
        if len(found) > 1:
            found.sort(key=_by_event)
        read_at = batch.read_at
        for _index, _rank, finding in found:
            self._handle(finding, read_at)

    def _handle(self, finding: Finding, read_at: float) -> None:
        self.findings[(finding.detector, finding.severity.label)] += 1
        if self.on_finding is not None:
            self.on_finding(finding)
        decision = self.engine.decide(finding)
        self.decisions[(decision.action.value, decision.detector)] += 1
        if self.runner is not None:
            self.runner.submit(decision)
        self.latency.observe(max(0.0, self.clock.monotonic() - read_at))
        if self.on_decision is not None:
            self.on_decision(decision)

    def expire(self, now: float) -> list[Decision]:
        """Drop idle detector keys and expired bans; expired bans are lifted by the runner."""
        for detector in self.detectors:
            detector.expire(now)
        expired = self.engine.expire(now)
        if self.runner is not None and expired:
            self.runner.submit_expired(expired)
        return expired

    def tracked_keys(self) -> Mapping[str, int]:
        """Keys held per detector (bounded by each detector's ``max_keys``)."""
        return {d.name: d.tracked_keys() for d in self.detectors}

    def reconfigure(
        self,
        *,
        detectors: Iterable[Detector],
        engine: DecisionEngine,
        runner: ResponderRunner | None,
        parsers_config: ParsersConfig,
    ) -> None:
        """Swap stages after a reload; counters and the latency histogram carry on."""
        self.detectors = list(detectors)
        self.engine = engine
        self.runner = runner
        if parsers_config != self.parsers_config:
            self.parsers_config = parsers_config
            self._parsers.clear()
        self._dispatch.clear()
