"""nginx in front of AI backends: authentication, rate limiting, TLS and its versions
(from ``nginx -T``).

Only locations whose ``proxy_pass`` reaches an AI upstream (a port in ``ai_ports``
or a name in ``ai_upstream_names``, directly or through an ``upstream`` block) are
judged. When nginx is not installed and nothing listens on 80/443 the checks pass
("not installed"); if something else does listen there they are ``unknown``.
"""

from __future__ import annotations

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register, worse
from aisentinel.audit.checks.exposure import all_listeners
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status
from aisentinel.audit.nginxconf import AiLocation, Listen, NginxParseError, ai_locations, parse_dump

_WEB_PORTS = (80, 443)


class _NotInstalledError(Exception):
    """nginx is absent and nothing listens on the web ports."""


def _nginx_args(ctx: AuditContext) -> list[str]:
    args = ["-T"]
    if ctx.config.nginx_conf is not None:
        args += ["-c", str(ctx.config.nginx_conf)]
    return args


def _read(ctx: AuditContext) -> tuple[list[AiLocation], int]:
    if not ctx.has_tool("nginx"):
        web = [s for s in all_listeners(ctx) if s.port in _WEB_PORTS and not s.loopback]
        if web:
            where = ", ".join(str(s) for s in web)
            raise CannotCheckError(f"nginx is not installed but {where} listens (another proxy?)")
        raise _NotInstalledError
    result = ctx.tool("nginx", *_nginx_args(ctx))
    if not result.ok:
        raise CannotCheckError(result.message())
    try:
        tree = parse_dump(result.stdout)
    except NginxParseError as exc:
        raise CannotCheckError(f"cannot parse nginx -T output: {exc}") from None
    return ai_locations(tree, ctx.config.ai_ports, ctx.config.ai_upstream_names)


def nginx_ai_locations(ctx: AuditContext) -> tuple[list[AiLocation], int] | None:
    """AI locations and the server count (once per run); ``None`` when nginx is absent."""
    try:
        return ctx.memo("nginx", lambda: _read(ctx))
    except _NotInstalledError:
        return None


def _gather(ctx: AuditContext) -> list[AiLocation] | Verdict:
    data = nginx_ai_locations(ctx)
    if data is None:
        return Verdict.of(Status.PASS, ["nginx is not installed and nothing listens on 80/443"])
    locations, servers = data
    if not locations:
        return Verdict.of(
            Status.PASS, [f"no location proxies to an AI upstream ({servers} server blocks)"]
        )
    return locations


AUTH_FIX = (
    "In each location that proxies to the AI backend add authentication, e.g.\n"
    '    auth_basic "AI API";\n'
    "    auth_basic_user_file /etc/nginx/ai.htpasswd;\n"
    "    # create it with: htpasswd -c /etc/nginx/ai.htpasswd alice\n"
    "or a bearer token (http level):\n"
    '    map $http_authorization $ai_token_ok { default 0; "Bearer <long-random-token>" 1; }\n'
    "  and in the location:  if ($ai_token_ok = 0) { return 401; }\n"
    "  (in the location that proxies or the server block: an if/return in an enclosing\n"
    '  location does not run for a nested one; if ($http_authorization = "") lets any\n'
    "  token in)\n"
    "auth_basic needs an auth_basic_user_file; `satisfy any` lets the addresses that\n"
    "`allow` matches in without credentials (keep `satisfy all`, the default)\n"
    "then: nginx -t && systemctl reload nginx"
)

RATE_FIX = (
    "At http level:  limit_req_zone $binary_remote_addr zone=ai:10m rate=5r/s;\n"
    "In each AI location:  limit_req zone=ai burst=20 nodelay;\n"
    "then: nginx -t && systemctl reload nginx"
)

