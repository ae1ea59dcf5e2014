"""The ``container`` parser: Docker json-file and CRI records, each line to its parser."""

from __future__ import annotations

import ipaddress
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import fuzz_text, nginx_line, nginx_ts
from structlog.testing import capture_logs
from test_source_file import append, wait_for

from aisentinel.clock import FakeClock, SystemClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector, DetectorConfigBase
from aisentinel.events import (
    CutLine,
    Event,
    Finding,
    HttpAuthFailure,
    HttpRequest,
    LineBatch,
    SshEvent,
)
from aisentinel.parsers import ParserContext, ParsersConfig, build_parser, line_cap, sniff
from aisentinel.parsers import container as container_module
from aisentinel.parsers.base import ACCESS_LINE_BYTES
from aisentinel.parsers.container import ContainerParser
from aisentinel.parsers.nginx_access import NginxAccessConfig
from aisentinel.pipeline import Pipeline
from aisentinel.sources.file import FileSource, FileSourceConfig

T0 = 1_796_677_200.0  # 2026-12-07T21:00:00Z
WHEN = "2026-12-07T21:00:05.123456789Z"
"""A record's time: 5.123456789 s after T0."""
ERROR = (
    '2026/12/07 22:00:01 [error] 29#29: *7 user "bob": password mismatch, client: '
    '192.0.2.3, server: ai, request: "GET /api/ HTTP/1.1", host: "ai"'
)
"""An error-log line written in a container whose local time is UTC+1."""


def docker(line: str, stream: str = "stdout", when: str = WHEN, end: str = "\n") -> str:
    """``line`` as Docker's json-file driver writes it (Go escapes <, > and &)."""
    record = json.dumps({"log": line + end, "stream": stream, "time": when}, separators=(",", ":"))
    return record.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cri(line: str, stream: str = "stdout", tag: str = "F", when: str = WHEN) -> str:
    """``line`` as a CRI log file holds it."""
    return f"{when} {stream} {tag} {line}"


def _access(i: int = 0, ip: str = "203.0.113.9", path: str = "/.env") -> str:
    return nginx_line(T0 + i, ip, path, 404)


def _pipeline(tmp_path: Path, **kw: Any) -> Pipeline:
    """A pipeline on a fake clock at T0 (no detectors unless given)."""
    clock = FakeClock(T0)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    kw.setdefault("detectors", [])
    return Pipeline(engine=engine, runner=None, clock=clock, **kw)


ENTRYPOINT = "/docker-entrypoint.sh: Configuration complete; ready for start up"
NOTICE = '2026/12/07 21:00:00 [notice] 1#1: using the "epoll" event method'
FIRST = [
    docker(ENTRYPOINT),
    docker(NOTICE, "stderr"),
    json.dumps({"log": "x\n", "stream": "other", "time": WHEN}),
]
"""What nginx's image writes first, on each stream (and one of another stream): a new
parser drops each stream's first line (it may be the rest of one begun before)."""


def _follow(
    tmp_path: Path, name: str, path: Path, parser: str = "auto", **kw: Any
) -> tuple[FileSource, list[LineBatch]]:
    """A file source started on ``path`` from its beginning, and the batches it hands on."""
    batches: list[LineBatch] = []
    source = FileSource(
        FileSourceConfig(
            name=name,
            type="file",
            paths=[str(path)],
            parser=parser,
            start_at="beginning",
            poll_interval=0.1,
            **kw,
        ),
        clock=SystemClock(),
        state_dir=tmp_path / "state",
    )
    source.start(lambda batch: batches.append(batch) if isinstance(batch, LineBatch) else None)
    return source, batches


def _parser(**kw: Any) -> ContainerParser:
    """A container parser that has read each stream's first line (see :data:`FIRST`)."""
    parser = build_parser("container", ParserContext(source="c", **kw))
    assert isinstance(parser, ContainerParser)
    assert parser.parse_many(FIRST) == []
    assert parser.doubtful == len(FIRST)
    assert parser.take_notices() == []
    return parser


