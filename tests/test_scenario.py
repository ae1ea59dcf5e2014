"""The demo traffic generator: formats, determinism, ground truth, live writer."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from aisentinel.clock import FakeClock
from aisentinel.demo import AttackKind, LiveScenario, Manifest, generate
from aisentinel.demo.scenario import (
    ADMIN_ADDRESS,
    DEFAULT_START_TS,
    OFFICE_ADDRESS,
    fmt_access_ts,
    fmt_syslog_ts,
)

# Deliberately simple regexes, written from the nginx and sshd documentation, not
# from the generator: every line must be one of these shapes.
ACCESS_RE = re.compile(
    r"^(?P<ip>[0-9a-f.:]+) - (?P<user>\S+) \[(?P<ts>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<ref>[^"]*)" "(?P<ua>[^"]*)"$'
)
ERROR_RE = re.compile(
    r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?P<level>error|warn)\] (?P<pid>\d+)#(?P=pid): \*\d+ "
    r"(?P<msg>.*?), client: (?P<ip>[0-9a-f.:]+), server: ai\.example\.com, "
    r'request: "[A-Z]+ \S+ HTTP/1\.1"(?:, upstream: "[^"]+")?, host: "ai\.example\.com"'
    r'(?:, referrer: "[^"]+")?$'
)
SYSLOG_RE = re.compile(
    r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) gpu-box-01 (?P<prog>sshd|CRON|sudo|systemd-logind)"
    r"(?:\[\d+\])?: (?P<msg>.+)$"
)
SSH_FAIL_RE = re.compile(
    r"^Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>[0-9a-f.:]+) "
    r"port \d+ ssh2$"
)
SSH_IP_RE = re.compile(r"(?:from|rhost=|by (?:invalid|authenticating) user \S+) ([0-9a-f.:]+)")

ATTACK_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "100.64.0.0/10")
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """One mid-sized scenario shared by the read-only tests."""
    out = tmp_path_factory.mktemp("scenario")
    manifest = generate(
        out, lines_nginx=30_000, lines_sshd=20_000, lines_error=5_000, seed=11, attack_ratio=0.15
    )
    return out, manifest


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_every_access_line_is_combined_format(scenario: tuple[Path, Manifest]) -> None:
    """Each access.log line is a valid nginx ``combined`` line with a real address."""
    out, _ = scenario
    for line in _lines(out / "access.log"):
        m = ACCESS_RE.match(line)
        assert m, line
        ipaddress.ip_address(m["ip"])


def test_every_error_line_is_nginx_error_format(scenario: tuple[Path, Manifest]) -> None:
    """Each error.log line has nginx's error-log shape, client, server and request."""
    out, _ = scenario
    for line in _lines(out / "error.log"):
        m = ERROR_RE.match(line)
        assert m, line
        ipaddress.ip_address(m["ip"])


def test_every_auth_line_is_syslog_format(scenario: tuple[Path, Manifest]) -> None:
    """Each auth.log line is traditional syslog from sshd, CRON, sudo or systemd-logind."""
    out, _ = scenario
    lines = _lines(out / "auth.log")
    assert lines[0].endswith("sshd[611]: Server listening on 0.0.0.0 port 22.")
    progs: Counter[str] = Counter()
    for line in lines:
        m = SYSLOG_RE.match(line)
        assert m, line
        progs[m["prog"]] += 1
    assert set(progs) == {"sshd", "CRON", "sudo", "systemd-logind"}


def test_line_counts_are_exact(scenario: tuple[Path, Manifest]) -> None:
    """Each file has exactly the number of lines asked for, and the manifest says so."""
    out, manifest = scenario
    assert manifest.lines == {"access": 30_000, "error": 5_000, "auth": 20_000}
    for role, name in manifest.files.items():
        assert len(_lines(out / name)) == manifest.lines[role]


