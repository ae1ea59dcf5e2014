#!/usr/bin/env python3
"""Seeded attack-storm logs: what a box writes under a brute-force and scanning storm.

    bench/storm.py OUT_DIR [--lines 200000] [--seed 1] [--rate 2.5] [--json]

Writes ``auth.log``, ``access.log`` and ``error.log`` (formats as
:mod:`aisentinel.demo.scenario` writes them: Debian 12 sshd in classic syslog, nginx
``combined``, the nginx error log; times in UTC) and ``storm.json`` (counts and
ground truth). Proportions (the "storm" profile of bench/throughput.py):

* auth.log: ``--lines`` sshd lines at ``--rate`` lines a second of log time (so most
  lines start a new second); about 70% come from 100 heavy attackers (60% of those
  lines: password guessing on root/admin/ubuntu, invalid users, MaxAuthTries cut-offs)
  and 5,000 occasional ones (one or two connections each: a few guesses, or a probe:
  banner/kex errors, "Did not receive identification", negotiation failures); the
  rest is what sshd writes for legitimate use: accepted logins, sessions, disconnects,
  kex noise without an address, an admin's occasional typo;
* access.log: as many lines, half of them 404 scans (the usual WordPress, phpMyAdmin,
  .env, .git, cgi-bin paths), a quarter 401s (basic-auth guessing on the model API and
  API calls with a bad bearer key), the rest normal traffic incl. AI API calls (the
  demo scenario's benign clients); 100 heavy and 5,000 occasional attackers again;
* error.log: in proportion: one ``password mismatch`` / ``was not found in`` line per
  basic-auth guess, an ``open() ... failed`` line for half of the 404s (the paths
  nginx serves from disk), upstream timeouts for 1% of the AI calls.

The output is a pure function of the arguments (same seed, same bytes).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.demo.scenario import (
    DEFAULT_START_TS,
    HOSTNAME,
    SERVER_NAME,
    fmt_access_ts,
    fmt_error_ts,
    fmt_syslog_ts,
    normal_access_records,
    render_access,
)

RATE = 2.5
"""sshd lines per second of log time (the issue's storm)."""
HEAVY = 100
OCCASIONAL = 5_000
ATTACK_SHARE = 0.70
"""Share of auth.log lines that come from attackers."""
HEAVY_SHARE = 0.60
"""Share of the attackers' lines that come from the heavy ones."""

_BRUTE_USERS = ("root", "root", "root", "admin", "ubuntu", "user", "test", "oracle")
_VALID = frozenset({"root", "ubuntu", "deploy", "alice", "bob"})
_ADMINS = (
    ("deploy", "192.0.2.10", 1001),
    ("alice", "192.0.2.11", 1000),
    ("bob", "192.0.2.12", 1002),
)
_SCAN_PATHS = (
    "/wp-login.php", "/wp-admin/setup-config.php", "/xmlrpc.php", "/wordpress/wp-login.php",
    "/phpmyadmin/index.php", "/pma/index.php", "/myadmin/index.php", "/mysqladmin/",
    "/phpMyAdmin/scripts/setup.php", "/cgi-bin/luci/;stok=/locale", "/cgi-bin/test.cgi",
    "/roundcube/", "/webmail/", "/.env", "/api/.env", "/.git/config", "/.git/HEAD",
    "/.aws/credentials", "/config.json", "/server-status", "/actuator/env", "/.DS_Store",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/boaform/admin/formLogin",
    "/owa/auth/logon.aspx", "/.vscode/sftp.json", "/backup.sql", "/HNAP1/",
    "/solr/admin/info/system", "/console/", "/login.action",
)  # fmt: skip
_SCAN_UAS = (
    "Mozilla/5.0 zgrab/0.x",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "python-requests/2.28.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/78.0.3904.108 Safari/537.36",
)
_AUTH_USERS = ("admin", "root", "user", "ollama", "test", "api", "guest", "webui")
_AUTH_PATHS = ("/api/tags", "/", "/v1/models", "/api/generate")
_KEY_UAS = ("OpenAI/Python 1.54.4", "python-requests/2.31.0", "curl/8.5.0")

_ACCEPTED = re.compile(r"sshd\[\d+\]: Accepted \S+ for \S+ from (\S+) ")

Line = tuple[float, str]
"""(log time, text after the timestamp)."""


@dataclass(frozen=True, slots=True)
class Storm:
    """What :func:`generate` wrote: files, line counts, ground truth per file."""

    seed: int
    start_ts: float
    end_ts: float
    files: dict[str, Path]
    lines: dict[str, int]
    attackers: dict[str, frozenset[str]]
    """Role (auth, access, error) -> addresses that attack in that file."""
    heavy: dict[str, frozenset[str]]
    benign: frozenset[str]

    def to_json(self) -> str:
        """Counts and ground truth, for storm.json."""
        return json.dumps(
            {
                "seed": self.seed, "start_ts": self.start_ts, "end_ts": self.end_ts,
                "files": {k: p.name for k, p in self.files.items()}, "lines": self.lines,
                "attackers": {k: sorted(v) for k, v in self.attackers.items()},
                "heavy": {k: sorted(v) for k, v in self.heavy.items()},
                "benign": sorted(self.benign),
            },
            indent=1,
        )  # fmt: skip


class _Addresses:
    """Unique attacker addresses: the documentation ranges for heavy hitters, the shared
    address space 100.64.0.0/10 (every tenth an IPv6 one in 2001:db8::/32) for the rest."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._doc = [f"198.51.100.{i}" for i in range(1, 255)] + [
            f"203.0.113.{i}" for i in range(1, 255)
        ]
        rng.shuffle(self._doc)
        self._seen: set[str] = set()
        self._n = 0

    def heavy(self) -> str:
        return self._doc.pop()

    def occasional(self) -> str:
        rng = self._rng
        while True:
            self._n += 1
            if self._n % 10 == 0:
                addr = f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
            else:
                n = rng.randrange(1, 1 << 22)
                addr = f"100.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"
            if addr not in self._seen and not addr.endswith((".0", ".255")):
                self._seen.add(addr)
                return addr


def _sshd(pid: int, msg: str) -> str:
    return f" {HOSTNAME} sshd[{pid}]: {msg}"


def _guesses(rng: random.Random, addr: str, t: float, tries: int) -> list[Line]:
    """One sshd connection with ``tries`` password guesses, as Debian 12 logs it."""
    pid, port = rng.randrange(2000, 4_000_000), rng.randrange(32_768, 61_000)
    user = rng.choice(_BRUTE_USERS)
    out: list[Line] = []
    valid = user in _VALID
    if not valid:
        out.append((t, _sshd(pid, f"Invalid user {user} from {addr} port {port}")))
    for _ in range(tries):
        if valid:
            out.append(
                (
                    t,
                    _sshd(
                        pid,
                        "pam_unix(sshd:auth): authentication failure; logname= "
                        f"uid=0 euid=0 tty=ssh ruser= rhost={addr}  user={user}",
                    ),
                )
            )
            out.append(
                (t + 2, _sshd(pid, f"Failed password for {user} from {addr} port {port} ssh2"))
            )
        else:
            out.append((t, _sshd(pid, "pam_unix(sshd:auth): check pass; user unknown")))
            out.append(
                (
                    t,
                    _sshd(
                        pid,
                        "pam_unix(sshd:auth): authentication failure; logname= "
                        f"uid=0 euid=0 tty=ssh ruser= rhost={addr} ",
                    ),
                )
            )
            out.append(
                (
                    t + 2,
                    _sshd(
                        pid, f"Failed password for invalid user {user} from {addr} port {port} ssh2"
                    ),
                )
            )
        t += 2 + rng.random() * 2
    who = "authenticating" if valid else "invalid"
    if tries >= 6:
        out.append(
            (
                t,
                _sshd(
                    pid,
                    f"error: maximum authentication attempts exceeded for "
                    f"{'' if valid else 'invalid user '}{user} from {addr} port {port} "
                    "ssh2 [preauth]",
                ),
            )
        )
        out.append(
            (
                t,
                _sshd(
                    pid,
                    f"Disconnecting {who} user {user} {addr} port {port}: Too "
                    "many authentication failures [preauth]",
                ),
            )
        )
    elif rng.random() < 0.5:
        out.append(
            (t, _sshd(pid, f"Connection closed by {who} user {user} {addr} port {port} [preauth]"))
        )
    else:
        out.append(
            (t, _sshd(pid, f"Received disconnect from {addr} port {port}:11: Bye Bye [preauth]"))
        )
        out.append(
            (t, _sshd(pid, f"Disconnected from {who} user {user} {addr} port {port} [preauth]"))
        )
    return out  # fmt: skip


def _probe(rng: random.Random, addr: str, t: float) -> list[Line]:
    """A connection that never gets to a password: what scanners leave in auth.log."""
    pid, port = rng.randrange(2000, 4_000_000), rng.randrange(32_768, 61_000)
    roll = rng.random()
    if roll < 0.3:
        return [(t, _sshd(pid, f"Connection closed by {addr} port {port} [preauth]"))]
    if roll < 0.5:
        return [(t, _sshd(pid, f"Did not receive identification string from {addr} port {port}"))]
    if roll < 0.7:
        return [(t, _sshd(pid, f"Unable to negotiate with {addr} port {port}: no matching host "
                          "key type found. Their offer: ssh-rsa,ssh-dss [preauth]"))]  # fmt: skip
    if roll < 0.85:
        return [(t, _sshd(pid, f"banner exchange: Connection from {addr} port {port}: invalid "
                          "format"))]  # fmt: skip
    return [(t, _sshd(pid, f"Timeout before authentication for {addr} port {port}"))]


def _benign_ssh(rng: random.Random, t: float) -> list[Line]:
    """A legitimate login and logout, or address-less noise sshd writes."""
    pid = rng.randrange(2000, 4_000_000)
    roll = rng.random()
    if roll < 0.29:
        msg = rng.choice((
            "error: kex_exchange_identification: Connection closed by remote host",
            "error: kex_exchange_identification: read: Connection reset by peer",
            "error: kex_exchange_identification: banner line contains invalid characters",
        ))  # fmt: skip
        return [(t, _sshd(pid, msg))]
    user, addr, uid = _ADMINS[int(rng.random() * len(_ADMINS))]
    if roll >= 0.3:
        addr = f"10.20.{rng.randrange(1, 5)}.{rng.randrange(10, 250)}"
        user = ("svc-rag", "ci-bot", "notebook", "deploy")[int(rng.random() * 4)]
    port = rng.randrange(32_768, 61_000)
    out: list[Line] = []
    if roll < 0.3:  # an admin mistypes once (1% of these blocks)
        out.append((t, _sshd(pid, f"Failed password for {user} from {addr} port {port} ssh2")))
        t += 3
    method = "publickey" if rng.random() < 0.8 else "password"
    tail = (
        " ssh2: ED25519 SHA256:4Gk0qX1fT0pYb2Yy0m3pQk8fWm0v9t7Xh3Jc2sX6b1E"
        if method == ("publickey")
        else " ssh2"
    )
    end = t + 30 + rng.random() * 1800
    out += [
        (t, _sshd(pid, f"Accepted {method} for {user} from {addr} port {port}{tail}")),
        (t, _sshd(pid, f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by "
                  "(uid=0)")),
        (end, _sshd(pid, f"Received disconnect from {addr} port {port}:11: disconnected by user")),
        (end, _sshd(pid, f"Disconnected from user {user} {addr} port {port}")),
        (end, _sshd(pid, f"pam_unix(sshd:session): session closed for user {user}")),
    ]  # fmt: skip
    return out


def _fill(
    budget: int, make: Callable[[], list[Line]], out: list[Line], first: list[Line] | None = None
) -> None:
    """Append blocks from ``make`` (after ``first``) until exactly ``budget`` lines."""
    lines = list(first or ())
    while len(lines) < budget:
        lines += make()
    out += lines[:budget]


def _attackers(
    rng: random.Random, addrs: _Addresses, duration: float, budget: int, *,
    heavy_block: Callable[[str, float], list[Line]],
    occasional_block: Callable[[str, float], list[Line]],
) -> tuple[list[Line], frozenset[str], frozenset[str]]:  # fmt: skip
    """``budget`` lines from HEAVY busy and OCCASIONAL rare attackers; each heavy one is
    active for a stretch of 2 to 8 hours (of log time), each occasional one shows up
    once or twice."""
    heavy = [addrs.heavy() for _ in range(HEAVY)]
    windows = {}
    for a in heavy:
        span = min(duration, rng.uniform(2, 8) * 3600)
        start = rng.uniform(0, duration - span)
        windows[a] = (start, span)
    occasional = [addrs.occasional() for _ in range(OCCASIONAL)]
    out: list[Line] = []
    heavy_budget = int(budget * HEAVY_SHARE)

    def heavy_one() -> list[Line]:
        a = heavy[int(rng.random() * HEAVY)]
        start, span = windows[a]
        return heavy_block(a, start + rng.random() * span)

    _fill(heavy_budget, heavy_one, out)
    # Every occasional attacker once, then second visits until the budget is spent.
    first = [ln for a in occasional for ln in occasional_block(a, rng.random() * duration)]
    _fill(
        budget - heavy_budget,
        lambda: occasional_block(
            occasional[int(rng.random() * OCCASIONAL)], rng.random() * duration
        ),
        out,
        first,
    )
    return out, frozenset(heavy), frozenset(occasional)


def _auth_lines(rng: random.Random, n: int, duration: float, addrs: _Addresses) -> tuple[
    list[Line], frozenset[str], frozenset[str]
]:  # fmt: skip
    attack = int(n * ATTACK_SHARE)

    def heavy(a: str, t: float) -> list[Line]:
        return _guesses(rng, a, t, 6 if rng.random() < 0.15 else rng.randint(1, 3))

    def occasional(a: str, t: float) -> list[Line]:
        return _probe(rng, a, t) if rng.random() < 0.35 else _guesses(rng, a, t, rng.randint(1, 2))

    out, hv, occ = _attackers(
        rng, addrs, duration, attack, heavy_block=heavy, occasional_block=occasional
    )
    _fill(n - attack, lambda: _benign_ssh(rng, rng.random() * duration), out)
    return out, hv, occ


AccessLine = tuple[float, tuple[str, str, str, str, int, int, str, str, None], str | None]
"""(time, access record, error-log text or None)."""


def _err(rng: random.Random, msg: str, addr: str, request: tuple[str, str], extra: str = "") -> str:
    pid = (1234, 1235, 1236, 1237)[int(rng.random() * 4)]
    return (
        f" [error] {pid}#{pid}: *{rng.randrange(1, 9_000_000)} {msg}, client: {addr}, server: "
        f'{SERVER_NAME}, request: "{request[0]} {request[1]} HTTP/1.1"{extra}, '
        f'host: "{SERVER_NAME}"'
    )


def _scan(rng: random.Random, addr: str, t: float, n: int) -> list[AccessLine]:
    ua = _SCAN_UAS[int(rng.random() * len(_SCAN_UAS))]
    out: list[AccessLine] = []
    for _ in range(n):
        path = _SCAN_PATHS[int(rng.random() * len(_SCAN_PATHS))]
        err = None
        if rng.random() < 0.5:
            err = _err(rng, f'open() "/usr/share/nginx/html{path}" failed (2: No such file or '
                       "directory)", addr, ("GET", path))  # fmt: skip
        out.append((t, (addr, "-", "GET", path, 404, 153, "-", ua, None), err))
        t += rng.random() * 1.5
    return out


def _unauthorized(rng: random.Random, addr: str, t: float, n: int) -> list[AccessLine]:
    out: list[AccessLine] = []
    if rng.random() < 0.3:  # API calls with a stolen or made-up bearer key
        ua = _KEY_UAS[int(rng.random() * len(_KEY_UAS))]
        for _ in range(n):
            rec = (addr, "-", "POST", "/v1/chat/completions", 401, 179, "-", ua, None)
            out.append((t, rec, None))
            t += rng.random() * 2
        return out
    path = _AUTH_PATHS[int(rng.random() * len(_AUTH_PATHS))]
    for _ in range(n):
        user = _AUTH_USERS[int(rng.random() * len(_AUTH_USERS))]
        if user in {"admin", "ollama", "api"}:
            why = f'user "{user}": password mismatch'
        else:
            why = f'user "{user}" was not found in "/etc/nginx/.htpasswd"'
        rec = (addr, user, "GET", path, 401, 179, "-", "python-requests/2.31.0", None)
        out.append((t, rec, _err(rng, why, addr, ("GET", path))))
        t += 0.5 + rng.random() * 2
    return out


def _access_lines(
    rng: random.Random, n: int, duration: float, addrs: _Addresses, seed: int
) -> tuple[list[AccessLine], frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """Half 404 scans, a quarter 401s (each attacker does one of the two), the rest normal."""
    heavy = [addrs.heavy() for _ in range(HEAVY)]
    occasional = [addrs.occasional() for _ in range(OCCASIONAL)]
    out: list[AccessLine] = []
    for kind, share in ((_scan, 0.5), (_unauthorized, 0.25)):
        hv = heavy[: HEAVY // 2] if kind is _scan else heavy[HEAVY // 2 :]
        occ = occasional[: OCCASIONAL // 2] if kind is _scan else occasional[OCCASIONAL // 2 :]
        budget = int(n * share)
        lines: list[AccessLine] = []
        while len(lines) < int(budget * HEAVY_SHARE):
            lines += kind(rng, hv[int(rng.random() * len(hv))], rng.random() * duration, 20)
        lines = lines[: int(budget * HEAVY_SHARE)]
        for a in occ:
            lines += kind(rng, a, rng.random() * duration, rng.randint(1, 4))
        while len(lines) < budget:
            lines += kind(rng, occ[int(rng.random() * len(occ))], rng.random() * duration, 2)
        out += lines[:budget]
    normal = normal_access_records(n - len(out), seed=seed)
    for rec in normal:
        t = rng.random() * duration
        err = None
        if rec[3] == "/api/generate" and rng.random() < 0.01:
            err = _err(rng, "upstream timed out (110: Connection timed out) while reading "
                       "response header from upstream", rec[0], ("POST", rec[3]),
                       ', upstream: "http://127.0.0.1:11434/api/generate"')  # fmt: skip
        out.append((t, (*rec[:8], None), err))  # type: ignore[arg-type]
    guessers = frozenset(r[0] for _, r, e in out if e is not None and r[4] == 401)
    benign = frozenset(r[0] for r in normal)
    return out, frozenset(heavy), frozenset(occasional), guessers, benign


def _write(path: Path, lines: list[tuple[float, str]], fmt: Callable[[int], str]) -> int:
    """Write ``stamp + text`` lines, formatting each second's stamp once."""
    last, stamp = -1, ""
    with path.open("w", encoding="utf-8") as fh:
        buf: list[str] = []
        for ts, text in lines:
            sec = int(ts)
            if sec != last:
                last, stamp = sec, fmt(sec)
            buf.append(stamp + text + "\n")
            if len(buf) >= 10_000:
                fh.write("".join(buf))
                buf.clear()
        fh.write("".join(buf))
    return len(lines)


def _write_access(path: Path, lines: list[AccessLine], start_ts: float) -> int:
    last, stamp = -1, ""
    with path.open("w", encoding="utf-8") as fh:
        buf: list[str] = []
        for t, rec, _ in lines:
            sec = int(start_ts + t)
            if sec != last:
                last, stamp = sec, fmt_access_ts(sec)
            buf.append(render_access(stamp, rec) + "\n")
            if len(buf) >= 10_000:
                fh.write("".join(buf))
                buf.clear()
        fh.write("".join(buf))
    return len(lines)


def generate(
    out_dir: Path, *, lines: int = 200_000, seed: int = 1, rate: float = RATE,
    start_ts: float = DEFAULT_START_TS,
) -> Storm:  # fmt: skip
    """Write the storm's three logs and storm.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # reproducible benchmark data, not secrets
    addrs = _Addresses(rng)
    duration = lines / rate
    auth, ssh_heavy, ssh_occ = _auth_lines(rng, lines, duration, addrs)
    auth.sort(key=lambda x: x[0])
    access, web_heavy, web_occ, guessers, web_benign = _access_lines(
        rng, lines, duration, addrs, seed
    )
    access.sort(key=lambda x: x[0])
    files = {role: out_dir / f"{role}.log" for role in ("auth", "access", "error")}
    errors = [(start_ts + t, e) for t, _, e in access if e is not None]
    counts = {
        "auth": _write(files["auth"], [(start_ts + t, s) for t, s in auth], fmt_syslog_ts),
        "access": _write_access(files["access"], access, start_ts),
        "error": _write(files["error"], errors, fmt_error_ts),
    }
    storm = Storm(
        seed=seed,
        start_ts=start_ts,
        end_ts=start_ts + duration,
        files=files,
        lines=counts,
        attackers={"auth": ssh_heavy | ssh_occ, "access": web_heavy | web_occ, "error": guessers},
        heavy={"auth": ssh_heavy, "access": web_heavy},
        benign=web_benign | {m[1] for _, text in auth if (m := _ACCEPTED.search(text))},
    )
    (out_dir / "storm.json").write_text(storm.to_json() + "\n")
    return storm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--lines", type=int, default=200_000, help="auth.log and access.log lines")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=RATE, help="lines per second of log time")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    storm = generate(args.out_dir, lines=args.lines, seed=args.seed, rate=args.rate)
    took = time.perf_counter() - t0
    sizes = {k: len(v) for k, v in storm.attackers.items()}
    if args.json:
        print(json.dumps({"seconds": took, "lines": storm.lines, "attackers": sizes}))
    else:
        print(f"storm: {storm.lines} lines in {took:.1f} s -> {args.out_dir}; attackers {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