TLS_FIX = (
    "Serve the AI locations over TLS only:\n"
    "    listen 443 ssl;  listen [::]:443 ssl;\n"
    "    ssl_certificate /etc/letsencrypt/live/<host>/fullchain.pem;\n"
    "    ssl_certificate_key /etc/letsencrypt/live/<host>/privkey.pem;\n"
    "and redirect port 80:  server { listen 80; return 301 https://$host$request_uri; }\n"
    "(certbot --nginx -d <host> does both)"
)
PROTOCOLS_FIX = (
    "Allow only current TLS versions, in the http block (or each server that sets its own):\n"
    "    ssl_protocols TLSv1.2 TLSv1.3;"
)
_FIX_ORDER = (TLS_FIX, PROTOCOLS_FIX)
_OLD_PROTOCOLS = frozenset(("sslv2", "sslv3", "tlsv1", "tlsv1.1"))
"""``ssl_protocols`` values of protocols deprecated by RFC 8996 (or long broken), lower-cased:
nginx compares them case-insensitively."""


def _auth(ctx: AuditContext) -> Verdict:
    gathered = _gather(ctx)
    if isinstance(gathered, Verdict):
        return gathered
    status = Status.PASS
    lines = []
    for loc in gathered:
        if loc.auth is not None and loc.partial_auth is not None:
            lines.append(f"{loc.label()}: {loc.auth}, but {loc.partial_auth}")
            status = worse(status, Status.WARN)
        elif loc.auth is not None:
            lines.append(f"{loc.label()}: {loc.auth}")
        elif loc.weak_auth is not None:
            lines.append(f"{loc.label()}: {loc.weak_auth}")
            status = worse(status, Status.WARN)
        elif loc.address_filter:
            lines.append(f"{loc.label()}: address allowlist only, no authentication")
            status = worse(status, Status.WARN)
        else:
            why = "; ".join(w for w in (loc.ineffective_auth, loc.outer_auth) if w)
            lines.append(f"{loc.label()}: NO authentication" + (f" ({why})" if why else ""))
            status = Status.FAIL
    return Verdict.of(status, lines, AUTH_FIX)


def _rate_limit(ctx: AuditContext) -> Verdict:
    gathered = _gather(ctx)
    if isinstance(gathered, Verdict):
        return gathered
    lines = [
        f"{loc.label()}: " + (f"limit_req {loc.rate_limit}" if loc.rate_limit else "NO limit_req")
        for loc in gathered
    ]
    failed = any(loc.rate_limit is None for loc in gathered)
    return Verdict.of(Status.FAIL if failed else Status.PASS, lines, RATE_FIX)


def _tls(ctx: AuditContext) -> Verdict:
    gathered = _gather(ctx)
    if isinstance(gathered, Verdict):
        return gathered
    status = Status.PASS
    fixes: set[str] = set()
    lines = []
    seen: set[tuple[str, tuple[Listen, ...]]] = set()
    for loc in gathered:
        if (loc.server, loc.listens) in seen:
            continue
        seen.add((loc.server, loc.listens))
        plain = [ls.text for ls in loc.listens if not ls.tls and not ls.loopback]
        if plain:
            status = worse(status, Status.FAIL)
            fixes.add(TLS_FIX)
            lines.append(f"server {loc.server}: public listen without TLS: {', '.join(plain)}")
        else:
            lines.append(
                f"server {loc.server}: listens " + ", ".join(ls.text for ls in loc.listens)
            )
        if not any(ls.tls and not ls.loopback for ls in loc.listens):
            continue
        old = [p for p in loc.tls_protocols or () if p.lower() in _OLD_PROTOCOLS]
        if old:
            status = worse(status, Status.WARN)
            fixes.add(PROTOCOLS_FIX)
            lines.append(
                f"server {loc.server}: ssl_protocols allows {' '.join(old)} (deprecated, RFC 8996)"
            )
    return Verdict.of(status, lines, "\n".join(sorted(fixes, key=_FIX_ORDER.index)))


register("nginx.auth", "nginx requires authentication on AI locations", _auth)
register("nginx.rate-limit", "nginx rate-limits AI locations (limit_req)", _rate_limit)
register("nginx.tls", "nginx serves AI locations over TLS 1.2+ on public listeners", _tls)
