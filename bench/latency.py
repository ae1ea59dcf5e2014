#!/usr/bin/env python3
"""Live latency and sustained rate of the daemon (``aisentinel run``, dry-run), side by
side with the anchor, a private ``fail2ban-server`` (bench/fail2ban_anchor.py).

1. Latency: while a writer appends normal nginx lines to access.log at
   ``--background-rate`` lines/s, inject ``--attacks`` ssh brute forces into auth.log
   (5 ``Failed password`` lines from a fresh address each) and measure, per attack,
   the time from the write+flush of the 5th line to the moment the daemon's JSON log
   (stdout) shows the ``decision`` event for that address. fail2ban follows the same
   two files at the same time (jails sshd and nginx-botsearch, backend pyinotify when
   importable, else polling); its latency runs from the same flush to the millisecond
   stamp of its "Ban ADDR" log line. When the daemon decides before the 5th line is
   written (one of the first four decided it: a credential-stuffing member ban when
   the sshd pool attacks the same user), the time runs from the write+flush of those
   four, and the report says how many attacks that was.
2. Sustained rate: append sshd lines (a generated auth.log, re-stamped with the
   current time) at ``--rate`` lines/s (0: as fast as possible) for ``--seconds``,
   sampling ``/metrics`` every second: lines read, lines processed, lag in bytes,
   queued batches. Lag that does not grow means the daemon keeps up. Then, with the
   daemon stopped, a fresh fail2ban (jail sshd only) gets the same lines from the
   start of the same pool at ``--fail2ban-rate`` for ``--fail2ban-seconds``, sampling
   its jail's "Total failed" every second; the end of its backlog is the ban of a
   marker brute force appended after the last line.

With ``--profile storm`` the background nginx lines and the sshd pool of the
sustained and capacity tests come from bench/storm.py (half 404 scans and a quarter
401s; sshd lines 70% attack traffic from 5,100 addresses) instead of the demo
scenario's normal traffic (``--profile quiet``, the default); every figure printed
names the profile.

The daemon runs from a temporary config: file sources on temporary logs, state in a
temporary folder, metrics on a free loopback port, the default dry-run responder.

    .venv/bin/python bench/latency.py [--attacks 200] [--rate 60000] [--seconds 20]
        [--fail2ban-rate 10000] [--fail2ban-seconds 10] [--no-fail2ban] [--json]
        [--profile quiet|storm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import storm
from fail2ban_anchor import Fail2ban, best_backend, unavailable, version
from gen import aisentinel_cmd, aisentinel_env

from aisentinel.demo.scenario import (
    fmt_access_ts,
    fmt_syslog_ts,
    generate,
    normal_access_records,
    render_access,
)

SAMPLE_RE = re.compile(r"^(aisentinel_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$", re.MULTILINE)


def config_text(work: Path, sources: dict[str, tuple[str, Path]]) -> str:
    """A daemon config: file sources (name -> (parser, path)), temp state and control
    socket (a benchmark run on a host with aisentinel installed leaves its daemon's
    socket alone), free port."""
    parts = [
        "[daemon]",
        f'state_dir = "{work / "state"}"',
        f'control_socket = "{work / "control.sock"}"',
        'log_format = "json"',
        "decision_lines = 0",  # every decision its own line: the benchmark watches them
        "[exporter]",
        'listen = "127.0.0.1"',
        "port = 0",
        "[decisions]",
        "max_bans_per_minute = 10000",  # the most the config allows
    ]
    for name, (parser, path) in sources.items():
        parts += [
            "[[sources]]",
            f'name = "{name}"',
            'type = "file"',
            f'parser = "{parser}"',
            f'paths = ["{path}"]',
            "poll_interval = 0.25",
        ]
    return "\n".join(parts) + "\n"


class Daemon:
    """``aisentinel run`` as a child process whose JSON log is read by a thread.

    ``decisions`` maps a target address to the monotonic time its first decision
    event was read; ``events`` counts events by name.
    """

    def __init__(
        self,
        work: Path,
        sources: dict[str, tuple[str, Path]],
        cmd: str | None,
        *,
        compiled: bool = False,
        extra_config: str = "",
    ) -> None:
        self.work = work
        cfg = work / "aisentinel.toml"
        cfg.write_text(config_text(work, sources) + extra_config, encoding="utf-8")
        self.stderr_path = work / "daemon.stderr"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [*aisentinel_cmd(cmd), "run", "--config", str(cfg), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=aisentinel_env(compiled=compiled),
            text=True,
            bufsize=1,
        )
        self.metrics_url: str | None = None
        self.decisions: dict[str, float] = {}
        self.events: dict[str, int] = {}
        self.sources_started = 0
        self.cond = threading.Condition()
        self.non_json = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            try:
                obj = json.loads(line)
            except ValueError:
                self.non_json += 1
                continue
            event = obj.get("event", "")
            with self.cond:
                self.events[event] = self.events.get(event, 0) + 1
                if event == "decision" and obj.get("target"):
                    self.decisions.setdefault(obj["target"].split("/")[0], now)
                elif event == "metrics endpoint up":
                    self.metrics_url = obj.get("url")
                elif event == "source started":
                    self.sources_started += 1
                self.cond.notify_all()

    def wait_ready(self, n_sources: int, timeout: float = 60.0) -> None:
        """Block until the metrics URL is known and every source has started."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.metrics_url is None or self.sources_started < n_sources:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = self.stderr_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"daemon not ready (rc={self.proc.poll()}): {tail}")
                self.cond.wait(min(left, 0.5))

    def wait_decision(self, target: str, timeout: float) -> float | None:
        """Monotonic time the decision on ``target`` was read, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while target not in self.decisions:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.decisions[target]

    def metrics(self) -> dict[tuple[str, str], float]:
        """Samples of ``/metrics`` as (name, labels) -> value."""
        assert self.metrics_url is not None
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
            text = resp.read().decode()
        out: dict[tuple[str, str], float] = {}
        for name, labels, value in SAMPLE_RE.findall(text):
            out[(name, labels)] = float(value)
        for line in text.splitlines():
            if line.startswith("aisentinel_") and "{" not in line:
                name, _, value = line.partition(" ")
                out[(name, "")] = float(value)
        return out

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 15 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self._stderr.close()
        return int(self.proc.returncode)


@contextlib.contextmanager
def both_stopped(res: dict[str, Any], daemon: Daemon, f2b: Fail2ban | None) -> Iterator[None]:
    """Run the body; a RuntimeError becomes ``res["error"]``; then both servers are
    stopped and their exit statuses recorded (fail2ban's in ``res["fail2ban"]``)."""
    try:
        yield
    except RuntimeError as exc:
        res["error"] = str(exc)
    finally:
        if f2b is not None:
            res["fail2ban"]["exit"] = f2b.stop()
        res["daemon_exit"] = daemon.stop()


def source_value(m: dict[tuple[str, str], float], name: str, source: str) -> float:
    return m.get((name, f'source="{source}"'), 0.0)


def lines_done(m: dict[tuple[str, str], float], source: str) -> float:
    """Lines of ``source`` the pipeline has processed (parsed or not)."""
    return sum(
        source_value(m, f"aisentinel_source_lines_{k}_total", source)
        for k in ("parsed", "unparsed")
    )


class Paced(threading.Thread):
    """Calls :meth:`write` with the items due at ``rate`` items/s (every 10 ms at most)
    until stopped; ``written`` counts them."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stop_event = threading.Event()
        self.written = 0

    def write(self, first: int, count: int) -> None:
        """Write items ``first`` .. ``first + count - 1``."""
        raise NotImplementedError

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - t0) * self.rate) - self.written
            if due > 0:
                self.write(self.written, due)
                self.written += due
            self.stop_event.wait(0.01)


class Background(Paced):
    """Appends nginx lines (``(before, after)`` the time) at ``rate`` lines/s until stopped."""

    def __init__(self, path: Path, rate: float, lines: list[tuple[str, str]]) -> None:
        super().__init__(rate)
        self.lines = lines
        self.fh = path.open("a", encoding="utf-8")

    def write(self, first: int, count: int) -> None:
        recs = self.lines
        n = len(recs)
        ts = fmt_access_ts(int(time.time()))
        self.fh.write(
            "".join("{0}{2}{1}\n".format(*recs[(first + i) % n], ts) for i in range(count))
        )
        self.fh.flush()

    def run(self) -> None:
        with self.fh:
            super().run()


def attack_address(i: int) -> str:
    """A fresh address per attack, from the shared address space (never contacted)."""
    return f"100.{64 + i // 65_024 % 64}.{i // 254 % 256}.{i % 254 + 1}"


def brute_force(fh: IO[str], addr: str, pid: int) -> tuple[float, float, float]:
    """Append 5 failed logins from ``addr`` (the first four flushed together, the 5th on
    its own); returns the monotonic time of the first flush and the (monotonic,
    wall-clock) time of the last."""
    ts = fmt_syslog_ts(int(time.time()))
    lines = [
        f"{ts} gpu-box-01 sshd[{pid}]: Failed password for root from {addr} port {40000 + k} ssh2\n"
        for k in range(5)
    ]
    fh.write("".join(lines[:4]))
    first = time.monotonic()
    fh.flush()
    fh.write(lines[4])
    # Stamped just before the flush: once the write(2) releases the GIL, the reader
    # thread may see the decision before this thread runs again (up to the 5 ms switch
    # interval), which would make a stamp taken after it late. The write itself is
    # microseconds, so this over-states every latency by that much at most.
    stamps = time.monotonic(), time.time()
    fh.flush()
    return first, *stamps


def decision_latency(seen: float, first: float, fifth: float) -> tuple[float, bool]:
    """Append -> decision in ms for a decision seen at ``seen`` (monotonic), and whether
    it came before the 5th failure was written: then one of the first four decided it
    (a credential-stuffing member ban, say), and it is timed from their flush."""
    early = seen < fifth
    return (seen - (first if early else fifth)) * 1000.0, early


def summary(lat: list[float], attacks: int) -> dict[str, Any]:
    """min/median/p90/p99/max of latencies in ms, with how many were decided."""
    out: dict[str, Any] = {"attacks": attacks, "decided": len(lat), "missed": attacks - len(lat)}
    if lat:
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
        out.update(median_ms=statistics.median(lat), p90_ms=q[89], p99_ms=q[98], max_ms=max(lat))
        out["min_ms"] = min(lat)
    return out


Inject = Callable[[int], tuple[str, float, float, float]]
"""Writes attack ``i``'s five failures; returns its address, the monotonic time of the
flush of the first four, and the (monotonic, wall-clock) time of the 5th's."""


def timed_attacks(
    daemon: Daemon, f2b: Fail2ban | None, attacks: int, inject: Inject
) -> dict[str, Any]:
    """Run ``attacks`` brute forces one at a time through ``inject``; append -> decision
    (and -> fail2ban ban) in ms, summarised."""
    lat: list[float] = []
    f2b_lat: list[float] = []
    early = 0
    for i in range(attacks):
        addr, first, t0, wall0 = inject(i)
        seen = daemon.wait_decision(addr, timeout=10.0)
        if seen is not None:
            ms, before_fifth = decision_latency(seen, first, t0)
            lat.append(ms)
            early += before_fifth
        if f2b is not None:
            banned = f2b.wait_ban(addr, timeout=max(0.0, t0 + 10.0 - time.monotonic()))
            if banned is not None:
                f2b_lat.append((banned - wall0) * 1000.0)
        time.sleep(0.02 + (i % 5) * 0.01)
    out = summary(lat, attacks)
    out["decided_early"] = early
    if f2b is not None:
        out["fail2ban"] = summary(f2b_lat, attacks)
    return out


def latency_test(
    daemon: Daemon, f2b: Fail2ban | None, auth: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Brute forces appended to ``auth``, one at a time; see :func:`timed_attacks`."""
    with auth.open("a", encoding="utf-8") as fh:

        def inject(i: int) -> tuple[str, float, float, float]:
            addr = attack_address(i + 1000 * args.seed)
            return addr, *brute_force(fh, addr, 4000 + i)

        return timed_attacks(daemon, f2b, args.attacks, inject)


def background_lines(folder: Path, profile: str, seed: int) -> list[tuple[str, str]]:
    """Background access lines as (text before the time, text after it): the demo's
    normal traffic (quiet) or the first 50,000 lines of a storm access.log (storm)."""
    if profile == "quiet":
        lines = [render_access("\0", r) for r in normal_access_records(10_000, seed=seed)]
    else:
        storm.generate(folder, lines=50_000, seed=seed)
        lines = [
            ln[: ln.index("[") + 1] + "\0" + ln[ln.index("]") :]
            for ln in (folder / "access.log").read_text().splitlines()
        ]
    return [(a, b) for a, b in (ln.split("\0") for ln in lines)]


def sshd_pool(folder: Path, seed: int, profile: str = "quiet") -> list[str]:
    """200,000 generated auth.log lines (demo scenario or storm) without their timestamps
    (15 characters)."""
    if profile == "quiet":
        generate(folder, lines_nginx=0, lines_sshd=200_000, lines_error=0, seed=seed)
    else:
        storm.generate(folder, lines=200_000, seed=seed)
    return [ln[15:] + "\n" for ln in (folder / "auth.log").read_text().splitlines()]


class SshdWriter(threading.Thread):
    """Appends pool lines, re-stamped with the current time, at ``rate`` lines/s (0: as
    fast as possible) in chunks of 1,000 until stopped or ``limit`` lines are written."""

    def __init__(self, path: Path, tails: list[str], rate: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.path, self.tails, self.rate, self.limit = path, tails, rate, limit
        self.written = 0
        self.elapsed = 0.0
        """Seconds from the first write to the last (the writer's own rate: written / elapsed)."""
        self.stop_event = threading.Event()

    def run(self) -> None:
        chunk = 1000
        t0 = time.monotonic()
        with self.path.open("a", encoding="utf-8") as fh:
            while not self.stop_event.is_set() and self.written < self.limit:
                if self.rate:
                    ahead = self.written - (time.monotonic() - t0) * self.rate
                    if ahead > 0:
                        time.sleep(min(ahead / self.rate, 0.05))
                        continue
                ts = fmt_syslog_ts(int(time.time()))
                start = self.written % len(self.tails)
                part = self.tails[start : start + min(chunk, self.limit - self.written)]
                fh.write("".join(ts + t for t in part))
                fh.flush()
                self.written += len(part)
                self.elapsed = time.monotonic() - t0


def run_writer(
    writer: SshdWriter, seconds: float, sample: Callable[[float], dict[str, float]]
) -> tuple[float, list[dict[str, float]]]:
    """Run ``writer`` for ``seconds``, calling ``sample(t)`` each second; returns the
    writing time and the samples."""
    t_start = time.monotonic()
    writer.start()
    samples: list[dict[str, float]] = []
    while time.monotonic() - t_start < seconds:
        time.sleep(1.0)
        samples.append(sample(t_start))
    writer.stop_event.set()
    writer.join()
    return time.monotonic() - t_start, samples


def rates(
    written: int, write_secs: float, seconds: float, samples: list[dict[str, float]]
) -> dict[str, Any]:
    """Lines/s written and processed, from samples whose last one is at the drain."""
    drained = samples[-1].get("drained_after_s")
    return {
        "seconds": round(write_secs, 2),
        "written": written,
        "written_per_s": written / write_secs,
        "processed_per_s_while_writing": max(
            (s["processed"] for s in samples if s["t"] <= seconds + 0.5), default=0.0
        )
        / write_secs,
        "processed_per_s_to_drain": samples[-1]["processed"] / (write_secs + (drained or 0.0)),
        "drained_after_s": drained,
    }


def caught_up(daemon: Daemon, source: str, lines: int, timeout: float = 120.0) -> float | None:
    """Seconds until the daemon has processed ``lines`` lines of ``source``; None when it
    has not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if lines_done(daemon.metrics(), source) >= lines:
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def sustained_test(
    daemon: Daemon, auth: Path, tails: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Append sshd lines at args.rate for args.seconds, sampling /metrics each second."""
    limit = args.lines or int((args.rate or 10**9) * args.seconds)
    before = daemon.metrics()
    base_read = source_value(before, "aisentinel_source_lines_read_total", "sshd")
    base_done = lines_done(before, "sshd")
    writer = SshdWriter(auth, tails, args.rate, limit)

    def sample(t_start: float) -> dict[str, float]:
        m = daemon.metrics()
        done = lines_done(m, "sshd")
        return {
            "t": round(time.monotonic() - t_start, 2),
            "written": writer.written,
            "read": source_value(m, "aisentinel_source_lines_read_total", "sshd") - base_read,
            "processed": done - base_done,
            "lag_bytes": source_value(m, "aisentinel_source_lag_bytes", "sshd"),
            "queue_batches": m.get(("aisentinel_pipeline_queue_batches", ""), 0.0),
        }

    write_secs, samples = run_writer(writer, args.seconds, sample)
    t_stop = time.monotonic()
    deadline = t_stop + 120
    while time.monotonic() < deadline:
        s = sample(t_stop - write_secs)
        if s["processed"] >= writer.written:
            s["drained_after_s"] = time.monotonic() - t_stop
            samples.append(s)
            break
        time.sleep(0.2)
    out = {"target_rate": args.rate, **rates(writer.written, write_secs, args.seconds, samples)}
    # The rate offered: over the writer's own time, not the sampling loop's (which runs on
    # up to a second after the writer reached its line count).
    out["written_per_s"] = writer.written / writer.elapsed if writer.elapsed else 0.0
    out["max_lag_bytes"] = max(s["lag_bytes"] for s in samples)
    out["samples"] = samples
    return out


def capacity_test(
    path: Path,
    tails: list[str],
    n: int,
    *,
    progress: Callable[[], float],
    marker_seen: Callable[[str, float], float | None],
    seed: int,
) -> dict[str, Any]:
    """Append ``n`` pool lines as fast as possible, then a marker brute force; the
    capacity is ``n`` / (first write -> decision on the marker). ``progress()`` (sampled
    each second) says how far the daemon got; ``marker_seen(addr, timeout)`` returns the
    seconds from the first write to the marker's decision, or None."""
    writer = SshdWriter(path, tails, 0, n)
    t_start = time.monotonic()
    samples: list[dict[str, float]] = []

    def sample() -> None:
        samples.append(
            {
                "t": round(time.monotonic() - t_start, 2),
                "written": writer.written,
                "progress": progress(),
            }
        )

    writer.start()
    while writer.is_alive():
        writer.join(1.0)
        if writer.is_alive():
            sample()
    write_secs = time.monotonic() - t_start
    marker = attack_address(250_000 + seed)
    with path.open("a", encoding="utf-8") as fh:
        brute_force(fh, marker, 99)
    done: float | None = None
    deadline = time.monotonic() + 120
    while done is None and time.monotonic() < deadline:
        done = marker_seen(marker, 1.0)
        sample()
    return {
        "lines": writer.written,
        "write_s": round(write_secs, 2),
        "written_per_s": writer.written / write_secs,
        "done_s": done,
        "lines_per_s": writer.written / done if done else None,
        "samples": samples,
    }


def aisentinel_capacity(
    daemon: Daemon, auth: Path, tails: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """capacity_test on the running daemon's auth.log; progress = sshd lines processed."""
    base = lines_done(daemon.metrics(), "sshd")
    t0 = time.monotonic()

    def seen(addr: str, timeout: float) -> float | None:
        at = daemon.wait_decision(addr, timeout)
        return None if at is None else at - t0

    def progress() -> float:
        return lines_done(daemon.metrics(), "sshd") - base

    return capacity_test(
        auth, tails, args.capacity_lines, progress=progress, marker_seen=seen, seed=args.seed
    )


def fail2ban_capacity(
    work: Path, tails: list[str], backend: str, args: argparse.Namespace
) -> dict[str, Any]:
    """capacity_test on a fresh fail2ban (jail sshd only, its own file); progress = the
    jail's "Total failed" (failures counted, not lines)."""
    path = work / "auth-fail2ban.log"
    path.touch()
    f2b = Fail2ban(work / "capacity", {"sshd": ("sshd", path)}, backend)
    out: dict[str, Any] = {}
    try:
        f2b.wait_ready()
        t0 = time.time()

        def seen(addr: str, timeout: float) -> float | None:
            at = f2b.wait_ban(addr, timeout)
            return None if at is None else at - t0

        def progress() -> float:
            return float(f2b.status("sshd").get("Total failed", 0))

        out = capacity_test(
            path, tails, args.capacity_lines, progress=progress, marker_seen=seen, seed=args.seed
        )
        out["failures_counted"] = progress() - 5  # less the marker's
    finally:
        out["fail2ban_exit"] = f2b.stop()
    return out


def _ms(d: dict[str, Any], key: str) -> str:
    return f"{d[key]:>8.1f}" if key in d else f"{'-':>8}"


LATENCY_KEYS = ("min_ms", "median_ms", "p90_ms", "p99_ms", "max_ms")


def print_latency_table(lat: dict[str, Any], ours: str, anchor: str | None) -> None:
    """The rows of :func:`timed_attacks`'s summary ``lat``: ours, the anchor's (when
    ``anchor`` names it and it ran) and their ratio, and how many were decided early."""
    keys = LATENCY_KEYS
    print(f"  {'tool':<26} {'decided':>9} {'min':>8} {'median':>8} {'p90':>8} {'p99':>8} "
          f"{'max':>8}  (ms; missed = none within 10 s)")  # fmt: skip
    rows = [(ours, lat)]
    if anchor and "fail2ban" in lat:
        rows.append((anchor, lat["fail2ban"]))
    for name, d in rows:
        print(f"  {name:<26} {d['decided']:>4}/{d['attacks']:<4} "
              + " ".join(_ms(d, k) for k in keys))  # fmt: skip
    if ratio := latency_ratio(lat):
        cells = (f"{ratio[k]:>7.1f}x" if k in ratio else f"{'-':>8}" for k in keys)
        print(f"  {'ratio fail2ban/aisentinel':<26} {'':>9} " + " ".join(cells))
    if lat.get("decided_early"):
        print(
            f"  aisentinel decided {lat['decided_early']} before the 5th failure (on one of the "
            "first four, e.g. a credential-stuffing member): timed from their flush"
        )


def print_latency(res: dict[str, Any]) -> None:
    lat = res["latency"]
    f2b = res.get("fail2ban")
    print(f"append -> decision latency: {lat['attacks']} ssh brute forces (5 failures each), "
          f"background {res['background_rate']:,.0f} {res['profile']} nginx lines/s")  # fmt: skip
    anchor = f"fail2ban {f2b['version']} ({f2b['backend']})" if f2b else None
    print_latency_table(lat, "aisentinel", anchor)


def print_sustained(sus: dict[str, Any]) -> None:
    target = f"{sus['target_rate']:,} lines/s" if sus["target_rate"] else "as fast as possible"
    drained = sus["drained_after_s"]
    print(f"\naisentinel: sustained sshd appends, target {target} for {sus['seconds']} s")
    print(f"  written   {sus['written_per_s']:>10,.0f} lines/s ({sus['written']:,} lines)")
    print(f"  processed {sus['processed_per_s_while_writing']:>10,.0f} lines/s while writing")
    print(
        f"  overall   {sus['processed_per_s_to_drain']:>10,.0f} lines/s (written / time to drain)"
    )
    print(f"  backlog drained {drained:.1f} s after the writer stopped" if drained is not None
          else "  backlog NOT drained within 120 s")  # fmt: skip
    print(f"  {'t':>6} {'written':>10} {'read':>10} {'processed':>10} {'lag bytes':>11} "
          f"{'queue':>6}")  # fmt: skip
    for s in sus["samples"]:
        print(f"  {s['t']:>6.1f} {s['written']:>10,.0f} {s['read']:>10,.0f} "
              f"{s['processed']:>10,.0f} {s['lag_bytes']:>11,.0f} "
              f"{s['queue_batches']:>6.0f}")  # fmt: skip


def print_capacity(res: dict[str, Any]) -> None:
    cap = res["capacity"]
    rows = [("aisentinel", cap["aisentinel"])]
    if "fail2ban" in cap:
        f2b = res["fail2ban"]
        rows.append((f"fail2ban {f2b['version']} ({f2b['backend']})", cap["fail2ban"]))
    n = rows[0][1]["lines"]
    print(f"\ncapacity: the same {n:,} generated sshd lines appended as fast as possible, "
          "then a marker brute force;\n"
          "  lines/s = lines / (first write -> decision on the marker)")  # fmt: skip
    print(f"  {'tool':<26} {'written/s':>10} {'done after s':>13} {'lines/s':>10}")
    for name, c in rows:
        done = f"{c['done_s']:>13.2f}" if c["done_s"] else f"{'not in 120 s':>13}"
        rate = f"{c['lines_per_s']:>10,.0f}" if c["lines_per_s"] else f"{'-':>10}"
        print(f"  {name:<26} {c['written_per_s']:>10,.0f} {done} {rate}")
    if "capacity_ratio" in res:
        print(f"  {'ratio aisentinel/fail2ban':<26} {'':>10} {'':>13} "
              f"{res['capacity_ratio']:>9.1f}x")  # fmt: skip
    for name, c in rows:
        unit = "sshd lines processed" if name == "aisentinel" else "failures counted"
        marks = ", ".join(f"{s['t']:.0f}s: {s['progress']:,.0f}" for s in c["samples"])
        print(f"  {name} progress ({unit}): {marks}")
    if "fail2ban" in cap:
        print(f"  (fail2ban counted {cap['fail2ban']['failures_counted']:,.0f} failures "
              f"in the {n:,} lines)")  # fmt: skip


def print_report(res: dict[str, Any]) -> None:
    print(f"== profile {res['profile']} (background and sshd pool; bench/README.md)")
    print_latency(res)
    if res.get("sustained"):
        behind = res.get("background_caught_up_s")
        print(
            "\naisentinel had processed every background line "
            + (f"{behind:.1f} s after the background stopped" if behind is not None
               else "NOT within 120 s of the background stopping")
            + " (the sustained test starts then)"
        )  # fmt: skip
        print_sustained(res["sustained"])
    if res.get("capacity"):
        print_capacity(res)


def latency_ratio(lat: dict[str, Any]) -> dict[str, float]:
    """fail2ban/aisentinel of each latency figure, when both decided something."""
    other = lat.get("fail2ban", {})
    if "median_ms" not in lat or "median_ms" not in other:
        return {}
    return {k: other[k] / lat[k] for k in LATENCY_KEYS if lat[k] > 0}


def ratios(res: dict[str, Any]) -> None:
    """fail2ban/aisentinel latency ratios, aisentinel/fail2ban capacity ratio."""
    if ratio := latency_ratio(res.get("latency", {})):
        res["latency_ratio"] = ratio
    cap = res.get("capacity", {})
    a, f = cap.get("aisentinel", {}), cap.get("fail2ban", {})
    if a.get("lines_per_s") and f.get("lines_per_s"):
        res["capacity_ratio"] = a["lines_per_s"] / f["lines_per_s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--attacks", type=int, default=200)
    ap.add_argument("--background-rate", type=float, default=5000.0, help="nginx lines/s")
    ap.add_argument(
        "--profile", choices=("quiet", "storm"), default="quiet", help="background and pool"
    )
    ap.add_argument("--rate", type=int, default=60_000, help="sustained sshd lines/s (0: max)")
    ap.add_argument("--seconds", type=float, default=20.0, help="sustained test length")
    ap.add_argument("--lines", type=int, default=0, help="cap on sustained lines (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    ap.add_argument("--no-sustained", action="store_true")
    ap.add_argument("--no-fail2ban", action="store_true", help="skip the fail2ban anchor")
    ap.add_argument(
        "--compiled", action="store_true", help="run the mypyc build (make compiled) as shipped"
    )
    ap.add_argument("--fail2ban-backend", default=None, help="default: pyinotify, else polling")
    ap.add_argument(
        "--capacity-lines", type=int, default=200_000, help="lines of the capacity test (0: skip)"
    )
    return ap.parse_args(argv)


def start_anchor(
    args: argparse.Namespace, logs: dict[str, Path], work: Path, res: dict[str, Any]
) -> Fail2ban:
    """fail2ban following ``logs`` (jail/filter name -> file), ready; described in res."""
    backend = args.fail2ban_backend or best_backend()
    res["fail2ban"] = {"version": version(), "backend": backend, "jails": sorted(logs)}
    f2b = Fail2ban(work / "latency", {j: (j, p) for j, p in logs.items()}, backend)
    f2b.wait_ready()
    return f2b


def run_all(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """Latency (both tools at once), sustained rate (aisentinel), capacity (each alone)."""
    anchor = not args.no_fail2ban
    if anchor and (reason := unavailable()):
        res["fail2ban_skipped"] = reason
        anchor = False
    with tempfile.TemporaryDirectory(prefix="aisentinel-latency-") as tmp:
        work = Path(tmp)
        access, auth = work / "access.log", work / "auth.log"
        access.touch()
        auth.touch()
        sources = {"nginx-access": ("nginx", access), "sshd": ("sshd", auth)}
        daemon = Daemon(work, sources, args.aisentinel, compiled=args.compiled)
        res["pid"] = daemon.pid()
        f2b: Fail2ban | None = None
        try:
            if anchor:
                f2b = start_anchor(args, {"sshd": auth, "nginx-botsearch": access}, work, res)
            daemon.wait_ready(len(sources))
            bg_lines = background_lines(work / "background", args.profile, args.seed)
            bg = Background(access, args.background_rate, bg_lines)
            bg.start()
            try:
                res["latency"] = latency_test(daemon, f2b, auth, args)
            finally:
                bg.stop_event.set()
                bg.join()
                if f2b is not None:
                    res["fail2ban"]["latency_exit"] = f2b.stop()
            res["background_written"] = bg.written
            # The background's backlog (the anchor shared the two cores until now) is
            # worked off first: the sustained test times the sshd appends alone.
            res["background_caught_up_s"] = caught_up(daemon, "nginx-access", bg.written)
            tails = sshd_pool(work / "pool", args.seed, args.profile)
            if not args.no_sustained:
                res["sustained"] = sustained_test(daemon, auth, tails, args)
            if args.capacity_lines:
                cap = res["capacity"] = {
                    "aisentinel": aisentinel_capacity(daemon, auth, tails, args)
                }
                res["daemon_exit"] = daemon.stop()
                if anchor:
                    backend = res["fail2ban"]["backend"]
                    cap["fail2ban"] = fail2ban_capacity(work, tails, backend, args)
        except RuntimeError as exc:
            res["error"] = str(exc)
        finally:
            if f2b is not None:
                f2b.stop()
            res["daemon_exit"] = daemon.stop()
            res["daemon_events"] = daemon.events
            res["daemon_non_json_lines"] = daemon.non_json


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res: dict[str, Any] = {"profile": args.profile, "background_rate": args.background_rate}
    run_all(args, res)
    ratios(res)
    if args.json:
        print(json.dumps(res, indent=1))
    elif "error" in res:
        print(f"benchmark failed: {res['error']}")
    else:
        if "fail2ban_skipped" in res:
            print(f"fail2ban anchor skipped: {res['fail2ban_skipped']}\n")
        print_report(res)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
