"""``aisentinel replay``: the live pipeline run offline over log files.

Like ``fail2ban-regex``, it answers "what would aisentinel have done with this log?":
the same parsers, detectors and decision engine as the daemon, with time taken from
the log lines, a throw-away ledger and no responder. Output is readable text or JSON
Lines (one object per finding and per decision, then one summary object).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from aisentinel.clock import EventClock, SystemClock
from aisentinel.config import Config
from aisentinel.decisions.allowlist import read_host_addresses
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import MEMORY, Ledger
from aisentinel.detectors import build_detectors
from aisentinel.events import (
    AddressTarget,
    CutLine,
    Decision,
    Finding,
    LineBatch,
    decision_fields,
    finding_fields,
)
from aisentinel.parsers import AUTO, line_cap, sniff
from aisentinel.parsers.base import MAX_LINE_BYTES
from aisentinel.pipeline import Pipeline
from aisentinel.textsafe import escape

BATCH_LINES = 2048
"""Lines per pipeline batch: as fast as 8192 and a few MB lighter at peak (storm access)."""
CHUNK_BYTES = 1 << 20
"""Bytes read at a time; a chunk's lines are all decoded before its first batch goes.
1 MiB against 4 MiB: the same speed, and a replay's peak RSS about 25 MB lower (storm
access.log 104.7 -> 78.3 MB, storm auth.log 97.9 -> 73.0 MB, quiet access.log 101.2 ->
74.9 MB; ``/usr/bin/time -f %M``)."""
SNIFF_LINES = 64

READ_ERRORS = (OSError, EOFError, zlib.error)
"""What reading a damaged file raises: a bad gzip header (``gzip.BadGzipFile`` is an
``OSError``), a truncated stream (``EOFError``), corrupt deflate data (``zlib.error``),
an I/O error. Replay reports the file and goes on with the next one."""


def iso(ts: float) -> str:
    """RFC 3339 UTC text for an epoch timestamp."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _open(path: Path) -> gzip.GzipFile | io.BufferedReader:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _line_end(data: bytes) -> int:
    """Where the first line end (``\\n`` or ``\\r``) of ``data`` is; -1 if none."""
    lf, cr = data.find(b"\n"), data.find(b"\r")
    return lf if cr < 0 else cr if lf < 0 else min(lf, cr)


def _split(data: bytes) -> tuple[bytes, bytes] | None:
    """``data`` as its complete lines (joined by ``\\n`` alone) and the rest after the
    last line end; None when no line is complete. A CR at the very end may be the first
    half of a CRLF: it stays in the rest."""
    if b"\r" not in data:  # the usual case: one search, one split
        cut = data.rfind(b"\n")
        if cut < 0:
            return None
        return data[:cut], data[cut + 1 :]
    end = len(data) - 1 if data.endswith(b"\r") else len(data)
    cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
    if cut < 0:
        return None
    body = data[:cut]
    if data[cut] == 0x0A and body.endswith(b"\r"):
        body = body[:-1]
    return body.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), data[cut + 1 :]


def _skip_line_rest(chunk: bytes) -> tuple[bytes, bool] | None:
    """``chunk`` after the line end that ends a line being skipped, and whether that end
    is a CR at the chunk's last byte (a LF at the start of the next chunk belongs to
    it); None when ``chunk`` holds no line end (all of it is skipped)."""
    at = _line_end(chunk)
    if at < 0:
        return None
    if chunk[at] == 0x0D:
        if at + 1 == len(chunk):
            return b"", True
        if chunk[at + 1] == 0x0A:
            at += 1
    return chunk[at + 1 :], False


def _cut_lines(body: bytes, cap: int) -> tuple[list[str], int]:
    """The lines of ``body`` (``\\n``-separated), each longer than ``cap`` bytes cut there
    before it is decoded (a :class:`CutLine`), and how many were cut."""
    parts = body.split(b"\n")
    lines = [p.decode("utf-8", "replace") for p in parts]
    for i, part in enumerate(parts):
        if len(part) > cap:
            lines[i] = CutLine(part[:cap].decode("utf-8", "replace"))
    return lines, sum(len(p) > cap for p in parts)