@pytest.mark.parametrize("make", [docker, cri], ids=["docker", "cri"])
def test_both_streams_are_read_by_the_parser_of_each_line(make: Callable[..., str]) -> None:
    """Access lines and error-log lines of one file, on either stream, give their events:
    the line's shape, not its stream, picks the parser."""
    parser = _parser()
    lines = [
        make(_access(0)),
        make(ERROR, "stderr"),
        make(_access(1, path="/.git/config"), "stderr"),
        make(ERROR.replace("192.0.2.3", "192.0.2.4"), "stdout"),
    ]
    events = parser.parse_many(lines)
    assert [type(e) for e in events] == [HttpRequest, HttpAuthFailure, HttpRequest, HttpAuthFailure]
    first, auth, second, other = events
    assert isinstance(first, HttpRequest)
    assert isinstance(second, HttpRequest)
    assert (first.client, first.path, first.status, first.ts) == ("203.0.113.9", "/.env", 404, T0)
    assert second.path == "/.git/config"
    assert isinstance(auth, HttpAuthFailure)
    assert isinstance(other, HttpAuthFailure)
    assert (auth.client, auth.user, auth.reason) == ("192.0.2.3", "bob", "password_mismatch")
    assert other.client == "192.0.2.4"
    assert parser.unrecognised(lines, len(events)) == 0


def test_an_error_line_takes_its_records_utc_time_an_access_line_keeps_its_own() -> None:
    """The error log's zoneless local time (the container's zone) is replaced by the
    record's UTC time; an access line's own time (with its offset) is the event's."""
    parser = _parser()
    auth, request = parser.parse_many([docker(ERROR, "stderr"), cri(_access(3))])
    assert auth.ts == pytest.approx(T0 + 5.123456789)
    assert request.ts == T0 + 3


def test_json_escapes_are_decoded_exactly() -> None:
    """Escaped quotes, backslashes (nginx's own \\x22), Go's \\u0026 \\u003c \\u003e and
    \\u00XX control escapes come out as the characters nginx wrote."""
    line = (
        f'203.0.113.9 - - [{nginx_ts(T0)}] "GET /a?b=1&c=<2> HTTP/1.1" 404 1 "-" "x\\x22y\u0001z"'
    )
    record = docker(line)
    assert "\\u0026" in record
    assert "\\u003c" in record
    assert "\\u0001" in record
    assert '\\"' in record
    assert "\\\\x22" in record
    [event] = _parser().parse_many([record])
    assert isinstance(event, HttpRequest)
    assert event.path == "/a?b=1&c=<2>"
    assert event.user_agent == "x\\x22y\u0001z"


def test_an_nginx_json_line_in_a_record_is_read_by_nginx_json() -> None:
    """nginx's escape=json line, escaped again by Docker, is the JSON access format."""
    inner = json.dumps(
        {
            "time": "2026-12-07T21:00:02+00:00",
            "remote_addr": "198.51.100.7",
            "request_uri": '/v1/chat?q="hi"',
            "status": "401",
            "http_user_agent": "sdk & co",
        }
    )
    [event] = _parser().parse_many([docker(inner)])
    assert isinstance(event, HttpRequest)
    assert (event.client, event.path, event.status, event.ts) == (
        "198.51.100.7",
        '/v1/chat?q="hi"',
        401,
        T0 + 2,
    )
    assert event.user_agent == "sdk & co"


def test_records_in_another_key_order_or_with_attrs_are_decoded_whole() -> None:
    """Docker's ``attrs`` (log-opt labels/tag) and any key order or blanks are read."""
    with_attrs = json.dumps(
        {"log": _access() + "\n", "stream": "stdout", "attrs": {"tag": "web"}, "time": WHEN}
    )
    reordered = json.dumps({"time": WHEN, "stream": "stderr", "log": ERROR + "\r\n"})
    events = _parser().parse_many([with_attrs, reordered])
    assert [type(e) for e in events] == [HttpRequest, HttpAuthFailure]


@pytest.mark.parametrize("batches", [1, 5], ids=["one-batch", "record-per-batch"])
def test_a_docker_line_split_over_records_is_joined_per_stream(batches: int) -> None:
    """Pieces (no trailing newline) are joined to the stream's record that ends the line,
    the other stream's records between them read on their own, across batches too."""
    line = _access(path="/wp-login.php?" + "a" * 100)
    records = [
        docker(line[:30], end=""),
        docker(ERROR, "stderr"),
        docker(line[30:90], end=""),
        docker(_access(2, ip="192.0.2.50", path="/x"), "stderr"),
        docker(line[90:]),
    ]
    parser = _parser()
    events = []
    size = len(records) // batches
    for at in range(0, len(records), size):
        events += parser.parse_many(records[at : at + size])
    assert [type(e) for e in events] == [HttpAuthFailure, HttpRequest, HttpRequest]
    joined = events[2]
    assert isinstance(joined, HttpRequest)
    assert joined.path == "/wp-login.php?" + "a" * 100
    assert joined.client == "203.0.113.9"
    assert parser.broken == parser.cut == parser.malformed == 0


