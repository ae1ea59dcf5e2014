"""The daemon end to end: files in, bans and metrics out, restart and reload safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from conftest import PROMPT_ATTACKS, nginx_line, ssh_fail, wait_for
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from aisentinel import daemon as daemon_module
from aisentinel.audit.checks import CHECKS
from aisentinel.audit.model import Status
from aisentinel.audit.scheduler import AuditScheduler
from aisentinel.cli import main
from aisentinel.clock import FakeClock
from aisentinel.commands import FakeRunner
from aisentinel.config import Config, load_config
from aisentinel.control import request
from aisentinel.daemon import Daemon
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import (
    Action,
    Decision,
    EventBatch,
    Finding,
    LineBatch,
    Severity,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.sdnotify import Notifier
from aisentinel.sources.file import SAVE_INTERVAL, FileSource

CONFIG = """
[daemon]
state_dir = "{state}"
log_format = "json"
heartbeat_interval = "200ms"
expire_interval = "1s"
control_socket = ""

[exporter]
port = 0

[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{logs}/auth.log"]

[[sources]]
name = "web"
type = "file"
parser = "nginx"
paths = ["{logs}/access.log"]

[detectors.ssh_bruteforce]
threshold = {threshold}
"""


def _write_config(tmp: Path, threshold: int = 5) -> Path:
    path = tmp / "aisentinel.toml"
    path.write_text(CONFIG.format(state=tmp / "state", logs=tmp / "logs", threshold=threshold))
    return path


class Running:
    """A daemon running in a background thread."""

    def __init__(self, path: Path) -> None:
        self.config: Config = load_config(path)
        self.daemon = Daemon(self.config, config_path=path)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        assert self.daemon.started.wait(10)

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.daemon.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def active(self) -> set[str]:
        return {d.target.text for d in self.daemon.engine.active() if d.target}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A log directory (created empty: the files appear later)."""
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def running(tmp_path: Path, logs: Path) -> Iterator[Running]:
    """A daemon on two not-yet-existing log files."""
    r = Running(_write_config(tmp_path))
    yield r
    if r.thread.is_alive():
        r.stop()


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def _metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise AssertionError(f"{prefix!r} not in scrape")


def test_log_appearing_later_is_followed_and_attack_banned(
    running: Running, logs: Path, now_epoch: float
) -> None:
    """A log created after start is picked up, and 6 failures ban the attacker (dry-run)."""
    _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.10") for i in range(6)])
    assert wait_for(lambda: "198.51.100.10" in running.active(), timeout=15)
    text = running.scrape()
    assert _metric(text, "aisentinel_source_lines_read_total", 'source="auth"') == 6
    assert _metric(text, "aisentinel_source_lines_parsed_total", 'source="auth"') == 6
    assert _metric(text, "aisentinel_decisions_active") == 1
    assert (
        _metric(text, "aisentinel_findings_total", 'detector="ssh_bruteforce",severity="high"') == 1
    )
    assert _metric(text, "aisentinel_pipeline_latency_seconds_count") >= 1
    assert "198.51.100.10" not in text  # no per-address labels


def test_auto_parser_on_a_live_file_source(tmp_path: Path, logs: Path, now_epoch: float) -> None:
    """parser = "auto" on a file source runs: the format is sniffed and the attack banned."""
    path = _write_config(tmp_path)
    path.write_text(path.read_text().replace('parser = "sshd"', 'parser = "auto"'))
    r = Running(path)
    try:
        _append(logs / "auth.log", ["not a log line"])
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.11") for i in range(6)])
        assert wait_for(lambda: "198.51.100.11" in r.active(), timeout=15)
        text = r.scrape()
        assert _metric(text, "aisentinel_source_lines_read_total", 'source="auth"') == 7
        assert _metric(text, "aisentinel_source_lines_parsed_total", 'source="auth"') == 6
        assert _metric(text, "aisentinel_source_lines_unparsed_total", 'source="auth"') == 1
        assert r.thread.is_alive()
    finally:
        r.stop()


def test_prompt_attacks_in_lines_over_the_cap_are_banned_live(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """An nginx-json source whose lines (prompt bodies of ~1.1 MB) pass the 1 MiB cap: the
    lines are cut, counted in aisentinel_source_lines_truncated_total, still parsed, and
    the injection prompts in them get their client banned."""
    path = _write_config(tmp_path)
    path.write_text(path.read_text().replace('parser = "nginx"', 'parser = "nginx-json"'))
    filler = "Lorem ipsum dolor sit amet. " * 40_000
    lines = []
    for i in range(6):
        content = f"{PROMPT_ATTACKS[i]} {filler}"
        body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": content}]})
        record = {
            "time": f"{now_epoch + i:.3f}",
            "remote_addr": "198.51.100.12",
            "request_method": "POST",
            "request_uri": "/v1/chat/completions",
            "status": "200",
            "request_body": body,
        }
        lines.append(json.dumps(record))
    r = Running(path)
    try:
        _append(logs / "access.log", lines)
        assert wait_for(lambda: "198.51.100.12" in r.active(), timeout=20)
        # The ban may come before the last lines are read: wait for all six.
        parsed = 'source="web"'
        assert wait_for(
            lambda: _metric(r.scrape(), "aisentinel_source_lines_parsed_total", parsed) == 6,
            timeout=20,
        )
        text = r.scrape()
        assert _metric(text, "aisentinel_source_lines_truncated_total", 'source="web"') == 6
        assert _metric(text, "aisentinel_source_lines_parsed_total", 'source="web"') == 6
    finally:
        r.stop()


def test_batch_the_closed_pipeline_cannot_take_is_counted_per_source(tmp_path: Path) -> None:
    """A batch handed on after the pipeline closed (queue full) is counted as dropped lines
    of its source, and exported."""
    daemon = Daemon(load_config(_write_config(tmp_path)))
    try:
        auth = daemon.config.sources[0]
        daemon.sources[auth.name] = daemon._build_source(auth)
        while not daemon.queue.full():
            daemon.queue.put(LineBatch("web", "nginx", ["x"], 0.0))
        daemon._closed.set()
        daemon._emit(LineBatch(auth.name, "sshd", ["a", "b"], 0.0))
        daemon._emit(EventBatch(auth.name, [], 0.0, unparsed=3))
        assert daemon.sources[auth.name].stats.lines_dropped == 5
        families = {m.name: m for m in daemon.exporter().collect()}
        samples = families["aisentinel_source_lines_dropped"].samples
        assert [(s.labels["source"], s.value) for s in samples if s.name.endswith("_total")] == [
            ("auth", 5.0)
        ]
    finally:
        daemon.ledger.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_real_scrape_passes_promtool(running: Running, logs: Path, now_epoch: float) -> None:
    """A real scrape, audit results included, passes `promtool check metrics`."""
    _append(logs / "access.log", [nginx_line(now_epoch, "203.0.113.4", "/api/tags", 200)])
    _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.11") for i in range(6)])
    assert wait_for(lambda: "198.51.100.11" in running.active(), timeout=15)
    assert wait_for(
        lambda: "aisentinel_audit_last_run_timestamp_seconds" in running.scrape(), timeout=20
    )
    text = running.scrape()
    assert 'aisentinel_audit_check_status{check="firewall.default-deny"' in text
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_restart_keeps_bans_and_neither_replays_nor_misses(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """After a restart bans stay, old lines are not re-read, lines written while down are."""
    path = _write_config(tmp_path)
    first = Running(path)
    _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.20") for i in range(6)])
    assert wait_for(lambda: "198.51.100.20" in first.active(), timeout=15)
    first.stop()
    _append(logs / "auth.log", [ssh_fail(now_epoch + 10 + i, "198.51.100.21") for i in range(6)])
    second = Running(path)
    try:
        assert "198.51.100.20" in second.active()
        assert wait_for(lambda: "198.51.100.21" in second.active(), timeout=15)
        assert wait_for(
            lambda: (
                second.daemon.pipeline.sources.get("auth") is not None
                and second.daemon.pipeline.sources["auth"].lines == 6
            )
        )
    finally:
        second.stop()


def test_reload_applies_new_config_and_keeps_bans(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """SIGHUP-style reload keeps active bans and applies a new threshold; a bad file is refused."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.30") for i in range(6)])
        assert wait_for(lambda: "198.51.100.30" in r.active(), timeout=15)
        path.write_text(path.read_text().replace("threshold = 5", "threshold = 2"))
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["ok"] == 1)
        assert "198.51.100.30" in r.active()
        _append(
            logs / "auth.log", [ssh_fail(now_epoch + 20 + i, "198.51.100.31") for i in range(2)]
        )
        assert wait_for(lambda: "198.51.100.31" in r.active(), timeout=15)
        path.write_text("[daemon]\nbogus = 1\n")
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["failed"] == 1)
        assert r.daemon.config.detectors["ssh_bruteforce"].threshold == 2  # type: ignore[attr-defined]
    finally:
        r.stop()


def test_reload_that_trusts_a_proxy_allows_it_and_lifts_its_ban(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """The daemon's engine allowlists `[parsers] trusted_proxies`, at a reload too: a
    proxy named there is no longer banned."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.35") for i in range(6)])
        assert wait_for(lambda: "198.51.100.35" in r.active(), timeout=15)
        path.write_text(path.read_text() + '[parsers]\ntrusted_proxies = ["198.51.100.35/32"]\n')
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["ok"] == 1)
        assert wait_for(lambda: "198.51.100.35" not in r.active(), timeout=15)
    finally:
        r.stop()