def test_timestamps_never_go_backwards(scenario: tuple[Path, Manifest]) -> None:
    """Within each file, line timestamps are non-decreasing (attacks merged in time order)."""
    out, manifest = scenario
    ts_res = {
        "access.log": (re.compile(r"\[(\S+ \+0000)\]"), "%d/%b/%Y:%H:%M:%S %z"),
        "error.log": (re.compile(r"^(\S+ \S+)"), "%Y/%m/%d %H:%M:%S"),
        "auth.log": (re.compile(r"^(\w{3} [ \d]\d \S+)"), "%Y %b %d %H:%M:%S"),
    }
    for name, (rx, fmt) in ts_res.items():
        prev = None
        for line in _lines(out / name):
            m = rx.search(line)
            assert m, line
            text = m[1] if name != "auth.log" else "2025 " + m[1]
            ts = time.strptime(text, fmt)
            assert prev is None or ts >= prev, line
            prev = ts
    assert manifest.start_ts == DEFAULT_START_TS
    assert manifest.end_ts > manifest.start_ts


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    """Output is a pure function of the arguments; the seed changes it."""
    a, b, c = (
        generate(tmp_path / d, seed=seed, lines_nginx=3_000, lines_sshd=2_000, lines_error=500)
        for d, seed in (("a", 5), ("b", 5), ("c", 6))
    )
    for name in ("access.log", "error.log", "auth.log", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert a == b
    assert a.attacks != c.attacks


def test_manifest_round_trips_through_json(scenario: tuple[Path, Manifest]) -> None:
    """manifest.json reads back into an equal Manifest."""
    out, manifest = scenario
    assert Manifest.from_json((out / "manifest.json").read_text()) == manifest


def test_all_attack_kinds_and_address_ranges(scenario: tuple[Path, Manifest]) -> None:
    """Every attack kind occurs; attackers use documentation/shared ranges, benign never attack."""
    _, manifest = scenario
    assert {a.kind for a in manifest.attacks.values()} == set(AttackKind)
    for addr, attack in manifest.attacks.items():
        assert attack.address == addr
        if attack.allowlisted:
            continue
        ip = ipaddress.ip_address(addr)
        assert any(ip in net for net in ATTACK_NETS), addr
    assert not set(manifest.benign) & set(manifest.attacks)
    assert manifest.admin in manifest.benign
    assert manifest.admin not in manifest.should_ban()
    office = manifest.attacks[OFFICE_ADDRESS]
    assert office.allowlisted
    assert office.kind is AttackKind.SSH_BRUTE_FORCE
    assert OFFICE_ADDRESS not in manifest.should_ban()
    assert any(
        ipaddress.ip_address(OFFICE_ADDRESS) in ipaddress.ip_network(n) for n in manifest.allowlist
    )
    assert any(":" in a for a in manifest.should_ban()), "some attackers use IPv6"


def test_ssh_ground_truth_matches_auth_log(scenario: tuple[Path, Manifest]) -> None:
    """Brute forcers fail 6-30 times, stuffers try >= 10 users, admin fails twice then logs in."""
    out, manifest = scenario
    fails: dict[str, list[str]] = defaultdict(list)
    accepted: set[str] = set()
    seen: set[str] = set()
    for line in _lines(out / "auth.log"):
        msg = SYSLOG_RE.match(line)["msg"]  # type: ignore[index]
        if m := SSH_FAIL_RE.match(msg):
            fails[m["ip"]].append(m["user"])
        elif msg.startswith("Accepted "):
            accepted.add(msg.split(" from ")[1].split()[0])
        seen.update(SSH_IP_RE.findall(msg))
    for addr in manifest.by_kind(AttackKind.SSH_BRUTE_FORCE):
        assert 6 <= len(fails[addr]) <= 30, addr
        assert len(fails[addr]) == manifest.attacks[addr].attempts
    for addr in manifest.by_kind(AttackKind.SSH_CREDENTIAL_STUFFING):
        assert len(set(fails[addr])) >= 10, addr
    assert len(fails[ADMIN_ADDRESS]) == 2
    assert ADMIN_ADDRESS in accepted
    ssh_attackers = manifest.by_kind(AttackKind.SSH_BRUTE_FORCE) | manifest.by_kind(
        AttackKind.SSH_CREDENTIAL_STUFFING
    )
    # Nobody fails more than twice unless the manifest names them.
    assert {a for a, f in fails.items() if len(f) > 2} == ssh_attackers
    assert seen <= ssh_attackers | set(manifest.benign)


def test_http_ground_truth_matches_access_and_error_log(scenario: tuple[Path, Manifest]) -> None:
    """Each HTTP attack kind leaves its signature, and only attackers leave it."""
    out, manifest = scenario
    by_ip: dict[str, list[re.Match[str]]] = defaultdict(list)
    for line in _lines(out / "access.log"):
        m = ACCESS_RE.match(line)
        assert m
        by_ip[m["ip"]].append(m)
    err_by_ip: dict[str, list[str]] = defaultdict(list)
    for line in _lines(out / "error.log"):
        m = ERROR_RE.match(line)
        assert m
        err_by_ip[m["ip"]].append(m["msg"])

    for addr in manifest.by_kind(AttackKind.SCAN):
        assert sum(r["status"] == "404" for r in by_ip[addr]) >= 10
        assert all(r["user"] == "-" for r in by_ip[addr])
    for addr in manifest.by_kind(AttackKind.AI_RECON):
        paths = {r["path"] for r in by_ip[addr]}
        assert {"/api/tags", "/api/ps", "/api/version", "/v1/models"} <= paths
        assert all(r["user"] == "-" for r in by_ip[addr])
    for addr in manifest.by_kind(AttackKind.OLLAMA_EXPLOIT):
        assert all(r["path"].startswith(("/api/pull", "/api/create", "/api/blobs/", "/api/push",
                                         "/api/delete")) for r in by_ip[addr])  # fmt: skip
    for addr in manifest.by_kind(AttackKind.HTTP_AUTH_BRUTE_FORCE):
        n = manifest.attacks[addr].attempts
        assert sum(r["status"] == "401" for r in by_ip[addr]) == n
        assert len(err_by_ip[addr]) == n
        assert all("password mismatch" in e or "was not found in" in e for e in err_by_ip[addr])
    for addr in manifest.by_kind(AttackKind.RATE_ABUSE):
        reqs = by_ip[addr]
        assert len(reqs) >= 200
        assert all(r["path"] == "/api/generate" for r in reqs)
        assert any(e.startswith("limiting requests, excess:") for e in err_by_ip[addr])

    # Benign clients: no scanner paths, no exploit endpoints, at most one auth failure.
    for addr in manifest.benign:
        assert not any(r["path"].startswith(("/.env", "/.git", "/wp-", "/api/pull"))
                       for r in by_ip[addr])  # fmt: skip
        assert sum("password mismatch" in e for e in err_by_ip[addr]) <= 5


def test_json_access_variant_carries_the_same_requests(tmp_path: Path) -> None:
    """access.json.log holds the same requests as access.log, one JSON object a line."""
    m = generate(
        tmp_path, lines_nginx=5_000, lines_sshd=100, seed=3, attack_ratio=0.3, nginx_json=True
    )
    combined = _lines(tmp_path / "access.log")
    as_json = [json.loads(line) for line in _lines(tmp_path / "access.json.log")]
    assert m.lines["access_json"] == len(as_json) == len(combined) == 5_000
    for text, obj in zip(combined, as_json, strict=True):
        r = ACCESS_RE.match(text)
        assert r
        assert (obj["remote_addr"], obj["request_method"], obj["request_uri"]) == (
            r["ip"], r["method"], r["path"],
        )  # fmt: skip
        assert obj["status"] == r["status"]
        assert all(isinstance(v, str) for v in obj.values())
    # Only the JSON form can carry the CVE-2024-37032 model-name pattern, in the body.
    exploiters = m.by_kind(AttackKind.OLLAMA_EXPLOIT)
    assert exploiters
    with_body = [o for o in as_json if o["request_body"]]
    assert {o["remote_addr"] for o in with_body} == exploiters
    assert any(
        o["request_uri"] == "/api/pull" and '"http://' in o["request_body"] for o in with_body
    )


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    """Negative counts and ratios outside [0, 0.9] raise ValueError and write nothing."""
    with pytest.raises(ValueError, match="negative"):
        generate(tmp_path / "x", lines_nginx=-1)
    with pytest.raises(ValueError, match="attack_ratio"):
        generate(tmp_path / "y", attack_ratio=1.5)
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "y").exists()


