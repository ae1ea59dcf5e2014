#!/usr/bin/env python3
"""Live latency and sustained rate of the daemon (``aisentinel run``), dry-run.

1. Latency: while a writer appends normal nginx lines to access.log at
   ``--background-rate`` lines/s, inject ``--attacks`` ssh brute forces into auth.log
   (5 ``Failed password`` lines from a fresh address each) and measure, per attack,
   the time from the write+flush of the 5th line to the moment the daemon's JSON log
   (stdout) shows the ``decision`` event for that address.
2. Sustained rate: append sshd lines (a generated auth.log, re-stamped with the
   current time) at ``--rate`` lines/s (0: as fast as possible) for ``--seconds``,
   sampling ``/metrics`` every second: lines read, lines processed, lag in bytes,
   queued batches. Lag that does not grow means the daemon keeps up.

The daemon runs from a temporary config: file sources on temporary logs, state in a
temporary folder, metrics on a free loopback port, the default dry-run responder.

    .venv/bin/python bench/latency.py [--attacks 200] [--rate 60000] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import IO, Any

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
    """A daemon config: file sources (name -> (parser, path)), temp state, free port."""
    parts = [
        "[daemon]",
        f'state_dir = "{work / "state"}"',
        'log_format = "json"',
        "[exporter]",
        'listen = "127.0.0.1"',
        "port = 0",
        "[decisions]",
        "max_bans_per_minute = 1000000",
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

    def __init__(self, work: Path, sources: dict[str, tuple[str, Path]], cmd: str | None) -> None:
        self.work = work
        cfg = work / "aisentinel.toml"
        cfg.write_text(config_text(work, sources), encoding="utf-8")
        self.stderr_path = work / "daemon.stderr"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [*aisentinel_cmd(cmd), "run", "--config", str(cfg), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=aisentinel_env(),
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


def source_value(m: dict[tuple[str, str], float], name: str, source: str) -> float:
    return m.get((name, f'source="{source}"'), 0.0)


def lines_done(m: dict[tuple[str, str], float], source: str) -> float:
    """Lines of ``source`` the pipeline has processed (parsed or not)."""
    return sum(
        source_value(m, f"aisentinel_source_lines_{k}_total", source)
        for k in ("parsed", "unparsed")
    )


class Background(threading.Thread):
    """Appends normal nginx lines at ``rate`` lines/s until stopped."""

    def __init__(self, path: Path, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.rate = rate
        self.records = normal_access_records(10_000, seed=seed)
        self.stop_event = threading.Event()
        self.written = 0

    def run(self) -> None:
        recs = self.records
        t0 = time.monotonic()
        with self.path.open("a", encoding="utf-8") as fh:
            while not self.stop_event.is_set():
                due = int((time.monotonic() - t0) * self.rate) - self.written
                if due > 0:
                    ts = fmt_access_ts(int(time.time()))
                    n = len(recs)
                    fh.write(
                        "".join(
                            render_access(ts, recs[(self.written + i) % n]) + "\n"
                            for i in range(due)
                        )
                    )
                    fh.flush()
                    self.written += due
                self.stop_event.wait(0.01)


def attack_address(i: int) -> str:
    """A fresh address per attack, from the shared address space (never contacted)."""
    return f"100.{64 + i // 65_024 % 64}.{i // 254 % 256}.{i % 254 + 1}"


def latency_test(daemon: Daemon, auth: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inject brute forces one at a time; append -> decision latencies in ms."""
    lat: list[float] = []
    missed: list[str] = []
    with auth.open("a", encoding="utf-8") as fh:
        for i in range(args.attacks):
            addr = attack_address(i + 1000 * args.seed)
            ts = fmt_syslog_ts(int(time.time()))
            lines = [
                f"{ts} gpu-box-01 sshd[{4000 + i}]: Failed password for root from {addr} "
                f"port {40000 + k} ssh2\n"
                for k in range(5)
            ]
            fh.write("".join(lines[:4]))
            fh.flush()
            fh.write(lines[4])
            fh.flush()
            t0 = time.monotonic()
            seen = daemon.wait_decision(addr, timeout=10.0)
            if seen is None:
                missed.append(addr)
            else:
                lat.append((seen - t0) * 1000.0)
            time.sleep(0.02 + (i % 5) * 0.01)
    out: dict[str, Any] = {"attacks": args.attacks, "decided": len(lat), "missed": len(missed)}
    if lat:
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
        out.update(median_ms=statistics.median(lat), p90_ms=q[89], p99_ms=q[98], max_ms=max(lat))
        out["min_ms"] = min(lat)  # < 0 would mean a decision before the 5th failure
    return out


def sshd_pool(folder: Path, seed: int) -> list[str]:
    """200,000 generated auth.log lines without their timestamps (15 characters)."""
    generate(folder, lines_nginx=0, lines_sshd=200_000, lines_error=0, seed=seed)
    return [ln[15:] + "\n" for ln in (folder / "auth.log").read_text().splitlines()]


