#!/usr/bin/env python3
"""Resident memory of the daemon reading sshd from the systemd journal.

Debian 12 logs sshd to the journal only (no rsyslog, no auth.log by default), so the
journald source is how most boxes feed aisentinel. sd-journal reads journal files
through memory maps, and the pages it touches stay in the reader's resident set while
the reader is open: VmRSS grows with every entry read, as "file" pages (RssFile).

The benchmark takes a profile's sshd log lines (``storm``: bench/storm.py's auth.log;
``quiet``: the demo scenario's), turns each into a journal entry (MESSAGE, _PID,
_COMM=sshd, SYSLOG_IDENTIFIER=sshd, _SYSTEMD_UNIT=sshd.service, stamped within the last
five minutes, with the other fields journald gives a Debian 12 sshd entry: 21 in all)
and writes them with ``systemd-journal-remote`` to a journal directory,
one entry of another program (an inference server) after every third. Then it starts
``aisentinel run`` with one journald source on that directory (``start_at =
"beginning"``, every detector on) and, side by side, a private ``fail2ban-server``
(bench/fail2ban_anchor.py) with its stock sshd jail on ``backend = systemd`` on the same
directory (it reads the entries of the last ``findtime``, all of them). Each is done
when it has read every entry (aisentinel: the source's lines metrics; fail2ban: "Total
failed" of the jail unchanged for 3 s). VmRSS, RssAnon and RssFile are read then
("after") and once more after one housekeeping tick ("settled").

    .venv/bin/python bench/journal_rss.py [--profile storm|quiet|both] [--lines N]
        [--no-fail2ban] [--json]

fail2ban's systemd backend needs Debian's python3-systemd (``make test`` installs it).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import storm
from fail2ban_anchor import SERVER_PYTHON, Fail2ban, unavailable, version
from latency import Daemon, both_stopped, lines_done
from rss import proc_status

from aisentinel.demo.scenario import generate

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
SETTLE_SECONDS = 11.0
"""Longer than the daemon's default housekeeping interval (``expire_interval``, 10 s)."""
SYSLOG = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ (sshd)\[(\d+)\]: (.*)$")
BOOT_ID = "0123456789abcdef0123456789abcdef"
MACHINE_ID = "fedcba9876543210fedcba9876543210"
OTHER = '[GIN] 2026/12/06 - 15:00:00 | 200 |  1.2ms | 10.0.0.{} | POST "/api/generate"'


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of ``pid`` in MB."""
    return proc_status(pid, ("VmRSS", "VmHWM", "RssAnon", "RssFile"))


def anchor_unavailable() -> str | None:
    """Why fail2ban-server cannot read the journal here, or None."""
    if reason := unavailable():
        return reason
    probe = [str(SERVER_PYTHON), "-c", "import systemd.journal"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        return f"{SERVER_PYTHON} cannot import systemd.journal (Debian package python3-systemd)"
    return None


def sshd_lines(profile: str, lines: int, work: Path, seed: int) -> list[tuple[int, str]]:
    """(pid, message) of the profile's sshd lines."""
    if profile == "storm":
        path = storm.generate(work, lines=lines, seed=seed).files["auth"]
    else:
        generate(work, lines_nginx=1, lines_sshd=lines, lines_error=0, seed=seed)
        path = work / "auth.log"
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            m = SYSLOG.match(line.rstrip("\n"))
            if m:
                out.append((int(m[2]), m[3]))
    return out