def test_a_cri_line_split_over_p_records_is_joined() -> None:
    """CRI ``P`` records continue in the stream's next record, up to its ``F``."""
    line = _access(path="/.git/config")
    parser = _parser()
    records = [cri(line[:20], tag="P"), cri(ERROR, "stderr"), cri(line[20:], tag="F")]
    events = parser.parse_many(records)
    assert [type(e) for e in events] == [HttpAuthFailure, HttpRequest]
    request = events[1]
    assert isinstance(request, HttpRequest)
    assert (request.client, request.path, request.ts) == ("203.0.113.9", "/.git/config", T0)
    assert parser.unrecognised(records, len(events)) == 0


def test_a_joined_line_longer_than_the_cap_is_handed_on_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pieces beyond the cap are dropped; the line is read cut (its request so far),
    counted and told once."""
    monkeypatch.setattr(container_module, "LINE_BYTES", 120)
    line = _access(path="/.env?" + "b" * 300)
    parser = _parser()
    pieces = [line[at : at + 50] for at in range(0, len(line), 50)]
    records = [cri(piece, tag="P") for piece in pieces[:-1]] + [cri(pieces[-1])]
    [event] = parser.parse_many(records)
    assert isinstance(event, HttpRequest)
    assert event.client == "203.0.113.9"
    assert event.status == 0  # nginx's cut_request: the outcome was after the cut
    assert event.path.startswith("/.env?bbb")
    assert parser.cut == 1
    [(notice, _fields)] = parser.take_notices()
    assert "longer than 120 bytes" in notice


def test_the_line_cap_of_the_format_holds_a_record_of_a_whole_access_line() -> None:
    """A source's cap for ``container`` is above the access formats' line cap."""
    assert line_cap("container") > ACCESS_LINE_BYTES
    assert container_module.LINE_BYTES == ACCESS_LINE_BYTES


def test_malformed_records_are_skipped_counted_and_never_fatal() -> None:
    """Broken JSON, a record without a string ``log``, a JSON array and plain text give no
    event, count as not of the format, and are told once; the stream's next line is
    dropped (it may be the rest of one of them), the lines after it are read."""
    parser = _parser()
    bad = [
        '{"log":"203.0.113.9 - - [07/Dec/2026:21:00:00 +0000] \\"GET /.env',
        '{"log": 5, "stream": "stdout"}',
        "[1, 2]",
        '{"log":"\\ud800 x\\q","stream":"stdout","time":"x"}',
        "not a container log",
    ]
    lines = [*bad, docker(_access()), docker(_access(1, path="/read"))]
    events = parser.parse_many(lines)
    assert [e.path for e in events if isinstance(e, HttpRequest)] == ["/read"]
    assert len(events) == 1
    assert (parser.malformed, parser.doubtful) == (len(bad), len(FIRST) + 1)
    assert parser.unrecognised(lines, len(events)) == len(bad)
    notices = parser.take_notices()
    assert len(notices) == 1
    assert "not Docker json-file or CRI records" in notices[0][0]


def test_a_malformed_record_drops_the_lines_being_joined() -> None:
    """A piece is never joined across an unreadable record (it may have held the middle):
    the pending line is dropped and counted broken; the next record starts afresh."""
    line = _access(path="/.env")
    parser = _parser()
    records = [docker(line[:30], end=""), '{"log":"trunc', docker(line[30:]), docker(_access())]
    events = parser.parse_many(records)
    assert [e.path for e in events if isinstance(e, HttpRequest)] == ["/.env"]
    assert parser.broken == 1
    assert len(events) == 1  # the orphan tail is no line of its own


def test_a_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    """A ``\\udcff`` escape not in a pair (UTF-8 cannot encode it) is read as U+FFFD."""
    record = docker(_access()).replace("Mozilla", "Moz\\udcffilla")
    [event] = _parser().parse_many([record])
    assert isinstance(event, HttpRequest)
    assert event.user_agent.startswith("Moz\ufffdilla")
    event.user_agent.encode("utf-8")


def test_lines_of_the_apps_own_output_are_not_of_the_format() -> None:
    """Another program's lines in the container (any stream) are unrecognised, as in a
    plain file; nginx's own notices and the error log's other lines are recognised."""
    parser = _parser()
    app = [
        docker("INFO:     Started server process [1]"),
        docker("2026/12/07 21:00:00 listening on :8080", "stderr"),
        cri("2026-12-07 21:00:00,123 INFO uvicorn ready"),
        docker('{"level":"info","msg":"ready"}'),
    ]
    nginx = [
        docker('2026/12/07 21:00:00 [notice] 1#1: using the "epoll" event method', "stderr"),
        docker(_access()),
    ]
    lines = [*app, *nginx]
    events = parser.parse_many(lines)
    assert len(events) == 1
    assert parser.unrecognised(lines, len(events)) == len(app)
    fresh = _parser()  # not the batch parse_many read: each record asked alone
    assert fresh.unrecognised(list(lines), len(events)) == len(app)


def test_sshd_lines_with_a_syslog_header_are_read_and_bare_messages_are_not() -> None:
    """An sshd line with its header gives its event at the record's time; a bare message
    (sshd -e), which any program of the container could print, gives none; a user agent
    naming sshd stays an access line."""
    parser = _parser(clock=FakeClock(T0))
    header = "2026-12-07T22:00:01+01:00 box sshd[42]: Failed password for root from "
    lines = [
        docker(header + "198.51.100.3 port 5 ssh2", "stderr"),
        docker("Failed password for root from 198.51.100.4 port 5 ssh2\r", "stderr"),
        docker(_access().replace("Mozilla/5.0", "x sshd[1]: y")),
    ]
    events = parser.parse_many(lines)
    assert [type(e) for e in events] == [SshEvent, HttpRequest]
    assert isinstance(events[0], SshEvent)
    assert events[0].client == "198.51.100.3"
    assert events[0].ts == pytest.approx(T0 + 5.123456789)


def test_inner_parsers_get_the_context_trusted_proxies_and_their_tables() -> None:
    """Trusted proxies and forwarded_header reach the access parser (the client is the
    X-Forwarded-For address), and each inner parser gets its own [parsers.<name>] table."""
    table = NginxAccessConfig()
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    parser = _parser(trusted_proxies=nets, forwarded_header="real_ip", tables={"nginx": table})
    line = _access(ip="10.0.0.2") + ' "203.0.113.77"'
    [event] = parser.parse_many([docker(line)])
    assert isinstance(event, HttpRequest)
    assert event.client == "203.0.113.77"
    inner = {p.name: p for p in parser._inner}
    assert inner["nginx"].options is table
    assert inner["nginx-json"].options is None
    assert inner["nginx"].ctx.trusted_proxies == nets
    assert inner["nginx-json"].ctx.forwarded_header == "real_ip"


def test_the_pipeline_hands_the_parsers_tables_to_the_context(tmp_path: Path) -> None:
    """The pipeline's parser context carries every [parsers.<name>] table."""
    config = ParsersConfig().with_tables({"nginx": NginxAccessConfig()})
    parser = _pipeline(tmp_path, parsers_config=config).parser_for("c", "container")
    assert isinstance(parser, ContainerParser)
    assert parser.ctx.tables == config.tables()


