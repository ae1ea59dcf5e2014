"""nginx checks: the real nginx validates and dumps each fixture config; the checks judge it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig, AuditTools
from aisentinel.audit.engine import run_check
from aisentinel.audit.model import CheckResult, Status
from aisentinel.audit.nginxconf import (
    NginxParseError,
    ai_locations,
    is_ai_target,
    parse_dump,
    parse_file,
)
from aisentinel.audit.testing import empty_proc, make_context
from aisentinel.commands import CommandResult, FakeRunner, SubprocessRunner

CASES = Path(__file__).parent / "fixtures" / "audit" / "nginx"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
NGINX_CHECKS = ("nginx.auth", "nginx.rate-limit", "nginx.tls")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away self-signed certificate for the TLS server blocks."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=ai.example.test",
         "-keyout", str(out / "key.pem"), "-out", str(out / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


def install_case(case: Path, prefix: Path, certs: Path) -> Path:
    """Copy a case folder to ``prefix`` with its placeholders filled; returns nginx.conf."""
    for src in case.rglob("*.conf"):
        dst = prefix / src.relative_to(case)
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_text().replace("@PREFIX@", str(prefix)).replace("@CERTS@", str(certs))
        dst.write_text(text)
    return prefix / "nginx.conf"


@needs_nginx
@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_fixture_case_with_real_nginx(case: str, tmp_path: Path, certs: Path) -> None:
    """Each case config is valid for the real nginx, and the checks give its expected statuses."""
    conf = install_case(CASES / case, tmp_path, certs)
    check = subprocess.run(
        [str(NGINX), "-t", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    expected = json.loads((CASES / case / "expected.json").read_text())
    config = AuditConfig(
        nginx_conf=conf, tools=AuditTools(nginx=str(NGINX)), proc_root=empty_proc(tmp_path)
    )
    ctx = make_context(config, runner=SubprocessRunner())
    results = {cid: run_check(CHECKS.get(cid).factory, ctx) for cid in NGINX_CHECKS}
    assert {cid: r.status.value for cid, r in results.items()} == {
        cid: expected[cid] for cid in NGINX_CHECKS
    }, results
    dump = ctx.tool("nginx", "-T", "-c", str(conf)).stdout
    found, _ = ai_locations(parse_dump(dump), config.ai_ports, config.ai_upstream_names)
    assert len(found) == expected["ai_locations"]


@needs_nginx
def test_mixed_case_evidence_names_the_open_location(tmp_path: Path, certs: Path) -> None:
    """The fail names the location whose auth was switched off, with file and line."""
    conf = install_case(CASES / "mixed", tmp_path, certs)
    config = AuditConfig(
        nginx_conf=conf, tools=AuditTools(nginx=str(NGINX)), proc_root=empty_proc(tmp_path)
    )
    result = run_check(
        CHECKS.get("nginx.auth").factory, make_context(config, runner=SubprocessRunner())
    )
    open_lines = [line for line in result.evidence if "NO authentication" in line]
    assert len(open_lines) == 1
    assert "location /api/" in open_lines[0]
    assert f"{tmp_path}/conf.d/ai.conf:" in open_lines[0]
    assert any("address allowlist only" in line and "/lan/" in line for line in result.evidence)
    assert "auth_basic_user_file" in result.remediation


def nginx_auth(
    case: str, tmp_path: Path, certs: Path, check: str = "nginx.auth"
) -> tuple[CheckResult, Path]:
    """``check`` run through the real nginx on fixture ``case``; also its conf.d/ai.conf."""
    conf = install_case(CASES / case, tmp_path, certs)
    config = AuditConfig(
        nginx_conf=conf, tools=AuditTools(nginx=str(NGINX)), proc_root=empty_proc(tmp_path)
    )
    ctx = make_context(config, runner=SubprocessRunner())
    return run_check(CHECKS.get(check).factory, ctx), tmp_path / "conf.d" / "ai.conf"


@needs_nginx
def test_nested_location_is_not_covered_by_the_enclosing_if(tmp_path: Path, certs: Path) -> None:
    """An if/return in an enclosing location leaves a nested one open; the server's covers it."""
    result, ai_conf = nginx_auth("bearer-nested", tmp_path, certs)
    assert result.status is Status.FAIL
    api, generate, chat = result.evidence
    assert api.startswith(
        f"server ai.example.test location /api/ -> http://127.0.0.1:11434 ({ai_conf}:"
    )
    assert 'bearer check (if ($http_authorization != "Bearer 0123' in api
    assert generate.startswith("server ai.example.test location /api/generate ->")
    assert "NO authentication (the bearer check (if ($http_authorization != " in generate
    assert generate.endswith("of an enclosing location does not run here)")
    assert chat.startswith("server vllm.example.test location /v1/chat/ -> http://vllm_pool")
    assert f"bearer check (if ($ai_token_ok = 0) at {ai_conf}:" in chat
    assert "an if/return in an enclosing" in result.remediation


