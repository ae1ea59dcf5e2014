"""The docs' `journalctl -u aisentinel` commands find what the daemon logs at the default level.

Each `-g PATTERN` of docs/runbooks.md and docs/install.md is run, as journalctl runs it
(a regular expression over ``MESSAGE``, case-insensitive when the pattern is lower
case), over the lines the daemon writes for the events it is meant to find: the
``MESSAGE`` of :class:`aisentinel.journal.JournalRenderer` (log_format journal) and the
JSON line (log_format json, which the journal stores whole as ``MESSAGE``). Each of those
events is checked against the code: its text is there, logged at info or above.
Decisions are logged by the real :class:`aisentinel.decisionlog.DecisionLog`, a parser's
notice by the real pipeline. A field filter (``TARGET=...``) must name a field the
renderer writes.
"""

from __future__ import annotations

import ast
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import structlog

from aisentinel.clock import FakeClock
from aisentinel.decisionlog import DecisionLog
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import REGISTRY as DETECTORS
from aisentinel.events import (
    Action,
    AddressTarget,
    Decision,
    Finding,
    LineBatch,
    Severity,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.journal import JournalRenderer
from aisentinel.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
DOCS = ("docs/runbooks.md", "docs/install.md")
LEVELS = ("info", "warning", "error", "exception", "critical")
"""The log methods whose lines the default level (info) keeps."""
T0 = 1_765_000_000.0


@dataclass(frozen=True)
class Logged:
    """One line the daemon writes: its level and event dict (``event`` and fields)."""

    level: str
    fields: dict[str, Any]
    from_code: bool = True
    """Check that the code logs it (False: made by the real DecisionLog or pipeline here)."""


def _line(level: str, event: str, **fields: Any) -> Logged:
    return Logged(level, {"event": event, **fields})


def _decision(
    detector: str,
    message: str,
    *,
    client: str | None = "203.0.113.7",
    action: Action = Action.BAN,
    reason: str = "high finding, offence 1 within 1d: ban for 1h",
    braked: bool = False,
    **extra: Any,
) -> Logged:
    """The line the real DecisionLog writes for a decision of ``detector``."""
    assert detector in DETECTORS, detector
    finding = Finding(
        ts=T0,
        detector=detector,
        severity=Severity.HIGH,
        client=client,
        key=extra.pop("key", client or "-"),
        count=6,
        window=60.0,
        message=message,
        evidence=('203.0.113.7 - - [07/Dec/2026:10:00:00 +0000] "GET /.env" 404',),
        source="nginx",
        **extra,
    )
    target: AddressTarget | WorkloadTarget | None = finding.target
    if target is None and client is not None:
        target = AddressTarget.parse(client)
    decision = Decision(
        ts=T0,
        action=action,
        target=target,
        detector=detector,
        severity=Severity.HIGH,
        reason=reason,
        ttl=3600.0 if action is Action.BAN else None,
        expires_at=T0 + 3600 if action is Action.BAN else None,
        evidence_count=6,
        finding=finding,
        braked=braked,
    )
    with structlog.testing.capture_logs() as logs:
        DecisionLog(lambda: 0.0)(decision)
    (entry,) = logs
    level = entry.pop("log_level")
    return Logged(level, entry, from_code=False)


MINER = WorkloadTarget(
    identified_by=WorkloadKey.PID, id="5895", name="xmrig", exe="/tmp/xmrig", unit="x.service"
)


def _workload_alert(detector: str, message: str) -> Logged:
    """The decision line of a finding about a workload (an alert: throttling is off)."""
    return _decision(
        detector,
        message,
        client=None,
        action=Action.ALERT,
        reason="workload action is alert (throttle and freeze are off)",
        target=MINER,
    )


BRAKED = (
    "ban brake engaged: more than 30 bans a minute since 2026-12-07T10:00:00Z "
    "(`aisentinel brake reset` releases it)"
)


def _proxied(i: int) -> str:
    """An access-log line from a proxy on this host (loopback) with the client forwarded."""
    return (
        f'127.0.0.1 - - [07/Dec/2026:10:00:{i % 60:02d} +0000] "GET /api/tags HTTP/1.1" '
        f'200 12 "-" "curl/8" "198.51.100.9"'
    )


def _notice(fmt: str, lines: list[str]) -> Logged:
    """The line the real pipeline logs for the one notice its ``fmt`` parser queues
    reading ``lines`` (source "web")."""
    clock = FakeClock(T0)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite3", clock)
        engine = DecisionEngine(DecisionsConfig(), ledger, clock)
        pipeline = Pipeline(detectors=[], engine=engine, runner=None, clock=clock)
        with structlog.testing.capture_logs() as logs:
            pipeline.process(LineBatch("web", fmt, lines, 0.0))
        ledger.close()
    [entry] = [e for e in logs if e.get("source") == "web"]
    level = entry.pop("log_level")
    return Logged(level, entry, from_code=False)


# Every pattern the docs give `journalctl -u aisentinel -g`, with the lines it must find.
FINDS: dict[str, list[Logged]] = {
    "metrics collector": [
        _line(
            "error",
            "metrics collector failed; its metrics are missing from this scrape",
            collector="source:nginx",
            error="RuntimeError: boom",
        )
    ],
    "degraded|ledger|cannot listen|control socket": [
        _line(
            "error",
            "state directory unusable; running degraded: bans are kept in memory and read "
            "positions in a temporary directory, both lost on restart",
            path="/var/lib/aisentinel",
        ),
        _line(
            "error",
            "decision ledger unusable; running degraded: bans are kept in memory only and "
            "lost on restart",
            path="/var/lib/aisentinel/decisions.sqlite3",
        ),
        _line(
            "error",
            "decision ledger locked by another process; running degraded: decisions are "
            "kept in memory and written to the file once the lock is gone",
            path="/var/lib/aisentinel/decisions.sqlite3",
        ),
        _line(
            "warning",
            "the ledger of an earlier run was lost; keeping what the responders enforce "
            "(reconciles add, never lift)",
            lost="2026-12-07T10:00:00Z",
        ),
        _line(
            "error",
            "metrics endpoint cannot listen; detection goes on, retrying every 30 s",
            listen="127.0.0.1",
            port=9847,
        ),
        _line("error", "control socket unavailable; running without it", reason="EADDRINUSE"),
    ],
    "unread": [
        _line(
            "error",
            "log file rotated while stopped and the file holding the read position is gone; "
            "the rest of it was not read",
            source="nginx",
            path="/var/log/nginx/access.log",
            unread="after byte 1234 of the file with inode 56",
            reason="",
        ),
        _line(
            "error",
            "cannot read a rotated log file; its unread part is skipped",
            source="nginx",
            path="/var/log/nginx/access.log.2.gz",
            unread="from byte 0",
            reason="not a gzipped file",
        ),
        _line(
            "error",
            "log file truncated and no copy of it found among its rotated files; lines "
            "written after the last read and before the truncation, if any, were not read",
            source="nginx",
            path="/var/log/nginx/access.log",
            unread="after byte 99 of the file with inode 56",
            reason="",
        ),
    ],
    "pipeline fault": [
        _line(
            "error",
            "pipeline fault contained; the line or event is skipped and counted",
            stage="parse",
            plugin="nginx",
            source="nginx",
            error="ValueError: bad",
            excerpt="GET /x",
        )
    ],
    "responder": [
        _line(
            "warning",
            "responder operation failed",
            responder="nftables",
            operations=1,
            operation="add",
            error="nft: busy",
        ),
        _line(
            "error",
            "responder operation given up",
            responder="nftables",
            operation="add",
            target="203.0.113.7",
        ),
        _line("warning", "responder unhealthy; its enforcements may not take effect"),
    ],
    "table damaged": [
        _line(
            "warning",
            "nftables table damaged (flushed or changed by hand?); re-creating it with "
            "every ban held",
            table="aisentinel",
            reason="chain forward holds 0 rules, 3 of its 3 drop rules missing or changed",
            bans=2,
        )
    ],
    "brake": [
        _line(
            "warning",
            "ban storm brake tripped: new bans become alerts until `aisentinel brake "
            "reset`, or until the rate stays below half the limit for the cool-down",
        ),
        _decision("scanning", "5 probes", action=Action.ALERT, reason=BRAKED, braked=True),
        _line(
            "warning",
            "bans held back by the brake, not logged one by one: every one is in the "
            "ledger and in aisentinel_bans_braked_total",
            not_logged=40,
        ),
    ],
    "ssh_bruteforce|http_auth|credential_stuffing": [
        _decision("ssh_bruteforce", "6 failed logins for root"),
        _decision("http_auth", "6 failed basic-auth logins"),
        _decision("credential_stuffing", "6 usernames tried"),
    ],
    "journald dropped": [
        _line(
            "warning",
            "journald dropped entries of a unit this source reads (its rate limit): "
            "attacks in them were not seen",
            source="ssh",
            unit="ssh.service",
            dropped=7345,
            action="raise LogRateLimitBurst= for ssh.service (see docs/install.md)",
        )
    ],
    "source is blind": [
        _line(
            "warning",
            "source is blind: its lines are not of its format",
            source="web",
            parser="nginx",
            unrecognised_share=1.0,
            lines=200,
        )
    ],
    "scanning|ai_recon|rate_abuse": [
        _decision("scanning", "5 probes of sensitive paths"),
        _decision("ai_recon", "model API listed without auth"),
        _decision("rate_abuse", "600 requests in 60s"),
    ],
    "model_exploit": [_decision("model_exploit", "unauthenticated model pull /api/pull")],
    "credential_stuffing": [
        _decision(
            "credential_stuffing",
            "user 'admin' tried from 12 addresses",
            client=None,
            action=Action.ALERT,
            reason="no single address to ban",
            key="admin",
            clients=("198.51.100.1", "198.51.100.2"),
        )
    ],
    "prompt_injection": [_decision("prompt_injection", "prompt injection score 0.97")],
    "gpu_theft": [_decision("gpu_theft", "GPU 1 busy for 300s without authenticated requests")],
    "gpu_workload": [
        _workload_alert(
            "gpu_workload", "cryptocurrency miner on GPU 1: pid 5895 /tmp/xmrig (miner name xmrig)"
        )
    ],
    "gpu_memory": [_workload_alert("gpu_memory", "GPU 0 memory 97% used by pid 5895")],
    "gpu lost": [_line("warning", "gpu lost", gpu=1, uuid="GPU-1", reason="GPU_IS_LOST")],
    "gpu values": [
        _line("warning", "gpu values unreadable", gpu=0, uuid="GPU-0"),
        _line("info", "gpu values readable again", gpu=0, uuid="GPU-0", were="utilization"),
    ],
    "gpu sampler": [
        _line("warning", "gpu sampler stuck", source="gpu", since="2026-12-07T10:00:00Z"),
        _line("info", "gpu sampler answered again", source="gpu"),
    ],
    "gpu collector": [
        _line("warning", "gpu collector", state="down", reason="NVML library not found"),
    ],
    "log source state changed": [
        _line(
            "warning",
            "log source state changed",
            source="auth",
            state="degraded",
            reason="positions cannot be saved: [Errno 28] No space left on device",
        ),
        _line("info", "log source state changed", source="auth", state="following", reason="x"),
    ],
    "most requests come from": [_notice("nginx", [_proxied(i) for i in range(60)])],
}


def _commands() -> Iterator[tuple[str, list[str]]]:
    """Each `journalctl -u aisentinel ...` code span of the docs, as (doc, argv)."""
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for span in re.findall(r"`(journalctl [^`]*)`", text):
            argv = shlex.split(" ".join(span.split()))  # a span may wrap over lines
            if argv[1:3] == ["-u", "aisentinel"]:
                yield doc, argv


def _patterns() -> set[str]:
    out = set()
    for _doc, argv in _commands():
        out.update(argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-g")
    return out


def _journalctl_g(pattern: str, message: str) -> bool:
    """Whether `journalctl -g pattern` shows an entry with ``message`` (smart case)."""
    flags = re.IGNORECASE if pattern == pattern.lower() else 0
    return re.search(pattern, message, flags) is not None


def _message(logged: Logged) -> str:
    fields = JournalRenderer(sendv=print).fields(logged.level, logged.fields)
    assert fields[0].startswith("MESSAGE=")
    return fields[0].removeprefix("MESSAGE=")


def _json_line(logged: Logged) -> str:
    renderer = structlog.processors.JSONRenderer()
    return str(renderer(None, logged.level, {**logged.fields, "level": logged.level}))


@dataclass(frozen=True)
class _Call:
    level: str
    event: re.Pattern[str] | None
    """The event text it logs (None: not a constant, e.g. a variable)."""
    keywords: frozenset[str] | None
    """Its keyword arguments (None: ``**fields``, any)."""


def _text_pattern(node: ast.expr) -> re.Pattern[str] | None:
    """A string constant or f-string as a pattern of the texts it makes (None for an
    f-string of fewer than 8 constant characters: it would match about anything)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.compile(re.escape(node.value), re.DOTALL)
    if isinstance(node, ast.JoinedStr):
        fixed = [v.value for v in node.values if isinstance(v, ast.Constant)]
        if len("".join(map(str, fixed))) < 8:
            return None
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".*?" for v in node.values]
        return re.compile("".join(parts), re.DOTALL)
    return None


@cache
def _code() -> tuple[list[_Call], list[re.Pattern[str]], set[str]]:
    """The log calls at info and above in aisentinel/, every text (constant or
    f-string) in its code, and its string constants."""
    calls: list[_Call] = []
    texts: list[re.Pattern[str]] = []
    constants: set[str] = set()
    for path in sorted((REPO / "aisentinel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                constants.add(node.value)
            if isinstance(node, ast.Constant | ast.JoinedStr):
                text = _text_pattern(node)
                if text is not None:
                    texts.append(text)
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
            ):
                continue
            names = [k.arg for k in node.keywords]
            calls.append(
                _Call(
                    node.func.attr,
                    _text_pattern(node.args[0]),
                    None if None in names else frozenset(n for n in names if n),
                )
            )
    return calls, texts, constants


def _logged_by_code(logged: Logged) -> bool:
    """Whether a log call at info or above writes this line: one logging its event
    text, or (a string constant of the code) one logging a variable with its fields."""
    calls, _texts, constants = _code()
    event = logged.fields["event"]
    keys = logged.fields.keys() - {"event"}
    for call in calls:
        if call.event is not None:
            if call.event.fullmatch(event) and (call.keywords is None or keys <= call.keywords):
                return True
        elif event in constants and call.keywords is not None and keys and keys <= call.keywords:
            return True
    return False


def test_every_documented_pattern_has_its_lines() -> None:
    """Each `journalctl -u aisentinel -g` pattern of the docs is listed here with the
    lines it must find (a new command in the docs needs its lines here), and back."""
    assert _patterns() == set(FINDS)


@pytest.mark.parametrize("pattern", sorted(FINDS))
def test_documented_pattern_finds_the_lines_in_journal_and_json(pattern: str) -> None:
    """`journalctl -u aisentinel -g PATTERN` shows each line it is documented to find,
    whether the daemon logs to the journal (MESSAGE summary) or JSON lines."""
    for logged in FINDS[pattern]:
        assert _journalctl_g(pattern, _message(logged)), (pattern, _message(logged))
        assert _journalctl_g(pattern, _json_line(logged)), (pattern, _json_line(logged))


@pytest.mark.parametrize("pattern", sorted(FINDS))
def test_documented_lines_are_logged_at_the_default_level(pattern: str) -> None:
    """The lines a documented pattern finds are in the code, logged at info or above
    (a line moved to debug, or reworded, fails here)."""
    for logged in FINDS[pattern]:
        assert logged.level in LEVELS, (pattern, logged.fields["event"])
        if logged.from_code:
            assert _logged_by_code(logged), (pattern, logged.fields["event"])
        elif logged.fields["event"] == "decision":  # its reason is the engine's
            _calls, texts, _constants = _code()
            reason = logged.fields["reason"]
            assert any(text.fullmatch(reason) for text in texts), (pattern, reason)


def test_decision_summary_names_detector_action_and_target() -> None:
    """A decision's MESSAGE reads: decision, detector, action, target, severity, reason."""
    logged = FINDS["model_exploit"][0]
    assert _message(logged).startswith(
        "decision detector=model_exploit action=ban target=203.0.113.7 "
        "client=203.0.113.7 severity=high reason="
    )


def test_documented_field_filters_name_fields_the_journal_has() -> None:
    """A field filter in the docs (`journalctl -u aisentinel NAME=value`) names a field
    that decision lines carry."""
    fields = set()
    for lines in FINDS.values():
        for logged in lines:
            entry = JournalRenderer(sendv=print).fields(logged.level, logged.fields)
            fields.update(item.split("=", 1)[0] for item in entry)
    filters = [
        arg for _doc, argv in _commands() for arg in argv[3:] if re.fullmatch(r"[A-Z0-9_]+=.*", arg)
    ]
    assert filters, "the docs show a field filter"
    for arg in filters:
        assert arg.split("=", 1)[0] in fields, arg
