"""The .deb: build, lintian, contents, and install -> upgrade -> purge on this machine.

The install test needs root and changes the machine (a package, a system user); it
purges everything it installed, also on failure, and refuses to run where aisentinel is
already installed, so it never overwrites a real installation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from nsharness import Lab, missing_tools
from promstack import free_port

from aisentinel.cli import build_parser as build_cli
from aisentinel.clock import FakeClock
from aisentinel.compiled import HOT_MODULES
from aisentinel.events import HttpRateLimited
from aisentinel.parsers import ParserContext, build_parser

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "packaging" / "build-deb.sh"
SNIPPET = REPO / "packaging" / "nginx" / "ai-location-auth-ratelimit.conf"
MAN_PAGE = REPO / "packaging" / "aisentinel.1"
CONFFILE = Path("/etc/aisentinel/aisentinel.toml")
STATE_DIR = Path("/var/lib/aisentinel")


# Building a .deb (mypyc included) takes minutes on 2 cores; the first test's setup and
# the upgrade test (which builds a second one) need more than the 300 s default.
pytestmark = pytest.mark.timeout(900)


def _project_version() -> str:
    text = (REPO / "aisentinel" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert match
    return match.group(1)


def _build(dist: Path, version: str | None = None) -> Path:
    env = dict(os.environ, DIST_DIR=str(dist), AISENTINEL_DEB_LINTIAN="0")
    if version is not None:
        env["AISENTINEL_DEB_VERSION"] = version
    result = subprocess.run(
        ["bash", str(BUILD)], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert deb.is_file()
    return deb


def _run(
    *args: str, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, input=input
    )


def _installed() -> bool:
    result = _run("dpkg-query", "-W", "-f=${Status}", "aisentinel")
    return result.returncode == 0 and "installed" in result.stdout.split()


@pytest.fixture(scope="module")
def deb() -> Iterator[Path]:
    """The package built from this checkout by packaging/build-deb.sh."""
    dist = Path(tempfile.mkdtemp(prefix="aisentinel-dist-"))
    try:
        yield _build(dist)
    finally:
        shutil.rmtree(dist, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="building the .deb needs root")
@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian system")
def test_file_name_and_control_fields(deb: Path) -> None:
    """dist/aisentinel_<version>_<arch>.deb, depending on Debian's python3 (>= 3.11)."""
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"aisentinel_{_project_version()}_{arch}.deb"
    fields = _run("dpkg-deb", "-f", str(deb), "Package", "Version", "Depends").stdout
    assert "Package: aisentinel" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M)
    assert depends
    assert "python3 (>= 3.11)" in depends.group(1)
    assert "adduser" in depends.group(1)
    control = _run("dpkg-deb", "-I", str(deb), "conffiles").stdout
    assert control.split() == [
        str(CONFFILE),
        "/etc/fail2ban/jail.d/aisentinel.conf",
        "/etc/fail2ban/filter.d/aisentinel.conf",
    ]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="building the .deb needs root")
@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian system")
def test_package_contents(deb: Path) -> None:
    """The tree holds the command, unit, conffile, examples, snippets, every docs/*.md;
    no byte-code."""
    listing = _run("dpkg-deb", "-c", str(deb)).stdout
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    expected = {
        "/usr/bin/aisentinel",
        "/lib/systemd/system/aisentinel.service",
        "/etc/aisentinel/aisentinel.toml",
        "/opt/aisentinel/venv/bin/aisentinel",
        "/usr/share/aisentinel/examples/aisentinel-nftables.conf",
        "/usr/share/aisentinel/examples/aisentinel-throttle.conf",
        "/usr/share/aisentinel/examples/ollama-limits.conf",
        "/usr/share/aisentinel/examples/vllm-limits.conf",
        "/usr/share/aisentinel/examples/web-config.yml",
        "/usr/share/doc/aisentinel/runbooks.md",
        "/usr/share/aisentinel/nginx/ai-location-auth-ratelimit.conf",
        "/usr/share/doc/aisentinel/copyright",
        "/usr/share/doc/aisentinel/changelog.gz",
        "/usr/share/man/man1/aisentinel.1.gz",
    }
    assert expected <= paths
    for doc in ["README.md", "ARCHITECTURE.md", *(p.name for p in (REPO / "docs").glob("*.md"))]:
        assert f"/usr/share/doc/aisentinel/{doc}" in paths
    for snippet in (REPO / "packaging" / "nginx").glob("*.conf"):
        assert f"/usr/share/aisentinel/nginx/{snippet.name}" in paths
    for board in (REPO / "dashboards").rglob("*"):
        if board.is_file() and not board.name.startswith("."):
            rel = board.relative_to(REPO / "dashboards")
            assert f"/usr/share/aisentinel/dashboards/{rel}" in paths
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    if shutil.which("gcc"):  # build-deb.sh compiles the hot modules; .py stays beside each
        site = "/opt/aisentinel/venv/lib/python3.11/site-packages/"
        for name in HOT_MODULES:
            stem = site + name.replace(".", "/")
            assert stem + ".py" in paths
            assert [p for p in paths if p.startswith(stem + ".cpython-") and p.endswith(".so")]
    assert "/usr/bin/aisentinel -> /opt/aisentinel/venv/bin/aisentinel" in listing


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="building the .deb needs root")
@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian is not installed")
def test_lintian_reports_no_errors(deb: Path) -> None:
    """lintian finds no error-level tag (warnings are printed for the record)."""
    result = _run("lintian", "--no-tag-display-limit", str(deb), timeout=600)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    print("\n".join(tags) or "lintian: no errors, no warnings")
    assert not [t for t in tags if t.startswith("E: ")], tags


