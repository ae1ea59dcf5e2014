"""The systemd unit: sandbox score, `systemd-analyze verify`, and the drop-in examples.

`systemd-analyze verify` insists that every Exec binary exists, and /usr/bin/aisentinel
exists only once the package is installed; so verify runs on a temporary copy of each
unit whose Exec paths point at /bin/true (the rest of the file is unchanged).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aisentinel.decisionlog import BRAKED_LINES, DECISION_LINES
from aisentinel.detectors import REGISTRY

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "units" / "aisentinel.service"
DROPINS = REPO / "units" / "dropins"
FAIL2BAN_UNIT = Path("/lib/systemd/system/fail2ban.service")
SCORE_LIMIT = 2.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys kept in order."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _values(text: str, key: str) -> list[str]:
    return [v for _, k, v in _directives(text) if k == key]


def _score(unit: Path) -> float:
    """The 'Overall exposure level' of ``unit`` (drop-ins beside it included)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )


def _runnable_copy(unit_text: str, directory: Path, name: str) -> Path:
    """Write ``unit_text`` as ``directory/name`` with its Exec binaries replaced by /bin/true."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(
        re.sub(r"^(Exec\w+=)(/usr/bin/aisentinel|/bin/kill)", r"\1/bin/true", unit_text, flags=re.M)
    )
    return path


def _stated_score(text: str) -> float:
    match = re.search(r"Exposure score with this drop-in: (\d+\.\d+)", text)
    assert match, "drop-in does not state its exposure score"
    return float(match.group(1))


def test_base_unit_scores_at_most_two() -> None:
    """`systemd-analyze security --offline=true` rates the shipped unit 2.0 or lower."""
    assert _score(UNIT) <= SCORE_LIMIT


def test_unit_comment_states_the_measured_score() -> None:
    """The score written in the unit's header comment is the one systemd-analyze gives."""
    match = re.search(r"scores it (\d+\.\d+)", UNIT.read_text())
    assert match
    assert float(match.group(1)) == _score(UNIT)


def test_unit_scores_far_below_fail2ban() -> None:
    """Informational: Debian's fail2ban.service, same command, scores far worse than ours."""
    if not FAIL2BAN_UNIT.exists():
        pytest.skip("fail2ban is not installed here")
    theirs = _score(FAIL2BAN_UNIT)
    ours = _score(UNIT)
    print(f"exposure: aisentinel.service {ours}, fail2ban.service {theirs}")
    assert ours < theirs


def test_unit_has_the_service_contract() -> None:
    """Type=notify with watchdog, config check before start and reload, unprivileged user."""
    text = UNIT.read_text()
    single = {k: v for _, k, v in _directives(text)}
    assert single["Type"] == "notify"
    assert single["NotifyAccess"] == "main"
    assert single["WatchdogSec"] == "30s"
    assert single["ExecStartPre"] == "/usr/bin/aisentinel check-config"
    assert single["ExecStart"] == "/usr/bin/aisentinel run"
    assert _values(text, "ExecReload") == [
        "/usr/bin/aisentinel check-config",
        "/bin/kill -HUP $MAINPID",
    ]
    assert single["Restart"] == "on-failure"
    assert single["User"] == "aisentinel"
    assert single["SupplementaryGroups"].split() == ["adm", "systemd-journal"]
    assert single["StateDirectory"] == "aisentinel"
    assert single["RuntimeDirectory"] == "aisentinel"  # the control socket's directory
    assert single["RuntimeDirectoryMode"] == "0750"
    assert single["TimeoutStopSec"] == "10s"
    assert single["IPAddressDeny"] == "any"
    assert single["IPAddressAllow"] == "localhost"


def test_unit_raises_journald_rate_limit_above_the_decision_log_budget() -> None:
    """journald keeps more than its default 10,000 lines a 30 s, and more than twice what
    the decision log writes in a storm of every detector's decisions."""
    single = {k: v for _, k, v in _directives(UNIT.read_text())}
    assert single["LogRateLimitIntervalSec"] == "30s"
    burst = int(single["LogRateLimitBurst"])
    storm = len(REGISTRY.names()) * len(("alert", "ban")) * (DECISION_LINES + 1) + BRAKED_LINES + 1
    assert burst > 10_000
    assert burst > 2 * storm


