"""The audit CLI, engine, report model, config and the self check."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aisentinel.audit import cli
from aisentinel.audit.checks import CHECKS, CannotCheckError, Check, Verdict
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.engine import UnknownCheckError, run_audit, run_check, select_checks
from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.render import render_table, wants_colour
from aisentinel.audit.testing import empty_proc, make_context
from aisentinel.cli import main
from aisentinel.config import parse_config
from aisentinel.control import ControlServer
from aisentinel.daemon import audit_facts, live_enforcement
from aisentinel.responders.base import ResponderHealth
from aisentinel.webconfig import WebConfig

EXPECTED_IDS = [
    "firewall.default-deny",
    "exposure.ai-ports",
    "exposure.ollama-host",
    "exposure.side-services",
    "unauth.ai-api",
    "unauth.webui-signup",
    "unauth.side-services",
    "nginx.auth",
    "nginx.rate-limit",
    "nginx.tls",
    "fail2ban.jails",
    "docker.ai-ports",
    "docker.ai-network",
    "systemd.resource-limits",
    "ssh.password-auth",
    "ssh.root-login",
    "self.metrics-exposure",
]


def parse(*argv: str) -> argparse.Namespace:
    """Parse ``argv`` with the audit options."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def result(status: Status, cid: str = "x.y") -> CheckResult:
    """A result with ``status``."""
    return CheckResult(cid, "title", status, ("fact",), "do this")


def test_registry_order_and_ids() -> None:
    """Every check of the issue is registered, in report order, with ids family.name."""
    assert [entry.name for entry in CHECKS] == EXPECTED_IDS


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((Status.PASS, Status.PASS), 0),
        ((Status.PASS, Status.WARN), 0),
        ((Status.PASS, Status.UNKNOWN), 2),
        ((Status.UNKNOWN, Status.FAIL), 1),
        ((), 0),
    ],
)
def test_exit_codes(statuses: tuple[Status, ...], code: int) -> None:
    """0 all pass (warn allowed), 1 any fail, 2 when a check could not run."""
    report = AuditReport(tuple(result(s) for s in statuses), 0.0, 0.0)
    assert report.exit_code() == code


def test_json_output_and_only(tmp_path: Path) -> None:
    """--json prints the report; --only runs just those checks; exit code follows the statuses."""
    out = io.StringIO()
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)), metrics_listen="0.0.0.0:9464")
    code = cli.run(
        parse("--json", "--only", "self.metrics-exposure,ssh.root-login"),
        ctx.config,
        metrics_listen="0.0.0.0:9464",
        context=ctx,
        stdout=out,
    )
    data = json.loads(out.getvalue())
    assert code == 1
    assert [r["id"] for r in data["results"]] == ["ssh.root-login", "self.metrics-exposure"]
    assert data["results"][1]["status"] == "fail"
    assert data["counts"] == {"pass": 1, "fail": 1, "warn": 0, "unknown": 0}
    assert data["exit_code"] == 1


def test_unknown_only_id_exits_2() -> None:
    """--only with an unknown id is an error naming it, exit 2, and nothing runs."""
    err = io.StringIO()
    code = cli.run(
        parse("--only", "ssh.nope"),
        AuditConfig(),
        metrics_listen="",
        stderr=err,
        stdout=io.StringIO(),
    )
    assert code == 2
    assert "ssh.nope" in err.getvalue()


def test_list_prints_ids() -> None:
    """--list prints every check id with its title and exits 0."""
    out = io.StringIO()
    assert cli.run(parse("--list"), AuditConfig(), metrics_listen="", stdout=out) == 0
    assert [line.split()[0] for line in out.getvalue().splitlines()] == EXPECTED_IDS


