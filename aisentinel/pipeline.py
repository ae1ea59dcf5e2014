"""The processing core shared by the daemon and ``replay``.

``Pipeline.process(batch)`` runs every line of a :class:`LineBatch` through the
parser it names (an :class:`EventBatch` already holds events: no parsing), hands
each event to the detectors that consume its type, turns findings into decisions
and submits them to the responders. It is single-threaded by design: the daemon
calls it from one thread, fed by a queue that the sources fill. Counters live here
as plain integers and are read at scrape time by :meth:`Pipeline.collect` (no double
bookkeeping). The pipeline owns the state its detectors share
(:class:`~aisentinel.detectors.shared.SharedState`): it binds every set of detectors
it is given to that one state, so a reload keeps it for all.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

import structlog
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aisentinel.clock import Clock
from aisentinel.configtypes import DEFAULT_MAX_KEYS
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.detectors.base import Detector, Forgiven
from aisentinel.detectors.common import client_key, set_ipv6_key_prefix
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Action,
    AddressTarget,
    Batch,
    Decision,
    Event,
    EventBatch,
    Finding,
    SshEvent,
    SshKind,
)
from aisentinel.parsers import AUTO, build_parser
from aisentinel.parsers.base import (
    SETUP_PROBLEMS,
    Parser,
    ParsersConfig,
    RecentShare,
    SetupProblem,
)
from aisentinel.responders.runner import ResponderRunner
from aisentinel.sourceclock import SourceClock

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class SourceCounters:
    """Items (lines, or records of an event source) a source delivered, and how many
    gave an event (``parsed``) or none (``unparsed``)."""

    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    recognitions: dict[str, Recognition] = field(default_factory=dict, compare=False)
    """How much of a line source's recent lines each of its parsers recognises, per parser
    name (none until its first line batch, and none for a parser whose format cannot
    tell: see :meth:`~aisentinel.parsers.base.Parser.unrecognised`); a source whose format
    is sniffed per file (``parser = "auto"``) may use several, and its lines that no
    parser recognised are under :data:`~aisentinel.parsers.AUTO`. Not compared: the
    windows follow the batches, which the counts do not."""
    clock: SourceClock = field(default_factory=SourceClock, compare=False)
    """How far a line source's newest event times stand off the clock (a log read in the
    wrong zone); not compared, as the recognitions."""

    @property
    def recognition(self) -> Recognition | None:
        """The source's worst recognition window: a blind one first, then the one with
        the largest share of unrecognised lines (``None``: no window)."""
        worst: Recognition | None = None
        for recognition in self.recognitions.values():
            if worst is None or _worse(recognition, worst):
                worst = recognition
        return worst


def _worse(a: Recognition, b: Recognition) -> bool:
    """Whether window ``a`` tells of a blinder source than ``b``."""
    if a.blind != b.blind:
        return a.blind
    share_a, share_b = a.share(), b.share()
    if share_a is None or share_b is None:
        return share_b is None and share_a is not None
    return share_a > share_b


JOURNALD = "journald"
"""The recognition window of a journald source (:attr:`EventBatch.judged`): its entries
that are sshd's (or the kernel's, with ``kernel_xid``), which it can read."""
JOURNALD_HINT = (
    "a journald source reads sshd's entries (and the kernel's Xid lines with kernel_xid) "
    "only: check its matches; nginx must log to a file read by a file source"
)

RECOGNITION_WINDOW = 200
"""A source's recent lines: the batches holding its last this many lines at least."""
RECOGNITION_MIN = 50
"""Fewest recent lines a source is judged on (fewer: no share is told)."""
PARSER_IDLE_LINES = 1000
"""A parser of a source that has read none of the source's last this many lines (a file
of a ``parser = "auto"`` source sniffed as another format since) no longer tells the
source's problems (:meth:`Pipeline.source_problems`)."""
BLIND_SHARE = 0.9
"""A source is blind once this share of its recent lines is not of its format ..."""
SEEING_SHARE = 0.5
"""... and sees again once the share is at most this (no flapping in between)."""


@dataclass(slots=True)
class Recognition:
    """The share of a line source's recent lines that are not of its format at all.

    A source whose log is of another format than its parser (an nginx ``log_format``
    other than the one named) reads every line and parses none: nothing in it is seen,
    while the source itself is up. The share is kept over the batches holding the
    source's last :data:`RECOGNITION_WINDOW` lines (at least); the source is ``blind``
    once the share reaches :data:`BLIND_SHARE` over at least :data:`RECOGNITION_MIN`
    lines, and sees again once it is down to :data:`SEEING_SHARE`, so a log with some
    junk never flaps. Each parser of a source has its own window (a source whose files
    are sniffed apart may read several formats); a reload that changes the source starts
    them again (:meth:`Pipeline.judge_afresh`).
    """

    parser: str
    window: RecentShare = field(
        default_factory=lambda: RecentShare(
            RECOGNITION_WINDOW, RECOGNITION_MIN, BLIND_SHARE, SEEING_SHARE
        )
    )

    @property
    def lines(self) -> int:
        """The source's recent lines read by this parser."""
        return self.window.lines

    @property
    def unrecognised(self) -> int:
        """Of :attr:`lines`, those not of the format."""
        return self.window.hits

    @property
    def blind(self) -> bool:
        """Whether nearly all of the recent lines are not of the format."""
        return self.window.holds

    def add(self, lines: int, unrecognised: int) -> bool:
        """Count a batch of ``lines``, ``unrecognised`` of them not of the format; whether
        that changed :attr:`blind`."""
        return self.window.add(lines, unrecognised)

    def share(self) -> float | None:
        """The share of the recent lines not of the format (``None``: too few lines)."""
        return self.window.share()