@needs_nginx
def test_presence_only_bearer_checks_warn(tmp_path: Path, certs: Path) -> None:
    """`if ($http_authorization = "")` and a map listing only "" warn: any token gets in."""
    result, ai_conf = nginx_auth("bearer-weak", tmp_path, certs)
    assert result.status is Status.WARN
    assert [line.rsplit(": ", 1)[1] for line in result.evidence] == [
        f'bearer check (if ($http_authorization = "" ) at {ai_conf}:13) accepts any token',
        f"bearer check (if ($has_token = 0) at {ai_conf}:17) accepts any token",
    ]


@pytest.mark.parametrize(
    ("maps", "condition", "expected"),
    [
        ("", '($http_authorization != "Bearer s3cret")', Status.PASS),
        ("", '($http_authorization !~ "^Bearer (s3cret|t0ken)$")', Status.PASS),
        ("", '($http_authorization = "")', Status.WARN),
        ("", '($http_authorization !~ "^Bearer ")', Status.WARN),
        ("", '($http_authorization ~ "^$")', Status.WARN),
        ("", '($http_authorization = "Bearer s3cret")', Status.FAIL),
        ("", '($http_authorization !~ ".*")', Status.FAIL),
        ("", "($http_authorization)", Status.FAIL),
        (
            'map $http_authorization $ok { default 0; "Bearer s3cret" 1; }',
            "($ok != 1)",
            Status.PASS,
        ),
        ('map $http_authorization $ok { default 1; "" 0; }', "($ok = 0)", Status.WARN),
        ('map $http_authorization $ok { default 0; "~^Bearer .+" 1; }', "($ok = 0)", Status.WARN),
        (
            'map $http_authorization $has { default 1; "" 0; }\nmap $has $ok { default 0; 1 1; }',
            "($ok = 0)",
            Status.WARN,
        ),
    ],
)
def test_bearer_if_conditions(maps: str, condition: str, expected: Status, tmp_path: Path) -> None:
    """An `if` counts as a bearer check only if it refuses no header and any made-up token."""
    result = auth_of_dump(tmp_path, "", f"if {condition} {{ return 401; }}", http=maps)
    assert result.status is expected, result.evidence


def auth_of_dump(tmp_path: Path, server: str, location: str, http: str = "") -> CheckResult:
    """nginx.auth on a recorded dump: one TLS server proxying /api/ to Ollama, with the
    given extra directives at http, server and location level."""
    dump = (
        "# configuration file /etc/nginx/nginx.conf:\n"
        f"http {{ {http}\n limit_req_zone $binary_remote_addr zone=ai:10m rate=5r/s;\n"
        f" server {{ listen 443 ssl; server_name ai.example.com; {server}\n"
        f"  location /api/ {{ {location}\n"
        "   limit_req zone=ai; proxy_pass http://127.0.0.1:11434; } } }\n"
    )
    runner = FakeRunner({("nginx", "-T"): CommandResult(("nginx", "-T"), 0, dump, "")})
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)), runner=runner)
    return run_check(CHECKS.get("nginx.auth").factory, ctx)


BASIC = 'auth_basic "AI"; auth_basic_user_file /etc/nginx/ai.htpasswd;'