def test_unban_on_the_control_socket_lets_the_next_attack_be_banned_again(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """`aisentinel unban` through the running daemon's socket lifts the ban, and the
    address's next brute force is banned again at once (not quiet until the lifted
    ban's end); `aisentinel bans` lists it again."""
    path = _write_config(tmp_path)
    sock_dir = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))  # a socket path is short
    sock = sock_dir / "c.sock"
    path.write_text(path.read_text().replace('control_socket = ""', f'control_socket = "{sock}"'))
    r = Running(path)
    attacker = "198.51.100.40"
    try:
        _append(logs / "auth.log", [ssh_fail(now_epoch - 700 + i, attacker) for i in range(6)])
        assert wait_for(lambda: attacker in r.active(), timeout=15)
        assert main(["unban", attacker, "--socket", str(sock)]) == 0
        assert attacker not in r.active()
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, attacker) for i in range(6)])
        assert wait_for(lambda: attacker in r.active(), timeout=15)
        assert request(sock, "bans")["bans"][0]["target"] == attacker
    finally:
        r.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_a_file_at_the_control_socket_path_is_degraded_and_status_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A regular file where the control socket goes: the daemon runs degraded
    (component control, in the metrics), and `aisentinel status` says the path is not
    a socket (exit 2) rather than that no daemon runs (exit 3)."""
    path = _write_config(tmp_path)
    sock_dir = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    sock = sock_dir / "c.sock"
    sock.write_text("not a socket")
    path.write_text(path.read_text().replace('control_socket = ""', f'control_socket = "{sock}"'))
    r = Running(path)
    try:
        assert "control socket unavailable" in r.daemon.degraded["control"]
        assert 'aisentinel_degraded{component="control"} 1.0' in r.scrape()
        assert main(["status", "--socket", str(sock)]) == 2
        assert "is not a socket" in capsys.readouterr().err
        assert sock.read_text() == "not a socket"
    finally:
        r.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_reload_to_an_out_of_range_threshold_is_refused_and_old_config_works(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """A reload to threshold = 99999999999999999999 is refused; the daemon lives on, old rules."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        path.write_text(path.read_text().replace("threshold = 5", "threshold = " + "9" * 20))
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["failed"] == 1)
        assert r.daemon.reloads["ok"] == 0
        assert r.daemon.config.detectors["ssh_bruteforce"].threshold == 5  # type: ignore[attr-defined]
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.32") for i in range(6)])
        assert wait_for(lambda: "198.51.100.32" in r.active(), timeout=15)
        assert r.thread.is_alive()
    finally:
        r.stop()