def _alert_key(finding: Finding) -> str:
    """What an alert about ``finding`` is remembered under: its key, and its topic if any
    (the key object itself when there is none: nothing is allocated)."""
    return f"{finding.key}\x1f{finding.topic}" if finding.topic else finding.key


def _held_back(levels: dict[int, dict[str, float]], finding: Finding) -> bool:
    """Whether an alert of ``finding``'s detector at its severity or above, about its key
    and topic, still holds it back (``levels``: severity -> key -> until)."""
    key = _alert_key(finding)
    ts = finding.ts
    severity = int(finding.severity)
    return any(level >= severity and keys.get(key, _NEG_INF) > ts for level, keys in levels.items())


def _by_event(item: tuple[int, int, Finding]) -> tuple[int, int]:
    return item[0], item[1]


_ACCEPTED = SshKind.ACCEPTED


def _logins(events: Sequence[Event]) -> list[tuple[int, SshEvent]]:
    """sshd's logins (``Accepted ...``) among ``events``, with their index."""
    return [(i, e) for i, e in enumerate(events) if type(e) is SshEvent and e.kind is _ACCEPTED]


_NEG_INF = float("-inf")

QUIET_KEYS_MAX = DEFAULT_MAX_KEYS
"""Most quiet keys held per detector (each is a ban in force); beyond that, findings
about further keys go to the decision engine, whose "already banned" is one lookup."""

EXCERPT_CHARS = 200
"""Most characters of a line or event quoted in a log line about a fault."""


def _excerpt(item: object) -> str:
    """``item`` (a line, or an event's repr) cut to :data:`EXCERPT_CHARS`, escaped.

    Log text is attacker-controlled: ``repr`` escaping turns control characters,
    newlines and bidi overrides (not printable, so escaped as ``\\u202e``) into
    visible escapes, so an excerpt can neither forge a log line nor reorder one.
    An event's ``repr`` already escapes its text fields; whatever is left that is
    not printable is escaped the same way.
    """
    if isinstance(item, str):
        escaped = repr(item[:EXCERPT_CHARS])[1:-1]
        cut = len(item) > EXCERPT_CHARS or len(escaped) > EXCERPT_CHARS
    else:
        text = repr(item)
        cut = len(text) > EXCERPT_CHARS
        text = text[:EXCERPT_CHARS]
        escaped = text if text.isprintable() else "".join(_printable(c) for c in text)
        cut = cut or len(escaped) > EXCERPT_CHARS
    return escaped[: EXCERPT_CHARS - 3] + "..." if cut else escaped


def _printable(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]


def _failed_index(exc: BaseException, events: Sequence[Event]) -> int | None:
    """Index in ``events`` of the event a frame of ``exc``'s traceback was handling.

    The innermost frame holding one of the event objects (by identity) wins. Only
    called after a detector raised, so its cost never reaches the normal path.
    """
    where = {id(e): i for i, e in enumerate(events)}
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            i = where.get(id(value))
            if i is not None and events[i] is value:
                return i
    return None


FindingHook = Callable[[Finding], None]
_Family = Callable[[str, str], GaugeMetricFamily | CounterMetricFamily]
"""A metric family without labels, from its name and help text."""
DecisionHook = Callable[[Decision], None]


