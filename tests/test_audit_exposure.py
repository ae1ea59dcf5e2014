"""AI port exposure and OLLAMA_HOST: real listening sockets from the real /proc, unit fixtures."""

from __future__ import annotations

import ipaddress
import shutil
import socket
from pathlib import Path

import pytest
from conftest import listener

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import CheckResult, Status
from aisentinel.audit.sockets import (
    ListeningSocket,
    ProcNetError,
    listening_sockets,
    parse_proc_net_tcp,
)
from aisentinel.audit.testing import make_context
from aisentinel.commands import CommandResult, FakeRunner

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
UFW = ("ufw", "status", "verbose")
SHOW_ENV = (
    "systemctl", "show", "-p", "LoadState", "-p", "Environment", "-p", "EnvironmentFiles",
    "ollama.service",
)  # fmt: skip
PROC_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def ufw_runner(name: str) -> FakeRunner:
    """A runner whose ufw prints fixture ``name``."""
    return FakeRunner({UFW: CommandResult(UFW, 0, (FIXTURES / name).read_text(), "")})


def proc_net(root: Path, *v4: str, v6: tuple[str, ...] = ()) -> Path:
    """A fake proc root whose net/tcp (and net/tcp6) list LISTEN rows for kernel-hex ADDR:PORTs."""
    net = root / "net"
    net.mkdir()
    for name, rows in (("tcp", v4), ("tcp6", v6)):
        if rows or name == "tcp":
            text = "".join(
                f"   {i}: {row} {'0' * row.index(':')}:0000 0A 00000000:00000000 x\n"
                for i, row in enumerate(rows)
            )
            (net / name).write_text(PROC_HEADER + text)
    return root


def test_parse_proc_net_tcp_fixture_lines() -> None:
    """Kernel hex addresses decode (v4 and v6, little-endian words); only LISTEN rows count."""
    v4 = PROC_HEADER + (
        "   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 1\n"
        "   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 2\n"
        "   2: 0101A8C0:0016 0201A8C0:D431 01 00000000:00000000 00:00000000 00000000  0 0 3\n"
    )
    got = parse_proc_net_tcp(v4, v6=False)
    assert got == [
        ListeningSocket(11434, ipaddress.IPv4Address("127.0.0.1")),
        ListeningSocket(8000, ipaddress.IPv4Address("0.0.0.0")),
    ]
    assert got[0].loopback
    assert not got[1].loopback
    assert got[1].wildcard
    v6 = PROC_HEADER + (
        "   0: 00000000000000000000000001000000:2CAA 00000000000000000000000000000000:0000 0A x\n"
        "   1: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A x\n"
        "   2: 000080FE000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A x\n"
    )
    got6 = parse_proc_net_tcp(v6, v6=True)
    assert [(s.address, s.port) for s in got6] == [
        (ipaddress.IPv6Address("::1"), 11434),
        (ipaddress.IPv6Address("::ffff:127.0.0.1"), 8080),
        (ipaddress.IPv6Address("fe80::1"), 8080),
    ]
    assert got6[0].loopback
    assert got6[1].loopback
    assert not got6[2].loopback


def test_bad_proc_file_is_an_error(tmp_path: Path) -> None:
    """A missing net/tcp or a malformed row raises ProcNetError naming the file."""
    with pytest.raises(ProcNetError, match="does not exist"):
        listening_sockets(tmp_path)
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(PROC_HEADER + "   0: zz\n")
    with pytest.raises(ProcNetError, match="net/tcp"):
        listening_sockets(tmp_path)


def test_same_port_on_ipv4_and_ipv6_wildcards_is_read(tmp_path: Path) -> None:
    """0.0.0.0:22 beside [::]:22 (Debian's sshd, nginx `listen [::]:80`) is listed, not a crash."""
    proc_net(
        tmp_path,
        "00000000:0016",
        "00000000:2CAA",
        v6=("00000000000000000000000000000000:0016", "00000000000000000000000001000000:0016"),
    )
    assert [str(s) for s in listening_sockets(tmp_path)] == [
        "0.0.0.0:22",
        "[::]:22",
        "[::1]:22",
        "0.0.0.0:11434",
    ]
    ctx = make_context(AuditConfig(proc_root=tmp_path), runner=ufw_runner("ufw_allow_default.txt"))
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is Status.FAIL
    assert result.evidence[0].startswith("0.0.0.0:11434 listens beyond loopback")