GOLDEN = Path(__file__).parent / "fixtures" / "metrics.golden"


def _shape(text: str) -> list[str]:
    """Metric families and label names of a scrape, without values (stable across runs)."""
    out = set()
    for line in text.splitlines():
        if line.startswith(("# HELP", "# TYPE")):
            out.add(line)
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = sorted(p.split("=")[0] for p in rest.split("}")[0].split(",") if "=" in p)
            out.add(f"{name.split(' ')[0]} {','.join(labels)}")
    return sorted(out)


def test_metrics_match_the_golden_list(running: Running, logs: Path, now_epoch: float) -> None:
    """Metric names, types, help texts and label sets match tests/fixtures/metrics.golden."""
    _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.12") for i in range(6)])
    assert wait_for(lambda: "198.51.100.12" in running.active(), timeout=15)
    assert wait_for(
        lambda: "aisentinel_audit_last_run_timestamp_seconds" in running.scrape(), timeout=20
    )
    shape = _shape(running.scrape())
    if os.environ.get("AISENTINEL_UPDATE_GOLDEN"):
        GOLDEN.write_text("\n".join(shape) + "\n")
    expected = GOLDEN.read_text().splitlines()
    assert shape == expected, "metrics changed: review, then AISENTINEL_UPDATE_GOLDEN=1 pytest"


def test_ready_waits_for_the_sources_first_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY (and ``started``) come only once every source has looked at its logs, so a
    log written right after READY is read whole instead of being taken as old."""
    looked = threading.Event()
    monkeypatch.setattr(FileSource, "ready", lambda _self: looked.is_set())
    (tmp_path / "logs").mkdir()
    daemon = Daemon(load_config(_write_config(tmp_path)))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert not daemon.started.wait(0.5)
        looked.set()
        assert daemon.started.wait(10)
    finally:
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()


class _NoSetFromHandler(threading.Event):
    """An Event whose ``set`` fails while ``armed``: a signal handler must not call it."""

    armed = True

    def set(self) -> None:
        if self.armed:
            raise AssertionError("Event.set() from a signal handler can deadlock the loop")
        super().set()


def test_signal_handler_takes_no_lock_and_the_loop_acts_on_the_signal(tmp_path: Path) -> None:
    """SIGTERM and SIGHUP handlers only note the signal (an Event's set() takes a lock the
    interrupted main thread may hold: two SIGTERMs microseconds apart hung the daemon);
    the running loop then reloads and stops."""
    (tmp_path / "logs").mkdir()
    daemon = Daemon(load_config(_write_config(tmp_path)))
    stop, reload = _NoSetFromHandler(), _NoSetFromHandler()
    daemon._stop, daemon._reload = stop, reload
    daemon._on_signal(signal.SIGHUP, None)
    daemon._on_signal(signal.SIGTERM, None)
    daemon._on_signal(signal.SIGTERM, None)
    assert not stop.is_set()
    stop.armed = reload.armed = False
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()  # the loop took the noted SIGTERM and stopped
    assert stop.is_set()


NFT = ("nft", "-j", "-f", "-")
NFT_CONFIG = """
[daemon]
state_dir = "{state}"
log_format = "json"
heartbeat_interval = "200ms"
control_socket = ""

[exporter]
enabled = false

