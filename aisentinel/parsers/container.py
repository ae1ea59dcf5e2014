"""``container``: a container runtime's log file, each record's line handed to its parser.

A container's stdout and stderr are written by the runtime, one record a line, in one
of two layouts:

* Docker's ``json-file`` log driver (the default), ``/var/lib/docker/containers/ID/ID-json.log``:
  ``{"log":"LINE\\n","stream":"stdout","time":"2026-12-07T21:00:00.123456789Z"}``
  (an ``attrs`` object may come before ``time`` with the ``labels``/``tag`` options);
* CRI, the Kubernetes log files (containerd, CRI-O, podman's ``k8s-file``),
  ``/var/log/containers/*.log``: ``2026-12-07T21:00:00.123456789Z stdout F LINE``.

Both streams are interleaved in one file. A line longer than the runtime's buffer (16
KiB for Docker and containerd) is split over several records of its stream: a Docker
record whose ``log`` does not end in ``\\n``, a CRI record tagged ``P``, continued by the
stream's next records up to the one that ends it. The pieces are joined (per stream: the
other stream's records may come between) up to :data:`~.base.ACCESS_LINE_BYTES`; a
longer line is handed on cut there (a :class:`~aisentinel.events.CutLine`, as a file
source cuts one). A record that is not one of these layouts (malformed JSON, a line cut
by the source's cap in a Docker record) is skipped, counted as unparsed and as a line
not of the format, and the lines being joined are dropped with it (one may have lost a
piece to it: joined anyway, its fields could be read from the wrong places); both are
told once per source (:meth:`~.base.Parser.notice`).

A record's line is trusted to begin a line only when the stream's record before it was
read and ended a line. After an unreadable record (whose stream cannot be told), in a
new parser (at a start, or a reload that changes ``[parsers]``: the reading may begin
in the middle of a split line, whose head was read before or not at all), and in a byte
stream not read before (:meth:`ContainerParser.begin`: a file source's new file, or a
file read again from its start after a truncation, whose lines written before it may be
lost), each stream is in doubt: the line of its next records, up to the one that ends
a line, is dropped (counted as unparsed; :attr:`ContainerParser.doubtful`). Read as a
line of its own, the rest of a split line would be a line that the client who chose
it wrote: at byte 16384 of a request, an error-log line that names another address, to
have it banned.

The line in a record goes to the parser of its shape, decided per line (the stream is
no guide: nginx's image sends its error log to stderr, other setups do not): a JSON
object to ``nginx-json``, ``YYYY/MM/DD ...`` to ``nginx-error``, a syslog header naming
``sshd`` to ``sshd`` (an sshd run with ``-e`` writes bare messages, which any program of
the container could write too: not read), anything else to ``nginx`` (combined). Each
inner parser is built with this one's :class:`~.base.ParserContext` (trusted proxies,
``forwarded_header``) and its own ``[parsers.<name>]`` table. A line none of them reads
(the app's own output) is a line not of the format, as in a plain file, so a container
log of another program reads as blind.

Time: an access-log line's own time is the event's (it carries its offset). An error-log
or syslog line's time is the container's local time with no zone, which the host cannot
know (a container often runs in UTC on a host that does not): its event takes the
record's time, which the runtime wrote in UTC when it read the line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from aisentinel.configtypes import StrictModel
from aisentinel.events import CutLine, Event, HttpAuthFailure, HttpRateLimited, SshEvent
from aisentinel.parsers.base import (
    ACCESS_LINE_BYTES,
    REGISTRY,
    Parser,
    ParserContext,
    SetupProblem,
)
from aisentinel.parsers.nginx_access import NginxAccessParser
from aisentinel.parsers.nginx_error import NginxErrorParser
from aisentinel.parsers.nginx_json import NginxJsonParser
from aisentinel.parsers.sshd import SshdParser
from aisentinel.parsers.timestamps import IsoTime

LINE_BYTES = ACCESS_LINE_BYTES
"""The longest line joined from a stream's records (the access-log formats' cap)."""

_DOCKER_HEAD = '{"log":"'
_DOCKER_MIDDLE = frozenset({',"stream":"stdout","time":"', ',"stream":"stderr","time":"'})
"""What Docker writes between ``log``'s value and ``time``'s (the fast path)."""
_scanstring: Callable[[str, int, bool], tuple[str, int]] = vars(json.decoder)["scanstring"]
"""The standard library's JSON string decoder (C), from ``json.decoder``."""
_WHOLE = frozenset({"stdout F ", "stderr F "})
"""A CRI record's stream and tag when it holds a whole line (the fast path)."""
_DOCKER_TAIL = re.compile(r',"stream":"(stdout|stderr)","time":"([^"\\]*+)"\}[ \t\r]*+\Z')
"""What Docker writes after ``log``'s value, with the stream and time (:func:`unwrap`;
anything else is decoded whole by ``json.loads``)."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_STREAMS = frozenset({"stdout", "stderr"})
_KEYS = ("stdout", "stderr", "")
"""The streams a line is joined per: ``""`` holds the records naming another one."""
SPLIT_BYTES = 16384
"""The size of the pieces Docker and containerd split a long line into."""
ORIGINS_KEPT = 1024
"""Most byte streams (:attr:`~aisentinel.events.LineBatch.origin`: a glob's files, a
rotated file and its successor) whose joining state is kept while another is read."""
KEPT_BYTES = 16 << 20
"""Most bytes of lines being joined kept for the streams not being read; past either
limit the longest unread stream's state is dropped (read again, it starts in doubt)."""
RECORD_BYTES = 6 * SPLIT_BYTES + 4096
"""The longest Docker json-file record of one piece (each byte written as a ``\\u00XX``
escape at worst: ``<``, ``>``, ``&``, control bytes, invalid UTF-8), with its keys and
``attrs``: a source whose ``max_line_bytes`` is below it cuts records of lines a client
chose (``aisentinel check-config`` warns of it)."""