def test_real_sockets_from_real_proc(sockets: list[socket.socket]) -> None:
    """Sockets the test opens on 0.0.0.0 and 127.0.0.1 appear in the real /proc with their binds."""
    public = listener("0.0.0.0")
    local = listener("127.0.0.1")
    sockets += [public, local]
    found = listening_sockets(Path("/proc"))
    assert ListeningSocket(public.getsockname()[1], ipaddress.IPv4Address("0.0.0.0")) in found
    assert ListeningSocket(local.getsockname()[1], ipaddress.IPv4Address("127.0.0.1")) in found


def test_exposed_ai_port_without_firewall_fails(sockets: list[socket.socket]) -> None:
    """An AI port bound to 0.0.0.0 with no default-deny firewall fails; loopback ones are fine."""
    public, local = listener("0.0.0.0"), listener("127.0.0.1")
    sockets += [public, local]
    pub_port, local_port = public.getsockname()[1], local.getsockname()[1]
    config = AuditConfig(ai_ports=(pub_port, local_port))
    ctx = make_context(config, runner=ufw_runner("ufw_allow_default.txt"))
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is Status.FAIL
    assert result.evidence == (
        f"0.0.0.0:{pub_port} listens beyond loopback; ufw: not filtered (no default-deny firewall)",
    )
    assert "OLLAMA_HOST=127.0.0.1:11434" in result.remediation


def test_loopback_only_ai_port_passes(sockets: list[socket.socket]) -> None:
    """AI ports bound to 127.0.0.1 only pass, with the socket as evidence."""
    local = listener("127.0.0.1")
    sockets.append(local)
    port = local.getsockname()[1]
    result = run_check(
        CHECKS.get("exposure.ai-ports").factory, make_context(AuditConfig(ai_ports=(port,)))
    )
    assert result.status is Status.PASS
    assert f"127.0.0.1:{port}" in result.evidence[0]


def test_exposed_port_firewalled_to_lan_warns(tmp_path: Path) -> None:
    """A 0.0.0.0:11434 listener that ufw only accepts from a LAN CIDR warns, naming the CIDR."""
    proc_net(tmp_path, "00000000:2CAA")
    ctx = make_context(AuditConfig(proc_root=tmp_path), runner=ufw_runner("ufw_active.txt"))
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is Status.WARN
    assert "from 192.168.1.0/24" in result.evidence[0]


def test_exposed_port_closed_by_firewall_passes(tmp_path: Path) -> None:
    """A wildcard listener that default deny accepts from nowhere passes, saying so."""
    proc_net(tmp_path, "00000000:1388")
    ctx = make_context(AuditConfig(proc_root=tmp_path), runner=ufw_runner("ufw_active.txt"))
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is Status.PASS
    assert "0.0.0.0:5000" in result.evidence[0]
    assert "default deny" in result.evidence[0]


@pytest.mark.parametrize(
    ("v4", "v6", "expected"),
    [
        (("00000000:1388",), (), Status.PASS),
        ((), ("00000000000000000000000000000000:1388",), Status.FAIL),
        ((), ("0000000000000000FFFF00000101A8C0:1388",), Status.PASS),
        ((), ("000080FE000000000000000001000000:1388",), Status.FAIL),
    ],
    ids=["0.0.0.0", "[::]-dual-stack", "[::ffff:192.168.1.1]", "[fe80::1]"],
)
def test_ipv4_only_default_deny_judged_per_socket_family(
    v4: tuple[str, ...], v6: tuple[str, ...], expected: Status, tmp_path: Path
) -> None:
    """An iptables-only DROP closes IPv4 listeners; a [::] or IPv6 one stays open over IPv6."""
    proc_net(tmp_path, *v4, v6=v6)
    ipt = ("iptables", "-S")
    runner = FakeRunner(
        {ipt: CommandResult(ipt, 0, (FIXTURES / "iptables_drop.txt").read_text(), "")}
    )
    ctx = make_context(AuditConfig(proc_root=tmp_path), runner=runner)
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is expected, result.evidence
    if expected is Status.FAIL:
        assert result.evidence[0].endswith(
            "iptables: IPv6 not filtered (default deny covers IPv4 only)"
        )


def test_exposed_port_with_unreadable_firewall_fails(sockets: list[socket.socket]) -> None:
    """If the firewall cannot be read, an exposed AI port is a fail, not a pass."""
    public = listener("0.0.0.0")
    sockets.append(public)
    ctx = make_context(AuditConfig(ai_ports=(public.getsockname()[1],)))
    result = run_check(CHECKS.get("exposure.ai-ports").factory, ctx)
    assert result.status is Status.FAIL
    assert "firewall unknown" in result.evidence[0]


