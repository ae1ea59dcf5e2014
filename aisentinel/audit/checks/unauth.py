"""Unauthenticated access: a real GET without credentials to each exposed AI port.

For each AI port listening beyond loopback, ``probe_paths`` (``/api/tags``,
``/v1/models``) are requested from this host (a wildcard bind is reached via
127.0.0.1 or ::1). A 2xx answer means anyone who reaches the port can use the API.
Ray dashboards and Jupyter servers beyond loopback (``[audit.side_services]``) get
the same treatment with their own paths (``/api/jobs/``, ``/api/kernels``). Open
WebUI's public ``/api/config`` is read on every AI port that listens (loopback too:
nginx may publish it) for open sign-up and a missing login.
"""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aisentinel.audit.checks.base import Verdict, register, worse
from aisentinel.audit.checks.exposure import all_listeners, exposed_ai_listeners
from aisentinel.audit.context import AuditContext, ProbeResult
from aisentinel.audit.model import Status
from aisentinel.audit.sideservices import SIDE_SERVICES, side_listeners
from aisentinel.audit.sockets import ListeningSocket

WEBUI_CONFIG_PATH = "/api/config"
"""Open WebUI's start-up config, served without credentials."""

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


WEBUI_FIX = (
    "Open WebUI: Admin Panel > Settings > General: turn off 'Enable New Sign Ups' and set\n"
    "  'Default User Role' to pending (an admin approves each account); the environment\n"
    "  ENABLE_SIGNUP=False and DEFAULT_USER_ROLE=pending only apply on first start unless\n"
    "  ENABLE_PERSISTENT_CONFIG=False; never WEBUI_AUTH=False on a server others reach.\n"
    "  No account yet: create the admin account now (the first sign-up becomes admin)."
)


def webui_config(result: ProbeResult) -> dict[str, Any] | None:
    """The JSON of an Open WebUI ``/api/config`` answer, or ``None`` when it is not one.

    Open WebUI answers without credentials with ``{"status": true, "name": ...,
    "features": {"auth": ..., "enable_signup": ..., ...}}`` (``"onboarding": true`` while
    it has no account). Anything else (not 2xx, not JSON, no ``features`` object) is
    another service.
    """
    if result.status is None or not 200 <= result.status < 300:
        return None
    try:
        data = json.loads(result.body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        return None
    return data


def judge_webui(data: dict[str, Any], *, exposed: bool) -> list[tuple[Status, str]]:
    """What one Open WebUI's ``/api/config`` says: (status, words) per point it answers.

    No login fails when it listens beyond loopback and warns on loopback only (only
    this host and what proxies it reach it; ``nginx.auth`` judges the proxy). A key
    that is missing or not a boolean is not judged (and says so).
    """
    features: dict[str, Any] = data["features"]
    out: list[tuple[Status, str]] = []
    auth = features.get("auth")
    if auth is False and exposed:
        out.append((Status.FAIL, "no login at all (features.auth false: WEBUI_AUTH=False)"))
    elif auth is False:
        out.append(
            (
                Status.WARN,
                "no login at all (features.auth false: WEBUI_AUTH=False); it listens on"
                " loopback only: whatever proxies it must authenticate (see nginx.auth)",
            )
        )
    elif auth is not True:
        out.append((Status.PASS, "features.auth missing or not a boolean: login not judged"))
    if data.get("onboarding") is True:
        out.append((Status.FAIL, "no account yet: whoever signs up first becomes its admin"))
    signup = features.get("enable_signup")
    if signup is True:
        out.append(
            (
                Status.WARN,
                "sign-up open: anyone who reaches it can create an account (with"
                " DEFAULT_USER_ROLE=user it uses the models at once; pending waits for an admin)",
            )
        )
    elif signup is False:
        out.append((Status.PASS, "sign-up off"))
    else:
        out.append((Status.PASS, "features.enable_signup missing or not a boolean: not judged"))
    return out


def _webui_signup(ctx: AuditContext) -> Verdict:
    ports = set(ctx.config.ai_ports)
    sockets = [s for s in all_listeners(ctx) if s.port in ports]
    if not sockets:
        return Verdict.of(Status.PASS, ["nothing listens on the AI ports: no Open WebUI to ask"])
    exposed: dict[str, bool] = {}
    for sock in sockets:
        base = probe_base(sock)
        exposed[base] = exposed.get(base, False) or not sock.loopback
    urls = [base + WEBUI_CONFIG_PATH for base in sorted(exposed)]
    timeout = ctx.config.probe_timeout
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        results = list(
            pool.map(lambda url: ctx.prober.get(url, timeout=timeout, read_body=True), urls)
        )
    status = Status.PASS
    lines: list[str] = []
    silent: list[str] = []
    found = False
    for result in results:
        data = webui_config(result)
        if data is None:
            if result.status is None:
                silent.append(result.url)
            continue
        found = True
        base = result.url.removesuffix(WEBUI_CONFIG_PATH)
        for verdict, words in judge_webui(data, exposed=exposed.get(base, True)):
            lines.append(f"Open WebUI at {result.url}: {words}")
            status = worse(status, verdict)
    if not found:
        others = [r.url for r in results if r.status is not None]
        if others:
            lines.append(f"not Open WebUI (no JSON with features): {', '.join(others)}")
    if silent:
        lines.append(f"no answer from {', '.join(silent)}")
        if not found:
            status = worse(status, Status.UNKNOWN)
    return Verdict.of(status, lines, WEBUI_FIX)


register("unauth.ai-api", "Exposed AI APIs refuse requests without credentials", _unauth)
register(
    "unauth.webui-signup",
    "Open WebUI asks for a login and does not let anyone sign up",
    _webui_signup,
)
register(
    "unauth.side-services",
    "Exposed Ray dashboards and Jupyter servers refuse requests without credentials",
    _side_unauth,
)