def write_journal(jdir: Path, entries: list[tuple[int, str]]) -> int:
    """The entries (and one other program's after every third) as journal files in
    ``jdir``, stamped over the five minutes before now; how many sshd entries."""
    jdir.mkdir()
    n = len(entries) + len(entries) // 3
    end = int(time.time() * 1e6) - 30_000_000
    step = max(1, 270_000_000 // max(n, 1))
    t = end - n * step
    chunks: list[str] = []
    for i, (pid, msg) in enumerate(entries):
        t += step
        chunks.append(
            f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={t - end + 10**12}\n"
            f"_BOOT_ID={BOOT_ID}\n_MACHINE_ID={MACHINE_ID}\n_HOSTNAME=gpu-box-01\n"
            f"PRIORITY=6\nSYSLOG_FACILITY=10\nSYSLOG_IDENTIFIER=sshd\nSYSLOG_PID={pid}\n"
            f"_TRANSPORT=syslog\n_UID=0\n_GID=0\n_COMM=sshd\n_EXE=/usr/sbin/sshd\n"
            f"_CMDLINE=sshd: unknown [priv]\n_CAP_EFFECTIVE=1ffffffffff\n"
            f"_SYSTEMD_CGROUP=/system.slice/ssh.service\n_SYSTEMD_UNIT=sshd.service\n"
            f"_SYSTEMD_SLICE=system.slice\n_SYSTEMD_INVOCATION_ID={BOOT_ID}\n_PID={pid}\n"
            f"_SOURCE_REALTIME_TIMESTAMP={t - 7}\nMESSAGE={msg}\n\n"
        )
        if i % 3 == 2:
            t += step
            chunks.append(
                f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={t - end + 10**12}\n"
                f"_BOOT_ID={BOOT_ID}\n_HOSTNAME=gpu-box-01\n_PID=777\n_COMM=ollama\n"
                f"SYSLOG_IDENTIFIER=ollama\n_SYSTEMD_UNIT=ollama.service\n"
                f"MESSAGE={OTHER.format(i % 250)}\n\n"
            )
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={jdir / 'bench.journal'}", "-"],
        input="".join(chunks).encode(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return len(entries)


def source_config(jdir: Path) -> str:
    return (
        "[[sources]]\n"
        'name = "journal"\n'
        'type = "journald"\n'
        f'directory = "{jdir}"\n'
        'start_at = "beginning"\n'
        "poll_interval = 0.25\n"
    )


def run_profile(profile: str, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"profile": profile}
    with tempfile.TemporaryDirectory(prefix="aisentinel-jrss-") as tmp:
        work = Path(tmp)
        (work / "gen").mkdir()
        jdir = work / "journal"
        n = write_journal(jdir, sshd_lines(profile, args.lines, work / "gen", args.seed))
        res["entries"] = {"sshd": n, "other": n // 3}
        res["journal_mb"] = round(sum(p.stat().st_size for p in jdir.iterdir()) / 1e6, 1)
        f2b: Fail2ban | None = None
        if not args.no_fail2ban:
            if reason := anchor_unavailable():
                res["fail2ban_skipped"] = reason
            else:
                res["fail2ban"] = {"version": version()}
                f2b = Fail2ban(
                    work, {"sshd": ("sshd", work / "unused.log")}, f"systemd[journalpath={jdir}]"
                )
        daemon = Daemon(work, {}, args.aisentinel, extra_config=source_config(jdir))
        with both_stopped(res, daemon, f2b):
            if f2b is not None:
                f2b.wait_ready()
            daemon.wait_ready(1)
            res.update(measure(daemon, f2b, n, res))
    return res


def measure(daemon: Daemon, f2b: Fail2ban | None, n: int, res: dict[str, Any]) -> dict[str, Any]:
    """Memory once each has read every entry, and after one housekeeping tick."""
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    deadline = t0 + 600
    done = f2b is None
    last, since = -1, t0
    while time.monotonic() < deadline:
        if "seconds" not in out and lines_done(daemon.metrics(), "journal") >= n:
            out["seconds"] = round(time.monotonic() - t0, 2)
            out["after"] = proc_memory(daemon.pid())
        if not done and f2b is not None:
            failed = f2b.status("sshd").get("Total failed", 0)
            if failed != last:
                last, since = failed, time.monotonic()
            elif failed > 0 and time.monotonic() - since >= 3.0:
                done = True
                res["fail2ban"]["failures_counted"] = failed
                res["fail2ban"]["seconds"] = round(since - t0, 2)
                res["fail2ban"]["after"] = proc_memory(f2b.pid())
        if done and "seconds" in out:
            break
        time.sleep(0.25)
    else:
        out["warning"] = "not every entry was read within 600 s"
    time.sleep(SETTLE_SECONDS)
    out["settled"] = proc_memory(daemon.pid())
    if f2b is not None:
        res["fail2ban"]["settled"] = proc_memory(f2b.pid())
    return out


def print_report(res: dict[str, Any]) -> None:
    n = res["entries"]
    print(f"profile {res['profile']}: {n['sshd']:,} sshd entries and {n['other']:,} others, "
          f"{res['journal_mb']} MB of journal files")  # fmt: skip
    if "error" in res:
        print(f"  benchmark failed: {res['error']}")
        return
    rows = [("aisentinel", res.get("after"), res["settled"], res.get("seconds"))]
    f2b = res.get("fail2ban", {})
    if "settled" in f2b:
        name = f"fail2ban {f2b['version']} (systemd)"
        rows.append((name, f2b.get("after"), f2b["settled"], f2b.get("seconds")))
    print(f"  {'tool':<26} {'after VmRSS':>11} {'settled VmRSS':>13} {'of it RssFile':>13} "
          f"{'VmHWM':>7} {'read in s':>9}   (MB)")  # fmt: skip
    for name, after, settled, secs in rows:
        a = f"{after['VmRSS']:>11.1f}" if after else f"{'-':>11}"
        took = f"{secs:>9.2f}" if secs is not None else f"{'not all':>9}"
        print(f"  {name:<26} {a} {settled['VmRSS']:>13.1f} {settled['RssFile']:>13.1f} "
              f"{settled['VmHWM']:>7.1f} {took}")  # fmt: skip
    if len(rows) == 2:
        ratio = f2b["settled"]["VmRSS"] / res["settled"]["VmRSS"]
        print(f"  settled VmRSS, fail2ban / aisentinel: {ratio:.2f}x; fail2ban counted "
              f"{f2b.get('failures_counted', 0):,} failures")  # fmt: skip
    for key in ("warning", "fail2ban_skipped"):
        if key in res:
            print(f"  {key}: {res[key]}")


def add_common_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every journal benchmark takes: --seed, --json, --aisentinel, --no-fail2ban."""
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    ap.add_argument("--no-fail2ban", action="store_true", help="skip the fail2ban anchor")


def journal_remote_missing() -> bool:
    """Say so and return True when the journal writer the benchmarks use is missing."""
    if JOURNAL_REMOTE.exists():
        return False
    print(f"needs {JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", choices=("storm", "quiet", "both"), default="both")
    ap.add_argument("--lines", type=int, default=200_000, help="sshd log lines to generate")
    add_common_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if journal_remote_missing():
        return 1
    profiles = ("quiet", "storm") if args.profile == "both" else (args.profile,)
    results = [run_profile(p, args) for p in profiles]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for res in results:
            print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
