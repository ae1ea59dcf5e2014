"""`aisentinel replay`: same pipeline offline, findings and decisions as text or JSON Lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import nginx_line, ssh_fail


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisentinel", "replay", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _objects(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_five_ssh_failures_in_ten_minutes_ban_like_fail2ban(
    tmp_path: Path, now_epoch: float
) -> None:
    """Five failed logins within 10 minutes give a ban (fail2ban's stock sshd jail bans too)."""
    log = tmp_path / "auth.log"
    t0 = now_epoch - 3600
    lines = [ssh_fail(t0 + i * 110, "198.51.100.77") for i in range(5)]
    log.write_text("\n".join(lines) + "\n")
    res = _replay(str(log), "--format", "sshd", "--json")
    assert res.returncode == 0, res.stderr
    objs = _objects(res.stdout)
    bans = [o for o in objs if o["type"] == "decision" and o["action"] == "ban"]
    assert [b["source_address"] for b in bans] == ["198.51.100.77"]
    finding = next(o for o in objs if o["type"] == "finding")
    for key in ("kind", "detector", "source_address", "action", "evidence_count", "time"):
        assert key in finding
    assert finding["detector"] == "ssh_bruteforce"
    summary = objs[-1]
    assert summary["type"] == "summary"
    assert summary["lines_read"] == 5
    assert summary["parsed"] == 5
    assert summary["findings"] == {"ssh_bruteforce": 1}


def test_four_failures_or_spread_out_do_not_ban(tmp_path: Path, now_epoch: float) -> None:
    """Four failures, or five spread over more than the window, give no finding."""
    log = tmp_path / "auth.log"
    t0 = now_epoch - 7200
    lines = [ssh_fail(t0 + i * 10, "198.51.100.1") for i in range(4)]
    lines += [ssh_fail(t0 + i * 200, "198.51.100.2") for i in range(5)]
    log.write_text("\n".join(lines) + "\n")
    res = _replay(str(log), "--format", "sshd", "--json")
    objs = _objects(res.stdout)
    assert not [o for o in objs if o["type"] != "summary"]


def test_allowlisted_address_is_reported_with_reason(tmp_path: Path, now_epoch: float) -> None:
    """An allowlisted attacker still yields a finding, and its decision says why nothing is done."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[decisions]\nallowlist = ["192.0.2.0/24"]\n')
    log = tmp_path / "auth.log"
    log.write_text("\n".join(ssh_fail(now_epoch - 600 + i, "192.0.2.9") for i in range(6)) + "\n")
    res = _replay(str(log), "--format", "sshd", "--json", "--config", str(cfg))
    objs = _objects(res.stdout)
    decision = next(o for o in objs if o["type"] == "decision")
    assert decision["action"] == "none"
    assert "allowlist" in decision["reason"]


def test_unparsed_lines_are_counted_and_skipped(tmp_path: Path, now_epoch: float) -> None:
    """Garbage and irrelevant lines are counted as unparsed; the good lines still count."""
    log = tmp_path / "access.log"
    good = [nginx_line(now_epoch, "203.0.113.5", "/api/tags", 200, "alice") for _ in range(3)]
    log.write_bytes(("\n".join(good) + "\n").encode() + b"\xff\xfe garbage\n\nnot a log line\n")
    res = _replay(str(log), "--format", "nginx", "--json")
    summary = _objects(res.stdout)[-1]
    assert summary["lines_read"] == 6
    assert summary["parsed"] == 3
    assert summary["unparsed"] == 3


def test_auto_format_and_text_summary(tmp_path: Path, now_epoch: float) -> None:
    """`--format auto` recognises each file, and the text output ends with a summary."""
    ssh = tmp_path / "auth.log"
    ssh.write_text("\n".join(ssh_fail(now_epoch - 300 + i, "203.0.113.99") for i in range(6)))
    web = tmp_path / "access.log"
    web.write_text(
        "\n".join(nginx_line(now_epoch - 60 + i, "203.0.113.50", f"/x{i}", 404) for i in range(40))
    )
    res = _replay(str(ssh), str(web))
    assert res.returncode == 0, res.stderr
    assert f"{ssh} (sshd)" in res.stdout
    assert f"{web} (nginx)" in res.stdout
    assert "decision" in res.stdout
    assert "ban 203.0.113.99" in res.stdout


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A file that does not exist is refused with exit status 2."""
    res = _replay(str(tmp_path / "nope.log"))
    assert res.returncode == 2
    assert "no such file" in res.stderr


def test_syslog_lines_get_this_years_timestamps(tmp_path: Path, now_epoch: float) -> None:
    """Year-less syslog lines are dated in the current year, not 1969/1970."""
    log = tmp_path / "auth.log"
    log.write_text("\n".join(ssh_fail(now_epoch - 100 + i, "198.51.100.78") for i in range(5)))
    objs = _objects(_replay(str(log), "--format", "sshd", "--json").stdout)
    finding = next(o for o in objs if o["type"] == "finding")
    decision = next(o for o in objs if o["type"] == "decision")
    year = time.strftime("%Y", time.gmtime(now_epoch))
    assert finding["time"].startswith(year)
    assert decision["time"].startswith(year)


def test_unrecognisable_file_needs_an_explicit_format(tmp_path: Path) -> None:
    """With --format auto, a file no parser recognises is refused with a hint, exit 2."""
    log = tmp_path / "mystery.log"
    log.write_text("hello\nworld\n")
    res = _replay(str(log))
    assert res.returncode == 2
    assert "name it with --format" in res.stderr
