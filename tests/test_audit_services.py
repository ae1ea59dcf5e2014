"""fail2ban and systemd resource-limit checks, from recorded outputs and unit-file fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import CheckResult, Status
from aisentinel.audit.testing import make_context
from aisentinel.commands import CommandResult, FakeRunner

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
F2B = ("fail2ban-client", "status")
NGINX_V = ("nginx", "-v")  # only marks nginx as installed for FakeRunner.has


def fail2ban(runner: FakeRunner, enforcement: str | None = None) -> CheckResult:
    """Run fail2ban.jails with ``runner``."""
    ctx = make_context(runner=runner, enforcement=enforcement)
    return run_check(CHECKS.get("fail2ban.jails").factory, ctx)


def f2b_output(name: str) -> CommandResult:
    """fail2ban-client status printing fixture ``name``."""
    return CommandResult(F2B, 0, (FIXTURES / name).read_text(), "")


def test_fail2ban_with_sshd_and_nginx_jails_passes() -> None:
    """Jails for sshd and nginx auth pass, listing the jails."""
    runner = FakeRunner(
        {F2B: f2b_output("fail2ban_status.txt"), NGINX_V: f2b_output("fail2ban_status.txt")}
    )
    result = fail2ban(runner)
    assert result.status is Status.PASS
    assert result.evidence == ("fail2ban jails: nginx-http-auth, sshd",)


def test_fail2ban_missing_nginx_jail_fails_only_when_nginx_installed() -> None:
    """Only an sshd jail: fail when nginx is installed, pass when it is not."""
    with_nginx = FakeRunner(
        {
            F2B: f2b_output("fail2ban_status_sshd_only.txt"),
            NGINX_V: f2b_output("fail2ban_status.txt"),
        }
    )
    result = fail2ban(with_nginx)
    assert result.status is Status.FAIL
    assert "missing jails: nginx-http-auth" in result.evidence
    without = FakeRunner({F2B: f2b_output("fail2ban_status_sshd_only.txt")})
    assert fail2ban(without).status is Status.PASS


def test_fail2ban_not_running_fails_and_not_installed_fails() -> None:
    """Stopped or not installed, with no aisentinel enforcement: fail with the fix."""
    stopped = FakeRunner(
        {
            F2B: CommandResult(
                F2B,
                255,
                "",
                "ERROR   Failed to access socket path: /var/run/fail2ban/fail2ban.sock."
                " Is fail2ban running?",
            )
        }
    )
    result = fail2ban(stopped)
    assert result.status is Status.FAIL
    assert "not running" in result.evidence[0]
    missing = fail2ban(FakeRunner())
    assert missing.status is Status.FAIL
    assert "[sshd]" in missing.remediation


def test_fail2ban_permission_error_is_unknown() -> None:
    """Any other fail2ban-client error is unknown, not a fail or a pass."""
    denied = FakeRunner(
        {
            F2B: CommandResult(
                F2B, 255, "", "Permission denied to socket: /var/run/fail2ban/fail2ban.sock"
            )
        }
    )
    assert fail2ban(denied).status is Status.UNKNOWN


def test_aisentinel_enforcement_counts_as_pass() -> None:
    """aisentinel's own ban responder satisfies the check, with that as evidence."""
    result = fail2ban(FakeRunner(), enforcement="nftables responder (set aisentinel_ban)")
    assert result.status is Status.PASS
    assert "nftables responder" in result.evidence[0]