def read_lines(
    path: Path,
    batch_lines: int = BATCH_LINES,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_truncated: Callable[[int], None] | None = None,
) -> Iterator[list[str]]:
    """Lines of ``path`` (plain or .gz) in batches, bad UTF-8 replaced.

    ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a line (and are stripped). Data is read
    with ``read1``, so a damaged file yields every complete line decoded before the
    fault, then raises one of :data:`READ_ERRORS`; a partial last line before the
    fault is dropped.

    A line longer than ``max_line_bytes`` is cut there (a :class:`CutLine`, whose fields
    before the cut the parser reads) and the rest of it, up to its line end, is skipped
    without being kept, as the daemon's file source does with its default
    ``max_line_bytes`` (the format's :func:`~aisentinel.parsers.line_cap`, which replay
    passes); ``on_truncated(n)`` is told of each ``n`` lines cut. So
    a file with no line end (a binary file, a log gone wrong) costs one cut line, not
    the whole file in memory.
    """
    cap = max_line_bytes
    wide = cap // 4  # a line of at most this many characters has at most ``cap`` bytes
    rest = b""
    skipping = False  # the rest of a line cut at ``cap`` is being skipped
    lf_next = False  # that line ended with a CR at a chunk's end: a LF next ends it too
    with _open(path) as fh:
        read = fh.read1
        while chunk := read(CHUNK_BYTES):
            if lf_next:
                lf_next = False
                chunk = chunk.removeprefix(b"\n")
            if skipping:
                after = _skip_line_rest(chunk)
                if after is None:
                    continue
                (chunk, lf_next), skipping = after, False
            data = rest + chunk
            split = _split(data)
            if split is None:
                rest = data
                if len(data) > cap and _line_end(data) < 0:
                    # Longer than the cap with no end in sight: its head is all we keep.
                    rest, skipping = b"", True
                    if on_truncated is not None:
                        on_truncated(1)
                    yield [CutLine(data[:cap].decode("utf-8", "replace"))]
                continue
            body, rest = split
            lines = body.decode("utf-8", "replace").split("\n")
            if max(map(len, lines)) > wide:  # rare: a line may be over the cap
                lines, cut = _cut_lines(body, cap)
                if cut and on_truncated is not None:
                    on_truncated(cut)
            for i in range(0, len(lines), batch_lines):
                yield lines[i : i + batch_lines]
    if rest and not skipping:
        lines, cut = _cut_lines(rest.removesuffix(b"\r"), cap)
        if cut and on_truncated is not None:
            on_truncated(cut)
        yield lines


def detect_format(path: Path) -> str:
    """The parser name for ``path`` from its first lines; ``ValueError`` if none fits.

    A file damaged after its first lines is still sniffed from the lines before the
    fault; one with none raises the read error (see :data:`READ_ERRORS`)."""
    sample: list[str] = []
    try:
        for batch in read_lines(path, SNIFF_LINES, max_line_bytes=line_cap(AUTO)):
            sample.extend(batch)
            if len(sample) >= SNIFF_LINES:
                break
    except READ_ERRORS:
        if not sample:
            raise
    return sniff(sample[:SNIFF_LINES])


@dataclass
class FileSummary:
    """Per-file counts."""

    path: str
    format: str
    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    truncated: int = 0
    """Lines longer than the daemon's default ``max_line_bytes`` for the format, cut
    there (see :func:`read_lines`); their fields before the cut are still parsed."""
    max_line_bytes: int = MAX_LINE_BYTES
    """That cap: the format's (:func:`~aisentinel.parsers.line_cap`)."""
    error: str | None = None
    """Why the file could not be read to its end (its lines before the fault count)."""

    def count_truncated(self, n: int) -> None:
        """``on_truncated`` for :func:`read_lines`."""
        self.truncated += n


