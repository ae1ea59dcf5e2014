"""`aisentinel replay`: same pipeline offline, findings and decisions as text or JSON Lines."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PROMPT_ATTACKS, nginx_line, nginx_ts, ssh_fail

from aisentinel import replay as replay_module
from aisentinel.cli import main
from aisentinel.config import Config
from aisentinel.parsers import AUTO
from aisentinel.replay import replay
from aisentinel.sources.file import MAX_LINE_BYTES


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


def test_rotating_ipv6_attacker_is_banned_per_ban_prefix(tmp_path: Path, now_epoch: float) -> None:
    """Failures from 9 addresses of one /64 (one each) ban the /64; with
    ipv6_ban_prefix = 128 they are counted one address each (none reaches 5)."""
    log = tmp_path / "auth.log"
    t0 = now_epoch - 3600
    lines = [ssh_fail(t0 + i * 10, f"2001:db8:77:1::{i + 1:x}") for i in range(9)]
    log.write_text("\n".join(lines) + "\n")
    res = _replay(str(log), "--format", "sshd", "--json")
    bans = [o for o in _objects(res.stdout) if o["type"] == "decision" and o["action"] == "ban"]
    assert [b["target"] for b in bans] == ["2001:db8:77:1::/64"]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[decisions]\nipv6_ban_prefix = 128\n")
    res = _replay(str(log), "--format", "sshd", "--json", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert [o for o in _objects(res.stdout) if o["type"] != "summary"] == []


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


def test_the_hosts_addresses_are_read_once_and_never_banned(
    tmp_path: Path, now_epoch: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay reads the host's addresses once, not each refresh of log time, and never bans them."""
    reads: list[int] = []

    def host_addresses() -> list[str]:
        reads.append(1)
        return ["198.51.100.8"]

    monkeypatch.setattr(replay_module, "read_host_addresses", host_addresses)
    log = tmp_path / "auth.log"
    t0 = now_epoch - 86400
    lines = [ssh_fail(t0 + i * 60, "198.51.100.8") for i in range(600)]
    log.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    summary = replay([(log, "sshd")], Config(), out, as_json=True)
    assert reads == [1]
    decisions = [o for o in _objects(out.getvalue()) if o["type"] == "decision"]
    assert decisions
    assert {d["action"] for d in decisions} == {"none"}
    assert summary.decisions.get("ban", 0) == 0


