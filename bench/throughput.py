#!/usr/bin/env python3
"""Offline throughput: ``aisentinel replay`` against Debian's ``fail2ban-regex``.

Two profiles (``--profile quiet|storm|both``, default both), each an nginx access
log, an nginx error log and an sshd auth.log:

* ``quiet``: the demo scenario (:mod:`aisentinel.demo.scenario`), ``--lines`` access and
  auth lines: mostly normal traffic with attacks mixed in; most auth.log lines are
  other programs' noise the parser drops on their first characters;
* ``storm``: bench/storm.py, ``--storm-lines`` sshd and access lines under a
  brute-force and scanning storm: sshd at 2.5 lines a second of log time (a new
  timestamp on most lines), about 70% of them from 100 heavy and 5,000 occasional
  attackers; access half 404 scans, a quarter 401s; the error log in proportion.

On each file, the same run times, best of ``--runs`` wall-clock runs (process
start-up included, stdout to a file):

* ``aisentinel replay FILE --format F --json``
* ``fail2ban-regex -o row FILE FILTER`` with Debian's filters (sshd, nginx-botsearch,
  nginx-http-auth, nginx-limit-req). ``-o row`` prints one line per match (host and
  time) and skips the statistics, which is both the fastest mode and what the
  coverage check needs;
* a bare-Python ceiling: one compiled regex matched against every line, nothing else.

Where aisentinel's time goes (``--no-breakdown`` skips it): the same replay of an empty
file (process start-up: imports, config, pipeline) and of the file with every
registered detector disabled (start-up + reading + parsing), best of ``--runs`` too,
each with the ratio fail2ban-regex would have to that part alone: the most any
speed-up of the detectors or of the decisions could give.

Coverage: a host "fail2ban would ban" has >= maxretry (5) matches within findtime
(10 min), the defaults of Debian's jail.conf for these jails; every such host must
be flagged by aisentinel (a finding about it or a decision on it). Recall against the
scenario's ground truth and flags on benign addresses are printed too.

    .venv/bin/python bench/throughput.py [--profile both] [--lines 1000000]
        [--storm-lines 200000] [--runs 3] [--seed 1] [--json] [--compiled]
        [--only ssh_bruteforce,scanning,http_auth,rate_abuse | --config FILE]

``--compiled`` times the mypyc build (``make compiled`` writes it to build/mypyc).
``--only`` keeps the named detectors on and every other one off: with
``ssh_bruteforce,scanning,http_auth,rate_abuse`` aisentinel detects what the four
fail2ban filters do (sshd, nginx-botsearch, nginx-http-auth, nginx-limit-req: like
for like; the default runs every detector).

Every printed figure names its profile.
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import storm
from gen import COMPILED, REPO, aisentinel_cmd, aisentinel_env, detectors_off, only_detectors

from aisentinel.demo.scenario import AttackKind, Manifest, generate

FAIL2BAN = "/usr/bin/fail2ban-regex"
FILTERS = Path("/etc/fail2ban/filter.d")
MAXRETRY = 5
FINDTIME = 600.0
ROW_RE = re.compile(r"^\['([^']+)',\s*([0-9.]+),")

# What a parser has to recognise, as one regex per format: the ceiling a pure-Python
# line loop reaches before it builds any event.
CEILING = {
    "sshd": r"^(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) sshd\[(\d+)\]: (?:Failed \S+ for "
    r"(?:invalid user )?(\S+) from ([0-9a-fA-F.:]+) port (\d+)|Invalid user (\S*) from "
    r"([0-9a-fA-F.:]+))",
    "nginx": r'^([0-9a-fA-F.:]+) - (\S+) \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+) '
    r'"([^"]*)" "([^"]*)"',
    "nginx-error": r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] \d+#\d+: \*\d+ (.*?), "
    r"client: ([0-9a-fA-F.:]+), server: ",
}


@dataclass
class Job:
    """One log file, its aisentinel format, its fail2ban filters, its ground truth."""

    name: str
    path: Path
    fmt: str
    filters: tuple[str, ...]
    truth: frozenset[str]
    """Addresses that attack in this file."""
    benign: frozenset[str]
    """Addresses that never attack."""
    lines: int = 0
    results: dict[str, Any] = field(default_factory=dict)


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    """aisentinel's environment; with ``--compiled``, build/mypyc first on PYTHONPATH."""
    return aisentinel_env(compiled=args.compiled)