def _check_installed() -> None:
    """The installed package: its user, state directory and commands work."""
    groups = set(_run("id", "-nG", "aisentinel").stdout.split())
    assert {"aisentinel", "adm"} <= groups
    assert STATE_DIR.is_dir()
    assert oct(STATE_DIR.stat().st_mode & 0o777) == "0o750"
    version = _run("/usr/bin/aisentinel", "--version")
    assert version.returncode == 0, version.stderr
    assert _project_version() in version.stdout
    if shutil.which("gcc"):  # the installed package's own modules, not the suite's
        bare = _run("env", "-u", "PYTHONPATH", "/usr/bin/aisentinel", "--version")
        assert "compiled: yes" in bare.stdout, bare.stdout + bare.stderr
    check = _run("/usr/bin/aisentinel", "check-config")
    assert check.returncode == 0, check.stdout + check.stderr
    audit = _run("/usr/bin/aisentinel", "audit", "--json")
    assert audit.returncode in (0, 1), audit.stderr
    json.loads(audit.stdout)


def _check_purged() -> None:
    """Nothing of the package is left: files, state, config, user."""
    assert not _installed()
    assert not STATE_DIR.exists()
    assert not CONFFILE.parent.exists()
    assert not Path("/opt/aisentinel").exists()
    assert not Path("/usr/bin/aisentinel").exists()
    assert _run("getent", "passwd", "aisentinel").returncode != 0


# A ban as the nftables responder makes it: its table, a timeout set, a drop chain.
NFT_BAN = """table inet aisentinel {
    set v4_32 { type ipv4_addr; flags timeout; elements = { 203.0.113.77 timeout 1h } }
    chain input { type filter hook input priority -200; policy accept; ip saddr @v4_32 drop; }
}
"""
ENFORCING = """
[responders.nftables]
[responders.fail2ban]
socket = "/nonexistent/aisentinel-test/fail2ban.sock"
"""


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="installing the .deb needs root")
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not a Debian system")
@pytest.mark.skipif(missing_tools("nft") is not None, reason=missing_tools("nft") or "")
def test_install_upgrade_purge(deb: Path, tmp_path: Path) -> None:
    """Installed commands work; an upgrade keeps config edits, state and the nftables
    ban in force; purge lifts it (a withdrawal that fails only warns) and removes all.

    The upgrade and the purge run in a network namespace of the test's own, holding the
    table a daemon would have left, so the host's firewall is never touched."""
    if _installed():
        pytest.skip("aisentinel is installed on this machine; not touching that install")
    lab = Lab("p").up()

    def in_ns(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(*lab.ns(lab.srv, list(args)))

    def table() -> str:
        return in_ns("nft", "list", "table", "inet", "aisentinel").stdout

    try:
        result = _run("apt-get", "install", "-y", str(deb))
        assert result.returncode == 0, result.stdout + result.stderr
        _check_installed()

        CONFFILE.write_text(CONFFILE.read_text() + "# edited by the upgrade test\n" + ENFORCING)
        edited = CONFFILE.read_text()
        (STATE_DIR / "upgrade-marker").write_text("state")
        loaded = _run(*lab.ns(lab.srv, ["nft", "-f", "-"]), input=NFT_BAN)
        assert loaded.returncode == 0, loaded.stderr
        assert "203.0.113.77" in table()

        newer = _build(tmp_path, version=_project_version() + "+upgradetest1")
        result = in_ns("apt-get", "install", "-y", str(newer))
        assert result.returncode == 0, result.stdout + result.stderr
        status = _run("dpkg-query", "-W", "-f=${Version}", "aisentinel").stdout
        assert status == _project_version() + "+upgradetest1"
        assert CONFFILE.read_text() == edited
        assert (STATE_DIR / "upgrade-marker").read_text() == "state"
        assert _run("/usr/bin/aisentinel", "--version").returncode == 0
        assert "203.0.113.77" in table()  # an upgrade lifts nothing
        CONFFILE.write_text(edited + "[zz_upgrade_test]\nx = 1\n")
        postinst = "/var/lib/dpkg/info/aisentinel.postinst"
        refused = in_ns(postinst, "configure", _project_version())
        assert refused.returncode == 0, refused.stdout + refused.stderr
        assert "the configuration is refused" in refused.stderr
        assert "zz_upgrade_test" in refused.stderr
        CONFFILE.write_text(edited)
        prerm = "/var/lib/dpkg/info/aisentinel.prerm"
        failed = in_ns(prerm, "failed-upgrade", _project_version())  # dpkg's second try
        assert failed.returncode == 0, failed.stdout + failed.stderr
        assert "203.0.113.77" in table()

        result = in_ns("apt-get", "purge", "-y", "aisentinel")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "nftables: table inet aisentinel deleted" in out
        assert "fail2ban: FAILED: " in out
        assert "not every enforcement was lifted" in out
        assert table() == ""
        _check_purged()
    finally:
        if _installed() or _run("dpkg-query", "-W", "aisentinel").returncode == 0:
            in_ns("apt-get", "purge", "-y", "aisentinel")  # its withdrawal: the lab's tables
        lab.close()


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of ``parser``, as its words (``("rules", "list")``) and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def _synopsis() -> list[str]:
    """The man page's SYNOPSIS, one plain-text line per command."""
    section = MAN_PAGE.read_text().split(".SH SYNOPSIS\n", 1)[1].split("\n.SH ", 1)[0]
    return [
        " ".join(line.split(" ", 1)[1] for line in entry.splitlines() if " " in line).replace(
            "\\-", "-"
        )
        for entry in section.split("\n.br\n")
    ]


def test_man_page_shows_every_command_and_option() -> None:
    """Each command of `aisentinel --help` (two-word ones included) has a SYNOPSIS line in
    the man page, showing every option and argument its own --help lists (one of its names:
    -v or --verbose) and no other option, and a paragraph of its own."""
    synopsis = _synopsis()
    description = MAN_PAGE.read_text().split(".SH DESCRIPTION", 1)[1].replace("\\-", "-")
    for words, parser in _commands(build_cli()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # brake, ledger, rules: their actions have the lines
        command = "aisentinel " + " ".join(words)
        line = next((v for v in synopsis if f"{v} ".startswith(command + " ")), None)
        assert line is not None, f"{command}: no SYNOPSIS line"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or "-h" in action.option_strings:
                continue
            shown = [
                o for o in action.option_strings if re.search(rf"(?<![\w-]){o}(?![\w-])", line)
            ]
            if action.option_strings:
                assert shown, f"{command}: {action.option_strings}"
            else:  # a positional: its metavar (or its name in capitals)
                name = str(action.metavar or action.dest.upper())
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line), (command, name)
        known = {o for a in parser._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])--?[a-z][\w-]*", line.removeprefix(command)):
            assert option in known, f"{command}: the man page shows {option}, unknown to it"
        assert f"\n.B {' '.join(words)}\n" in description, f"{command}: no paragraph"


