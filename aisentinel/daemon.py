"""The long-running service: sources feed a queue, one pipeline thread drains it.

Threads: one reader per source (owned by the source), the metrics HTTP server, the
audit scheduler, and the main thread, which runs the pipeline loop. The main loop is
also the heartbeat: it sends ``WATCHDOG=1`` only after it has processed the queue, so
a hung pipeline trips systemd's watchdog instead of hiding behind a live process.

Signals only set flags; the loop acts on them: SIGTERM/SIGINT stop (flush state,
exit within a few seconds), SIGHUP reloads the config without dropping bans (a bad
new config is logged and the old one kept).
"""

from __future__ import annotations

import json
import math
import queue
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from pydantic import ValidationError

from aisentinel import __version__
from aisentinel.atomicfile import atomic_write, read_state
from aisentinel.audit.config import AuditConfig
from aisentinel.clock import Clock, SystemClock
from aisentinel.commands import CommandRunner, SubprocessRunner
from aisentinel.config import Config, ConfigError, DaemonConfig, ExporterConfig, load_config
from aisentinel.configtypes import zone_info
from aisentinel.control import CommandError, ControlError, ControlServer, Peer
from aisentinel.decisionlog import DecisionLog
from aisentinel.decisions.admin import AdminCommands
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger, LedgerCorruptError, is_busy
from aisentinel.detectors import build_detectors
from aisentinel.events import Action, Batch, EventBatch, Finding, finding_fields
from aisentinel.exporter import (
    DaemonValues,
    DecisionMetrics,
    Exporter,
)
from aisentinel.faults import (
    fix_hint,
    is_dir,
    port_hint,
    private_state_dir,
    probe_dir,
    reason,
)
from aisentinel.logsetup import log_output_failing
from aisentinel.memory import HeapTrimmer
from aisentinel.metrics import Collecting
from aisentinel.metricsweb import Landing, serve_metrics
from aisentinel.pipeline import Pipeline, SourceCounters
from aisentinel.responders import REGISTRY as RESPONDERS
from aisentinel.responders.base import Responder, ResponderConfigBase, ResponderHealth
from aisentinel.responders.runner import ResponderRunner
from aisentinel.runlock import LOCK_FILE
from aisentinel.runlock import holder as lock_holder
from aisentinel.runlock import release as release_lock
from aisentinel.runlock import take as take_lock
from aisentinel.sdnotify import Notifier
from aisentinel.sources import REGISTRY as SOURCES
from aisentinel.sources.base import Source, SourceConfigBase, UnstartedSource
from aisentinel.status import snapshot

if TYPE_CHECKING:
    # Imported when the audit is enabled (APScheduler and the checks: ~2 MB).
    from aisentinel.audit.scheduler import AuditScheduler
    from aisentinel.detectors.base import Detector

log = structlog.get_logger("aisentinel.daemon")

START_REFUSED = 1
"""``aisentinel run``'s exit status when it does not start (a bad config is refused
with it too): another process holds the state directory's lock."""
DRAIN_BATCHES = 64
"""Batches processed per loop turn before the loop looks at timers and signals."""
SOURCE_READY_TURNS = 500
"""Turns of 10 ms the start waits for the sources' first look at their logs (5 s)."""
STOP_DRAIN_SECONDS = 3.0
"""At shutdown, time allowed to process batches already read (the saved positions move
past them as they are processed)."""
STOP_BUDGET_SECONDS = 4.5
"""Most a stop takes from the signal to exit (systemd kills after TimeoutStopSec)."""
RELOAD_FLUSH_SECONDS = 1.0
"""At a reload that rebuilds the responders: time for the old worker to finish."""
RELOAD_WITHDRAW_SECONDS = 5.0
"""The same when a responder removed from the config has its enforcements to lift."""
EXPORTER_RETRY_SECONDS = 30.0
"""How often the metrics endpoint tries its port again when it could not listen."""
_LIVE_DAEMON_KEYS = frozenset(
    {"heartbeat_interval", "expire_interval", "reconcile_interval", "responder_queue", "log_level"}
)
RESTART_ONLY: tuple[tuple[str, str], ...] = (
    *(("daemon", key) for key in sorted(DaemonConfig.model_fields.keys() - _LIVE_DAEMON_KEYS)),
    *(("exporter", key) for key in ExporterConfig.model_fields),
    *(("audit", key) for key in AuditConfig.model_fields),
)
"""The ``(table, key)`` settings read once at start: a reload warns of each that changed
and keeps the running value. The other ``[daemon]`` keys (timers, ``responder_queue``,
``log_level``) apply live; the scheduled audit runs as it started."""
LEDGER_FILE = "decisions.sqlite3"
LEDGER_LOCK_WAIT = 30.0
"""Seconds a start waits for a ledger another process holds locked (someone's sqlite3
shell with a transaction open), trying again with back-off and telling systemd it is
alive (EXTEND_TIMEOUT_USEC, WATCHDOG=1); then it runs on a stand-in in memory."""
LEDGER_BUSY_TIMEOUT = 1.0
"""Seconds one try at start waits inside SQLite for the lock."""
LEDGER_RUN_BUSY_TIMEOUT = 0.02
"""Seconds a write of the running daemon waits for a lock another process holds (an
admin's sqlite3 shell with a transaction open, a VACUUM): the pipeline thread makes
the writes, so a longer wait would hold up detection and the watchdog heartbeat. A
write that finds the file locked waits in the ledger's bounded backlog instead."""
LEDGER_CLOSE_BUSY_TIMEOUT = 0.25
"""The same at stop, for the backlog's last chance."""
LEDGER_RETRY_SECONDS = 10.0
"""How often a running daemon on a stand-in ledger tries the file again."""
KEEPING_HELD_RUN = (
    "what the responders enforce is kept (reconciles add, never lift) until aisentinel "
    "restarts on a healthy ledger"
)
"""Said of a run whose ledger is not the whole truth this run only (in memory: the
state directory unusable; :meth:`Daemon._keep_held`)."""
KEEPING_HELD = (
    "what the responders enforce is kept (reconciles add, never lift), across restarts, "
    "until `aisentinel ledger accept`"
)
"""Said while :data:`HELD_FILE` records a ledger lost (:meth:`Daemon._keep_held`)."""
HELD_FILE = "ledger-lost.json"
"""Written in the state directory when a ledger's bans could not be restored (moved
aside as corrupt, unreadable): while it is there every start keeps what the responders
enforce (reconciles add, never lift), since they may hold bans only the lost ledger
knew; ``aisentinel ledger accept`` removes it. Nothing lifts those bans by itself:
ufw rules and fail2ban bans have no time of their own, and the lost ledger may have
held manual or escalated bans of any length."""
HELD_REASON_MAX = 500
"""Characters of the recorded reason read back from :data:`HELD_FILE`."""
RESPONDERS_FILE = "responders.json"
"""The enabled responders' configs (``responders``) and those removed from the config
whose enforcements are not lifted yet (``withdrawing``), rewritten at each start and
reload and once a withdrawal succeeded, so a start without one of them lifts what it
left in force (:meth:`Daemon._leftover_responders`)."""