def best_of(argv: list[str], runs: int, out: Path, env: dict[str, str] | None = None) -> float:
    """Best wall time of ``runs`` runs of ``argv`` with stdout into ``out``; raises on failure."""
    best = float("inf")
    for _ in range(runs):
        with out.open("wb") as fh:
            t0 = time.perf_counter()
            proc = subprocess.run(
                argv, stdout=fh, stderr=subprocess.PIPE, env=env, timeout=900, check=False
            )
            took = time.perf_counter() - t0
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(argv[:3])}... exited {proc.returncode}: {err}")
        best = min(best, took)
    return best


def ceiling(path: Path, fmt: str, runs: int) -> float:
    """Best seconds to match the format's regex against every line of ``path``."""
    rx = re.compile(CEILING[fmt])
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        with path.open(encoding="utf-8") as fh:
            match = rx.match
            for line in fh:
                match(line)
        best = min(best, time.perf_counter() - t0)
    return best


def would_ban(rows_path: Path) -> tuple[set[str], int]:
    """Hosts with >= MAXRETRY matches within FINDTIME in ``fail2ban-regex -o row`` output."""
    times: dict[str, deque[float]] = defaultdict(deque)
    banned: set[str] = set()
    matches = 0
    with rows_path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = ROW_RE.match(line)
            if not m:
                continue
            matches += 1
            host, ts = m[1], float(m[2])
            if host in banned:
                continue
            dq = times[host]
            dq.append(ts)
            while dq and ts - dq[0] > FINDTIME:
                dq.popleft()
            if len(dq) >= MAXRETRY:
                banned.add(host)
    return banned, matches


def flagged(jsonl: Path) -> tuple[set[str], dict[str, Any] | None, int]:
    """Addresses named by aisentinel's findings/decisions, the summary, non-JSON lines."""
    hosts: set[str] = set()
    summary = None
    junk = 0
    with jsonl.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except ValueError:
                junk += 1
                continue
            if not isinstance(obj, dict):
                junk += 1
                continue
            kind = obj.get("type")
            if kind == "finding":
                if obj.get("client"):
                    hosts.add(obj["client"])
                hosts.update(obj.get("clients") or ())
            elif kind == "decision" and obj.get("target"):
                hosts.add(obj["target"].removesuffix("/32").removesuffix("/128"))
            elif kind == "summary":
                summary = obj
    return hosts, summary, junk


def quiet_jobs(work: Path, manifest: Manifest) -> list[Job]:
    """The quiet profile's three files and what to run on each."""

    def truth(*kinds: AttackKind) -> frozenset[str]:
        return frozenset(a for a, atk in manifest.attacks.items() if atk.kind in kinds)

    benign = frozenset(manifest.benign)
    return [
        Job("auth.log", work / "auth.log", "sshd", ("sshd",),
            truth(AttackKind.SSH_BRUTE_FORCE, AttackKind.SSH_CREDENTIAL_STUFFING), benign,
            manifest.lines["auth"]),
        Job("access.log", work / "access.log", "nginx", ("nginx-botsearch",),
            truth(AttackKind.SCAN, AttackKind.AI_RECON, AttackKind.OLLAMA_EXPLOIT,
                  AttackKind.HTTP_AUTH_BRUTE_FORCE, AttackKind.RATE_ABUSE), benign,
            manifest.lines["access"]),
        Job("error.log", work / "error.log", "nginx-error",
            ("nginx-http-auth", "nginx-limit-req"),
            truth(AttackKind.HTTP_AUTH_BRUTE_FORCE, AttackKind.RATE_ABUSE), benign,
            manifest.lines["error"]),
    ]  # fmt: skip


