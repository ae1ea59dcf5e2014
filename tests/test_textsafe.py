"""textsafe.escape, and the log renderers that use it: console escaped, JSON and journald exact."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

from aisentinel.journal import JournalRenderer
from aisentinel.logsetup import configure_logging, escape_for_console
from aisentinel.textsafe import TRUNCATED, escape, escape_lines

ESC_CLEAR = "\x1b[2J"
FORGED = "x\n2026-01-01T00:00:00Z decision ban 6.6.6.6"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\nb", "a\\nb"),  # newline
        ("a\rb", "a\\rb"),  # carriage return
        ("a\tb", "a\\tb"),  # tab
        ("a\x00b", "a\\x00b"),  # C0 NUL
        (ESC_CLEAR, "\\x1b[2J"),  # C0 ESC: a terminal control sequence
        ("\x7f", "\\x7f"),  # DEL
        ("\x85\x9b", "\\x85\\x9b"),  # C1: NEL and CSI
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),  # bidi override and pop
        ("\u202a\u202b\u202d", "\\u202a\\u202b\\u202d"),  # bidi embeddings
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # bidi isolates
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # LRM, RLM, ALM
        ("ro\u200bot\u200d\ufeff", "ro\\u200bot\\u200d\\ufeff"),  # zero-width, BOM
        ("\u00ad", "\\xad"),  # soft hyphen (format, Cf)
        ("\U000e0041", "\\U000e0041"),  # tag character (Cf, astral)
        ("a\ud800b", "a\\ud800b"),  # lone surrogate
        ("\udcff", "\\udcff"),  # surrogateescape byte
        ("a\\b", "a\\\\b"),  # the backslash itself
        ("\\x1b", "\\\\x1b"),  # a literal backslash-x stays distinguishable from ESC
        ("café 中文 😀", "café 中文 😀"),  # printable non-ASCII is kept
        ("é\x1b中", "é\\x1b中"),  # mixed run: only the unsafe character changes
    ],
)
def test_escape_each_class(text: str, expected: str) -> None:
    """Every unsafe character class becomes a visible escape; printable text is kept."""
    out = escape(text)
    assert out == expected
    assert out.isprintable()


def test_escape_is_unambiguous() -> None:
    """Different inputs give different outputs, even where one spells the other's escape."""
    inputs = ["\x1b", "\\x1b", "\\\x1b", "\n", "\\n", "\\\\n", "\u202e", "\\u202e"]
    outputs = [escape(t) for t in inputs]
    assert len(set(outputs)) == len(inputs)


def test_fast_path_returns_the_same_object() -> None:
    """Safe text is returned unchanged, as the very same string (no copy)."""
    text = '203.0.113.7 - alice [x] "GET /api/chat HTTP/1.1" 200 Mozilla/5.0 ünïcode'
    assert escape(text) is text
    assert escape(text, limit=len(text)) is text
    assert escape("") == ""


def test_truncation_keeps_a_prefix_and_says_how_much_was_cut() -> None:
    """With a limit the text is cut there and the marker counts the dropped characters."""
    assert escape("abcdefgh", limit=3) == f"abc{TRUNCATED}[+5]"
    assert escape("abc", limit=3) == "abc"
    assert escape("abc", limit=0) == f"{TRUNCATED}[+3]"


def test_truncation_never_splits_an_escape() -> None:
    """An escape that would cross the limit is dropped whole and counted as cut."""
    # "ab\x1bcd": "ab" fits in 4, "\x1b" (4 characters escaped) does not.
    assert escape("ab\x1bcd", limit=4) == f"ab{TRUNCATED}[+3]"
    assert escape("ab\x1bcd", limit=6) == f"ab\\x1b{TRUNCATED}[+2]"
    assert escape("ab\x1bcd", limit=8) == "ab\\x1bcd"
    assert escape("\\\\", limit=3) == f"\\\\{TRUNCATED}[+1]"


def test_truncation_marker_cannot_be_forged() -> None:
    """Attacker text that spells the marker comes out escaped, unlike the real one."""
    spelled = f"abc{TRUNCATED}[+5]"
    assert escape(spelled) != spelled
    assert TRUNCATED not in escape(spelled).replace("\\\\", "")


