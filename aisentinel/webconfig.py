"""The metrics endpoint's TLS and basic auth, from a Prometheus ``web-config.yml`` file.

``[exporter] web_config`` names a file in the format of the Prometheus exporter
toolkit (the one ``promtool check web-config`` validates), of which aisentinel reads
this subset::

    tls_server_config:
      cert_file: /etc/aisentinel/tls/metrics.crt   # relative paths: from this file's folder
      key_file: /etc/aisentinel/tls/metrics.key
      client_auth_type: RequireAndVerifyClientCert  # or NoClientCert, VerifyClientCertIfGiven
      client_ca_file: /etc/aisentinel/tls/clients-ca.crt
      min_version: TLS12                            # TLS12 (default) or TLS13
      max_version: TLS13
    basic_auth_users:
      prometheus: $2b$12$...                        # bcrypt hash (htpasswd -nBC 12 "" ...)

Validation is strict: an unknown key, a key of the toolkit that aisentinel does not
implement, a duplicate key, a value of the wrong type, a hash that is not bcrypt, or a
certificate and key that do not load together is an error naming the file, the key and
the reason, so ``check-config`` refuses it before the daemon starts. A key the file
sets is never silently ignored: the endpoint is never less protected than the file says.

A user whose hash is the shipped example's (of ``change-me``, published with the
package) is refused too: copying the example unchanged would open the metrics to anyone
who read it. The hash is compared as text, at no cost (a bcrypt check of the password
against every hash took 0.27 s per user on each CLI command that reads the config).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TOP_KEYS = ("tls_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
)
UNSUPPORTED = {
    "http_server_config": "HTTP/2 and header settings",
    "rate_limit": "rate limiting",
    "tls_server_config.cert": "inline certificates (use cert_file)",
    "tls_server_config.key": "inline keys (use key_file)",
    "tls_server_config.client_ca": "an inline client CA (use client_ca_file)",
    "tls_server_config.cipher_suites": "choosing cipher suites (OpenSSL's defaults apply)",
    "tls_server_config.curve_preferences": "choosing curves (OpenSSL's defaults apply)",
    "tls_server_config.prefer_server_cipher_suites": "cipher suite preference",
    "tls_server_config.client_allowed_sans": "client SAN allow-lists",
}
"""Keys of the exporter toolkit that aisentinel refuses rather than ignores, and why."""
BCRYPT_HASH = re.compile(
    r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}"
)
"""A bcrypt hash bcrypt reads: the salt's 22nd character holds 2 bits (one of ``.Oeu``)."""
EXAMPLE_PASSWORD = b"change-me"
"""The password of packaging/examples/web-config.yml's hash: published, so refused."""
EXAMPLE_HASH = "$2b$12$fCYdUefVFpokr/hhYTWV9.kOFpe4BMDOlNu4yqx7C22cBdPHdBxeO"
"""The example's own hash of :data:`EXAMPLE_PASSWORD`."""
EXAMPLE_REASON = (
    'is the example\'s hash of its published password "change-me", which anyone could '
    "scrape with: make a hash of your own password (see the example's comment)"
)


class WebConfigError(Exception):
    """The file was refused; ``issues`` lists every ``(key, reason)`` found."""

    def __init__(self, file: str, issues: list[tuple[str, str]]) -> None:
        self.file = file
        self.issues = tuple(issues)
        super().__init__("\n".join(f"{file}: {k or '<top level>'}: {r}" for k, r in issues))


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``tls_server_config``, paths resolved."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None

    def context(self) -> ssl.SSLContext:
        """A server-side TLS context; ``OSError``/``ssl.SSLError`` when the files do not load."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version]
        if self.max_version is not None:
            ctx.maximum_version = TLS_VERSIONS[self.max_version]
        ctx.load_cert_chain(certfile=self.cert_file, keyfile=self.key_file)
        ctx.verify_mode = CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=self.client_ca_file)
        return ctx


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The validated file: TLS settings (or none) and bcrypt hashes per user (or none)."""

    path: str
    tls: TlsSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)

    def describe(self) -> str:
        """``TLS + basic auth``, ``TLS``, ``basic auth`` or ``plain HTTP``."""
        parts = [p for p, on in (("TLS", self.tls), ("basic auth", self.users)) if on]
        return " + ".join(parts) or "plain HTTP"


