"""structlog -> journald: field mapping, priorities, and the real wire format."""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import structlog

from aisentinel.journal import (
    SUMMARY_LIMIT,
    SUMMARY_VALUE_LIMIT,
    JournalRenderer,
    field_name,
    journal_available,
    stderr_is_journal,
    syslog_priority,
)
from aisentinel.logsetup import LogOutput
from aisentinel.textsafe import TRUNCATED

HAS_SYSTEMD_PYTHON = importlib.util.find_spec("systemd") is not None
REPO = Path(__file__).resolve().parents[1]


class FakeSendv:
    """Records the FIELD=value arguments of each call."""

    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.error = error

    def __call__(self, *fields: str) -> None:
        self.calls.append(fields)
        if self.error is not None:
            raise self.error

    def last(self) -> dict[str, str]:
        """The last entry as a dict."""
        return dict(item.split("=", 1) for item in self.calls[-1])


def _fail() -> None:
    raise RuntimeError("disk on fire")


def _logger(sendv: FakeSendv) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            JournalRenderer(sendv=sendv),
        ],
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("client_ip", "CLIENT_IP"),
        ("api-key.id", "API_KEY_ID"),
        ("_private", "PRIVATE"),
        ("2fa", "F_2FA"),
        ("x" * 80, "X" * 64),
        ("__", "FIELD"),
    ],
)
def test_field_names_are_valid_journal_fields(key: str, expected: str) -> None:
    """Keys become upper-case A-Z0-9_ names, never leading '_' or digit, at most 64 long."""
    assert field_name(key) == expected


def test_priorities_follow_syslog() -> None:
    """structlog level names map to syslog priorities; unknown names are info."""
    assert [syslog_priority(x) for x in ("critical", "error", "warning", "info", "debug")] == [
        2,
        3,
        4,
        6,
        7,
    ]
    assert syslog_priority("WARN") == 4
    assert syslog_priority("chatty") == 6


def test_event_becomes_message_priority_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """An event is sent as MESSAGE, PRIORITY, identifier and upper-cased fields, and dropped."""
    sendv = FakeSendv()
    _logger(sendv).warning(
        "ban decided", client_ip="203.0.113.7", count=5, tags=["ssh", "brute"], extra=None
    )
    entry = sendv.last()
    assert sendv.calls[-1][0] == "MESSAGE=ban decided client_ip=203.0.113.7 count=5 tags=ssh,brute"
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "aisentinel"
    assert entry["CLIENT_IP"] == "203.0.113.7"
    assert entry["COUNT"] == "5"
    assert json.loads(entry["TAGS"]) == ["ssh", "brute"]
    assert not {"EXTRA", "LEVEL", "TIMESTAMP", "EVENT"} & entry.keys()
    assert capsys.readouterr().out == ""


def test_message_is_the_event_and_its_key_fields_first() -> None:
    """MESSAGE names detector, action, target, client, severity, reason and message
    first, then the other fields as logged; tracebacks, call sites and evidence stay out."""
    fields = JournalRenderer(sendv=FakeSendv()).fields(
        "info",
        {
            "event": "decision",
            "ttl": 3600.0,
            "reason": "high finding, offence 1",
            "message": "6 failed logins",
            "severity": "high",
            "target": "203.0.113.7",
            "action": "ban",
            "detector": "ssh_bruteforce",
            "simulated": False,
            "evidence": ["line 1", "line 2"],
            "workload": {"id": "42", "exe": "/x"},
            "exception": "Traceback (most recent call last):\n  boom",
            "lineno": 7,
            "timestamp": "2026-12-07T10:00:00Z",
        },
    )
    assert fields[0] == (
        "MESSAGE=decision detector=ssh_bruteforce action=ban target=203.0.113.7 "
        'severity=high reason="high finding, offence 1" message="6 failed logins" '
        "ttl=3600.0 simulated=false workload=id:42,exe:/x"
    )
    entry = dict(item.split("=", 1) for item in fields)
    assert entry["EVIDENCE"] == '["line 1", "line 2"]'  # in its own field only
    assert entry["TARGET"] == "203.0.113.7"  # the structured fields as before
    assert entry["EXCEPTION"].startswith("Traceback")
    assert entry["CODE_LINE"] == "7"


def test_message_escapes_attacker_text_and_quotes() -> None:
    """A value with a newline, ESC, a bidi override or a quote stays inside its one
    quoted, escaped value: no forged line, no forged field, nothing for the terminal."""
    evil = 'x"\n2026-01-01 decision detector=fake action=ban\x1b[2J\u202e'
    fields = JournalRenderer(sendv=FakeSendv()).fields(
        "info", {"event": "decision", "key": evil, "detector": "ssh_bruteforce"}
    )
    message = fields[0].removeprefix("MESSAGE=")
    assert message == (
        "decision detector=ssh_bruteforce "
        'key="x\\"\\n2026-01-01 decision detector=fake action=ban\\x1b[2J\\u202e"'
    )
    assert message.isprintable()
    assert dict(item.split("=", 1) for item in fields)["KEY"] == evil


