"""Operational faults: the one-line wording and fix, the state-dir probe, the CLI's last guard."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PACKAGE_PATH

from aisentinel import cli
from aisentinel.faults import (
    describe,
    fix_hint,
    port_hint,
    private_state_dir,
    probe_dir,
)

REPO = Path(__file__).resolve().parents[1]


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


def test_probe_accepts_a_writable_dir_and_leaves_nothing(tmp_path: Path) -> None:
    """A usable state dir is created (0750) and the probe file is gone afterwards."""
    state = tmp_path / "a" / "state"
    assert probe_dir(state) is None
    assert state.is_dir()
    assert state.stat().st_mode & 0o777 == 0o750
    assert list(state.iterdir()) == []


def test_probe_reports_a_file_where_the_dir_belongs(tmp_path: Path) -> None:
    """A file at the state dir's path, or above it, is reported, not raised."""
    (tmp_path / "file").write_text("x")
    exc = probe_dir(tmp_path / "file")
    assert exc is not None
    assert exc.errno == errno.EEXIST
    below = probe_dir(tmp_path / "file" / "state")
    assert below is not None
    assert below.errno == errno.ENOTDIR
    assert "is not a directory" in fix_hint(tmp_path / "file", exc)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "df -h /var/lib/x"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "df -h /var/lib/x"),
        (_sqlite_error("database or disk is full", 13), "df -h /var/lib/x"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        (PermissionError(errno.EACCES, "Permission denied"), "chown -R "),
        (_sqlite_error("attempt to write a readonly database", 8), "chown -R "),
        (OSError(errno.EIO, "Input/output error"), "ls -ld /var/lib/x"),
    ],
)
def test_fix_hint_names_the_command_to_run(exc: BaseException, words: str) -> None:
    """Each kind of fault gets its own advice, naming the path."""
    hint = fix_hint(Path("/var/lib/x"), exc)
    assert words in hint
    assert "/var/lib/x" in hint


def test_fix_hint_for_a_ledger_that_is_a_directory(tmp_path: Path) -> None:
    """A directory where the ledger file belongs is named as such, with the mv to run."""
    ledger = tmp_path / "decisions.sqlite3"
    ledger.mkdir()
    exc = _sqlite_error("unable to open database file", 14)
    assert f"mv {ledger} {ledger}.old" in fix_hint(ledger, exc, directory=tmp_path)


def test_port_hints() -> None:
    """A busy port names `ss` and the config key; other bind errors say what is wrong."""
    busy = port_hint("127.0.0.1", 9847, OSError(errno.EADDRINUSE, "Address already in use"))
    assert "ss -ltnp 'sport = :9847'" in busy
    assert "[exporter] port" in busy
    foreign = port_hint("192.0.2.1", 9847, OSError(errno.EADDRNOTAVAIL, "Cannot assign"))
    assert "192.0.2.1 is not an address of this host" in foreign
    low = port_hint("127.0.0.1", 80, PermissionError(errno.EACCES, "Permission denied"))
    assert "below 1024" in low


def test_describe_names_what_and_why() -> None:
    """`<what>: <reason>` from the error's file names, or its kind when it has none."""
    assert describe(FileExistsError(errno.EEXIST, "File exists", "/w")) == "/w: File exists"
    moved = OSError(errno.EROFS, "Read-only file system", "/a", None, "/b")
    assert describe(moved) == "/a -> /b: Read-only file system"
    assert describe(OSError(errno.EIO, "Input/output error")) == "system error: Input/output error"
    assert describe(sqlite3.OperationalError("disk I/O error")) == "database error: disk I/O error"