@dataclass(slots=True)
class Removed:
    """Sources and detectors a reload removed, by name, so that one a later reload adds
    again goes on counting (counters never go back while the process runs): the stopped
    source and its pipeline counters, the detector."""

    sources: dict[str, tuple[Source | None, SourceCounters | None]] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A responder removed from the config whose enforcements are to be lifted, with
    the config it enforced under."""

    name: str
    config: ResponderConfigBase

    @property
    def key(self) -> tuple[str, str]:
        """The backend object it stands for: two with the same key are one."""
        return (self.name, self.config.owns())


def source_zones(sources: Iterable[SourceConfigBase]) -> dict[str, tzinfo]:
    """Per source that names one (``timezone``, a file source's key): the zone its
    local-time stamps are read in."""
    out: dict[str, tzinfo] = {}
    for cfg in sources:
        name = getattr(cfg, "timezone", None)
        if isinstance(name, str):
            out[cfg.name] = zone_info(name)  # validated when the config was loaded
    return out


def enabled_responders(config: Config) -> dict[str, ResponderConfigBase]:
    """The responders ``config`` enables, by name."""
    return {name: cfg for name, cfg in config.responders.items() if cfg.enabled}


def dropped_responders(
    old: dict[str, ResponderConfigBase], new: dict[str, ResponderConfigBase]
) -> set[str]:
    """Names in ``old`` that ``new`` lacks, or whose backend object it changed (another
    nftables table, another fail2ban jail): theirs are to be lifted."""
    return {n for n, cfg in old.items() if n not in new or new[n].owns() != cfg.owns()}


def record_held(state_dir: Path, why: str, now: float) -> None:
    """Write :data:`HELD_FILE`: a ledger was lost at ``now`` (``why``); ``OSError``."""
    doc = {"since": now, "reason": why}
    atomic_write(state_dir / HELD_FILE, json.dumps(doc, sort_keys=True).encode())


def recorded_held(state_dir: Path) -> str | None:
    """Why an earlier run kept what the responders enforce (:data:`HELD_FILE`), or
    ``None`` when the file is not there. A file that cannot be read (a link, not JSON)
    still counts: better to keep a ban than to lift it as unknown."""
    path = state_dir / HELD_FILE
    try:
        path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be checked ({reason(exc)})"
    try:
        doc = json.loads(read_state(path))
        since = datetime.fromtimestamp(float(doc["since"]), UTC).isoformat(timespec="seconds")
        why = str(doc["reason"])[:HELD_REASON_MAX]
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        return f"{path} records a lost ledger but cannot be read ({reason(exc)})"
    return f"a ledger was lost at {since} ({why}; recorded in {path})"


def recorded_responders(
    state_dir: Path,
) -> tuple[dict[str, ResponderConfigBase], list[Withdrawal]]:
    """The responders ``state_dir``'s :data:`RESPONDERS_FILE` records: those the
    previous run enabled, and those whose withdrawal had not succeeded (each logged and
    left out when it cannot be read)."""
    path = state_dir / RESPONDERS_FILE
    why = ""
    try:
        doc = json.loads(read_state(path))
        recorded = doc.get("responders")
        withdrawing = doc.get("withdrawing", [])
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        why = reason(exc)
    except (ValueError, AttributeError) as exc:
        why = f"not JSON of the expected shape: {exc}"
    else:
        if not isinstance(recorded, dict) or not isinstance(withdrawing, list):
            why = "no responders object"
    if why:
        log.warning(
            "cannot read the responders of the previous run; what a responder removed "
            "from the config left in force stays",
            path=str(path),
            reason=why,
        )
        return {}, []
    entries = [(str(n), d) for n, d in recorded.items()]
    entries += [(str(e.get("name")), e.get("config")) for e in withdrawing if isinstance(e, dict)]
    previous: dict[str, ResponderConfigBase] = {}
    pending: list[Withdrawal] = []
    for at, (name, data) in enumerate(entries):
        try:
            model = RESPONDERS.get(name).config_model
            cfg = model.model_validate(data)
        except (KeyError, ValidationError) as exc:
            log.warning(
                "responder of the previous run not understood; what it left in force stays",
                responder=name[:64],
                reason=str(exc).splitlines()[0][:200],
            )
            continue
        if not isinstance(cfg, ResponderConfigBase):
            continue
        if at < len(recorded):
            previous[name] = cfg
        else:
            pending.append(Withdrawal(name, cfg))
    return previous, pending


def write_responders_record(
    state_dir: Path, enabled: dict[str, ResponderConfigBase], withdrawing: list[Withdrawal]
) -> None:
    """Replace ``state_dir``'s :data:`RESPONDERS_FILE` with ``enabled`` and
    ``withdrawing`` (raises ``OSError``)."""
    data = {
        "responders": {name: cfg.model_dump(mode="json") for name, cfg in enabled.items()},
        "withdrawing": [
            {"name": w.name, "config": w.config.model_dump(mode="json")} for w in withdrawing
        ],
    }
    atomic_write(state_dir / RESPONDERS_FILE, json.dumps(data, sort_keys=True).encode())


def metrics_address(config: Config) -> str:
    """``host:port`` of the metrics endpoint as configured (for the self-audit)."""
    listen = config.exporter.listen
    host = f"[{listen}]" if ":" in listen else listen
    return f"{host}:{config.exporter.port}" if config.exporter.enabled else ""


def ban_responders(config: Config) -> list[str]:
    """The enabled responders of ``config`` that ban addresses, by name, sorted (none
    when ``[decisions] simulate`` is on: they would enforce nothing)."""
    if config.decisions.simulate:
        return []
    return sorted(
        name
        for name, cfg in config.responders.items()
        if cfg.enabled
        and name != "dryrun"
        and name in RESPONDERS
        and Action.BAN in RESPONDERS.get(name).factory.handles
    )


def _responders_text(names: list[str]) -> str:
    return " and ".join(names) + (" responder" if len(names) == 1 else " responders")


def audit_facts(config: Config) -> dict[str, Any]:
    """What the self-audit is told about aisentinel itself: where its metrics listen
    and how they are protected (``web_config``), and which of its responders the
    config says ban addresses (``None``: none, or ``[decisions] simulate`` is on);
    whether they do is :func:`live_enforcement`'s question."""
    banning = ban_responders(config)
    return {
        "metrics_listen": metrics_address(config),
        "metrics_protection": config.web.describe() if config.web is not None else "plain HTTP",
        "enforcement": _responders_text(banning) if banning else None,
    }


def live_enforcement(
    config: Config, health: Mapping[str, ResponderHealth | None]
) -> tuple[str | None, str]:
    """What the self-audit counts as aisentinel's own banning, given the responders a
    running daemon has (``health``: name -> its last health check, ``None`` before the
    first): the ban responders of ``config`` it runs and does not know to be unhealthy
    (``None``: none), and a note naming each that does not count and why ("": none)."""
    working: list[str] = []
    notes: list[str] = []
    for name in ban_responders(config):
        if name not in health:
            notes.append(
                f"aisentinel is configured to ban with {name} but the running daemon has no "
                f"{name} responder (reload it: systemctl reload aisentinel)"
            )
        elif (state := health[name]) is not None and not state.ok:
            notes.append(
                f"aisentinel's {name} responder is unhealthy: {state.detail or 'no detail'}"
            )
        else:
            working.append(name)
    return (_responders_text(working) if working else None), "; ".join(notes)


def lock_state_dir(state_dir: Path) -> tuple[bool, int | None]:
    """Take ``state_dir/daemon.lock`` for a run: (refused, the descriptor holding it).

    Refused when another process holds it (a second daemon on this state directory
    would decide every attack twice and escalate first offenders; `aisentinel withdraw`
    lifting enforcements would see them put back), after one error line naming the lock
    and its holder. `aisentinel run` takes it first, on the configured state directory,
    before the daemon probes it or opens the ledger: a refused start touches nothing.

    A lock file that cannot be taken at all (a read-only state directory without one, a
    symbolic link in its place) is no sign of another daemon: the start goes on after
    one line (descriptor ``None``), and `aisentinel withdraw` then relies on the
    control socket."""
    path = state_dir / LOCK_FILE
    try:
        fd = take_lock(path)
    except FileNotFoundError:  # no state directory yet: nobody's; run() takes it once made
        return False, None
    except OSError as exc:
        log.warning(  # the state directory's own faults are reported by the daemon
            "cannot lock the state directory; `aisentinel withdraw` will not see this "
            "daemon running unless its control socket answers",
            path=str(path),
            reason=reason(exc),
        )
        return False, None
    if fd is not None:
        return False, fd
    pid = lock_holder(path)
    log.error(
        "another process holds the state directory's lock: a daemon already runs with "
        "this state_dir (or `aisentinel withdraw` is lifting its enforcements); not "
        "starting a second one",
        path=str(path),
        pid=pid if pid is not None else "unknown",
        fix="stop the other one first (systemctl stop aisentinel), or give this one "
        "another [daemon] state_dir",
    )
    return True, None


class Daemon:
    """aisentinel's service process. ``run()`` blocks until stopped."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        commands: CommandRunner | None = None,
        run_lock: int | None = None,
    ) -> None:
        # run_lock: state_dir/daemon.lock as `aisentinel run` took it (lock_state_dir)
        # before building this: a refused start then opens nothing here.
        # started_with: the config the daemon started with, on which [exporter] and the
        # [daemon] keys a reload does not apply (RESTART_ONLY) run (`aisentinel status`
        # shows them); config: the one last loaded.
        self.config = self.started_with = config
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.notifier = notifier or Notifier.from_env()
        self.state_dir = config.daemon.state_dir
        self.queue: queue.Queue[Batch] = queue.Queue(maxsize=config.daemon.queue_batches)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._closed = threading.Event()
        self._signalled: set[int] = set()  # received, not yet acted on (see _on_signal)
        self.sources: dict[str, Source] = {}
        self._removed = Removed()
        self.metrics_port: int | None = None
        self.started = threading.Event()
        self.registry = CollectorRegistry(auto_describe=True)
        self._httpd: Any = None
        self.audit: AuditScheduler | None = None
        self.last_heartbeat = 0.0
        self._next_beat = 0.0
        """When the heartbeat is due next (monotonic; :meth:`_beat_if_due`)."""
        self.reloads = {"ok": 0, "failed": 0}
        self.trimmer = HeapTrimmer()
        self.control: ControlServer | None = None
        self.started_at = 0.0
        self.exporter_retry_seconds = EXPORTER_RETRY_SECONDS
        self._degraded: dict[str, str] = {}
        self._ledger_retry_at = math.inf
        """When the loop tries the ledger file again (a stand-in only)."""
        self._private_state: tempfile.TemporaryDirectory[str] | None = None
        self.commands: CommandRunner = commands if commands is not None else SubprocessRunner()
        """The one command runner handed to every responder (tests pass a fake)."""
        self._withdrawing: list[Withdrawal] = []
        """Responders removed from the config whose withdrawal has not succeeded yet:
        they stay in :data:`RESPONDERS_FILE` until it does."""
        self._record_lock = threading.Lock()
        """Serialises :attr:`_withdrawing` and the writes of :data:`RESPONDERS_FILE` (the
        worker thread reports withdrawals)."""
        self._run_lock: int | None = run_lock
        """The descriptor holding ``state_dir/daemon.lock`` while :meth:`run` runs."""
        self.keeping_held: str | None = None
        """Why the ledger is not the whole truth this run (unreadable at start, in
        memory): every reconcile then adds and never lifts (``None``: it is)."""
        self.ledgers_lost = 0
        """Ledger files whose bans could not be restored at start (0 or 1)."""
        self._held_recorded = False  # HELD_FILE records a lost ledger (kept on restart)
        self._held_unrecorded: str | None = None  # why a loss could not be recorded there
        self._reconcile_now = threading.Event()  # `aisentinel ledger accept`: reconcile now

        # An unusable state directory or ledger degrades the daemon; detection goes on.
        self.state_dir = self._usable_state_dir(config.daemon.state_dir)
        self.ledger = self._open_ledger(config.daemon.state_dir / LEDGER_FILE)
        self.engine = DecisionEngine(
            config.decisions,
            self.ledger,
            self.clock,
            trusted_proxies=config.parsers.trusted_proxies,
        )
        self.runner = self._build_runner(config)
        self.decision_log = DecisionLog(
            self.clock.monotonic, decision_lines=config.daemon.decision_lines or 1 << 62
        )
        self.pipeline = Pipeline(
            detectors=build_detectors(config.detectors),
            engine=self.engine,
            runner=self.runner,
            clock=self.clock,
            parsers_config=config.parsers,
            # One info line per decision carries its finding (the brake's storm of
            # alerts summarised: aisentinel.decisionlog); findings alone are debug, and
            # below that level the hook is not even called.
            on_finding=self._log_finding if config.daemon.log_level == "debug" else None,
            on_decision=self.decision_log,
            zones=source_zones(config.sources),
        )

    # ------------------------------------------------------------------ degraded

    @property
    def degraded(self) -> dict[str, str]:
        """Components running degraded now (state, ledger, exporter, control, log), each
        with why.

        Empty when all is well. The exporter (``aisentinel_degraded``), the systemd
        STATUS line and other commands read it.
        """
        out = dict(self._degraded)
        failing = self.ledger.failing
        if failing is not None and "ledger" not in out:
            out["ledger"] = failing
        control = self.control
        if control is not None and control.problem is not None:
            out["control"] = (
                f"control socket {control.path}: {control.problem}; `aisentinel status`, "
                "`bans`, `ban`, `unban` and `allow` cannot reach the daemon"
            )
        lost = log_output_failing()
        if lost is not None:
            out["log"] = lost
        return out

    def _usable_state_dir(self, configured: Path) -> Path:
        """``configured`` when it can be written, else a private temporary directory."""
        exc = probe_dir(configured)
        if exc is None:
            return configured
        self._private_state = private_state_dir(configured)
        working = Path(self._private_state.name) if self._private_state else configured
        log.error(
            "state directory unusable; running degraded: bans are kept in memory and read "
            "positions in a temporary directory, both lost on restart",
            path=str(configured),
            reason=reason(exc),
            fix=fix_hint(configured, exc),
            temporary_dir=str(working),
        )
        self._degraded["state"] = f"{configured}: {reason(exc)}"
        return working

    def _open_ledger(self, path: Path) -> Ledger:
        """The ledger at ``path``, or one in memory (seeded from ``path``) when it fails.

        A file another process holds locked is waited for (:meth:`_await_ledger`); still
        locked, the daemon runs on a stand-in (:meth:`Ledger.stand_in`) that the loop
        moves into the file once the lock is gone (:meth:`_retry_ledger`). It does not
        fail the start: detection and enforcement go on meanwhile, and a systemd restart
        loop would leave the host unprotected over someone's open sqlite3 shell.

        First, a ledger lost in an earlier run (:data:`HELD_FILE`) is kept to; one lost
        at this start is recorded there anew."""
        self._held_from_earlier_run()
        problem: BaseException | None = None
        if "state" not in self._degraded:
            try:
                opened = self._await_ledger(path)
            except (sqlite3.Error, LedgerCorruptError, OSError) as exc:
                if is_busy(exc):
                    return self._stand_in(path)
                problem = exc
            else:
                opened.set_busy_timeout(LEDGER_RUN_BUSY_TIMEOUT)
                if opened.recovered_from is not None:  # the ledger logged it
                    self._keep_held(
                        f"{path} was unreadable and is moved to {opened.recovered_from}: the "
                        "bans it held are unknown",
                        lost=True,
                    )
                return opened
        ledger, unread = Ledger.in_memory_copy(path, self.clock)
        restored = len(ledger.open_bans())
        why = "state directory unusable"
        if problem is not None:
            why = "is a directory" if is_dir(path) else reason(problem)
        unknown = ""
        if unread is not None:
            unknown = ", and the bans it held are unknown" + (
                "" if unread == why else f" ({unread})"
            )
        self._keep_held(f"{path}: {why}; bans kept in memory only{unknown}", lost=bool(unknown))
        if problem is None:
            if restored:
                log.info("bans restored from the existing ledger", path=str(path), bans=restored)
            return ledger
        log.error(
            "decision ledger unusable; running degraded: bans are kept in memory only and "
            "lost on restart",
            path=str(path),
            reason=why,
            fix=fix_hint(path, problem, directory=path.parent),
            restored_bans=restored,
            **({"not_restored": unread} if unread else {}),
        )
        return ledger

    def _keep_held(self, why: str, *, lost: bool) -> None:
        """The ledger is not the whole truth this run (``why``): mark it degraded and make
        every reconcile of this run add only, so what the responders enforce is not lifted
        as unknown (:attr:`keeping_held`); ``lost``: the bans of a ledger file could not
        be restored (counted, :attr:`ledgers_lost`)."""
        self.keeping_held = why
        if lost:
            self.ledgers_lost += 1
            self._record_held(why)
        self._degraded["ledger"] = self._held_reason()

    def _held_reason(self) -> str:
        """``ledger``'s degraded reason while :attr:`keeping_held`: why, and until when."""
        until = KEEPING_HELD if self._held_recorded else KEEPING_HELD_RUN
        if self._held_unrecorded is not None:
            until += f" (not recorded for the next start: {self._held_unrecorded})"
        return f"{self.keeping_held}; {until}"

    def _record_held(self, why: str) -> None:
        """Record the loss in :data:`HELD_FILE`, so that the next starts keep what the
        responders enforce too (not where the state directory is unusable: nothing there
        outlives the run)."""
        if "state" in self._degraded:
            return
        path = self.state_dir / HELD_FILE
        try:
            record_held(self.state_dir, why, self.clock.now())
        except OSError as exc:
            self._held_unrecorded = reason(exc)
            log.error(  # noqa: TRY400 - the reason is the message
                "cannot record that the ledger was lost; a restart will lift what the "
                "responders hold beyond the new ledger",
                path=str(path),
                reason=reason(exc),
                fix=fix_hint(path, exc, directory=self.state_dir),
            )
            return
        self._held_recorded = True
        self._held_unrecorded = None

    def _held_from_earlier_run(self) -> None:
        """An earlier run lost its ledger (:data:`HELD_FILE`): this run keeps what the
        responders enforce too, until ``aisentinel ledger accept``."""
        if "state" in self._degraded:
            return
        earlier = recorded_held(self.state_dir)
        if earlier is None:
            return
        self._held_recorded = True
        self._keep_held(earlier, lost=False)
        log.warning(
            "the ledger of an earlier run was lost; keeping what the responders enforce "
            "(reconciles add, never lift)",
            lost=earlier,
            fix="check `aisentinel bans` and the firewalls, lift what should not stay "
            "(`aisentinel unban`), then `aisentinel ledger accept`",
        )

    def _await_ledger(self, path: Path) -> Ledger:
        """Open the ledger at ``path``, trying again for :data:`LEDGER_LOCK_WAIT` seconds
        with back-off while another process holds it locked; systemd hears between tries
        that the start goes on (its start timeout extended, the watchdog fed)."""
        deadline = self.clock.monotonic() + LEDGER_LOCK_WAIT
        delay = 0.25
        tries = 0
        while True:
            try:
                return Ledger(path, self.clock, busy_timeout=LEDGER_BUSY_TIMEOUT)
            except sqlite3.Error as exc:
                left = deadline - self.clock.monotonic()
                if not is_busy(exc) or left <= 0:
                    raise
                tries += 1
                if tries == 1:
                    log.warning(
                        "decision ledger locked by another process; waiting for it",
                        path=str(path),
                        up_to_seconds=LEDGER_LOCK_WAIT,
                        fix=f"fuser -v {path} (an open sqlite3 session holds it)",
                    )
                pause = min(delay, left)
                usec = int((pause + LEDGER_BUSY_TIMEOUT + 5.0) * 1_000_000)
                self.notifier.notify(f"EXTEND_TIMEOUT_USEC={usec}")
                self.notifier.watchdog()
                self.notifier.status("waiting for the decision ledger (locked by another process)")
                if self.clock.wait(self._stop, pause):
                    raise
                delay = min(delay * 2, 4.0)

    def _stand_in(self, path: Path) -> Ledger:
        """The in-memory stand-in for the ledger ``path`` another process holds locked."""
        ledger = Ledger.stand_in(path, self.clock)
        self._ledger_retry_at = self.clock.monotonic() + LEDGER_RETRY_SECONDS
        locked = (
            f"{path}: locked by another process; decisions kept in memory and written "
            "to it once it opens"
        )
        if ledger.unread is not None:  # still so once adopted: the engine never saw them
            self._keep_held(
                f"{path} was locked at start and the bans it held could not be read "
                f"({ledger.unread})",
                lost=True,
            )
        if self.keeping_held is not None:
            locked += "; " + self._held_reason()
        self._degraded["ledger"] = locked
        log.error(
            "decision ledger locked by another process; running degraded: decisions are "
            "kept in memory and written to the file once the lock is gone",
            path=str(path),
            waited_seconds=LEDGER_LOCK_WAIT,
            retry_every_seconds=LEDGER_RETRY_SECONDS,
            restored_bans=len(ledger.open_bans()),
            fix=f"fuser -v {path} (an open sqlite3 session holds it)",
        )
        return ledger

    def _retry_ledger(self, now_m: float, busy_timeout: float = 0.05) -> None:
        """A stand-in ledger: try the file again (every :data:`LEDGER_RETRY_SECONDS`)."""
        if self.ledger.standing_in_for is None or now_m < self._ledger_retry_at:
            return
        self._ledger_retry_at = now_m + LEDGER_RETRY_SECONDS
        try:
            adopted = self.ledger.adopt(busy_timeout)
        except (sqlite3.Error, LedgerCorruptError, OSError) as exc:
            self._ledger_retry_at = math.inf
            self._degraded["ledger"] = f"{self.ledger.standing_in_for}: {reason(exc)}"
            if self.keeping_held is not None:
                self._degraded["ledger"] += "; " + self._held_reason()
            log.error(  # noqa: TRY400 - the reason is the message
                "decision ledger unusable after its lock; bans are kept in memory only and "
                "lost on restart",
                path=str(self.ledger.standing_in_for),
                reason=reason(exc),
            )
            return
        if adopted:
            self.ledger.set_busy_timeout(LEDGER_RUN_BUSY_TIMEOUT)
            self._degraded.pop("ledger", None)
            if self.keeping_held is not None:
                self._degraded["ledger"] = self._held_reason()

    # ------------------------------------------------------------------ building

    def _build_responder(self, name: str, cfg: ResponderConfigBase) -> Responder:
        """The responder ``name`` built from ``cfg`` (enabled, or recorded to withdraw)."""
        return RESPONDERS.get(name).factory(
            cfg, clock=self.clock, commands=self.commands, state_dir=self.state_dir
        )

    def _build_responders(self, config: Config) -> list[Responder]:
        return [self._build_responder(n, cfg) for n, cfg in enabled_responders(config).items()]

    def _record_responders(self, config: Config) -> None:
        """Write which responders enforce now and which are still to be withdrawn
        (:data:`RESPONDERS_FILE`)."""
        with self._record_lock:
            path = self.state_dir / RESPONDERS_FILE
            try:
                write_responders_record(
                    self.state_dir, enabled_responders(config), self._withdrawing
                )
            except OSError as exc:
                log.warning(  # the ledger's directory: its own faults are reported already
                    "cannot record the responders in use; a restart without one of them will "
                    "not lift what it left in force",
                    path=str(path),
                    reason=reason(exc),
                )

    def _recorded_responders(self) -> tuple[dict[str, ResponderConfigBase], list[Withdrawal]]:
        """The responders :data:`RESPONDERS_FILE` records (:func:`recorded_responders`)."""
        return recorded_responders(self.state_dir)

    def _leftover_responders(self) -> list[Withdrawal]:
        """Responders of the previous run (:data:`RESPONDERS_FILE`) this config drops, and
        those whose withdrawal had not succeeded: their enforcements are to be lifted."""
        previous, pending = self._recorded_responders()
        gone = dropped_responders(previous, enabled_responders(self.config))
        return [Withdrawal(name, previous[name]) for name in sorted(gone)] + pending

    def _retire(self, withdrawals: list[Withdrawal], config: Config) -> None:
        """Add ``withdrawals`` to those pending; forget any that ``config`` enables again
        (the same responder owning the same backend object: it takes it over)."""
        enabled = {(n, cfg.owns()) for n, cfg in enabled_responders(config).items()}
        with self._record_lock:
            out: dict[tuple[str, str], Withdrawal] = {}
            for w in [*self._withdrawing, *withdrawals]:
                if w.key not in enabled:
                    out.setdefault(w.key, w)
            self._withdrawing = list(out.values())

    def _withdraw_pending(self, runner: ResponderRunner) -> None:
        """Hand ``runner`` every pending withdrawal, each built afresh from its config."""
        with self._record_lock:
            pending = list(self._withdrawing)
        for withdrawal in pending:
            try:
                responder = self._build_responder(withdrawal.name, withdrawal.config)
            except Exception:  # a broken plug-in must not stop the start
                log.exception(
                    "responder of the previous run could not be built", responder=withdrawal.name
                )
                continue
            runner.withdraw([responder], on_lifted=partial(self._withdrawn, withdrawal))

    def _withdrawn(self, withdrawal: Withdrawal, _responder: Responder) -> None:
        """The worker lifted ``withdrawal``'s enforcements: forget it (on the worker thread)."""
        with self._record_lock:
            self._withdrawing = [w for w in self._withdrawing if w.key != withdrawal.key]
        self._record_responders(self.config)

    def _build_runner(
        self, config: Config, previous: ResponderRunner | None = None
    ) -> ResponderRunner:
        """The responder worker (its thread starts with :meth:`run`); at a reload it goes
        on counting from ``previous``, the one it replaces."""
        runner = ResponderRunner(
            self._build_responders(config), self.clock, queue_size=config.daemon.responder_queue
        )
        runner.keep_held = self.keeping_held is not None
        if previous is not None:
            runner.carry_over(previous)
        return runner

    def _rebuild_runner(self, old: Config, new: Config) -> None:
        """At a reload that changes the responders: the old worker lifts the bans of
        those removed (back to dry-run), which would otherwise stay in the kernel while
        `aisentinel bans` and `unban` no longer see them, then a new worker takes over.

        Each removed responder is recorded first and forgotten only once its withdrawal
        succeeded; what the old worker could not lift goes on with the new one."""
        was = enabled_responders(old)
        gone = dropped_responders(was, enabled_responders(new))
        retired = [r for r in self.runner.responders if r.name in gone]
        withdrawals = [Withdrawal(r.name, was[r.name]) for r in retired]
        self._retire(withdrawals, new)
        self._record_responders(new)
        for responder, withdrawal in zip(retired, withdrawals, strict=True):
            self.runner.withdraw([responder], on_lifted=partial(self._withdrawn, withdrawal))
        wait = RELOAD_WITHDRAW_SECONDS if retired else RELOAD_FLUSH_SECONDS
        self.runner.flush(wait)
        self.runner.close(RELOAD_FLUSH_SECONDS)
        self.runner = self._build_runner(new, previous=self.runner)
        self._withdraw_pending(self.runner)
        # Started by the caller once the reconcile is queued: a worker started first runs
        # its first health check before it, on responders that have made nothing yet.

    def _build_source(self, cfg: SourceConfigBase) -> Source:
        return SOURCES.get(cfg.type).factory(cfg, clock=self.clock, state_dir=self.state_dir)

    def _emit(self, batch: Batch) -> None:
        # Blocks while the queue is full: sources wait instead of memory growing. A
        # source saves a position past a batch only once _process acknowledged it, so
        # what is queued is read again after a crash. At shutdown the loop keeps
        # draining until the sources have stopped (their stop() waits for the acks).
        # Once a stop is asked for, the source is told to hand on nothing more: what it
        # has not handed on stays unread (its saved position is before it) for the next
        # start.
        while True:
            try:
                self.queue.put(batch, timeout=0.5)
            except queue.Full:
                if self._closed.is_set():
                    items = self._count_dropped(batch)
                    log.error("pipeline closed; batch dropped", source=batch.source, items=items)  # noqa: TRY400
                    return
                continue
            if self._stop.is_set():
                source = self.sources.get(batch.source)
                if source is not None:
                    source.request_stop()
            return

    def _count_dropped(self, batch: Batch) -> int:
        """Count a batch the closing pipeline could not take in its source's stats;
        returns how many lines or records it held."""
        if isinstance(batch, EventBatch):
            items = len(batch.events) + batch.unparsed
        else:
            items = len(batch.lines)
        source = self.sources.get(batch.source)
        if source is not None:
            source.stats.lines_dropped += items
        return items

    # ------------------------------------------------------------------ hooks

    def _log_finding(self, finding: Finding) -> None:
        log.debug("finding", **finding_fields(finding))

    # ------------------------------------------------------------------ signals

    def request_stop(self) -> None:
        """Ask the loop to stop (thread-safe; not from a signal handler, see
        :meth:`_on_signal`)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to reload the config file (thread-safe; not from a signal
        handler)."""
        self._reload.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Note the signal; the loop acts on it (:meth:`_take_signals`) within a drain
        timeout (0.2 s).

        A Python signal handler runs in the main thread between two bytecodes: possibly
        while that thread holds an ``Event``'s lock (inside ``wait``, ``set`` or ``clear``)
        or runs another handler. ``Event.set()`` here would then wait forever for a lock
        its own thread holds: two SIGTERMs a few microseconds apart (``pkill`` of
        the daemon and of a wrapper that forwards the signal) left the daemon unable to
        stop. So the handler takes no lock: adding to a set is one atomic step.
        """
        self._signalled.add(signum)

    def _take_signals(self) -> None:
        """Act on the signals :meth:`_on_signal` noted: SIGHUP reloads, any other stops."""
        while self._signalled:
            signum = self._signalled.pop()
            if signum == signal.SIGHUP:
                self.request_reload()
            else:
                self.request_stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads. Main thread only."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    # ------------------------------------------------------------------ lifecycle

    def _start_exporter(self) -> None:
        cfg = self.started_with.exporter
        self.registry.register(self.exporter())
        self.registry.register(self.pipeline.latency)
        ProcessCollector(registry=self.registry)  # process_*: CPU, memory, fds, start time
        if not cfg.enabled:
            return
        web = self.started_with.web
        if cfg.listen not in ("127.0.0.1", "::1") and (web is None or not web.users):
            log.warning(
                "metrics endpoint is reachable beyond loopback without basic auth; protect it "
                "with [exporter] web_config (TLS + basic_auth_users) or a firewall",
                listen=cfg.listen,
            )
        if not self._bind_exporter():
            threading.Thread(
                target=self._retry_exporter, name="aisentinel-exporter-retry", daemon=True
            ).start()

    def _bind_exporter(self) -> bool:
        """Listen on the metrics port; False (daemon degraded, said once) when it cannot."""
        cfg, web = self.started_with.exporter, self.started_with.web
        try:
            httpd = serve_metrics(cfg.listen, cfg.port, self.registry, self._landing, web)
        except OSError as exc:
            if "exporter" not in self._degraded:
                log.error(  # noqa: TRY400 - the reason is the message; a traceback adds nothing
                    "metrics endpoint cannot listen; detection goes on, retrying every "
                    f"{self.exporter_retry_seconds:g} s",
                    listen=cfg.listen,
                    port=cfg.port,
                    reason=reason(exc),
                    fix=port_hint(cfg.listen, cfg.port, exc),
                )
            self._degraded["exporter"] = f"cannot listen on {cfg.listen}:{cfg.port}: {reason(exc)}"
            return False
        # Serving already: the flag goes first, so no scrape after the port is published
        # (metrics_port) still reads the exporter degraded.
        self._degraded.pop("exporter", None)
        self._httpd = httpd
        self.metrics_port = int(httpd.server_port)
        host = f"[{cfg.listen}]" if ":" in cfg.listen else cfg.listen
        scheme = "https" if web is not None and web.tls is not None else "http"
        log.info(
            "metrics endpoint up",
            url=f"{scheme}://{host}:{self.metrics_port}/metrics",
            protection=web.describe() if web is not None else "plain HTTP",
        )
        return True

    def _retry_exporter(self) -> None:
        while not self._stop.wait(self.exporter_retry_seconds):
            if self._bind_exporter():
                if self._stop.is_set():  # bound while stopping: shutdown may have missed it
                    self._httpd.shutdown()
                    self._httpd.server_close()
                return

    def _landing(self) -> Landing:
        """The metrics landing page's numbers, read as the exporter reads them."""
        names = [cfg.name for cfg in self.config.sources]
        up = sum(1 for n in names if (s := self.sources.get(n)) is not None and s.stats.up)
        return Landing(
            version=__version__,
            sources_up=up,
            sources_total=len(names),
            bans_active=int(self.engine.counters().active_bans),
            degraded=tuple(sorted(self.degraded)),
        )

    def exporter(self) -> Exporter:
        """The metrics collector: the stages' own collectors and the daemon's values."""
        values = DaemonValues(
            heartbeat=lambda: self.last_heartbeat,
            reloads=lambda: dict(self.reloads),
            queue_depth=self.queue.qsize,
            degraded=lambda: self.degraded,
            ledgers_lost=lambda: self.ledgers_lost,
            keeping_held=lambda: self.keeping_held is not None,
            decisions_summarised=lambda: self.decision_log.summarised,
            sources_configured=lambda: len(self.config.sources),
        )
        return Exporter(self._stage_collectors, values, self.clock)

    def _stage_collectors(self) -> list[tuple[str, Collecting]]:
        """Every stage collector now, with its ``collector`` label (read at scrape time)."""
        pipeline = self.pipeline
        out: list[tuple[str, Collecting]] = []
        sources = dict(self.sources)
        for cfg in self.config.sources:
            source = sources.get(cfg.name)
            out.append((f"source:{cfg.name}", source or UnstartedSource(cfg.name)))
        out.append(("pipeline", pipeline))
        out.extend((f"detector:{d.name}", d) for d in list(pipeline.detectors))
        engine = self.engine
        out.append(("decisions", DecisionMetrics(engine.counters)))
        runner = self.runner
        out.append(("responders", runner))  # the worker's own collect()
        return out

    def _start_sources(self) -> None:
        for cfg in self.config.sources:
            self._start_source(cfg)

    def _start_source(self, cfg: SourceConfigBase, carried: Source | None = None) -> None:
        """Start a source; ``carried``: the one it replaces at a reload (its counters go
        on from there, as the pipeline's of that source name do)."""
        self.pipeline.sources.setdefault(cfg.name, SourceCounters())  # exported from the start
        try:
            source = self._build_source(cfg)
            source.acks = True  # its saved position moves only past what _process did
            if carried is not None:
                source.carry_over(carried)
            source.start(self._emit)
        except Exception:  # a broken source must not take the others down
            log.exception("source failed to start", source=cfg.name)
            return
        self.sources[cfg.name] = source
        parser = getattr(cfg, "parser", None)  # an event source names none
        log.info("source started", source=cfg.name, type=cfg.type, parser=parser)

    def _start_audit(self) -> None:
        from aisentinel.audit.scheduler import AuditScheduler  # noqa: PLC0415 - only if enabled

        try:
            facts = audit_facts(self.config) | {"enforcement": self._audit_enforcement}
            self.audit = AuditScheduler(self.config.audit, **facts, clock=self.clock)
            self.registry.register(self.audit.collector)
            self.audit.start()
        except Exception:
            log.exception("audit scheduler failed to start")
            self.audit = None

    def _audit_enforcement(self) -> tuple[str | None, str]:
        """aisentinel's own banning as each scheduled audit counts it: the ban
        responders of the config in force that the responder worker runs and has not
        found unhealthy (see :func:`live_enforcement`)."""
        runner = self.runner
        return live_enforcement(self.config, {st.name: st.health for st in runner.stats()})

    def _start_control(self) -> None:
        path = self.config.daemon.control_socket
        if path is None:
            return
        server = ControlServer(path, {"status": lambda _args: snapshot(self)})
        for name, handler in (
            AdminCommands(lambda: self.engine, lambda: self.runner).handlers().items()
        ):
            server.register_with_peer(name, handler)
        server.register_with_peer("ledger_accept", self._accept_ledger)
        try:
            server.start()
        except ControlError as exc:
            log.error("control socket unavailable; running without it", reason=str(exc))  # noqa: TRY400
            self._degraded["control"] = (
                f"control socket unavailable ({exc}): `aisentinel status`, `bans`, `ban`, "
                "`unban` and `allow` cannot reach the daemon; fix the path and restart"
            )
            return
        self.control = server

    def _accept_ledger(self, _args: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
        """``aisentinel ledger accept``: the ledger is the whole truth again. Removes
        :data:`HELD_FILE` and has the loop reconcile exactly at once, lifting what the
        responders hold beyond the ledger's bans (control thread)."""
        if self.keeping_held is None:
            return {"accepted": False}
        if self.ledger.in_memory:
            raise CommandError(
                f"refused: the ledger is in memory ({self.degraded.get('ledger', '?')}); "
                "fix it and restart aisentinel first"
            )
        path = self.state_dir / HELD_FILE
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise CommandError(f"refused: cannot remove {path}: {reason(exc)}") from None
        was = self.keeping_held
        self.keeping_held = None
        self._held_recorded = False
        self._held_unrecorded = None
        self._degraded.pop("ledger", None)
        self._reconcile_now.set()
        bans = len(self.engine.active())
        log.warning(
            "ledger accepted as the whole truth; reconciling exactly: what the responders "
            "enforce beyond its bans is lifted",
            who=peer.who,
            bans=bans,
            was=was,
        )
        return {"accepted": True, "bans": bans}

    def run(self) -> int:
        """Start everything, loop until stopped, flush, return the exit status."""
        self.started_at = self.clock.now()
        log.info("aisentinel starting", version=__version__, config=self.config.path)
        if self._run_lock is None:  # built in-process, not by `aisentinel run`
            refused, self._run_lock = lock_state_dir(self.state_dir)
            if refused:
                self._give_up_start()
                return START_REFUSED
        # Recorded before the withdrawals are tried; each leaves the file once it succeeded.
        self._retire(self._leftover_responders(), self.config)
        self._record_responders(self.config)
        self._withdraw_pending(self.runner)  # first, before the reconcile below
        active = self.engine.active()
        self.runner.reconcile(active)  # adding only when keeping_held: see _keep_held
        self.runner.start()
        log.info(
            "decisions restored",
            active_bans=len(active),
            reconcile="adding only" if self.keeping_held is not None else "exact",
        )
        self._start_exporter()
        self._start_sources()
        self._await_sources()
        self._start_control()
        if self.config.audit.enabled:
            self._start_audit()
        self.notifier.ready()
        log.info(  # after _await_sources: what is written to a followed log from now is read
            "aisentinel ready",
            sources_up=sum(1 for s in self.sources.values() if s.stats.up),
            sources=len(self.sources),
        )
        self.started.set()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _give_up_start(self) -> None:
        """Close what ``__init__`` opened when :meth:`run` refuses to start: no source
        was started, no responder called, no control socket or metrics port bound."""
        self.runner.close(timeout=0.1)
        self.ledger.close()

    def _await_sources(self) -> None:
        """Wait (at most ``SOURCE_READY_TURNS`` x 10 ms) until every source has looked at
        what it follows, so READY means "followed": a log written right after READY is
        read whole, not skipped as if it had been there before the start."""
        for _ in range(SOURCE_READY_TURNS):
            if all(source.ready() for source in list(self.sources.values())):
                return
            self._take_signals()
            if self._stop.wait(0.01):
                return
        slow = sorted(n for n, s in self.sources.items() if not s.ready())
        log.warning("sources not ready at start; going on", sources=slow)

    def _heartbeat_every(self) -> float:
        every = self.config.daemon.heartbeat_interval
        wd = self.notifier.watchdog_interval()
        if wd is not None:
            every = min(every, wd)  # already half of WatchdogSec
        return max(every, 0.05)

    def _beat_if_due(self) -> None:
        """Send the heartbeat when it is due: between two batches too, so a long series
        of slow batches (a ledger write waiting on a lock each) never starves systemd's
        watchdog."""
        now_m = self.clock.monotonic()
        if now_m >= self._next_beat:
            self._heartbeat()
            self._next_beat = now_m + self._heartbeat_every()

    def _loop(self) -> None:
        clock = self.clock
        self._next_beat = clock.monotonic()
        next_expire = self._next_beat + self.config.daemon.expire_interval
        next_reconcile = self._next_beat + self.config.daemon.reconcile_interval
        while not self._stop.is_set():
            self._beat_if_due()  # first, so STATUS= is there from READY on
            self._drain(timeout=0.2)
            self._take_signals()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            now_m = clock.monotonic()
            if now_m >= next_expire:
                self.pipeline.expire(clock.now())
                self._retry_ledger(now_m)
                self.decision_log.flush(now_m)
                self.trimmer.trim(sum(c.lines for c in self.pipeline.sources.values()))
                next_expire = now_m + self.config.daemon.expire_interval
            if self._reconcile_now.is_set():  # `aisentinel ledger accept`
                self._reconcile_now.clear()
                self.runner.keep_held = self.keeping_held is not None
                next_reconcile = now_m
            if self.runner.resync_wanted():  # a full queue dropped something: restore it
                next_reconcile = now_m
            if now_m >= next_reconcile:
                # The ledger is the truth: repair flushed rulesets, drop unknown bans.
                self.runner.reconcile(self.engine.active())
                next_reconcile = now_m + self.config.daemon.reconcile_interval

    def _drain(self, timeout: float) -> int:
        """Process up to :data:`DRAIN_BATCHES` queued batches (waiting ``timeout`` for
        the first); after each, the heartbeat when due and the signals: a stop or reload
        asked for ends the turn."""
        try:
            batch = self.queue.get(timeout=timeout)
        except queue.Empty:
            return 0
        done = 0
        while True:
            self._process(batch)
            done += 1
            self._beat_if_due()
            self._take_signals()
            if done >= DRAIN_BATCHES or self._stop.is_set() or self._reload.is_set():
                return done
            try:
                batch = self.queue.get_nowait()
            except queue.Empty:
                return done

    def _process(self, batch: Batch) -> None:
        """Run ``batch`` through the pipeline, then acknowledge it to its source: only
        now may the source's saved position move past it (at-least-once delivery)."""
        self.pipeline.process(batch)
        if batch.seq:
            source = self.sources.get(batch.source)
            if source is not None:
                source.ack(batch.seq)

    def status_line(self) -> str:
        """A one-line summary for systemd's STATUS=."""
        lines = sum(c.lines for c in self.pipeline.sources.values())
        findings = sum(self.pipeline.findings.values())
        up = sum(1 for s in self.sources.values() if s.stats.up)
        line = (
            f"{lines} lines, {findings} findings, {len(self.engine.active())} active bans, "
            f"{up}/{len(self.config.sources)} sources up"
        )
        degraded = self.degraded
        if degraded:
            line += f"; DEGRADED: {', '.join(sorted(degraded))} (see the log)"
        return line

    def _heartbeat(self) -> None:
        self.last_heartbeat = self.clock.now()
        self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def reload(self) -> bool:
        """Re-read the config file; keep bans and unchanged sources/detectors. False if refused."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload refused: bad config", issue=str(issue))  # noqa: TRY400
            self.reloads["failed"] += 1
            self.notifier.ready()
            return False
        except Exception:  # a fault in loading must never stop the running daemon
            log.exception("reload refused: the config could not be loaded")
            self.reloads["failed"] += 1
            self.notifier.ready()
            return False
        old = self.config
        self._reload_sources(old, new)
        detectors = self._reload_detectors(new)
        self.engine.reconfigure(new.decisions, new.parsers.trusted_proxies)
        if new.responders != old.responders or (
            new.daemon.responder_queue != old.daemon.responder_queue
        ):
            self._rebuild_runner(old, new)
        try:
            self.runner.reconcile(self.engine.active())
        finally:
            self.runner.start()  # a new worker (see _rebuild_runner); else already running
        self.pipeline.reconfigure(
            detectors=detectors,
            engine=self.engine,
            runner=self.runner,
            parsers_config=new.parsers,
        )
        if new.daemon.log_level != old.daemon.log_level:
            self._set_log_level(new.daemon.log_level)
        self._warn_restart_only(new)
        for note in new.deprecations:  # as at start: a value adjusted, named with its key
            log.warning("config: valid but risky", warning=note)
        self.reloads["ok"] += 1
        log.info("config reloaded", config=new.path, active_bans=len(self.engine.active()))
        self.notifier.ready()
        return True

    def _reload_sources(self, old: Config, new: Config) -> None:
        """Restart the sources whose table changed (judged afresh: another parser or
        files), stop the removed ones, start the new ones; one removed at an earlier
        reload goes on counting where it stopped. Sets :attr:`config` to ``new``."""
        old_src = {s.name: s for s in old.sources}
        new_src = {s.name: s for s in new.sources}
        changed = [n for n, c in old_src.items() if new_src.get(n) != c and n in self.sources]
        rebuilt = dict(self._stop_sources_draining(changed))
        for name in old_src:
            if name not in new_src:  # its series go with it, and come back where they were
                gone = rebuilt.pop(name, None), self.pipeline.sources.pop(name, None)
                self._removed.sources[name] = gone
                self.pipeline.judge_afresh(name)  # its parsers, and the problems they saw
        self.config = new
        self.pipeline.set_zones(source_zones(new.sources))
        for name, cfg in new_src.items():
            if name in changed:
                self.pipeline.judge_afresh(name)  # another parser or files: judged anew
            if name not in self.sources:
                carried, counters = self._removed.sources.pop(name, (rebuilt.get(name), None))
                if counters is not None:
                    counters.recognitions.clear()
                    self.pipeline.sources[name] = counters
                self._start_source(cfg, carried)

    def _reload_detectors(self, new: Config) -> list[Detector]:
        """The detectors of ``new``: those whose table did not change kept (their windows
        too), the others rebuilt going on counting where their predecessor of the same
        name stopped, also one removed at an earlier reload."""
        previous = {d.name: d for d in self.pipeline.detectors}
        detectors = []
        for built in build_detectors(new.detectors, shared=self.pipeline.shared):
            was = previous.pop(built.name, None)
            if was is not None and was.config == built.config:
                detectors.append(was)
                continue
            if was is None:
                was = self._removed.detectors.pop(built.name, None)
            if was is not None:
                built.carry_over(was)
            detectors.append(built)
        self._removed.detectors.update(previous)  # removed: counted on if added again
        return detectors

    def _warn_restart_only(self, new: Config) -> None:
        """One warning per key a reload does not apply whose value in the file is not
        the one running (the running one: as the daemon started), naming both; at each
        reload while they differ."""
        running = self.started_with
        for table, key in RESTART_ONLY:
            was = getattr(getattr(running, table), key)
            now = getattr(getattr(new, table), key)
            if was != now:
                log.warning(
                    "setting changes on restart only",
                    key=f"{table}.{key}",
                    running=str(was),
                    in_file=str(now),
                )
        if new.web != running.web and new.exporter.web_config == running.exporter.web_config:
            log.warning(
                "setting changes on restart only",
                key="exporter.web_config",
                running="the file's content at start",
                in_file=f"{new.exporter.web_config} changed",
            )

    def _set_log_level(self, level: str) -> None:
        """Apply a reloaded ``[daemon] log_level``: the filter, and the findings hook
        that only debug logs."""
        from aisentinel.logsetup import set_level  # noqa: PLC0415 - reload only

        set_level(level)
        self.pipeline.on_finding = self._log_finding if level == "debug" else None
        log.warning("log level changed", level=level)

    def _stop_sources_draining(self, names: list[str]) -> list[tuple[str, Source]]:
        """Stop the sources ``names`` (at a reload), all at once, while this thread, the
        only one draining the queue, keeps draining it and sending heartbeats: a reader
        may be waiting to put a batch on the full queue, and each stop() waits until
        what it handed on is processed. Their saved positions are then past processed
        lines only. The stopped sources, removed from :attr:`sources` once stopped (the
        acknowledgements find them there meanwhile)."""
        stopping = [(name, self.sources[name]) for name in names]
        if not stopping:
            return stopping
        for _name, source in stopping:
            source.request_stop()  # each stops at its next batch boundary

        def stop() -> None:
            for name, source in stopping:
                try:
                    source.stop()
                except Exception:
                    log.exception("source failed to stop cleanly", source=name)

        stopper = threading.Thread(target=stop, name="stop-sources-reload")
        stopper.start()
        while stopper.is_alive():  # bounded: stop() joins and waits for acks with timeouts
            self._drain(timeout=0.05)
            self._beat_if_due()
        for name in names:
            del self.sources[name]
        return stopping

    def _stop_sources(self) -> None:
        for source in list(self.sources.values()):
            try:
                source.stop()
            except Exception:
                log.exception("source failed to stop cleanly", source=source.name)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("aisentinel stopping")
        if self.control is not None:
            self.control.stop()
        for source in list(self.sources.values()):
            source.request_stop()  # all at once: each stops at its next batch boundary
        stopper = threading.Thread(target=self._stop_sources, name="stop-sources")
        stop_started = time.monotonic()  # real time, as systemd's stop timeout
        stopper.start()
        # One batch at a time, so the deadline holds however slow the pipeline is.
        deadline = self.clock.monotonic() + STOP_DRAIN_SECONDS
        while self.clock.monotonic() < deadline:
            try:
                batch = self.queue.get(timeout=0.05)
            except queue.Empty:
                if not stopper.is_alive():
                    break
                continue
            self._process(batch)
        self._closed.set()
        for source in list(self.sources.values()):
            source.acks_end()  # nothing more is processed: stop() waits no longer
        self.decision_log.flush(force=True)
        stopper.join(timeout=STOP_DRAIN_SECONDS)
        left = 0
        while True:
            try:
                left += self._count_dropped(self.queue.get_nowait())
            except queue.Empty:
                break
        if left:
            log.error(
                "stopped before every line read was processed; their sources' saved "
                "positions are before them: they are read again at the next start",
                lines=left,
                seconds=STOP_DRAIN_SECONDS,
            )
        if self.audit is not None:
            self.audit.shutdown()
        # Whatever the pipeline decided last is handed on, within the stop budget
        # (systemd's TimeoutStopSec; SIGTERM must finish in under 5 s).
        budget = STOP_BUDGET_SECONDS - (time.monotonic() - stop_started)
        if not self.runner.flush(max(0.1, budget - 0.5)):
            log.warning("responder queue not flushed before exit", queued=self.runner.queued()[0])
        self.runner.close(timeout=0.3)
        self._ledger_retry_at = 0.0
        self._retry_ledger(0.0, busy_timeout=0.5)  # a stand-in's last chance
        if self.ledger.standing_in_for is not None:
            log.error(
                "decision ledger still locked at stop; the decisions of this run are lost",
                path=str(self.ledger.standing_in_for),
            )
        self.engine.mark_seen()  # a start on a clock stepped back measures the step from it
        self.ledger.set_busy_timeout(LEDGER_CLOSE_BUSY_TIMEOUT)  # the backlog's last chance
        self.ledger.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        log.info("aisentinel stopped", lines=sum(c.lines for c in self.pipeline.sources.values()))
        release_lock(self._run_lock)
        self._run_lock = None
