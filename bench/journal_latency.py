#!/usr/bin/env python3
"""Append -> decision latency of the daemon reading sshd from the systemd journal, side
by side with fail2ban-server's systemd backend on the same journal directory.

Debian 12 logs sshd to the journal only, so on most boxes the journald source is what
sees a brute force first. bench/latency.py times file sources; this times the journal
path: entry written -> journal file -> sd-journal wake-up -> batch -> decision.

A writer process (``systemd-journal-remote``, reading the export format on a pipe)
appends entries to one journal file as they come, as journald would. A thread feeds it
background sshd entries at ``--background-rate`` entries/s (the ``storm`` profile:
bench/storm.py's auth.log, 70% attack traffic from 5,100 addresses; ``quiet``: the demo
scenario's sshd lines), each stamped with the current time, with one entry of another
program (an inference server) after every third. Then ``--attacks`` ssh brute forces
(5 ``Failed password`` entries from a fresh address each, the first four flushed
together, the 5th on its own) are injected one at a time, and per attack the time from
the flush of the 5th entry into the pipe to the daemon's ``decision`` event on its JSON
log is measured (as in bench/latency.py, from the flush of the first four when one of
them decided it). fail2ban-server (bench/fail2ban_anchor.py, stock sshd jail, ``backend
= systemd[journalpath=...]``) reads the same directory at the same time; its latency runs
from the same flush to the stamp of its "Ban ADDR" log line. The attack addresses are
never ones of the background.

The daemon runs ``aisentinel run`` (dry-run) with one journald source (``start_at =
"end"``, the default ``poll_interval``), every detector on, state in a temporary folder.

    .venv/bin/python bench/journal_latency.py [--profile storm|quiet] [--attacks 200]
        [--background-rate 5000] [--no-fail2ban] [--json]

Needs ``/lib/systemd/systemd-journal-remote`` and python-systemd in the venv; fail2ban's
backend needs Debian's python3-systemd (``make test`` installs all three).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from fail2ban_anchor import Fail2ban, version
from journal_rss import (
    BOOT_ID,
    JOURNAL_REMOTE,
    MACHINE_ID,
    OTHER,
    add_common_arguments,
    anchor_unavailable,
    journal_remote_missing,
    sshd_lines,
)
from latency import (
    Daemon,
    Paced,
    attack_address,
    both_stopped,
    latency_ratio,
    print_latency_table,
    timed_attacks,
)

ADDRESS = re.compile(r" from (\S+) port ")


def sshd_entry(pid: int, msg: str) -> bytes:
    """One sshd entry in the journal export format, stamped now, with the fields
    journald gives a Debian 12 sshd entry."""
    t = int(time.time() * 1e6)
    return (
        f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={t}\n_BOOT_ID={BOOT_ID}\n"
        f"_MACHINE_ID={MACHINE_ID}\n_HOSTNAME=gpu-box-01\nPRIORITY=6\nSYSLOG_FACILITY=10\n"
        f"SYSLOG_IDENTIFIER=sshd\nSYSLOG_PID={pid}\n_TRANSPORT=syslog\n_UID=0\n_GID=0\n"
        f"_COMM=sshd\n_EXE=/usr/sbin/sshd\n_CMDLINE=sshd: unknown [priv]\n"
        f"_SYSTEMD_CGROUP=/system.slice/ssh.service\n_SYSTEMD_UNIT=ssh.service\n"
        f"_SYSTEMD_SLICE=system.slice\n_PID={pid}\n_SOURCE_REALTIME_TIMESTAMP={t - 7}\n"
        f"MESSAGE={msg}\n\n"
    ).encode()


def other_entry(i: int) -> bytes:
    """One entry of another program (an inference server's request log)."""
    t = int(time.time() * 1e6)
    return (
        f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={t}\n_BOOT_ID={BOOT_ID}\n"
        f"_HOSTNAME=gpu-box-01\n_PID=777\n_COMM=ollama\nSYSLOG_IDENTIFIER=ollama\n"
        f"_SYSTEMD_UNIT=ollama.service\nMESSAGE={OTHER.format(i % 250)}\n\n"
    ).encode()


class Writer:
    """``systemd-journal-remote`` writing what it is fed on a pipe to ``jdir``."""

    def __init__(self, jdir: Path) -> None:
        jdir.mkdir()
        self.err = (jdir.parent / "journal-remote.stderr").open("wb")
        self.proc = subprocess.Popen(
            [str(JOURNAL_REMOTE), f"--output={jdir / 'bench.journal'}", "-"],
            stdin=subprocess.PIPE,
            stderr=self.err,
        )
        assert self.proc.stdin is not None
        self.pipe: IO[bytes] = self.proc.stdin
        self.lock = threading.Lock()

    def write(self, data: bytes) -> float:
        """Write and flush ``data``; the monotonic time just before the flush."""
        with self.lock:
            self.pipe.write(data)
            stamp = time.monotonic()
            self.pipe.flush()
        return stamp

    def close(self) -> None:
        if self.proc.poll() is None:
            self.pipe.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class Background(Paced):
    """Feeds the writer ``rate`` sshd entries/s (and one other entry per three) until stopped."""

    def __init__(self, writer: Writer, rate: float, pool: list[tuple[int, str]]) -> None:
        super().__init__(rate)
        self.writer = writer
        self.pool = pool

    def write(self, first: int, count: int) -> None:
        n = len(self.pool)
        chunks = []
        for i in range(first, first + count):
            chunks.append(sshd_entry(*self.pool[i % n]))
            if i % 3 == 2:
                chunks.append(other_entry(i))
        self.writer.write(b"".join(chunks))


def brute_force(writer: Writer, addr: str, pid: int) -> tuple[float, float, float]:
    """Five failed logins from ``addr`` (four flushed together, then the 5th); the
    monotonic time of the first flush and the (monotonic, wall-clock) time of the last."""
    entries = [
        sshd_entry(pid, f"Failed password for root from {addr} port {40000 + k} ssh2")
        for k in range(5)
    ]
    first = writer.write(b"".join(entries[:4]))
    wall = time.time()
    fifth = writer.write(entries[4])
    return first, fifth, wall


def latency_test(
    daemon: Daemon, f2b: Fail2ban | None, writer: Writer, taken: set[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Brute forces from addresses not in ``taken``, one at a time; see
    :func:`latency.timed_attacks`."""
    addresses = (a for a in map(attack_address, itertools.count()) if a not in taken)

    def inject(i: int) -> tuple[str, float, float, float]:
        addr = next(addresses)
        return addr, *brute_force(writer, addr, 4000 + i)

    return timed_attacks(daemon, f2b, args.attacks, inject)


def source_config(jdir: Path) -> str:
    return f'[[sources]]\nname = "journal"\ntype = "journald"\ndirectory = "{jdir}"\n'


def run(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"profile": args.profile, "background_rate": args.background_rate}
    with tempfile.TemporaryDirectory(prefix="aisentinel-jlat-") as tmp:
        work = Path(tmp)
        (work / "gen").mkdir()
        pool = sshd_lines(args.profile, args.lines, work / "gen", args.seed)
        taken = {m[1] for _, msg in pool if (m := ADDRESS.search(msg))}
        writer = Writer(work / "journal")
        writer.write(other_entry(0))  # the journal file exists before either reader opens
        f2b: Fail2ban | None = None
        if not args.no_fail2ban:
            if reason := anchor_unavailable():
                res["fail2ban_skipped"] = reason
            else:
                res["fail2ban"] = {"version": version()}
                jdir = work / "journal"
                backend = f"systemd[journalpath={jdir}]"
                f2b = Fail2ban(work, {"sshd": ("sshd", work / "unused.log")}, backend)
        daemon = Daemon(work, {}, args.aisentinel, extra_config=source_config(work / "journal"))
        bg = Background(writer, args.background_rate, pool)
        try:
            with both_stopped(res, daemon, f2b):
                if f2b is not None:
                    f2b.wait_ready()
                daemon.wait_ready(1)
                bg.start()
                time.sleep(2.0)  # both readers are following the background
                res["latency"] = latency_test(daemon, f2b, writer, taken, args)
        finally:
            bg.stop_event.set()
            if bg.is_alive():
                bg.join()
            writer.close()
        res["background_written"] = bg.written
        res["daemon_events"] = daemon.events
    if ratio := latency_ratio(res.get("latency", {})):
        res["latency_ratio"] = ratio
    return res


def print_report(res: dict[str, Any]) -> None:
    if "error" in res:
        print(f"benchmark failed: {res['error']}")
        return
    lat = res["latency"]
    print(f"== profile {res['profile']}: journal append -> decision, {lat['attacks']} ssh brute "
          f"forces (5 failures each), background {res['background_rate']:,.0f} {res['profile']} "
          f"sshd entries/s (+1 other per 3)")  # fmt: skip
    f2b = res.get("fail2ban")
    anchor = f"fail2ban {f2b['version']} (systemd)" if f2b else None
    print_latency_table(lat, "aisentinel (journald)", anchor)
    print(f"  background entries written: {res['background_written']:,}")
    if "fail2ban_skipped" in res:
        print(f"  fail2ban anchor skipped: {res['fail2ban_skipped']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", choices=("storm", "quiet"), default="storm")
    ap.add_argument("--attacks", type=int, default=200)
    ap.add_argument(
        "--background-rate", type=float, default=5000.0, help="background sshd entries/s"
    )
    ap.add_argument("--lines", type=int, default=50_000, help="background pool, sshd lines")
    add_common_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if journal_remote_missing():
        return 1
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