def test_private_state_dir_carries_positions_and_cursors(tmp_path: Path) -> None:
    """A degraded run resumes from the positions and cursors it can still read, and
    gets the throttle's record of what the last run throttled or froze (to lift it)."""
    (tmp_path / "positions.json").write_text("{}")
    (tmp_path / "journald-j.cursor").write_text("c")
    (tmp_path / "throttle.json").write_text("{}")
    (tmp_path / "decisions.sqlite3").write_text("")
    tmp = private_state_dir(tmp_path)
    assert tmp is not None
    try:
        names = sorted(p.name for p in Path(tmp.name).iterdir())
        assert names == ["journald-j.cursor", "positions.json", "throttle.json"]
    finally:
        tmp.cleanup()


# --------------------------------------------------------------------------- the CLI's guard


def _aisentinel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisentinel", *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=PACKAGE_PATH),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_with_a_file_as_workdir_is_one_line(tmp_path: Path) -> None:
    """`demo --workdir FILE`: one line naming the command, the path and the reason; exit 1."""
    (tmp_path / "f").write_text("x")
    cases = ((tmp_path / "f", "File exists"), (tmp_path / "f" / "d", "Not a directory"))
    for workdir, reason in cases:
        res = _aisentinel("demo", "--workdir", str(workdir), "--duration", "1")
        assert res.returncode == 1
        assert "Traceback" not in res.stderr + res.stdout
        assert res.stderr.splitlines() == [f"aisentinel: demo: {workdir}: {reason}"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("dir", "is a directory; name the log files in it"),
        ("missing", "no such file"),
        ("/proc/self/mem", "cannot read: Input/output error"),
    ],
)
def test_replay_of_an_unreadable_file_is_one_line(tmp_path: Path, target: str, reason: str) -> None:
    """`replay` on a directory, a missing or an unreadable file: one line each, exit 2."""
    (tmp_path / "dir").mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    res = _aisentinel("replay", "--format", "sshd", path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"aisentinel: replay: {path}: {reason}"]


@pytest.mark.parametrize("command", ["run", "audit", "replay", "check-config"])
def test_unreadable_config_is_one_line(tmp_path: Path, command: str) -> None:
    """A config path that is a directory: one config-error line and a failure status."""
    args = {
        "run": ["run", "--config", str(tmp_path)],
        "audit": ["audit", "--config", str(tmp_path)],
        "replay": ["replay", "--config", str(tmp_path), "/dev/null"],
        "check-config": ["check-config", str(tmp_path)],
    }[command]
    res = _aisentinel(*args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stderr.splitlines() == [
        f"aisentinel: config error: {tmp_path}: <top level>: cannot read: Is a directory"
    ]


def test_guard_turns_os_and_sqlite_errors_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any OSError or sqlite3.Error out of a command is one line and exit status 1."""
    for exc in (
        PermissionError(errno.EACCES, "Permission denied", "/etc/aisentinel/x"),
        sqlite3.OperationalError("database or disk is full"),
    ):

        def fail(_args: object, exc: BaseException = exc) -> int:
            raise exc

        monkeypatch.setattr(cli, "cmd_check_config", fail)
        assert cli.main(["check-config"]) == 1
        err = capsys.readouterr().err
        assert err.splitlines() == [f"aisentinel: check-config: {describe(exc)}"]


def test_guard_leaves_programming_errors_and_ctrl_c_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug still raises (its traceback helps); Ctrl-C still exits 130."""

    def bug(_args: object) -> int:
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "cmd_check_config", bug)
    with pytest.raises(TypeError):
        cli.main(["check-config"])

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_check_config", interrupted)
    assert cli.main(["check-config"]) == 130


def test_in_process_command_gives_sigpipe_handler_back(tmp_path: Path) -> None:
    """cli.main() gives the caller's SIGPIPE handler back: a later broken pipe raises, not kills."""
    log = tmp_path / "auth.log"
    log.write_text("", encoding="utf-8")
    before = signal.getsignal(signal.SIGPIPE)
    assert cli.main(["replay", str(log), "--format", "sshd", "--json"]) == 0
    assert signal.getsignal(signal.SIGPIPE) == before
    read, write = os.pipe()
    os.close(read)
    with pytest.raises(BrokenPipeError):
        os.write(write, b"x")
    os.close(write)