def test_skip_in_config_and_unknown_skip_rejected() -> None:
    """[audit] skip removes checks from a run; an unknown id in skip is a config error."""
    ids = [c.id for c in select_checks(skip=AuditConfig(skip=("docker.ai-ports",)).skip)]
    assert "docker.ai-ports" not in ids
    assert len(ids) == len(EXPECTED_IDS) - 1
    with pytest.raises(ValidationError, match="unknown check ids"):
        AuditConfig(skip=("docker.nope",))
    with pytest.raises(UnknownCheckError):
        select_checks(only=["nope"])


@pytest.mark.parametrize(
    "bad",
    [
        {"ai_ports": [0]},
        {"ai_ports": [70000]},
        {"interval": "0s"},
        {"interval": "soon"},
        {"probe_paths": ["api/tags"]},
        {"unknown_key": 1},
        {"tools": {"nginx": "x", "apache": "y"}},
    ],
)
def test_bad_config_is_rejected(bad: dict[str, object]) -> None:
    """Each invalid [audit] value or unknown key is a validation error."""
    with pytest.raises(ValidationError):
        AuditConfig.model_validate(bad)


def test_config_durations_and_defaults() -> None:
    """interval accepts "30m"; defaults include the issue's AI ports."""
    config = AuditConfig.model_validate({"interval": "30m"})
    assert config.interval == 1800.0
    assert config.ai_ports == (11434, 8000, 8080, 3000, 7860, 5000)


def test_crashing_check_is_unknown_not_fatal() -> None:
    """A buggy check becomes unknown "internal error"; CannotCheckError keeps its reason."""

    def boom(ctx: object) -> Verdict:
        raise ZeroDivisionError("oops")

    def cannot(ctx: object) -> Verdict:
        raise CannotCheckError("no permission to read X")

    ctx = make_context()
    crashed = run_check(Check("t.boom", "boom", boom), ctx)
    assert crashed.status is Status.UNKNOWN
    assert crashed.evidence == ("internal error: ZeroDivisionError: oops",)
    assert run_check(Check("t.c", "c", cannot), ctx).evidence == ("no permission to read X",)


def test_full_audit_of_fakes_is_complete(tmp_path: Path) -> None:
    """A whole run against fakes yields one result per check, timed with the injected clock."""
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path), unit_dirs=(tmp_path,)))
    report = run_audit(ctx)
    assert [r.id for r in report.results] == EXPECTED_IDS
    assert report.started_at == ctx.clock.now()
    by_id = {r.id: r.status for r in report.results}
    assert by_id["firewall.default-deny"] is Status.UNKNOWN  # no firewall tool in the fake
    assert by_id["docker.ai-ports"] is Status.UNKNOWN  # no engine
    assert by_id["exposure.ai-ports"] is Status.PASS
    assert by_id["exposure.side-services"] is Status.PASS
    assert by_id["unauth.side-services"] is Status.PASS
    assert by_id["unauth.webui-signup"] is Status.PASS


def test_table_rendering_colour_and_fix() -> None:
    """The table shows fix text under failures only, and colour codes only when asked."""
    report = AuditReport((result(Status.FAIL, "a.fail"), result(Status.PASS, "b.pass")), 0.0, 0.5)
    plain = render_table(report)
    assert "FAIL    a.fail" in plain
    assert "fix: do this" in plain
    assert plain.count("- fact") == 1  # evidence of the passing check hidden
    assert "\033[" not in plain
    assert "\033[1;31mFAIL" in render_table(report, colour=True)
    assert render_table(report, verbose=True).count("- fact") == 2
    assert not wants_colour(io.StringIO(), {})


@pytest.mark.parametrize(
    ("listen", "status"),
    [
        ("", Status.PASS),
        ("127.0.0.1:9464", Status.PASS),
        ("[::1]:9464", Status.PASS),
        ("localhost:9464", Status.PASS),
        ("0.0.0.0:9464", Status.FAIL),
        (":9464", Status.FAIL),
        ("[::]:9464", Status.FAIL),
        ("192.168.1.5:9464", Status.WARN),
        ("198.51.100.9:9464", Status.FAIL),
        ("9464", Status.FAIL),  # a bare port means every interface
        ("host:port", Status.UNKNOWN),
    ],
)
def test_self_metrics_exposure(listen: str, status: Status) -> None:
    """The exporter address: loopback passes, LAN warns, wildcard/public fail, garbage unknown."""
    ctx = make_context(metrics_listen=listen)
    assert run_check(CHECKS.get("self.metrics-exposure").factory, ctx).status is status