@pytest.mark.parametrize(
    ("server", "location", "expected", "says"),
    [
        ("", f"satisfy any; allow all; {BASIC}", Status.FAIL, "satisfy any with allow all at"),
        ("satisfy any;", f"allow 0.0.0.0/0; {BASIC}", Status.FAIL, "every client gets in"),
        ("", f"satisfy any; deny 10.0.0.9; allow ::/0; {BASIC}", Status.FAIL, "allow ::/0"),
        (
            "satisfy any; allow 10.0.0.0/8; allow 192.168.1.0/24; deny all;",
            BASIC,
            Status.WARN,
            "auth_basic, but 10.0.0.0/8, 192.168.1.0/24 get in without it (satisfy any)",
        ),
        ("", f"satisfy any; deny all; allow all; {BASIC}", Status.PASS, ": auth_basic"),
        ("satisfy any;", f"satisfy all; allow all; {BASIC}", Status.PASS, ": auth_basic"),
        ("", f"satisfy any; {BASIC}", Status.PASS, ": auth_basic"),
        (
            "",
            'auth_basic "AI";',
            Status.FAIL,
            "NO authentication (auth_basic at /etc/nginx/nginx.conf:4 has no "
            "auth_basic_user_file: nginx ignores it)",
        ),
        ("auth_basic_user_file /etc/nginx/ai.htpasswd;", 'auth_basic "AI";', Status.PASS, ""),
        ('auth_basic "AI";', "auth_basic_user_file /etc/nginx/ai.htpasswd;", Status.PASS, ""),
        (BASIC, "auth_basic off;", Status.FAIL, "NO authentication"),
    ],
)
def test_satisfy_any_and_user_file(
    server: str, location: str, expected: Status, says: str, tmp_path: Path
) -> None:
    """`satisfy any` + allow lets clients past auth; auth_basic without a user file is nothing."""
    result = auth_of_dump(tmp_path, server, location)
    assert result.status is expected, result.evidence
    assert says in result.evidence[0]


