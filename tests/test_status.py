"""`aisentinel status`: a real daemon asked over its control socket, text and JSON, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import PACKAGE_PATH, nginx_line, ssh_fail, wait_for
from prometheus_client.parser import text_string_to_metric_families

from aisentinel import cli
from aisentinel.config import DEFAULT_CONTROL_SOCKET, ConfigError, load_config, parse_config
from aisentinel.daemon import Daemon
from aisentinel.detectors.ssh_bruteforce import SshBruteforceConfig, SshBruteforceDetector
from aisentinel.events import SshEvent, SshKind
from aisentinel.runlock import LOCK_FILE
from aisentinel.runlock import release as release_lock
from aisentinel.runlock import take as take_lock
from aisentinel.sources import journald
from aisentinel.sources.base import SourceStats
from aisentinel.status import problems, render, snapshot

REPO = Path(__file__).resolve().parents[1]
OTHER_UID = 54321

SOURCE = """
[[sources]]
name = "{name}"
type = "file"
parser = "{parser}"
paths = ["{path}"]
"""

CONFIG = """
[daemon]
state_dir = "{tmp}/state"
control_socket = "{tmp}/run/control.sock"
log_format = "json"
heartbeat_interval = "200ms"
expire_interval = "1s"

[exporter]
port = 0
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory (a Unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    (path / "logs").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _toml(text: str) -> str:
    """``text`` as the inside of a TOML basic string (control characters as \\uXXXX)."""
    return json.dumps(text)[1:-1]


class Running:
    """A daemon on ``extra`` sources (TOML) running in a background thread."""

    def __init__(self, tmp: Path, extra: str) -> None:
        self.path = tmp / "aisentinel.toml"
        self.path.write_text(CONFIG.format(tmp=tmp) + extra)
        self.daemon = Daemon(load_config(self.path), config_path=self.path)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        assert self.daemon.started.wait(10)
        assert self.daemon.control is not None

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def _sources(tmp: Path, *names: str) -> str:
    out = ""
    for name in names:
        log = tmp / "logs" / f"{name}.log"
        log.touch()
        out += SOURCE.format(name=name, parser="sshd", path=log)
    return out


@pytest.fixture
def running(short_dir: Path) -> Iterator[Running]:
    """A daemon following two existing log files."""
    r = Running(short_dir, _sources(short_dir, "auth", "auth2"))
    yield r
    r.stop()


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    """``aisentinel status ARGS`` in a fresh interpreter, as an operator runs it."""
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH}
    return subprocess.run(
        [sys.executable, "-m", "aisentinel", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _all_up(r: Running) -> bool:
    return all(s.stats.up for s in r.daemon.sources.values()) and r.daemon.last_heartbeat > 0


def test_status_json_reports_every_section(running: Running, now_epoch: float) -> None:
    """`status --json` returns sources, detectors, decisions in force and responders; exit 0."""
    with (running.path.parent / "logs" / "auth.log").open("a") as fh:
        fh.writelines(ssh_fail(now_epoch + i, "198.51.100.10") + "\n" for i in range(6))
    assert wait_for(lambda: bool(running.daemon.engine.active()), timeout=15)
    assert wait_for(lambda: _all_up(running))
    running.daemon.pipeline.quieted["ssh_bruteforce"] += 3  # as if 3 repeats were held back
    done = _status("--json", "--config", str(running.path))
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    auth = next(s for s in snap["sources"] if s["name"] == "auth")
    assert auth["up"] is True
    assert auth["lines_read"] == 6
    assert auth["lines_parsed"] == 6
    assert auth["where"] == [str(running.path.parent / "logs" / "auth.log")]
    ssh = next(d for d in snap["detectors"] if d["name"] == "ssh_bruteforce")
    assert ssh["findings"] == 1
    assert ssh["evictions"] == 0
    assert ssh["quieted"] == 3
    assert snap["decisions"]["active"] == 1
    assert snap["decisions"]["recent"][0]["target"] == "198.51.100.10"
    assert snap["decisions"]["recent"][0]["detector"] == "ssh_bruteforce"
    assert [r["name"] for r in snap["responders"]] == ["dryrun"]
    assert snap["metrics"]["port"] == running.daemon.metrics_port
    assert snap["heartbeat"]["stale"] is False
    assert snap["problems"] == []


def test_status_text_all_up_exits_zero(running: Running) -> None:
    """The text form has a section per part and says all is up; exit 0."""
    assert wait_for(lambda: _all_up(running))
    done = _status("--socket", str(running.daemon.config.daemon.control_socket))
    assert done.returncode == 0, done.stdout + done.stderr
    for heading in ("SOURCES (2/2 up)", "DETECTORS", "DECISIONS", "RESPONDERS", "OK: every"):
        assert heading in done.stdout


def test_status_after_a_reload_shows_the_running_restart_only_settings(
    running: Running,
) -> None:
    """A reload that changes queue_batches and the metrics address (restart only)
    leaves status on the running queue and endpoint, and warns of each key with its
    running and file values."""
    text = running.path.read_text()
    text = text.replace('log_format = "json"', 'log_format = "json"\nqueue_batches = 2')
    running.path.write_text(text.replace("port = 0", 'port = 0\nlisten = "0.0.0.0"'))
    warned = _reload_warnings(running)
    snap = snapshot(running.daemon)
    assert snap["queue"]["capacity"] == 8
    assert snap["metrics"]["listen"] == "127.0.0.1"
    assert snap["metrics"]["port"] == running.daemon.metrics_port > 0
    assert warned == {
        ("daemon.queue_batches", "8", "2"),
        ("exporter.listen", "127.0.0.1", "0.0.0.0"),
    }


def test_reload_warns_that_a_changed_audit_setting_applies_on_restart(running: Running) -> None:
    """The scheduled audit runs as it started: a reload that changes [audit] warns of the key."""
    running.path.write_text(running.path.read_text() + '\n[audit]\ninterval = "2h"\n')
    assert _reload_warnings(running) == {("audit.interval", "3600.0", "7200.0")}


def test_reload_warns_that_a_changed_web_config_file_applies_on_restart(short_dir: Path) -> None:
    """The metrics endpoint keeps the web config it started with: a reload after the
    file changed (another password) says so for exporter.web_config."""
    web = short_dir / "web-config.yml"
    web.write_text("basic_auth_users:\n  prometheus: $2b$04$" + "a" * 21 + "O" + "a" * 31 + "\n")
    r = Running(short_dir, f'web_config = "{web}"\n' + _sources(short_dir, "auth"))
    try:
        salt = "b" * 21 + "O" + "b" * 31
        web.write_text("basic_auth_users:\n  prometheus: $2b$04$" + salt + "\n")
        warned = _reload_warnings(r)
    finally:
        r.stop()
    assert warned == {
        ("exporter.web_config", "the file's content at start", f"{web} changed"),
    }


def _reload_warnings(running: Running) -> set[tuple[str, str, str]]:
    """Reload ``running``; the (key, running, in_file) of each restart-only warning."""
    with structlog.testing.capture_logs() as logs:
        running.daemon.request_reload()
        assert wait_for(lambda: running.daemon.reloads["ok"] == 1)
    return {
        (e["key"], e["running"], e["in_file"])
        for e in logs
        if e["event"] == "setting changes on restart only"
    }


def test_source_down_exits_one(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that is not reading (journald without systemd-python) makes the exit 1,
    and the text names it and why."""
    monkeypatch.setattr(journald, "_journal", None)
    extra = _sources(short_dir, "auth") + ('\n[[sources]]\nname = "journal"\ntype = "journald"\n')
    r = Running(short_dir, extra)
    try:
        assert wait_for(lambda: r.daemon.sources["auth"].stats.up)
        done = _status("--config", str(r.path))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "SOURCES (1/2 up)" in done.stdout
        assert "PROBLEMS (1)" in done.stdout
        assert "source journal is down" in done.stdout
    finally:
        r.stop()


@pytest.mark.skipif(
    not hasattr(SourceStats, "state"), reason="a missing file is reported down with source state"
)
def test_missing_file_source_exits_one(short_dir: Path) -> None:
    """A file source whose configured file does not exist is down: exit 1, the reason shown."""
    missing = short_dir / "logs" / "missing.log"
    r = Running(short_dir, SOURCE.format(name="gone", parser="sshd", path=missing))
    try:
        done = _status("--config", str(r.path))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "source gone is down" in done.stdout
    finally:
        r.stop()


def test_text_escapes_names_and_errors_from_config_and_logs(short_dir: Path) -> None:
    """A source name and a last error holding ESC, a newline and a bidi override are shown
    escaped: no raw control character reaches the terminal."""
    evil = short_dir / "logs" / "x\x1b[2Jy\u202ez\n.log"
    evil.symlink_to(evil.name)  # a loop: stat fails with ELOOP and the error names the path
    name = "web\x1b[31mRED"
    r = Running(short_dir, SOURCE.format(name=_toml(name), parser="nginx", path=_toml(str(evil))))
    try:
        assert wait_for(lambda: bool(r.daemon.sources[name].stats.last_error))
        done = _status("--config", str(r.path))
        out = done.stdout
        assert "web\\x1b[31mRED" in out
        assert "x\\x1b[2Jy\\u202ez\\n.log" in out
        assert "\x1b" not in out
        assert "\u202e" not in out
        assert all(line.isprintable() for line in out.splitlines())
        snap = json.loads(_status("--json", "--config", str(r.path)).stdout)
        assert snap["sources"][0]["name"] == name  # JSON keeps the exact text, escaped by JSON
    finally:
        r.stop()


def test_a_source_reading_another_format_is_blind_and_exits_one(
    short_dir: Path, now_epoch: float
) -> None:
    """An nginx source fed vhost_combined lines (``host:port`` first) reads them all and
    parses none: `status` exits 1 naming the source blind, the share unparsed and where to
    look; the sshd source beside it is fine."""
    web = short_dir / "logs" / "vhost.log"
    web.touch()
    extra = _sources(short_dir, "auth") + SOURCE.format(name="web", parser="nginx", path=web)
    r = Running(short_dir, extra)
    try:
        assert wait_for(lambda: _all_up(r))
        with web.open("a") as fh:
            fh.writelines(
                f"ai.example.com:443 {nginx_line(now_epoch + i, '203.0.113.7', '/.env')}\n"
                for i in range(60)
            )
        assert wait_for(lambda: r.daemon.pipeline.sources["web"].unparsed == 60, timeout=15)
        done = _status("--config", str(r.path))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "PROBLEMS (1)" in done.stdout
        assert (
            "source web is blind: 100% of its last 60 lines are not nginx lines, so nothing "
            "in them is seen (`aisentinel explain --file LOG`; docs/nginx-log-format.md)"
        ) in done.stdout
        snap = json.loads(_status("--json", "--config", str(r.path)).stdout)
        entry = next(s for s in snap["sources"] if s["name"] == "web")
        assert entry["blind"] is True
        assert entry["unrecognised_share"] == 1.0
        assert next(s for s in snap["sources"] if s["name"] == "auth")["blind"] is False
    finally:
        r.stop()


def test_an_untrusted_local_proxy_is_a_problem_of_its_source(
    short_dir: Path, now_epoch: float
) -> None:
    """An nginx source whose requests all come from 127.0.0.1 with X-Forwarded-For (a local
    HTTP proxy, no trusted_proxies) is up and parses every line, yet `status` exits 1
    saying every client is 127.0.0.1 and how to trust the proxy, and the scrape has
    aisentinel_source_setup_problem 1 for it."""
    web = short_dir / "logs" / "access.log"
    web.touch()
    r = Running(short_dir, SOURCE.format(name="web", parser="nginx", path=web))
    try:
        assert wait_for(lambda: _all_up(r))
        with web.open("a") as fh:
            fh.writelines(
                f'{nginx_line(now_epoch + i, "127.0.0.1", "/.env")} "203.0.113.{i}"\n'
                for i in range(60)
            )
        assert wait_for(lambda: r.daemon.pipeline.sources["web"].parsed == 60, timeout=15)
        done = _status("--config", str(r.path))
        assert done.returncode == 1, done.stdout + done.stderr
        problem = (
            "source web: every client is 127.0.0.1, an untrusted proxy: if it is an HTTP "
            'proxy setting X-Forwarded-For, set [parsers] trusted_proxies = ["127.0.0.1/32"] '
            "or use nginx's realip module; a TCP/TLS tunnel: the PROXY protocol"
        )
        assert f"PROBLEMS (1)\n  - {problem}\n" in done.stdout
        snap = json.loads(_status("--json", "--config", str(r.path)).stdout)
        assert snap["problems"] == [problem]
        [entry] = snap["sources"]
        assert entry["setup_problems"] == [problem.removeprefix("source web: ")]
        assert entry["blind"] is False
        url = f"http://127.0.0.1:{r.daemon.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            scrape = resp.read().decode()
        # on-call is paged for it too (AisentinelSourceSetupProblem reads this)
        setup = {
            (s.labels["source"], s.labels["problem"]): s.value
            for family in text_string_to_metric_families(scrape)
            if family.name == "aisentinel_source_setup_problem"
            for s in family.samples
        }
        assert setup == {("web", "clock_offset"): 0.0, ("web", "untrusted_local_proxy"): 1.0}
    finally:
        r.stop()


def test_no_daemon_exits_three_with_one_line(short_dir: Path) -> None:
    """With no daemon listening: exit 3, one line naming the socket, no traceback."""
    path = short_dir / "run" / "control.sock"
    done = _status("--socket", str(path))
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr == f"aisentinel: status: aisentinel is not running (no daemon at {path})\n"


def test_a_daemon_holding_the_run_lock_without_its_socket_is_not_called_stopped(
    short_dir: Path,
) -> None:
    """Nobody answers on the socket but a process holds state_dir/daemon.lock (a daemon
    whose socket file was removed): exit 1 and one line naming the lock holder, never
    "not running" (exit 3)."""
    config = short_dir / "c.toml"
    config.write_text(CONFIG.format(tmp=short_dir))
    (short_dir / "state").mkdir()
    lock = take_lock(short_dir / "state" / LOCK_FILE)
    try:
        done = _status("--config", str(config))
    finally:
        release_lock(lock)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert f"a daemon runs (pid {os.getpid()} holds {short_dir}/state/daemon.lock)" in done.stderr
    assert f"control socket {short_dir}/run/control.sock is missing" in done.stderr
    assert _status("--config", str(config)).returncode == 3  # lock let go: not running


def test_socket_path_comes_from_the_config(short_dir: Path) -> None:
    """Without --socket the path in `[daemon] control_socket` is asked."""
    config = short_dir / "c.toml"
    config.write_text(f'[daemon]\ncontrol_socket = "{short_dir}/elsewhere.sock"\n')
    done = _status("--config", str(config))
    assert done.returncode == 3
    assert f"{short_dir}/elsewhere.sock" in done.stderr


@pytest.mark.skipif(
    DEFAULT_CONTROL_SOCKET.exists(), reason="a real daemon serves the default socket here"
)
def test_broken_config_still_asks_the_default_socket(short_dir: Path) -> None:
    """A config that does not validate is named on stderr and the default socket is asked."""
    config = short_dir / "c.toml"
    config.write_text("[daemon]\nno_such_key = 1\n")
    done = _status("--config", str(config))
    assert done.returncode == 3
    assert "config unusable (1 problems, see `aisentinel check-config`)" in done.stderr
    assert "/run/aisentinel/control.sock" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
def test_other_user_exits_two(running: Running, capfd: pytest.CaptureFixture[str]) -> None:
    """A user outside root/the daemon's user/its group: exit 2 and one line saying who may."""
    path = running.daemon.config.daemon.control_socket
    assert path is not None
    path.parent.parent.chmod(0o755)  # only the 0750 run directory keeps the user out
    pid = os.fork()
    if pid == 0:  # the child: become another user and run the command's code
        code = 99
        try:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            code = cli.cmd_status(cli.build_parser().parse_args(["status", "--socket", str(path)]))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    err = capfd.readouterr().err
    assert f"permission denied on {path}" in err
    assert "run as root or as a member of the aisentinel group" in err
    assert "Traceback" not in err


def test_daemon_keeps_serving_after_bad_requests(running: Running) -> None:
    """Garbage, an unknown command and an oversize line get error answers; status still works."""
    path = running.daemon.config.daemon.control_socket
    assert path is not None
    for payload in (
        b"garbage\n",
        b'{"command": "no-such-command"}\n',
        b"{" + b" " * 70_000 + b"}\n",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(payload)
            answer = json.loads(sock.makefile("rb").readline())
        assert answer["ok"] is False
        assert answer["error"]
    assert wait_for(lambda: _all_up(running))
    assert _status("--socket", str(path)).returncode == 0


def test_daemon_runs_on_when_the_socket_cannot_be_bound(short_dir: Path) -> None:
    """An unusable socket path is one error line; the daemon starts and reads logs anyway."""
    (short_dir / "run").write_text("a file where the directory should be")
    path = short_dir / "aisentinel.toml"
    path.write_text(CONFIG.format(tmp=short_dir) + _sources(short_dir, "auth"))
    daemon = Daemon(load_config(path), config_path=path)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.started.wait(10)
        assert daemon.control is None
        assert wait_for(lambda: daemon.sources["auth"].stats.up)
    finally:
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def test_second_daemon_does_not_steal_the_socket(running: Running, short_dir: Path) -> None:
    """A second daemon configured with the same socket runs without it; the first keeps it."""
    other = short_dir / "other"
    other.mkdir()
    cfg = load_config(running.path)
    second = Daemon(
        parse_config(
            {
                "daemon": {
                    "state_dir": str(other / "state"),
                    "control_socket": str(cfg.daemon.control_socket),
                },
                "exporter": {"enabled": False},
                "sources": [],
            }
        )
    )
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    try:
        assert second.started.wait(10)
        assert second.control is None
        snap = json.loads(_status("--json", "--config", str(running.path)).stdout)
        assert snap["pid"] == os.getpid()
        assert [s["name"] for s in snap["sources"]] == ["auth", "auth2"]
    finally:
        second.request_stop()
        thread.join(10)


# ---------------------------------------------------------------------- pure parts


def _snap(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sources": [{"name": "auth", "up": True}],
        "responders": [{"name": "dryrun", "healthy": True, "detail": ""}],
        "degraded": {},
        "heartbeat": {"stale": False, "age_seconds": 0.1, "interval_seconds": 5.0},
    }
    base.update(over)
    return base


def test_problems_cover_each_kind_of_down() -> None:
    """Each down condition gives one problem: source, responder, degraded part, stale beat,
    no source at all."""
    assert problems(_snap()) == []
    assert problems(_snap(sources=[{"name": "web", "up": False, "reason": "no such file"}])) == [
        "source web is down: no such file"
    ]
    assert problems(_snap(responders=[{"name": "nft", "healthy": False, "detail": "no nft"}])) == [
        "responder nft is unhealthy: no nft"
    ]
    assert problems(_snap(responders=[{"name": "nft", "healthy": None, "detail": ""}])) == []
    assert problems(_snap(degraded={"ledger": "disk full"})) == ["ledger is degraded: disk full"]
    stale = problems(_snap(heartbeat={"stale": True, "age_seconds": 40.0, "interval_seconds": 5}))
    assert len(stale) == 1
    assert stale[0].startswith("pipeline heartbeat is stale (last 40s ago")
    (none,) = problems(_snap(sources=[]))  # a daemon with no source reads nothing
    assert none.startswith("no log source is configured")


def test_a_degraded_source_is_a_problem() -> None:
    """A source that reads but is degraded (its positions cannot be saved: a restart reads
    its logs again) is a problem, with its reason: `aisentinel status` exits 1."""
    reading = {"name": "auth", "up": True, "state": "degraded", "reason": "cannot save positions"}
    assert problems(_snap(sources=[reading])) == ["source auth is degraded: cannot save positions"]
    following = {"name": "auth", "up": True, "state": "following", "reason": "following 1 path(s)"}
    assert problems(_snap(sources=[following])) == []


def test_render_escapes_problem_and_error_text() -> None:
    """Degraded reasons and error texts are escaped in the text form too."""
    snap = _snap(
        degraded={"ledger\x1b": "disk\nfull\u202e"},
        errors=[{"component": "source x", "error": "bad\x07bell"}],
    )
    out = render(snap)
    assert "ledger\\x1b is degraded: disk\\nfull\\u202e" in out
    assert "bad\\x07bell" in out
    assert all(line.isprintable() for line in out.splitlines())


def test_source_notes_are_shown_apart_escaped_and_not_problems() -> None:
    """A source's notes (a GPU value NVML does not support) are listed under NOTES, escaped,
    and leave the verdict OK."""
    gpu = {"name": "gpu", "up": True, "notes": ["GPU 0: NVML does not support utilization\x1b"]}
    snap = _snap(sources=[gpu])
    assert problems(snap) == []
    out = render(snap)
    assert "NOTES (seen, not failures)\n  gpu: GPU 0: NVML does not support utilization\\x1b" in out
    assert out.rstrip().endswith("OK: every source, responder and component is up")
    assert "NOTES" not in render(_snap())


def test_detector_evictions_count_keys_pushed_out_of_a_full_table() -> None:
    """With max_keys = 2, a third address evicts one key and evictions() says 1."""
    t0 = 1_764_000_000.0
    det = SshBruteforceDetector(
        SshBruteforceConfig(max_keys=2, slow_thresholds=(), slow_windows=())
    )
    assert det.evictions() == 0
    for i, ip in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3")):
        det.observe(SshEvent(t0 + i, "auth", ip, SshKind.FAILED_PASSWORD, "root", 22))
    assert det.tracked_keys() == 2
    assert det.evictions() == 1


def test_control_socket_setting() -> None:
    """The socket defaults to /run/aisentinel/control.sock, "" turns it off, relative is refused."""
    assert parse_config({}).daemon.control_socket == Path("/run/aisentinel/control.sock")
    assert parse_config({"daemon": {"control_socket": ""}}).daemon.control_socket is None
    with pytest.raises(ConfigError, match=r"daemon\.control_socket"):
        parse_config({"daemon": {"control_socket": "run/c.sock"}})


def test_no_responder_is_a_problem_saying_nothing_is_enforced() -> None:
    """A daemon with no responder (a bare [responders] table) reports that nothing is enforced."""
    (found,) = problems(_snap(responders=[]))
    assert found.startswith("no responder is enabled: nothing is enforced")


def test_problems_name_a_blind_journald_source_and_what_it_reads() -> None:
    """A blind journald source is told as journal entries that are not sshd's (what such a
    source reads), not as lines of a format; its setup problems are told too."""
    snap = {
        "sources": [
            {
                "name": "nginx-journal",
                "up": True,
                "state": "following",
                "blind": True,
                "unrecognised_share": 1.0,
                "recent_lines": 200,
                "format": "journald",
                "setup_problems": ["something else"],
            }
        ]
    }
    assert problems(snap) == [
        "source nginx-journal is blind: 100% of its last 200 journal entries are not sshd's "
        "(nor the kernel's with kernel_xid), the only ones a journald source reads (check "
        "its matches)",
        "source nginx-journal: something else",
    ]