[[sources]]
name = "auth"
type = "file"
parser = "sshd"
paths = ["{logs}/auth.log"]
{responders}
"""
TABLE = {"family": "inet", "name": "aisentinel"}
WITHDRAW = [{"add": {"table": TABLE}}, {"delete": {"table": TABLE}}]


def _nft_docs(fake: FakeRunner) -> list[list[dict[str, object]]]:
    return [json.loads(text)["nftables"] for text in list(fake.inputs) if text]


def _run_daemon(path: Path, fake: FakeRunner) -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(load_config(path), config_path=path, commands=fake)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    assert daemon.started.wait(10)
    return daemon, thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.request_stop()
    thread.join(10)
    assert not thread.is_alive()


def _nft_config(tmp_path: Path, logs: Path, nftables: bool) -> Path:
    path = tmp_path / "aisentinel.toml"
    responders = '[responders.nftables]\nbackend = "nft"\n' if nftables else ""
    path.write_text(NFT_CONFIG.format(state=tmp_path / "state", logs=logs, responders=responders))
    return path


def test_reload_back_to_dry_run_deletes_the_nftables_table(tmp_path: Path, logs: Path) -> None:
    """A reload that drops [responders.nftables] deletes its table (its bans lift)."""
    fake = FakeRunner({NFT: FakeRunner.ok(NFT)})
    path = _nft_config(tmp_path, logs, nftables=True)
    daemon, thread = _run_daemon(path, fake)
    try:
        assert wait_for(lambda: len(_nft_docs(fake)) >= 1)  # the start's reconcile
        assert WITHDRAW not in _nft_docs(fake)
        _nft_config(tmp_path, logs, nftables=False)
        daemon.request_reload()
        assert wait_for(lambda: daemon.reloads["ok"] == 1)
        assert wait_for(lambda: WITHDRAW in _nft_docs(fake))
        assert [r.name for r in daemon.runner.responders] == ["dryrun"]
    finally:
        _stop(daemon, thread)


def test_scheduled_audit_does_not_count_an_unhealthy_ban_responder(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's scheduled audit counts its nftables responder as banning only while
    the responder worker has not found it unhealthy (no nft here): then fail2ban.jails
    judges fail2ban alone and its evidence says why aisentinel does not count."""
    path = _nft_config(tmp_path, logs, nftables=True)
    skip = [entry.name for entry in CHECKS if entry.name != "fail2ban.jails"]
    with path.open("a") as fh:
        fh.write(f"[audit]\nskip = {json.dumps(skip)}\n")
        fh.write(f'[audit.tools]\nfail2ban_client = "{tmp_path / "no-fail2ban-client"}"\n')
    monkeypatch.setattr(AuditScheduler, "start", AuditScheduler.run_once)  # one run, here
    daemon = Daemon(load_config(path), config_path=path, commands=FakeRunner())
    try:
        daemon._start_audit()
        assert daemon.audit is not None
        report = daemon.audit.collector.report
        assert report is not None
        assert [r.status for r in report.results] == [Status.PASS]  # not checked yet
        daemon.runner.check_health()
        report = daemon.audit.run_once()
        assert report is not None
        (result,) = report.results
        assert result.status is Status.FAIL
        assert result.evidence[0].startswith("aisentinel's nftables responder is unhealthy: ")
    finally:
        daemon.ledger.close()


def _withdrawals(daemon: Daemon) -> dict[tuple[str, str], float]:
    """aisentinel_responder_withdrawals_total as the exporter reads it, per (responder, result)."""
    return {
        (s.labels["responder"], s.labels["result"]): s.value
        for family in daemon.runner.collect()
        if family.name == "aisentinel_responder_withdrawals"
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_withdrawals_at_reload_stay_counted_after_the_worker_is_replaced(
    tmp_path: Path, logs: Path
) -> None:
    """aisentinel_responder_withdrawals_total keeps a reload's withdrawal although the
    reload replaces the worker that counted it, and goes on counting across reloads."""
    fake = FakeRunner({NFT: FakeRunner.ok(NFT)})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=True), fake)
    try:
        for reload in (1, 2, 3):
            _nft_config(tmp_path, logs, nftables=reload != 2)
            daemon.request_reload()
            assert wait_for(lambda n=reload: daemon.reloads["ok"] == n)  # type: ignore[misc]
        # dry-run, standing in while nftables was off, is withdrawn at the third
        assert _withdrawals(daemon) == {("nftables", "ok"): 1.0, ("dryrun", "ok"): 1.0}
        _nft_config(tmp_path, logs, nftables=False)
        daemon.request_reload()
        assert wait_for(lambda: daemon.reloads["ok"] == 4)
        assert _withdrawals(daemon) == {("nftables", "ok"): 2.0, ("dryrun", "ok"): 1.0}
    finally:
        _stop(daemon, thread)


def test_start_without_nftables_deletes_the_table_of_the_previous_run(
    tmp_path: Path, logs: Path
) -> None:
    """A start whose config drops the nftables responder of the previous run deletes its
    table, once: the start after that does not."""
    first = FakeRunner({NFT: FakeRunner.ok(NFT)})
    _stop(*_run_daemon(_nft_config(tmp_path, logs, nftables=True), first))
    assert WITHDRAW not in _nft_docs(first)
    second = FakeRunner({NFT: FakeRunner.ok(NFT)})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=False), second)
    try:
        assert wait_for(lambda: WITHDRAW in _nft_docs(second))
    finally:
        _stop(daemon, thread)
    third = FakeRunner({NFT: FakeRunner.ok(NFT)})
    _stop(*_run_daemon(_nft_config(tmp_path, logs, nftables=False), third))
    assert third.calls == []


def _withdrawing(tmp_path: Path) -> list[str]:
    """The names responders.json records as still to be withdrawn."""
    doc = json.loads((tmp_path / "state" / "responders.json").read_text())
    return [str(w["name"]) for w in doc.get("withdrawing", [])]


NFT_OK = FakeRunner.ok(NFT)
NFT_FAILS = FakeRunner.ok(NFT, stderr="Error: Operation not permitted", returncode=1)


def test_a_failed_withdrawal_at_start_stays_recorded_and_the_next_start_lifts_it(
    tmp_path: Path, logs: Path
) -> None:
    """A start that cannot delete the previous run's nftables table keeps the responder in
    responders.json (as withdrawing), so the next start deletes it, and then forgets it."""
    _stop(*_run_daemon(_nft_config(tmp_path, logs, nftables=True), FakeRunner({NFT: NFT_OK})))
    failing = FakeRunner({NFT: NFT_FAILS})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=False), failing)
    try:
        assert wait_for(lambda: WITHDRAW in _nft_docs(failing))
    finally:
        _stop(daemon, thread)
    assert _withdrawing(tmp_path) == ["nftables"]
    working = FakeRunner({NFT: FakeRunner.ok(NFT)})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=False), working)
    try:
        assert wait_for(lambda: WITHDRAW in _nft_docs(working))
        assert wait_for(lambda: _withdrawing(tmp_path) == [])
    finally:
        _stop(daemon, thread)
    after = FakeRunner({NFT: FakeRunner.ok(NFT)})
    _stop(*_run_daemon(_nft_config(tmp_path, logs, nftables=False), after))
    assert after.calls == []


