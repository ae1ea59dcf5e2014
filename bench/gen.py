#!/usr/bin/env python3
"""Write a demo scenario: a thin CLI over :mod:`aisentinel.demo.scenario`.

    bench/gen.py OUT_DIR [--lines N] [--sshd-lines N] [--error-lines N] [--seed S]
                         [--attack-ratio R] [--json-access]
    bench/gen.py OUT_DIR --live [--rate R] [--duration S] [--seed S]

Batch mode writes access.log, error.log, auth.log (and access.json.log) and
manifest.json, then prints one summary line (or the manifest's counts as JSON with
--json). Live mode appends lines in real time until the scenario ends (Ctrl-C stops).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aisentinel.demo.scenario import DEFAULT_START_TS, LiveScenario, generate  # noqa: E402
from aisentinel.detectors import REGISTRY as DETECTORS  # noqa: E402


def aisentinel_cmd(override: str | None = None) -> list[str]:
    """How to run the ``aisentinel`` command: ``override`` (split on spaces), the venv's
    entry point when installed, else ``python -m aisentinel`` from this checkout."""
    if override:
        return override.split()
    script = REPO / ".venv" / "bin" / "aisentinel"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "aisentinel"]


COMPILED = REPO / "build" / "mypyc"
"""Where ``make compiled`` writes the mypyc build (a copy of the package plus extensions)."""


def aisentinel_env(*, compiled: bool = False) -> dict[str, str]:
    """The environment for it: this checkout first on PYTHONPATH, no config from outside;
    ``compiled``: the mypyc build (``make compiled``) before it, and not the checkout's
    pure package from the working directory."""
    env = dict(os.environ)
    first = [str(COMPILED)] if compiled else []
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [*first, str(REPO), env.get("PYTHONPATH", "")])
    )
    if compiled:
        env["PYTHONSAFEPATH"] = "1"
    env.pop("AISENTINEL_CONFIG", None)
    return env


def detectors_off(keep: Iterable[str] = ()) -> str:
    """Config text that disables every registered detector not in ``keep``."""
    off = sorted(set(DETECTORS.names()) - set(keep))
    return "".join(f"[detectors.{name}]\nenabled = false\n" for name in off)


def only_detectors(text: str) -> list[str]:
    """The detector names of an ``--only a,b`` option; ``ValueError`` naming the unknown
    ones and the known ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = DETECTORS.names()
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(
            f"unknown detector(s) {', '.join(unknown) or '(none named)'}; known: {', '.join(known)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--lines", type=int, default=100_000, help="nginx access lines")
    ap.add_argument(
        "--sshd-lines", type=int, default=None, help="auth.log lines (default: --lines)"
    )
    ap.add_argument("--error-lines", type=int, default=None, help="default: --lines / 10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attack-ratio", type=float, default=0.1)
    ap.add_argument("--start-ts", type=float, default=DEFAULT_START_TS)
    ap.add_argument("--json-access", action="store_true", help="also write access.json.log")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument("--live", action="store_true", help="append in real time instead")
    ap.add_argument("--rate", type=float, default=40.0, help="live: lines/s of normal traffic")
    ap.add_argument("--duration", type=float, default=45.0, help="live: seconds")
    args = ap.parse_args(argv)

    if args.live:
        live = LiveScenario(args.out_dir, seed=args.seed, rate=args.rate, duration=args.duration)
        (args.out_dir / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "manifest.json").write_text(live.manifest.to_json() + "\n")
        live.start()
        try:
            while not live.join(timeout=0.5):
                pass
        except KeyboardInterrupt:
            live.stop()
            live.join()
        print(f"live scenario done: {live.lines_written} lines, rotated={live.rotated.is_set()}")
        return 0

    t0 = time.perf_counter()
    m = generate(
        args.out_dir,
        lines_nginx=args.lines,
        lines_sshd=args.lines if args.sshd_lines is None else args.sshd_lines,
        lines_error=args.error_lines,
        seed=args.seed,
        start_ts=args.start_ts,
        attack_ratio=args.attack_ratio,
        nginx_json=args.json_access,
    )
    took = time.perf_counter() - t0
    total = m.lines["access"] + m.lines["error"] + m.lines["auth"]
    kinds = Counter(str(a.kind) for a in m.attacks.values())
    if args.json:
        print(json.dumps({"seconds": took, "lines": m.lines, "attackers": dict(kinds)}))
    else:
        print(
            f"{total:,} lines in {took:.2f} s ({total / took:,.0f} lines/s) -> {args.out_dir}; "
            f"{len(m.attacks)} attackers: {dict(sorted(kinds.items()))}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
