#!/usr/bin/env python3
"""Resident memory of the daemon under many distinct clients.

Starts ``aisentinel run`` (same temporary config as bench/latency.py), reads VmRSS of
its pid from /proc, then appends traffic from ``--lines`` distinct client addresses
(default 100,000, from 100.64.0.0/10: only strings in a log file): every address
sends one nginx request (mostly normal, some 404 probes and 401s) and a third of them
one or two failed ssh logins, below every threshold, so the detectors have to track
them all (aisentinel's credential_stuffing still sees the whole as one distributed
campaign and bans its members). When the daemon has processed every line, VmRSS is
read again ("after"), and once more after one housekeeping tick ("settled": the
daemon expires idle keys and gives freed heap pages back, see aisentinel/memory.py),
with VmHWM (the peak).
Target: settled VmRSS under 64 MB.

The anchor, a private ``fail2ban-server`` (bench/fail2ban_anchor.py: jails sshd on
auth.log and nginx-botsearch on access.log, maxretry 5, findtime 10m, backend pyinotify
when importable, else polling), follows the same two files at the same time and is
measured the same way; it is done when each jail's "Total failed" reaches the lines its
filter matches (every sshd line; the WordPress probes of access.log).
``--no-fail2ban`` skips it.

    .venv/bin/python bench/rss.py [--lines 100000] [--seed 0] [--no-fail2ban] [--json]
        [--compiled]

``--compiled`` runs the mypyc build of ``make compiled`` (what the .deb ships).
``--only ssh_bruteforce,scanning`` disables every other detector: the same two
detections as the anchor's two jails (like for like; the default runs every detector).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fail2ban_anchor import Fail2ban, best_backend, unavailable, version
from gen import COMPILED, aisentinel_cmd, aisentinel_env, detectors_off, only_detectors
from latency import Daemon, both_stopped, lines_done

from aisentinel.demo.scenario import (
    fmt_access_ts,
    fmt_syslog_ts,
    normal_access_records,
    render_access,
)

TARGET_MB = 64.0
SETTLE_SECONDS = 11.0
"""Longer than the daemon's default housekeeping interval (``expire_interval``, 10 s)."""


