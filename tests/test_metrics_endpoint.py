"""The metrics endpoint's web-config.yml (TLS, basic auth), its HTTP server and landing page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter
from promstack import WEB_CONFIG_EXAMPLE, basic, free_port, https_get, make_certs

from aisentinel.config import ConfigError, load_config
from aisentinel.metricsweb import BasicAuth, Landing, MetricsServer, render_landing, serve_metrics
from aisentinel.webconfig import WebConfig, WebConfigError, load_web_config

PASSWORD = "s3cret-scrape"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
LANDING = Landing(version="0.1.0", sources_up=1, sources_total=2, bans_active=3)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    return make_certs(tmp_path_factory.mktemp("certs"))


def _web(tmp_path: Path, certs: dict[str, Path], *, tls: bool = True) -> Path:
    path = tmp_path / "web-config.yml"
    text = f"basic_auth_users:\n  prometheus: {HASH}\n"
    if tls:
        text = (
            f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['key']}\n" + text
        )
    path.write_text(text)
    return path


def _issues(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(WebConfigError) as exc:
        load_web_config(path)
    assert exc.value.file == str(path)
    return list(exc.value.issues)


# ---------------------------------------------------------------- web-config.yml


def test_web_config_reads_tls_and_users(tmp_path: Path, certs: dict[str, Path]) -> None:
    """A valid file gives TLS settings and the users' bcrypt hashes."""
    web = load_web_config(_web(tmp_path, certs))
    assert web.tls is not None
    assert web.tls.cert_file == certs["cert"]
    assert web.users == {"prometheus": HASH.encode()}
    assert web.describe() == "TLS + basic auth"


def test_web_config_relative_paths_are_from_its_folder(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    """cert_file and key_file relative to the web-config file's folder, as Prometheus does."""
    for name in ("cert", "key"):
        shutil.copy(certs[name], tmp_path / f"m.{name}")
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: m.cert\n  key_file: m.key\n")
    tls = load_web_config(path).tls
    assert tls is not None
    assert tls.key_file == tmp_path / "m.key"


def test_web_config_unknown_unsupported_and_duplicate_keys(tmp_path: Path) -> None:
    """Unknown keys, toolkit keys aisentinel lacks and duplicates are refused with key + reason."""
    path = tmp_path / "web.yml"
    path.write_text(
        "basic_auth_user: {}\nhttp_server_config: {http2: false}\n"
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n"
    )
    issues = dict(_issues(path))
    assert issues["basic_auth_user"].startswith("unknown key")
    assert "not supported" in issues["http_server_config"]
    assert "not supported" in issues["tls_server_config.cipher_suites"]
    path.write_text(f"basic_auth_users:\n  a: {HASH}\n  a: {HASH}\n")
    [(_key, why)] = _issues(path)
    assert "duplicate key 'a'" in why


def test_web_config_bad_values(tmp_path: Path, certs: dict[str, Path]) -> None:
    """Non-bcrypt hashes, a CA without client auth, old TLS and a wrong key are each refused."""
    path = tmp_path / "web.yml"
    path.write_text(
        "basic_auth_users:\n  plain: hunter2\n  'a:b': " + HASH + "\n"
        f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['key']}\n"
        f"  client_ca_file: {certs['ca']}\n  min_version: TLS10\n"
    )
    issues = dict(_issues(path))
    assert "bcrypt" in issues["basic_auth_users.plain"]
    assert "without ':'" in issues["basic_auth_users.a:b"]
    assert "go together" in issues["tls_server_config.client_ca_file"]
    assert "TLS12" in issues["tls_server_config.min_version"]
    path.write_text(
        f"tls_server_config:\n  cert_file: {certs['cert']}\n  key_file: {certs['ca']}\n"
    )
    [(key, why)] = _issues(path)
    assert key == "tls_server_config"
    assert "do not load" in why