@dataclass
class ReplaySummary:
    """Totals of one replay run."""

    files: list[FileSummary] = field(default_factory=list)
    findings: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    event_errors: dict[str, int] = field(default_factory=dict)
    """Lines or events a stage raised on (``stage/plug-in`` -> count); skipped."""
    quieted: dict[str, int] = field(default_factory=dict)
    """Findings not handed on per detector: their key was banned already, or alerted on
    within ``[decisions] alert_repeat``."""
    seconds: float = 0.0

    @property
    def failed_files(self) -> list[str]:
        """Files that could not be read to their end."""
        return [f.path for f in self.files if f.error is not None]

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
            "quieted": dict(sorted(self.quieted.items())),
            "event_errors": dict(sorted(self.event_errors.items())),
            "files": [vars(f) for f in self.files],
            "failed_files": self.failed_files,
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
    target = escape(decision.target.text if decision.target is not None else "-")
    ttl = f" ttl={int(decision.ttl)}s" if decision.ttl else ""
    return (
        f"decision {iso(decision.ts)} {decision.action.value} {target}{ttl} "
        f"offence={decision.offence} ({escape(decision.detector)}): {escape(decision.reason)}\n"
    )


class _Printer:
    """Writes findings and decisions as they happen, as text or JSON Lines."""

    def __init__(self, out: TextIO, as_json: bool, clock: EventClock, show: bool = True) -> None:
        self.out = out
        self.as_json = as_json
        self.clock = clock
        self.show = show
        """False: findings and decisions are not written (``replay --summary``)."""
        self.pending: Finding | None = None
        self._iso: tuple[float, str] = (float("nan"), "")

    def iso(self, ts: float) -> str:
        """:func:`iso` of ``ts``; a finding and its decision share one time, so the
        last one is kept."""
        last, text = self._iso
        if ts != last:
            text = iso(ts)
            self._iso = (ts, text)
        return text

    def finding(self, finding: Finding) -> None:
        self.clock.set(finding.ts)
        self.pending = finding

    def decision(self, decision: Decision) -> None:
        finding = self.pending
        self.pending = None
        if not self.show:
            return
        if self.as_json:
            if finding is not None:
                obj: dict[str, Any] = {"type": "finding", "kind": "finding"}
                obj["time"] = self.iso(finding.ts)
                obj.update(finding_fields(finding))
                obj["source_address"] = finding.client
                obj["evidence_count"] = finding.count
                obj["action"] = decision.action.value
                self.out.write(json.dumps(obj) + "\n")
            obj = {"type": "decision", "kind": "decision", "time": self.iso(decision.ts)}
            obj.update(decision_fields(decision))
            target = decision.target
            obj["source_address"] = target.text if isinstance(target, AddressTarget) else None
            self.out.write(json.dumps(obj) + "\n")
            return
        if finding is not None:
            self.out.write(finding_line(finding))
        self.out.write(decision_line(decision))


