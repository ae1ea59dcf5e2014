"""Unauthenticated access: a real GET without credentials to each exposed AI port.

For each AI port listening beyond loopback, ``probe_paths`` (``/api/tags``,
``/v1/models``) are requested from this host (a wildcard bind is reached via
127.0.0.1 or ::1). A 2xx answer means anyone who reaches the port can use the API.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

from aisentinel.audit.checks.base import Verdict, register
from aisentinel.audit.checks.exposure import exposed_ai_listeners
from aisentinel.audit.context import AuditContext, ProbeResult
from aisentinel.audit.model import Status
from aisentinel.audit.sockets import ListeningSocket

FIX = (
    "Put the API behind nginx with authentication and bind it to 127.0.0.1, e.g.:\n"
    "  location / {\n"
    '      auth_basic "AI";  auth_basic_user_file /etc/nginx/ai.htpasswd;\n'
    "      limit_req zone=ai burst=10 nodelay;\n"
    "      proxy_pass http://127.0.0.1:11434;\n"
    "  }\n"
    "  (htpasswd -c /etc/nginx/ai.htpasswd alice; Ollama: OLLAMA_HOST=127.0.0.1:11434)"
)


def probe_base(sock: ListeningSocket) -> str:
    """``http://host:port`` that reaches ``sock`` from this host."""
    address = sock.address
    if address.is_unspecified:
        host = "127.0.0.1" if address.version == 4 else "[::1]"
    elif isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        host = str(mapped) if mapped is not None else f"[{address}]"
    else:
        host = str(address)
    return f"http://{host}:{sock.port}"


def classify(result: ProbeResult) -> str:
    """``open`` (2xx), ``auth`` (401/403/407 or a redirect), ``absent`` (other 4xx),
    ``server-error`` (5xx or odd), or ``no-answer``."""
    status = result.status
    if status is None:
        return "no-answer"
    if 200 <= status < 300:
        return "open"
    if status in (401, 403, 407) or 300 <= status < 400:
        return "auth"
    if 400 <= status < 500:
        return "absent"
    return "server-error"


def _unauth(ctx: AuditContext) -> Verdict:
    sockets = exposed_ai_listeners(ctx)
    if not sockets:
        return Verdict.of(Status.PASS, ["no AI port listens beyond loopback: nothing to probe"])
    bases = sorted({probe_base(s) for s in sockets})
    urls = [base + path for base in bases for path in ctx.config.probe_paths]
    timeout = ctx.config.probe_timeout
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        results = list(pool.map(lambda url: ctx.prober.get(url, timeout=timeout), urls))
    kinds = [classify(r) for r in results]
    lines = [
        f"GET {r.url} -> {r.status if r.status is not None else r.error} ({kind})"
        for r, kind in zip(results, kinds, strict=True)
    ]
    if "open" in kinds:
        return Verdict.of(Status.FAIL, ["answers without credentials:", *lines], FIX)
    if "server-error" in kinds:
        return Verdict.of(Status.WARN, lines, FIX)
    per_base = len(ctx.config.probe_paths)
    silent = [
        base
        for i, base in enumerate(bases)
        if all(kind == "no-answer" for kind in kinds[i * per_base : (i + 1) * per_base])
    ]
    if silent:
        return Verdict.of(Status.UNKNOWN, [f"no answer from {', '.join(silent)}", *lines])
    return Verdict.of(Status.PASS, lines)


register("unauth.ai-api", "Exposed AI APIs refuse requests without credentials", _unauth)