def test_a_ban_responder_not_at_work_leaves_fail2ban_to_judge_with_the_note() -> None:
    """No enforcement but a note (aisentinel configured to ban, not at work): fail2ban
    is judged alone, the note leads the evidence, and nothing claims aisentinel is off."""
    note = "aisentinel is configured to ban (nftables responder) but no daemon is running"
    missing = run_check(CHECKS.get("fail2ban.jails").factory, make_context(enforcement_note=note))
    assert missing.status is Status.FAIL
    assert missing.evidence[0] == note
    assert "aisentinel enforcement is not enabled" not in missing.evidence
    assert "systemctl enable --now aisentinel" in missing.remediation
    runner = FakeRunner({F2B: f2b_output("fail2ban_status_sshd_only.txt")})
    jails = run_check(
        CHECKS.get("fail2ban.jails").factory, make_context(runner=runner, enforcement_note=note)
    )
    assert jails.status is Status.PASS
    assert jails.evidence == (note, "fail2ban jails: sshd")


# --------------------------------------------------------------------------- systemd


def show_argv(unit: str) -> tuple[str, ...]:
    """The systemctl command the resource-limit check runs for ``unit``."""
    return (
        "systemctl",
        "show",
        "-p",
        "LoadState",
        "-p",
        "MemoryMax",
        "-p",
        "CPUQuotaPerSecUSec",
        unit,
    )


def limits(
    runner: FakeRunner, units: tuple[str, ...], unit_dirs: tuple[Path, ...] = ()
) -> CheckResult:
    """Run systemd.resource-limits for ``units``."""
    config = AuditConfig(ai_units=units, unit_dirs=unit_dirs)
    return run_check(
        CHECKS.get("systemd.resource-limits").factory, make_context(config, runner=runner)
    )


def shown(unit: str, name: str) -> CommandResult:
    """systemctl show output from fixture ``name``."""
    return CommandResult(show_argv(unit), 0, (FIXTURES / name).read_text(), "")


def test_limited_unit_passes_and_absent_unit_is_not_installed() -> None:
    """MemoryMax and CPUQuota set: pass; a not-found unit is listed as not installed."""
    runner = FakeRunner({
        show_argv("ollama.service"): shown("ollama.service", "systemctl_show_ollama_limited.txt"),
        show_argv("vllm.service"): shown("vllm.service", "systemctl_show_not_found.txt"),
    })  # fmt: skip
    result = limits(runner, ("ollama.service", "vllm.service"))
    assert result.status is Status.PASS
    assert result.evidence == (
        "ollama.service: MemoryMax=51539607552, CPUQuota=8s (systemctl show)",
        "vllm.service: not installed",
    )


def test_unlimited_unit_fails_with_set_property_fix() -> None:
    """MemoryMax=infinity / no CPU quota fails; the fix is systemctl set-property for that unit."""
    runner = FakeRunner(
        {
            show_argv("ollama.service"): shown(
                "ollama.service", "systemctl_show_ollama_unlimited.txt"
            )
        }
    )
    result = limits(runner, ("ollama.service",))
    assert result.status is Status.FAIL
    assert "systemctl set-property ollama.service MemoryMax=" in result.remediation


def test_without_systemd_unit_files_are_read(tmp_path: Path) -> None:
    """With systemd down, MemoryMax from a drop-in is found and the missing CPUQuota fails."""
    shutil.copytree(FIXTURES / "units", tmp_path / "units")
    dirs = (tmp_path / "units" / "etc", tmp_path / "units" / "lib")
    down = FakeRunner({
        show_argv("ollama.service"): CommandResult(
            show_argv("ollama.service"), 1, "",
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
            "Failed to connect to bus: Host is down",
        )
    })  # fmt: skip
    result = limits(down, ("ollama.service",), dirs)
    assert result.status is Status.FAIL
    assert result.evidence == (
        "ollama.service: MemoryMax=48G, CPUQuota=unset (unit files (systemctl unavailable))",
    )


def test_systemctl_error_with_unit_file_absent_is_unknown(tmp_path: Path) -> None:
    """systemctl failing for another reason (bus permission) and no unit file: unknown."""
    argv = show_argv("ollama.service")
    runner = FakeRunner(
        {argv: CommandResult(argv, 1, "", "Failed to get properties: Access denied")}
    )
    assert limits(runner, ("ollama.service",), (tmp_path,)).status is Status.UNKNOWN