def storm_jobs(logs: storm.Storm) -> list[Job]:
    """The storm profile's three files (no limit_req lines: no nginx-limit-req filter)."""
    files, truth, benign = logs.files, logs.attackers, logs.benign
    return [
        Job("auth.log", files["auth"], "sshd", ("sshd",), truth["auth"], benign,
            logs.lines["auth"]),
        Job("access.log", files["access"], "nginx", ("nginx-botsearch",), truth["access"],
            benign, logs.lines["access"]),
        Job("error.log", files["error"], "nginx-error", ("nginx-http-auth",), truth["error"],
            benign, logs.lines["error"]),
    ]  # fmt: skip


def parse_only_config(work: Path) -> Path:
    """A config with every registered detector disabled: replay then parses only."""
    path = work / "parse-only.toml"
    path.write_text(detectors_off(), encoding="utf-8")
    return path


def breakdown(job: Job, args: argparse.Namespace, work: Path) -> None:
    """Best wall seconds of the replay of an empty file (start-up) and of the file with
    no detector (start-up + parsing), into ``job.results``."""
    empty = work / "empty.log"
    empty.touch()
    base = [*aisentinel_cmd(args.aisentinel), "replay", "--format", job.fmt, "--json"]
    off = ["--config", str(parse_only_config(work))]
    env = bench_env(args)
    out = work / f"ais-{job.name}-parts.jsonl"
    try:
        job.results["startup_s"] = best_of([*base, *off, str(empty)], args.runs, out, env=env)
        job.results["parse_only_s"] = best_of([*base, *off, str(job.path)], args.runs, out, env=env)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        job.results["breakdown_error"] = str(exc)


def run_job(job: Job, args: argparse.Namespace, work: Path) -> None:
    """Time everything on one file and fill ``job.results``."""
    r = job.results
    r["ceiling_s"] = ceiling(job.path, job.fmt, args.runs)
    f2b_hosts: set[str] = set()
    if not args.no_fail2ban and Path(FAIL2BAN).exists():
        r["fail2ban"] = {}
        for flt in job.filters:
            out = work / f"f2b-{job.name}-{flt}.txt"
            argv = [FAIL2BAN, "-o", "row", str(job.path), str(FILTERS / f"{flt}.conf")]
            secs = best_of(argv, args.runs, out)
            hosts, matches = would_ban(out)
            f2b_hosts |= hosts
            r["fail2ban"][flt] = {"seconds": secs, "matches": matches, "would_ban": len(hosts)}
        r["fail2ban_would_ban"] = len(f2b_hosts)
    truth = job.truth
    r["truth"] = len(truth)
    if args.no_aisentinel:
        return
    if not args.no_breakdown:
        breakdown(job, args, work)
    out = work / f"ais-{job.name}.jsonl"
    argv = [*aisentinel_cmd(args.aisentinel), "replay", str(job.path), "--format", job.fmt]
    argv += ["--json"] + (["--config", str(args.config)] if args.config else [])
    try:
        secs = best_of(argv, args.runs, out, env=bench_env(args))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        r["aisentinel_error"] = str(exc)
        return
    hosts, summary, junk = flagged(out)
    missed = sorted(f2b_hosts - hosts)
    r["aisentinel"] = {
        "seconds": secs,
        "flagged": len(hosts),
        "summary": summary,
        "non_json_lines": junk,
        "fail2ban_would_ban_not_flagged": missed,
        "recall": len(hosts & truth) / len(truth) if truth else None,
        "benign_flagged": sorted(hosts & job.benign),
    }


def rate(lines: int, secs: float | None) -> str:
    return f"{lines / secs:>11,.0f}/s" if secs else f"{'n/a':>13}"


