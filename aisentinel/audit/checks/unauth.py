"""Unauthenticated access: a real GET without credentials to each exposed AI port.

For each AI port listening beyond loopback, ``probe_paths`` (``/api/tags``,
``/v1/models``) are requested from this host (a wildcard bind is reached via
127.0.0.1 or ::1). A 2xx answer means anyone who reaches the port can use the API.
Ray dashboards and Jupyter servers beyond loopback (``[audit.side_services]``) get
the same treatment with their own paths (``/api/jobs/``, ``/api/kernels``).
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aisentinel.audit.checks.base import Verdict, register
from aisentinel.audit.checks.exposure import all_listeners, exposed_ai_listeners
from aisentinel.audit.context import AuditContext, ProbeResult
from aisentinel.audit.model import Status
from aisentinel.audit.sideservices import SIDE_SERVICES, side_listeners
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


@dataclass(frozen=True, slots=True)
class Target:
    """One service to probe: its base URL, the paths to GET, a label for the evidence."""

    base: str
    paths: tuple[str, ...]
    label: str = ""


def probe_targets(ctx: AuditContext, targets: list[Target], fix: str) -> Verdict:
    """GET every path of every target without credentials, in parallel, and judge the answers.

    fail: any 2xx; warn: a 5xx; unknown: a target where no path got an answer; else pass.
    """
    urls = [(t, t.base + path) for t in targets for path in t.paths]
    timeout = ctx.config.probe_timeout
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        results = list(pool.map(lambda item: ctx.prober.get(item[1], timeout=timeout), urls))
    kinds = [classify(r) for r in results]
    lines = [
        f"{t.label + ': ' if t.label else ''}GET {r.url}"
        f" -> {r.status if r.status is not None else r.error} ({kind})"
        for (t, _), r, kind in zip(urls, results, kinds, strict=True)
    ]
    if "open" in kinds:
        return Verdict.of(Status.FAIL, ["answers without credentials:", *lines], fix)
    if "server-error" in kinds:
        return Verdict.of(Status.WARN, lines, fix)
    answered = {t.base for (t, _), kind in zip(urls, kinds, strict=True) if kind != "no-answer"}
    silent = [t.base for t in targets if t.base not in answered]
    if silent:
        return Verdict.of(Status.UNKNOWN, [f"no answer from {', '.join(silent)}", *lines])
    return Verdict.of(Status.PASS, lines)


def _unauth(ctx: AuditContext) -> Verdict:
    sockets = exposed_ai_listeners(ctx)
    if not sockets:
        return Verdict.of(Status.PASS, ["no AI port listens beyond loopback: nothing to probe"])
    bases = sorted({probe_base(s) for s in sockets})
    return probe_targets(ctx, [Target(base, ctx.config.probe_paths) for base in bases], FIX)


def _side_unauth(ctx: AuditContext) -> Verdict:
    found = side_listeners(ctx.config.side_services, all_listeners(ctx))
    probed = [(kind, s) for kind, s in found if kind.probe_paths and not s.loopback]
    if not probed:
        names = " or ".join(kind.label for kind in SIDE_SERVICES if kind.probe_paths)
        return Verdict.of(
            Status.PASS, [f"no {names} port listens beyond loopback: nothing to probe"]
        )
    targets: dict[str, Target] = {}
    for kind, sock in probed:
        base = probe_base(sock)
        targets.setdefault(base, Target(base, kind.probe_paths, kind.label))
    fixes = []
    for kind, _ in probed:
        if kind.fix not in fixes:
            fixes.append(kind.fix)
    return probe_targets(ctx, sorted(targets.values(), key=lambda t: t.base), "\n".join(fixes))


register("unauth.ai-api", "Exposed AI APIs refuse requests without credentials", _unauth)
register(
    "unauth.side-services",
    "Exposed Ray dashboards and Jupyter servers refuse requests without credentials",
    _side_unauth,
)
