"""Memory (and per-event cost) of the default detectors under a flood of addresses.

Feeds N distinct attacking addresses through every default detector: each
address sends 3 failed ssh logins (rotating usernames) and 3 HTTP probes that get
404 (one of them a sensitive path), all within the windows. Prints tracked keys
per detector and the process RSS (``VmRSS`` from ``/proc/self/status``) before and
after, so you can see the tables stop growing at ``max_keys``.

    .venv/bin/python bench/memory.py                 # 1,000,000 and 100,000 addresses
    .venv/bin/python bench/memory.py --ips 250000    # one run
    .venv/bin/python bench/memory.py --cost          # microseconds per event, per detector
    .venv/bin/python bench/memory.py --daemon        # RSS with the daemon's imports loaded
    .venv/bin/python bench/memory.py --ips 200000 --drain  # and once the storm expired

RSS "after" is what a daemon holding that many addresses would add to its
import footprint; ``--daemon`` sets the allocator as ``aisentinel run`` does
(``tune_malloc``) and imports ``aisentinel.daemon`` first, so "after" is the whole
process.

Each run is a fresh process so the RSS figures do not include an earlier run.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector
from aisentinel.events import Event, HttpRequest, SshEvent, SshKind
from aisentinel.memory import HeapTrimmer

START = 1_764_000_000.0
USERS = ("root", "admin", "ubuntu", "test", "oracle", "postgres", "git", "user")
PATHS = ("/nope-a", "/nope-b", "/.env")


def rss_mb() -> float:
    """This process's resident set size in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def address(i: int) -> str:
    """The i-th attacking address: IPv4 for even i, IPv6 for odd i."""
    if i % 2:
        return f"2001:db8:{(i >> 16) & 0xFFFF:x}:{i & 0xFFFF:x}::1"
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def attack(i: int, ts: float) -> list[Event]:
    """Three ssh failures and three 404 probes from address i."""
    client = address(i)
    ssh: list[Event] = [
        SshEvent(ts, "auth", client, SshKind.FAILED_PASSWORD, USERS[(i + k) % len(USERS)], 22)
        for k in range(3)
    ]
    http: list[Event] = [
        HttpRequest(ts, "nginx", client, "GET", path, 404, 153, None, "zgrab/0.x") for path in PATHS
    ]
    return ssh + http


def dispatch(detectors: list[Detector]) -> dict[type, list[Detector]]:
    """Detectors by the event types they consume (what the pipeline does)."""
    table: dict[type, list[Detector]] = {}
    for det in detectors:
        for kind in det.consumes:
            table.setdefault(kind, []).append(det)
    return table


def run(ips: int, *, drain: bool = False) -> None:
    """Feed ``ips`` addresses and print keys and RSS; with ``drain``, then what is left
    once the storm has gone quiet (see :func:`drain_run`)."""
    gc.collect()
    before = rss_mb()
    detectors = build_detectors({})
    table = dispatch(detectors)
    step = 300.0 / ips  # all addresses within the shortest window that matters
    findings = 0
    t0 = time.perf_counter()
    for i in range(ips):
        for event in attack(i, START + i * step):
            for det in table[type(event)]:
                if det.observe(event) is not None:
                    findings += 1
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    print(
        f"== {ips:,} distinct addresses ({6 * ips:,} events, {elapsed:.1f}s, {findings} findings)"
    )
    for det in detectors:
        print(
            f"  {det.name:20s} tracked keys {det.tracked_keys():>9,}"
            f"  (max_keys per table {det.config.max_keys:,})"
        )
    print(f"  RSS before {before:.1f} MiB, after {after:.1f} MiB, growth {after - before:.1f} MiB")
    if drain:
        drain_run(detectors, table, START + ips * step)


DRAIN_DAYS = 2
"""Log time the drain runs after the storm: longer than every default window (24 h)."""


def drain_run(detectors: list[Detector], table: dict[type, list[Detector]], t: float) -> None:
    """After the storm: one new address a minute for DRAIN_DAYS of log time, the
    detectors' housekeeping (``expire``) every 10 minutes as the daemon's, then RSS
    after ``gc`` and ``malloc_trim`` (what the daemon's housekeeping tick does)."""
    trim = HeapTrimmer()
    minutes = DRAIN_DAYS * 24 * 60
    for k in range(minutes):
        t += 60.0
        event = attack(10_000_000 + k, t)[0]
        for det in table[type(event)]:
            det.observe(event)
        if k % 10 == 9:
            for det in detectors:
                det.expire(t)
    gc.collect()
    trim.trim(1)
    keys = sum(det.tracked_keys() for det in detectors)
    print(
        f"  drained ({DRAIN_DAYS} days of log time, one new address a minute): {keys:,} keys "
        f"left, RSS {rss_mb():.1f} MiB"
    )


def cost(events_per_kind: int = 200_000) -> None:
    """Microseconds per event per detector, for benign requests and for attack events."""
    benign = [
        HttpRequest(
            START + i * 0.001,
            "nginx",
            f"192.0.2.{i % 200}",
            "POST",
            "/api/chat" if i % 3 == 0 else "/static/app.js?v=3",
            200,
            512,
            None,
            "curl/8",
            key_id=None,
        )
        for i in range(events_per_kind)
    ]
    attacks = [e for i in range(events_per_kind // 6) for e in attack(i, START + i * 0.001)]
    for label, events in (("benign HTTP requests", benign), ("attack events (ssh+404)", attacks)):
        print(f"== {label}: {len(events):,} events")
        for det in build_detectors({}):
            mine = [e for e in events if isinstance(e, det.consumes)]
            if not mine:
                continue
            t0 = time.perf_counter()
            for k in range(0, len(mine), 8192):
                det.observe_many(mine[k : k + 8192])  # the pipeline's batch size
            per = (time.perf_counter() - t0) / len(mine) * 1e6
            print(f"  {det.name:20s} {per:6.2f} us/event")


def main() -> None:
    """Run the scenarios (each in a fresh interpreter unless --ips is given)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, help="one run with this many addresses")
    parser.add_argument("--cost", action="store_true", help="time observe_many() per detector")
    parser.add_argument("--daemon", action="store_true", help="import aisentinel.daemon first")
    parser.add_argument(
        "--drain", action="store_true", help="then let the storm expire and print RSS again"
    )
    args = parser.parse_args()
    if args.daemon:
        from aisentinel.memory import tune_malloc

        tune_malloc()  # the allocator settings of `aisentinel run`
        import aisentinel.daemon  # noqa: F401 - its import footprint is the point
    if args.cost:
        cost()
    elif args.ips:
        run(args.ips, drain=args.drain)
    else:
        extra = (["--daemon"] if args.daemon else []) + (["--drain"] if args.drain else [])
        for ips in (1_000_000, 100_000):
            subprocess.run([sys.executable, __file__, "--ips", str(ips), *extra], check=True)


if __name__ == "__main__":
    main()