def test_a_failed_withdrawal_at_reload_is_retried_by_the_new_worker(
    tmp_path: Path, logs: Path
) -> None:
    """A reload whose nftables table delete fails keeps the responder recorded and the new
    worker retries it with back-off until it succeeds; then it leaves responders.json."""
    fake = FakeRunner({NFT: FakeRunner.ok(NFT)})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=True), fake)
    try:
        assert wait_for(lambda: len(_nft_docs(fake)) >= 1)
        fake.answers = {NFT: NFT_FAILS}
        _nft_config(tmp_path, logs, nftables=False)
        daemon.request_reload()
        assert wait_for(lambda: daemon.reloads["ok"] == 1)
        assert wait_for(lambda: _nft_docs(fake).count(WITHDRAW) >= 2)  # the new worker's try
        assert _withdrawing(tmp_path) == ["nftables"]
        fake.answers = {NFT: FakeRunner.ok(NFT)}
        assert wait_for(lambda: _withdrawing(tmp_path) == [])
    finally:
        _stop(daemon, thread)


def _throttle_config(tmp_path: Path, logs: Path, throttle: bool) -> Path:
    """A config with (or without) the throttle responder on a fixture cgroup tree."""
    root, proc = tmp_path / "cg", tmp_path / "proc"
    if not root.exists():
        (root / "ai" / "job").mkdir(parents=True)
        (root / "cgroup.controllers").write_text("cpu\n")
        (root / "ai" / "job" / "cgroup.freeze").write_text("0\n")
        (proc / str(os.getpid())).mkdir(parents=True)
        (proc / str(os.getpid()) / "cgroup").write_text("0::/\n")
    table = f'[responders.throttle]\ncgroup_root = "{root}"\nproc_root = "{proc}"\n'
    path = tmp_path / "aisentinel.toml"
    path.write_text(
        NFT_CONFIG.format(state=tmp_path / "state", logs=logs, responders=table if throttle else "")
    )
    return path


def _freeze(daemon: Daemon) -> Decision:
    """A freeze of cgroup:/ai/job, decided now and handed to the worker."""
    now = daemon.clock.now()
    freeze = Decision(
        ts=now,
        action=Action.FREEZE,
        target=WorkloadTarget(WorkloadKey.CGROUP, "/ai/job"),
        detector="gpu_abuse",
        severity=Severity.HIGH,
        reason="test",
        ttl=3600.0,
        expires_at=now + 3600.0,
    )
    daemon.runner.submit(freeze)
    return freeze


def test_start_without_throttle_thaws_what_the_previous_run_froze(
    tmp_path: Path, logs: Path
) -> None:
    """A workload frozen by a run with the throttle responder is thawed by the next start
    whose config drops it (its record in the state dir says what to undo)."""
    frozen = tmp_path / "cg" / "ai" / "job" / "cgroup.freeze"
    daemon, thread = _run_daemon(_throttle_config(tmp_path, logs, throttle=True), FakeRunner())
    try:
        _freeze(daemon)
        assert wait_for(lambda: frozen.read_text() == "1")
    finally:
        _stop(daemon, thread)
    _stop(*_run_daemon(_throttle_config(tmp_path, logs, throttle=False), FakeRunner()))
    assert frozen.read_text() == "0"


def test_a_thaw_that_failed_until_the_stop_is_done_by_the_next_start(
    tmp_path: Path, logs: Path
) -> None:
    """A freeze lifted by hand whose thaw kept failing until the daemon stopped (the
    ledger has closed it) is thawed by the next start."""
    frozen = tmp_path / "cg" / "ai" / "job" / "cgroup.freeze"
    path = _throttle_config(tmp_path, logs, throttle=True)
    daemon, thread = _run_daemon(path, FakeRunner())
    try:
        freeze = _freeze(daemon)
        assert wait_for(lambda: frozen.read_text() == "1")
        frozen.unlink()
        frozen.mkdir()  # the thaw's write fails
        daemon.runner.submit_expired([freeze])
        assert wait_for(lambda: daemon.runner.pending() == 1)
    finally:
        _stop(daemon, thread)
    frozen.rmdir()
    frozen.write_text("1")
    _stop(*_run_daemon(path, FakeRunner()))
    assert frozen.read_text() == "0"


def _turn(clock: FakeClock, seconds: float, readers: int = 2) -> None:
    """Move ``clock`` on and wait until the sources' ``readers`` reader threads (waiting on
    it) have done the turn they woke for and wait again: no sleep, no race."""
    assert wait_for(lambda: clock.waiting >= readers)
    before = clock.waits
    clock.advance(seconds)
    assert wait_for(lambda: clock.waits >= before + readers and clock.waiting >= readers)


def _saved_offset(daemon: Daemon, source: str, log: Path) -> int | None:
    path = daemon.state_dir / "positions.json"
    doc = json.loads(path.read_text()) if path.exists() else {"sources": {}}
    entry = doc["sources"].get(source, {}).get(str(log))
    return None if entry is None else int(entry["offset"])


def _close(daemon: Daemon) -> None:
    """Stop the sources a test started without the loop (nothing more is acknowledged)."""
    for source in daemon.sources.values():
        source.acks_end()
    daemon._stop_sources()
    daemon.ledger.close()


def _from_beginning(path: Path, **daemon: int) -> None:
    """The config at ``path`` with the auth source reading from the start of its file."""
    text = path.read_text().replace(
        'parser = "sshd"\n', 'parser = "sshd"\nstart_at = "beginning"\n'
    )
    for key, value in daemon.items():
        text = text.replace("[daemon]\n", f"[daemon]\n{key} = {value}\n")
    path.write_text(text)


