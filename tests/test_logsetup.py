"""A log output that cannot be written never stops the daemon, and says so."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator

import pytest
import structlog

from aisentinel import logsetup
from aisentinel.logsetup import LogOutput, configure_logging, log_output_failing


class FlakyStream(io.StringIO):
    """A stream whose writes fail with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging its own way; the process-wide setting is put back."""
    saved = structlog.get_config()
    saved_output = logsetup._OUTPUT
    yield
    structlog.configure(**saved)
    logsetup._OUTPUT = saved_output


def test_failed_writes_are_dropped_and_reported_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Failing writes raise nothing; `failing` names the reason; stderr gets one line per spell."""
    stream = FlakyStream()
    out = LogOutput(stream)
    for _ in range(3):
        assert out.write("line") == 0
        out.flush()
    assert out.failing == "log lines cannot be written: No space left on device"
    assert out.failures == 3
    err = capsys.readouterr().err
    assert err.count("aisentinel: log output failing (No space left on device)") == 1


def test_output_recovers_once_a_whole_line_is_written() -> None:
    """`failing` stays while lines are lost and clears at the first line written whole."""
    stream = FlakyStream()
    out = LogOutput(stream)
    out.write("lost\n")
    out.flush()  # the flush succeeds but the line's write did not: still failing
    assert out.failing is not None
    stream.full = False
    out.write("kept\n")
    out.flush()
    assert out.failing is None
    assert stream.getvalue() == "kept\n"


def test_closed_stream_counts_as_failing() -> None:
    """A closed stream (ValueError) is dropped like an OSError, not raised."""
    stream = io.StringIO()
    stream.close()
    out = LogOutput(stream)
    out.write("x")
    out.flush()
    assert out.failing is not None
    assert "closed" in out.failing


def test_structlog_lines_to_a_full_stream_do_not_raise() -> None:
    """With logging configured on a full stream, a log call returns and the fault shows."""
    stream = FlakyStream()
    configure_logging("json", "info", stream)
    structlog.get_logger("aisentinel.test").error("decision", target="198.51.100.1")
    assert log_output_failing() == "log lines cannot be written: No space left on device"
    stream.full = False
    structlog.get_logger("aisentinel.test").info("next")
    assert log_output_failing() is None
    assert '"event": "next"' in stream.getvalue()