def test_a_trusted_proxy_is_never_banned(tmp_path: Path, now_epoch: float) -> None:
    """Failed logins from a trusted proxy without X-Forwarded-For are the proxy's: found,
    and not banned (banning it would cut off every client behind it); one warning on
    stderr names the source and says the lines carry no forwarded field."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[parsers]\ntrusted_proxies = ["10.0.0.2/32"]\n')
    log = tmp_path / "access.log"
    lines = [
        nginx_line(now_epoch - 60 + i, "10.0.0.2", "/v1/chat/completions", 401) for i in range(40)
    ]
    log.write_text("\n".join(lines) + "\n")
    res = _replay(str(log), "--format", "nginx", "--json", "--config", str(cfg))
    decisions = [o for o in _objects(res.stdout) if o["type"] == "decision"]
    assert decisions
    assert {(o["action"], o["reason"]) for o in decisions} == {
        ("none", "allowlisted (10.0.0.2/32)")
    }
    warnings = [line for line in res.stderr.splitlines() if "X-Forwarded-For" in line]
    assert len(warnings) == 1
    assert str(log) in warnings[0] or "access.log" in warnings[0]


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


def test_summary_option_prints_the_same_summary_and_nothing_else(
    tmp_path: Path, now_epoch: float
) -> None:
    """`--summary` writes no finding or decision, and its summary counts what a full
    replay of the same files counts, as JSON and as text."""
    ssh = tmp_path / "auth.log"
    ssh.write_text(
        "\n".join(ssh_fail(now_epoch - 900 + i * 7, f"203.0.113.{i % 9}") for i in range(60))
    )
    web = tmp_path / "access.log"
    web.write_text(
        "\n".join(nginx_line(now_epoch - 60 + i, "198.51.100.50", f"/x{i}", 404) for i in range(40))
    )
    full = _replay(str(ssh), str(web), "--json")
    brief = _replay(str(ssh), str(web), "--json", "--summary")
    assert full.returncode == brief.returncode == 0, brief.stderr
    [summary] = _objects(brief.stdout)
    expected = _objects(full.stdout)[-1]
    assert any(o["type"] == "decision" for o in _objects(full.stdout))
    for key in ("findings", "decisions", "quieted", "lines_read", "parsed"):
        assert summary[key] == expected[key], key
    text = _replay(str(ssh), str(web), "--summary")
    assert text.returncode == 0, text.stderr
    assert text.stdout.lstrip().startswith("Summary")
    assert "decision " not in text.stdout
    assert "ban 203.0.113" not in text.stdout


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
    assert res.stderr.count("name it") == 1  # one hint, not the library's and the CLI's


def test_unrecognisable_file_in_a_library_replay_is_a_file_error(tmp_path: Path) -> None:
    """replay() with format auto records a file no parser recognises as that file's
    error, with one hint, and goes on with the next file."""
    mystery = tmp_path / "mystery.log"
    mystery.write_text("hello\nworld\n")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    err = io.StringIO()
    summary = replay([(mystery, AUTO), (empty, "sshd")], Config(), io.StringIO(), err=err)
    assert summary.failed_files == [str(mystery)]
    error = summary.files[0].error or ""
    assert error.startswith("cannot tell the log format")
    assert error.count("name the format explicitly") == 1
    assert [f.path for f in summary.files] == [str(mystery), str(empty)]


def _json_line(when: object, ip: str, path: str) -> str:
    return json.dumps({"time": when, "remote_addr": ip, "status": "404", "request_uri": path})


def test_out_of_range_times_are_unparsed_not_a_traceback(tmp_path: Path, now_epoch: float) -> None:
    """Times of 1e308 / -1e308 are counted unparsed; the run ends normally with exit 0."""
    log = tmp_path / "poison.log"
    poison = [_json_line(t, "198.51.100.40", "/.env") for t in ("1e308", "1e308", "-1e308")]
    good = [_json_line(now_epoch + i, "198.51.100.41", "/.env") for i in range(3)]
    log.write_text("\n".join(poison + good) + "\n")
    for fmt in ("nginx-json", "auto"):
        res = _replay(str(log), "--format", fmt, "--json")
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        summary = _objects(res.stdout)[-1]
        assert (summary["parsed"], summary["unparsed"]) == (3, 3)
        assert summary["findings"] == {"scanning": 1}
        assert summary["failed_files"] == []


def test_damaged_gzip_files_are_reported_and_skipped(tmp_path: Path, now_epoch: float) -> None:
    """A truncated .gz keeps its lines before the fault, a non-gzip .gz is named; exit 1."""
    lines = [nginx_line(now_epoch + i, "203.0.113.60", f"/x{i}", 404) for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    packed = gzip.compress(data)
    truncated = tmp_path / "access.log.1.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    not_gzip = tmp_path / "access.log.2.gz"
    not_gzip.write_bytes(data[:1000])
    good = tmp_path / "access.log"
    good.write_text("\n".join(lines[:5]) + "\n")
    for fmt in ("nginx", "auto"):
        res = _replay(str(truncated), str(not_gzip), str(good), "--format", fmt, "--json")
        assert res.returncode == 1
        assert "Traceback" not in res.stderr
        errors = res.stderr.splitlines()
        assert len(errors) == 2
        assert str(truncated) in errors[0]
        assert "EOFError" in errors[0]
        assert str(not_gzip) in errors[1]
        assert "BadGzipFile" in errors[1]
        summary = _objects(res.stdout)[-1]
        assert summary["failed_files"] == [str(truncated), str(not_gzip)]
        files = {f["path"]: f for f in summary["files"]}
        assert 0 < files[str(truncated)]["lines"] < 3000
        assert files[str(truncated)]["lines"] == files[str(truncated)]["parsed"]
        assert files[str(not_gzip)]["lines"] == 0
        assert files[str(good)]["error"] is None
        assert files[str(good)]["parsed"] == 5


def test_damaged_file_is_named_in_the_text_summary(tmp_path: Path, now_epoch: float) -> None:
    """The text summary marks the failed file and counts the files that failed."""
    bad = tmp_path / "auth.log.gz"
    bad.write_bytes(b"not gzip at all\n")
    res = _replay(str(bad), "--format", "sshd")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert f"{bad} (sshd): 0 lines read" in res.stdout
    assert "FAILED: BadGzipFile" in res.stdout
    assert "files that could not be read to their end: 1" in res.stdout


def test_cr_only_file_gives_one_line_per_record(tmp_path: Path, now_epoch: float) -> None:
    """A file whose lines end in a lone CR replays as 60 lines, not one."""
    log = tmp_path / "access.log"
    lines = [nginx_line(now_epoch + i, "203.0.113.61", f"/p{i}") for i in range(60)]
    log.write_bytes(("\r".join(lines) + "\r").encode())
    summary = _objects(_replay(str(log), "--format", "nginx", "--json").stdout)[-1]
    assert (summary["lines_read"], summary["parsed"]) == (60, 60)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_read_lines_splits_on_lf_crlf_and_lone_cr_at_any_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """LF, CRLF and lone CR end lines wherever the read chunks are cut; no empty line appears."""
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", chunk)
    text = "a\r\nbb\rccc\n\r\nd\r\re\n" + "f\r" * 5 + "g\r\n" + "last"
    expected = re.split(r"\r\n|\r|\n", text)
    path = tmp_path / "mixed.log"
    path.write_bytes(text.encode())
    got = [line for batch in replay_module.read_lines(path, batch_lines=3) for line in batch]
    assert got == expected
    path.write_bytes(text.encode() + b"\r")
    got = [line for batch in replay_module.read_lines(path) for line in batch]
    assert got == expected


def test_read_lines_without_cr_is_unchanged(tmp_path: Path) -> None:
    """Plain LF files read as before: the last unterminated line is kept, bad UTF-8 replaced."""
    path = tmp_path / "plain.log"
    path.write_bytes(b"one\ntwo\n\xff\nfour")
    got = [x for b in replay_module.read_lines(path) for x in b]
    assert got == ["one", "two", "\ufffd", "four"]


def _reference_lines(data: bytes, cap: int) -> list[str]:
    """What a line reader must give for ``data``: lines ended by CRLF, CR or LF, each
    cut to ``cap`` bytes, then decoded with bad UTF-8 replaced."""
    parts = re.split(rb"\r\n|\r|\n", data)
    if parts[-1] == b"":
        parts.pop()  # the file ends with a line end
    return [p[:cap].decode("utf-8", "replace") for p in parts]


@pytest.mark.parametrize("seed", range(12))
def test_read_lines_cuts_long_lines_wherever_the_chunks_fall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Lines over the cap are cut to it and their rest skipped, whatever the chunk size and
    line ends (CR at a chunk's end included); every cut is counted."""
    rng = random.Random(seed)
    cap = 16
    pieces = [b"ok", b"x" * 15, b"y" * 16, b"z" * 17, b"w" * 70, "é€😀".encode() * 5, b"\xff\xfe"]
    data = b"".join(
        rng.choice(pieces) * rng.randint(1, 3) + rng.choice([b"\n", b"\r\n", b"\r"])
        for _ in range(60)
    )
    if seed % 2:
        data += rng.choice(pieces)  # a last line without a line end
    path = tmp_path / "long.log"
    path.write_bytes(data)
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", rng.randint(1, 40))
    cut: list[int] = []
    got = [
        line
        for batch in replay_module.read_lines(
            path, batch_lines=7, max_line_bytes=cap, on_truncated=cut.append
        )
        for line in batch
    ]
    want = _reference_lines(data, cap)
    assert got == want
    longer = [p for p in re.split(rb"\r\n|\r|\n", data) if len(p) > cap]
    assert sum(cut) == len(longer)