@needs_nginx
def test_broken_config_is_unknown_not_pass(tmp_path: Path) -> None:
    """When nginx -T rejects the config the checks are unknown with nginx's message."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"error_log {tmp_path}/e.log; pid {tmp_path}/p; events {{}}"
        " http { server { listen 80 } }"
    )
    config = AuditConfig(
        nginx_conf=conf, tools=AuditTools(nginx=str(NGINX)), proc_root=empty_proc(tmp_path)
    )
    result = run_check(
        CHECKS.get("nginx.auth").factory, make_context(config, runner=SubprocessRunner())
    )
    assert result.status is Status.UNKNOWN
    assert "nginx" in result.evidence[0]


def test_not_installed_and_no_web_port_passes(tmp_path: Path) -> None:
    """Without nginx and with nothing on 80/443 the nginx checks pass as "not installed"."""
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)))
    result = run_check(CHECKS.get("nginx.tls").factory, ctx)
    assert result.status is Status.PASS
    assert "not installed" in result.evidence[0]


def test_not_installed_but_port_443_listening_is_unknown(tmp_path: Path) -> None:
    """Without nginx but with something public on 443 the checks cannot vouch: unknown."""
    proc = empty_proc(tmp_path)
    (proc / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
    )
    ctx = make_context(AuditConfig(proc_root=proc))
    result = run_check(CHECKS.get("nginx.auth").factory, ctx)
    assert result.status is Status.UNKNOWN
    assert "0.0.0.0:443" in result.evidence[0]


@pytest.mark.parametrize(
    ("levels", "listen", "expected", "says"),
    [
        (("ssl_protocols TLSv1 TLSv1.1 TLSv1.2;", ""), "443 ssl", Status.WARN, "TLSv1 TLSv1.1"),
        (("ssl_protocols TLSv1;", "ssl_protocols TLSv1.2 TLSv1.3;"), "443 ssl", Status.PASS, ""),
        (("", "ssl_protocols SSLv3 TLSv1.2;"), "443 ssl", Status.WARN, "SSLv3"),
        (("", ""), "443 ssl", Status.PASS, ""),
        (("", "ssl_protocols TLSv1.1 TLSv1.2;"), "127.0.0.1:8443 ssl", Status.PASS, ""),
        (("", "ssl_protocols TLSv1 TLSv1.2;"), "80", Status.FAIL, ""),
        (("", "ssl_protocols tlsv1 TLSV1.1 TLSv1.2;"), "443 ssl", Status.WARN, "tlsv1 TLSV1.1"),
    ],
    ids=[
        "http-level",
        "server-overrides",
        "sslv3",
        "unset",
        "loopback-only",
        "plain-and-old",
        "any-case",
    ],
)
def test_tls_protocols_of_ai_servers(
    tmp_path: Path, levels: tuple[str, str], listen: str, expected: Status, says: str
) -> None:
    """ssl_protocols (server's, else http's, any case) allowing TLSv1/1.1 on public TLS warns."""
    http, server = levels
    dump = (
        "# configuration file /etc/nginx/nginx.conf:\n"
        f'http {{ {http} server {{ listen {listen}; {server} auth_basic "AI";\n'
        "  auth_basic_user_file /etc/nginx/ai.htpasswd; limit_req zone=z;\n"
        "  location / { proxy_pass http://127.0.0.1:11434; } } }\n"
    )
    runner = FakeRunner({("nginx", "-T"): CommandResult(("nginx", "-T"), 0, dump, "")})
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)), runner=runner)
    result = run_check(CHECKS.get("nginx.tls").factory, ctx)
    assert result.status is expected, result.evidence
    old = [line.split(": ", 1)[1] for line in result.evidence if "ssl_protocols allows" in line]
    assert old == ([f"ssl_protocols allows {says} (deprecated, RFC 8996)"] if says else [])
    assert ("ssl_protocols TLSv1.2 TLSv1.3;" in result.remediation) is bool(says)


@needs_nginx
def test_old_tls_case_names_the_server(tmp_path: Path, certs: Path) -> None:
    """Real nginx, case old-tls: the AI server's own TLSv1/1.1 warns over http's TLS 1.2+."""
    result, _ = nginx_auth("old-tls", tmp_path, certs, "nginx.tls")
    assert result.status is Status.WARN
    assert "server ai.example.test: ssl_protocols allows TLSv1 TLSv1.1 (deprecated, RFC 8996)" in (
        result.evidence
    )
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in result.remediation


def test_dump_with_include_and_quotes_parses() -> None:
    """Includes resolve against dumped files; quoted braces and comments do not break parsing."""
    dump = (
        "# configuration file /etc/nginx/nginx.conf:\n"
        "http { include sites/*.conf; }\n\n"
        "# configuration file /etc/nginx/sites/b.conf:\n"
        "server { listen 443 ssl; location / { proxy_pass http://127.0.0.1:8000; } }\n"
        "# configuration file /etc/nginx/sites/a.conf:\n"
        "server { # a comment with { brace\n"
        "  listen 80; location = \"/x;y\" { return 200 '{;}'; }\n"
        "  location /o/ { proxy_pass http://ollama.internal:9999; } }\n"
    )
    tree = parse_dump(dump)
    http = tree[0]
    servers = http.children("server")
    assert [s.file for s in servers] == ["/etc/nginx/sites/a.conf", "/etc/nginx/sites/b.conf"]
    found, count = ai_locations(tree, (8000,), ("ollama",))
    assert count == 2
    assert sorted(loc.target for loc in found) == [
        "http://127.0.0.1:8000",
        "http://ollama.internal:9999",
    ]


def test_parse_errors_name_file_and_line() -> None:
    """Unbalanced braces and a missing semicolon are errors naming file and line."""
    with pytest.raises(NginxParseError, match=r"f\.conf:3"):
        parse_file("http {\n}\n}", "f.conf")
    with pytest.raises(NginxParseError, match=r"f\.conf"):
        parse_file("http { listen 80 }", "f.conf")
    with pytest.raises(NginxParseError, match="no '# configuration file'"):
        parse_dump("nginx: [emerg] unexpected end of file")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://127.0.0.1:11434", True),
        ("http://localhost:8000/v1/", True),
        ("http://ai_pool", True),  # upstream with an AI port
        ("http://openwebui", True),  # by name
        ("http://unix:/run/ollama/ollama.sock:/", True),
        ("https://[::1]:7860", True),
        ("http://127.0.0.1:9090", False),
        ("http://backend", False),
        ("https://example.org", False),
    ],
)
def test_ai_target_detection(target: str, expected: bool) -> None:
    """proxy_pass targets count as AI by port (direct or via upstream) or by name."""
    upstreams = {"ai_pool": ["10.0.0.5:11434"], "backend": ["10.0.0.6:9000"], "openwebui": []}
    assert is_ai_target(target, upstreams, (11434, 8000, 7860), ("ollama", "openwebui")) is expected


def test_fake_runner_dump_drives_checks(tmp_path: Path) -> None:
    """With a recorded nginx -T dump the checks need no nginx binary (fixture-driven use)."""
    dump = (
        "# configuration file /etc/nginx/nginx.conf:\n"
        "http { server { listen 443 ssl; auth_request /auth; limit_req zone=z;\n"
        "  location / { proxy_pass http://127.0.0.1:11434; } } }\n"
    )
    runner = FakeRunner({("nginx", "-T"): CommandResult(("nginx", "-T"), 0, dump, "")})
    ctx = make_context(AuditConfig(proc_root=empty_proc(tmp_path)), runner=runner)
    statuses = {cid: run_check(CHECKS.get(cid).factory, ctx).status for cid in NGINX_CHECKS}
    assert statuses == dict.fromkeys(NGINX_CHECKS, Status.PASS)
    assert runner.calls.count(("nginx", "-T")) == 1  # one dump shared by the three checks