def test_saved_position_passes_only_batches_the_pipeline_processed(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """A batch still on the queue is not covered by the saved position; once the loop has
    processed it, it is: a kill -9 with a backlog loses none of the queued lines."""
    clock = FakeClock()
    daemon = Daemon(load_config(_write_config(tmp_path)), clock=clock)
    log = logs / "auth.log"
    try:
        daemon._start_sources()
        assert wait_for(lambda: all(s.ready() for s in daemon.sources.values()))
        _append(log, [ssh_fail(now_epoch + i, "198.51.100.40") for i in range(6)])
        _turn(clock, SAVE_INTERVAL)  # the poll finds the new file and reads it
        assert wait_for(lambda: daemon.queue.qsize() == 1)
        _turn(clock, SAVE_INTERVAL)  # a save is due
        assert _saved_offset(daemon, "auth", log) is None  # queued, not processed
        assert daemon._drain(timeout=0) == 1
        _turn(clock, SAVE_INTERVAL)
        assert _saved_offset(daemon, "auth", log) == log.stat().st_size
    finally:
        _close(daemon)


def test_reload_stops_a_source_waiting_on_the_full_queue_without_losing_lines(
    tmp_path: Path, logs: Path
) -> None:
    """A reload that rebuilds a source whose reader waits on the full queue keeps draining
    while it stops it: its saved position is exact, and every line is processed once."""
    path = _write_config(tmp_path)
    _from_beginning(path, queue_batches=2)
    count = 20_000
    (logs / "auth.log").write_text("".join(f"line {i}\n" for i in range(count)))
    daemon = Daemon(load_config(path), config_path=path, clock=FakeClock())
    try:
        daemon._start_sources()
        assert wait_for(daemon.queue.full)  # the reader waits to hand on its next batch
        path.write_text(path.read_text().replace("start_at", "poll_interval = 0.5\nstart_at"))
        assert daemon.reload()

        def processed() -> int:
            daemon._drain(timeout=0.01)
            return daemon.pipeline.sources["auth"].lines

        assert wait_for(lambda: processed() >= count)
        assert daemon._drain(timeout=0) == 0
        assert daemon.pipeline.sources["auth"].lines == count
    finally:
        _close(daemon)


def test_reload_keeps_the_counters_of_a_rebuilt_source(tmp_path: Path, logs: Path) -> None:
    """A source rebuilt by a reload (its table changed) goes on counting where it was, as
    the pipeline's counters of that source do: lines read and rotations never go back."""
    path = _write_config(tmp_path)
    _from_beginning(path)
    (logs / "auth.log").write_text("".join(f"line {i}\n" for i in range(5)))
    daemon = Daemon(load_config(path), config_path=path, clock=FakeClock())
    try:
        daemon._start_sources()
        old = daemon.sources["auth"]
        assert wait_for(lambda: daemon._drain(timeout=0.01) == 0 and old.stats.lines_read == 5)
        old.stats.rotations = 2  # as if it had followed two rotations
        path.write_text(path.read_text().replace("start_at", "poll_interval = 0.5\nstart_at"))
        assert daemon.reload()
        new = daemon.sources["auth"]
        assert new is not old
        assert (new.stats.lines_read, new.stats.bytes_read, new.stats.rotations) == (
            5,
            old.stats.bytes_read,
            2,
        )
        assert daemon.pipeline.sources["auth"].lines == 5
    finally:
        _close(daemon)


def test_a_source_timezone_is_read_at_start_and_at_reload(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file source's timezone sets the zone its syslog times are read in, on a host in
    another zone; a reload that sets or drops it re-reads the source's lines in the new zone."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        path = _write_config(tmp_path)
        utc = path.read_text().replace(
            'paths = ["' + str(logs) + '/auth.log"]',
            'paths = ["' + str(logs) + '/auth.log"]\ntimezone = "UTC"',
        )
        assert "timezone" in utc
        line = "Dec  8 10:00:05 gpu-box sshd[9]: Failed password for root from 198.51.100.30 port 5"
        in_utc = 1_796_724_005.0  # 2026-12-08T10:00:05Z
        now = FakeClock(in_utc + 60)
        daemon = Daemon(load_config(path), config_path=path, clock=now)
        try:
            daemon.pipeline.parser_clock = now

            def read() -> float:
                event = daemon.pipeline.parser_for("auth", "sshd").parse(line)
                assert event is not None
                return event.ts

            assert read() == in_utc - 9 * 3600  # Tokyo's local time
            path.write_text(utc)
            assert daemon.reload()
            assert read() == in_utc
            path.write_text(utc.replace('timezone = "UTC"', 'timezone = "Asia/Tokyo"'))
            assert daemon.reload()
            assert read() == in_utc - 9 * 3600
        finally:
            _close(daemon)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_reload_keeps_the_counters_of_a_rebuilt_detector(tmp_path: Path, now_epoch: float) -> None:
    """A detector rebuilt by a reload (its table changed) goes on counting where it was:
    aisentinel_detector_evictions_total does not go back to 0, and keeps counting."""
    path = _write_config(tmp_path)
    path.write_text(path.read_text().replace("threshold = 5", "threshold = 5\nmax_keys = 2"))
    daemon = Daemon(load_config(path), config_path=path, clock=FakeClock(), notifier=Notifier(None))
    registry = CollectorRegistry()
    registry.register(daemon.exporter())

    def evictions() -> float | None:
        return registry.get_sample_value(
            "aisentinel_detector_evictions_total", {"detector": "ssh_bruteforce"}
        )

    def fail_from(first: int) -> None:
        lines = [ssh_fail(now_epoch, f"198.51.100.{first + i}") for i in range(6)]
        daemon.pipeline.process(LineBatch("auth", "sshd", lines, 0.0))

    try:
        fail_from(40)
        before = evictions()
        assert before is not None
        assert before > 0
        old = next(d for d in daemon.pipeline.detectors if d.name == "ssh_bruteforce")
        path.write_text(path.read_text().replace("max_keys = 2", "max_keys = 3"))
        assert daemon.reload()
        assert old not in daemon.pipeline.detectors
        assert evictions() == before
        fail_from(60)
        after = evictions()
        assert after is not None
        assert after > before
    finally:
        _close(daemon)


def test_reload_to_a_file_tomllib_cannot_parse_is_refused_and_the_daemon_lives(
    tmp_path: Path, logs: Path, now_epoch: float
) -> None:
    """A reload after a 5000-digit integer was appended is refused; the daemon runs on."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        with path.open("a") as fh:
            fh.write("\n[decisions]\nmax_bans_per_minute = " + "9" * 5000 + "\n")
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["failed"] == 1)
        _append(logs / "auth.log", [ssh_fail(now_epoch + i, "198.51.100.33") for i in range(6)])
        assert wait_for(lambda: "198.51.100.33" in r.active(), timeout=15)
        assert r.thread.is_alive()
    finally:
        r.stop()


def test_reload_refuses_any_fault_in_loading_the_config(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever load_config raises at a reload is a refused reload, never a stopped daemon."""
    r = Running(_write_config(tmp_path))
    try:

        def broken(_path: object = None) -> Config:
            raise RuntimeError("unexpected")

        monkeypatch.setattr("aisentinel.daemon.load_config", broken)
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["failed"] == 1)
        assert r.thread.is_alive()
    finally:
        r.stop()


def test_reload_warns_about_each_daemon_setting_it_does_not_apply(tmp_path: Path) -> None:
    """A reload changing [daemon] keys read only at start warns about each, by key."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        text = path.read_text().replace('log_format = "json"', 'log_format = "console"')
        text = text.replace('state_dir = "', 'state_dir = "/elsewhere')
        text = text.replace("[daemon]\n", "[daemon]\nqueue_batches = 4\n")
        path.write_text(text.replace('expire_interval = "1s"', 'expire_interval = "2s"'))
        with capture_logs() as logs:
            r.daemon.request_reload()
            assert wait_for(lambda: r.daemon.reloads["ok"] == 1)
        keys = [e["key"] for e in logs if e["event"] == "setting changes on restart only"]
        expected = ["log_format", "queue_batches", "state_dir"]
        assert keys == [f"daemon.{k}" for k in expected]  # not expire_interval: applied live
    finally:
        r.stop()


def test_reload_warns_of_each_deprecated_value_it_adjusts(tmp_path: Path) -> None:
    """A reload of a config with heartbeat_interval over 30s warns of it, naming file and
    key, as a start does, and applies 30s."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        text = path.read_text()
        path.write_text(text.replace('heartbeat_interval = "200ms"', 'heartbeat_interval = "1m"'))
        with capture_logs() as logs:
            r.daemon.request_reload()
            assert wait_for(lambda: r.daemon.reloads["ok"] == 1)
        notes = [e["warning"] for e in logs if e["event"] == "config: valid but risky"]
        assert len(notes) == 1
        assert notes[0].startswith(f"{path}: daemon.heartbeat_interval = 1m is more than 30s")
        assert r.daemon.config.daemon.heartbeat_interval == 30.0
    finally:
        r.stop()


def test_reload_applies_log_level_live(tmp_path: Path) -> None:
    """A reload's [daemon] log_level filters log calls from then on, and debug logs findings."""
    path = _write_config(tmp_path)
    r = Running(path)
    try:
        base = path.read_text()
        path.write_text(base.replace("[daemon]\n", '[daemon]\nlog_level = "warning"\n'))
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["ok"] == 1)
        probe = structlog.get_logger("probe")
        with capture_logs() as logs:
            probe.info("dropped at warning")
            probe.warning("kept at warning")
        assert [e["event"] for e in logs] == ["kept at warning"]
        assert r.daemon.pipeline.on_finding is None
        path.write_text(base.replace("[daemon]\n", '[daemon]\nlog_level = "debug"\n'))
        r.daemon.request_reload()
        assert wait_for(lambda: r.daemon.reloads["ok"] == 2)
        with capture_logs() as logs:
            probe.debug("kept at debug")
        assert [e["event"] for e in logs] == ["kept at debug"]
        assert r.daemon.pipeline.on_finding is not None
    finally:
        r.stop()