def test_unreadable_proc_is_unknown(tmp_path: Path) -> None:
    """No /proc/net/tcp: the exposure check is unknown with the path in the reason."""
    result = run_check(
        CHECKS.get("exposure.ai-ports").factory, make_context(AuditConfig(proc_root=tmp_path))
    )
    assert result.status is Status.UNKNOWN
    assert str(tmp_path) in result.evidence[0]


# --------------------------------------------------------------------------- OLLAMA_HOST


def unit_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The fixture unit tree copied to ``tmp_path``: (etc dir, lib dir)."""
    shutil.copytree(FIXTURES / "units", tmp_path / "units")
    return tmp_path / "units" / "etc", tmp_path / "units" / "lib"


def test_ollama_host_from_dropin_overrides_unit(tmp_path: Path) -> None:
    """Without systemd, a drop-in's OLLAMA_HOST=0.0.0.0 (overriding the unit's 127.0.0.1) fails."""
    config = AuditConfig(unit_dirs=unit_dirs(tmp_path))
    result = run_check(CHECKS.get("exposure.ollama-host").factory, make_context(config))
    assert result.status is Status.FAIL
    assert "OLLAMA_HOST=0.0.0.0:11434 binds every interface" in result.evidence[0]
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in result.remediation


def test_ollama_host_loopback_in_unit_passes(tmp_path: Path) -> None:
    """The unit file alone (127.0.0.1) passes."""
    etc, lib = unit_dirs(tmp_path)
    shutil.rmtree(etc / "ollama.service.d")
    config = AuditConfig(unit_dirs=(etc, lib))
    result = run_check(CHECKS.get("exposure.ollama-host").factory, make_context(config))
    assert result.status is Status.PASS
    assert "binds loopback" in result.evidence[0]


def test_ollama_host_from_systemctl_show() -> None:
    """systemctl show's Environment (quoted words) is parsed; a 0.0.0.0 bind fails."""
    argv = SHOW_ENV
    text = (FIXTURES / "systemctl_show_env_wildcard.txt").read_text()
    runner = FakeRunner({argv: CommandResult(argv, 0, text, "")})
    config = AuditConfig(ai_units=("ollama.service",))
    result = run_check(
        CHECKS.get("exposure.ollama-host").factory, make_context(config, runner=runner)
    )
    assert result.status is Status.FAIL
    assert "(systemctl show)" in result.evidence[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", Status.FAIL),
        (":11434", Status.FAIL),
        ("http://[::]:11434", Status.FAIL),
        ("203.0.113.7:11434", Status.FAIL),
        ("192.168.1.10", Status.WARN),
        ("localhost:11434", Status.PASS),
        ("[::1]:11434", Status.PASS),
        ("127.0.0.1", Status.PASS),
        ("", Status.PASS),
        ("  ", Status.PASS),
        ("''", Status.PASS),
        ("' :11434'", Status.FAIL),
    ],
)
def test_ollama_host_values(tmp_path: Path, value: str, expected: Status) -> None:
    """OLLAMA_HOST values: wildcard/public fail, LAN warns, loopback passes."""
    (tmp_path / "ollama.service").write_text(f'[Service]\nEnvironment="OLLAMA_HOST={value}"\n')
    config = AuditConfig(unit_dirs=(tmp_path,))
    assert (
        run_check(CHECKS.get("exposure.ollama-host").factory, make_context(config)).status
        is expected
    )


def test_ollama_not_installed_passes(tmp_path: Path) -> None:
    """No ollama unit anywhere (and no systemd): pass with "not installed"."""
    config = AuditConfig(unit_dirs=(tmp_path,))
    result = run_check(CHECKS.get("exposure.ollama-host").factory, make_context(config))
    assert result.status is Status.PASS
    assert result.evidence == ("ollama.service is not installed",)


def test_systemctl_error_without_unit_files_is_unknown(tmp_path: Path) -> None:
    """systemctl present but failing (not "no systemd") and no unit files: unknown."""
    argv = SHOW_ENV
    runner = FakeRunner({argv: CommandResult(argv, 1, "", "Access denied")})
    config = AuditConfig(unit_dirs=(tmp_path,))
    result = run_check(
        CHECKS.get("exposure.ollama-host").factory, make_context(config, runner=runner)
    )
    assert result.status is Status.UNKNOWN
    assert "Access denied" in result.evidence[0]