# Inner formats, by index.
_ACCESS, _JSON, _ERROR, _SSHD = range(4)
_INNER = (NginxAccessParser, NginxJsonParser, NginxErrorParser, SshdParser)
_SUBSTITUTE_TIME = (False, False, True, True)
"""Whether an inner format's time is zoneless local time (the record's is used)."""
_TIMED = (HttpAuthFailure, HttpRateLimited, SshEvent)
"""The events of those formats."""


def _kind(line: str) -> int:
    """The inner format for a line, from its shape alone (no parsing)."""
    first = line[:1]
    if first == "{":
        return _JSON
    if line[4:5] == "/":  # 2026/12/07 21:00:00 [error] ...
        return _ERROR
    if (
        "sshd" in line
        and (
            (first.isupper() and line[3:4] == " ")  # Dec  7 21:00:00 host sshd[1]:
            or (line[4:5] == "-" and line[10:11] == "T")  # 2026-12-07T21:00:00Z host sshd[1]:
            or first == "<"  # RFC 5424
        )
    ):
        return _SSHD
    if first in " \t" and line.lstrip().startswith("{"):
        return _JSON
    return _ACCESS


def _tidy(text: str) -> str:
    """``text`` without a CR at its end (an sshd run with ``-e`` ends its lines with
    CRLF) and with each lone surrogate (a ``\\udcff`` escape not in a pair, which JSON
    decoding keeps and UTF-8 cannot encode) replaced by U+FFFD (Docker writes none)."""
    if text[-1:] == "\r":
        text = text[:-1]
    return _LONE_SURROGATE.sub("\ufffd", text)


def unwrap(line: str) -> tuple[str, str, str, bool] | None:
    """(line, stream, time text, whole) of one record, or ``None`` when ``line`` is no
    Docker json-file or CRI record. ``whole`` is false for a piece of a longer line that
    the stream's next record continues; the line is without its line end."""
    if line.startswith(_DOCKER_HEAD):
        try:
            text, end = _scanstring(line, 8, False)
        except ValueError:
            return None  # the log's string does not end: no JSON object either
        tail = _DOCKER_TAIL.match(line, end)
        if tail is not None:
            stream, when = tail.groups()
            return _docker_text(text, line, stream, when)
        return _docker_slow(line)
    if line[:1] == "{" or line[:1].isspace():
        return _docker_slow(line)
    return _cri(line)


def _docker_text(text: str, line: str, stream: str, when: str) -> tuple[str, str, str, bool]:
    whole = text[-1:] == "\n"
    if whole:
        text = text[:-1]
    if text[-1:] == "\r" or "\\u" in line:
        text = _tidy(text)
    return text, stream, when, whole


def _docker_slow(line: str) -> tuple[str, str, str, bool] | None:
    """A Docker record in any key order, with ``attrs`` or blanks: decoded whole."""
    try:
        data: Any = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("log")
    if type(text) is not str:
        return None
    stream = data.get("stream")
    when = data.get("time")
    return _docker_text(
        text,
        line,
        stream if stream in _STREAMS else "",  # one key for others: pieces stay bounded
        when if type(when) is str else "",
    )


