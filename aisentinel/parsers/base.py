"""The parser contract: a pure function from one log line to a typed event or ``None``.

Parsers are classes so that they can hold per-source settings (trusted proxies, the
year for syslog timestamps that lack one) and caches (timestamp text -> epoch); one
whose lines may be split over several (``container``: a runtime's records) also holds
the pieces read so far (see :meth:`Parser.parse_many`). A parser is built at each
start, and again at a reload that changes ``[parsers]``.
``parse`` must not do I/O, must not raise on any input (a line it does not recognise
returns ``None`` and is counted as unparsed by the caller), and must be fast: it runs
once per line. Addresses in events are textual and syntactically checked by the
regex; they are validated with :mod:`ipaddress` before they reach a firewall.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import ClassVar, Final, Literal, NamedTuple, cast, get_args

from pydantic import BaseModel, PrivateAttr

from aisentinel.clock import Clock, SystemClock
from aisentinel.configtypes import CredentialsMode, ForwardedHeader, Network, StrictModel
from aisentinel.events import Event
from aisentinel.registry import Registry

SetupProblemKind = Literal["untrusted_local_proxy", "clock_offset"]
"""Every kind of :class:`SetupProblem` a source's setup has: ``untrusted_local_proxy``,
every client is a proxy on this host that is not trusted, told by a parser
(:class:`aisentinel.parsers.proxy.LoopbackWatch`); ``clock_offset``, the source's log
times stand steadily off the clock (a log in another zone), told by the pipeline
(:mod:`aisentinel.sourceclock`)."""

SETUP_PROBLEMS: Final[tuple[SetupProblemKind, ...]] = get_args(SetupProblemKind)
"""The ``problem`` label values of ``aisentinel_source_setup_problem``: each is exported,
0 or 1, for every line source (an alert on it needs no ``absent()``)."""


class SetupProblem(NamedTuple):
    """What is wrong with the setup of a source, as its parser sees in its recent lines."""

    kind: SetupProblemKind
    """Which problem, for machines (a bounded metric label)."""
    text: str
    """What it means and how to fix it, in one short line (``aisentinel status``)."""


MAX_LINE_BYTES = 65536
"""The line length cap (bytes) of a format whose writer keeps its lines short (sshd's
are under 1 KiB, nginx's error log's under 2 KiB). A file whose format is not told yet
(``auto``) is read with the largest cap of the sniffed formats
(:func:`aisentinel.parsers.line_cap`)."""

ACCESS_LINE_BYTES = 1 << 20
"""The line length cap of nginx's access-log formats. A line carries fields the client
sends: the request line and each header up to ``large_client_header_buffers`` (8 KiB by
default, up to 64 KiB), escaped by nginx into up to 4 (``\\xHH``) or 6 (``\\u00HH``,
``escape=json``) bytes a byte, and with ``aisentinel_prompts`` the request body, which
the prompt detectors parse whole (up to 1 Mi characters). 1 MiB holds all of that
for nearly every request; the fields of a longer line before its cut are still read
(:class:`~aisentinel.events.CutLine`)."""

_is_event = functools.partial(operator.is_not, None)
"""``event is not None``, as a C callable for ``filter``."""


class ParsersConfig(StrictModel):
    """``[parsers]``: settings shared by all parsers, and each parser's own table.

    A key naming a registered parser (``[parsers.nginx-json]``) is that parser's table,
    validated by the config model it registered (``config.py`` does that); the other
    keys are the shared settings below.
    """

    trusted_proxies: tuple[Network, ...] = ()
    """Peers whose ``X-Forwarded-For`` / real-IP value is believed. Empty: trust no one."""
    forwarded_header: ForwardedHeader = "xff"
    """Which forwarded value of a request from a trusted proxy names the client first:
    ``xff`` the X-Forwarded-For chain (right-most entry not a trusted proxy; the JSON
    format's ``real_ip`` only when the chain names none), ``real_ip`` the JSON format's
    ``real_ip`` (X-Real-IP), for a proxy that sets that header and passes on the
    client's X-Forwarded-For untouched (the chain only when ``real_ip`` names none).
    See :meth:`aisentinel.parsers.proxy.ProxyResolver.client`."""
    credentials: CredentialsMode = "learned"
    """Whether a user (``$remote_user``) or API key id in the access log proves that the
    client authenticated: ``learned`` per location from the traffic (not where 2xx
    answers go to requests without credentials and no 401 is served), ``checked``
    always (every location checks them), ``unchecked`` never (nothing checks them).
    nginx logs any client's ``Authorization: Basic`` user, checked or not; see
    :class:`aisentinel.detectors.shared.CredentialTrust`."""
    _tables: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def with_tables(self, tables: Mapping[str, BaseModel]) -> ParsersConfig:
        """A copy holding the parsers' validated ``[parsers.<name>]`` tables."""
        out = self.model_copy()
        out._tables = dict(tables)
        return out

    def table(self, name: str) -> BaseModel | None:
        """Parser ``name``'s validated table (its model's defaults when the file has none)."""
        return self._tables.get(name)

    def tables(self) -> dict[str, BaseModel]:
        """Every parser's validated table, by parser name."""
        return dict(self._tables)

    def context(
        self, source: str, fmt: str, clock: Clock | None = None, timezone: tzinfo | None = None
    ) -> ParserContext:
        """The context of a parser of format ``fmt`` for ``source`` under these settings:
        the trusted proxies, the forwarded header, ``fmt``'s own table and the source's
        ``timezone`` (``None``: the local zone). The daemon,
        ``replay``, ``explain`` and ``rules test`` all build their parsers' contexts here,
        so one config gives one reading of a line everywhere."""
        return ParserContext(
            source=source,
            clock=clock or SystemClock(),
            trusted_proxies=tuple(self.trusted_proxies),
            forwarded_header=self.forwarded_header,
            options=self.table(fmt),
            tables=self.tables(),
            timezone=timezone,
        )


@dataclass(frozen=True, slots=True)
class ParserContext:
    """What a parser may know besides the line."""

    source: str = "replay"
    clock: Clock = field(default_factory=SystemClock)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    forwarded_header: ForwardedHeader = "xff"
    """``[parsers] forwarded_header``."""
    options: BaseModel | None = None
    """This parser's ``[parsers.<name>]`` table, validated by the model it registered."""
    tables: Mapping[str, BaseModel] = field(default_factory=dict)
    """Every parser's ``[parsers.<name>]`` table, by name: for a parser that hands lines
    on to others (``container``), each of which reads its own."""
    timezone: tzinfo | None = None
    """The zone the source's local-time stamps are written in (its ``timezone`` key);
    ``None``: the daemon's local zone."""


class Parser(ABC):
    """Turns lines of one format into events. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]
    sniff: ClassVar[int | None] = None
    """Place in the sniff order for ``auto`` (lower is tried first: the most specific
    formats go first); ``None`` keeps the format out of sniffing (name it explicitly)."""
    max_line_bytes: ClassVar[int] = MAX_LINE_BYTES
    """The line length cap a file source (without its own ``max_line_bytes``) and
    ``replay`` use for this format: the longest line it needs read whole. A longer line
    is cut there and handed on as a :class:`~aisentinel.events.CutLine`."""

    def __init__(self, ctx: ParserContext) -> None:
        self.ctx = ctx
        self.source = ctx.source
        self.options = ctx.options
        self.notices: list[tuple[str, dict[str, str]]] = []
        """Warnings for the operator not yet logged: (message, fields). Parsers do no
        I/O; the pipeline logs these after each batch (:meth:`take_notices`)."""
        self._noticed: set[str] = set()

    def notice(self, key: str, message: str, **fields: str) -> None:
        """Queue ``message`` for the operator's log, once per ``key`` for this parser
        (one source): a problem of the log's layout or the setup, not of one line."""
        if key not in self._noticed:
            self._noticed.add(key)
            self.notices.append((message, fields))

    def take_notices(self) -> list[tuple[str, dict[str, str]]]:
        """The queued notices, oldest first; the queue is emptied."""
        out, self.notices = self.notices, []
        return out

    def problems(self) -> list[SetupProblem]:
        """What is wrong now with the setup of the source this parser reads, as seen in
        its recent lines (``aisentinel status`` lists each as a problem of the source, and
        ``aisentinel_source_setup_problem`` exports its kind); none by default. Unlike a
        notice, a problem goes once the lines show it no more."""
        return []

    def begin(self, origin: int) -> None:
        """Told before each batch's lines are parsed: they come from the byte stream
        numbered ``origin`` (:attr:`~aisentinel.events.LineBatch.origin`). Lines of one
        number continue each other; lines of a number never seen before continue none.
        Nothing to do for a parser that reads each line alone (this default)."""
        del origin

    def skipped(self, line: str) -> str | None:
        """Why ``line``, which is of this format and :meth:`parse` gave no event for, was
        left out on purpose (one short sentence, for ``aisentinel explain``); ``None`` when
        it was not, or there is nothing to tell. None by default."""
        return None

    @abstractmethod
    def parse(self, line: str) -> Event | None:
        """The event this line describes, or ``None`` (not this format, or irrelevant)."""

    def parse_many(self, lines: Iterable[str]) -> Sequence[Event]:
        """The events of ``lines``, in order, skipping lines that give ``None``.

        Same result as :meth:`parse` line by line (which this default does); hot
        parsers override it with one tight loop. A parser that keeps state from one line
        to the next must leave it as it was before a call that raises: the pipeline then
        parses the batch again, line by line.
        """
        return cast(list[Event], list(filter(_is_event, map(self.parse, lines))))

    def looks_like(self, line: str) -> bool:
        """Whether ``line`` is of this format, for sniffing. By default: it parses.

        Override it when most lines of the format give no event (an sshd log is mostly
        session noise), so that such lines still vote for the format.
        """
        return self.parse(line) is not None

    def recognises(self, line: str) -> bool:
        """Whether ``line``, which gave no event, is of this format all the same, for
        :meth:`unrecognised`. By default :meth:`looks_like`; a parser with a cheaper
        check of a line's shape overrides it (it is asked on every batch)."""
        return self.looks_like(line)

    def unrecognised(self, lines: Sequence[str], parsed: int) -> int | None:
        """How many of ``lines`` (of which ``parsed`` gave an event) are not of this format
        at all; ``None`` when that says nothing about the format (see :mod:`.sshd`).

        A line that gave an event is of the format. A format that keeps the default
        :meth:`looks_like` gives an event for every line of it, so each line that gave
        none is not of it. Otherwise, when some line gave none, each line of a sample of at
        most :data:`RECOGNITION_SAMPLE` lines of the batch is asked (:meth:`recognises`),
        and the misses are scaled to the batch, at most the lines that gave no event (the
        pipeline uses the share to tell a source that reads a log of another format:
        :class:`aisentinel.pipeline.Recognition`).
        """
        missed = len(lines) - parsed
        if missed <= 0 or type(self).looks_like is Parser.looks_like:
            return max(0, missed)
        count = len(lines)
        sample = lines[:: -(-count // RECOGNITION_SAMPLE)]
        misses = sum(1 for line in sample if not self.recognises(line))
        return min(missed, round(misses * count / len(sample)))


@dataclass(slots=True)
class RecentShare:
    """The share of a source's recent lines that show something, and whether it holds.

    Counted over the batches holding the source's last ``window`` lines (at least); it
    holds once the share reaches ``on`` over at least ``least`` lines, and ends once the
    share is down to ``off``, so a share in between never flaps. The pipeline's
    blind-source check (:class:`aisentinel.pipeline.Recognition`) and the access parsers'
    untrusted-local-proxy check (:class:`aisentinel.parsers.proxy.LoopbackWatch`) use it.
    """

    window: int
    least: int
    on: float
    off: float
    batches: deque[tuple[int, int]] = field(default_factory=deque)
    lines: int = 0
    """Recent lines."""
    hits: int = 0
    """Of :attr:`lines`, those that show it."""
    holds: bool = False

    def add(self, lines: int, hits: int) -> bool:
        """Count a batch of ``lines``, ``hits`` of them showing it; whether that changed
        :attr:`holds`."""
        batches = self.batches
        batches.append((lines, hits))
        self.lines += lines
        self.hits += hits
        while self.lines - batches[0][0] >= self.window:
            old_lines, old_hits = batches.popleft()
            self.lines -= old_lines
            self.hits -= old_hits
        share = self.share()
        if share is None:
            return False
        holds = share >= self.on if not self.holds else share > self.off
        changed = holds != self.holds
        self.holds = holds
        return changed

    def share(self) -> float | None:
        """The share of the recent lines that show it (``None``: too few lines)."""
        if self.lines < self.least:
            return None
        return self.hits / self.lines


RECOGNITION_SAMPLE = 32
"""Most lines of a batch :meth:`Parser.unrecognised` asks :meth:`Parser.looks_like`."""

REGISTRY: Registry[type[Parser]] = Registry("parser")
"""Parsers by name; each plug-in module registers itself in one line."""
