"""Fault injection: the real daemon as a subprocess survives its input and its host.

Each case starts ``python -m aisentinel run``, injects one fault, and asserts the
daemon is up (or refused cleanly at start), nothing was lost, and the reason is
visible in its log, metrics and ``aisentinel status``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import DaemonProc, no_traceback, source_table, wait_until

pytestmark = pytest.mark.slow

NOW = float(int(time.time()) - 3600)


def syslog_ts(epoch: float) -> str:
    """``Nov 25 23:14:30`` for an epoch (UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%b %d %H:%M:%S")


def ssh_fail(i: int, ip: str, user: str = "root") -> str:
    """One failed-password sshd line, ``i`` seconds after NOW."""
    return (
        f"{syslog_ts(NOW + i)} gpu-box sshd[{4000 + i % 1000}]: Failed password for {user} "
        f"from {ip} port {40000 + i % 20000} ssh2"
    )


def ssh_noise(i: int) -> str:
    """An sshd line the detectors ignore, still counted as read."""
    return (
        f"{syslog_ts(NOW + i)} gpu-box sshd[{5000 + i % 1000}]: "
        "Received disconnect from 192.0.2.1 port 22:11: bye"
    )


def append(path: Path, lines: list[str], end: str = "\n") -> None:
    """Append lines to a log, each ended by ``end``."""
    with path.open("a") as fh:
        fh.write("".join(line + end for line in lines))


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A work folder with an empty ``logs`` directory; daemons left running are killed."""
    (tmp_path / "logs").mkdir()
    yield tmp_path
    for proc in list(DaemonProc.started):
        proc.close()
    DaemonProc.started.clear()


def sshd_daemon(work: Path, **kw: object) -> DaemonProc:
    """A daemon following ``logs/auth.log`` (sshd) from its beginning."""
    sources = source_table("auth", "sshd", [work / "logs" / "auth.log"])
    return DaemonProc(work, sources, **kw)  # type: ignore[arg-type]


def banned(proc: DaemonProc) -> set[str]:
    """Targets of the most recent decisions in force, from ``aisentinel status --json``."""
    snap = proc.status_json()
    return {d["target"] for d in snap["decisions"]["recent"] if d.get("target")}


def active_bans(proc: DaemonProc) -> int:
    """How many decisions are in force, from ``aisentinel status --json``."""
    return int(proc.status_json()["decisions"]["active"])


def lines_read(proc: DaemonProc, source: str = "auth") -> float:
    """``aisentinel_source_lines_read_total`` for one source (0 when absent)."""
    return proc.metric("aisentinel_source_lines_read_total", f'source="{source}"') or 0.0


# --------------------------------------------------------------------------- down


def test_poison_times_are_contained_and_the_daemon_keeps_detecting(work: Path) -> None:
    """nginx-json lines with times of +-1e308 are counted unparsed; detection goes on."""
    web = work / "logs" / "access.json"
    sources = source_table("web", "nginx-json", [web]) + source_table(
        "auth", "sshd", [work / "logs" / "auth.log"]
    )
    proc = DaemonProc(work, sources).start()
    poison = [
        json.dumps(
            {
                "time": t,
                "remote_addr": "203.0.113.9",
                "request_method": "GET",
                "request_uri": "/",
                "status": 404,
                "body_bytes_sent": 0,
            }
        )
        for t in (1e308, -1e308, 1e308)
    ]
    append(web, poison)
    append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.77") for i in range(6)])
    assert wait_until(lambda: "198.51.100.77" in banned(proc)), proc.text()
    assert proc.alive()
    assert wait_until(
        lambda: proc.metric("aisentinel_source_lines_unparsed_total", 'source="web"') == 3
    )
    assert no_traceback(proc.text())


def test_reload_to_an_overflowing_threshold_is_refused(work: Path) -> None:
    """SIGHUP to ``threshold = 99999999999999999999`` is refused; the old config keeps working."""
    proc = sshd_daemon(work).start()
    good = proc.config.read_text()
    proc.config.write_text(
        good + "\n[detectors.ssh_bruteforce]\nthreshold = 99999999999999999999\n"
    )
    proc.hup()
    assert wait_until(
        lambda: proc.metric("aisentinel_config_reloads_total", 'result="failed"') == 1
    ), proc.text()
    append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.78") for i in range(6)])
    assert wait_until(lambda: "198.51.100.78" in banned(proc))
    assert no_traceback(proc.text())
    check = subprocess.run(
        [*proc.cli(), "check-config", str(proc.config)],
        capture_output=True,
        text=True,
        env=proc.env(),
        check=False,
    )
    assert check.returncode == 1
    assert "detectors.ssh_bruteforce.threshold" in check.stderr


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("daemon", "heartbeat_interval", "nan"),
        ("daemon", "expire_interval", "nan"),
        ("daemon", "heartbeat_interval", "inf"),
        ("decisions", "ban_ttl", "inf"),
        ("detectors.ssh_bruteforce", "threshold", "99999999999999999999"),
    ],
)
def test_check_config_refuses_values_that_would_stall_or_kill(
    work: Path, table: str, key: str, value: str
) -> None:
    """Non-finite durations and overflowing thresholds are refused by check-config and run."""
    path = work / "bad.toml"
    path.write_text(f"[{table}]\n{key} = {value}\n")
    for args in (["check-config", str(path), "--print"], ["run", "--config", str(path)]):
        res = subprocess.run(
            [*DaemonProc.cli(), *args],
            capture_output=True,
            text=True,
            env=DaemonProc(work, "").env(),
            timeout=30,
            check=False,
        )
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert f"{path}: {table}.{key}:" in res.stderr
        assert no_traceback(res.stdout + res.stderr)


def test_ledger_path_that_is_a_directory_is_reported_without_traceback(work: Path) -> None:
    """A directory where the ledger file should be: one clear line, no traceback."""
    state = work / "state"
    (state / "decisions.sqlite3").mkdir(parents=True)
    proc = sshd_daemon(work).start(wait_ready=False)
    wait_until(lambda: not proc.alive() or proc.answers())
    assert no_traceback(proc.text())
    assert "decisions.sqlite3" in proc.text()
    if proc.alive():  # degraded: detection goes on, and it says so
        append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.79") for i in range(6)])
        assert wait_until(lambda: "198.51.100.79" in banned(proc))
        assert proc.status("--json").returncode != 0
    else:
        assert proc.wait_exit() != 0


def test_metrics_port_in_use_keeps_detecting(work: Path) -> None:
    """A busy metrics port is one clear line; the daemon still detects and says why."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        proc = sshd_daemon(work, port=port).start()
        append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.80") for i in range(6)])
        assert wait_until(lambda: "198.51.100.80" in banned(proc)), proc.text()
        assert str(port) in proc.text()
        assert no_traceback(proc.text())
        res = proc.status("--json")
        assert res.returncode == 1
        assert "exporter" in json.dumps(json.loads(res.stdout).get("degraded", {}))


# --------------------------------------------------------------------------- blind


def test_positions_file_that_is_a_directory_does_not_blind_the_sources(work: Path) -> None:
    """An unreadable positions file: lines are still read, and the fault is visible."""
    state = work / "state"
    state.mkdir()
    for name in ("positions.json", "positions-auth.json"):
        (state / name).mkdir()
    proc = sshd_daemon(work).start()
    append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.81") for i in range(6)])
    assert wait_until(lambda: "198.51.100.81" in banned(proc)), proc.text()
    assert lines_read(proc) == 6
    assert no_traceback(proc.text())


def test_missing_log_is_down_with_a_reason_then_read_from_its_start(work: Path) -> None:
    """A configured log that does not exist is down with a reason; once it appears, all is read."""
    log = work / "logs" / "auth.log"
    proc = sshd_daemon(work).start()
    res = proc.status("--json")
    assert res.returncode == 1
    assert "auth.log" in res.stdout
    assert proc.metric("aisentinel_source_up", 'source="auth"') == 0
    assert any("auth.log" in json.dumps(r) for r in proc.records() if r.get("level") == "warning")
    append(log, [ssh_noise(i) for i in range(100)])
    assert wait_until(lambda: lines_read(proc) == 100)
    assert wait_until(lambda: proc.metric("aisentinel_source_up", 'source="auth"') == 1)
    assert proc.status().returncode == 0


def test_log_appearing_while_down_is_read_from_its_start(work: Path) -> None:
    """A log missing in the last run that appears while the daemon is down: all 100 lines read."""
    sources = source_table("auth", "sshd", [work / "logs" / "auth.log"], start_at="end")
    first = DaemonProc(work, sources).start()
    assert first.terminate() == 0
    append(work / "logs" / "auth.log", [ssh_noise(i) for i in range(100)])
    second = DaemonProc(work, sources).start()
    assert wait_until(lambda: lines_read(second) == 100), second.text()


def test_two_rotations_while_down_lose_nothing(work: Path) -> None:
    """Rotated twice while down (``.1`` and ``.2.gz`` left): all 300 lines are read once."""
    log = work / "logs" / "auth.log"
    first = sshd_daemon(work).start()
    append(log, [ssh_noise(i) for i in range(100)])
    assert wait_until(lambda: lines_read(first) == 100)
    append(log, [ssh_noise(100 + i) for i in range(100)])
    assert wait_until(lambda: lines_read(first) == 200)
    assert first.terminate() == 0
    append(log, [ssh_noise(200 + i) for i in range(100)])  # unread part of generation 1
    log.rename(log.with_name("auth.log.1"))
    append(log, [ssh_noise(300 + i) for i in range(100)])
    # second rotation: .1 -> .2.gz, current -> .1
    one = log.with_name("auth.log.1")
    with one.open("rb") as src, gzip.open(log.with_name("auth.log.2.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    one.unlink()
    log.rename(one)
    append(log, [ssh_noise(400 + i) for i in range(100)])
    second = sshd_daemon(work).start()
    assert wait_until(lambda: lines_read(second) == 300), second.text()
    time.sleep(1.0)  # nothing more arrives late
    assert lines_read(second) == 300


def test_cr_only_line_endings_are_lines(work: Path) -> None:
    """A log written with bare CR line ends: 60 records are 60 lines."""
    proc = sshd_daemon(work).start()
    append(work / "logs" / "auth.log", [ssh_noise(i) for i in range(60)], end="\r")
    append(work / "logs" / "auth.log", [ssh_noise(60)])
    assert wait_until(lambda: lines_read(proc) == 61), proc.text()


def test_sigterm_with_a_backlog_is_quick_and_loses_nothing(work: Path) -> None:
    """SIGTERM mid-backlog exits within 5 s; a restart reads the rest, every line exactly once."""
    log = work / "logs" / "auth.log"
    total = 300_000
    with log.open("w") as fh:
        for i in range(total):
            fh.write(ssh_noise(i) + "\n")
    first = sshd_daemon(work).start()
    assert wait_until(lambda: lines_read(first) > 0)
    t0 = time.monotonic()
    status = first.terminate(timeout=20)
    took = time.monotonic() - t0
    assert status == 0
    assert took < 5.0, f"stop took {took:.1f}s"
    done_first = _last_lines(first)
    second = sshd_daemon(work).start()
    assert wait_until(lambda: lines_read(second) + done_first >= total, timeout=60)
    assert second.terminate() == 0
    assert done_first + _last_lines(second) == total


def _last_lines(proc: DaemonProc) -> int:
    """Lines processed as reported in the daemon's final log record."""
    recs = proc.logged("aisentinel stopped")
    assert recs, proc.text()
    return int(recs[-1]["lines"])


# --------------------------------------------------------------------------- fooled


def test_forged_output_never_reaches_the_console(work: Path) -> None:
    """A username with ESC and a newline cannot clear the screen or forge a log line."""
    proc = sshd_daemon(work, extra="").start()
    proc.close()
    proc.config.write_text(
        proc.config.read_text().replace('log_format = "json"', 'log_format = "console"')
    )
    proc.start(wait_ready=False)
    assert wait_until(lambda: "aisentinel starting" in proc.text())
    evil = "x\x1b[2J\u202eevil"
    append(work / "logs" / "auth.log", [ssh_fail(i, "198.51.100.82", user=evil) for i in range(6)])
    assert wait_until(lambda: "198.51.100.82" in proc.text())
    time.sleep(0.5)
    assert "\x1b[2J" not in proc.text()
    assert "\u202e" not in proc.text()


def test_unbannable_addresses_are_never_targets(work: Path) -> None:
    """Unspecified, broadcast, multicast and reserved addresses are never ban targets."""
    proc = sshd_daemon(work).start()
    bad = ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1", "240.0.0.1"]
    for n, ip in enumerate(bad):
        append(work / "logs" / "auth.log", [ssh_fail(n * 10 + i, ip) for i in range(6)])
    append(work / "logs" / "auth.log", [ssh_fail(100 + i, "198.51.100.83") for i in range(6)])
    assert wait_until(lambda: "198.51.100.83" in banned(proc))
    assert banned(proc) == {"198.51.100.83"}
    assert active_bans(proc) == 1


# --------------------------------------------------------------------------- crashes


def test_kill9_during_a_storm_then_restart_keeps_bans_and_reads_on(work: Path) -> None:
    """kill -9 mid-storm, mid ledger writes: the ledger is intact, no ban and no line is lost."""
    log = work / "logs" / "auth.log"
    no_brake = "\n[decisions]\nmax_bans_per_minute = 10000\n"
    proc = sshd_daemon(work, extra=no_brake).start()
    attackers = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(1500)]  # RFC 2544
    chunks = [attackers[i : i + 50] for i in range(0, len(attackers), 50)]

    def storm() -> None:
        for n, chunk in enumerate(chunks):
            append(log, [ssh_fail(n * 6 + k, ip) for k in range(6) for ip in chunk])
            time.sleep(0.02)

    writer = threading.Thread(target=storm)
    writer.start()
    assert wait_until(lambda: active_bans(proc) >= 100, timeout=30), proc.text()
    proc.kill9()  # while the storm is still being written and banned
    writer.join()
    with sqlite3.connect(work / "state" / "decisions.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    second = sshd_daemon(work, extra=no_brake).start()
    assert wait_until(lambda: _position(work) == log.stat().st_size, timeout=60), second.text()
    assert wait_until(lambda: active_bans(second) == len(attackers), timeout=30)
    assert no_traceback(second.text())


def _position(work: Path) -> int:
    """The saved read offset of the auth log (0 when none)."""
    for path in (work / "state").glob("positions*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        text = json.dumps(data)
        if "auth.log" in text:
            for value in _walk(data):
                if isinstance(value, dict) and "offset" in value:
                    return int(value["offset"])
    return 0


def _walk(value: object) -> Iterator[object]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def test_status_when_no_daemon_runs(work: Path) -> None:
    """``aisentinel status`` with no daemon: one clear line, exit 3."""
    proc = sshd_daemon(work)
    res = proc.status()
    assert res.returncode == 3
    assert str(proc.sock) in res.stderr + res.stdout
    assert no_traceback(res.stderr + res.stdout)
