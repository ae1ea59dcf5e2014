"""What the running daemon is doing, for ``aisentinel status``.

:func:`snapshot` reads the state the stages already keep (the same numbers the
exporter publishes: no bookkeeping of its own) and returns plain JSON-able data; the
control socket serves it as the ``status`` command. :func:`problems` says what is
wrong in a snapshot (a source down, or blind: reading lines nearly none of which are of
its format, or one whose parser sees a setup that hides every client, such as a local
proxy not trusted; a responder unhealthy, a degraded component, a stale heartbeat):
``aisentinel status`` exits 1 when there is anything. Each kind of problem is also a
metric with an alert rule on it (:data:`WATCHED`), so on-call learns of it through
Alertmanager without running the command. A source's
``notes`` (what it reads but cannot fully see, e.g. a GPU value NVML does not support)
are shown apart and are not problems.
:func:`render` formats a snapshot for people, escaping every string that may come
from a log line or the config.

The snapshot is taken from the control thread while the pipeline runs: counters may
be a moment apart from one another, never torn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from aisentinel import __version__
from aisentinel.events import Decision
from aisentinel.textsafe import escape

if TYPE_CHECKING:
    from aisentinel.daemon import Daemon
    from aisentinel.detectors.base import Detector
    from aisentinel.sources.base import SourceConfigBase

STALE_BEATS = 3
"""The heartbeat is stale when older than this many ``heartbeat_interval``s."""
RECENT_DECISIONS = 5
"""Bans in force listed (most recent first)."""
CELL = 60
"""Widest a table cell is printed (longer text is cut, with an ellipsis)."""

ProblemKind = Literal[
    "no_sources",
    "source_down",
    "source_degraded",
    "source_blind",
    "source_setup",
    "no_responders",
    "responder_unhealthy",
    "component_degraded",
    "brake_tripped",
    "heartbeat_stale",
]
"""Every kind of problem :func:`problems` tells."""

WATCHED: Final[dict[ProblemKind, tuple[str, str]]] = {
    "no_sources": ("aisentinel_sources_configured", "AisentinelNoSources"),
    "source_down": ("aisentinel_source_up", "AisentinelSourceDown"),
    # An nvml source is degraded while a GPU is lost or unreadable: AisentinelGpuLost and
    # AisentinelGpuUnreadable tell it (AisentinelSourceDegraded leaves it out).
    "source_degraded": ("aisentinel_source_state", "AisentinelSourceDegraded"),
    "source_blind": ("aisentinel_source_blind", "AisentinelSourceBlind"),
    "source_setup": ("aisentinel_source_setup_problem", "AisentinelSourceSetupProblem"),
    "no_responders": ("aisentinel_responders_enabled", "AisentinelNotEnforcing"),
    "responder_unhealthy": ("aisentinel_responder_up", "AisentinelResponderDown"),
    "component_degraded": ("aisentinel_degraded", "AisentinelDegraded"),
    "brake_tripped": ("aisentinel_brake_tripped", "AisentinelBanBrakeTripped"),
    "heartbeat_stale": (
        "aisentinel_pipeline_heartbeat_timestamp_seconds",
        "AisentinelHeartbeatStale",
    ),
}
"""Per kind of problem, the metric family that tells it and the alert rule
(dashboards/prometheus/aisentinel-rules.yml) that reads it: on-call learns of every
problem ``aisentinel status`` shows through Alertmanager as well (a test holds every kind
to a served metric and an alert on it)."""


class Problem(NamedTuple):
    """One problem of a snapshot."""

    kind: ProblemKind
    text: str


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------- snapshot


def snapshot(daemon: Daemon) -> dict[str, Any]:
    """Everything ``aisentinel status`` shows, as JSON-able data."""
    now = daemon.clock.now()
    config = daemon.config
    running = daemon.started_with  # what a reload changes on restart only runs on it
    started = float(getattr(daemon, "started_at", 0.0) or 0.0)
    snap: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "config": config.path,
        "now": now,
        "started_at": started or None,
        "uptime_seconds": max(0.0, now - started) if started else None,
        "heartbeat": _heartbeat(daemon, now, started),
        "metrics": {
            "enabled": running.exporter.enabled,
            "listen": running.exporter.listen,
            "port": daemon.metrics_port,
        },
        "reloads": {str(k): int(v) for k, v in dict(daemon.reloads).items()},
        "queue": {"batches": daemon.queue.qsize(), "capacity": daemon.queue.maxsize},
        "sources": [_source(daemon, cfg) for cfg in config.sources],
        "pipeline": _pipeline(daemon),
        "detectors": [_detector(daemon, d) for d in list(daemon.pipeline.detectors)],
        "decisions": _decisions(daemon, now),
        "responders": _responders(daemon),
        "degraded": {
            _text(k): _text(v) for k, v in dict(getattr(daemon, "degraded", None) or {}).items()
        },
    }
    snap["errors"] = _errors(snap)
    snap["problems"] = problems(snap)
    return snap


def _heartbeat(daemon: Daemon, now: float, started: float) -> dict[str, Any]:
    last = float(daemon.last_heartbeat)
    interval = float(daemon.config.daemon.heartbeat_interval)
    since = last or started
    age = max(0.0, now - since) if since else None
    return {
        "last": last or None,
        "age_seconds": age if last else None,
        "interval_seconds": interval,
        "stale": age is not None and age > STALE_BEATS * interval,
    }


def _where(cfg: SourceConfigBase) -> list[str]:
    paths = getattr(cfg, "paths", None)
    if paths:
        return [str(p) for p in paths]
    if cfg.type == "journald":
        directory = getattr(cfg, "directory", None)
        return ["system journal" if directory is None else f"journal {directory}"]
    return [cfg.type]


def _source(daemon: Daemon, cfg: SourceConfigBase) -> dict[str, Any]:
    counters = daemon.pipeline.sources.get(cfg.name)
    source = daemon.sources.get(cfg.name)
    entry: dict[str, Any] = {
        "name": cfg.name,
        "type": cfg.type,
        "parser": getattr(cfg, "parser", None),  # an event source names none
        "where": _where(cfg),
        "lines_parsed": counters.parsed if counters else 0,
        "lines_unparsed": counters.unparsed if counters else 0,
    }
    recognition = counters.recognition if counters else None
    share = recognition.share() if recognition is not None else None
    entry.update(
        blind=bool(recognition is not None and recognition.blind),
        unrecognised_share=share,
        recent_lines=recognition.lines if recognition is not None else 0,
        format=recognition.parser if recognition is not None else None,
        setup_problems=[p.text for p in daemon.pipeline.source_problems(cfg.name)],
    )
    if source is None:
        entry.update(
            up=False,
            state="not running",
            reason="not running (it failed to start: see the log)",
            lines_read=0,
            lines_truncated=0,
            rotations=0,
            errors=0,
            lag_bytes=0,
            lag_seconds=0.0,
            last_error="",
            notes=[],
        )
        return entry
    st = source.stats
    up = bool(st.up)
    last_error = _text(st.last_error)
    state = getattr(st, "state", None)
    state_text = _text(getattr(state, "value", state)) if state is not None else ""
    reason = _text(getattr(st, "reason", "") or "")
    if not up and not reason:
        reason = last_error or "not reading"
    entry.update(
        up=up,
        state=state_text or ("up" if up else "down"),
        reason=reason,
        lines_read=st.lines_read,
        lines_truncated=st.lines_truncated,
        rotations=st.rotations,
        errors=st.errors,
        lag_bytes=st.lag_bytes,
        lag_seconds=_finite(st.lag_seconds),
        last_error=last_error,
        notes=[_text(n) for n in source.notes()],
    )
    return entry


def _pipeline(daemon: Daemon) -> dict[str, Any]:
    p = daemon.pipeline
    counters = list(p.sources.values())
    out: dict[str, Any] = {
        "lines": sum(c.lines for c in counters),
        "parsed": sum(c.parsed for c in counters),
        "unparsed": sum(c.unparsed for c in counters),
        "findings": sum(dict(p.findings).values()),
    }
    for name in ("stage_errors", "event_errors", "errors"):
        table = getattr(p, name, None)
        if isinstance(table, Mapping):
            out["stage_errors"] = {_text(k): int(v) for k, v in dict(table).items()}
            break
    return out


def _detector(daemon: Daemon, detector: Detector) -> dict[str, Any]:
    findings = sum(
        n for (name, _sev), n in dict(daemon.pipeline.findings).items() if name == detector.name
    )
    try:
        keys: int | None = detector.tracked_keys()
    except RuntimeError:  # a table resized under us: report it as unknown this once
        keys = None
    evictions = getattr(detector, "evictions", None)
    return {
        "name": detector.name,
        "keys": keys,
        "max_keys": getattr(detector.config, "max_keys", None),
        "evictions": evictions() if callable(evictions) else None,
        "findings": findings,
        # Not handed on: their key is banned already, or alerted on (alert_repeat).
        "quieted": int(daemon.pipeline.quieted.get(detector.name, 0)),
    }


def _decision(d: Decision, now: float) -> dict[str, Any]:
    return {
        "target": d.target.text if d.target is not None else None,
        "target_kind": d.target.kind.value if d.target is not None else None,
        "action": d.action.value,
        "detector": d.detector,
        "severity": d.severity.label,
        "reason": d.reason,
        "decided_at": d.ts,
        "expires_at": d.expires_at,
        "expires_in_seconds": max(0.0, d.expires_at - now) if d.expires_at else None,
        "offence": d.offence,
        "simulated": d.simulated,
    }


def _decisions(daemon: Daemon, now: float) -> dict[str, Any]:
    active = daemon.engine.active(now)
    counters = daemon.engine.counters()
    taken: dict[str, int] = {}
    for (action, _detector), n in dict(daemon.pipeline.decisions).items():
        taken[action] = taken.get(action, 0) + n
    recent = sorted(active, key=lambda d: d.ts, reverse=True)[:RECENT_DECISIONS]
    return {
        "active": len(active),
        "simulated": sum(1 for d in active if d.simulated),
        "taken": dict(sorted(taken.items())),
        "expired": counters.expired,
        "braked": counters.bans_braked,
        "brake_tripped_since": counters.brake_tripped_since,
        "ledger_errors": counters.ledger_errors,
        "recent": [_decision(d, now) for d in recent],
    }


def _responders(daemon: Daemon) -> list[dict[str, Any]]:
    out = []
    for st in daemon.runner.stats():
        health = st.health
        out.append(
            {
                "name": st.name,
                "healthy": None if health is None else health.ok,
                "detail": "" if health is None else health.detail,
                "checked_at": st.health_checked_at,
                "pending": st.pending,
                "ok": sum(st.ok.values()),
                "failed": sum(st.failed.values()),
                "given_up": sum(st.given_up.values()),
            }
        )
    return out


def _errors(snap: Mapping[str, Any]) -> list[dict[str, str]]:
    """The latest error each component keeps (some may be over: see ``problems``)."""
    out: list[dict[str, str]] = []
    for s in snap["sources"]:
        if s["last_error"]:
            out.append({"component": f"source {s['name']}", "error": s["last_error"]})
    for r in snap["responders"]:
        if r["healthy"] is False:
            out.append({"component": f"responder {r['name']}", "error": r["detail"] or "unhealthy"})
    for component, reason in snap["degraded"].items():
        out.append({"component": component, "error": reason})
    d = snap["decisions"]
    if d["ledger_errors"]:
        out.append({"component": "ledger", "error": f"{d['ledger_errors']} decision ledger errors"})
    if snap["reloads"].get("failed"):
        failed = snap["reloads"]["failed"]
        out.append({"component": "config", "error": f"{failed} reloads refused (bad config)"})
    return out


# ---------------------------------------------------------------------- verdict


def problems(snap: Mapping[str, Any]) -> list[str]:
    """What is down or degraded in ``snap``; empty when everything is up."""
    return [p.text for p in found_problems(snap)]


def found_problems(snap: Mapping[str, Any]) -> list[Problem]:
    """:func:`problems` with the kind of each (:data:`WATCHED`)."""
    out: list[Problem] = []

    def add(kind: ProblemKind, text: str) -> None:
        out.append(Problem(kind, text))

    if "sources" in snap and not snap["sources"]:
        add(
            "no_sources",
            "no log source is configured: nothing is read (see `sources` in the config)",
        )
    for s in snap.get("sources", ()):
        if not s.get("up"):
            add(
                "source_down", f"source {s.get('name')} is down: {s.get('reason') or 'not reading'}"
            )
        elif s.get("state") == "degraded":  # reading, but e.g. its positions cannot be saved
            why = s.get("reason") or s.get("last_error") or "see the log"
            add("source_degraded", f"source {s.get('name')} is degraded: {why}")
        if s.get("blind"):
            share = s.get("unrecognised_share")
            pct = f"{share:.0%}" if isinstance(share, int | float) else "nearly all"
            if s.get("format") == "journald":
                add(
                    "source_blind",
                    f"source {s.get('name')} is blind: {pct} of its last "
                    f"{s.get('recent_lines')} journal entries are not sshd's (nor the kernel's "
                    "with kernel_xid), the only ones a journald source reads (check its "
                    "matches)",
                )
            else:
                add(
                    "source_blind",
                    f"source {s.get('name')} is blind: {pct} of its last "
                    f"{s.get('recent_lines')} lines are not {s.get('format') or s.get('parser')} "
                    "lines, so nothing in them is seen (`aisentinel explain --file LOG`; "
                    "docs/nginx-log-format.md)",
                )
        for problem in s.get("setup_problems") or ():
            add("source_setup", f"source {s.get('name')}: {problem}")
    if "responders" in snap and not snap["responders"]:
        add(
            "no_responders",
            "no responder is enabled: nothing is enforced, decisions are only logged and kept "
            "in the ledger (see `responders` in the config)",
        )
    for r in snap.get("responders", ()):
        if r.get("healthy") is False:
            detail = r.get("detail") or "no detail"
            add("responder_unhealthy", f"responder {r.get('name')} is unhealthy: {detail}")
    for component, reason in dict(snap.get("degraded") or {}).items():
        add("component_degraded", f"{component} is degraded: {reason}")
    if (snap.get("decisions") or {}).get("brake_tripped_since") is not None:
        add(
            "brake_tripped",
            "the storm brake is tripped: new bans are alerts (`aisentinel brake reset` releases "
            "it)",
        )
    beat = snap.get("heartbeat") or {}
    if beat.get("stale"):
        age = beat.get("age_seconds")
        since = f"last {age:.0f}s ago" if isinstance(age, int | float) else "none yet"
        add(
            "heartbeat_stale",
            f"pipeline heartbeat is stale ({since}; expected every "
            f"{beat.get('interval_seconds')}s): the processing loop may be stuck",
        )
    return out


# ---------------------------------------------------------------------- text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _cell(value: Any, limit: int = CELL) -> str:
    return escape(_text(value), limit) if value not in (None, "") else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "  ") -> list[str]:
    """``headers`` and ``rows`` (cells already escaped) as lines of aligned columns."""
    body = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    out = []
    for row in [list(headers), *body]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def _source_row(s: Mapping[str, Any]) -> tuple[str, ...]:
    up = bool(s.get("up"))
    state = _text(s.get("state") or ("up" if up else "down"))
    detail = s.get("last_error") if up else (s.get("reason") or s.get("last_error"))
    return (
        _cell(s.get("name"), 32),
        _cell(state if up else state.upper(), 16),
        _num(s.get("lines_read")),
        _num(s.get("lines_parsed")),
        _num(s.get("lines_unparsed")),
        f"{_bytes(int(s.get('lag_bytes') or 0))}, {_duration(s.get('lag_seconds'))}",
        _cell(", ".join(_text(w) for w in s.get("where", ())), 48),
        _cell(detail),
    )


def render(snap: Mapping[str, Any]) -> str:
    """``snap`` as a few compact tables; every string from logs or config is escaped."""
    lines: list[str] = []
    beat = snap.get("heartbeat") or {}
    metrics = snap.get("metrics") or {}
    queue = snap.get("queue") or {}
    reloads = snap.get("reloads") or {}
    port = metrics.get("port")
    listen = _text(metrics.get("listen", ""))
    host = f"[{listen}]" if ":" in listen else listen
    where = f"{host}:{port}" if metrics.get("enabled") and port else "off"
    lines.append(
        f"aisentinel {_cell(snap.get('version'))}  pid {snap.get('pid')}  "
        f"up {_duration(snap.get('uptime_seconds'))}  config {_cell(snap.get('config'), 200)}"
    )
    beat_age = beat.get("age_seconds")
    lines.append(
        f"heartbeat {_duration(beat_age) + ' ago' if beat_age is not None else 'none yet'} "
        f"(every {_duration(beat.get('interval_seconds'))})  "
        f"queue {queue.get('batches')}/{queue.get('capacity')} batches  metrics {where}  "
        f"reloads {reloads.get('ok', 0)} ok, {reloads.get('failed', 0)} refused"
    )

    sources = list(snap.get("sources", ()))
    up = sum(1 for s in sources if s.get("up"))
    lines += ["", f"SOURCES ({up}/{len(sources)} up)"]
    lines += table(
        ("NAME", "STATE", "READ", "PARSED", "UNPARSED", "LAG", "WHERE", "DETAIL"),
        map(_source_row, sources),
    )
    notes = [(s.get("name"), n) for s in sources for n in s.get("notes") or ()]
    if notes:
        lines += ["", "NOTES (seen, not failures)"]
        lines += [f"  {_cell(name, 32)}: {_cell(note, 200)}" for name, note in notes]

    pipe = snap.get("pipeline") or {}
    stage_errors = dict(pipe.get("stage_errors") or {})
    summary = (
        f"PIPELINE  {_num(pipe.get('lines'))} lines, {_num(pipe.get('parsed'))} parsed, "
        f"{_num(pipe.get('findings'))} findings"
    )
    if stage_errors:
        summary += "; errors " + ", ".join(
            f"{_cell(k, 32)} {_num(v)}" for k, v in sorted(stage_errors.items())
        )
    lines += ["", summary]

    lines += ["", "DETECTORS"]
    lines += table(
        ("NAME", "KEYS", "MAX KEYS", "EVICTIONS", "FINDINGS", "QUIETED"),
        (
            (
                _cell(d.get("name"), 32),
                _num(d.get("keys")),
                _num(d.get("max_keys")),
                _num(d.get("evictions")),
                _num(d.get("findings")),
                _num(d.get("quieted")),
            )
            for d in snap.get("detectors", ())
        ),
    )

    dec = snap.get("decisions") or {}
    taken = ", ".join(f"{_cell(k, 16)} {_num(v)}" for k, v in dict(dec.get("taken") or {}).items())
    lines += [
        "",
        f"DECISIONS  {_num(dec.get('active'))} bans in force ({_num(dec.get('simulated'))} "
        f"simulated); taken: {taken or 'none'}; {_num(dec.get('expired'))} expired, "
        f"{_num(dec.get('braked'))} braked",
    ]
    recent = list(dec.get("recent") or ())
    if recent:
        lines += table(
            ("TARGET", "DETECTOR", "SEVERITY", "OFFENCE", "EXPIRES IN", "REASON"),
            (
                (
                    _cell(d.get("target"), 45) + (" (sim)" if d.get("simulated") else ""),
                    _cell(d.get("detector"), 32),
                    _cell(d.get("severity"), 16),
                    _num(d.get("offence")),
                    _duration(d.get("expires_in_seconds")),
                    _cell(d.get("reason")),
                )
                for d in recent
            ),
        )
        if len(recent) < int(dec.get("active") or 0):
            lines.append(f"  ({len(recent)} most recent shown)")

    lines += ["", "RESPONDERS"]
    lines += table(
        ("NAME", "HEALTH", "PENDING", "OK", "FAILED", "GIVEN UP", "DETAIL"),
        (
            (
                _cell(r.get("name"), 32),
                {True: "ok", False: "UNHEALTHY", None: "unknown"}.get(r.get("healthy"), "?"),
                _num(r.get("pending")),
                _num(r.get("ok")),
                _num(r.get("failed")),
                _num(r.get("given_up")),
                _cell(r.get("detail")),
            )
            for r in snap.get("responders", ())
        ),
    )

    errors = list(snap.get("errors") or ())
    if errors:
        lines += ["", "LAST ERRORS"]
        lines += [
            f"  {_cell(e.get('component'), 40)}: {_cell(e.get('error'), 200)}" for e in errors
        ]

    found = problems(snap)
    lines.append("")
    if found:
        lines.append(f"PROBLEMS ({len(found)})")
        lines += [f"  - {escape(p, 240)}" for p in found]
    else:
        lines.append("OK: every source, responder and component is up")
    return "\n".join(lines) + "\n"
