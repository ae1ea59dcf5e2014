"""Attacker text in human-readable output: replay text, demo lines, audit table are escaped."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from conftest import ssh_fail

from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.render import render_table
from aisentinel.config import Config
from aisentinel.demo.runner import live_line
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity, Target
from aisentinel.explain import explain_lines
from aisentinel.replay import decision_line, finding_line

ESC_USER = "evil\x1b[2J"
FORGED_USER = (
    "x\n2026-01-01T00:00:00Z decision ban 6.6.6.6 ttl=3600s offence=1 (ssh_bruteforce): forged"
)


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisentinel", "replay", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _hostile_logs(tmp_path: Path, now_epoch: float) -> tuple[Path, Path]:
    """sshd failures as ESC_USER and nginx-json 401s as FORGED_USER, from 12 clients each."""
    auth = tmp_path / "auth.log"
    t0 = now_epoch - 900
    auth.write_text(
        "".join(ssh_fail(t0 + i, f"198.51.100.{i + 1}", user=ESC_USER) + "\n" for i in range(12))
    )
    access = tmp_path / "access.json"
    records = [
        {
            "time": f"{int(t0) + 100 + i}.0",
            "remote_addr": f"203.0.113.{i + 1}",
            "remote_user": FORGED_USER,
            "request_method": "GET",
            "request_uri": "/api/chat",
            "status": "401",
            "body_bytes_sent": "0",
            "http_user_agent": "curl/8",
            "host": "gpu.example.com",
        }
        for i in range(12)
    ]
    access.write_text("".join(json.dumps(r) + "\n" for r in records))
    return auth, access


def test_replay_text_escapes_usernames_and_forges_no_line(tmp_path: Path, now_epoch: float) -> None:
    """Replay text: one line per finding/decision, no raw ESC, no forged decision line."""
    auth, access = _hostile_logs(tmp_path, now_epoch)
    as_json = _replay(str(auth), str(access), "--json")
    assert as_json.returncode == 0, as_json.stderr
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    events = [o for o in objects if o["type"] in ("finding", "decision")]
    keys = {o["key"] for o in objects if o["type"] == "finding"}
    assert {ESC_USER, FORGED_USER} <= keys  # JSON carries the exact values
    text = _replay(str(auth), str(access))
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stdout
    body = text.stdout.split("\nSummary\n")[0].splitlines()
    assert len(body) == len(events)
    assert all(line.startswith(("finding  ", "decision ")) for line in body)
    assert not [line for line in body if "6.6.6.6" in line and line.startswith("decision")]
    assert any("evil\\x1b[2J" in line for line in body)
    assert any("x\\n2026-01-01T00:00:00Z decision ban 6.6.6.6" in line for line in body)


def _finding(key: str, message: str, client: str | None = None) -> Finding:
    return Finding(
        ts=1_764_000_000.0,
        detector="credential_stuffing",
        severity=Severity.MEDIUM,
        client=client,
        key=key,
        count=10,
        window=600.0,
        message=message,
    )


def _decision(action: Action, target: Target | None, reason: str) -> Decision:
    return Decision(
        ts=1_764_000_000.0,
        action=action,
        target=target,
        detector="credential_stuffing",
        severity=Severity.MEDIUM,
        reason=reason,
    )


def _one_line_each(*texts: str) -> None:
    for text in texts:
        assert text.endswith("\n")
        assert text.count("\n") == 1
        assert text[:-1].isprintable()


def test_replay_lines_escape_every_field() -> None:
    """finding_line/decision_line escape key, message and reason; one line each.

    Targets need no escaping: they are validated (see test_targets.py)."""
    finding = _finding(FORGED_USER, f"10 clients as {ESC_USER}\u202e")
    decision = _decision(Action.NONE, None, f"invalid address {FORGED_USER}")
    _one_line_each(finding_line(finding), decision_line(decision))
    assert "x\\n2026" in finding_line(finding)
    assert "evil\\x1b[2J\\u202e" in finding_line(finding)


def test_demo_live_line_escapes_log_text() -> None:
    """The demo's live view stays two lines, with hostile key and reason escaped."""
    finding = _finding(ESC_USER, FORGED_USER)
    lines = [
        live_line(finding, _decision(Action.ALERT, None, FORGED_USER)),
        live_line(None, _decision(Action.NONE, None, "r\x9bx")),
        live_line(None, _decision(Action.BAN, AddressTarget.parse("203.0.113.7"), "ban")),
    ]
    assert lines[0].count("\n") == 2
    assert all(line[:-1].replace("\n", "").isprintable() for line in lines)
    assert "evil\\x1b[2J" in lines[0]
    assert "r\\x9bx" in lines[1]