def test_auto_sniffs_docker_and_cri_logs_as_container_whatever_they_hold() -> None:
    """Docker json-file and CRI records are sniffed as ``container``, also a container
    log of another program (which then reads as blind); plain nginx lines are not."""
    assert sniff([docker(_access(i)) for i in range(5)]) == "container"
    assert sniff([cri(ERROR, "stderr")] * 3 + [cri(_access())]) == "container"
    assert sniff([docker("INFO: ready")] * 5) == "container"
    assert sniff([_access(i) for i in range(5)]) == "nginx"


def test_a_container_log_of_another_program_makes_the_source_blind(tmp_path: Path) -> None:
    """A container source whose records hold another program's lines is reported blind;
    one of nginx with its entrypoint's lines and notices is not."""
    pipeline = _pipeline(tmp_path)
    other = [docker(f"INFO: request {i} handled") for i in range(300)]
    nginx = [
        docker("/docker-entrypoint.sh: Configuration complete; ready for start up"),
        docker("2026/12/07 21:00:00 [notice] 1#1: start worker process 29", "stderr"),
        *[docker(_access(i)) for i in range(298)],
    ]
    with capture_logs() as logs:
        for at in range(0, 300, 20):
            pipeline.process(LineBatch("app", "container", other[at : at + 20], 0.0))
            pipeline.process(LineBatch("web", "container", nginx[at : at + 20], 0.0))
    blind = [e["source"] for e in logs if e["event"].startswith("source is blind")]
    assert blind == ["app"]
    assert pipeline.sources["web"].parsed == 298


