"""``aisentinel replay``: the live pipeline run offline over log files.

Like ``fail2ban-regex``, it answers "what would aisentinel have done with this log?":
the same parsers, detectors and decision engine as the daemon, with time taken from
the log lines, a throw-away ledger and no responder. Output is readable text or JSON
Lines (one object per finding and per decision, then one summary object).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from aisentinel.clock import EventClock, SystemClock
from aisentinel.config import Config
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import MEMORY, Ledger
from aisentinel.detectors import build_detectors
from aisentinel.events import Decision, Finding, LineBatch, decision_fields, finding_fields
from aisentinel.parsers import sniff
from aisentinel.pipeline import Pipeline
from aisentinel.textsafe import escape

FORMATS = ("nginx", "nginx-json", "nginx-error", "sshd", "auto")
BATCH_LINES = 8192
CHUNK_BYTES = 4 << 20
SNIFF_LINES = 64


def iso(ts: float) -> str:
    """RFC 3339 UTC text for an epoch timestamp."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return path.open("rb")


def read_lines(path: Path, batch_lines: int = BATCH_LINES) -> Iterator[list[str]]:
    """Lines of ``path`` (plain or .gz) in batches, newline and CR stripped, bad UTF-8 replaced."""
    rest = b""
    with _open(path) as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            body = data[:cut]
            if b"\r" in body:  # CRLF logs are rare: strip only when there is one
                body = body.replace(b"\r\n", b"\n").removesuffix(b"\r")
            lines = body.decode("utf-8", "replace").split("\n")
            for i in range(0, len(lines), batch_lines):
                yield lines[i : i + batch_lines]
    if rest:
        text = rest.decode("utf-8", "replace")
        yield [text.removesuffix("\r")]


def detect_format(path: Path) -> str:
    """The parser name for ``path`` from its first lines; ``ValueError`` if none fits."""
    sample: list[str] = []
    for batch in read_lines(path, SNIFF_LINES):
        sample.extend(batch)
        if len(sample) >= SNIFF_LINES:
            break
    return sniff(sample[:SNIFF_LINES])


@dataclass
class FileSummary:
    """Per-file counts."""

    path: str
    format: str
    lines: int = 0
    parsed: int = 0
    unparsed: int = 0