def _nginx_conf(tmp_path: Path, port: int) -> Path:
    """nginx.conf holding the auth + limit_req example, its server part uncommented, on
    ``port``, logging errors as Debian's nginx.conf does (``error_log FILE;``: level error)."""
    text = SNIPPET.read_text()
    http_part, _, server_part = text.partition("# ---- server context")
    location = "\n".join(
        line.removeprefix("# ")
        for line in server_part.splitlines()[1:]
        if line.startswith("# ") or line == "#"
    )
    assert "auth_basic" in location
    assert "limit_req zone=ai_api" in location
    location = location.replace("/etc/nginx/ai.htpasswd", str(tmp_path / "ai.htpasswd"))
    (tmp_path / "ai.htpasswd").write_text("")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {tmp_path};\n"
        f"  proxy_temp_path {tmp_path}/p;\n  fastcgi_temp_path {tmp_path}/f;\n"
        f"  uwsgi_temp_path {tmp_path}/u;\n  scgi_temp_path {tmp_path}/s;\n"
        f"{http_part}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        f"{location}\n"
        "  }\n}\n"
    )
    return conf


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_ai_location_snippet_is_valid(tmp_path: Path) -> None:
    """The auth + limit_req example passes `nginx -t` with its server part uncommented."""
    conf = _nginx_conf(tmp_path, 18080)
    result = _run("nginx", "-t", "-q", "-c", str(conf), "-p", str(tmp_path))
    assert result.returncode == 0, result.stderr


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="running nginx needs root")
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_snippet_rejections_reach_the_nginx_error_parser(tmp_path: Path) -> None:
    """Under Debian's error_log level, a 429 of the example's limit_req writes an error-log
    line that the nginx-error parser reads as the client's HttpRateLimited in zone ai_api."""
    port = free_port()
    conf = _nginx_conf(tmp_path, port)
    server = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/ollama/api/tags"
        assert wait_for(lambda: (tmp_path / "nginx.pid").exists() and _up(port)), "nginx not up"
        codes = [_status(url) for _ in range(40)]  # 2r/s with a burst of 10: most refused
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert 429 in codes, codes
    assert set(codes) <= {401, 429}, codes  # the credentials are asked for after the limit
    parser = build_parser("nginx-error", ParserContext(source="e", clock=FakeClock()))
    lines = (tmp_path / "error.log").read_text().splitlines()
    limited = [e for e in map(parser.parse, lines) if isinstance(e, HttpRateLimited)]
    assert len(limited) == codes.count(429), lines
    assert {(e.client, e.zone) for e in limited} == {("127.0.0.1", "ai_api")}