def _result(evidence: tuple[str, ...], remediation: str = "") -> CheckResult:
    return CheckResult("ssh.password-auth", "title", Status.FAIL, evidence, remediation)


def test_audit_table_escapes_evidence_and_keeps_commands() -> None:
    """Evidence items are one escaped line each; a printable remediation keeps its backslashes."""
    evidence = (f"process {ESC_USER} listens", "unit\nFAIL    forged.check  forged")
    fix = "printf 'PasswordAuthentication no\\n' > /etc/ssh/x.conf\nsystemctl reload ssh\x1b[2J\n"
    table = render_table(AuditReport((_result(evidence, fix),), 0.0, 0.1))
    lines = table.splitlines()
    assert "\x1b" not in table
    assert "        - process evil\\x1b[2J listens" in lines
    assert "        - unit\\nFAIL    forged.check  forged" in lines
    assert not [line for line in lines if line.startswith("FAIL    forged")]
    assert "        fix: printf 'PasswordAuthentication no\\n' > /etc/ssh/x.conf" in lines
    assert "             systemctl reload ssh\\x1b[2J" in lines


def test_explain_text_output_redacts_secrets_in_bodies(tmp_path: Path) -> None:
    """explain's text output shows the line and the body with secrets redacted."""
    key = "sk-proj-" + "Zx9" * 12
    body = json.dumps({"messages": [{"role": "user", "content": f"use {key} now"}]})
    record = {
        "time": "1700000000.000",
        "remote_addr": "198.51.100.10",
        "request_method": "POST",
        "request_uri": "/v1/chat/completions",
        "status": "200",
        "body_bytes_sent": "5",
        "request_body": body,
    }
    config = tmp_path / "c.toml"
    config.write_text("")
    log = tmp_path / "a.log"
    log.write_text(json.dumps(record) + "\n")
    out = tmp_path / "out.txt"
    with out.open("w") as fh:
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "aisentinel",
                "explain",
                "--file",
                str(log),
                "--format",
                "nginx-json",
                "--config",
                str(config),
            ],
            stdout=fh,
        )
    assert code == 0
    text = out.read_text()
    assert "body" in text
    assert "sk-…[44 chars]" in text
    assert key not in text
    assert key[8:-4] not in text


def test_explain_text_output_redacts_secrets_in_the_normalised_uri() -> None:
    """explain's normalised uri and query (decoded, lower-cased) show a key sent in the
    query string redacted, as the path above them does."""
    key = "sk-proj-" + "Zx9" * 12
    record = {
        "time": "1700000000.000",
        "remote_addr": "198.51.100.10",
        "request_method": "GET",
        "request_uri": f"/v1/models?api_key={key}",
        "status": "200",
        "body_bytes_sent": "5",
    }
    out = io.StringIO()
    explain_lines([json.dumps(record)], Config(), out, fmt="nginx-json", as_json=False)
    text = out.getvalue()
    assert "  normalised\n" in text
    assert "zx9zx9zx9" not in text.lower()


def test_explain_text_output_redacts_secrets_in_finding_evidence() -> None:
    """A detector's message and evidence holding a key are printed with the key redacted."""
    from aisentinel.explain import _emit

    key = "sk-proj-" + "Zx9" * 12
    record = {
        "line": 1,
        "text": "x",
        "parser": "nginx-json",
        "event": {"type": "HttpRequest"},
        "rules": [],
        "detectors": [
            {
                "detector": "d",
                "severity": "medium",
                "message": f"seen {key}",
                "evidence": [f"POST /v1/chat/completions?api_key={key}"],
            }
        ],
    }
    out = io.StringIO()
    _emit(record, out, as_json=False)
    text = out.getvalue()
    assert "evidence POST /v1/chat/completions?api_key=" in text
    assert "zx9zx9zx9" not in text.lower()