def test_message_is_bounded() -> None:
    """A long value is cut at SUMMARY_VALUE_LIMIT characters; fields beyond
    SUMMARY_LIMIT are left out of MESSAGE and counted, but kept as fields."""
    event = {"event": "decision", "detector": "scanning", "path": "/a" * 5000}
    event |= {f"field{i}": "v" * 150 for i in range(20)}
    fields = JournalRenderer(sendv=FakeSendv()).fields("info", event)
    message = fields[0].removeprefix("MESSAGE=")
    assert len(message) <= SUMMARY_LIMIT
    path = message.split(" ")[2]
    assert path == "path=" + "/a" * (SUMMARY_VALUE_LIMIT // 2) + f"{TRUNCATED}[+{10000 - 160}]"
    assert message.endswith(f"{TRUNCATED}[+15 fields]")
    assert "FIELD19=" + "v" * 150 in fields


def test_reserved_names_are_not_overwritten() -> None:
    """A key named like a journal header field keeps its value under an F_ prefix."""
    sendv = FakeSendv()
    _logger(sendv).info("hello", priority="high", syslog_identifier="evil")
    entry = sendv.last()
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "aisentinel"
    assert entry["F_PRIORITY"] == "high"
    assert entry["F_SYSLOG_IDENTIFIER"] == "evil"


def test_exception_is_sent_with_its_traceback() -> None:
    """exc_info is rendered into an EXCEPTION field holding the traceback."""
    sendv = FakeSendv()
    log = _logger(sendv)
    try:
        _fail()
    except RuntimeError:
        log.exception("flush failed")
    entry = sendv.last()
    assert entry["PRIORITY"] == "3"
    assert "Traceback" in entry["EXCEPTION"]
    assert "RuntimeError: disk on fire" in entry["EXCEPTION"]


def test_callsite_parameters_become_code_fields() -> None:
    """structlog's call-site keys map to CODE_FILE, CODE_LINE and CODE_FUNC."""
    sendv = FakeSendv()
    renderer = JournalRenderer(sendv=sendv)
    fields = renderer.fields(
        "info", {"event": "x", "pathname": "/a/b.py", "lineno": 7, "func_name": "f"}
    )
    assert {"CODE_FILE=/a/b.py", "CODE_LINE=7", "CODE_FUNC=f"} <= set(fields)


def test_send_failure_never_raises() -> None:
    """An OSError from journald (socket gone) is swallowed; the event is still dropped."""
    sendv = FakeSendv(error=OSError("no journald"))
    _logger(sendv).info("still fine")
    assert len(sendv.calls) == 1


def test_send_failure_reports_log_degraded_until_an_entry_goes_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed send marks the log output failing (one stderr line); the next send clears it."""
    sendv = FakeSendv(error=OSError(errno.ECONNREFUSED, "Connection refused"))
    output = LogOutput(io.StringIO())
    renderer = JournalRenderer(sendv=sendv, on_sent=output.sent, on_lost=output.lost)
    log = structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),
        processors=[structlog.processors.add_log_level, renderer],
    )
    log.info("lost")
    log.info("lost too")
    assert output.failing == "log lines cannot be written: Connection refused"
    assert capsys.readouterr().err.count("log output failing (Connection refused)") == 1
    sendv.error = None
    log.info("back")
    assert output.failing is None
    assert sendv.last()["MESSAGE"] == "back"


def test_renderer_without_systemd_python_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without systemd-python the renderer refuses to build and no journal is claimed."""
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setitem(sys.modules, "systemd.journal", None)
    with pytest.raises(RuntimeError, match="systemd-python"):
        JournalRenderer()
    assert journal_available() is False


@pytest.mark.skipif(not HAS_SYSTEMD_PYTHON, reason="systemd-python is not installed")
def test_journal_available_needs_a_listening_socket() -> None:
    """journal_available() is true only where a socket exists at the journald path."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "socket"
        assert journal_available(path) is False
        path.write_text("")
        assert journal_available(path) is False
        path.unlink()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert journal_available(path) is True


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    """JOURNAL_STREAM matches only the stream it names; unset or malformed never matches."""
    path = tmp_path / "stream"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        good = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(good, fd=stream.fileno()) is True
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:1"}, fd=stream.fileno()) is False
        assert stderr_is_journal({"JOURNAL_STREAM": "x:y"}, fd=stream.fileno()) is False
        assert stderr_is_journal({}, fd=stream.fileno()) is False


_WIRE_SCRIPT = r"""
import json, os, socket, struct, subprocess, sys
import structlog
from aisentinel.journal import JournalRenderer, journal_available
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.settimeout(5)
assert journal_available()
log = structlog.wrap_logger(None, processors=[
    structlog.processors.add_log_level, JournalRenderer(syslog_identifier="aisentinel-test")])
log.error("ban failed", client_ip="198.51.100.9", detail="line one\nline two")
data = sock.recv(1 << 20)
fields = {}
while data:
    head, sep, rest = data.partition(b"\n")
    if b"=" in head:
        key, _, value = head.partition(b"=")
        data = rest
    else:
        key = head
        (size,) = struct.unpack("<Q", rest[:8])
        value, data = rest[8:8 + size], rest[8 + size + 1:]
    fields[key.decode()] = value.decode()
json.dump(fields, sys.stdout)
"""


@pytest.mark.root
@pytest.mark.skipif(not HAS_SYSTEMD_PYTHON, reason="systemd-python is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is missing")
def test_entry_reaches_a_journald_socket_in_native_format() -> None:
    """The real systemd.journal.sendv delivers the fields to /run/systemd/journal/socket.

    The socket lives in a private mount namespace with its own tmpfs on /run, so the
    host's journald (if any) is untouched.
    """
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _WIRE_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fields = json.loads(result.stdout)
    assert fields["MESSAGE"] == 'ban failed client_ip=198.51.100.9 detail="line one\\nline two"'
    assert fields["PRIORITY"] == "3"
    assert fields["SYSLOG_IDENTIFIER"] == "aisentinel-test"
    assert fields["CLIENT_IP"] == "198.51.100.9"
    assert fields["DETAIL"] == "line one\nline two"