@pytest.mark.parametrize(
    ("listen", "protection", "status"),
    [
        ("0.0.0.0:9847", "TLS + basic auth", Status.PASS),
        ("198.51.100.9:9847", "TLS + basic auth", Status.PASS),
        ("0.0.0.0:9847", "TLS", Status.WARN),
        ("0.0.0.0:9847", "basic auth", Status.WARN),
        ("127.0.0.1:9847", "basic auth", Status.PASS),
        ("0.0.0.0:9847", "plain HTTP", Status.FAIL),
    ],
)
def test_self_metrics_exposure_counts_the_web_config(
    listen: str, protection: str, status: Status
) -> None:
    """Beyond loopback, TLS and basic auth (web_config) pass, one of them warns, none fails;
    the fix names config keys that exist."""
    ctx = make_context(metrics_listen=listen, metrics_protection=protection)
    result = run_check(CHECKS.get("self.metrics-exposure").factory, ctx)
    assert result.status is status
    assert any(protection in line for line in result.evidence)
    if status is not Status.PASS:
        assert 'listen = "127.0.0.1"' in result.remediation
        assert "web_config" in result.remediation


@pytest.mark.parametrize(
    ("table", "enforcement"),
    [
        ({}, None),
        ({"responders": {"nftables": {}}}, "nftables responder"),
        ({"responders": {"nftables": {}, "ufw": {}}}, "nftables and ufw responders"),
        ({"responders": {"throttle": {}}}, None),  # workloads, not addresses
        ({"responders": {"nftables": {}}, "decisions": {"simulate": True}}, None),
    ],
)
def test_audit_facts_name_aisentinels_own_enforcement(
    table: dict[str, object], enforcement: str | None
) -> None:
    """The self-audit is told which enabled responders of aisentinel ban addresses (none
    in dry run or simulate), where its metrics listen and what protects them."""
    config = parse_config(table, "<test>")
    facts = audit_facts(config)
    assert facts["enforcement"] == enforcement
    assert facts["metrics_listen"] == "127.0.0.1:9847"
    assert facts["metrics_protection"] == "plain HTTP"
    web = WebConfig(path="web.yml", users={"prometheus": b"$2b$hash"})
    assert audit_facts(dataclasses.replace(config, web=web))["metrics_protection"] == "basic auth"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory (a Unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _audit_fail2ban(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], socket: Path | str
) -> tuple[int, dict[str, Any]]:
    """`aisentinel audit --only fail2ban.jails` with [responders.nftables], the control
    socket ``socket`` and no fail2ban installed: its exit code and the check's result."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\ncontrol_socket = "{socket}"\n'
        '[responders.nftables]\n[decisions]\nadmin_cidrs = ["192.0.2.0/24"]\n'
        f'[audit.tools]\nfail2ban_client = "{tmp_path / "no-fail2ban-client"}"\n'
    )
    capsys.readouterr()  # the fake daemon's log lines
    code = main(["audit", "--only", "fail2ban.jails", "--json", "--config", str(config)])
    (result,) = json.loads(capsys.readouterr().out)["results"]
    return code, result


def _fake_daemon(path: Path, responders: list[dict[str, Any]]) -> ControlServer:
    """A control socket at ``path`` answering `status` with ``responders`` (started)."""
    server = ControlServer(path, {"status": lambda _args: {"responders": responders}})
    server.start()
    return server


def test_audit_command_passes_fail2ban_check_on_a_running_ban_responder(
    tmp_path: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aisentinel audit` with [responders.nftables] and a daemon whose nftables
    responder is healthy (or not checked yet): the fail2ban check passes on aisentinel's
    own bans, as its fix text promises, without fail2ban."""
    for healthy in (True, None):
        row = {"name": "nftables", "healthy": healthy, "detail": ""}
        server = _fake_daemon(short_dir / "c.sock", [{"name": "dryrun", "healthy": True}, row])
        try:
            code, result = _audit_fail2ban(tmp_path, capsys, server.path)
        finally:
            server.stop()
        assert (code, result["status"]) == (0, "pass"), result
        assert result["evidence"] == ["aisentinel enforces bans itself: nftables responder"]


