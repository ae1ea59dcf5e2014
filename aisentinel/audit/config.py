"""The ``[audit]`` config table.

Every data source the checks read is configurable here, so tests (and unusual
hosts) point the audit at fixture trees, other binaries or a network namespace::

    [audit]
    interval = "1h"
    ai_ports = [11434, 8000, 8080, 3000, 7860, 5000]
    skip = ["docker.ai-ports", "docker.ai-network"]   # no Docker on this host

    [audit.tools]
    nginx = "/usr/local/nginx/sbin/nginx"

The metrics address of aisentinel itself is not configured here: the caller passes
the exporter's listen address to the audit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from aisentinel.configtypes import Duration, DurationBounds, StrictModel

DEFAULT_AI_PORTS: tuple[int, ...] = (11434, 8000, 8080, 3000, 7860, 5000)
"""Ollama, vLLM, LocalAI / Open WebUI, Open WebUI (dev) / Grafana-style UIs, Gradio, Flask UIs."""

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port, 1-65535."""

AuditInterval = Annotated[
    Duration,
    DurationBounds(60.0, 7 * 86400.0, why="to stop the audit, set enabled = false"),
]
"""How often the audit runs: 1m to 7d (each run starts several commands)."""

Timeout = Annotated[Duration, DurationBounds(0.0, 600.0, low_exclusive=True)]
"""A limit on one command or request of the audit: more than 0s, at most 10m."""


class AuditTools(StrictModel):
    """Programs the checks run; a bare name is looked up on PATH and the sbin dirs."""

    ufw: str = "ufw"
    nft: str = "nft"
    iptables: str = "iptables"
    ip6tables: str = "ip6tables"
    nginx: str = "nginx"
    fail2ban_client: str = "fail2ban-client"
    sshd: str = "sshd"
    systemctl: str = "systemctl"


class SideServicePorts(StrictModel):
    """``[audit.side_services]``: TCP ports of the services that run beside the models.

    Ray's dashboard and Jupyter run code for whoever reaches them (Ray's jobs API is
    ShadowRay, CVE-2023-48022); ComfyUI has no login at all; the exporters disclose
    the host and its GPUs. A port belongs to one service.
    """

    ray: tuple[Port, ...] = (8265,)
    """Ray dashboard and jobs API (``ray start --head``)."""

    jupyter: tuple[Port, ...] = (8888,)
    """Jupyter Server / Notebook / Lab."""

    comfyui: tuple[Port, ...] = (8188,)
    """ComfyUI."""

    exporters: tuple[Port, ...] = (9400, 9100)
    """Host and GPU metrics exporters (dcgm-exporter 9400, node_exporter 9100)."""

    @model_validator(mode="after")
    def _one_service_per_port(self) -> SideServicePorts:
        seen: dict[int, str] = {}
        for name in type(self).model_fields:
            for port in getattr(self, name):
                other = seen.setdefault(port, name)
                if other != name:
                    raise ValueError(f"port {port} is listed under both {other} and {name}")
        return self


class AuditConfig(StrictModel):
    """Keys of the ``[audit]`` table; every key has a safe default."""

    enabled: bool = True
    """Whether the daemon runs the audit on a schedule (``aisentinel audit`` always can)."""

    interval: AuditInterval = 3600.0
    """How often the daemon re-runs the audit; 1m-7d."""

    skip: tuple[str, ...] = ()
    """Check ids not to run on this host (e.g. the Docker checks where there is no Docker)."""

    ai_ports: tuple[Port, ...] = DEFAULT_AI_PORTS
    """TCP ports of AI services (listening checks, nginx upstream detection, probes)."""

    side_services: SideServicePorts = Field(default_factory=SideServicePorts)
    """Ports of Ray, Jupyter, ComfyUI and the metrics exporters (``exposure.side-services``,
    ``unauth.side-services``)."""

    ai_units: tuple[str, ...] = (
        "ollama.service",
        "vllm.service",
        "open-webui.service",
        "localai.service",
    )
    """systemd units of AI services (resource limits, ``OLLAMA_HOST``)."""

    ai_images: tuple[str, ...] = (
        "ollama/ollama",
        "vllm/vllm-openai",
        "open-webui/open-webui",
        "localai/localai",
        "quay.io/go-skynet/local-ai",
        "text-generation-inference",
        "lmsysorg/sglang",
        "ghcr.io/ggml-org/llama.cpp",
        "ghcr.io/ggerganov/llama.cpp",
    )
    """Substrings of container image names that mark an AI container."""

    ai_upstream_names: tuple[str, ...] = (
        "ollama",
        "vllm",
        "openwebui",
        "open-webui",
        "open_webui",
        "localai",
        "local-ai",
        "tgi",
        "text-generation",
        "llama",
        "sglang",
        "lmstudio",
        "comfyui",
        "gradio",
    )
    """Substrings of nginx upstream / proxy host names that mark an AI backend."""

    ssh_ports: tuple[Port, ...] = (22,)
    """Ports the admin reaches SSH on (the firewall fix must keep them open)."""

    proc_root: Path = Path("/proc")
    """Where ``net/tcp`` and ``net/tcp6`` are read from."""

    unit_dirs: tuple[Path, ...] = (
        Path("/etc/systemd/system"),
        Path("/run/systemd/system"),
        Path("/usr/lib/systemd/system"),
        Path("/lib/systemd/system"),
    )
    """Where unit files and ``<unit>.d/*.conf`` drop-ins are read when systemctl cannot answer."""

    ufw_defaults: Path = Path("/etc/default/ufw")
    """ufw's settings file; ``IPV6=no`` there means ufw leaves IPv6 unfiltered."""

    nginx_conf: Path | None = None
    """Main nginx config for ``nginx -T -c``; ``None`` uses nginx's compiled-in default."""

    command_prefix: tuple[str, ...] = ()
    """Prepended to every command, e.g. ``["ip", "netns", "exec", "ns1"]``."""

    tools: AuditTools = Field(default_factory=AuditTools)

    command_timeout: Timeout = 5.0
    """Per-command limit; a command that runs longer makes its check ``unknown``; 0s-10m."""

    probe_timeout: Timeout = 2.0
    """Limit on each unauthenticated HTTP probe as a whole (connect, headers, body); 0s-10m."""

    probe_paths: tuple[str, ...] = ("/api/tags", "/v1/models")
    """Paths probed without credentials on each exposed AI port."""

    docker_timeout: Timeout = 3.0
    """Docker Engine API timeout; 0s-10m."""

    @field_validator("probe_paths")
    @classmethod
    def _paths_absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [path for path in value if not path.startswith("/")]
        if bad:
            raise ValueError(f"probe paths start with '/', got {bad}")
        return value

    @field_validator("skip")
    @classmethod
    def _known_checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            return value  # nothing to look up: the checks are not imported (start-up, memory)
        from aisentinel.audit.checks import CHECKS  # noqa: PLC0415 - checks import this module

        unknown = [check_id for check_id in value if check_id not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check ids {unknown} (known: {', '.join(CHECKS.names())})")
        return value
