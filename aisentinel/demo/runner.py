"""``aisentinel demo``: the real daemon on a generated attack scenario, in dry-run.

A :class:`~aisentinel.demo.scenario.LiveScenario` writes nginx access/error and sshd
logs with attacks mixed into normal traffic (and one log rotation half-way) into a
work directory; the daemon follows them exactly as it follows /var/log in
production, with the dry-run responder. Findings and decisions are printed as they
happen; at the end (or on Ctrl-C) a summary compares what was decided with the
scenario's ground truth.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from aisentinel.config import DEFAULT_METRICS_PORT, parse_config
from aisentinel.configtypes import format_duration
from aisentinel.daemon import Daemon
from aisentinel.demo.gpu import GPU_API_LOG, THIEF, GpuStory
from aisentinel.demo.scenario import ACCESS_LOG, AUTH_LOG, ERROR_LOG, LiveScenario, Manifest
from aisentinel.events import Action, Decision, Finding
from aisentinel.logsetup import configure_logging
from aisentinel.sdnotify import Notifier
from aisentinel.textsafe import escape

INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT, as a shell reports it)."""
SETTLE_SECONDS = 3.0
"""After the writer ends: time for the last lines to be read and decided."""


SCENARIO_SOURCES = frozenset({"nginx-access", "nginx-error", "sshd"})
"""The sources of the logs the scenario writes (and rotates half-way)."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_config(
    workdir: Path, manifest: Manifest, port: int, gpu: GpuStory | None = None
) -> dict[str, object]:
    """The daemon config the demo runs with (plain data, validated like a file).

    With ``gpu``: the ``nvml`` source on the fake library (unless the story is
    simulated), the API log of the GPU-time theft, and GPU detector windows short
    enough for a demo."""
    logs = workdir / "logs"
    config = _base_config(workdir, manifest, port)
    if gpu is None:
        return config
    sources = config["sources"]
    assert isinstance(sources, list)  # noqa: S101 - built just above
    sources.append(
        {
            "name": "gpu-api",
            "type": "file",
            "parser": "nginx",
            "paths": [str(logs / GPU_API_LOG)],
            "start_at": "beginning",
        }
    )
    if not gpu.simulated:
        sources.append({"name": "gpu", "type": "nvml", "interval": "1s", "docker_socket": ""})
    window = max(3, round(gpu.duration / 4))  # the theft lasts about half the run
    config["detectors"] = {
        "gpu_theft": {"window": f"{window}s", "min_unauthenticated": 20},
        "gpu_spike": {"warmup": max(3, round(gpu.duration / 6))},
    }
    return config


def _base_config(workdir: Path, manifest: Manifest, port: int) -> dict[str, object]:
    logs = workdir / "logs"
    return {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "log_format": "console",
            "heartbeat_interval": "1s",
            "expire_interval": "5s",
            "control_socket": "",
        },
        "exporter": {"port": port},
        "sources": [
            {
                "name": "nginx-access",
                "type": "file",
                "parser": "nginx",
                "paths": [str(logs / ACCESS_LOG)],
                "start_at": "beginning",
            },
            {
                "name": "nginx-error",
                "type": "file",
                "parser": "nginx-error",
                "paths": [str(logs / ERROR_LOG)],
                "start_at": "beginning",
            },
            {
                "name": "sshd",
                "type": "file",
                "parser": "sshd",
                "paths": [str(logs / AUTH_LOG)],
                "start_at": "beginning",
            },
        ],
        "decisions": {"allowlist": list(manifest.allowlist)},
        "responders": {"dryrun": {}},
        "audit": {"enabled": False},
    }


def live_line(finding: Finding | None, decision: Decision) -> str:
    """Two lines for the live view: what was found, and what the daemon does about it.

    Log-derived text (the key, message, reason) is escaped: one line each, always."""
    clock = time.strftime("%H:%M:%S", time.localtime(decision.ts))
    what = ""
    if finding is not None:
        who = escape(finding.client or finding.key)
        what = (
            f"{clock}  {finding.severity.label:<8} {finding.detector:<20} {who:<16} "
            f"{escape(finding.message)}\n"
        )
    if decision.action is Action.BAN:
        target = escape(decision.target.text if decision.target is not None else "-")
        act = f"would BAN {target} for {format_duration(decision.ttl or 0)} (dry-run)"
    elif decision.action is Action.ALERT:
        act = f"ALERT only: {escape(decision.reason)}"
    else:
        act = f"no action: {escape(decision.reason)}"
    return f"{what}{'':10}-> {act}\n"


def _who(decision: Decision) -> str:
    """The address a decision is about (the finding's client: a ban may cover its /64)."""
    finding = decision.finding
    if finding is not None and finding.client:
        return finding.client
    return decision.target.text if decision.target is not None else "-"


def attack_label(who: str, manifest: Manifest) -> str:
    """What the demo made ``who`` do: its scenario attack kind, ``gpu_time_theft`` for the
    GPU story's thief (not in the scenario's manifest), ``?`` for an address the demo
    never attacked from."""
    if who in manifest.attacks:
        return manifest.attacks[who].kind.value
    return "gpu_time_theft" if who == THIEF else "?"


def _bans(decision: Decision) -> bool:
    """Whether ``decision`` bans its address, or answers that it is banned already (a
    ban of the same run, an earlier finding of the attack)."""
    if decision.target is None:
        return False
    return decision.action is Action.BAN or (
        decision.action is Action.NONE and decision.reason.startswith("already banned")
    )


DEMO_MARKER = ".aisentinel-demo"
"""Written in the demo's folder: a folder that holds files but not this is not the
demo's, and nothing in it is removed or emptied."""
_EMPTY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW


def prepare_workdir(workdir: Path | None, out: TextIO) -> Path | None:
    """The demo's folder (``workdir``, or a new temporary one), absolute, ready for a
    run from scratch; None, said in one line on ``out``, when it is not the demo's to
    clear. A file system fault raises ``OSError`` (the CLI's one line: path, reason).

    What an earlier run left there goes: the daemon's state (its bans, restored, would
    make every attacker "already banned") and the scenario's logs (read again from
    the start). Only in a folder that is empty or an earlier demo's
    (:data:`DEMO_MARKER`), whose ``state`` and ``logs`` are no symbolic links; a log
    file that is a link is refused (``O_NOFOLLOW``), never followed. The logs then
    exist, empty, before the daemon starts, as on a server, so its first lines are not
    "log file missing" warnings; the writers append to them.
    """
    # Absolute: the config it writes refuses a relative state_dir or log path.
    base = (workdir or Path(tempfile.mkdtemp(prefix="aisentinel-demo-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    why = _not_clearable(base)
    if why is not None:
        out.write(f"aisentinel demo: cannot start afresh in {escape(str(base))}: {why}\n")
        return None
    (base / DEMO_MARKER).touch()
    if (base / "state").exists():
        shutil.rmtree(base / "state")
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    for name in (ACCESS_LOG, ERROR_LOG, AUTH_LOG, GPU_API_LOG):
        (logs / f"{name}.1").unlink(missing_ok=True)  # the scenario's rotation (or a link)
        # Emptied where it is, never through a link (ELOOP then).
        os.close(os.open(logs / name, _EMPTY_FLAGS, 0o644))
    return base


def _not_clearable(base: Path) -> str | None:
    """Why the demo may not clear ``base``, or ``None``."""
    if not (base / DEMO_MARKER).is_file() and any(base.iterdir()):
        return f"it holds files and no {DEMO_MARKER} of an earlier demo"
    for sub in ("state", "logs"):
        if (base / sub).is_symlink():
            return f"{sub} is a symbolic link"
    return None


def summarize(
    daemon: Daemon,
    decisions: list[Decision],
    flagged: set[str],
    manifest: Manifest,
    out: TextIO,
    *,
    others: Mapping[str, str] | None = None,
    played: frozenset[str] | None = None,
) -> int:
    """Print the closing summary; returns 0 when no benign address would be banned.

    ``others``: attackers beyond the manifest (the GPU story's thief), by label, each to
    be banned. ``played``: the attackers whose traffic was played in full (``None``:
    all); after an interrupt the others count only when they were detected anyway."""
    p = daemon.pipeline
    banned = {_who(d) for d in decisions if _bans(d)}
    kinds = {a: atk.kind.value for a, atk in manifest.attacks.items()} | dict(others or {})
    unplayed = set() if played is None else set(kinds) - played - flagged
    attackers = set(kinds) - unplayed
    expected = (set(manifest.should_ban()) | set(others or {})) - unplayed
    wrongly = banned & set(manifest.benign)
    w = out.write
    w("\n" + "=" * 72 + "\naisentinel demo: summary\n" + "=" * 72 + "\n")
    for name, c in sorted(p.sources.items()):
        source = daemon.sources.get(name)
        if name not in SCENARIO_SOURCES:  # the GPU story's: GPU samples, its API log
            w(f"  source {name:<13} {c.lines:>7} events or lines read, {c.parsed} parsed\n")
            continue
        rotations = source.stats.rotations if source is not None else 0
        w(
            f"  source {name:<13} {c.lines:>7} lines read, {c.parsed} parsed, "
            f"{c.unparsed} other, {rotations} log rotation(s) followed\n"
        )
    w("  findings per detector:\n")
    per_detector: Counter[str] = Counter()
    for (detector, _sev), n in p.findings.items():
        per_detector[detector] += n
    for detector, n in sorted(per_detector.items()):
        w(f"    {detector:<22} {n}\n")
    actions = Counter(d.action.value for d in decisions)
    w(
        f"  decisions: {actions.get('ban', 0)} ban (dry-run), {actions.get('alert', 0)} alert, "
        f"{actions.get('none', 0)} no action\n"
    )
    w("  would ban:\n")
    for d in sorted((d for d in decisions if d.action is Action.BAN), key=lambda d: d.ts):
        who = _who(d)
        kind = attack_label(who, manifest)
        w(f"    {escape(who):<18} {d.detector:<20} for {format_duration(d.ttl or 0):<6} [{kind}]\n")
    w("  left alone:\n")
    for d in decisions:
        if d.action is Action.NONE:
            text = d.target.text if d.target is not None else "-"
            w(f"    {escape(text):<18} {d.detector:<20} {escape(d.reason)}\n")
    detected = attackers & flagged
    w(f"\n  attackers detected: {len(detected)} of {len(attackers)}")
    w(f" (interrupted: {len(unplayed)} attacks not played)\n" if unplayed else "\n")
    for missed in sorted(attackers - flagged):
        w(f"    not detected: {missed} ({kinds[missed]})\n")
    w(f"  attackers that would be banned: {len(expected & banned)} of {len(expected)}")
    w(" (the rest are alert-only by severity, or allowlisted)\n")
    for alert_only in sorted((expected & flagged) - banned):
        w(f"    alert only: {alert_only} ({kinds[alert_only]})\n")
    w(f"  benign addresses banned: {len(wrongly)} (admin {manifest.admin} included)\n")
    if daemon.metrics_port:
        w(f"  metrics were at http://127.0.0.1:{daemon.metrics_port}/metrics\n")
    return 0 if not wrongly else 1


def _gpu_metrics(daemon: Daemon) -> list[str]:
    """The ``aisentinel_gpu_*`` samples of the running daemon, as exposition lines."""
    lines: list[str] = []
    for family in daemon.exporter().collect():
        if not family.name.startswith("aisentinel_gpu_"):
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            lines.append(f"{s.name}{{{labels}}} {s.value:g}")
    return lines


GPU_DETECTORS = ("gpu_workload", "gpu_theft", "gpu_memory", "gpu_spike")
GPU_METRICS_SHOWN = (
    "aisentinel_gpu_collector_up",
    "aisentinel_gpu_info",
    "aisentinel_gpu_utilization_ratio",
    "aisentinel_gpu_memory_used_bytes",
    "aisentinel_gpu_power_watts",
    "aisentinel_gpu_process_memory_used_bytes",
    "aisentinel_gpu_process_sm_utilization_ratio",
)


def _gpu_summary(gpu: GpuStory, decisions: list[Decision], metrics: list[str], out: TextIO) -> None:
    """The GPU part of the summary: what the GPU detectors decided, and GPU metrics."""
    w = out.write
    w(f"\n  GPUs: {gpu.label}\n")
    for d in decisions:
        if d.detector not in GPU_DETECTORS:
            continue
        target = escape(d.target.text if d.target is not None else "-")
        finding = d.finding
        what = escape(finding.message) if finding is not None else ""
        w(f"    {d.detector:<13} {d.action.value:<6} {target:<24} {what}\n")
    shown = [m for m in metrics if m.split("{", 1)[0] in GPU_METRICS_SHOWN]
    if shown:
        w("  GPU metrics (a few of the aisentinel_gpu_* series at the end of the run):\n")
        for line in shown:
            w(f"    {escape(line)}\n")


def _played(scenario: LiveScenario, gpu: GpuStory) -> frozenset[str]:
    """The attackers whose traffic was played in full, the GPU story's thief included."""
    return scenario.played_attacks() | ({THIEF} if gpu.theft_played else set())


def run_demo(
    *,
    duration: float = 45.0,
    seed: int = 7,
    workdir: Path | None = None,
    rate: float = 40.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns 0 when no benign address was banned, :data:`INTERRUPTED`
    after Ctrl-C (the summary then counts only the attacks played)."""
    stream = out or sys.stdout
    keep = workdir is not None
    base = prepare_workdir(workdir, stream)
    if base is None:
        return 2
    scenario = LiveScenario(base / "logs", seed=seed, rate=rate, duration=duration)
    gpu = GpuStory(base, duration)
    port = DEFAULT_METRICS_PORT if _port_free(DEFAULT_METRICS_PORT) else 0
    config = parse_config(demo_config(base, scenario.manifest, port, gpu), "<demo>")
    # The daemon's own log shows warnings only; findings and decisions are printed below
    # one line each, as they happen.
    configure_logging("console", "warning", stream)
    decisions: list[Decision] = []
    flagged: set[str] = set()
    daemon = Daemon(config, notifier=Notifier(None))
    pending: list[Finding] = []

    def on_finding(finding: Finding) -> None:
        flagged.update(a for a in (finding.client, *finding.clients) if a)
        pending.append(finding)

    def on_decision(decision: Decision) -> None:
        decisions.append(decision)
        finding = pending.pop() if pending else None
        stream.write(live_line(finding, decision))

    daemon.pipeline.on_finding = on_finding
    daemon.pipeline.on_decision = on_decision
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    stream.write(
        f"aisentinel demo: logs in {base / 'logs'}, {duration:.0f}s of traffic\nGPUs: {gpu.label}\n"
    )
    thread.start()
    daemon.started.wait(10)
    gpu.start(daemon._emit)
    stream.write(
        f"metrics: http://127.0.0.1:{daemon.metrics_port}/metrics  (Ctrl-C ends the demo early)\n"
    )
    scenario.start()
    interrupted = False
    try:
        scenario.join()
        time.sleep(SETTLE_SECONDS)
    except KeyboardInterrupt:
        interrupted = True
        stream.write("\ninterrupted: stopping\n")
    finally:
        scenario.stop()
        gpu_metrics = _gpu_metrics(daemon)
        daemon.request_stop()
        thread.join(15)
        gpu.stop()
    status = summarize(
        daemon,
        decisions,
        flagged,
        scenario.manifest,
        stream,
        others={THIEF: attack_label(THIEF, scenario.manifest)},
        played=_played(scenario, gpu) if interrupted else None,
    )
    _gpu_summary(gpu, decisions, gpu_metrics, stream)
    if keep:
        stream.write(f"  files kept in {base}\n")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return INTERRUPTED if interrupted else status
