"""Docker checks: containers' inspect data from a fake engine; no engine gives unknown."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aisentinel.audit import containers
from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import DockerUnavailableError, docker_sdk_inspector
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import AuditReport, CheckResult, Status
from aisentinel.audit.render import render_table
from aisentinel.audit.testing import fake_docker, make_context, no_docker
from aisentinel.commands import CommandResult, FakeRunner

FIXTURES = Path(__file__).parent / "fixtures" / "audit"


def container(
    name: str,
    image: str,
    ports: Mapping[str, list[dict[str, str]] | None],
    networks: tuple[str, ...] = ("ai",),
    mode: str = "ai",
) -> dict[str, Any]:
    """Inspect data shaped like the Engine API's ``GET /containers/{id}/json``."""
    return {
        "Name": f"/{name}",
        "Config": {"Image": image},
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Ports": dict(ports), "Networks": {n: {} for n in networks}},
    }


def run(check_id: str, containers: list[dict[str, Any]]) -> CheckResult:
    """Run a docker check against ``containers``."""
    return run_check(CHECKS.get(check_id).factory, make_context(docker=fake_docker(containers)))


def test_ai_container_published_on_all_interfaces_fails() -> None:
    """ollama published as 11434:11434 (0.0.0.0 and ::) fails and says it bypasses ufw."""
    ollama = container(
        "ollama",
        "ollama/ollama:0.5.7",
        {
            "11434/tcp": [
                {"HostIp": "0.0.0.0", "HostPort": "11434"},
                {"HostIp": "::", "HostPort": "11434"},
            ]
        },
    )
    result = run("docker.ai-ports", [ollama])
    assert result.status is Status.FAIL
    assert result.evidence == (
        "ollama (ollama/ollama:0.5.7): published 0.0.0.0:11434->11434/tcp (every interface),"
        " [::]:11434->11434/tcp (every interface)",
    )
    assert "127.0.0.1:11434:11434" in result.remediation
    assert "bypass ufw" in result.remediation


def test_loopback_published_and_non_ai_containers_pass() -> None:
    """An AI container on 127.0.0.1 passes; a non-AI container on 0.0.0.0 is not judged."""
    vllm = container(
        "vllm",
        "vllm/vllm-openai:latest",
        {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}], "9000/tcp": None},
    )
    web = container("web", "nginx:1.27", {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}]})
    result = run("docker.ai-ports", [vllm, web])
    assert result.status is Status.PASS
    assert result.evidence == (
        "vllm (vllm/vllm-openai:latest): published 127.0.0.1:8000->8000/tcp",
    )


@pytest.mark.parametrize(
    ("host_ip", "expected", "evidence"),
    [
        # -p 203.0.113.5:11434:11434: the host's public address, past ufw
        ("203.0.113.5", Status.FAIL, "203.0.113.5:11434->11434/tcp (public address 203.0.113.5)"),
        ("2001:db8::5", Status.FAIL, "[2001:db8::5]:11434->11434/tcp (public address 2001:db8::5)"),
        ("192.168.1.10", Status.WARN, "192.168.1.10:11434->11434/tcp (LAN address 192.168.1.10)"),
        ("::1", Status.PASS, "[::1]:11434->11434/tcp"),
        ("::ffff:127.0.0.1", Status.PASS, "[::ffff:127.0.0.1]:11434->11434/tcp"),
        (
            "ai.lan",
            Status.WARN,
            "ai.lan:11434->11434/tcp (HostIp 'ai.lan' could not be classified)",
        ),
    ],
)
def test_published_host_ip_is_classified(host_ip: str, expected: Status, evidence: str) -> None:
    """Each HostIp is classified: public fails, LAN or unparsable warns, loopback passes."""
    ollama = container(
        "ollama", "ollama/ollama:0.5.7", {"11434/tcp": [{"HostIp": host_ip, "HostPort": "11434"}]}
    )
    result = run("docker.ai-ports", [ollama])
    assert result.status is expected
    assert result.evidence == (f"ollama (ollama/ollama:0.5.7): published {evidence}",)


