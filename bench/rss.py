#!/usr/bin/env python3
"""Resident memory of the daemon under many distinct clients.

Starts ``aisentinel run`` (same temporary config as bench/latency.py), reads VmRSS of
its pid from /proc, then appends traffic from ``--lines`` distinct client addresses
(default 100,000, from 100.64.0.0/10: only strings in a log file): every address
sends one nginx request (mostly normal, some 404 probes and 401s) and a third of them
one or two failed ssh logins, below every threshold, so the detectors have to track
them all. When the daemon has processed every line, VmRSS is read again, with VmHWM
(the peak). Target: under 64 MB.

    .venv/bin/python bench/rss.py [--lines 100000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latency import Daemon, lines_done

from aisentinel.demo.scenario import (
    fmt_access_ts,
    fmt_syslog_ts,
    normal_access_records,
    render_access,
)

TARGET_MB = 64.0


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (from /proc/PID/status)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024.0
    return out


def client(i: int) -> str:
    """The i-th distinct client address in 100.64.0.0/10."""
    return f"100.{64 + (i >> 16) % 64}.{(i >> 8) % 256}.{i % 256}"


def write_traffic(access: Path, auth: Path, n: int, seed: int) -> tuple[int, int]:
    """Append traffic from ``n`` distinct clients; returns (access lines, auth lines)."""
    rng = random.Random(seed)
    normal = normal_access_records(1000, seed=seed)
    a_ts = fmt_access_ts(int(time.time()))
    s_ts = fmt_syslog_ts(int(time.time()))
    n_access = n_auth = 0
    with access.open("a", encoding="utf-8") as fa, auth.open("a", encoding="utf-8") as fs:
        acc: list[str] = []
        ssh: list[str] = []
        for i in range(n):
            ip = client(i)
            roll = rng.random()
            if roll < 0.8:
                rec = normal[i % len(normal)]
                acc.append(render_access(a_ts, (ip, *rec[1:])))
            elif roll < 0.9:
                acc.append(
                    f'{ip} - - [{a_ts}] "GET /.env HTTP/1.1" 404 153 "-" "Go-http-client/1.1"'
                )
            else:
                acc.append(
                    f'{ip} - admin [{a_ts}] "GET /api/tags HTTP/1.1" 401 179 "-" "curl/7.88.1"'
                )
            if i % 3 == 0:
                for k in range(1 + i % 2):
                    ssh.append(
                        f"{s_ts} gpu-box-01 sshd[{1000 + i % 50000}]: Failed password for "
                        f"invalid user u{i % 977} from {ip} port {30000 + k} ssh2"
                    )
            if len(acc) >= 5000:
                fa.write("\n".join(acc) + "\n")
                fs.write("\n".join(ssh) + "\n" if ssh else "")
                fa.flush()
                fs.flush()
                n_access += len(acc)
                n_auth += len(ssh)
                acc.clear()
                ssh.clear()
        if acc:
            fa.write("\n".join(acc) + "\n")
            n_access += len(acc)
        if ssh:
            fs.write("\n".join(ssh) + "\n")
            n_auth += len(ssh)
    return n_access, n_auth


def measure(daemon: Daemon, args: argparse.Namespace, access: Path, auth: Path) -> dict[str, Any]:
    """RSS before and after the traffic, and what the daemon made of it."""
    res: dict[str, Any] = {}
    time.sleep(1.0)
    res["before"] = proc_status(daemon.pid())
    t0 = time.monotonic()
    n_access, n_auth = write_traffic(access, auth, args.lines, args.seed)
    res["lines"] = {"access": n_access, "auth": n_auth}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        m = daemon.metrics()
        if lines_done(m, "nginx-access") >= n_access and lines_done(m, "sshd") >= n_auth:
            break
        time.sleep(0.5)
    else:
        res["warning"] = "not every line was processed within 300 s"
    res["seconds_to_process"] = round(time.monotonic() - t0, 2)
    res["after"] = proc_status(daemon.pid())
    m = daemon.metrics()
    res["tracked_keys"] = {
        labels: v for (name, labels), v in m.items() if name == "aisentinel_detector_tracked_keys"
    }
    res["decisions"] = {
        labels: v for (name, labels), v in m.items() if name == "aisentinel_decisions_total"
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000, help="distinct client addresses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    args = ap.parse_args(argv)

    res: dict[str, Any] = {"clients": args.lines, "target_mb": TARGET_MB}
    with tempfile.TemporaryDirectory(prefix="aisentinel-rss-") as tmp:
        work = Path(tmp)
        access, auth = work / "access.log", work / "auth.log"
        access.touch()
        auth.touch()
        sources = {"nginx-access": ("nginx", access), "sshd": ("sshd", auth)}
        daemon = Daemon(work, sources, args.aisentinel)
        try:
            daemon.wait_ready(len(sources))
            res.update(measure(daemon, args, access, auth))
        except RuntimeError as exc:
            res["error"] = str(exc)
        finally:
            res["daemon_exit"] = daemon.stop()
    if args.json:
        print(json.dumps(res, indent=1))
    elif "error" in res:
        print(f"daemon failed: {res['error']}")
    else:
        b, a = res["before"], res["after"]
        print(f"daemon RSS with {args.lines:,} distinct clients "
              f"({res['lines']['access']:,} nginx + {res['lines']['auth']:,} sshd lines, "
              f"processed in {res['seconds_to_process']} s)")  # fmt: skip
        print(f"  {'':<22} {'VmRSS MB':>9} {'VmHWM MB':>9}")
        print(f"  {'idle after start':<22} {b['VmRSS']:>9.1f} {b['VmHWM']:>9.1f}")
        print(f"  {'after the traffic':<22} {a['VmRSS']:>9.1f} {a['VmHWM']:>9.1f}")
        verdict = "OK" if a["VmHWM"] < TARGET_MB else "OVER"
        keys = res["tracked_keys"]
        print(f"  target < {TARGET_MB:.0f} MB: {verdict}; detector keys tracked: "
              f"{sum(keys.values()):,.0f}")  # fmt: skip
        for labels, n in sorted(keys.items()):
            print(f"    {labels}: {n:,.0f}")
        if "warning" in res:
            print(f"  warning: {res['warning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