class _Recorder(Notifier):
    """A notifier that keeps what it would send."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[str] = []

    def notify(self, *assignments: str) -> bool:
        self.sent.extend(assignments)
        return True


def test_a_ledger_locked_at_start_is_waited_for_then_stood_in_for_and_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger another process holds locked at start is tried again with systemd told the
    start goes on (EXTEND_TIMEOUT_USEC, WATCHDOG=1); still locked, the daemon runs degraded
    on a stand-in, and once the lock is gone the loop moves its bans into the file (a
    restart keeps them) and the degraded state clears."""
    monkeypatch.setattr(daemon_module, "LEDGER_LOCK_WAIT", 0.6)
    monkeypatch.setattr(daemon_module, "LEDGER_BUSY_TIMEOUT", 0.05)
    config = load_config(_write_config(tmp_path))
    path = config.daemon.state_dir / daemon_module.LEDGER_FILE
    Ledger(path, FakeClock()).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM brake")
    notifier = _Recorder()
    daemon = Daemon(config, notifier=notifier)
    try:
        assert "locked by another process" in daemon.degraded["ledger"]
        assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in notifier.sent)
        assert "WATCHDOG=1" in notifier.sent
        finding = Finding(
            daemon.clock.now(), "ssh_bruteforce", Severity.HIGH, "198.51.100.9", "k", 6, 60.0, "x"
        )
        assert daemon.engine.decide(finding).action is Action.BAN
        daemon._retry_ledger(daemon._ledger_retry_at)
        assert "ledger" in daemon.degraded  # still locked
        holder.execute("ROLLBACK")
        daemon._retry_ledger(daemon._ledger_retry_at)
        assert "ledger" not in daemon.degraded
    finally:
        holder.close()
        daemon.ledger.close()
    again = Ledger(path, FakeClock())
    assert [d.target.text for d in again.open_bans() if d.target] == ["198.51.100.9"]
    again.close()