def test_a_scan_in_a_docker_log_is_detected_through_the_file_source(tmp_path: Path) -> None:
    """A file source (``parser = "auto"``, a glob over containers' logs) reads a Docker
    json-file log, a line split over two appends included, and the scanning detector
    bans the scanner."""
    directory = tmp_path / "containers" / "4f1c0a9e2b7d"
    directory.mkdir(parents=True)
    log = directory / "4f1c0a9e2b7d-json.log"
    log.write_text(
        docker(ENTRYPOINT)
        + "\n"
        + docker("2026/12/07 22:00:00 [notice] 1#1: nginx/1.27.3", "stderr")
        + "\n"
        + docker(_access(0, path="/.env"))
        + "\n"
        + docker(_access(1, path="/.git/config"))
        + "\n",
        encoding="utf-8",
    )
    source, batches = _follow(tmp_path, "docker", tmp_path / "containers" / "*" / "*-json.log")
    try:
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 4, "the first records")
        third = _access(2, path="/wp-login.php")
        append(log, (docker(third[:25], end="") + "\n").encode())
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 5, "the piece")
        append(log, (docker(third[25:]) + "\n").encode())
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 6, "the rest")
    finally:
        source.stop()
    assert {b.parser for b in batches} == {"container"}
    found: list[Finding] = []
    pipeline = _pipeline(tmp_path, detectors=build_detectors({}), on_finding=found.append)
    for batch in batches:
        pipeline.process(batch)
    scans = [f for f in found if f.detector == "scanning"]
    assert [(f.client, f.count) for f in scans] == [("203.0.113.9", 3)]
    assert pipeline.sources["docker"].parsed == 3


def test_a_piece_of_a_cut_record_marks_its_line_cut() -> None:
    """A CRI record cut by the source's cap (a CutLine) hands on a cut line."""
    parser = _parser()
    line = _access(path="/.env?" + "c" * 50)
    [event] = parser.parse_many([CutLine(cri(line[:60]))])
    assert isinstance(event, HttpRequest)
    assert event.status == 0


def test_fuzz_never_raises() -> None:
    """Random text and mutated Docker and CRI records (pieces, both streams, escapes)
    never make parse_many or unrecognised raise, and nothing pending grows unbounded."""
    rng = random.Random(4321)
    alphabet = string.printable + '\x00\ufeff\u2028\\[]"{}:,PF'
    samples = [
        docker(_access()),
        docker(ERROR, "stderr"),
        docker(_access()[:20], end=""),
        cri(_access()[:20], tag="P"),
        cri(ERROR, "stderr"),
        json.dumps({"time": WHEN, "log": "x\n", "attrs": {"a": 1}}),
    ]
    parser = _parser()
    for _ in range(300):
        batch = []
        for _ in range(10):
            text = fuzz_text(rng, samples, alphabet) if rng.random() < 0.6 else rng.choice(samples)
            batch.append(CutLine(text) if rng.random() < 0.1 else text)
        events = parser.parse_many(batch)
        missed = parser.unrecognised(batch, len(events))
        assert missed is not None
        assert 0 <= missed <= len(batch)
        assert len(parser._pending) <= 3


def test_pieces_of_unknown_streams_share_one_pending_line() -> None:
    """Docker records naming streams other than stdout/stderr are pieces of one line
    (a file cannot make the parser hold a pending line per stream name it invents)."""
    parser = _parser()
    records = [json.dumps({"log": "x" * 10, "stream": f"s{i}", "time": WHEN}) for i in range(50)]
    assert parser.parse_many(records) == []
    assert len(parser._pending) == 1


def test_untrusted_local_proxy_in_a_container_log_is_a_problem_of_the_source() -> None:
    """An nginx container behind an untrusted proxy on loopback (every client 127.0.0.1,
    the real one in X-Forwarded-For) shows as the source's problem, as in a plain file."""
    parser = _parser()
    line = nginx_line(T0, "127.0.0.1", "/api/tags", 200) + ' "198.51.100.9"'
    events = parser.parse_many([docker(line)] * 300)
    assert {e.client for e in events if isinstance(e, HttpRequest)} == {"127.0.0.1"}
    [(kind, problem)] = parser.problems()
    assert kind == "untrusted_local_proxy"
    assert problem.startswith("every client is 127.0.0.1")
    assert any("trusted_proxies" in message for message, _ in parser.take_notices())


# ---------------------------------------------------------------- forged line starts

VICTIM = "203.0.113.77"
ATTACKER = "198.51.100.66"


def _framing(i: int = 0, at: int = 16384) -> str:
    """An access line of ATTACKER whose request holds ``<`` up to byte ``at`` (Docker
    writes each as a 6-byte escape), then an error-log line naming VICTIM (nginx does
    not escape ``'`` or ``,``): read from byte ``at`` alone, that line frames VICTIM."""
    head = f'{ATTACKER} - - [{nginx_ts(T0 + i)}] "GET /'
    forged = (
        f"2026/12/07 21:00:0{i} [error] 1#1: *{i} PAM: user 'root' - not authenticated: x, "
        f"client: {VICTIM}, server: s"
    )
    return head + "<" * (at - len(head)) + forged + ' HTTP/1.1" 400 157 "-" "curl/8"'


