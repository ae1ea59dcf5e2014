"""Time the detectors' forgetting of forgiven clients (``aisentinel unban``/``allow``).

Fills every default detector with N distinct clients (one failed ssh login, one 404
probe of ``/.env`` and one inference call with an API key id each, within the windows),
then times what the pipeline does on its thread at the next batch after an unban: one
:class:`~aisentinel.detectors.base.Forgiven` and every detector's ``forget`` with it,
for several sets of targets. The heartbeat waits for it (``WatchdogSec``), so it must
stay far below the watchdog's 30 s whatever is forgiven.

    .venv/bin/python bench/forget_speed.py               # IPv6 and IPv4, 87,000 clients
    .venv/bin/python bench/forget_speed.py --family v4 --clients 20000 --json

Wall time, best of ``--runs`` (each run forgives other clients, and a new
:class:`Forgiven` has nothing cached).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector, Forgiven
from aisentinel.detectors.common import client_key
from aisentinel.events import AddressTarget, Event, HttpRequest, SshEvent, SshKind

START = 1_764_000_000.0
BATCH = 5000
LAST = "10.0.0.0/8: every client (one run)"


def address(family: str, i: int) -> str:
    """The i-th client: ``10.x.y.z`` (every 7th address) or ``2001:db8:a:b::1``."""
    if family == "v4":
        return str(ipaddress.IPv4Address(0x0A000000 + i * 7 + 1))
    return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"


def fill(detectors: list[Detector], clients: list[str]) -> None:
    """One ssh failure, one 404 probe and one inference call per client."""
    for start in range(0, len(clients), BATCH):
        ts = START + start / 1000
        chunk = clients[start : start + BATCH]
        events: list[Event] = [
            SshEvent(ts, "auth", c, SshKind.FAILED_PASSWORD, "root" if j % 2 else f"u{j}", 22, None)
            for j, c in enumerate(chunk)
        ]
        requests: list[Event] = [
            HttpRequest(ts, "web", c, "GET", "/.env", 404, 0, None, "ua") for c in chunk
        ]
        requests += [
            HttpRequest(ts, "web", c, "POST", "/api/generate", 200, 0, None, "ua", key_id=f"k{j}")
            for j, c in enumerate(chunk)
        ]
        for detector in detectors:
            for batch in (events, requests):
                detector.observe_many([e for e in batch if isinstance(e, detector.consumes)])


def cases(family: str, clients: list[str]) -> dict[str, Callable[[int], list[AddressTarget]]]:
    """Named target sets; each takes the run number (another slice of clients)."""

    def hosts(n: int, grouped: bool) -> Callable[[int], list[AddressTarget]]:
        def make(run: int) -> list[AddressTarget]:
            out = []
            for c in clients[1000 + run * n : 1000 + (run + 1) * n]:
                out.append(AddressTarget.parse(c))
                if grouped:
                    out.append(AddressTarget.parse(client_key(c)))
            return out

        return make

    if family == "v6":  # an unban of an IPv6 client forgives it and its /64
        return {
            "1 host + its /64": hosts(1, True),
            "100 hosts + their /64s": hosts(100, True),
            "2048 hosts + their /64s (the queue's 4096)": hosts(2048, True),
        }
    return {
        "1 host": hosts(1, False),
        "100 hosts": hosts(100, False),
        "4096 hosts (the queue's most)": hosts(4096, False),
        "100 /24s": lambda run: [AddressTarget.parse(f"10.{run}.{i * 2}.0/24") for i in range(100)],
        "4096 /28s": lambda run: [
            AddressTarget.parse(f"10.{run + 4}.{i // 16}.{i % 16 * 16}/28") for i in range(4096)
        ],
        LAST: lambda run: [AddressTarget.parse("10.0.0.0/8")],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("v4", "v6", "both"), default="both")
    parser.add_argument("--clients", type=int, default=87_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for family in ("v6", "v4") if args.family == "both" else (args.family,):
        detectors = build_detectors({})
        clients = [address(family, i) for i in range(args.clients)]
        fill(detectors, clients)
        keys = sum(d.tracked_keys() for d in detectors)
        row = results[f"{family}, {args.clients} clients, {keys} keys"] = {}
        for label, make in cases(family, clients).items():
            best = float("inf")
            for run in range(1 if label == LAST else args.runs):
                targets = make(run)
                began = time.perf_counter()
                forgiven = Forgiven(targets)
                for detector in detectors:
                    detector.forget(forgiven)
                best = min(best, time.perf_counter() - began)
            row[label] = round(best * 1000, 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for table, row in results.items():
        print(table)
        for label, ms in row.items():
            print(f"  {label:45s} {ms:9.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