def test_base_unit_grants_no_capability() -> None:
    """The base unit empties both capability sets."""
    text = UNIT.read_text()
    assert _values(text, "CapabilityBoundingSet") == [""]
    assert _values(text, "AmbientCapabilities") == [""]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    copy = _runnable_copy(UNIT.read_text(), tmp_path, "aisentinel.service")
    result = _verify(copy)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("dropin", sorted(DROPINS.glob("aisentinel-*.conf")), ids=lambda p: p.name)
def test_aisentinel_dropin_verifies_and_states_its_score(dropin: Path, tmp_path: Path) -> None:
    """Each aisentinel drop-in verifies cleanly and its comment gives the score it costs."""
    copy = _runnable_copy(UNIT.read_text(), tmp_path, "aisentinel.service")
    dropin_dir = tmp_path / "aisentinel.service.d"
    dropin_dir.mkdir()
    shutil.copy(dropin, dropin_dir / dropin.name)
    result = _verify(copy)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _score(copy) == _stated_score(dropin.read_text())


def test_nftables_dropin_adds_exactly_cap_net_admin() -> None:
    """The nftables responder drop-in grants CAP_NET_ADMIN and nothing else."""
    text = (DROPINS / "aisentinel-nftables.conf").read_text()
    assert [k for _, k, _ in _directives(text)] == ["CapabilityBoundingSet", "AmbientCapabilities"]
    assert _values(text, "CapabilityBoundingSet") == ["CAP_NET_ADMIN"]
    assert _values(text, "AmbientCapabilities") == ["CAP_NET_ADMIN"]


def test_throttle_dropin_runs_as_root_without_a_capability() -> None:
    """The throttle drop-in: root without capabilities, the cgroup tree its only new
    writable path, other users' processes visible (pid targets)."""
    text = (DROPINS / "aisentinel-throttle.conf").read_text()
    keys = [k for _, k, _ in _directives(text)]
    assert "CapabilityBoundingSet" not in keys
    assert "AmbientCapabilities" not in keys
    assert _values(text, "User") == ["root"]
    assert _values(text, "ReadWritePaths") == ["/sys/fs/cgroup"]
    assert _values(text, "ProtectControlGroups") == ["no"]
    assert _values(text, "ProtectProc") == ["default"]


@pytest.mark.parametrize("dropin", sorted(DROPINS.glob("aisentinel-*.conf")), ids=lambda p: p.name)
def test_a_dropin_that_runs_as_root_keeps_group_aisentinel(dropin: Path) -> None:
    """A drop-in with User=root keeps Group=aisentinel, so /run/aisentinel and the control
    socket stay the group's and its members can still run `aisentinel status`."""
    text = dropin.read_text()
    if _values(text, "User") == ["root"]:
        assert _values(text, "Group") == ["aisentinel"]
    else:
        assert _values(text, "Group") == []


def test_gpu_dropin_shows_other_users_processes() -> None:
    """The GPU drop-in lifts ProtectProc=invisible: GPU processes are other users'."""
    text = (DROPINS / "aisentinel-gpu.conf").read_text()
    assert _values(text, "ProtectProc") == ["default"]
    assert "AmbientCapabilities" not in [k for _, k, _ in _directives(text)]


@pytest.mark.parametrize("service", ["ollama", "vllm"])
def test_ai_service_limit_dropins_verify(service: str, tmp_path: Path) -> None:
    """The ollama/vllm drop-ins set MemoryMax and CPUQuota and verify on a stand-in unit."""
    dropin = DROPINS / f"{service}-limits.conf"
    text = dropin.read_text()
    assert _values(text, "MemoryMax")
    assert _values(text, "CPUQuota")
    unit = _runnable_copy(
        f"[Unit]\nDescription=stand-in {service}\n[Service]\nExecStart=/usr/bin/aisentinel\n",
        tmp_path,
        f"{service}.service",
    )
    (tmp_path / f"{service}.service.d").mkdir()
    shutil.copy(dropin, tmp_path / f"{service}.service.d" / "limits.conf")
    result = _verify(unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