def _split(line: str, stream: str = "stdout", size: int = 16384) -> list[str]:
    """``line`` as Docker's records of its pieces of ``size`` characters."""
    pieces = [line[at : at + size] for at in range(0, len(line), size)]
    return [docker(p, stream, end="") for p in pieces[:-1]] + [docker(pieces[-1], stream)]


def test_the_rest_of_a_line_after_an_unreadable_record_is_never_a_line_start() -> None:
    """A record cut by the source's cap (unreadable: its stream is lost with its end)
    puts every stream in doubt: the next line of each is dropped, never read as a line
    of its own (it would be the client's forged error-log line); the lines after are."""
    parser = _parser()
    first, rest = _split(_framing())
    assert len(first) > 65536
    records = [
        CutLine(first[:65536]),
        rest,
        docker(ERROR, "stderr"),
        docker(_access(1, path="/after")),
        docker(ERROR.replace("192.0.2.3", "192.0.2.4"), "stderr"),
    ]
    events = parser.parse_many(records)
    assert VICTIM not in {getattr(e, "client", "") for e in events}
    assert [(type(e), e.client) for e in events] == [  # type: ignore[attr-defined]
        (HttpRequest, "203.0.113.9"),
        (HttpAuthFailure, "192.0.2.4"),
    ]
    assert (parser.malformed, parser.doubtful) == (1, len(FIRST) + 2)
    [(notice, _fields)] = parser.take_notices()
    assert "and so is the next line of each stream" in notice


FORGED = (
    f"2026/12/07 21:00:00 [error] 1#1: *1 PAM: user 'root' - not authenticated: x, "
    f"client: {VICTIM}, server: s"
)
"""An error-log line naming VICTIM: what a client may write from byte 16384 on."""
SSHD_FORGED = f"Dec  7 21:00:00 web sshd[99]: Failed password for root from {VICTIM} port 22 ssh2"


@pytest.mark.parametrize("make", [docker, cri], ids=["docker", "cri"])
def test_a_stream_in_doubt_drops_a_whole_split_line_and_reads_the_next(
    make: Callable[..., str],
) -> None:
    """In doubt (after an unreadable record), a line of several records is dropped up to
    the record ending it (a piece that ends no line keeps it dropped): pieces that would
    join into a forged line read as nothing; the stream's next line is read."""
    parser = _parser()
    if make is docker:
        rest = [docker(FORGED[:30], end=""), docker(FORGED[30:60], end=""), docker(FORGED[60:])]
    else:
        rest = [cri(FORGED[:30], tag="P"), cri(FORGED[30:60], tag="P"), cri(FORGED[60:])]
    events = parser.parse_many(["{broken", *rest, make(_access(2, path="/next"))])
    assert [(type(e), e.client) for e in events] == [(HttpRequest, "203.0.113.9")]  # type: ignore[attr-defined]
    assert parser.doubtful == len(FIRST) + 1


@pytest.mark.parametrize("payload", [FORGED, SSHD_FORGED], ids=["error", "sshd"])
def test_a_new_parser_never_reads_a_continuation_as_a_line_start(payload: str) -> None:
    """A parser built after the head of a split line was read (a restart, a reload, a
    start at the end) drops each stream's first line: the rest of the line (a line of
    the client's choosing) is never read as a line start; the stream's next lines are."""
    head = f'{ATTACKER} - - [{nginx_ts(T0)}] "GET /'
    records = _split(head + "a" * (16384 - len(head)) + payload)
    assert len(records) == 2
    parser = build_parser("container", ParserContext(source="c", clock=FakeClock(T0)))
    assert isinstance(parser, ContainerParser)
    events = parser.parse_many([records[1], docker(_access(3, path="/next"))])
    assert [(type(e), e.client) for e in events] == [(HttpRequest, "203.0.113.9")]  # type: ignore[attr-defined]
    assert parser.doubtful == 1
    assert parser.take_notices() == []  # a start is no fault


def test_a_reload_of_the_parsers_in_a_split_line_forges_nothing(tmp_path: Path) -> None:
    """A [parsers] reload between the records of a split line builds a new parser: the
    line's rest is dropped, not read as the client's error-log line."""
    pipeline = _pipeline(tmp_path)
    head, rest = _split(_framing().replace("<", "a"))
    pipeline.process(LineBatch("web", "container", [*FIRST, head], 0.0))
    pipeline.reconfigure(
        detectors=[],
        engine=pipeline.engine,
        runner=None,
        parsers_config=ParsersConfig(forwarded_header="real_ip"),
    )
    pipeline.process(LineBatch("web", "container", [rest, docker(_access(4))], 0.0))
    counters = pipeline.sources["web"]
    assert counters.parsed == 1  # the access line after it, nothing of the split one


