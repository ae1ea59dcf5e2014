"""The pipeline owns the state detectors share: a reload keeps it for every detector."""

from __future__ import annotations

from pathlib import Path

from conftest import nginx_line

from aisentinel.clock import FakeClock
from aisentinel.config import load_config
from aisentinel.daemon import Daemon
from aisentinel.detectors.ai_recon import AiReconConfig, AiReconDetector
from aisentinel.detectors.shared import SharedState
from aisentinel.events import Finding, HttpRequest, LineBatch
from aisentinel.sdnotify import Notifier

T0 = 1_764_000_000.0
CLIENT = "203.0.113.50"

CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = ""

[exporter]
enabled = false

[audit]
enabled = false

[detectors.ai_recon]
threshold = {threshold}
"""


def _daemon(tmp_path: Path, threshold: int) -> tuple[Daemon, Path, list[Finding]]:
    path = tmp_path / "aisentinel.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", threshold=threshold))
    daemon = Daemon(
        load_config(path), config_path=path, clock=FakeClock(T0), notifier=Notifier(None)
    )
    found: list[Finding] = []
    daemon.pipeline.on_finding = found.append
    return daemon, path, found


def _requests(daemon: Daemon, *lines: str) -> None:
    daemon.pipeline.process(LineBatch("web", "nginx", list(lines), 0.0))


def test_reload_changing_only_ai_recon_keeps_its_authenticated_clients(tmp_path: Path) -> None:
    """After a reload that rebuilds only ai_recon, a client that authenticated before is still
    known to it (no recon finding), as it is to model_exploit."""
    daemon, path, found = _daemon(tmp_path, threshold=3)
    _requests(daemon, nginx_line(T0, CLIENT, "/api/chat", 200, user="alice"))
    path.write_text(path.read_text().replace("threshold = 3", "threshold = 2"))
    assert daemon.reload()
    _requests(daemon, *(nginx_line(T0 + 10 + i, CLIENT, "/api/tags", 200) for i in range(4)))
    _requests(daemon, *(nginx_line(T0 + 20 + i, CLIENT, "/api/pull", 200) for i in range(6)))
    assert [f.detector for f in found] == []
    recon = next(d for d in daemon.pipeline.detectors if d.name == "ai_recon")
    model = next(d for d in daemon.pipeline.detectors if d.name == "model_exploit")
    assert recon._requests is model._requests is daemon.pipeline.shared.requests  # type: ignore[attr-defined]
    daemon.ledger.close()


def test_reload_keeps_detection_of_clients_that_never_authenticated(tmp_path: Path) -> None:
    """The kept state does not hide strangers: after the reload, recon by another client is
    found at the new threshold."""
    daemon, path, found = _daemon(tmp_path, threshold=3)
    _requests(daemon, nginx_line(T0, CLIENT, "/api/chat", 200, user="alice"))
    path.write_text(path.read_text().replace("threshold = 3", "threshold = 2"))
    assert daemon.reload()
    _requests(
        daemon,
        *(
            nginx_line(T0 + 10 + i, "198.51.100.7", path, 404)
            for i, path in enumerate(("/api/tags", "/api/ps"))
        ),
    )
    assert [f.detector for f in found] == ["ai_recon"]
    daemon.ledger.close()


def test_binding_readers_with_a_lower_cap_trims_the_kept_clients() -> None:
    """Rebinding to readers whose max_keys is lower keeps the clients, trimmed to the cap."""
    shared = SharedState()
    recon = AiReconDetector(AiReconConfig(max_keys=5), shared=shared)
    shared.bind([recon])
    recon.observe_many(
        [
            HttpRequest(T0 + i, "web", f"198.51.100.{i}", "GET", "/", 200, 0, "u", "ua")
            for i in range(5)
        ]
    )
    assert shared.requests.authenticated() == 5
    shared.bind([AiReconDetector(AiReconConfig(max_keys=2))])
    assert shared.requests.authenticated() == 2
    assert shared.requests.evicted() == 3