def test_replay_of_a_file_without_line_ends_keeps_one_cut_line(tmp_path: Path) -> None:
    """A 3 MB file with no line end (a binary file given by mistake) is one line cut at
    the daemon's max_line_bytes, counted in the file's summary, not 3 MB held as a line."""
    path = tmp_path / "blob.log"
    path.write_bytes(b"A" * 3_000_000)
    lines = [line for batch in replay_module.read_lines(path) for line in batch]
    assert lines == ["A" * MAX_LINE_BYTES]
    summary = replay([(path, "nginx")], Config(), io.StringIO())
    assert summary.files[0].truncated == 1
    assert summary.files[0].lines == 1
    assert summary.as_dict()["files"][0]["truncated"] == 1


def _prompt_line(ts: float, ip: str, body: str) -> str:
    """An nginx-json ``aisentinel_prompts`` line (body last, as the shipped format logs it)."""
    record = {
        "time": f"{ts:.3f}",
        "remote_addr": ip,
        "xff": "",
        "request_method": "POST",
        "request_uri": "/v1/chat/completions",
        "status": "200",
        "body_bytes_sent": "512",
        "http_user_agent": "OpenAI/Python 1.40.0",
        "host": "ai.example",
        "key_id": "",
        "request_body": body,
    }
    return json.dumps(record, ensure_ascii=False)


