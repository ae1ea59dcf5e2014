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
from aisentinel.events import CutLine, Finding, HttpAuthFailure, HttpRequest, LineBatch, SshEvent
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


def _parser(**kw: Any) -> ContainerParser:
    parser = build_parser("container", ParserContext(source="c", **kw))
    assert isinstance(parser, ContainerParser)
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
    event, count as not of the format, and are told once; the lines after them are read."""
    parser = _parser()
    bad = [
        '{"log":"203.0.113.9 - - [07/Dec/2026:21:00:00 +0000] \\"GET /.env',
        '{"log": 5, "stream": "stdout"}',
        "[1, 2]",
        '{"log":"\\ud800 x\\q","stream":"stdout","time":"x"}',
        "not a container log",
    ]
    lines = [*bad, docker(_access())]
    events = parser.parse_many(lines)
    assert [type(e) for e in events] == [HttpRequest]
    assert parser.malformed == len(bad)
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
        docker("2026/12/07 22:00:00 [notice] 1#1: nginx/1.27.3", "stderr")
        + "\n"
        + docker(_access(0, path="/.env"))
        + "\n"
        + docker(_access(1, path="/.git/config"))
        + "\n",
        encoding="utf-8",
    )
    batches: list[LineBatch] = []
    source = FileSource(
        FileSourceConfig(
            name="docker",
            type="file",
            paths=[str(tmp_path / "containers" / "*" / "*-json.log")],
            parser="auto",
            start_at="beginning",
            poll_interval=0.1,
        ),
        clock=SystemClock(),
        state_dir=tmp_path / "state",
    )
    source.start(lambda batch: batches.append(batch) if isinstance(batch, LineBatch) else None)
    try:
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 3, "the first records")
        third = _access(2, path="/wp-login.php")
        append(log, (docker(third[:25], end="") + "\n").encode())
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 4, "the piece")
        append(log, (docker(third[25:]) + "\n").encode())
        wait_for(lambda: sum(len(b.lines) for b in batches) >= 5, "the rest")
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
    [problem] = parser.problems()
    assert problem.startswith("every client is 127.0.0.1")
    assert any("trusted_proxies" in message for message, _ in parser.take_notices())
