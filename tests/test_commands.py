"""The command runner: argument lists, timeouts, missing tools, the configurable prefix."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import wait_for

from aisentinel.commands import (
    CommandError,
    CommandResult,
    CommandTimeoutError,
    FakeRunner,
    SubprocessRunner,
    ToolMissingError,
    find_program,
)


def test_runs_argument_list_without_a_shell() -> None:
    """Arguments reach the program verbatim: shell syntax is not interpreted."""
    result = SubprocessRunner().run(["echo", "$HOME; rm -rf /", "*"], timeout=5)
    assert result.ok
    assert result.stdout == "$HOME; rm -rf / *\n"
    assert result.argv == ("echo", "$HOME; rm -rf /", "*")


def test_nonzero_exit_is_a_result_not_an_error() -> None:
    """A failing command returns its status and stderr; message() names the command."""
    result = SubprocessRunner().run(["ls", "/nonexistent-aisentinel"], timeout=5)
    assert result.returncode != 0
    assert "ls /nonexistent-aisentinel" in result.message()
    assert "No such file" in result.message()


def test_missing_tool_and_timeout_raise() -> None:
    """An absent program raises ToolMissingError; one that runs too long CommandTimeoutError."""
    with pytest.raises(ToolMissingError, match="not installed"):
        SubprocessRunner().run(["aisentinel-no-such-tool"], timeout=5)
    with pytest.raises(CommandTimeoutError, match="ran past"):
        SubprocessRunner().run(["sleep", "5"], timeout=0.2)
    assert issubclass(CommandTimeoutError, CommandError)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_timeout_kills_what_the_command_started(tmp_path: Path) -> None:
    """Past its timeout a command's children die with it (ufw's iptables-restore would
    otherwise hold the xtables lock), not only the direct child."""
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "spawner"
    script.write_text(
        f"#!/bin/sh\nsleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {pidfile}\nwait\n"
    )
    script.chmod(0o755)
    try:
        with pytest.raises(CommandTimeoutError):
            SubprocessRunner().run([str(script)], timeout=1.0)
        child = int(pidfile.read_text())
        assert wait_for(lambda: not _alive(child), timeout=5)
    finally:
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_prefix_is_prepended() -> None:
    """The prefix runs first (here `env`, standing in for `ip netns exec NS`)."""
    runner = SubprocessRunner(prefix=("env", "AISENTINEL_PREFIX_TEST=1"))
    result = runner.run(["printenv", "AISENTINEL_PREFIX_TEST"], timeout=5)
    assert result.stdout == "1\n"


def test_sbin_tools_are_found_without_sbin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Admin tools in /usr/sbin are found even when PATH lacks the sbin dirs."""
    if shutil.which("nft", path="/usr/sbin:/sbin") is None:
        pytest.skip("nft not installed")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert find_program("nft") is not None
    assert SubprocessRunner().has("nft")


def test_fake_runner_table_and_calls() -> None:
    """FakeRunner answers from its table, raises listed errors, and treats the rest as missing."""
    argv = ("tool", "-x")
    runner = FakeRunner(
        {argv: CommandResult(argv, 0, "out", ""), ("gone",): ToolMissingError("gone")}
    )
    assert runner.run(list(argv), timeout=1).stdout == "out"
    assert runner.has("tool")
    assert not runner.has("gone")
    with pytest.raises(ToolMissingError):
        runner.run(["gone"], timeout=1)
    with pytest.raises(ToolMissingError):
        runner.run(["other"], timeout=1)
    assert runner.calls == [argv, ("gone",), ("other",)]