def print_table(profile: str, jobs: list[Job], args: argparse.Namespace, gen: str) -> None:
    """The profile's timing and coverage tables; every row names the profile."""
    print(f"== profile {profile}: {gen}; best of {args.runs}")
    print("wall time per run includes process start-up; lines/s = file lines / best wall time\n")
    head = f"{'profile':<7} {'file':<11} {'lines':>10} {'aisentinel':>13} {'fail2ban-regex':>13}"
    print(head + f" {'filter':<16} {'ais/f2b':>7} {'bare regex':>13}")
    for job in jobs:
        r = job.results
        ais = r.get("aisentinel", {}).get("seconds")
        f2b = r.get("fail2ban", {})
        first = True
        for flt, fr in f2b.items() or {"-": {"seconds": None}}.items():
            ratio = f"{fr['seconds'] / ais:>6.1f}x" if ais and fr["seconds"] else f"{'':>7}"
            print(
                f"{profile:<7} {job.name if first else '':<11} {job.lines if first else '':>10} "
                f"{rate(job.lines, ais) if first else '':>13} {rate(job.lines, fr['seconds'])} "
                f"{flt:<16} {ratio} {rate(job.lines, r['ceiling_s']) if first else '':>13}"
            )
            first = False
        if "aisentinel_error" in r:
            print(f"  aisentinel replay failed: {r['aisentinel_error']}")
    print_breakdown(profile, jobs)
    print(f"\ncoverage, profile {profile} (fail2ban would ban = >= 5 matches within 10 min)")
    print(f"{'profile':<7} {'file':<11} {'f2b bans':>9} {'ais flagged':>11} {'missed':>7} "
          f"{'truth':>6} {'recall':>7} {'benign flagged':>15}")  # fmt: skip
    for job in jobs:
        r = job.results
        bans = r.get("fail2ban_would_ban", 0)
        a = r.get("aisentinel")
        if a is None:
            print(f"{profile:<7} {job.name:<11} {bans:>9} {'n/a':>11}")
            continue
        recall = f"{a['recall']:.1%}" if a["recall"] is not None else "-"
        print(
            f"{profile:<7} {job.name:<11} {bans:>9} {a['flagged']:>11} "
            f"{len(a['fail2ban_would_ban_not_flagged']):>7} {r['truth']:>6} {recall:>7} "
            f"{len(a['benign_flagged']):>15}"
        )
        if a["fail2ban_would_ban_not_flagged"]:
            print(f"  not flagged: {', '.join(a['fail2ban_would_ban_not_flagged'][:10])}")
        if a["non_json_lines"]:
            print(f"  note: {a['non_json_lines']} non-JSON line(s) on replay's stdout")
    print()


def print_breakdown(profile: str, jobs: list[Job]) -> None:
    """Start-up, parsing and the whole replay, each with fail2ban-regex's time over it."""
    rows = [j for j in jobs if "parse_only_s" in j.results and "aisentinel" in j.results]
    if not rows:
        return
    print(f"\nwhere aisentinel's time goes, profile {profile} (best wall seconds; x: the first "
          "fail2ban-regex filter's time over that part alone)")  # fmt: skip
    print(f"{'profile':<7} {'file':<11} {'start-up':>14} {'+ parsing':>14} {'+ detectors,':>14}")
    print(f"{'':<7} {'':<11} {'':>14} {'(no detector)':>14} {'decisions':>14}")
    for job in rows:
        r = job.results
        f2b = next(iter(r.get("fail2ban", {}).values()), {}).get("seconds")
        parts = (r["startup_s"], r["parse_only_s"], r["aisentinel"]["seconds"])
        cells = [f"{p:>6.2f}s" + (f" {f2b / p:>5.1f}x" if f2b else "") for p in parts]
        print(f"{profile:<7} {job.name:<11} " + " ".join(f"{c:>14}" for c in cells))