def replay(
    files: Sequence[tuple[Path, str]],
    config: Config,
    out: TextIO,
    *,
    as_json: bool = False,
    err: TextIO | None = None,
    summary_only: bool = False,
    zone: tzinfo | None = None,
) -> ReplaySummary:
    """Replay ``(path, parser name)`` pairs through the pipeline, in order, writing
    findings and decisions to ``out`` (none with ``summary_only``: they are counted in
    the summary only). A parser name of ``auto`` is detected here (see
    :func:`detect_format`). A file that cannot be read to its end (see
    :data:`READ_ERRORS`) gets one line on ``err`` (default stderr) and its
    ``FileSummary.error``; its lines before the fault count, and the next file follows.
    ``zone``: the zone the files' local-time stamps are written in (a source's
    ``timezone``; ``None``: the local zone)."""
    errors = sys.stderr if err is None else err
    clock = EventClock()
    printer = _Printer(out, as_json, clock, show=not summary_only)
    summary = ReplaySummary()
    started = time.perf_counter()
    ledger = Ledger(Path(MEMORY), clock)  # throw-away: replay enforces nothing
    try:
        engine = DecisionEngine(
            config.decisions,
            ledger,
            clock,
            trusted_proxies=config.parsers.trusted_proxies,
            # The host's SSH sessions now say nothing about a log's past (and reading
            # the socket table at each of its login lines cost ~10 ms a line here).
            ssh_clients=tuple,
            # The host's addresses, read once: the engine re-reads them every
            # host_refresh_interval of its clock, which here is the log's time (a
            # storm's day of log re-read /proc 2,265 times, 5% of the replay).
            host_addresses=_host_snapshot(),
        )
        pipeline = Pipeline(
            detectors=build_detectors(config.detectors),
            engine=engine,
            runner=None,
            clock=clock,
            # Syslog timestamps have no year: infer it from the wall clock, not
            # from the replayed events (which start at the epoch).
            parser_clock=SystemClock(),
            parsers_config=config.parsers,
            # The replay clock is the log's time: a source never stands off it.
            watch_source_clocks=False,
            on_finding=printer.finding,
            on_decision=printer.decision,
        )
        for path, file_fmt in files:
            if zone is not None:
                pipeline.zones[str(path)] = zone
            fs = _replay_file(pipeline, path, file_fmt, clock)
            if fs.error is not None:
                errors.write(
                    f"aisentinel: replay: {path}: read failed after {fs.lines} lines "
                    f"({fs.error}); going on with the next file\n"
                )
                errors.flush()
            summary.files.append(fs)
    finally:
        ledger.close()
    summary.seconds = time.perf_counter() - started
    for (detector, _severity), n in pipeline.findings.items():
        summary.findings[detector] = summary.findings.get(detector, 0) + n
    for (action, _detector), n in pipeline.decisions.items():
        summary.decisions[action] = summary.decisions.get(action, 0) + n
    for (stage, plugin), n in pipeline.event_errors.items():
        summary.event_errors[f"{stage}/{plugin}"] = n
    summary.quieted = {name: n for name, n in pipeline.quieted.items() if n}
    return summary


def _host_snapshot() -> Callable[[], tuple[str, ...]]:
    """The host's addresses as read now, for every later ask."""
    hosts = tuple(read_host_addresses())
    return lambda: hosts


def _replay_file(pipeline: Pipeline, path: Path, file_fmt: str, clock: EventClock) -> FileSummary:
    """One file through ``pipeline``; a read fault ends the file, recorded in ``error``."""
    source = str(path)
    fs = FileSummary(source, file_fmt)
    try:
        if file_fmt == AUTO:
            file_fmt = fs.format = detect_format(path)
        fs.max_line_bytes = cap = line_cap(file_fmt)
        for lines in read_lines(path, max_line_bytes=cap, on_truncated=fs.count_truncated):
            pipeline.process(LineBatch(source, file_fmt, lines, clock.monotonic()))
    except READ_ERRORS as exc:
        fs.error = f"{type(exc).__name__}: {exc}"
    except ValueError as exc:  # auto: nothing readable enough to tell the format
        fs.error = f"{exc}; name the format explicitly"
    counters = pipeline.sources.get(source)
    if counters is not None:
        fs.lines = counters.lines
        fs.parsed = counters.parsed
        fs.unparsed = counters.unparsed
    return fs


def print_summary(summary: ReplaySummary, out: TextIO, *, as_json: bool) -> None:
    """The closing summary, as text or one JSON object."""
    if as_json:
        out.write(json.dumps(summary.as_dict()) + "\n")
        return
    data = summary.as_dict()
    out.write("\nSummary\n")
    for f in summary.files:
        failed = "" if f.error is None else f"; FAILED: {f.error}"
        cut = f", {f.truncated} cut at {f.max_line_bytes} bytes" if f.truncated else ""
        out.write(
            f"  {f.path} ({f.format}): {f.lines} lines read, {f.parsed} parsed, "
            f"{f.unparsed} unparsed{cut}{failed}\n"
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
    if summary.quieted:
        out.write("  findings held back (key banned already, or alerted on within alert_repeat):\n")
        for name, n in data["quieted"].items():
            out.write(f"    {name}: {n}\n")
    if summary.event_errors:
        out.write("  lines or events skipped because a stage failed on them:\n")
        for name, n in data["event_errors"].items():
            out.write(f"    {name}: {n}\n")
    if summary.failed_files:
        out.write(f"  files that could not be read to their end: {len(summary.failed_files)}\n")
