"""Running host programs: the one command runner shared by the audit and the responders.

The audit reads tools (``nft list ruleset``, ``nginx -T``, ``sshd -T`` ...) and the
responders drive them (``nft -f -`` with a batch on stdin). Both get a
:class:`CommandRunner` handed in, so tests inject a :class:`FakeRunner`.

:class:`CommandRunner` is the contract: ``run(argv, timeout=..., input=...)`` runs one
program with an argument list (never a shell), optionally feeding ``input`` on its
stdin, and returns its exit status and captured output; a non-zero exit is *not* an
error (callers read it; :meth:`CommandResult.message` words it). It raises
:class:`CommandError` when the program could not give an answer at all:
:class:`ToolMissingError` (not installed), :class:`CommandTimeoutError`, or a plain
:class:`CommandError` (no permission to execute, OS error).

:class:`SubprocessRunner` is the real one; its ``prefix`` (e.g. ``ip netns exec
NS``) is put before every command. :class:`FakeRunner` answers from a table, for
tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Searched after PATH: admin tools live there and PATH may lack them."""
KILL_WAIT_SECONDS = 5.0
"""How long a killed command's output pipes are drained before they are closed."""


class CommandError(Exception):
    """The command gave no answer (could not be started, or did not finish)."""


class ToolMissingError(CommandError):
    """The program is not installed (not found on PATH or in the sbin dirs)."""


class CommandTimeoutError(CommandError):
    """The program ran past its time limit and was killed."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.returncode == 0

    def message(self) -> str:
        """A one-line reason for a failed command: its stderr (or stdout), shortened."""
        text = self.stderr.strip() or self.stdout.strip() or "no output"
        joined = " / ".join(line.strip() for line in text.splitlines() if line.strip())
        return f"`{' '.join(self.argv)}` exited {self.returncode}: {joined[:300]}"


class CommandRunner(Protocol):
    """Runs one program; see the module docstring for the error contract."""

    def run(
        self, argv: Sequence[str], *, timeout: float, input: str | None = None
    ) -> CommandResult:
        """Run ``argv`` (``argv[0]`` a program name or path) with a time limit in seconds,
        with ``input`` on its stdin (none: stdin is ``/dev/null``)."""
        ...

    def has(self, program: str) -> bool:
        """Whether ``program`` is installed (without running it)."""
        ...


def find_program(program: str) -> str | None:
    """The full path of ``program``: an existing path as is, else PATH then the sbin dirs."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    return shutil.which(program, path=search)


@dataclass(frozen=True, slots=True)
class SubprocessRunner:
    """The real runner: a child with an argument list, a timeout and no shell.

    The environment is fixed to ``LC_ALL=C`` so tool output is parsed in one language.
    Each command runs in a session of its own; past its timeout (or when the call is
    interrupted) the whole session is killed, so what the command started (``ufw``'s
    ``iptables-restore`` holding the xtables lock) never outlives it.
    """

    prefix: tuple[str, ...] = ()

    def has(self, program: str) -> bool:
        return find_program(program) is not None

    def run(
        self, argv: Sequence[str], *, timeout: float, input: str | None = None
    ) -> CommandResult:
        if not argv:
            raise ValueError("empty command")
        path = find_program(argv[0])
        if path is None:
            raise ToolMissingError(
                f"{argv[0]} is not installed (not on PATH or in {':'.join(SBIN_DIRS)})"
            )
        full = [*self.prefix, path, *argv[1:]]
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C"}
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(f"cannot run `{' '.join(argv)}`: {exc.strerror or exc}") from None
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeoutError(f"`{' '.join(argv)}` ran past {timeout:g}s") from None
        except BaseException:  # interrupted (Ctrl-C, shutdown): leave nothing running
            _kill_group(proc)
            raise
        return CommandResult(tuple(argv), proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and every process of its session (it was started in a new one), so
    a child it started (``iptables-restore`` under ``ufw``, holding the xtables lock) is
    not left running; then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=KILL_WAIT_SECONDS)
    except subprocess.TimeoutExpired:  # a grandchild that left the group holds a pipe
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()


Answer = CommandResult | CommandError
"""What :class:`FakeRunner` gives back for a command: a result, or an error to raise."""


@dataclass
class FakeRunner:
    """A runner answering from a table keyed by the argument tuple; for tests.

    A command not in the table raises :class:`ToolMissingError`, so a test only lists the
    tools that "exist". ``calls`` records every command asked for, in order.
    """

    answers: Mapping[tuple[str, ...], Answer] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)
    """What each call got on its stdin, in the order of :attr:`calls`."""

    @staticmethod
    def ok(
        argv: Sequence[str], stdout: str = "", stderr: str = "", returncode: int = 0
    ) -> CommandResult:
        """A result for ``argv`` (helper for building the table)."""
        return CommandResult(tuple(argv), returncode, stdout, stderr)

    def has(self, program: str) -> bool:
        """Whether any answer for ``program`` is listed (other than "not installed")."""
        return any(
            key and key[0] == program and not isinstance(answer, ToolMissingError)
            for key, answer in self.answers.items()
        )

    def run(
        self, argv: Sequence[str], *, timeout: float, input: str | None = None
    ) -> CommandResult:
        key = tuple(argv)
        self.calls.append(key)
        self.inputs.append(input)
        answer = self.answers.get(key)
        if answer is None:
            raise ToolMissingError(f"{argv[0]} is not installed (fake)")
        if isinstance(answer, CommandError):
            raise answer
        return answer