def prepare(profile: str, work: Path, args: argparse.Namespace) -> tuple[list[Job], str]:
    """Generate the profile's files under ``work``; its jobs and a line describing them."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if profile == "quiet":
        error_lines = args.lines if args.error_lines is None else args.error_lines
        manifest = generate(
            work, lines_nginx=args.lines, lines_sshd=args.lines, lines_error=error_lines,
            seed=args.seed,
        )  # fmt: skip
        took = time.perf_counter() - t0
        jobs = quiet_jobs(work, manifest)
        what = "demo scenario"
    else:
        logs = storm.generate(work, lines=args.storm_lines, seed=args.seed)
        took = time.perf_counter() - t0
        jobs = storm_jobs(logs)
        what = f"bench/storm.py at {storm.RATE} sshd lines/s of log time"
    total = sum(j.lines for j in jobs)
    return jobs, f"{what}, seed {args.seed}, generated at {total / took:,.0f} lines/s"


def only_config(ap: argparse.ArgumentParser, args: argparse.Namespace, work: Path) -> None:
    """``--only``: write a config with every other detector off and replay with it."""
    if args.config is not None:
        ap.error("--only and --config: give one")
    try:
        keep = only_detectors(args.only)
    except ValueError as exc:
        ap.error(f"--only: {exc}")
    work.mkdir(parents=True, exist_ok=True)
    args.config = work / "only.toml"
    args.config.write_text(detectors_off(keep), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", choices=("quiet", "storm", "both"), default="both")
    ap.add_argument("--lines", type=int, default=1_000_000, help="quiet: access and auth lines")
    ap.add_argument("--error-lines", type=int, default=None, help="quiet: default --lines")
    ap.add_argument("--storm-lines", type=int, default=200_000, help="storm: access and auth lines")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="best of N")
    ap.add_argument("--json", action="store_true", help="print one JSON object, no table")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    ap.add_argument("--aisentinel", default=None, help="command to run instead of aisentinel")
    ap.add_argument("--config", type=Path, default=None, help="passed to aisentinel replay")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated detectors to keep on, every other one off (not with --config)",
    )
    ap.add_argument(
        "--compiled", action="store_true", help="run the mypyc build (make compiled: build/mypyc)"
    )
    ap.add_argument("--no-fail2ban", action="store_true")
    ap.add_argument(
        "--no-breakdown", action="store_true", help="skip the start-up and parse-only runs"
    )
    ap.add_argument("--no-aisentinel", action="store_true")
    args = ap.parse_args(argv)

    profiles = ("quiet", "storm") if args.profile == "both" else (args.profile,)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aisentinel-bench-"))
    if args.only is not None:
        only_config(ap, args, work)
    # Byte-compile the checkout once, as an installed package is (pip and the .deb
    # compile at install time; Debian's fail2ban has its .pyc files too), so that no
    # run pays for compiling ~80 modules at start-up.
    compileall.compile_dir(REPO / "aisentinel", quiet=1)
    if args.compiled and not list(COMPILED.glob("aisentinel__mypyc*")):
        ap.error(f"--compiled: no build in {COMPILED}; run `make compiled` first")
    version = subprocess.run(
        [*aisentinel_cmd(args.aisentinel), "--version"],
        env=bench_env(args),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not args.json:
        print(f"running: {version}")
        if args.only is not None:
            print(f"detectors: only {args.only} (every other one off)")
    report: dict[str, Any] = {
        "detectors": args.only or "all",
        "seed": args.seed,
        "runs": args.runs,
        "aisentinel_version": version,
        "profiles": {},
    }
    ratios: list[str] = []
    try:
        for profile in profiles:
            jobs, gen = prepare(profile, work / profile, args)
            for job in jobs:
                run_job(job, args, work / profile)
            report["profiles"][profile] = {
                "generated": gen,
                "files": {j.name: {"lines": j.lines, **j.results} for j in jobs},
            }
            if not args.json:
                print_table(profile, jobs, args, gen)
            for job in jobs:
                ais = job.results.get("aisentinel", {}).get("seconds")
                for flt, fr in job.results.get("fail2ban", {}).items():
                    if ais:
                        ratios.append(f"{profile}/{job.name} vs {flt}: {fr['seconds'] / ais:.1f}x")
        if args.json:
            print(json.dumps(report, indent=1))
        elif ratios:
            print("aisentinel replay speed / fail2ban-regex speed, per profile and file:")
            print("\n".join(f"  {r}" for r in ratios))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