class Seen(Detector):
    """Records the requests it observes: (client, path)."""

    name = "seen"
    consumes = (HttpRequest,)

    def __init__(self) -> None:
        super().__init__(DetectorConfigBase())
        self.seen: list[tuple[str, str]] = []

    def observe(self, event: Event) -> Finding | None:
        assert isinstance(event, HttpRequest)
        self.seen.append((event.client, event.path))
        return None

    def expire(self, now: float) -> int:
        return 0

    def tracked_keys(self) -> int:
        return 0


def test_a_parse_many_that_raises_leaves_the_pieces_as_they_were(tmp_path: Path) -> None:
    """When parse_many raises, the pipeline parses the batch again line by line: the
    pieces it had joined are as before it, so the line is joined once, whole, and its
    rest is not read as a line of its own."""
    seen = Seen()
    pipeline = _pipeline(tmp_path, detectors=[seen])
    parser = pipeline.parser_for("web", "container")
    assert isinstance(parser, ContainerParser)
    parser.parse_many(FIRST)
    line = _access(5, path="/" + "p" * 60)
    at = line.index("/ppp") + 20
    pieces = [
        docker(line[:at], end=""),
        docker(line[at : at + 20], end=""),
        docker(line[at + 20 :]),
    ]
    access = parser._inner[0]
    real = access.parse_many
    calls = []

    def flaky(lines: Any) -> Any:
        calls.append(len(lines))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(lines)

    access.parse_many = flaky  # type: ignore[method-assign]
    pipeline.process(LineBatch("web", "container", pieces[:1], 0.0))
    with capture_logs():
        pipeline.process(LineBatch("web", "container", [*pieces[1:], docker(_access(6))], 0.0))
    assert calls[0] == 2  # it raised with the joined line and the next in the batch
    assert seen.seen == [("203.0.113.9", "/" + "p" * 60), ("203.0.113.9", "/.env")]
    assert pipeline.sources["web"].parsed == 2


@pytest.mark.parametrize(
    ("parser", "cap"), [("auto", None), ("container", 65536)], ids=["auto", "cap-64k"]
)
def test_a_client_cannot_frame_an_address_through_the_file_source(
    tmp_path: Path, parser: str, cap: int | None
) -> None:
    """Six requests each holding a forged error-log line at byte 16384 after ``<``s (a
    Docker record of ~98 KB): read by a file source and the default detectors, VICTIM is
    never found. With ``auto`` the records are read whole while the format is sniffed,
    so ATTACKER's requests are seen; with a cap that cuts them, they are dropped."""
    log = tmp_path / "c-json.log"
    records = [docker(ENTRYPOINT), docker(NOTICE, "stderr")]
    for i in range(6):
        records += _split(_framing(i))
    log.write_text("\n".join(records) + "\n", encoding="utf-8")
    extra = {} if cap is None else {"max_line_bytes": cap}
    source, batches = _follow(tmp_path, "web", log, parser=parser, **extra)
    try:
        wait_for(lambda: sum(len(b.lines) for b in batches) >= len(records), "the records")
    finally:
        source.stop()
    found: list[Finding] = []
    seen = Seen()
    pipeline = _pipeline(tmp_path, detectors=[*build_detectors({}), seen], on_finding=found.append)
    with capture_logs():
        for batch in batches:
            pipeline.process(batch)
    assert VICTIM not in {f.client for f in found}
    if cap is None:
        assert source.stats.lines_truncated == 0
        assert [client for client, _path in seen.seen] == [ATTACKER] * 6
    else:
        assert source.stats.lines_truncated == 6
        assert seen.seen == []