def test_garbage_host_ip_is_escaped_in_the_table() -> None:
    """A HostIp with terminal escapes warns as unclassified and prints without raw control bytes."""
    ollama = container(
        "ollama", "ollama/ollama", {"11434/tcp": [{"HostIp": "\x1b[2J1.2.3.4", "HostPort": "1"}]}
    )
    result = run("docker.ai-ports", [ollama])
    assert result.status is Status.WARN
    assert "could not be classified" in result.evidence[0]
    table = render_table(AuditReport((result,), started_at=0.0, duration_seconds=0.0))
    assert "\x1b" not in table
    assert "could not be classified" in table


def test_host_network_ai_container_warns() -> None:
    """An AI container with host networking warns and points at the socket check."""
    result = run(
        "docker.ai-ports", [container("ow", "ghcr.io/open-webui/open-webui:main", {}, (), "host")]
    )
    assert result.status is Status.WARN


def test_default_bridge_warns() -> None:
    """An AI container on the default bridge warns with the user-defined network fix."""
    on_bridge = container("ollama", "ollama/ollama", {}, ("bridge",))
    result = run("docker.ai-network", [on_bridge, container("vllm", "vllm/vllm-openai", {})])
    assert result.status is Status.WARN
    assert result.evidence[0].endswith("on the default bridge network")
    assert "docker network create ai" in result.remediation


def test_no_ai_containers_pass() -> None:
    """No AI image among the running containers: both checks pass, counting containers."""
    result = run("docker.ai-network", [container("db", "postgres:16", {})])
    assert result.status is Status.PASS
    assert result.evidence == ("1 running containers, none from an AI image",)


def test_no_engine_is_unknown_with_reason() -> None:
    """Without an engine both checks are unknown and carry the reason."""
    ctx = make_context(docker=no_docker("no Docker engine: socket missing"))
    for check_id in ("docker.ai-ports", "docker.ai-network"):
        result = run_check(CHECKS.get(check_id).factory, ctx)
        assert result.status is Status.UNKNOWN
        assert result.evidence == ("no Docker engine: socket missing",)