def _cri(line: str) -> tuple[str, str, str, bool] | None:
    """A CRI record: ``TIME STREAM TAGS LINE`` (tags: ``F`` whole, ``P`` a piece, maybe
    followed by ``:``-separated others)."""
    if not line[:1].isdigit() or line[10:11] not in ("T", "t"):
        return None
    parts = line.split(" ", 3)
    if len(parts) < 3:
        return None
    when, stream, tags = parts[0], parts[1], parts[2]
    if stream not in _STREAMS or tags[:1] not in ("F", "P") or tags[1:2] not in ("", ":"):
        return None
    text = parts[3] if len(parts) == 4 else ""
    if text[-1:] == "\r":
        text = text[:-1]
    if type(line) is CutLine:
        text = CutLine(text)  # cut by the source: read what is before the cut
    return text, stream, when, tags[0] == "F"


@dataclasses.dataclass(slots=True)
class _Pending:
    """A stream's line being joined from its records."""

    pieces: list[str]
    size: int
    """UTF-8 bytes in ``pieces``."""
    cut: bool = False
    """Longer than :data:`LINE_BYTES`: the rest is discarded, the line handed on cut."""
    doubt: bool = False
    """Its first record may continue a line whose start was not read: the line is
    dropped once it ends (its pieces are not kept)."""


class _Saved(NamedTuple):
    """The joining state before a call of :meth:`ContainerParser.parse_many`."""

    pending: dict[str, tuple[_Pending, int, int, bool]]
    """Per stream: its line, how many pieces it held, their size, whether cut."""
    doubt: frozenset[str]
    counts: tuple[int, int, int, int]


class ContainerConfig(StrictModel):
    """``[parsers.container]``: no settings of its own (each inner parser reads its
    ``[parsers.<name>]`` table, and ``[parsers]``)."""


