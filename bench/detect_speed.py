"""Requests per second through every HTTP detector's ``observe_many``.

Run ``python bench/detect_speed.py [--requests N] [--runs R]``. Generates N
``HttpRequest`` events (50,000 clients, Pareto-skewed; a mix of AI, recon, model
and sensitive paths; some authenticated), then hands them in batches of 512 to each
detector that consumes requests, in pipeline order, as ``Pipeline.process`` does.
Prints the best of R runs (fresh detectors each run).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.detectors import build_detectors
from aisentinel.events import Event, HttpRequest

BATCH = 512
PATHS = (
    "/api/generate",
    "/api/chat",
    "/v1/chat/completions",
    "/api/tags",
    "/v1/models",
    "/.env",
    "/wp-login.php",
    "/",
    "/static/app.js",
    "/api/pull",
    "/api/show",
    "/admin",
    "/login",
)


def requests(n: int, seed: int = 1) -> list[Event]:
    """``n`` generated requests, one millisecond apart."""
    rng = random.Random(seed)
    clients = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(50_000)]
    out: list[Event] = []
    ts = 1_764_000_000.0
    for _ in range(n):
        ts += 0.001
        client = clients[int(rng.paretovariate(1.2)) % len(clients)]
        status = rng.choice((200, 200, 200, 404, 401, 403, 429))
        user = "alice" if rng.random() < 0.1 else None
        key = "k1" if rng.random() < 0.05 else None
        path = rng.choice(PATHS)
        out.append(
            HttpRequest(ts, "web", client, "GET", path, status, 100, user, "curl", 0.01, None, key)
        )
    return out


def run(batches: list[list[Event]]) -> float:
    """Seconds for fresh detectors to observe every batch."""
    detectors = [d for d in build_detectors({}) if issubclass(HttpRequest, d.consumes)]
    began = time.perf_counter()
    for batch in batches:
        for detector in detectors:
            detector.observe_many(batch)
    return time.perf_counter() - began


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    events = requests(args.requests)
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    best = min(run(batches) for _ in range(args.runs))
    print(
        f"observe_many: {args.requests} requests, best {best:.3f} s, {args.requests / best:,.0f}/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