@cache
def _strict_loader() -> type[yaml.SafeLoader]:
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML (and libyaml) are imported here, on the first web config read: a daemon
    without ``web_config`` never loads them (about 1 MB of resident memory)."""
    import yaml  # noqa: PLC0415 - late on purpose (see the docstring)

    class StrictLoader(yaml.SafeLoader):
        pass

    def no_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
    return StrictLoader


def _parse_yaml(text: str, file: str) -> Any:
    """The YAML document ``text`` of ``file``, read by :func:`_strict_loader`'s loader."""
    loader = _strict_loader()
    import yaml  # noqa: PLC0415 - loaded already by _strict_loader

    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise WebConfigError(file, [("", f"YAML: {exc}")]) from None


def _keys(table: Mapping[Any, Any], prefix: str, known: tuple[str, ...]) -> list[tuple[str, str]]:
    issues = []
    for key in table:
        dotted = f"{prefix}{key}"
        if key in known:
            continue
        if dotted in UNSUPPORTED:
            issues.append((dotted, f"not supported by aisentinel ({UNSUPPORTED[dotted]})"))
        else:
            issues.append((dotted, f"unknown key; known: {', '.join(known)}"))
    return issues


def _path(value: Any, base: Path) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def _tls(table: Any, base: Path, issues: list[tuple[str, str]]) -> TlsSettings | None:
    prefix = "tls_server_config"
    if not isinstance(table, dict):
        issues.append((prefix, "must be a mapping"))
        return None
    issues.extend(_keys(table, f"{prefix}.", TLS_KEYS))
    paths: dict[str, Path | None] = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        paths[key] = _path(table.get(key), base)
        if key in table and paths[key] is None:
            issues.append((f"{prefix}.{key}", "must be a file path"))
    for key in ("cert_file", "key_file"):
        if key not in table:
            issues.append((f"{prefix}.{key}", "required with tls_server_config"))
    auth = table.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        issues.append((f"{prefix}.client_auth_type", f"must be one of: {', '.join(CLIENT_AUTH)}"))
    elif (auth == "NoClientCert") != (paths["client_ca_file"] is None):
        issues.append(
            (
                f"{prefix}.client_ca_file",
                "client_ca_file and a verifying client_auth_type go together",
            )
        )
    versions: dict[str, str | None] = {}
    for key, default in (("min_version", "TLS12"), ("max_version", None)):
        value = table.get(key, default)
        if value is not None and value not in TLS_VERSIONS:
            issues.append((f"{prefix}.{key}", f"must be one of: {', '.join(TLS_VERSIONS)}"))
            value = default
        versions[key] = value
    if issues or paths["cert_file"] is None or paths["key_file"] is None:
        return None
    tls = TlsSettings(
        cert_file=paths["cert_file"],
        key_file=paths["key_file"],
        client_auth_type=str(auth),
        client_ca_file=paths["client_ca_file"],
        min_version=versions["min_version"] or "TLS12",
        max_version=versions["max_version"],
    )
    try:
        tls.context()
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issues.append((prefix, f"certificate, key or client CA do not load: {why}"))
        return None
    return tls


def _users(table: Any, issues: list[tuple[str, str]]) -> dict[str, bytes]:
    prefix = "basic_auth_users"
    if table is None:
        return {}
    if not isinstance(table, dict):
        issues.append((prefix, "must be a mapping of user name to bcrypt hash"))
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in table.items():
        name = f"{prefix}.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            issues.append((name, "a user name is non-empty text without ':'"))
        elif not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            issues.append((name, "must be a bcrypt hash ($2b$<cost>$..., cost 04-31)"))
        elif hashed == EXAMPLE_HASH:
            issues.append((name, EXAMPLE_REASON))
        else:
            users[user] = hashed.encode("ascii")
    return users


def load_web_config(path: Path) -> WebConfig:
    """Read and validate ``path``; raise :class:`WebConfigError` listing every problem."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError(file, [("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise WebConfigError(file, [("", "not UTF-8 text")]) from None
    data = _parse_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(file, [("", "must be a mapping")])
    issues = _keys(data, "", TOP_KEYS)
    tls = None
    if data.get("tls_server_config") is not None:
        tls = _tls(data["tls_server_config"], path.parent, issues)
    users = _users(data.get("basic_auth_users"), issues)
    if issues:
        raise WebConfigError(file, issues)
    return WebConfig(path=file, tls=tls, users=users)