def sustained_test(
    daemon: Daemon, auth: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Append sshd lines at args.rate for args.seconds, sampling /metrics each second."""
    tails = sshd_pool(work / "pool", args.seed)
    limit = args.lines or int((args.rate or 10**9) * args.seconds)
    before = daemon.metrics()
    base_read = source_value(before, "aisentinel_source_lines_read_total", "sshd")
    base_done = lines_done(before, "sshd")
    written = 0
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def writer() -> None:
        nonlocal written
        chunk = 1000
        t0 = time.monotonic()
        with auth.open("a", encoding="utf-8") as fh:
            while not stop.is_set() and written < limit:
                if args.rate:
                    ahead = written - (time.monotonic() - t0) * args.rate
                    if ahead > 0:
                        time.sleep(min(ahead / args.rate, 0.05))
                        continue
                ts = fmt_syslog_ts(int(time.time()))
                start = written % len(tails)
                part = tails[start : start + chunk]
                fh.write("".join(ts + t for t in part))
                fh.flush()
                written += len(part)

    thread = threading.Thread(target=writer, daemon=True)
    t_start = time.monotonic()
    thread.start()

    def sample() -> dict[str, float]:
        m = daemon.metrics()
        done = lines_done(m, "sshd")
        return {
            "t": round(time.monotonic() - t_start, 2),
            "written": written,
            "read": source_value(m, "aisentinel_source_lines_read_total", "sshd") - base_read,
            "processed": done - base_done,
            "lag_bytes": source_value(m, "aisentinel_source_lag_bytes", "sshd"),
            "queue_batches": m.get(("aisentinel_pipeline_queue_batches", ""), 0.0),
        }

    while time.monotonic() - t_start < args.seconds:
        time.sleep(1.0)
        samples.append(sample())
    stop.set()
    thread.join()
    t_stop = time.monotonic()
    write_secs = t_stop - t_start
    drained_at = None
    deadline = t_stop + 120
    while time.monotonic() < deadline:
        s = sample()
        if s["processed"] >= written:
            drained_at = time.monotonic() - t_stop
            samples.append(s)
            break
        time.sleep(0.2)
    last = samples[-1]
    return {
        "target_rate": args.rate,
        "seconds": round(write_secs, 2),
        "written": written,
        "written_per_s": written / write_secs,
        "processed_per_s_while_writing": max(
            (s["processed"] for s in samples if s["t"] <= args.seconds + 0.5), default=0.0
        )
        / write_secs,
        "processed_per_s_to_drain": last["processed"] / (write_secs + (drained_at or 0.0)),
        "drained_after_s": drained_at,
        "max_lag_bytes": max(s["lag_bytes"] for s in samples),
        "samples": samples,
    }


def print_report(res: dict[str, Any]) -> None:
    lat = res["latency"]
    print(f"append -> decision latency: {lat['attacks']} ssh brute forces (5 failures each), "
          f"background {res['background_rate']:,.0f} nginx lines/s")  # fmt: skip
    if "median_ms" in lat:
        print(f"  {'min':>8} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)   "
              f"decided {lat['decided']}/{lat['attacks']}, "
              f"no decision within 10 s: {lat['missed']}")  # fmt: skip
        print(f"  {lat['min_ms']:>8.1f} {lat['median_ms']:>8.1f} {lat['p90_ms']:>8.1f} "
              f"{lat['p99_ms']:>8.1f} {lat['max_ms']:>8.1f}")  # fmt: skip
    else:
        print(f"  no decisions seen ({lat['missed']} missed)")
    sus = res.get("sustained")
    if not sus:
        return
    target = f"{sus['target_rate']:,} lines/s" if sus["target_rate"] else "as fast as possible"
    print(f"\nsustained sshd appends: target {target} for {sus['seconds']} s")
    print(f"  written   {sus['written_per_s']:>10,.0f} lines/s ({sus['written']:,} lines)")
    print(f"  processed {sus['processed_per_s_while_writing']:>10,.0f} lines/s while writing")
    print(
        f"  overall   {sus['processed_per_s_to_drain']:>10,.0f} lines/s (written / time to drain)"
    )
    drained = sus["drained_after_s"]
    print(f"  backlog drained {drained:.1f} s after the writer stopped" if drained is not None
          else "  backlog NOT drained within 120 s")  # fmt: skip
    print(f"  {'t':>6} {'written':>10} {'read':>10} {'processed':>10} {'lag bytes':>11} "
          f"{'queue':>6}")  # fmt: skip
    for s in sus["samples"]:
        print(f"  {s['t']:>6.1f} {s['written']:>10,.0f} {s['read']:>10,.0f} "
              f"{s['processed']:>10,.0f} {s['lag_bytes']:>11,.0f} "
              f"{s['queue_batches']:>6.0f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--attacks", type=int, default=200)
    ap.add_argument("--background-rate", type=float, default=5000.0, help="nginx lines/s")
    ap.add_argument("--rate", type=int, default=60_000, help="sustained sshd lines/s (0: max)")
    ap.add_argument("--seconds", type=float, default=20.0, help="sustained test length")
    ap.add_argument("--lines", type=int, default=0, help="cap on sustained lines (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    ap.add_argument("--no-sustained", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aisentinel-latency-") as tmp:
        work = Path(tmp)
        access, auth = work / "access.log", work / "auth.log"
        access.touch()
        auth.touch()
        sources = {"nginx-access": ("nginx", access), "sshd": ("sshd", auth)}
        daemon = Daemon(work, sources, args.aisentinel)
        res: dict[str, Any] = {"background_rate": args.background_rate, "pid": daemon.pid()}
        try:
            daemon.wait_ready(len(sources))
            bg = Background(access, args.background_rate, args.seed)
            bg.start()
            try:
                res["latency"] = latency_test(daemon, auth, args)
            finally:
                bg.stop_event.set()
                bg.join()
            res["background_written"] = bg.written
            if not args.no_sustained:
                res["sustained"] = sustained_test(daemon, auth, work, args)
        except RuntimeError as exc:
            res["error"] = str(exc)
        finally:
            res["daemon_exit"] = daemon.stop()
            res["daemon_events"] = daemon.events
            res["daemon_non_json_lines"] = daemon.non_json
    if args.json:
        print(json.dumps(res, indent=1))
    elif "error" in res:
        print(f"daemon failed: {res['error']}")
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
