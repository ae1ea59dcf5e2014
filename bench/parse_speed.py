"""Lines per second of each parser on a typical synthetic mix.

Run ``python bench/parse_speed.py [--lines N]``. Prints, per format, the rate of
``parser.parse`` and, for reference, of a bare loop running one compiled regex
per line over the same lines.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.clock import FakeClock
from aisentinel.parsers import ParserContext, build_parser


def nginx_lines(n: int, rng: random.Random) -> list[str]:
    """Combined-format lines: many clients, mostly 200s, a few probes."""
    paths = ["/api/chat", "/v1/chat/completions", "/", "/static/app.js", "/wp-login.php"]
    agents = ['"Mozilla/5.0 (X11; Linux x86_64)"', '"curl/8.5.0"', '"python-requests/2.31"']
    out = []
    for i in range(n):
        ip = f"203.0.{rng.randrange(256)}.{rng.randrange(256)}"
        sec = 10 + (i // 50) % 50
        status = rng.choice((200, 200, 200, 404, 401, 301))
        out.append(
            f'{ip} - - [25/Nov/2026:23:14:{sec:02d} +0100] "GET {rng.choice(paths)} HTTP/1.1" '
            f'{status} {rng.randrange(20000)} "-" {rng.choice(agents)}'
        )
    return out


def sshd_lines(n: int, rng: random.Random) -> list[str]:
    """An auth.log mix: failures, preauth noise, sessions, other programs."""
    forms = [
        "sshd[{p}]: Failed password for root from {ip} port {port} ssh2",
        "sshd[{p}]: Failed password for invalid user admin from {ip} port {port} ssh2",
        "sshd[{p}]: Invalid user admin from {ip} port {port}",
        "sshd[{p}]: Connection closed by invalid user admin {ip} port {port} [preauth]",
        "sshd[{p}]: Received disconnect from {ip} port {port}:11: Bye Bye [preauth]",
        "sshd[{p}]: Disconnected from invalid user admin {ip} port {port} [preauth]",
        "sshd[{p}]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=ssh ruser= rhost={ip}  user=root",
        "sshd[{p}]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)",
        "sshd[{p}]: Accepted publickey for deploy from {ip} port {port} ssh2: ED25519 SHA256:x",
        "CRON[{p}]: pam_unix(cron:session): session closed for user root",
        "systemd-logind[{p}]: New session 42 of user deploy.",
    ]
    out = []
    for i in range(n):
        ip = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
        sec = 10 + (i // 50) % 50
        msg = rng.choice(forms).format(
            p=rng.randrange(1000, 99999), ip=ip, port=rng.randrange(65536)
        )
        out.append(f"Nov 25 23:14:{sec:02d} host {msg}")
    return out


def rate(fn: Callable[[str], object], lines: list[str], rounds: int = 3) -> float:
    """Best lines/s over ``rounds`` passes."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for line in lines:
            fn(line)
        best = max(best, len(lines) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the rates."""
    ap = argparse.ArgumentParser(description="parser throughput")
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args(argv)
    rng = random.Random(0)
    ctx = ParserContext(source="bench", clock=FakeClock(1_795_000_000.0))
    bare_nginx = re.compile(r'(\S+) \S+ (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-)').match
    bare_sshd = re.compile(r"(\w+ +\d+ [\d:]+) (\S+) sshd\[\d+\]: Failed (\S+) for (.*) from").match
    for name, lines, bare in (
        ("nginx", nginx_lines(args.lines, rng), bare_nginx),
        ("sshd", sshd_lines(args.lines, rng), bare_sshd),
    ):
        parser = build_parser(name, ctx)
        parsed = sum(1 for line in lines if parser.parse(line) is not None)
        print(
            f"{name:6s} parse {rate(parser.parse, lines):>10,.0f} lines/s   "
            f"bare regex {rate(bare, lines):>10,.0f} lines/s   ({parsed:,}/{len(lines):,} events)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