def env_files(tmp_path: Path) -> Path:
    """The fixture EnvironmentFile= tree copied to ``tmp_path``; returns its folder."""
    return shutil.copytree(FIXTURES / "envfiles", tmp_path / "envfiles")


def ollama_host_shown(fixture: str, env_dir: Path) -> CheckResult:
    """Run exposure.ollama-host with systemctl show printing ``fixture`` (``@DIR@`` filled)."""
    text = (FIXTURES / fixture).read_text().replace("@DIR@", str(env_dir))
    runner = FakeRunner({SHOW_ENV: CommandResult(SHOW_ENV, 0, text, "")})
    config = AuditConfig(ai_units=("ollama.service",))
    return run_check(
        CHECKS.get("exposure.ollama-host").factory, make_context(config, runner=runner)
    )


def test_ollama_host_from_environment_file_overrides_systemctl_environment(
    tmp_path: Path,
) -> None:
    """An EnvironmentFiles= file's OLLAMA_HOST=0.0.0.0 beats Environment= 127.0.0.1: fail."""
    env_dir = env_files(tmp_path)
    result = ollama_host_shown("systemctl_show_env_file.txt", env_dir)
    assert result.status is Status.FAIL
    assert result.evidence == (
        "ollama.service: OLLAMA_HOST=0.0.0.0:11434 binds every interface"
        f" (systemctl show; from EnvironmentFile {env_dir}/ollama.env)",
    )
    assert f"set OLLAMA_HOST=127.0.0.1:11434 in {env_dir}/ollama.env" in result.remediation