def test_zero_attack_ratio_still_has_admin_and_office(tmp_path: Path) -> None:
    """With no attack budget only the admin's typos and the office's brute force remain."""
    m = generate(tmp_path, lines_nginx=1_000, lines_sshd=1_000, seed=1, attack_ratio=0.0)
    assert set(m.attacks) == {OFFICE_ADDRESS}
    assert m.should_ban() == frozenset()


def test_timestamp_formats() -> None:
    """Timestamps use nginx's and syslog's exact layouts (space-padded syslog day)."""
    assert fmt_access_ts(1_795_648_470) == "25/Nov/2026:23:14:30 +0000"
    assert fmt_syslog_ts(1_794_351_600) == "Nov 10 23:00:00"
    assert fmt_syslog_ts(1_793_919_600) == "Nov  5 23:00:00"


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban-regex not installed")
def test_fail2ban_sshd_filter_finds_the_ssh_attackers(tmp_path: Path) -> None:
    """Debian's own sshd filter matches every ssh attacker's lines (the format is real)."""
    m = generate(tmp_path, lines_nginx=10, lines_sshd=4_000, seed=2, attack_ratio=0.2)
    res = subprocess.run(
        ["fail2ban-regex", "-o", "ip", str(tmp_path / "auth.log"),
         "/etc/fail2ban/filter.d/sshd.conf"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    hits = Counter(res.stdout.split())
    ssh = m.by_kind(AttackKind.SSH_BRUTE_FORCE) | m.by_kind(AttackKind.SSH_CREDENTIAL_STUFFING)
    assert ssh
    for addr in ssh:
        assert hits[addr] >= 6, addr
    assert {a for a, n in hits.items() if n >= 5} == ssh


def _read_all(path: Path) -> list[str]:
    out: list[str] = []
    for p in (path.with_name(path.name + ".1"), path):
        if p.exists():
            out += _lines(p)
    return out


def test_live_scenario_writes_everything_and_rotates_once(tmp_path: Path) -> None:
    """Driven by a FakeClock, the writer writes the whole plan, rotating once at half time."""
    clock = FakeClock()
    live = LiveScenario(tmp_path, seed=4, rate=50, duration=20, clock=clock, tick=0.005)
    planned = live.planned_lines
    live.start()
    deadline = time.monotonic() + 20
    while not live.finished.is_set():
        assert time.monotonic() < deadline, "writer did not finish"
        clock.advance(0.5)
        time.sleep(0.002)
    assert live.join(timeout=5)
    assert live.rotated.is_set()
    assert live.lines_written == planned
    for role, name in {"access": "access.log", "error": "error.log", "auth": "auth.log"}.items():
        assert (tmp_path / (name + ".1")).exists()
        assert len(_read_all(tmp_path / name)) == planned[role]
    # Timestamps are the clock's now, which only ever moved forward from its start.
    first = _lines(tmp_path / "access.log.1")[0]
    assert fmt_access_ts(int(DEFAULT_START_TS))[:14] in first
    assert all(ACCESS_RE.match(line) for line in _read_all(tmp_path / "access.log"))
    assert all(SYSLOG_RE.match(line) for line in _read_all(tmp_path / "auth.log"))


def test_live_scenario_manifest_names_its_attackers(tmp_path: Path) -> None:
    """The live plan has one attacker per kind plus the allowlisted office."""
    live = LiveScenario(tmp_path, seed=1, clock=FakeClock())
    kinds = Counter(a.kind for a in live.manifest.attacks.values())
    assert set(kinds) == set(AttackKind)
    assert live.manifest.attacks[OFFICE_ADDRESS].allowlisted
    assert live.manifest.should_ban() == frozenset(live.manifest.attacks) - {OFFICE_ADDRESS}


def test_live_scenario_stop_ends_the_writer_early(tmp_path: Path) -> None:
    """stop() ends the writer promptly even though the plan is not done."""
    clock = FakeClock()
    live = LiveScenario(tmp_path, seed=2, rate=20, duration=30, clock=clock, tick=0.01)
    live.start()
    clock.advance(3)
    deadline = time.monotonic() + 10
    while live.lines_written["access"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    live.stop()
    assert live.join(timeout=5)
    assert not live.finished.is_set()
    assert not live.rotated.is_set()
    assert 0 < sum(live.lines_written.values()) < sum(live.planned_lines.values())
    assert not any(t.name == "live-scenario" for t in threading.enumerate())


def test_live_scenario_names_the_attacks_played_in_full(tmp_path: Path) -> None:
    """Stopped once the first attack is written in full, only the attacks whose every
    line was written count as played (some, not all); a finished writer played all."""
    clock = FakeClock()
    live = LiveScenario(tmp_path / "a", seed=2, rate=20, duration=30, clock=clock, tick=0.005)
    assert live.played_attacks() == frozenset()
    live.start()
    deadline = time.monotonic() + 20
    while not live.played_attacks():
        assert time.monotonic() < deadline, "nothing played"
        clock.advance(0.25)
        time.sleep(0.01)
    live.stop()
    assert live.join(timeout=5)
    played = live.played_attacks()
    assert 0 < len(played) < len(live.manifest.attacks)
    whole = LiveScenario(
        tmp_path / "b", seed=2, rate=20, duration=30, clock=FakeClock(), tick=0.005
    )
    whole.start()
    while not whole.finished.is_set():
        assert isinstance(whole.clock, FakeClock)
        whole.clock.advance(1)
        time.sleep(0.002)
    assert whole.join(timeout=5)
    assert whole.played_attacks() == frozenset(whole.manifest.attacks)