@dataclass
class ReplaySummary:
    """Totals of one replay run."""

    files: list[FileSummary] = field(default_factory=list)
    findings: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary object."""
        lines = sum(f.lines for f in self.files)
        return {
            "type": "summary",
            "kind": "summary",
            "lines_read": lines,
            "parsed": sum(f.parsed for f in self.files),
            "unparsed": sum(f.unparsed for f in self.files),
            "findings": dict(sorted(self.findings.items())),
            "decisions": dict(sorted(self.decisions.items())),
            "files": [vars(f) for f in self.files],
            "elapsed_seconds": round(self.seconds, 3),
            "lines_per_second": round(lines / self.seconds) if self.seconds > 0 else None,
        }


def finding_line(finding: Finding) -> str:
    """A finding as one line of text output; log-derived text is escaped (textsafe)."""
    return (
        f"finding  {iso(finding.ts)} {escape(finding.detector)} {finding.severity.label} "
        f"{escape(finding.client or finding.key)} count={finding.count}: "
        f"{escape(finding.message)}\n"
    )


def decision_line(decision: Decision) -> str:
    """A decision as one line of text output; log-derived text is escaped (textsafe)."""
    target = escape(decision.target or "-")
    ttl = f" ttl={int(decision.ttl)}s" if decision.ttl else ""
    return (
        f"decision {iso(decision.ts)} {decision.action.value} {target}{ttl} "
        f"offence={decision.offence} ({escape(decision.detector)}): {escape(decision.reason)}\n"
    )


class _Printer:
    """Writes findings and decisions as they happen, as text or JSON Lines."""

    def __init__(self, out: TextIO, as_json: bool, clock: EventClock) -> None:
        self.out = out
        self.as_json = as_json
        self.clock = clock
        self.pending: Finding | None = None

    def finding(self, finding: Finding) -> None:
        self.clock.set(finding.ts)
        self.pending = finding

    def decision(self, decision: Decision) -> None:
        finding = self.pending
        self.pending = None
        if self.as_json:
            if finding is not None:
                obj: dict[str, Any] = {"type": "finding", "kind": "finding"}
                obj["time"] = iso(finding.ts)
                obj.update(finding_fields(finding))
                obj["source_address"] = finding.client
                obj["evidence_count"] = finding.count
                obj["action"] = decision.action.value
                self.out.write(json.dumps(obj) + "\n")
            obj = {"type": "decision", "kind": "decision", "time": iso(decision.ts)}
            obj.update(decision_fields(decision))
            obj["source_address"] = decision.target
            self.out.write(json.dumps(obj) + "\n")
            return
        if finding is not None:
            self.out.write(finding_line(finding))
        self.out.write(decision_line(decision))


def replay(
    files: Sequence[tuple[Path, str]], config: Config, out: TextIO, *, as_json: bool = False
) -> ReplaySummary:
    """Replay ``(path, parser name)`` pairs through the pipeline, in order, writing
    findings and decisions to ``out`` (see :func:`detect_format` for ``--format auto``)."""
    clock = EventClock()
    printer = _Printer(out, as_json, clock)
    summary = ReplaySummary()
    started = time.perf_counter()
    ledger = Ledger(Path(MEMORY), clock)  # throw-away: replay enforces nothing
    try:
        engine = DecisionEngine(config.decisions, ledger, clock)
        pipeline = Pipeline(
            detectors=build_detectors(config.detectors, clock),
            engine=engine,
            runner=None,
            clock=clock,
            # Syslog timestamps have no year: infer it from the wall clock, not
            # from the replayed events (which start at the epoch).
            parser_clock=SystemClock(),
            parsers_config=config.parsers,
            on_finding=printer.finding,
            on_decision=printer.decision,
        )
        for path, file_fmt in files:
            source = str(path)
            for lines in read_lines(path):
                pipeline.process(LineBatch(source, file_fmt, lines, clock.monotonic()))
            counters = pipeline.sources.get(source)
            fs = FileSummary(source, file_fmt)
            if counters is not None:
                fs.lines = counters.lines
                fs.parsed = counters.parsed
                fs.unparsed = counters.unparsed
            summary.files.append(fs)
    finally:
        ledger.close()
    summary.seconds = time.perf_counter() - started
    for (detector, _severity), n in pipeline.findings.items():
        summary.findings[detector] = summary.findings.get(detector, 0) + n
    for (action, _detector), n in pipeline.decisions.items():
        summary.decisions[action] = summary.decisions.get(action, 0) + n
    return summary


def print_summary(summary: ReplaySummary, out: TextIO, *, as_json: bool) -> None:
    """The closing summary, as text or one JSON object."""
    if as_json:
        out.write(json.dumps(summary.as_dict()) + "\n")
        return
    data = summary.as_dict()
    out.write("\nSummary\n")
    for f in summary.files:
        out.write(
            f"  {f.path} ({f.format}): {f.lines} lines read, {f.parsed} parsed, "
            f"{f.unparsed} unparsed\n"
        )
    out.write(
        f"  total: {data['lines_read']} lines, {data['parsed']} parsed, "
        f"{data['unparsed']} unparsed in {data['elapsed_seconds']}s"
        f" ({data['lines_per_second']} lines/s)\n"
    )
    out.write("  findings per detector:\n")
    for name, n in data["findings"].items() or [("(none)", 0)]:
        out.write(f"    {name}: {n}\n")
    out.write("  decisions per action:\n")
    for name, n in data["decisions"].items() or [("(none)", 0)]:
        out.write(f"    {name}: {n}\n")
