"""SSH checks from recorded `sshd -T` outputs (sshd is not installed on the test host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import CheckResult, Status
from aisentinel.audit.testing import empty_proc, make_context
from aisentinel.commands import CommandResult, CommandTimeoutError, FakeRunner

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
SSHD = ("sshd", "-T")


def run_ssh(check_id: str, runner: FakeRunner, tmp_path: Path) -> CheckResult:
    """Run one ssh check with ``runner`` and an empty /proc."""
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)), runner=runner)
    return run_check(CHECKS.get(check_id).factory, ctx)


def recorded(name: str) -> FakeRunner:
    """A runner whose sshd -T prints fixture ``name``."""
    return FakeRunner({SSHD: CommandResult(SSHD, 0, (FIXTURES / name).read_text(), "")})


@pytest.mark.parametrize(
    ("fixture", "password", "root"),
    [
        ("sshd_T_hardened.txt", Status.PASS, Status.PASS),
        ("sshd_T_debian_default.txt", Status.FAIL, Status.WARN),
        ("sshd_T_pam_kbd.txt", Status.FAIL, Status.FAIL),
    ],
)
def test_sshd_t_outputs(fixture: str, password: Status, root: Status, tmp_path: Path) -> None:
    """passwordauthentication / PAM keyboard-interactive / permitrootlogin map to statuses."""
    assert run_ssh("ssh.password-auth", recorded(fixture), tmp_path).status is password
    assert run_ssh("ssh.root-login", recorded(fixture), tmp_path).status is root


def test_fix_is_a_dropin_and_a_safe_reload(tmp_path: Path) -> None:
    """The remediation writes a sshd_config.d drop-in and validates with sshd -t before reload."""
    result = run_ssh("ssh.password-auth", recorded("sshd_T_debian_default.txt"), tmp_path)
    assert "/etc/ssh/sshd_config.d/00-aisentinel.conf" in result.remediation
    assert "PasswordAuthentication no" in result.remediation
    assert "sshd -t && systemctl reload ssh" in result.remediation


def test_sshd_error_and_timeout_are_unknown(tmp_path: Path) -> None:
    """sshd -T failing or timing out makes the checks unknown with the reason."""
    failing = FakeRunner(
        {SSHD: CommandResult(SSHD, 255, "", "Missing privilege separation directory: /run/sshd")}
    )
    result = run_ssh("ssh.root-login", failing, tmp_path)
    assert result.status is Status.UNKNOWN
    assert "/run/sshd" in result.evidence[0]
    slow = FakeRunner({SSHD: CommandTimeoutError("`sshd -T` ran past 5s")})
    assert run_ssh("ssh.password-auth", slow, tmp_path).status is Status.UNKNOWN


def test_no_sshd_and_nothing_on_22_passes(tmp_path: Path) -> None:
    """sshd not installed and nothing listening on the SSH port: pass as not installed."""
    result = run_ssh("ssh.password-auth", FakeRunner(), tmp_path)
    assert result.status is Status.PASS
    assert "not installed" in result.evidence[0]


def test_no_sshd_but_port_22_listening_is_unknown(tmp_path: Path) -> None:
    """sshd not found while something listens on 22 (another SSH server?) is unknown."""
    proc = empty_proc(tmp_path)
    with (proc / "net" / "tcp").open("a") as tcp:
        tcp.write(
            "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
        )
    ctx = make_context(AuditConfig(proc_root=proc))
    result = run_check(CHECKS.get("ssh.root-login").factory, ctx)
    assert result.status is Status.UNKNOWN
    assert "0.0.0.0:22" in result.evidence[0]
