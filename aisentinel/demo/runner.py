"""``aisentinel demo``: the real daemon on a generated attack scenario, in dry-run.

A :class:`~aisentinel.demo.scenario.LiveScenario` writes nginx access/error and sshd
logs with attacks mixed into normal traffic (and one log rotation half-way) into a
work directory; the daemon follows them exactly as it follows /var/log in
production, with the dry-run responder. Findings and decisions are printed as they
happen; at the end (or on Ctrl-C) a summary compares what was decided with the
scenario's ground truth.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from aisentinel.config import DEFAULT_METRICS_PORT, parse_config
from aisentinel.configtypes import format_duration
from aisentinel.daemon import Daemon
from aisentinel.demo.scenario import ACCESS_LOG, AUTH_LOG, ERROR_LOG, LiveScenario, Manifest
from aisentinel.events import Action, Decision, Finding
from aisentinel.logsetup import configure_logging
from aisentinel.sdnotify import Notifier
from aisentinel.textsafe import escape

SETTLE_SECONDS = 3.0
"""After the writer ends: time for the last lines to be read and decided."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_config(workdir: Path, manifest: Manifest, port: int) -> dict[str, object]:
    """The daemon config the demo runs with (plain data, validated like a file)."""
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


def summarize(
    daemon: Daemon,
    decisions: list[Decision],
    flagged: set[str],
    manifest: Manifest,
    out: TextIO,
) -> int:
    """Print the closing summary; returns 0 when no benign address would be banned."""
    p = daemon.pipeline
    banned = {_who(d) for d in decisions if d.action is Action.BAN and d.target}
    expected = set(manifest.should_ban())
    wrongly = banned & set(manifest.benign)
    w = out.write
    w("\n" + "=" * 72 + "\naisentinel demo: summary\n" + "=" * 72 + "\n")
    for name, c in sorted(p.sources.items()):
        source = daemon.sources.get(name)
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
        kind = manifest.attacks[who].kind.value if who in manifest.attacks else "?"
        w(f"    {escape(who):<18} {d.detector:<20} for {format_duration(d.ttl or 0):<6} [{kind}]\n")
    w("  left alone:\n")
    for d in decisions:
        if d.action is Action.NONE:
            text = d.target.text if d.target is not None else "-"
            w(f"    {escape(text):<18} {d.detector:<20} {escape(d.reason)}\n")
    attackers = set(manifest.attacks)
    detected = attackers & flagged
    w(f"\n  attackers detected: {len(detected)} of {len(attackers)} in the scenario\n")
    for missed in sorted(attackers - flagged):
        w(f"    not detected: {missed} ({manifest.attacks[missed].kind.value})\n")
    w(f"  attackers that would be banned: {len(expected & banned)} of {len(expected)}")
    w(" (the rest are alert-only by severity, or allowlisted)\n")
    for alert_only in sorted((expected & flagged) - banned):
        w(f"    alert only: {alert_only} ({manifest.attacks[alert_only].kind.value})\n")
    w(f"  benign addresses banned: {len(wrongly)} (admin {manifest.admin} included)\n")
    if daemon.metrics_port:
        w(f"  metrics were at http://127.0.0.1:{daemon.metrics_port}/metrics\n")
    return 0 if not wrongly else 1


def run_demo(
    *,
    duration: float = 45.0,
    seed: int = 7,
    workdir: Path | None = None,
    rate: float = 40.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns 0 when no benign address was banned."""
    stream = out or sys.stdout
    keep = workdir is not None
    base = workdir or Path(tempfile.mkdtemp(prefix="aisentinel-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    scenario = LiveScenario(base / "logs", seed=seed, rate=rate, duration=duration)
    port = DEFAULT_METRICS_PORT if _port_free(DEFAULT_METRICS_PORT) else 0
    config = parse_config(demo_config(base, scenario.manifest, port), "<demo>")
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
    stream.write(f"aisentinel demo: logs in {base / 'logs'}, {duration:.0f}s of traffic\n")
    thread.start()
    daemon.started.wait(10)
    stream.write(
        f"metrics: http://127.0.0.1:{daemon.metrics_port}/metrics  (Ctrl-C ends the demo early)\n"
    )
    scenario.start()
    try:
        scenario.join()
        time.sleep(SETTLE_SECONDS)
    except KeyboardInterrupt:
        stream.write("\ninterrupted: stopping\n")
    finally:
        scenario.stop()
        daemon.request_stop()
        thread.join(15)
    status = summarize(daemon, decisions, flagged, scenario.manifest, stream)
    if keep:
        stream.write(f"  files kept in {base}\n")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return status