@pytest.mark.parametrize(("pad", "cut"), [(2_400, 0), (40_000, 6)])
def test_replay_sees_prompt_attacks_in_long_lines(
    tmp_path: Path, now_epoch: float, pad: int, cut: int
) -> None:
    """Injection prompts padded to ~67 KB (over the old 64 KiB cap: the lines were unparsed
    and the client never seen) are read whole, and padded to ~1.1 MB (over the 1 MiB cap
    of nginx-json) are cut, counted, and still read up to the cut: both clients banned."""
    filler = "Lorem ipsum dolor sit amet. " * pad
    lines = []
    for i in range(6):
        for ip, text in (
            ("198.51.100.7", PROMPT_ATTACKS[i]),
            ("198.51.100.8", f"{PROMPT_ATTACKS[i]} {filler}"),
        ):
            body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": text}]})
            lines.append(_prompt_line(now_epoch - 600 + i, ip, body))
    log = tmp_path / "aisentinel.json.log"
    log.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    summary = replay([(log, AUTO)], Config(), out)
    (f,) = summary.files
    assert (f.format, f.lines, f.parsed, f.unparsed, f.truncated) == ("nginx-json", 12, 12, 0, cut)
    bans = sorted(re.findall(r"^decision \S+ ban (\S+)", out.getvalue(), re.MULTILINE))
    assert bans == ["198.51.100.7", "198.51.100.8"]
    text = io.StringIO()
    replay_module.print_summary(summary, text, as_json=False)
    assert (f"{cut} cut at 1048576 bytes" in text.getvalue()) == bool(cut)


def _survey_scan(epoch: float, ip: str) -> str:
    """One request from an internet-wide survey scanner's user agent (a MEDIUM rule)."""
    return f'{ip} - - [{nginx_ts(epoch)}] "GET / HTTP/1.1" 200 512 "-" "Mozilla/5.0 zgrab/0.x"'


@pytest.mark.parametrize(("repeat", "alerts", "held"), [("1h", 1, 1), ("0s", 2, 0)])
def test_summary_counts_findings_held_back_by_alert_repeat(
    tmp_path: Path, now_epoch: float, repeat: str, alerts: int, held: int
) -> None:
    """A survey scanner seen again two windows later is one alert under alert_repeat = 1h
    (the repeat is in the summary's "quieted"), two with 0s; the text summary names it."""
    log = tmp_path / "access.log"
    log.write_text(
        "\n".join(_survey_scan(now_epoch - 1500 + t, "203.0.113.61") for t in (0, 1400)) + "\n"
    )
    config = tmp_path / "c.toml"
    config.write_text(f'[decisions]\nalert_repeat = "{repeat}"\n')
    res = _replay(str(log), "--format", "nginx", "--json", "--config", str(config))
    assert res.returncode == 0, res.stderr
    objects = _objects(res.stdout)
    decisions = [o for o in objects if o["kind"] == "decision"]
    assert [d["action"] for d in decisions] == ["alert"] * alerts
    summary = objects[-1]
    assert summary["quieted"] == ({"rules": held} if held else {})
    text = _replay(str(log), "--format", "nginx", "--config", str(config)).stdout
    assert ("findings held back" in text) is bool(held)


def test_replay_never_reads_the_hosts_ssh_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay's login lines are history: the host's socket table is never read for them."""
    calls: list[object] = []

    def table(*args: object) -> list[object]:
        calls.append(args)
        return []

    monkeypatch.setattr("aisentinel.decisions.engine.read_ssh_connections", table)
    log = tmp_path / "auth.log"
    log.write_text(
        "".join(
            f"Jun 14 10:00:{i:02d} host sshd[1]: Accepted password for bob from "
            f"198.51.100.{i + 1} port {40000 + i} ssh2\n"
            for i in range(20)
        )
    )
    assert main(["replay", "--summary", str(log)]) == 0
    assert calls == []


def test_timezone_option_reads_syslog_times_in_that_zone(tmp_path: Path, now_epoch: float) -> None:
    """On a Tokyo host, --timezone UTC reads a UTC-written auth.log's times as UTC (not 9 h
    early); an unknown zone is refused with exit status 2."""
    t0 = int(now_epoch) - 2 * 86400
    log = tmp_path / "auth.log"
    log.write_text(
        "".join(
            f"{time.strftime('%b %e %H:%M:%S', time.gmtime(t0 + i))} gpu-box sshd[9]: "
            f"Failed password for root from 198.51.100.79 port 5 ssh2\n"
            for i in range(5)
        )
    )
    env = {**os.environ, "TZ": "Asia/Tokyo"}

    def finding_time(*args: str) -> str:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "aisentinel",
                "replay",
                str(log),
                "--format=sshd",
                "--json",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
        assert res.returncode == 0, res.stderr
        return str(next(o for o in _objects(res.stdout) if o["type"] == "finding")["time"])

    in_utc = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(t0 + 4))
    in_tokyo = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(t0 + 4 - 9 * 3600))
    assert finding_time("--timezone", "UTC").startswith(in_utc)
    assert finding_time().startswith(in_tokyo)
    res = _replay(str(log), "--timezone", "Mars/Olympus")
    assert res.returncode == 2
    assert "unknown time zone 'Mars/Olympus'" in res.stderr
