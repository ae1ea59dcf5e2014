"""Lines per second of the ``container`` parser against the same lines unwrapped.

Run ``python bench/container_speed.py [--lines N] [--batch N] [--rounds N]``. The
combined-format lines of ``parse_speed.py`` are read by ``nginx`` as they are, and by
``container`` as Docker json-file records (as ``json.dumps`` writes them: each ``"`` of
the line escaped) and as CRI records, each through ``parse_many`` in batches of
``--batch`` lines (default 512, the file source's ``batch_lines``); best of ``--rounds``
passes, taken in turn. Prints the rates and the ratios to the plain file's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.clock import FakeClock
from aisentinel.parsers import ParserContext, build_parser
from bench.parse_speed import nginx_lines


def docker_record(line: str, i: int) -> str:
    """``line`` as Docker's json-file driver writes it."""
    when = f"2026-11-25T22:14:{10 + (i // 50) % 50:02d}.{i % 1_000_000_000:09d}Z"
    return json.dumps({"log": line + "\n", "stream": "stdout", "time": when}, separators=(",", ":"))


def cri_record(line: str, i: int) -> str:
    """``line`` as a CRI log file holds it."""
    return f"2026-11-25T22:14:{10 + (i // 50) % 50:02d}.{i % 1_000_000_000:09d}Z stdout F {line}"


def one_pass(name: str, lines: list[str], batch: int) -> tuple[float, int]:
    """Lines/s of a fresh ``name`` parser's ``parse_many`` over ``lines``, and its events."""
    parser = build_parser(name, ParserContext(source="bench", clock=FakeClock(1.795e9)))
    start = time.perf_counter()
    events = 0
    for at in range(0, len(lines), batch):
        events += len(parser.parse_many(lines[at : at + batch]))
    return len(lines) / (time.perf_counter() - start), events


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the rates and ratios."""
    ap = argparse.ArgumentParser(description="container parser throughput")
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    plain = nginx_lines(args.lines, random.Random(0))
    inputs = {
        "nginx (plain)": ("nginx", plain),
        "container (docker json-file)": (
            "container",
            [docker_record(line, i) for i, line in enumerate(plain)],
        ),
        "container (CRI)": ("container", [cri_record(line, i) for i, line in enumerate(plain)]),
    }
    best = dict.fromkeys(inputs, 0.0)
    for _ in range(args.rounds):  # interleaved: a busy machine slows each alike
        for label, (name, lines) in inputs.items():
            got, events = one_pass(name, lines, args.batch)
            assert events == len(plain), (label, events)
            best[label] = max(best[label], got)
    base = best["nginx (plain)"]
    for label, got in best.items():
        print(f"{label:30s} {got:>10,.0f} lines/s   {got / base:.2f}x of plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