def test_audit_command_fails_fail2ban_check_when_no_daemon_runs(
    tmp_path: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[responders.nftables] configured but no daemon running (nothing bans): the check
    judges fail2ban alone (not installed: fail) and says why aisentinel does not count."""
    code, result = _audit_fail2ban(tmp_path, capsys, short_dir / "c.sock")
    assert (code, result["status"]) == (1, "fail"), result
    assert result["evidence"][0] == (
        "aisentinel is configured to ban (nftables responder) but no daemon is running "
        f"(nothing answers on {short_dir / 'c.sock'})"
    )


def test_audit_command_does_not_count_an_unhealthy_or_missing_ban_responder(
    tmp_path: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running daemon whose nftables responder is unhealthy, or that runs without it
    (an older config): it does not count, and the note says which and why."""
    cases = [
        (
            [{"name": "nftables", "healthy": False, "detail": "table missing"}],
            "aisentinel's nftables responder is unhealthy: table missing",
        ),
        (
            [{"name": "dryrun", "healthy": True, "detail": ""}],
            "aisentinel is configured to ban with nftables but the running daemon has no "
            "nftables responder (reload it: systemctl reload aisentinel)",
        ),
    ]
    for rows, note in cases:
        server = _fake_daemon(short_dir / "c.sock", rows)
        try:
            code, result = _audit_fail2ban(tmp_path, capsys, server.path)
        finally:
            server.stop()
        assert (code, result["status"]) == (1, "fail"), result
        assert result["evidence"][0] == note


def test_audit_command_with_the_control_socket_off_cannot_count_its_bans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the control socket off nothing can say a daemon bans: the check judges
    fail2ban alone and says so."""
    code, result = _audit_fail2ban(tmp_path, capsys, "")
    assert (code, result["status"]) == (1, "fail"), result
    assert "its control socket is off" in result["evidence"][0]


@pytest.mark.parametrize(
    ("table", "health", "expected"),
    [
        ({}, {}, (None, "")),
        ({"nftables": {}}, {"nftables": ResponderHealth(ok=True)}, ("nftables responder", "")),
        ({"nftables": {}}, {"nftables": None}, ("nftables responder", "")),
        (
            {"nftables": {}, "ufw": {}},
            {"nftables": ResponderHealth(ok=True), "ufw": ResponderHealth(False, "inactive")},
            ("nftables responder", "aisentinel's ufw responder is unhealthy: inactive"),
        ),
        (
            {"nftables": {}, "ufw": {}},
            {"nftables": None, "ufw": None},
            ("nftables and ufw responders", ""),
        ),
        (
            {"nftables": {}},
            {"nftables": ResponderHealth(ok=False)},
            (None, "aisentinel's nftables responder is unhealthy: no detail"),
        ),
    ],
)
def test_live_enforcement_counts_only_ban_responders_at_work(
    table: dict[str, object],
    health: dict[str, ResponderHealth | None],
    expected: tuple[str | None, str],
) -> None:
    """Of the configured ban responders, those running and not found unhealthy count;
    each other one is named in the note with the reason."""
    config = parse_config({"responders": table}, "<test>")
    assert live_enforcement(config, health) == expected
