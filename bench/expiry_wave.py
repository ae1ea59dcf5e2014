"""Time the main loop's expiry pass when a wave of bans ends at once.

Records N bans (``aisentinel ban`` of N addresses, 1 h) in a pipeline with every default
detector, a ledger in a temporary directory and a responder worker with no thread (its
queue at the default 10,000), then times :meth:`Pipeline.expire` an hour later: the
engine's expiry, every detector's ``bans_ended`` with the keys and the lifts queued.
It runs on the daemon's main loop: parsing and the watchdog heartbeat wait for it.

    .venv/bin/python bench/expiry_wave.py                # 23,713 bans
    .venv/bin/python bench/expiry_wave.py --bans 5000 --json
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from aisentinel.clock import FakeClock
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.pipeline import Pipeline
from aisentinel.responders import DryRunConfig, DryRunResponder, ResponderRunner

START = 1_764_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bans", type=int, default=23_713)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    clock = FakeClock(START)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite", clock)
        engine = DecisionEngine(DecisionsConfig(), ledger, clock)
        runner = ResponderRunner([DryRunResponder(DryRunConfig(), clock=clock)], clock)
        pipeline = Pipeline(
            detectors=build_detectors({}), engine=engine, runner=runner, clock=clock
        )
        engine.hold()
        for i in range(args.bans):
            engine.manual_ban(str(ipaddress.IPv4Address(0x64400000 + i)), 3600, "bench", "bench")
        engine.commit()
        clock.set(START + 3601)
        t = time.perf_counter()
        ended = pipeline.expire(clock.now())
        took = time.perf_counter() - t
        ledger.close()
    out = {"bans": args.bans, "ended": len(ended), "expire_seconds": round(took, 3)}
    print(json.dumps(out) if args.json else f"{len(ended)} bans ended: expire took {took:.2f} s")


if __name__ == "__main__":
    main()