def test_negative_limit_is_refused() -> None:
    """A negative limit is a programming error: ValueError."""
    with pytest.raises(ValueError, match="limit"):
        escape("x", limit=-1)


def test_escape_lines_keeps_line_breaks_only() -> None:
    """escape_lines keeps "\\n" as line breaks and escapes everything else per line."""
    assert escape_lines("Traceback\n  bad\x1b[2J\r") == "Traceback\n  bad\\x1b[2J\\r"
    text = "plain\nlines"
    assert escape_lines(text) == text


# --------------------------------------------------------------------------- log renderers


def _console(**fields: Any) -> str:
    buf = io.StringIO()
    assert configure_logging("console", "info", buf) == "console"
    structlog.get_logger().info("finding", **fields)
    return buf.getvalue()


class _RawRepr:
    """An object whose repr carries a raw control sequence."""

    def __repr__(self) -> str:
        return f"obj{ESC_CLEAR}"


def test_console_log_escapes_values_keys_and_containers() -> None:
    """The console renderer shows hostile values escaped: no raw ESC, no forged line."""
    out = _console(
        key=FORGED,
        user=f"u{ESC_CLEAR}",
        evidence=[f"a{ESC_CLEAR}", "r\u202eoot"],
        pair=("\u2028",),
        obj=_RawRepr(),
        **{f"k{ESC_CLEAR}": "v"},
    )
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\u2028" not in out
    assert out.count("\n") == 1
    assert "\\x1b[2J" in out
    assert "6.6.6.6" in out


def _fail() -> None:
    raise ValueError(f"bad{ESC_CLEAR}")


def test_console_log_escapes_the_event_and_tracebacks() -> None:
    """The event text is escaped; a traceback keeps its lines but loses raw controls."""
    buf = io.StringIO()
    configure_logging("console", "info", buf)
    log = structlog.get_logger()
    log.info(f"msg{ESC_CLEAR}")
    try:
        _fail()
    except ValueError:
        log.exception("failed")
    out = buf.getvalue()
    assert "\x1b" not in out
    assert "msg\\x1b[2J" in out
    assert "ValueError: bad\\x1b[2J" in out


def _render(processors: list[Any], **fields: Any) -> str:
    buf = io.StringIO()
    log = structlog.wrap_logger(structlog.PrintLogger(buf), processors=processors)
    log.info("finding", **fields)
    return buf.getvalue()


def test_console_log_leaves_safe_values_as_before() -> None:
    """Ordinary values render exactly as structlog's console renderer alone shows them."""
    fields: dict[str, Any] = {
        "client": "198.51.100.7",
        "message": "5 failed ssh logins in 4s",
        "count": 5,
        "window": 600.0,
        "target": None,
        "evidence": ["root", "admin"],
        "path": "/api/chat?q=1",
    }
    renderer = structlog.dev.ConsoleRenderer(colors=False)
    alone = _render([renderer], **fields)
    escaped = _render([escape_for_console, renderer], **fields)
    assert escaped == alone
    assert "message='5 failed ssh logins in 4s'" in escaped


def test_json_log_keeps_the_exact_value() -> None:
    """JSON logs carry the original value exactly and still hold no raw control character."""
    value = f"{FORGED}{ESC_CLEAR}\u202e\\"
    buf = io.StringIO()
    assert configure_logging("json", "info", buf) == "json"
    structlog.get_logger().info("finding", key=value)
    line = buf.getvalue()
    assert line.count("\n") == 1
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert json.loads(line)["key"] == value


def test_journal_message_is_one_line_and_fields_stay_exact() -> None:
    """journald's MESSAGE is escaped to one line; the other fields keep the exact value."""
    sent: list[tuple[str, ...]] = []
    renderer = JournalRenderer(sendv=lambda *f: sent.append(f))
    fields = renderer.fields("info", {"event": FORGED + ESC_CLEAR, "key": FORGED})
    entry = dict(item.split("=", 1) for item in fields)
    assert entry["MESSAGE"] == (
        "x\\n2026-01-01T00:00:00Z decision ban 6.6.6.6\\x1b[2J "
        'key="x\\n2026-01-01T00:00:00Z decision ban 6.6.6.6"'
    )
    assert entry["KEY"] == FORGED
    assert not sent