def proc_status(pid: int, keys: tuple[str, ...] = ("VmRSS", "VmHWM")) -> dict[str, float]:
    """The memory figures ``keys`` (VmRSS and VmHWM unless named) of ``pid`` in MB, from
    /proc/PID/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0]) / 1024.0
    return out


def client(i: int) -> str:
    """The i-th distinct client address in 100.64.0.0/10."""
    return f"100.{64 + (i >> 16) % 64}.{(i >> 8) % 256}.{i % 256}"


def write_traffic(access: Path, auth: Path, n: int, seed: int) -> tuple[int, int, int]:
    """Append traffic from ``n`` distinct clients; returns (access lines, auth lines, the
    access lines fail2ban's nginx-botsearch filter matches)."""
    rng = random.Random(seed)
    normal = normal_access_records(1000, seed=seed)
    a_ts = fmt_access_ts(int(time.time()))
    s_ts = fmt_syslog_ts(int(time.time()))
    n_access = n_auth = n_botsearch = 0
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
                # Half the probes are ones fail2ban's nginx-botsearch filter matches.
                probe = "/wp-login.php" if i % 2 else "/.env"
                n_botsearch += i % 2
                acc.append(
                    f'{ip} - - [{a_ts}] "GET {probe} HTTP/1.1" 404 153 "-" "Go-http-client/1.1"'
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
    return n_access, n_auth, n_botsearch


def measure(
    daemon: Daemon, f2b: Fail2ban | None, args: argparse.Namespace, access: Path, auth: Path
) -> dict[str, Any]:
    """RSS before and after the traffic, and what each daemon made of it (fail2ban's
    figures under the key "fail2ban" when it runs)."""
    res: dict[str, Any] = {"fail2ban": {}} if f2b is not None else {}
    time.sleep(1.0)
    res["before"] = proc_status(daemon.pid())
    if f2b is not None:
        res["fail2ban"]["before"] = proc_status(f2b.pid())
    t0 = time.monotonic()
    n_access, n_auth, n_botsearch = write_traffic(access, auth, args.lines, args.seed)
    res["lines"] = {"access": n_access, "auth": n_auth, "botsearch": n_botsearch}
    expected = {"sshd": n_auth, "nginx-botsearch": n_botsearch}
    deadline = time.monotonic() + 300
    done = f2b is None
    while time.monotonic() < deadline:
        m = daemon.metrics()
        if lines_done(m, "nginx-access") >= n_access and lines_done(m, "sshd") >= n_auth:
            res.setdefault("seconds_to_process", round(time.monotonic() - t0, 2))
        if f2b is not None and not done:
            failed = {jail: f2b.status(jail).get("Total failed", 0) for jail in expected}
            res["fail2ban"]["failures_counted"] = failed
            if all(failed[jail] >= n for jail, n in expected.items()):
                res["fail2ban"]["seconds_to_process"] = round(time.monotonic() - t0, 2)
                done = True
        if done and "seconds_to_process" in res:
            break
        time.sleep(0.5)
    else:
        res["warning"] = "not every line was processed within 300 s"
    res["after"] = proc_status(daemon.pid())
    if f2b is not None:
        res["fail2ban"]["after"] = proc_status(f2b.pid())
    # Settled: after one housekeeping tick (expire_interval, 10 s by default), which
    # expires nothing here (every key is younger than its window) and trims the heap.
    time.sleep(SETTLE_SECONDS)
    res["settled"] = proc_status(daemon.pid())
    if f2b is not None:
        res["fail2ban"]["settled"] = proc_status(f2b.pid())
    m = daemon.metrics()
    res["tracked_keys"] = {
        labels: v for (name, labels), v in m.items() if name == "aisentinel_detector_tracked_keys"
    }
    res["decisions"] = {
        labels: v for (name, labels), v in m.items() if name == "aisentinel_decisions_total"
    }
    return res


def print_report(res: dict[str, Any], clients: int) -> None:
    b, a = res["before"], res["after"]
    print(f"running: {res['running']}")
    on = res["detectors"]
    print(f"aisentinel detectors: {'all (default config)' if on == 'all' else ', '.join(on)}")
    print(f"daemon RSS with {clients:,} distinct clients "
          f"({res['lines']['access']:,} nginx + {res['lines']['auth']:,} sshd lines)")  # fmt: skip
    f2b = res.get("fail2ban", {})
    s = res["settled"]
    rows = [("aisentinel", b, a, res.get("seconds_to_process"), s)]
    if "after" in f2b:
        name = f"fail2ban {f2b['version']} ({f2b['backend']})"
        rows.append(
            (name, f2b["before"], f2b["after"], f2b.get("seconds_to_process"), f2b["settled"])
        )
    print(f"  {'tool':<26} {'idle VmRSS':>10} {'after VmRSS':>11} {'settled VmRSS':>13} "
          f"{'VmHWM':>7} {'processed in s':>14}   (MB)")  # fmt: skip
    for name, rb, ra, secs, rs in rows:
        took = f"{secs:>14.2f}" if secs is not None else f"{'not all':>14}"
        print(f"  {name:<26} {rb['VmRSS']:>10.1f} {ra['VmRSS']:>11.1f} {rs['VmRSS']:>13.1f} "
              f"{rs['VmHWM']:>7.1f} {took}")  # fmt: skip
    if len(rows) == 2:
        fb, fs = f2b["before"], f2b["settled"]
        idle, settled, peak = (
            fb["VmRSS"] / b["VmRSS"], fs["VmRSS"] / s["VmRSS"], fs["VmHWM"] / s["VmHWM"]
        )  # fmt: skip
        print(f"  {'ratio fail2ban/aisentinel':<26} {idle:>9.2f}x {'':>11} {settled:>12.2f}x "
              f"{peak:>6.2f}x")  # fmt: skip
        counted = f2b.get("failures_counted", {})
        print(f"  fail2ban follows auth.log (jail sshd) and access.log (jail nginx-botsearch): "
              f"failures counted {counted.get('sshd', 0):,} of {res['lines']['auth']:,} sshd "
              f"lines and {counted.get('nginx-botsearch', 0):,} of "
              f"{res['lines']['botsearch']:,} WordPress probes")  # fmt: skip
    verdict = "OK" if s["VmRSS"] < TARGET_MB else "OVER"
    keys = res["tracked_keys"]
    print(f"  aisentinel target < {TARGET_MB:.0f} MB (settled VmRSS): {verdict}; detector keys: "
          f"{sum(keys.values()):,.0f}")  # fmt: skip
    for labels, n in sorted(keys.items()):
        print(f"    {labels}: {n:,.0f}")
    if "warning" in res:
        print(f"  warning: {res['warning']}")


def running(args: argparse.Namespace) -> str:
    """What ``aisentinel --version`` says of the build the benchmark runs."""
    return subprocess.run(
        [*aisentinel_cmd(args.aisentinel), "--version"],
        env=aisentinel_env(compiled=args.compiled),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def only_config(args: argparse.Namespace) -> str:
    """Config text that disables every detector not named by ``--only`` ("" without it)."""
    return "" if args.only is None else detectors_off(args.only)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000, help="distinct client addresses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    ap.add_argument("--no-fail2ban", action="store_true", help="skip the fail2ban anchor")
    ap.add_argument(
        "--compiled", action="store_true", help="run the mypyc build (make compiled) as shipped"
    )
    ap.add_argument("--fail2ban-backend", default=None, help="default: pyinotify, else polling")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated detectors to keep on (the others are disabled); default: all",
    )
    args = ap.parse_args(argv)
    if args.only is not None:
        try:
            args.only = only_detectors(args.only)
        except ValueError as exc:
            ap.error(f"--only: {exc}")
    if args.compiled and not list(COMPILED.glob("aisentinel__mypyc*")):
        ap.error(f"--compiled: no build in {COMPILED}; run `make compiled` first")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res: dict[str, Any] = {"clients": args.lines, "target_mb": TARGET_MB}
    res["detectors"] = sorted(args.only) if args.only is not None else "all"
    res["running"] = running(args)
    anchor = not args.no_fail2ban
    if anchor and (reason := unavailable()):
        res["fail2ban_skipped"] = reason
        anchor = False
    with tempfile.TemporaryDirectory(prefix="aisentinel-rss-") as tmp:
        work = Path(tmp)
        access, auth = work / "access.log", work / "auth.log"
        access.touch()
        auth.touch()
        sources = {"nginx-access": ("nginx", access), "sshd": ("sshd", auth)}
        f2b: Fail2ban | None = None
        if anchor:
            backend = args.fail2ban_backend or best_backend()
            jails = {"sshd": ("sshd", auth), "nginx-botsearch": ("nginx-botsearch", access)}
            res["fail2ban"] = {"version": version(), "backend": backend, "jails": list(jails)}
            f2b = Fail2ban(work, jails, backend)
        daemon = Daemon(
            work, sources, args.aisentinel, compiled=args.compiled, extra_config=only_config(args)
        )
        with both_stopped(res, daemon, f2b):
            if f2b is not None:
                f2b.wait_ready()
            daemon.wait_ready(len(sources))
            out = measure(daemon, f2b, args, access, auth)
            if "fail2ban" in out:
                res["fail2ban"].update(out.pop("fail2ban"))
            res.update(out)
    if args.json:
        print(json.dumps(res, indent=1))
    elif "error" in res:
        print(f"benchmark failed: {res['error']}")
    else:
        if "fail2ban_skipped" in res:
            print(f"fail2ban anchor skipped: {res['fail2ban_skipped']}\n")
        print_report(res, args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