def test_a_client_cannot_frame_an_address_through_a_truncating_rotation(
    tmp_path: Path,
) -> None:
    """Docker's max-size with max-file=1 truncates the file: a request's head record
    fills it, its rest (a forged error-log line naming VICTIM) lands at byte 0 of the
    truncated file. The file source reads from 0 with a new origin: that rest is dropped
    as its stream's first line, never read as a line start, and VICTIM is never found."""
    log = tmp_path / "c-json.log"
    log.write_text(f"{docker(ENTRYPOINT)}\n{docker(NOTICE, 'stderr')}\n", encoding="utf-8")
    source = FileSource(
        FileSourceConfig(
            name="web",
            type="file",
            paths=[str(log)],
            parser="container",
            start_at="beginning",
            inotify=False,
        ),
        clock=SystemClock(),
        state_dir=tmp_path / "state",
    )
    batches: list[LineBatch] = []
    source._emit = lambda batch: batches.append(batch) if isinstance(batch, LineBatch) else None
    source._first_scan()  # driven by hand, one turn at a time: no reader thread
    for i in range(6):
        head, rest = _split(_framing(i).replace("<", "a"))
        with log.open("a", encoding="utf-8") as out:
            out.write(head + "\n")  # the write that fills the file
        with log.open("r+b") as out:
            out.truncate(0)  # max-size reached, max-file=1: truncated in place
        with log.open("a", encoding="utf-8") as out:
            out.write(rest + "\n")  # the rest of the line, at byte 0
        with capture_logs():
            source._cycle(full=True)
    source._close_all()
    assert source.stats.gaps == 6
    assert len({b.origin for b in batches}) == 7  # the file as opened, then each truncation
    found: list[Finding] = []
    pipeline = _pipeline(tmp_path, detectors=build_detectors({}), on_finding=found.append)
    with capture_logs():
        for batch in batches:
            pipeline.process(batch)
    assert VICTIM not in {f.client for f in found}
    assert pipeline.sources["web"].parsed == 0


def test_records_of_two_origins_are_never_joined_and_each_keeps_its_state() -> None:
    """Lines being joined are kept per origin (a glob's files, a rotated file and its
    successor): another origin's records neither continue nor end them, a new origin's
    first line is dropped (its streams are in doubt), and back on the first origin its
    line is joined whole from its own records."""
    parser = _parser()
    parser.begin(1)
    line = _access(1, path="/" + "p" * 60)
    assert parser.parse_many(FIRST) == []
    assert parser.parse_many([docker(line[:40], end="")]) == []
    parser.begin(2)  # another file: in doubt, its first line dropped whatever it holds
    assert parser.parse_many([docker(FORGED, "stdout")]) == []
    assert parser.parse_many([docker(_access(2, path="/two"))])[0].path == "/two"  # type: ignore[attr-defined]
    parser.begin(1)
    [event] = parser.parse_many([docker(line[40:])])
    assert (event.client, event.path) == ("203.0.113.9", "/" + "p" * 60)  # type: ignore[attr-defined]
    parser.begin(3)
    assert parser.parse_many([docker(FORGED, "stderr")]) == []


def test_the_state_of_origins_not_read_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ORIGINS_KEPT other origins (or KEPT_BYTES of their lines being joined), the
    longest unread one's state is dropped: read again, its streams are in doubt."""
    monkeypatch.setattr(container_module, "ORIGINS_KEPT", 2)
    parser = _parser()
    for origin in (1, 2, 3):
        parser.begin(origin)
        parser.parse_many([*FIRST, docker("x" * 100, end="")])
    parser.begin(4)
    assert set(parser._kept) == {2, 3}
    assert parser._kept_bytes == 200
    parser.begin(1)  # dropped: in doubt again, its piece's rest is no line start
    assert parser.parse_many([docker(FORGED), docker("y" * 100, end="")]) == []
    monkeypatch.setattr(container_module, "KEPT_BYTES", 150)
    parser.begin(5)  # 3 (not read since) and 1 hold 100 bytes each: 3 is dropped
    assert set(parser._kept) == {1}
    assert parser._kept_bytes == 100


def test_a_record_whose_parse_raises_drops_the_line_it_ends_and_puts_streams_in_doubt() -> None:
    """When parse() raises on the record ending a split line (the pipeline skips it),
    the line's head is dropped and every stream is in doubt: the stream's next record
    (another client's line) is neither appended to that head nor read as a line start."""
    parser = _parser()
    head, rest = _split(_framing().replace("<", "a"))
    error = parser._inner[2]
    real = error.parse

    def boom(text: str) -> Any:
        if VICTIM in text:
            raise RuntimeError("inner parser bug")
        return real(text)

    error.parse = boom  # type: ignore[method-assign]
    fake = head.replace(ATTACKER, "2026/12/07 21:00:00 [error] 1#1: x client: " + VICTIM)
    assert parser.parse(fake) is None
    with pytest.raises(RuntimeError):
        parser.parse(rest)
    assert parser._pending == {}
    assert parser.broken == 1
    assert parser.parse(docker(FORGED)) is None
    assert parser.parse(docker(_access(3, path="/next"))).path == "/next"  # type: ignore[union-attr]