class ContainerParser(Parser):
    """Docker json-file and CRI records; each record's line parsed by its own parser."""

    name = "container"
    sniff = 12
    """After ``nginx-json`` (a record is no access-log object), before the line formats:
    a CRI record of an error-log line is read by ``nginx-error`` too, but this reads
    the stream's access lines and split lines as well."""
    max_line_bytes = LINE_BYTES + 4096
    """A record holding a whole line at :data:`LINE_BYTES` (CRI with no split size)."""

    def __init__(self, ctx: ParserContext) -> None:
        super().__init__(ctx)
        self._inner: tuple[Parser, ...] = tuple(
            cls(dataclasses.replace(ctx, options=ctx.tables.get(cls.name))) for cls in _INNER
        )
        self._iso = IsoTime()
        self._pending: dict[str, _Pending] = {}
        self._doubt: set[str] = set(_KEYS)
        self._origin = 0
        """The byte stream (:attr:`~aisentinel.events.LineBatch.origin`) being read:
        :attr:`_pending` and :attr:`_doubt` are its."""
        self._kept: dict[int, tuple[dict[str, _Pending], set[str]]] = {}
        """The joining state of the other streams read, the longest unread first."""
        self._kept_bytes = 0
        """Bytes of the lines being joined in :attr:`_kept`."""
        """Streams whose next record may continue a line whose start was not read (after
        an unreadable record, and at first: the reading may begin in the middle of a
        split line); that record's line is dropped, and the stream read again from the
        record after the one that ends it. A parser is built at each start, and at a
        reload that changes ``[parsers]``."""
        self._last: tuple[Sequence[str], int] | None = None
        """The last batch :meth:`parse_many` read and how many of its lines were not of
        the format, for :meth:`unrecognised`."""
        self.malformed = 0
        """Records that are not of the layouts (skipped)."""
        self.broken = 0
        """Lines being joined that were dropped because a record between was unreadable."""
        self.cut = 0
        """Joined lines longer than :data:`LINE_BYTES`, handed on cut."""
        self.doubtful = 0
        """Lines dropped because their first record may have continued a line whose start
        was not read (:attr:`_doubt`)."""

    def begin(self, origin: int) -> None:
        """Read the records of the byte stream ``origin`` next: its own lines being joined
        and streams in doubt (every stream, for one not read before). A line is never
        joined from the records of two files, nor from a file's records before and after
        it was truncated (the file source numbers those apart)."""
        if origin == self._origin:
            return
        kept = self._kept
        if self._pending or len(self._doubt) < len(_KEYS):
            kept[self._origin] = (self._pending, self._doubt)
            self._kept_bytes += _size(self._pending)
        state = kept.pop(origin, None)
        if state is None:
            self._pending, self._doubt = {}, set(_KEYS)
        else:
            self._pending, self._doubt = state
            self._kept_bytes -= _size(self._pending)
        self._origin = origin
        while kept and (len(kept) > ORIGINS_KEPT or self._kept_bytes > KEPT_BYTES):
            pending, _ = kept.pop(next(iter(kept)))
            self._kept_bytes -= _size(pending)

    def parse(self, line: str) -> Event | None:
        """The event of the line this record holds (or ends), or ``None``.

        If it raises, the record is lost (the pipeline skips it): as after an unreadable
        record, the lines being joined are dropped and every stream is in doubt, so that
        no line is joined past the lost record, nor begun with the record after it."""
        try:
            found = self.parse_many((line,))
        except BaseException:
            self._lost()
            raise
        return found[0] if found else None

    def parse_many(self, lines: Iterable[str]) -> list[Event]:
        """The events of the records' lines, in order: runs of access lines go to their
        parser's ``parse_many`` at once, the other lines one by one.

        The lines being joined carry over to the next call; if this one raises, they are
        as they were before it (the pipeline then parses the batch again line by line)."""
        saved = self._save()
        try:
            return self._parse_many(lines)
        except BaseException:
            self._restore(saved)
            raise

    def _save(self) -> _Saved:
        """What :meth:`_restore` needs to undo a call of :meth:`_parse_many` (the pieces of
        a line being joined are only ever appended to)."""
        return _Saved(
            {
                stream: (line, len(line.pieces), line.size, line.cut)
                for stream, line in self._pending.items()
            },
            frozenset(self._doubt),
            (self.malformed, self.broken, self.cut, self.doubtful),
        )

    def _restore(self, saved: _Saved) -> None:
        """The lines being joined, the streams in doubt and the counts as ``saved``."""
        for line, count, size, cut in saved.pending.values():
            del line.pieces[count:]
            line.size, line.cut = size, cut
        self._pending = {stream: entry[0] for stream, entry in saved.pending.items()}
        self._doubt = set(saved.doubt)
        self.malformed, self.broken, self.cut, self.doubtful = saved.counts

    def _parse_many(self, lines: Iterable[str]) -> list[Event]:  # noqa: PLR0915 - inlined
        batch = lines if isinstance(lines, Sequence) else list(lines)
        pending = self._pending
        doubt = self._doubt
        out: list[Event] = []
        run: list[str] = []
        run_kind = _ACCESS
        unrecognised = 0
        for line in batch:
            # The common shapes inline (a call a line costs as much as the unwrapping);
            # anything else, and every piece of a split line, through unwrap().
            fast = False
            if line.startswith(_DOCKER_HEAD):
                # {"log":"LINE\n","stream":"stdout","time":"..."}: the line decoded by
                # the C scanner, the rest checked as text (else: json.loads, in unwrap).
                try:
                    text, end = _scanstring(line, 8, False)
                except ValueError:
                    end = 0  # not even the log's string: unwrap() tells it malformed
                if (
                    (middle := line[end : end + 27]) in _DOCKER_MIDDLE
                    and text[-1:] == "\n"
                    and line.endswith('"}')
                ):
                    stream = middle[11:17]
                    when = line[end + 27 : -2]
                    text = text[:-1]
                    if text[-1:] == "\r" or "\\u" in line:
                        text = _tidy(text)
                    whole = fast = '"' not in when
            elif (
                line[10:11] == "T"
                and (space := line.find(" ")) > 0
                and (tag := line[space + 1 : space + 10]) in _WHOLE
                and type(line) is not CutLine
            ):
                text = line[space + 10 :]
                if text[-1:] == "\r":
                    text = text[:-1]
                stream = tag[:6]
                when = line[:space]
                whole = fast = True
            if not fast:
                record = unwrap(line)
                if record is None:
                    if line.strip():
                        self._malformed()
                    unrecognised += 1
                    continue
                text, stream, when, whole = record
            if not whole or (pending and stream in pending) or (doubt and stream in doubt):
                joined = self._join(stream, text, whole)
                if joined is None:
                    continue  # a piece (the line goes on in the stream's next record), or dropped
                text = joined
            first = text[:1]
            if first == "{":
                kind = _JSON
            elif first.isdigit() and text[4:5] != "/" and text[4:5] != "-":
                kind = _ACCESS  # an IPv4 client: the usual line, decided here
            else:
                kind = _kind(text)
            if kind <= _JSON:
                if kind != run_kind and run:
                    unrecognised += self._flush(run, run_kind, out)
                    run = []
                run_kind = kind
                run.append(text)
                continue
            if run:
                unrecognised += self._flush(run, run_kind, out)
                run = []
            unrecognised += self._single(kind, text, when, out)
        if run:
            unrecognised += self._flush(run, run_kind, out)
        for parser in self._inner:
            if parser.notices:
                self.notices.extend(parser.take_notices())
        self._last = (batch, unrecognised)
        return out

    def problems(self) -> list[SetupProblem]:
        """The inner parsers' problems (a proxy on the same host that is not trusted)."""
        return [problem for parser in self._inner for problem in parser.problems()]

    def _single(self, kind: int, text: str, when: str, out: list[Event]) -> int:
        """Parse an error-log or sshd line into ``out`` (its time: the record's, see the
        module notes); 1 if it is not of its format, else 0."""
        parser = self._inner[kind]
        event = parser.parse(text)
        if event is None:
            return 0 if parser.recognises(text) else 1
        ts = self._iso(when) if _SUBSTITUTE_TIME[kind] else None
        if ts is not None and isinstance(event, _TIMED):
            event = event._replace(ts=ts)
        out.append(event)
        return 0

    def _flush(self, run: list[str], kind: int, out: list[Event]) -> int:
        """Parse a run of access lines into ``out``; how many are not of their format."""
        parser = self._inner[kind]
        events = parser.parse_many(run)
        out.extend(events)
        missed = parser.unrecognised(run, len(events))
        return len(run) - len(events) if missed is None else missed

    def _join(self, stream: str, text: str, whole: bool) -> str | None:
        """Add a record's piece to its stream's line; the line once ``whole``, else ``None``
        (also for a line whose first record came while its stream was in doubt: dropped)."""
        pending = self._pending.get(stream)
        if pending is None:
            doubt = stream in self._doubt
            if doubt:
                self._doubt.discard(stream)
            pending = self._pending[stream] = _Pending([], 0, doubt=doubt)
        if pending.doubt:
            pass  # dropped once it ends: nothing of it is kept
        elif not pending.cut:
            size = len(text.encode("utf-8", "surrogatepass"))
            room = LINE_BYTES - pending.size
            if size > room:
                head = text.encode("utf-8", "surrogatepass")[:room]
                pending.pieces.append(head.decode("utf-8", "ignore"))
                pending.size = LINE_BYTES
                pending.cut = True
            else:
                pending.pieces.append(text)
                pending.size += size
                pending.cut = type(text) is CutLine  # its record's rest is lost
        if not whole:
            return None
        del self._pending[stream]
        if pending.doubt:
            self.doubtful += 1
            return None
        joined = "".join(pending.pieces)
        if pending.cut:
            self.cut += 1
            self.notice(
                "cut",
                f"a line split over several container log records is longer than "
                f"{LINE_BYTES} bytes: it is read up to there",
            )
            return CutLine(joined)
        return joined

    def _malformed(self) -> None:
        """Count a record that is not of the layouts; drop the lines being joined, and
        put every stream in doubt (the record, whose stream cannot be read, may have been
        the start of a line that the stream's next records continue: read as a line of
        their own, a client that chose the rest of its request would choose that line)."""
        self.malformed += 1
        self.notice(
            "malformed",
            "lines that are not Docker json-file or CRI records are skipped (counted as "
            "unparsed), and so is the next line of each stream, which may be the rest of "
            "one of them: is this file a container log, or is the source's max_line_bytes "
            "too small? (docs/nginx-log-format.md)",
        )
        self._lost()

    def _lost(self) -> None:
        """A record was lost: drop the lines being joined, and put every stream in doubt."""
        self._doubt.update(_KEYS)
        if self._pending:
            self.broken += len(self._pending)
            self._pending.clear()
            self.notice(
                "broken",
                "a line split over several container log records lost a piece to an "
                "unreadable record: it is skipped",
            )

    def looks_like(self, line: str) -> bool:
        """A Docker json-file or CRI record, whatever its line: a container log of
        another program is of this format, and reads as blind (:meth:`unrecognised`)."""
        return unwrap(line) is not None

    def unrecognised(self, lines: Sequence[str], parsed: int) -> int | None:
        """Records that are not records, and records whose line no inner parser reads
        (the app's own output): counted by :meth:`parse_many` for the batch it read;
        for another batch, each record's line is asked alone (a piece counts as read)."""
        last = self._last
        if last is not None and last[0] is lines:
            self._last = None  # the batch is not kept past its use
            return last[1]
        missed = 0
        for line in lines:
            record = unwrap(line)
            if record is None:
                missed += 1
                continue
            text, _stream, _when, whole = record
            missed += whole and not self._inner[_kind(text)].looks_like(text)
        return missed


REGISTRY.register("container", ContainerConfig, ContainerParser)


def _size(pending: dict[str, _Pending]) -> int:
    """Bytes of the lines being joined in ``pending``."""
    return sum(line.size for line in pending.values())