def test_environment_file_glob_read_in_sorted_order(tmp_path: Path) -> None:
    """An EnvironmentFile= glob reads its matches sorted; the last one's LAN address warns."""
    env_dir = env_files(tmp_path)
    result = ollama_host_shown("systemctl_show_env_glob.txt", env_dir)
    assert result.status is Status.WARN
    assert "OLLAMA_HOST=192.168.1.10:11434 binds LAN address 192.168.1.10" in result.evidence[0]
    assert f"{env_dir}/ollama.d/20-lan.env" in result.evidence[0]


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        # the file's variables override Environment=, whatever the order of the lines
        ("EnvironmentFile=-{d}/ollama.env\nEnvironment=OLLAMA_HOST=127.0.0.1", Status.FAIL),
        # an empty EnvironmentFile= drops the files listed before it
        ("EnvironmentFile={d}/ollama.env\nEnvironmentFile=\n", Status.PASS),
        ("Environment=OLLAMA_HOST=127.0.0.1\nEnvironmentFile={d}/ollama.d/*.env", Status.WARN),
    ],
)
def test_unit_files_environment_file_precedence(
    tmp_path: Path, service: str, expected: Status
) -> None:
    """Without systemd, EnvironmentFile= (globs too) overrides Environment= as systemd does."""
    env_dir = env_files(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    (units / "ollama.service").write_text("[Service]\n" + service.format(d=env_dir) + "\n")
    config = AuditConfig(unit_dirs=(units,))
    result = run_check(CHECKS.get("exposure.ollama-host").factory, make_context(config))
    assert result.status is expected, result.evidence


def test_unreadable_environment_file_is_unknown(tmp_path: Path) -> None:
    """An EnvironmentFiles= entry that exists but cannot be read makes the check unknown."""
    env_dir = env_files(tmp_path)
    (env_dir / "ollama.env").unlink()
    (env_dir / "ollama.env").mkdir()  # read_text fails even for root
    result = ollama_host_shown("systemctl_show_env_file.txt", env_dir)
    assert result.status is Status.UNKNOWN
    assert f"cannot read EnvironmentFile {env_dir}/ollama.env" in result.evidence[0]


# --------------------------------------------------------------------------- side services

# 0.0.0.0 listeners on 8265, 8888, 8188, 9400 and 9100, as /proc/net/tcp writes them
RAY, JUPYTER, COMFYUI = "00000000:2049", "00000000:22B8", "00000000:1FFC"
DCGM, NODE = "00000000:24B8", "00000000:238C"


def side_services(tmp_path: Path, fixture: str, *rows: str, **config: object) -> CheckResult:
    """Run exposure.side-services on a fake /proc listing ``rows``, ufw printing ``fixture``."""
    proc_net(tmp_path, *rows)
    ctx = make_context(
        AuditConfig.model_validate({"proc_root": tmp_path, **config}), runner=ufw_runner(fixture)
    )
    return run_check(CHECKS.get("exposure.side-services").factory, ctx)


def test_ray_and_exporter_without_firewall_fail(tmp_path: Path) -> None:
    """Ray's dashboard on 0.0.0.0 with no default deny fails; the exporter beside it is named."""
    result = side_services(tmp_path, "ufw_allow_default.txt", RAY, NODE)
    assert result.status is Status.FAIL
    assert result.evidence == (
        "Ray dashboard: 0.0.0.0:8265 listens beyond loopback;"
        " ufw: not filtered (no default-deny firewall)",
        "metrics exporter: 0.0.0.0:9100 listens beyond loopback;"
        " ufw: not filtered (no default-deny firewall)",
    )
    assert "ray start --head --dashboard-host=127.0.0.1" in result.remediation
    assert "node_exporter --web.listen-address=127.0.0.1:9100" in result.remediation
    assert "to any port 8265 proto tcp" in result.remediation


@pytest.mark.parametrize(
    ("row", "status", "fix"),
    [
        (JUPYTER, Status.FAIL, "--ServerApp.ip=127.0.0.1"),
        (COMFYUI, Status.FAIL, "--listen 127.0.0.1"),
        (DCGM, Status.WARN, "dcgm-exporter -a 127.0.0.1:9400"),
        (NODE, Status.WARN, "--web.listen-address=127.0.0.1:9100"),
    ],
    ids=["jupyter", "comfyui", "dcgm-exporter", "node_exporter"],
)
def test_each_side_service_unfirewalled(tmp_path: Path, row: str, status: Status, fix: str) -> None:
    """Code-running services reachable by anyone fail; exporters (disclosure only) warn."""
    result = side_services(tmp_path, "ufw_allow_default.txt", row)
    assert result.status is status
    assert fix in result.remediation
    assert "--dashboard-host" not in result.remediation


def test_side_services_judged_by_firewall_rules(tmp_path: Path) -> None:
    """Default deny: closed Ray passes, LAN-only Jupyter warns, a one-host exporter passes."""
    result = side_services(tmp_path, "ufw_side_services.txt", RAY, JUPYTER, NODE, DCGM)
    assert result.status is Status.WARN
    assert result.evidence == (
        "Ray dashboard: 0.0.0.0:8265 listens beyond loopback; ufw: no accept rule (default deny)",
        "Jupyter: 0.0.0.0:8888 listens beyond loopback; ufw: from 192.168.1.0/24",
        "metrics exporter: 0.0.0.0:9100 listens beyond loopback; ufw: from 10.0.0.5/32",
        "metrics exporter: 0.0.0.0:9400 listens beyond loopback; ufw: open to anywhere"
        " (9400/tcp                   ALLOW IN    Anywhere)",
    )
    assert "--ServerApp.ip=127.0.0.1" in result.remediation
    assert "dcgm-exporter -a 127.0.0.1:9400" in result.remediation
    assert "--dashboard-host" not in result.remediation


def test_side_services_on_loopback_or_absent_pass(sockets: list[socket.socket]) -> None:
    """Real sockets on 127.0.0.1 pass as loopback-only; no listener passes naming the ports."""
    local = listener("127.0.0.1")
    sockets.append(local)
    port = local.getsockname()[1]
    config = AuditConfig.model_validate({"side_services": {"jupyter": [port]}})
    result = run_check(CHECKS.get("exposure.side-services").factory, make_context(config))
    assert result.status is Status.PASS
    assert result.evidence == (
        f"side services listen on loopback only: 127.0.0.1:{port} (Jupyter)",
    )
    sockets.pop().close()
    result = run_check(CHECKS.get("exposure.side-services").factory, make_context(config))
    assert result.status is Status.PASS
    assert f"Jupyter {port}; ComfyUI 8188" in result.evidence[0]


def test_configured_side_service_port_is_used(tmp_path: Path) -> None:
    """A Jupyter moved to 8889 in [audit.side_services] is judged; 8888 is then nothing special."""
    result = side_services(
        tmp_path,
        "ufw_allow_default.txt",
        JUPYTER,
        "00000000:22B9",
        side_services={"jupyter": [8889]},
    )
    assert result.status is Status.FAIL
    assert [line.split(" listens")[0] for line in result.evidence] == ["Jupyter: 0.0.0.0:8889"]


def test_side_service_port_under_two_services_is_refused() -> None:
    """One port listed for two services is a config error naming both."""
    with pytest.raises(ValueError, match="port 9100 is listed under both ray and exporters"):
        AuditConfig.model_validate({"side_services": {"ray": [8265, 9100]}})