def test_web_config_refuses_the_examples_hash(tmp_path: Path) -> None:
    """The example's own hash (of its published password) is refused, naming the user."""
    example = "$2b$12$fCYdUefVFpokr/hhYTWV9.kOFpe4BMDOlNu4yqx7C22cBdPHdBxeO"
    assert example in WEB_CONFIG_EXAMPLE.read_text()
    other = bcrypt.hashpw(b"change-me-not", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prom: '{example}'\n  ok: {other}\n")
    issues = dict(_issues(path))
    assert set(issues) == {"basic_auth_users.prom"}
    assert issues["basic_auth_users.prom"].startswith(
        'is the example\'s hash of its published password "change-me"'
    )
    path.write_text(f"basic_auth_users:\n  ok: {other}\n")
    assert load_web_config(path).users == {"ok": other.encode()}


def test_web_config_refuses_a_salt_bcrypt_cannot_read(tmp_path: Path) -> None:
    """A hash whose salt ends in a character bcrypt refuses ("Invalid salt") is a config
    error, not an exception when the first scrape checks it."""
    bad = HASH[:28] + "z" + HASH[29:]  # the salt's 22nd character
    with pytest.raises(ValueError, match="Invalid salt"):
        bcrypt.checkpw(PASSWORD.encode(), bad.encode())
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: {bad}\n")
    [(key, why)] = _issues(path)
    assert key == "basic_auth_users.prometheus"
    assert why.startswith("must be a bcrypt hash")


def test_check_config_names_the_web_config_file(tmp_path: Path) -> None:
    """check-config fails on a bad web_config with that file, the key and the reason."""
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: nope\n")
    toml = tmp_path / "a.toml"
    toml.write_text(f'[exporter]\nweb_config = "{web}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(toml)
    assert f"{web}: basic_auth_users.prometheus: must be a bcrypt hash" in str(exc.value)


def test_yaml_and_bcrypt_load_only_with_a_web_config(tmp_path: Path) -> None:
    """A config without web_config leaves PyYAML and bcrypt unimported; one with it loads them."""
    web = _web(tmp_path, {}, tls=False)
    plain, with_web = tmp_path / "plain.toml", tmp_path / "web.toml"
    plain.write_text("")
    with_web.write_text(f'[exporter]\nweb_config = "{web}"\n')
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import aisentinel.daemon\n"
        "from aisentinel.config import load_config\n"
        "from aisentinel.metricsweb import BasicAuth\n"
        "cfg = load_config(Path(sys.argv[1]))\n"
        "web = cfg.web\n"
        "if web is not None:\n"
        "    BasicAuth(web.users)\n"
        "print(' '.join(m for m in ('yaml', 'bcrypt') if m in sys.modules) or '-')\n"
    )
    seen = {
        name: subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
        ).stdout.strip()
        for name, path in (("plain", plain), ("web", with_web))
    }
    assert seen == {"plain": "-", "web": "yaml bcrypt"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_shipped_example_and_test_file(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    """`promtool check web-config` accepts the example (with real certs) and our test file;
    aisentinel accepts the test file and refuses the example's published password."""
    example = WEB_CONFIG_EXAMPLE.read_text()
    assert "/etc/aisentinel/tls/metrics.crt" in example
    copy = tmp_path / "example.yml"
    copy.write_text(
        example.replace("/etc/aisentinel/tls/metrics.crt", str(certs["cert"])).replace(
            "/etc/aisentinel/tls/metrics.key", str(certs["key"])
        )
    )
    ours = _web(tmp_path, certs)
    for path in (copy, ours):
        res = subprocess.run(
            ["promtool", "check", "web-config", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
    assert load_web_config(ours).users
    [(key, why)] = _issues(copy)
    assert key == "basic_auth_users.prometheus"
    assert 'published password "change-me"' in why


# ---------------------------------------------------------------- auth and page


def test_basic_auth_checks_and_caches() -> None:
    """Right password passes (bcrypt once, then cached); wrong, unknown or garbled fail."""
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check(basic("prometheus", PASSWORD))
    assert auth.check(basic("prometheus", PASSWORD))
    assert auth.bcrypt_checks == 1
    assert not auth.check(basic("prometheus", "wrong"))
    assert not auth.check(basic("nobody", PASSWORD))
    assert auth.bcrypt_checks == 3  # an unknown user costs a bcrypt too
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + "bm9jb2xvbg=="):
        assert not auth.check(header)


def test_basic_auth_cache_expires() -> None:
    """A cached credential is checked with bcrypt again once its time is up."""
    now = [0.0]
    auth = BasicAuth({"prometheus": HASH.encode()}, ttl=10, monotonic=lambda: now[0])
    assert auth.check(basic("prometheus", PASSWORD))
    now[0] = 11.0
    assert auth.check(basic("prometheus", PASSWORD))
    assert auth.bcrypt_checks == 2


def test_landing_page_escapes_every_value() -> None:
    """Markup in a dynamic value is shown as text, never interpreted."""
    page = render_landing(
        Landing(version="<b>1</b>", sources_up=1, sources_total=2, bans_active=0, degraded=("<x>",))
    ).decode()
    assert "<b>1</b>" not in page
    assert "&lt;b&gt;1&lt;/b&gt;" in page
    assert "&lt;x&gt;" in page


@pytest.fixture
def server(tmp_path: Path, certs: dict[str, Path]) -> Iterator[MetricsServer]:
    """The endpoint with TLS + basic auth on a free loopback port, a counter registered."""
    registry = CollectorRegistry()
    Counter("probe_hits", "A test counter.", registry=registry).inc()
    web = load_web_config(_web(tmp_path, certs))
    httpd = serve_metrics("127.0.0.1", 0, registry, lambda: LANDING, web)
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_tls_and_auth_serve_metrics_and_page(server: MetricsServer, certs: dict[str, Path]) -> None:
    """With the password: metrics and landing page over TLS; without: 401 and no metrics."""
    base = f"https://127.0.0.1:{server.server_port}"
    status, body = https_get(base + "/metrics", certs["ca"], basic("prometheus", PASSWORD))
    assert status == 200
    assert "probe_hits_total 1.0" in body
    status, body = https_get(base + "/", certs["ca"], basic("prometheus", PASSWORD))
    assert status == 200
    assert '<td id="bans-active">3</td>' in body
    assert '<td id="sources-up">1/2</td>' in body
    for auth in (None, basic("prometheus", "wrong")):
        for path in ("/metrics", "/"):
            status, body = https_get(base + path, certs["ca"], auth)
            assert status == 401
            assert "probe_hits" not in body
    status, _ = https_get(base + "/other", certs["ca"], basic("prometheus", PASSWORD))
    assert status == 404


def test_plain_http_is_refused_by_tls_endpoint(
    server: MetricsServer, certs: dict[str, Path]
) -> None:
    """A plain-HTTP client gets no metrics from a TLS endpoint, and the server keeps serving."""
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    with pytest.raises(OSError):  # noqa: PT011 - reset or bad status line, depending on timing
        urllib.request.urlopen(url, timeout=5).read()
    base = f"https://127.0.0.1:{server.server_port}"
    status, _ = https_get(base + "/metrics", certs["ca"], basic("prometheus", PASSWORD))
    assert status == 200


def test_busy_port_raises_oserror() -> None:
    """A port in use raises OSError (the daemon turns it into degraded + retry)."""
    port = free_port()
    first = serve_metrics("127.0.0.1", port, CollectorRegistry(), lambda: LANDING, WebConfig("x"))
    try:
        with pytest.raises(OSError):  # noqa: PT011 - EADDRINUSE
            serve_metrics("127.0.0.1", port, CollectorRegistry(), lambda: LANDING)
    finally:
        first.shutdown()
        first.server_close()


def test_an_unreadable_web_config_is_reported_under_the_config_file_and_key(
    tmp_path: Path,
) -> None:
    """A web_config that cannot be read is refused naming the config file, the key and it."""
    toml = tmp_path / "a.toml"
    toml.write_text(f'[exporter]\nweb_config = "{tmp_path}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(toml)
    [issue] = exc.value.issues
    assert (issue.file, issue.key) == (str(toml), "exporter.web_config")
    assert issue.reason == f"{tmp_path}: cannot read: Is a directory"