def _nft_reconciles(daemon: Daemon) -> float:
    """aisentinel_responder_operations_total{responder="nftables",operation="reconcile",
    result="ok"} as the exporter reads it (0 when absent)."""
    return sum(
        s.value
        for family in daemon.runner.collect()
        if family.name == "aisentinel_responder_operations"
        for s in family.samples
        if s.name.endswith("_total")
        and s.labels == {"responder": "nftables", "operation": "reconcile", "result": "ok"}
    )


def test_a_responder_removed_and_added_again_by_reloads_goes_on_counting(
    tmp_path: Path, logs: Path
) -> None:
    """aisentinel_responder_operations_total of nftables never goes back while the daemon
    runs: the reloads that remove it and add it again (each replacing the worker) keep
    what it had counted, and its new reconcile adds to it."""
    fake = FakeRunner({NFT: FakeRunner.ok(NFT)})
    daemon, thread = _run_daemon(_nft_config(tmp_path, logs, nftables=True), fake)
    try:
        assert wait_for(lambda: _nft_reconciles(daemon) == 1)  # the start's reconcile
        for reload, nftables in ((1, False), (2, True)):
            _nft_config(tmp_path, logs, nftables=nftables)
            daemon.request_reload()
            assert wait_for(lambda n=reload: daemon.reloads["ok"] == n)  # type: ignore[misc]
        assert wait_for(lambda: _nft_reconciles(daemon) == 2)  # 1 carried, 1 after re-adding
    finally:
        _stop(daemon, thread)


WEB_SOURCE = """
[[sources]]
name = "web"
type = "file"
parser = "nginx"
start_at = "beginning"
paths = [{paths}]
"""


def _web_config(tmp_path: Path, logs: Path, paths: list[str] | None) -> Path:
    """The nftables-less config, with a "web" source on ``paths`` (None: without it)."""
    path = _nft_config(tmp_path, logs, nftables=False)
    if paths is not None:
        listed = ", ".join(f'"{logs / p}"' for p in paths)
        path.write_text(path.read_text() + WEB_SOURCE.format(paths=listed))
    return path


def test_reloads_judge_a_changed_source_afresh_and_a_re_added_one_counts_on(
    tmp_path: Path, logs: Path
) -> None:
    """A blind source whose table a reload changes is judged afresh (no longer blind until
    it has read enough again); one removed by a reload and added again by the next goes
    on counting its lines from where they were."""
    vhost = "ai.example.com:443 " + nginx_line(1_764_000_000.0, "203.0.113.7", "/.env")
    (logs / "access.log").write_text(f"{vhost}\n" * 300)
    daemon, thread = _run_daemon(_web_config(tmp_path, logs, ["access.log"]), FakeRunner({}))
    try:
        assert wait_for(lambda: daemon.pipeline.sources["web"].lines == 300)
        recognition = daemon.pipeline.sources["web"].recognition
        assert recognition is not None
        assert recognition.blind
        _web_config(tmp_path, logs, ["access.log", "other.log"])
        daemon.request_reload()
        assert wait_for(lambda: daemon.reloads["ok"] == 1)
        assert daemon.pipeline.sources["web"].recognition is None
        for reload, paths in ((2, None), (3, ["access.log"])):
            _web_config(tmp_path, logs, paths)
            daemon.request_reload()
            assert wait_for(lambda n=reload: daemon.reloads["ok"] == n)  # type: ignore[misc]
        assert daemon.pipeline.sources["web"].lines == 300
    finally:
        _stop(daemon, thread)


def test_a_source_removed_by_a_reload_takes_its_setup_problem_with_it(
    tmp_path: Path, logs: Path
) -> None:
    """A source whose parser saw a setup problem, removed by a reload, has no
    aisentinel_source_setup_problem series any more (its alert resolves) and no problem
    for ``aisentinel status``."""
    proxied = nginx_line(1_764_000_000.0, "127.0.0.1", "/api/tags") + ' "198.51.100.9"'
    (logs / "access.log").write_text(f"{proxied}\n" * 300)
    daemon, thread = _run_daemon(_web_config(tmp_path, logs, ["access.log"]), FakeRunner({}))

    def setup() -> dict[tuple[str, str], float]:
        [family] = [
            m for m in daemon.pipeline.collect() if m.name == "aisentinel_source_setup_problem"
        ]
        return {(s.labels["source"], s.labels["problem"]): s.value for s in family.samples}

    try:
        assert wait_for(lambda: daemon.pipeline.sources["web"].lines == 300)
        assert setup()["web", "untrusted_local_proxy"] == 1.0
        _web_config(tmp_path, logs, None)
        daemon.request_reload()
        assert wait_for(lambda: daemon.reloads["ok"] == 1)
        assert [k for k in setup() if k[0] == "web"] == []
        assert daemon.pipeline.source_problems("web") == []
    finally:
        _stop(daemon, thread)
