"""Enforcement figures for the nftables responder (reported, not asserted).

Runs as root in network namespaces made by tests/nsharness.py (nothing of the host's
network is touched):

1. decision -> packets dropped: an attacker namespace streams UDP datagrams (one per
   millisecond) from one source address to the server namespace; the bench, inside
   the server namespace, submits a ban for that source to the responder worker
   (libnftables backend, worker thread as in the daemon) and takes the time from the
   submit to the last datagram that still arrived. 40 sources, p50 / p99 reported.
2. one more ban with 0, 1,000 and 10,000 already held (median of 50 single-ban commits);
3. reconcile of 10,000 bans (the table replaced, one transaction);
4. restart with 20,000 active bans: a fresh responder's reconcile, as at daemon start.

    sudo .venv/bin/python bench/enforcement.py
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from nsharness import SERVER4, Lab, missing_tools  # noqa: E402

from aisentinel.clock import SystemClock  # noqa: E402
from aisentinel.events import Action, AddressTarget, Decision, Severity  # noqa: E402
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder  # noqa: E402
from aisentinel.responders.runner import ResponderRunner  # noqa: E402

PORT = 19999
SOURCES = [f"10.231.1.{i}" for i in range(10, 50)]

SENDER = """
import socket, sys, threading, time
server, port = sys.argv[1], int(sys.argv[2])
current = [None]
def read():
    for line in sys.stdin:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((line.strip(), 0))
        current[0] = s
threading.Thread(target=read, daemon=True).start()
while True:
    s = current[0]
    if s is not None:
        try:
            s.sendto(b"x", (server, port))
        except OSError:
            pass
    time.sleep(0.001)
"""


def ban(target: str, ttl: float = 3600.0) -> Decision:
    now = time.time()
    return Decision(
        now, Action.BAN, AddressTarget.parse(target), "bench", Severity.HIGH, "bench",
        ttl=ttl, expires_at=now + ttl,
    )  # fmt: skip


def many(n: int, base: int = 100) -> list[Decision]:
    return [ban(f"10.{base + i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sizes(clock: SystemClock, out: dict[str, object]) -> NftablesResponder:
    """Measures 2-4; returns a fresh, empty responder for the latency run."""
    responder = NftablesResponder(NftablesConfig(backend="libnftables"), clock=clock)
    out["backend"] = responder.backend.name if responder.backend else "none"

    # 2. one more ban at 0 / 1k / 10k held
    per_add: dict[str, float] = {}
    for held in (0, 1000, 10000):
        responder.reconcile(many(held))
        times = []
        for i in range(50):
            responder.add_many([ban(f"172.16.{held // 1000}.{i + 1}")])
            t = time.perf_counter()
            responder.commit()
            times.append(time.perf_counter() - t)
        per_add[str(held)] = statistics.median(times) * 1000
    out["add_one_ms_at_held"] = per_add

    # 3. reconcile 10,000 (over a table that holds 10k others)
    responder.reconcile(many(10000, base=120))
    t = time.perf_counter()
    responder.reconcile(many(10000))
    out["reconcile_10000_s"] = time.perf_counter() - t

    # 4. restart with 20,000: a fresh responder (new process state) reconciles
    active = many(20000)
    fresh = NftablesResponder(NftablesConfig(backend="libnftables"), clock=clock)
    t = time.perf_counter()
    fresh.reconcile(active)
    out["restart_20000_s"] = time.perf_counter() - t
    fresh.reconcile([])
    return fresh


def inside() -> dict[str, object]:
    """The measurements, run inside the server namespace."""
    clock = SystemClock()
    out: dict[str, object] = {}
    fresh = sizes(clock, out)

    # 1. decision -> dropped
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((SERVER4["atk"], PORT))
    rx.settimeout(0.05)
    last: dict[str, float] = {}

    def receive() -> None:
        while True:
            try:
                _data, (src, _port) = rx.recvfrom(16)
            except TimeoutError:
                continue
            except OSError:
                return
            last[src] = time.monotonic()

    threading.Thread(target=receive, daemon=True).start()
    worker = ResponderRunner([fresh], clock)
    worker.start()
    worker.flush(5)
    latencies = []
    for src in SOURCES:
        print(src, flush=True)  # tells the sender (through the parent) to switch source
        deadline = time.monotonic() + 5
        while src not in last and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        t0 = time.monotonic()
        worker.submit(ban(src))
        while time.monotonic() - last.get(src, t0) < 0.3:
            time.sleep(0.01)
        latencies.append(max(0.0, last.get(src, t0) - t0) * 1000)
    worker.close(2)
    rx.close()
    out["decision_to_drop_ms"] = {
        "samples": len(latencies),
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "max": max(latencies),
    }
    return out


def main() -> int:
    if "--inside" in sys.argv:
        result = inside()
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    why = missing_tools("nft")
    if why:
        print(f"skipped: {why}")
        return 0
    lab = Lab("b").up()
    try:
        for src in SOURCES:
            lab.add_address(lab.atk, f"{src}/24")
        sender = lab.start(
            lab.atk,
            [sys.executable, "-c", SENDER, SERVER4["atk"], str(PORT)],
            stdin=subprocess.PIPE,
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        bench = lab.start(
            lab.srv,
            [sys.executable, __file__, "--inside"],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert bench.stdout is not None
        assert sender.stdin is not None
        result: dict[str, object] = {}
        for raw in bench.stdout:
            line = raw.decode().strip()
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            elif line in SOURCES:
                sender.stdin.write((line + "\n").encode())
                sender.stdin.flush()
        bench.wait(timeout=60)
        print(json.dumps(result, indent=2))
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