class Pipeline:
    """Parsers -> detectors -> decisions -> responders for batches of lines."""

    _clock_shift = 0.0
    """The engine's :attr:`~DecisionEngine.clock_shift` the alert hold-backs follow."""

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
        zones: Mapping[str, tzinfo] | None = None,
        watch_source_clocks: bool = True,
    ) -> None:
        self.detectors = list(detectors)
        self.shared = SharedState()
        """State the detectors share, kept for as long as the pipeline lives."""
        self.engine = engine
        set_ipv6_key_prefix(engine.config.ipv6_ban_prefix)  # detectors count what is banned
        self.runner = runner
        self.clock = clock
        # Whether a source whose log times stand off ``clock`` is flagged (clock_offset):
        # off in replay, whose clock is the log's own time.
        self.watch_source_clocks, self.parser_clock = watch_source_clocks, parser_clock or clock
        """What parsers read the current year from (syslog lines carry none)."""
        self.parsers_config = parsers_config or ParsersConfig()
        # Per source: the zone its local-time stamps are written in (its ``timezone``;
        # else the local zone), read when a parser is made (see set_zones).
        self.zones: dict[str, tzinfo] = dict(zones or {})
        self.on_finding, self.on_decision = on_finding, on_decision
        self.sources: dict[str, SourceCounters] = {}
        self.findings: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.event_errors: Counter[tuple[str, str]] = Counter()
        """Lines or events skipped because a stage raised on them, per (stage, plug-in):
        stage is parse, detect, decide, respond or output; plug-in is the parser or
        detector name, ``engine``, ``runner``, or the hook (``on_finding``/``on_decision``)."""
        self.quieted: Counter[str] = self.shared.quieted
        """Findings dropped per detector because their key is quiet (acted on already)."""
        self._quiet: dict[str, dict[str, float]] = self.shared.quiet
        """Per detector name: key -> until when no finding about it is handed on (the
        enforcement in force then, see :meth:`_hush`). Entries go at :meth:`expire`.
        Held in the shared state, so a detector can skip findings that would be dropped."""
        self._banned: dict[str, float] = self.shared.banned
        """Client address -> until when no finding about it, of any detector, is handed
        on (an enforcement in force covers it, see :meth:`_hush`)."""
        self._epoch = -1
        """The engine's :attr:`~DecisionEngine.epoch` the quiet keys were written under."""
        self._checked = False
        """Whether :meth:`_check_engine` has run (the detectors' quiet periods are ended
        on a change it sees, not at the first batch)."""
        self._alerted: dict[str, dict[int, dict[str, float]]] = self.shared.alerted
        """Per detector name, per alert severity: key (with its topic, see
        :func:`_alert_key`) -> until when findings about it at that severity or below are
        dropped (``alert_repeat``, see :meth:`_hold_back`). Entries go at :meth:`expire`."""
        self._braked: dict[str, dict[int, dict[str, float]]] = {}
        """The same for the alerts of the engaged ban brake (a minute at most), kept apart:
        they are all forgotten when the brake releases (see :meth:`_check_engine`)."""
        self._releases = -1
        """The engine's brake releases the brake hold-backs were written under."""
        self._policy = -1
        """The engine's :attr:`~DecisionEngine.policy` the alert hold-backs were written under."""
        self._forgiveness = -1
        """The engine's :attr:`~DecisionEngine.forgiveness` last seen: forgiven clients
        are taken (:meth:`DecisionEngine.forgiven`) when it moves."""
        self._last_until = 0.0
        """The newest alert's quiet-until, rounded up to the second (see :meth:`_hold_back`)."""
        self._faults_logged: set[tuple[str, str, str]] = set()
        """(stage, plug-in, exception type) already logged at error level."""
        self._problems_logged: set[tuple[str, str]] = set()
        """(parser, what) of a :meth:`Parser.problems` fault or unknown kind already logged."""
        self.latency = Histogram(
            "aisentinel_pipeline_latency_seconds",
            "Time from a log line being read to the decision taken on it.",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._parsers: dict[tuple[str, str], Parser] = {}
        self._read_upto: dict[tuple[str, str], int] = {}
        """Per parser of :attr:`_parsers`: its source's :attr:`SourceCounters.lines` after
        the parser's latest batch."""
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
            zone = self.zones.get(source)
            ctx = self.parsers_config.context(source, fmt, self.parser_clock, zone)
            parser = self._parsers[key] = build_parser(fmt, ctx)
        return parser

    def process(self, batch: Batch) -> None:
        """Run every line or event of ``batch`` through the stages.

        A :class:`LineBatch` is parsed first by the parser it names; an
        :class:`EventBatch` holds events already. Then each detector consuming one of the event
        types present sees all of its events in one ``observe_many`` call. Findings
        are then handled in the order a line-by-line run would give: by event, and
        for one event in detector order.

        An exception raised by a stage for one line or event never leaves this
        method: that line or event is skipped for that stage (see :meth:`_parse_each`,
        :meth:`_observe_rest` and :meth:`_handle`), the rest of the batch carries on, and
        the fault is counted in :attr:`event_errors`.
        """
        engine = self.engine
        if (
            engine.epoch != self._epoch
            or engine.policy != self._policy
            or engine.brake_releases() != self._releases
            or engine.forgiveness != self._forgiveness
            or engine.clock_shift != self._clock_shift
        ):
            self._check_engine()
        counters = self.sources.get(batch.source)
        if counters is None:
            counters = self.sources[batch.source] = SourceCounters()
        events: Sequence[Event]
        if isinstance(batch, EventBatch):
            events = batch.events
            counters.lines += len(events) + batch.unparsed
            counters.parsed += len(events)
            counters.unparsed += batch.unparsed
            read = len(events) + batch.unparsed
            if batch.judged:  # records of a source that tells which it can read
                self._judge(
                    counters, batch.source, batch.judged, read, min(read, batch.unrecognised)
                )
            elif batch.unrecognised:  # lines of a file whose format could not be told
                self._judge(counters, batch.source, AUTO, read, min(read, batch.unrecognised))
        else:
            parser = self.parser_for(batch.source, batch.parser)
            parser.begin(batch.origin)
            lines = batch.lines
            try:
                events = parser.parse_many(lines)
            except Exception as exc:  # noqa: BLE001 - one bad line must not stop the daemon
                events = self._parse_each(parser, lines, batch.source, exc)
            counters.lines += len(lines)
            counters.parsed += len(events)
            counters.unparsed += len(lines) - len(events)
            self._read_upto[batch.source, batch.parser] = counters.lines
            # getattr: a plug-in parser whose __init__ skips Parser.__init__ has none.
            if getattr(parser, "notices", None):
                for message, fields in parser.take_notices():
                    log.warning(message, source=batch.source, parser=parser.name, **fields)
            self._recognise(counters, batch.source, parser, lines, len(events))
            if (
                events
                and self.watch_source_clocks
                and counters.clock.observe(events[-1].ts, self.clock.now())
            ):
                log.warning(
                    "log times stand off the clock",
                    source=batch.source,
                    offset_seconds=round(counters.clock.offset or 0.0),
                    hint=counters.clock.advice(time.localtime().tm_gmtoff),
                )
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
            try:
                results = detector.observe_many(events)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the daemon
                results = self._observe_rest(detector, events, batch.source, exc)
            for index, finding in results:
                found.append((index, rank, finding))
        logins = _logins(events) if SshEvent in kinds else None
        if found or logins:
            self._decide_found(found, batch.read_at, batch.source, logins)

    def _recognise(
        self,
        counters: SourceCounters,
        source: str,
        parser: Parser,
        lines: Sequence[str],
        parsed: int,
    ) -> None:
        """Count how much of a batch ``parser`` recognised (see :meth:`_judge`)."""
        if not lines:
            return
        try:
            unrecognised = parser.unrecognised(lines, parsed)
        except Exception as exc:  # noqa: BLE001 - a plug-in fault must not stop the daemon
            self._fault("parse", parser.name, source, exc, None)
            return
        count = len(lines)
        if unrecognised is None:
            counters.recognitions.pop(parser.name, None)
        else:
            unrecognised = min(count, max(0, unrecognised))
            self._judge(counters, source, parser.name, count, unrecognised)
        if AUTO in counters.recognitions:  # the lines of a sniffed file: read by a parser
            self._judge(counters, source, AUTO, count, unrecognised or 0)

    def _judge(
        self, counters: SourceCounters, source: str, parser: str, lines: int, unrecognised: int
    ) -> None:
        """Count ``lines`` read by ``parser``, ``unrecognised`` of them not of its format,
        in that parser's window (:data:`AUTO`: a ``parser = "auto"`` source's window of its
        lines no format was told for, and of those read since); log once when the source
        goes blind (its lines are nearly all of another format) and once when it sees
        again (no window of it is blind)."""
        recognitions = counters.recognitions
        recognition = recognitions.get(parser)
        if recognition is None:
            recognition = recognitions[parser] = Recognition(parser)
        if not recognition.add(lines, unrecognised):
            return
        if len(recognitions) > 1 and any(
            r.blind for r in recognitions.values() if r is not recognition
        ):
            return  # blind already, and still
        fields = {
            "source": source,
            "parser": parser,
            "unrecognised_share": round(recognition.share() or 0.0, 3),
            "lines": recognition.lines,
        }
        if recognition.blind:
            log.warning(
                "source is blind: its lines are not of its format",
                **fields,
                hint=JOURNALD_HINT
                if parser == JOURNALD
                else "name the log's format (parser = ...) or log in one aisentinel reads: "
                "`aisentinel explain --file LOG` shows what it makes of a line; "
                "docs/nginx-log-format.md",
            )
        else:
            log.warning("source sees again: its lines are of its format", **fields)

    def _decide_found(
        self,
        found: list[tuple[int, int, Finding]],
        read_at: float,
        source: str,
        logins: list[tuple[int, SshEvent]] | None = None,
    ) -> None:
        """Hand the findings of one batch on in line order, then detector order; those
        about a key that is quiet (a ban in force, a recent alert) are dropped. sshd's
        logins (``logins``: index, event) go to the engine in the same line order, each
        before the findings of its line: a logged-in SSH client is never banned."""
        if len(found) > 1:
            found.sort(key=_by_event)
        pending = logins or []
        told = 0
        quiet = self._quiet
        banned = self._banned
        alerted = self._alerted
        braked = self._braked
        engine = self.engine
        engine.hold()
        try:
            for index, _rank, finding in found:
                while told < len(pending) and pending[told][0] <= index:
                    self._login(pending[told][1], source)
                    told += 1
                if banned and finding.target is None:
                    client = finding.client
                    if client is not None and banned.get(client, _NEG_INF) > finding.ts:
                        self.quieted[finding.detector] += 1
                        continue
                if quiet:
                    hush = quiet.get(finding.detector)
                    if hush and hush.get(finding.key, _NEG_INF) > finding.ts:
                        self.quieted[finding.detector] += 1
                        continue
                if alerted:
                    levels = alerted.get(finding.detector)
                    if levels and _held_back(levels, finding):
                        self.quieted[finding.detector] += 1
                        continue
                if braked:
                    levels = braked.get(finding.detector)
                    if levels and _held_back(levels, finding):
                        self.quieted[finding.detector] += 1
                        continue
                self._handle(finding, read_at, source)
            for _index, event in pending[told:]:
                self._login(event, source)
        finally:
            engine.commit()

    def _login(self, event: SshEvent, source: str) -> None:
        try:
            self.engine.ssh_login(event.client, event.port, event.ts)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the daemon
            self._fault("decide", "engine", source, exc, event)

    # ------------------------------------------------------------ containment

    def _parse_each(
        self, parser: Parser, lines: Sequence[str], source: str, first: Exception
    ) -> list[Event]:
        """The batch parsed line by line after ``parse_many`` raised ``first``.

        Parsing the lines again changes nothing: a parser keeps no state from line to
        line, or, if it does (``container`` joins a line split over several records),
        leaves it as it was before a ``parse_many`` that raised (see
        :meth:`~aisentinel.parsers.base.Parser.parse_many`). Each line whose ``parse``
        raises is skipped (counted as unparsed by the caller).
        """
        events: list[Event] = []
        append = events.append
        parse = parser.parse
        failed = False
        for line in lines:
            try:
                event = parse(line)
            except Exception as exc:  # noqa: BLE001
                failed = True
                self._fault("parse", parser.name, source, exc, line)
                continue
            if event is not None:
                append(event)
        if not failed:  # parse_many raised on a batch that parse() reads cleanly
            self._fault("parse", parser.name, source, first, None)
        return events

    def _observe_rest(
        self, detector: Detector, events: Sequence[Event], source: str, exc: Exception
    ) -> list[tuple[int, Finding]]:
        """Findings for the events a detector had not reached when it raised ``exc``.

        ``observe_many`` is not transactional: the events it saw before the one that
        raised are already in its windows. So the failing event is looked for in the
        exception's traceback (a frame of the detector holding that event object);
        when found, it is skipped and ``observe_many`` goes on with the events after
        it, so nothing is counted twice. The findings the detector had made for
        earlier events of the batch are lost with the call that raised. When no frame
        holds an event (the detector works on whole columns), every event of the
        batch is observed again one at a time, skipping those that raise: the events
        before the poison are then counted twice by that one detector, in that batch.
        """
        out: list[tuple[int, Finding]] = []
        start = 0
        while True:
            rest = events[start:] if start else events
            at = _failed_index(exc, rest)
            if at is None:
                out.extend(self._observe_each(detector, rest, start, source, exc))
                return out
            self._fault("detect", detector.name, source, exc, rest[at])
            start += at + 1
            if start >= len(events):
                return out
            try:
                found = detector.observe_many(events[start:])
            except Exception as again:  # noqa: BLE001
                exc = again
                continue
            out.extend((start + i, f) for i, f in found)
            return out

    def _observe_each(
        self,
        detector: Detector,
        events: Sequence[Event],
        offset: int,
        source: str,
        first: Exception,
    ) -> list[tuple[int, Finding]]:
        """``events`` observed one at a time, skipping (and counting) those that raise;
        ``first`` is counted when none does."""
        out: list[tuple[int, Finding]] = []
        failed = False
        for i, event in enumerate(events):
            try:
                found = detector.observe_many((event,))
            except Exception as exc:  # noqa: BLE001
                failed = True
                self._fault("detect", detector.name, source, exc, event)
                continue
            out.extend((offset + i, f) for _, f in found)
        if not failed:
            self._fault("detect", detector.name, source, first, None)
        return out

    def _fault(self, stage: str, plugin: str, source: str, exc: Exception, item: object) -> None:
        """Count a contained failure; log the first of each kind at error level."""
        self.event_errors[(stage, plugin)] += 1
        kind = (stage, plugin, type(exc).__name__)
        fields = {
            "stage": stage,
            "plugin": plugin,
            "source": source,
            "error": f"{type(exc).__name__}: {_excerpt(str(exc))}",
            "excerpt": "" if item is None else _excerpt(item),
        }
        if kind in self._faults_logged:
            log.debug("pipeline fault contained", **fields)
            return
        self._faults_logged.add(kind)
        log.error(  # one clear line, never a traceback
            "pipeline fault contained; the line or event is skipped and counted", **fields
        )

    def _handle(self, finding: Finding, read_at: float, source: str) -> None:
        self.findings[(finding.detector, finding.severity.label)] += 1
        if self.on_finding is not None:
            try:
                self.on_finding(finding)
            except Exception as exc:  # noqa: BLE001
                self._fault("output", "on_finding", source, exc, finding)
        try:
            decision = self.engine.decide(finding)
        except Exception as exc:  # noqa: BLE001
            self._fault("decide", "engine", source, exc, finding)
            return
        self.decisions[(decision.action.value, decision.detector)] += 1
        shift = self.engine.clock_shift
        if shift != self._clock_shift:  # a step in the batch: move the hold-backs before it
            self._shift_hold_backs(shift - self._clock_shift)  # (not the one made now)
            self._clock_shift = shift
        if decision.quiet_until is not None:
            if decision.action is Action.ALERT:
                into = self._braked if decision.braked else self._alerted
                self._hold_back(finding, decision.quiet_until, into)
            else:
                self._hush(finding, decision.quiet_until)
        if self.runner is not None:
            try:
                self.runner.submit(decision)
            except Exception as exc:  # noqa: BLE001
                self._fault("respond", "runner", source, exc, decision)
        self.latency.observe(max(0.0, self.clock.monotonic() - read_at))
        if self.on_decision is not None:
            try:
                self.on_decision(decision)
            except Exception as exc:  # noqa: BLE001
                self._fault("output", "on_decision", source, exc, decision)

    def _hush(self, finding: Finding, until: float) -> None:
        """No finding about what ``finding`` is about is handed on before ``until``.

        Called once per decision that leaves an enforcement in force (a ban, or
        "already banned" by an earlier ban). A finding about a client address (no
        target of its own) quiets that address for every detector: the engine would
        answer each of them "already banned", whatever the detector. Any other quiets
        the finding's key for its detector. So a storm from one address makes one
        finding per ban, not one per window, per line or per detector. Detectors are
        not told: their windows keep counting the key (a crossing after the ban reports
        the events since the previous one), and the dropped findings are counted in
        :attr:`quieted`. Checked when the findings of a batch are handled in line
        order, after the decisions before them, so a batch gives what a line-by-line
        run gives. Forgotten when an enforcement ends early (:meth:`_check_engine`).
        """
        if finding.target is None and finding.client is not None:
            banned = self._banned
            if len(banned) >= QUIET_KEYS_MAX:
                self._banned = self.shared.banned = banned = {
                    k: t for k, t in banned.items() if t > finding.ts
                }
                if len(banned) >= QUIET_KEYS_MAX:
                    return  # full of bans in force: the engine's one lookup answers the rest
            banned[finding.client] = until
            return
        name = finding.detector
        keys = self._quiet.get(name)
        if keys is None:
            keys = self._quiet[name] = {}
        elif len(keys) >= QUIET_KEYS_MAX:
            self._quiet[name] = keys = {k: t for k, t in keys.items() if t > finding.ts}
            if len(keys) >= QUIET_KEYS_MAX:
                return  # full of bans in force: the engine's one lookup answers the rest
        keys[finding.key] = until

    def _hold_back(
        self, finding: Finding, until: float, into: dict[str, dict[int, dict[str, float]]]
    ) -> None:
        """After an alert: no finding of ``finding``'s detector about its key and topic at
        its severity or below is handed on before ``until`` (``alert_repeat``), so an attacker
        who is not banned (below ``ban_severity``, an alert-only detector, no single
        address) makes one alert per ``alert_repeat``, not one per window. A more
        severe finding goes through (and may be a ban). Counted in :attr:`quieted`.
        ``into``: :attr:`_alerted`, or :attr:`_braked` for an alert of the ban brake.

        ``until`` is held rounded up to the whole second, and the alerts of one second
        share one float object: a storm's alerts about 28,000 addresses (braked bans,
        each held back for a minute) hold 28,000 floats less (0.65 MB)."""
        up = float(math.ceil(until)) if math.isfinite(until) else until
        if up == self._last_until:
            until = self._last_until
        else:
            until = self._last_until = up
        levels = into.get(finding.detector)
        if levels is None:
            levels = into[finding.detector] = {}
        level = int(finding.severity)
        keys = levels.get(level)
        if keys is None:
            keys = levels[level] = {}
        elif len(keys) >= QUIET_KEYS_MAX:
            levels[level] = keys = {k: t for k, t in keys.items() if t > finding.ts}
            if len(keys) >= QUIET_KEYS_MAX:
                return  # every key alerted on lately: the next alert goes through
        keys[_alert_key(finding)] = until

    def _check_engine(self) -> None:
        """What the engine told since the last batch that the quiet keys and hold-backs
        must follow.

        An enforcement ended before its time (an unban, a reload that drops simulated
        bans, an allowlist change): the quiet keys may hold it, so they all go. The next
        finding about a key still banned is answered "already banned" by the engine and
        quiets it again; one about a key no longer banned is decided afresh, at once
        rather than when the lifted ban would have ended.

        The ban brake released (``aisentinel brake reset``, or calm): the keys its alerts
        held back are let through, so their next finding is a ban at once rather than up
        to a minute later. The hold-backs of ordinary alerts (``alert_repeat``) stay.

        A reload changed the ``[decisions]`` table (say ``ban_severity`` lowered, a detector
        taken off ``alert_only_detectors``): every alert hold-back goes, so the next
        finding about a key alerted on is decided under the new table at once, not up to
        ``alert_repeat`` later (at worst one alert more per key held back).

        The engine followed a step back of the wall clock (:attr:`DecisionEngine.clock_shift`
        moved): the alert hold-backs move by as much (:meth:`_shift_hold_backs`); the quiet
        keys went with the epoch the step moved too.

        In each case the detectors' own quiet periods end too (:meth:`Detector.unquiet`):
        a detector reports a key once per window, and a key whose decision ended early
        would otherwise be reported again only when that window ends.

        An operator forgave addresses or networks (``unban``, ``allow``): first the
        detectors forget what they counted of them (:meth:`Detector.forget`), so that
        ending the quiet periods does not re-ban a forgiven client on the evidence its
        unban forgave (a window still full, a distributed attack's member list).
        """
        engine = self.engine
        self._forgiveness = engine.forgiveness
        forgiven = engine.forgiven()
        if forgiven:
            self._forget(Forgiven(forgiven))
        unquiet = False
        if engine.epoch != self._epoch:
            self._epoch = engine.epoch
            self._banned.clear()
            self._quiet.clear()
            unquiet = True
        releases = engine.brake_releases()
        if releases != self._releases:
            self._releases = releases
            self._braked.clear()
            unquiet = True
        if engine.policy != self._policy:
            self._policy = engine.policy
            self._alerted.clear()
            self._braked.clear()
            unquiet = True
        if engine.clock_shift != self._clock_shift:
            self._shift_hold_backs(engine.clock_shift - self._clock_shift)
            self._clock_shift = engine.clock_shift
        if unquiet and self._checked:  # (nothing is quiet before the first batch)
            for detector in self.detectors:
                try:
                    detector.unquiet()
                except Exception as exc:  # noqa: BLE001 - a plug-in fault must not stop the daemon
                    self._fault("detect", detector.name, "", exc, None)
        self._checked = True

    def _shift_hold_backs(self, seconds: float) -> None:
        """Move every alert hold-back's "until" by ``seconds``: the engine moved its
        expiries so (the wall clock stepped back), and the findings' times, read from logs
        the new clock stamps, moved with them. Without it a step back of a day would hold
        an attacker's alerts back for ``alert_repeat`` plus a day."""
        for held in (self._alerted, self._braked):
            for levels in held.values():
                for level, keys in list(levels.items()):
                    levels[level] = {k: t + seconds for k, t in keys.items()}

    def _forget(self, forgiven: Forgiven) -> None:
        """Have every detector forget what it counted of the clients ``forgiven`` accepts."""
        for detector in self.detectors:
            try:
                detector.forget(forgiven)
            except Exception as exc:  # noqa: BLE001 - a plug-in fault must not stop the daemon
                self._fault("detect", detector.name, "", exc, None)
        log.info(
            "detectors forgot forgiven clients",
            targets=[t.text for t in forgiven.targets][:10],
            count=len(forgiven.targets),
        )

    def expire(self, now: float) -> list[Decision]:
        """Drop idle detector keys and expired bans; expired bans are lifted by the runner."""
        for detector in self.detectors:
            detector.expire(now)
        self._banned = self.shared.banned = {k: t for k, t in self._banned.items() if t > now}
        for name, keys in list(self._quiet.items()):
            live = {k: t for k, t in keys.items() if t > now}
            if live:
                self._quiet[name] = live
            else:
                del self._quiet[name]
        for held in (self._alerted, self._braked):
            for name, levels in list(held.items()):
                for level, keys in list(levels.items()):
                    still = {k: t for k, t in keys.items() if t > now}
                    if still:
                        levels[level] = still
                    else:
                        del levels[level]
                if not levels:
                    del held[name]
        self.shared.expire(now)
        expired = self.engine.expire(now)
        if expired:
            self._bans_ended(expired)
        if self.runner is not None and expired:
            self.runner.submit_expired(expired)
        return expired

    def _bans_ended(self, ended: Sequence[Decision]) -> None:
        """Tell the detectors which clients' bans ended (:meth:`Detector.bans_ended`, one
        call per detector for the whole wave): the key each counts a banned address, or
        network, under."""
        keys = sorted(
            {
                client_key(d.target.text) if d.target.is_host else d.target.text
                for d in ended
                if isinstance(d.target, AddressTarget)
            }
        )
        if not keys:
            return
        for detector in self.detectors:
            try:
                detector.bans_ended(keys)
            except Exception as exc:  # noqa: BLE001 - a plug-in fault must not stop the daemon
                self._fault("detect", detector.name, "", exc, None)

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
        """Swap stages after a reload; counters, the latency histogram and the state the
        detectors share carry on (the new set of detectors is bound to it)."""
        self.detectors = list(detectors)
        # Which credentials in the log count (a reload keeps what was learned).
        self.shared.requests.trust.mode = parsers_config.credentials
        self.shared.bind(self.detectors)
        if engine is not self.engine:
            # another engine: hold-backs go, and its forgiven clients are taken, at the next batch
            self._releases = self._policy = self._forgiveness = -1
            self._clock_shift = engine.clock_shift  # (its hold-backs go all the same)
        self.engine = engine
        set_ipv6_key_prefix(engine.config.ipv6_ban_prefix)
        self._epoch = -1  # the quiet keys are forgotten at the next batch
        self.runner = runner
        if parsers_config != self.parsers_config:
            self.parsers_config = parsers_config
            self._parsers.clear()
            self._read_upto.clear()
        self._dispatch.clear()

    def source_problems(self, source: str) -> list[SetupProblem]:
        """What the parsers of ``source`` see wrong now with its setup
        (:meth:`~aisentinel.parsers.base.Parser.problems`), for ``aisentinel status`` and
        ``aisentinel_source_setup_problem``; not those of a parser that read none of the
        source's last :data:`PARSER_IDLE_LINES` lines (another format read since). Called
        from the control and exporter threads: the parsers are read from a copy of the
        table. A parser whose ``problems()`` raises, or gives something other than a
        :class:`SetupProblem` of a kind of :data:`SETUP_PROBLEMS` (a plug-in), is logged
        once and that is left out: the ``problem`` label stays bounded, and the other
        sources and metrics are unharmed."""
        out: list[SetupProblem] = []
        counters = self.sources.get(source)
        if counters is None:  # not (or no longer) a source: its parsers saw nothing now
            return out
        latest = counters.lines
        for key, parser in list(self._parsers.items()):
            if key[0] != source or latest - self._read_upto.get(key, latest) > PARSER_IDLE_LINES:
                continue
            try:
                found = list(parser.problems())
            except Exception as exc:  # noqa: BLE001 - a plug-in must not stop the scrape
                self._problem_ignored(source, key[1], f"raised {type(exc).__name__}", exc)
                continue
            for problem in found:
                if not isinstance(problem, SetupProblem) or problem.kind not in SETUP_PROBLEMS:
                    kind = getattr(problem, "kind", None)
                    what = f"kind {kind!r}" if isinstance(kind, str) else type(problem).__name__
                    self._problem_ignored(source, key[1], what, problem)
                elif problem not in out:
                    out.append(problem)
        if counters.clock.flagged:
            text = counters.clock.advice(time.localtime().tm_gmtoff)
            out.append(SetupProblem("clock_offset", text))
        return out

    def _problem_ignored(self, source: str, parser: str, what: str, item: object) -> None:
        """Log, once per parser and ``what``, a setup problem left out (see
        :meth:`source_problems`)."""
        if (parser, what) in self._problems_logged:
            return
        self._problems_logged.add((parser, what))
        log.error(
            "parser setup problem ignored: not a SetupProblem of a known kind",
            source=source,
            parser=parser,
            what=what,
            known=list(SETUP_PROBLEMS),
            excerpt=_excerpt(item),
        )

    def set_zones(self, zones: Mapping[str, tzinfo]) -> None:
        """Take the zones the sources' local-time stamps are written in (their
        ``timezone``, after a reload): the parsers of a source whose zone changed go, and
        its next lines are read in the new zone."""
        for source in set(self.zones) | set(zones):
            if self.zones.get(source) != zones.get(source):
                for key in [key for key in self._parsers if key[0] == source]:
                    del self._parsers[key]
                    self._read_upto.pop(key, None)
        self.zones = dict(zones)

    def judge_afresh(self, source: str) -> None:
        """Forget how much of ``source``'s recent lines were recognised, and its parsers
        with what they saw (a reload changed the source: its parser or files): it is
        judged again from its next lines, and a problem its old parser saw
        (:meth:`source_problems`) goes with that parser."""
        counters = self.sources.get(source)
        if counters is not None:
            counters.recognitions.clear()
        for key in [key for key in self._parsers if key[0] == source]:
            del self._parsers[key]
            self._read_upto.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        """The pipeline's metric families (per source, detector and stage), at scrape time."""
        parsed = CounterMetricFamily(
            "aisentinel_source_lines_parsed",
            "Lines or records turned into events.",
            labels=["source"],
        )
        unparsed = CounterMetricFamily(
            "aisentinel_source_lines_unparsed",
            "Lines or records that gave no event (malformed or irrelevant); counted and skipped.",
            labels=["source"],
        )
        blind = GaugeMetricFamily(
            "aisentinel_source_blind",
            "1 while nearly all of the source's recent lines are not of its format (its log "
            "is read but nothing in it is seen), else 0.",
            labels=["source"],
        )
        share = GaugeMetricFamily(
            "aisentinel_source_unrecognised_ratio",
            "Share of the source's recent lines (its last 200 at least) that are not of its "
            "format; once 50 lines of a format that can tell were read.",
            labels=["source"],
        )
        for name, c in sorted(self.sources.items()):
            parsed.add_metric([name], c.parsed)
            unparsed.add_metric([name], c.unparsed)
            recognition = c.recognition
            blind.add_metric([name], 1.0 if recognition is not None and recognition.blind else 0.0)
            ratio = recognition.share() if recognition is not None else None
            if ratio is not None:
                share.add_metric([name], ratio)
        yield from (parsed, unparsed, blind, share)
        setup = GaugeMetricFamily(
            "aisentinel_source_setup_problem",
            "1 while the source's parser sees, in its recent lines, a setup that hides what "
            "it must see, per problem (untrusted_local_proxy: every client is a proxy on "
            "this host that is not trusted, so no client is banned or alerted on; "
            "clock_offset: its log times stand 15 minutes or more off the clock, steadily, "
            "so detector windows expire its events), else 0; "
            "for each source read by a line parser.",
            labels=["source", "problem"],
        )
        offset = GaugeMetricFamily(
            "aisentinel_source_clock_offset_seconds",
            "The newest event time of the source's latest batch minus the clock when it "
            "was handled (negative: behind); hours off for a log written in another zone "
            "than it is read in; for each line source once a batch gave events.",
            labels=["source"],
        )
        read = {source for source, _parser in list(self._read_upto)}
        for name in sorted(read.intersection(list(self.sources))):
            found = {problem.kind for problem in self.source_problems(name)}
            for kind in sorted(found | set(SETUP_PROBLEMS)):
                setup.add_metric([name, kind], 1.0 if kind in found else 0.0)
            seconds = self.sources[name].clock.offset
            if seconds is not None:
                offset.add_metric([name], seconds)
        yield setup
        yield offset
        findings = CounterMetricFamily(
            "aisentinel_findings",
            "Findings raised, per detector and severity.",
            labels=["detector", "severity"],
        )
        for (detector, severity), n in sorted(self.findings.items()):
            findings.add_metric([detector, severity], n)
        yield findings
        decisions = CounterMetricFamily(
            "aisentinel_decisions",
            "Decisions taken, per action (ban, alert, none) and detector.",
            labels=["action", "detector"],
        )
        for (action, detector), n in sorted(self.decisions.items()):
            decisions.add_metric([action, detector], n)
        yield decisions
        errors = CounterMetricFamily(
            "aisentinel_pipeline_event_errors",
            "Lines or events skipped because a stage raised on them, per stage (parse, detect, "
            "decide, respond, output) and plug-in (parser, detector, engine, runner or hook).",
            labels=["stage", "plugin"],
        )
        for (stage, plugin), n in sorted(self.event_errors.items()):
            errors.add_metric([stage, plugin], n)
        yield errors
        quieted = CounterMetricFamily(
            "aisentinel_findings_quieted",
            "Findings not handed on because what they are about is acted on already (a ban "
            "in force covers their address, or their key for findings about no single "
            "address), per detector.",
            labels=["detector"],
        )
        for detector, n in sorted(self.quieted.items()):
            quieted.add_metric([detector], n)
        yield quieted
        requests = self.shared.requests
        trust = requests.trust
        shared: tuple[tuple[_Family, str, str, float], ...] = (
            (
                GaugeMetricFamily,
                "aisentinel_detector_shared_authenticated_clients",
                "Clients held as having authenticated lately, shared by the detectors that "
                "read it.",
                requests.authenticated(),
            ),
            (
                CounterMetricFamily,
                "aisentinel_detector_shared_authenticated_clients_evictions",
                "Authenticated clients dropped from the full shared set (its cap is the "
                "largest max_keys of the detectors reading it).",
                requests.evicted(),
            ),
            (
                CounterMetricFamily,
                "aisentinel_detector_shared_doubted_credentials",
                "Requests whose user or API key id in the log did not count as an "
                "authentication: sent to a location that answered 2xx to requests without "
                "credentials and no 401, or a model-management call where model calls were "
                "answered without credentials and none refused ([parsers] credentials).",
                trust.doubted,
            ),
            (
                GaugeMetricFamily,
                "aisentinel_detector_shared_credential_locations",
                "Locations (first path segment, and virtual host with it) held with "
                "evidence of whether credentials are checked there.",
                trust.locations(),
            ),
        )
        for family, name, text, value in shared:
            metric = family(name, text)
            metric.add_metric([], value)
            yield metric