def test_real_sdk_without_engine_raises_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real docker SDK inspector reports an absent engine as DockerUnavailableError."""
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/aisentinel-test.sock")
    with pytest.raises(DockerUnavailableError, match="Docker"):
        docker_sdk_inspector(1.0)


def test_no_socket_and_no_docker_host_skips_the_sdk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without DOCKER_HOST or a socket the checks are unknown and the SDK is not imported."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(containers, "DOCKER_SOCKETS", (tmp_path / "docker.sock",))
    monkeypatch.setitem(sys.modules, "docker", None)  # importing it now would fail
    ctx = make_context(docker=docker_sdk_inspector)
    for check_id in ("docker.ai-ports", "docker.ai-network"):
        result = run_check(CHECKS.get(check_id).factory, ctx)
        assert result.status is Status.UNKNOWN
        assert result.evidence == (
            f"no Docker engine: DOCKER_HOST is unset and there is neither {tmp_path}/docker.sock",
        )


def test_socket_present_asks_the_sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a socket present the SDK inspector is consulted (here: reported missing)."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    sock = tmp_path / "docker.sock"
    sock.touch()
    monkeypatch.setattr(containers, "DOCKER_SOCKETS", (sock,))
    monkeypatch.setitem(sys.modules, "docker", None)
    result = run_check(
        CHECKS.get("docker.ai-ports").factory, make_context(docker=docker_sdk_inspector)
    )
    assert result.status is Status.UNKNOWN
    assert result.evidence == ("the docker Python SDK is not installed",)


@pytest.mark.parametrize(
    "image",
    [
        "quay.io/go-skynet/local-ai:latest-gpu-nvidia-cuda-12",
        "localai/localai:v2.26.0",
        "ghcr.io/ggerganov/llama.cpp:server",
        "ghcr.io/ggml-org/llama.cpp:server-cuda",
    ],
)
def test_localai_and_llama_cpp_images_are_ai(image: str) -> None:
    """LocalAI's and llama.cpp's published images (old and new registries) count as AI images."""
    server = container("srv", image, {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})
    assert run("docker.ai-ports", [server]).status is Status.FAIL


def published_behind_ufw(
    tmp_path: Path,
    check: str,
    ports: tuple[int, ...],
    published: dict[str, Any],
    config: AuditConfig | None = None,
) -> CheckResult:
    """Run ``check`` with 0.0.0.0 listeners on ``ports``, ufw denying by default, one container."""
    net = tmp_path / "net"
    net.mkdir()
    rows = "".join(
        f"   {i}: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 x\n"
        for i, port in enumerate(ports)
    )
    (net / "tcp").write_text("  sl  local_address rem_address   st\n" + rows)
    ufw = ("ufw", "status", "verbose")
    runner = FakeRunner({ufw: CommandResult(ufw, 0, (FIXTURES / "ufw_active.txt").read_text(), "")})
    config = (config or AuditConfig()).model_copy(update={"proc_root": tmp_path})
    ctx = make_context(config, runner=runner, docker=fake_docker([published]))
    return run_check(CHECKS.get(check).factory, ctx)


def test_docker_published_port_is_not_closed_by_ufw(tmp_path: Path) -> None:
    """docker-proxy's 0.0.0.0 listener fails although ufw denies it: Docker bypasses INPUT."""
    localai = container(
        "localai",
        "quay.io/go-skynet/local-ai:latest",
        {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "3000"}]},
    )
    result = published_behind_ufw(tmp_path, "exposure.ai-ports", (3000, 5000), localai)
    assert result.status is Status.FAIL
    assert result.evidence == (
        "0.0.0.0:3000 listens beyond loopback (every interface); published by Docker"
        " (localai (quay.io/go-skynet/local-ai:latest)): ufw's INPUT rules do not apply"
        " (DOCKER-USER rules are not read)",
        "0.0.0.0:5000 listens beyond loopback; ufw: no accept rule (default deny)",
    )
    assert "-p 127.0.0.1:11434:11434" in result.remediation


def test_docker_published_jupyter_fails_despite_ufw(tmp_path: Path) -> None:
    """A Jupyter container published on 0.0.0.0:8888 fails exposure.side-services under ufw deny."""
    jupyter = container(
        "lab",
        "quay.io/jupyter/pytorch-notebook",
        {"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8888"}]},
    )
    result = published_behind_ufw(tmp_path, "exposure.side-services", (8888,), jupyter)
    assert result.status is Status.FAIL
    assert result.evidence == (
        "Jupyter: 0.0.0.0:8888 listens beyond loopback (every interface); published by Docker"
        " (lab (quay.io/jupyter/pytorch-notebook)): ufw's INPUT rules do not apply"
        " (DOCKER-USER rules are not read)",
    )
    assert "Docker: -p 127.0.0.1:8888:8888" in result.remediation
    assert "ufw allow" not in result.remediation  # ufw's INPUT rules do not see it


def test_docker_fix_names_the_published_ports(tmp_path: Path) -> None:
    """The Docker remedy binds the real host port to the container's port, not 8888:8888."""
    jupyter = container(
        "lab",
        "quay.io/jupyter/pytorch-notebook",
        {"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9999"}]},
    )
    config = AuditConfig.model_validate({"side_services": {"jupyter": [9999]}})
    result = published_behind_ufw(tmp_path, "exposure.side-services", (9999,), jupyter, config)
    assert result.status is Status.FAIL
    assert "Docker: -p 127.0.0.1:9999:8888   (not -p 9999:8888)" in result.remediation
    assert "8888:8888" not in result.remediation
    assert "ufw allow" not in result.remediation
