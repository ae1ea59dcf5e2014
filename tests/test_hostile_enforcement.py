"""Hostile log input never makes an enforcing responder run a command, ban the allowlist,
or crash: lines through the real parsers, detectors, engine, worker and a responder that
runs one command per ban through a FakeRunner (which records every call)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import nginx_line, ssh_accepted, ssh_fail

from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.decisions import DecisionEngine, DecisionsConfig, Ledger
from aisentinel.detectors import build_detectors
from aisentinel.events import Action, AddressTarget, Decision, LineBatch
from aisentinel.pipeline import Pipeline
from aisentinel.responders import Responder, ResponderHealth, ResponderRunner
from aisentinel.responders.throttle import ThrottleConfig, ThrottleResponder

HOST = "192.0.2.10"
SSH_CLIENT = "198.51.100.22"
ATTACKER = "203.0.113.66"
HOSTILE = [
    "1.2.3.4;reboot",
    "$(id)",
    "-h",
    "A" * 10_240,
    "::ffff:127.0.0.1",
    "0.0.0.0/0",
    HOST,
    SSH_CLIENT,
]


class CommandBan(Responder):
    """Bans by running one program per address: what a careless responder would do."""

    name = "command-ban"

    def __init__(self, runner: FakeRunner, clock: FakeClock) -> None:
        super().__init__(ThrottleConfig(), clock=clock, commands=runner)
        self._staged: list[str] = []

    def add_many(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            assert isinstance(d.target, AddressTarget)
            self._staged.append(d.target.text)

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        return

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        for text in staged:
            self.commands.run(["banhammer", "--", text], timeout=5)

    def reconcile(self, active: Sequence[Decision]) -> None:
        return

    def health(self) -> ResponderHealth:
        return ResponderHealth(ok=True)


def _proc(tmp_path: Path) -> Path:
    """A socket table with an SSH connection from SSH_CLIENT (198.51.100.22 = 1664 33C6,
    port 54321 = D431), logged in by the first line of the test's sshd batch."""
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0A0200C0:0016 166433C6:D431 01 00000000:00000000 02:00000000 0 0 0 1 1\n"
    )
    return tmp_path / "proc"


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h[:20])
def test_hostile_addresses_never_cause_a_command_or_a_ban(
    tmp_path: Path, now_epoch: float, hostile: str
) -> None:
    """sshd and nginx lines whose address is hostile, allowlisted or a logged-in SSH client's
    decide no enforcement, run no command (FakeRunner records nothing) and raise nothing;
    a real attacker in the same batch is banned with exactly one command."""
    clock = FakeClock(now_epoch + 60)
    engine = DecisionEngine(
        DecisionsConfig(proc_root=_proc(tmp_path), workload_action="freeze"),
        Ledger(tmp_path / "l.sqlite", clock),
        clock,
        host_addresses=lambda: [HOST],
    )
    commands = FakeRunner()
    throttle_commands = FakeRunner()
    throttle = ThrottleResponder(ThrottleConfig(), clock=clock, commands=throttle_commands)
    runner = ResponderRunner([CommandBan(commands, clock), throttle], clock)
    decided: list[Decision] = []
    pipeline = Pipeline(
        detectors=build_detectors({}),
        engine=engine,
        runner=runner,
        clock=clock,
        on_decision=decided.append,
    )
    ssh = [ssh_accepted(now_epoch, SSH_CLIENT, 54321)]
    ssh += [ssh_fail(now_epoch + i, hostile) for i in range(12)]
    web = [nginx_line(now_epoch + i, hostile, f"/.env{i}", 404) for i in range(60)]
    pipeline.process(LineBatch("auth", "sshd", ssh, 0.0))
    pipeline.process(LineBatch("web", "nginx", web, 0.0))
    runner.tick()
    assert commands.calls == []
    assert throttle_commands.calls == []
    assert [d for d in decided if d.action.enforces] == []
    assert engine.active() == []
    assert sum(pipeline.event_errors.values()) == 0
    if hostile in (HOST, SSH_CLIENT, "::ffff:127.0.0.1"):  # parsed: refused by the allowlist
        assert decided
        assert all(d.reason.startswith("allowlisted") for d in decided)
    attack = [ssh_fail(now_epoch + 20 + i, ATTACKER) for i in range(12)]
    pipeline.process(LineBatch("auth", "sshd", attack, 0.0))
    runner.tick()
    assert commands.calls == [("banhammer", "--", ATTACKER)]
    assert [d.action for d in decided if d.action.enforces] == [Action.BAN]
