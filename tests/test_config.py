"""Strict config validation: every bad file names file, key and reason."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aisentinel.cli import main
from aisentinel.config import ConfigError, default_sources, load_config, parse_config
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.parsers import REGISTRY as PARSERS
from aisentinel.sources import REGISTRY as SOURCES
from aisentinel.sources import journald

FIXTURES = Path(__file__).parent / "fixtures" / "config"
BAD = sorted((FIXTURES / "bad").glob("*.toml"))


def _expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    key, reason = first.removeprefix("# expect:").split("|", 1)
    return key.strip(), reason.strip()


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_refused_with_key_and_reason(path: Path) -> None:
    """Each bad fixture is refused, and the error names the file, the key and the reason."""
    key, reason = _expectation(path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issues = info.value.issues
    assert any(i.file == str(path) and i.key == key and reason in i.reason for i in issues), issues


def test_full_config_loads_typed_plugins() -> None:
    """A config using every table loads, and plug-in tables get their own typed models."""
    cfg = load_config(FIXTURES / "good" / "full.toml")
    assert cfg.detectors["ssh_bruteforce"].threshold == 3  # type: ignore[attr-defined]
    assert cfg.detectors["ssh_bruteforce"].window == 300.0  # type: ignore[attr-defined]
    assert cfg.decisions.ban_ttl == 7200.0
    assert [s.name for s in cfg.sources] == ["nginx-access", "auth"]
    assert set(cfg.responders) == {"dryrun"}
    assert cfg.exporter.port == 0


def test_parser_tables_get_their_registered_models() -> None:
    """[parsers.<name>] tables are typed by the model each parser registered; every
    registered parser has one (its defaults without a table), beside the shared keys."""
    cfg = load_config(FIXTURES / "good" / "full.toml")
    assert len(cfg.parsers.trusted_proxies) == 2
    assert cfg.parsers.forwarded_header == "real_ip"
    for entry in PARSERS:
        assert isinstance(cfg.parsers.table(entry.name), entry.config_model)
    printed = cfg.to_dict()["parsers"]
    assert set(printed) == {
        "trusted_proxies",
        "forwarded_header",
        "credentials",
        *PARSERS.names(),
    }


def test_defaults_need_no_file() -> None:
    """With no file, every registered detector is on, dry-run responds, metrics bind loopback."""
    cfg = parse_config({})
    assert cfg.exporter.listen == "127.0.0.1"
    assert set(cfg.responders) == {"dryrun"}
    assert "ssh_bruteforce" in cfg.detectors
    assert all(d.enabled for d in cfg.detectors.values())
    assert {s.name for s in cfg.sources} >= {"nginx-access", "nginx-error"}


def test_default_sshd_source_follows_journald_availability() -> None:
    """Debian 12 without auth.log still gets sshd events: journald when usable, else auth.log."""
    with_journal = default_sources(journald=True)
    without = default_sources(journald=False)
    assert any(s["type"] == "journald" and "parser" not in s for s in with_journal)
    assert not any(s.get("paths") == ["/var/log/auth.log"] for s in with_journal)
    assert any(s.get("paths") == ["/var/log/auth.log"] for s in without)


def test_all_issues_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes in one file are all reported, not just the first."""
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nbogus = 1\n[exporter]\nport = -1\n[decisions]\nban_ttl = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = {i.key for i in info.value.issues}
    assert keys == {"daemon.bogus", "exporter.port", "decisions.ban_ttl"}


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A missing explicit config file is refused with the reason, not replaced by defaults."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    """`aisentinel check-config` exits 0 on a good file and 1 with file:key: reason on a bad one."""
    good = subprocess.run(
        [sys.executable, "-m", "aisentinel", "check-config", str(FIXTURES / "good" / "full.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad_path = FIXTURES / "bad" / "bad-cidr-allowlist.toml"
    bad = subprocess.run(
        [sys.executable, "-m", "aisentinel", "check-config", str(bad_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert f"{bad_path}: decisions.allowlist[1]: bad CIDR" in bad.stderr


def test_default_config_does_not_import_the_audit_checks() -> None:
    """Validating a config whose [audit] skips nothing leaves the audit checks unimported
    (commands such as replay start faster); an unknown check id is still refused."""
    code = (
        "import sys\n"
        "from aisentinel.config import ConfigError, parse_config\n"
        "parse_config({})\n"
        "print('aisentinel.audit.checks' in sys.modules)\n"
        "try:\n"
        "    parse_config({'audit': {'skip': ['no.such-check']}})\n"
        "except ConfigError as exc:\n"
        "    print('no.such-check' in str(exc))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisentinel", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_config_names_the_registered_parsers(tmp_path: Path) -> None:
    """An unknown parser name exits 1 with file, key and a reason listing the registry's names."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[[sources]]\nname = "web"\ntype = "file"\nparser = "apache"\npaths = ["/var/log/a"]\n'
    )
    bad = _check_config(path)
    assert bad.returncode == 1
    known = ", ".join([*PARSERS.names(), "auto"])
    assert f"{path}: sources[0].parser: unknown parser 'apache'; known: {known}" in bad.stderr


def test_check_config_accepts_auto_for_a_file_source(tmp_path: Path) -> None:
    """parser = "auto" on a file source passes check-config (the file source sniffs it)."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[[sources]]\nname = "web"\ntype = "file"\nparser = "auto"\npaths = ["/var/log/a"]\n'
    )
    good = _check_config(path)
    assert good.returncode == 0, good.stderr


def test_shipped_default_config_is_valid_and_means_defaults() -> None:
    """The packaged conffile validates and, being all comments, equals the built-in defaults."""
    shipped = Path(__file__).parents[1] / "aisentinel" / "data" / "default-config.toml"
    cfg = load_config(shipped)
    assert cfg.to_dict() == parse_config({}).to_dict()


def test_shipped_default_config_shows_every_decisions_key() -> None:
    """Every [decisions] key but the test hook proc_root is shown in the conffile."""
    text = (Path(__file__).parents[1] / "aisentinel" / "data" / "default-config.toml").read_text()
    section = text[text.index("\n[decisions]\n") : text.index("\n[audit]\n")]
    shown = set(re.findall(r"^# \[?(?:decisions\.)?(\w+)\]? ?=?", section, re.M))
    assert set(DecisionsConfig.model_fields) - {"proc_root"} <= shown


def _nested(section: str, table: dict[str, object]) -> dict[str, object]:
    """``table`` under the dotted ``section`` (``decisions.workload_allowlist``)."""
    data: dict[str, object] = table
    for part in reversed(section.split(".")):
        data = {part: data}
    return data


_EXAMPLE_KEYS = frozenset(
    {
        "exporter.web_config",
        "parsers.trusted_proxies",
        "decisions.allowlist",
        "decisions.admin_cidrs",
        "decisions.monitoring_hosts",
        "decisions.workload_actions",
        "decisions.workload_allowlist.units",
        "decisions.workload_allowlist.containers",
        "decisions.workload_allowlist.images",
        "decisions.workload_allowlist.executables",
        "audit.skip",
    }
)
"""The conffile's keys shown with an example value (their comment gives the default)."""

_KEY_LINE = re.compile(r"\s*#*\s*(\w+)\s*=.*")
"""Any line that sets a key, commented or not, however spaced."""
_STATED_DEFAULT = re.compile(r"default: (.+?)(?:\. | \(|\.?$)")
_SECTION_DEFAULTS: dict[str, dict[str, object]] = {}
_JUDGED: dict[tuple[str, str, str], bool] = {}
""":func:`_is_default`'s answers, by section, key and the value's repr (each is slow)."""


def _is_default(section: str, key: str, value: object) -> bool:
    """Whether ``key = value`` in ``section`` gives the config the section gives without it
    (a value the config refuses: no)."""
    judged = _JUDGED.get((section, key, repr(value)))
    if judged is not None:
        return judged
    if section not in _SECTION_DEFAULTS:
        _SECTION_DEFAULTS[section] = parse_config(_nested(section, {})).to_dict()
    try:
        shown = parse_config(_nested(section, {key: value})).to_dict()
    except ConfigError:
        judged = False
    else:
        judged = shown == _SECTION_DEFAULTS[section]
    _JUDGED[section, key, repr(value)] = judged
    return judged


def _default_config_problems(text: str) -> tuple[list[str], int]:
    """What is wrong in a conffile text with the rule its header states (a commented key
    shows its built-in default, unless its comment starts with "example" and gives the
    default), and how many keys showing their default were checked. Every line that
    sets a key (outside the [[sources]] examples) must be ``# key = value``; only the
    keys of :data:`_EXAMPLE_KEYS` may show an example, and each must."""
    problems: list[str] = []
    section: str | None = None
    checked = 0
    examples: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# [[sources]]"):
            section = None  # the source examples: see the next test
        elif heading := re.fullmatch(r"(?:# )?\[([\w.]+)\].*", line):
            section = heading.group(1)
        elif section is not None and _KEY_LINE.fullmatch(line):
            key = re.fullmatch(r"# (\w+) = (.*)", line)
            if key is None:
                problems.append(f"not `# key = value`: {line}")
                continue
            name = f"{section}.{key.group(1)}"
            value = tomllib.loads(f"value = {key.group(2)}")["value"]
            comment = key.group(2).partition("# ")[2]
            if comment.startswith("example"):
                examples.add(name)
                stated = _STATED_DEFAULT.search(comment)
                if name not in _EXAMPLE_KEYS:
                    problems.append(f"not a key shown with an example: {line}")
                elif stated is None:
                    problems.append(f"example without its default: {line}")
                elif stated.group(1) == "none":
                    if not _is_default(section, key.group(1), None):
                        problems.append(f"the default is not none: {line}")
                else:
                    default = tomllib.loads(f"value = {stated.group(1)}")["value"]
                    if not _is_default(section, key.group(1), default):
                        problems.append(f"the stated default is not the default: {line}")
                continue
            if name in _EXAMPLE_KEYS:
                problems.append(f"shown without saying it is an example: {line}")
            if not _is_default(section, key.group(1), value):
                problems.append(f"not the default: {line}")
            checked += 1
    problems += [f"example key not shown: {name}" for name in sorted(_EXAMPLE_KEYS - examples)]
    return problems, checked


def test_shipped_default_config_shows_defaults_or_says_example() -> None:
    """Each key line of the conffile (outside the [[sources]] examples) holds the key's
    built-in default, unless it is one of the example keys, whose comment says so and
    gives the real default; the header says so."""
    text = (Path(__file__).parents[1] / "aisentinel" / "data" / "default-config.toml").read_text()
    assert 'unless its comment starts with "example"' in text
    problems, checked = _default_config_problems(text)
    assert problems == []
    assert checked > 50


@pytest.mark.parametrize(
    ("shipped", "changed"),
    [
        ("# port = 9847", "# port = 9848"),
        ('# ban_severity = "high"', '# ban_severity = "medium"'),
        ('# forwarded_header = "xff"', '# forwarded_header = "real_ip"'),
        ('# alert_repeat = "1h"', '# alert_repeat = "2h"'),
        ("# port = 9847", "# port = 9848  # example; default: 9847"),
        ("# port = 9847", "# port = 9848  # example; default: 1"),
        ("example; default: [] (trust no one)", 'example; default: ["10.0.0.0/8"]'),
        ("example; default: none (plain HTTP)", 'example; default: "/etc/x.yml"'),
        ("example; default: {}", "default: {}"),
        ("# port = 9847", "#  port = 9848"),
        ("# port = 9847", "  # port = 9848"),
        ("# port = 9847", "# port=9848"),
        ("# port = 9847", "port = 9848"),
    ],
)
def test_default_config_check_finds_a_wrong_default(shipped: str, changed: str) -> None:
    """The conffile check catches a wrong default however it is written: a changed
    value, one relabelled an example, a wrong stated default, an example no longer
    said to be one, a key line spaced or uncommented otherwise."""
    text = (Path(__file__).parents[1] / "aisentinel" / "data" / "default-config.toml").read_text()
    assert shipped in text
    problems, _ = _default_config_problems(text.replace(shipped, changed, 1))
    assert problems != []


def test_shipped_source_examples_show_the_defaults_of_their_optional_keys() -> None:
    """Uncommented, each [[sources]] example of the conffile validates, and every optional
    key it shows holds the built-in default (journald's matches: sshd and sshd-session)."""
    text = (Path(__file__).parents[1] / "aisentinel" / "data" / "default-config.toml").read_text()
    block = []
    for line in text[text.index("# [[sources]]") :].splitlines():
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("#").removeprefix(" "))
    examples = tomllib.loads("\n".join(block))["sources"]
    assert [e["type"] for e in examples] == ["file", "journald"]
    for example in examples:
        model = SOURCES.get(example["type"]).config_model
        model.model_validate(example)
        for key, value in example.items():
            field = model.model_fields[key]
            if not field.is_required():
                assert value == field.get_default(call_default_factory=True), key


def _churned_dict_bytes(keys: int) -> int:
    """sys.getsizeof of a dict of ``keys`` address-like strings after 2x as many keys
    came and went (oldest first), as a detector table does under a flood."""
    from collections import deque

    table: dict[str, int] = {}
    order: deque[str] = deque()
    for i in range(3 * keys):
        key = f"100.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/{i}"
        table[key] = i
        order.append(key)
        if len(table) > keys:
            del table[order.popleft()]
    return sys.getsizeof(table)


def test_default_max_keys_stays_under_the_dict_cliff() -> None:
    """Every per-key table's default bound keeps a churned dict at about half the memory a
    few hundred more keys would take (CPython rebuilds it with twice the slots at 87,382)."""
    from aisentinel.configtypes import DEFAULT_MAX_KEYS
    from aisentinel.detectors import REGISTRY as DETECTORS

    defaults = {e.name: e.config_model().max_keys for e in DETECTORS}
    assert max(defaults.values()) == DEFAULT_MAX_KEYS, defaults
    assert _churned_dict_bytes(DEFAULT_MAX_KEYS) < 0.6 * _churned_dict_bytes(87_382)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[daemon]\nqueue_batches = " + "9" * 5000 + "\n", "4300 digits"),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
    ],
    ids=["5000-digit-int", "deep-array", "deep-inline-table"],
)
def test_a_file_tomllib_cannot_parse_is_refused_not_a_traceback(
    tmp_path: Path, text: str, reason: str
) -> None:
    """A 5000-digit integer or values nested 3000 deep are a ConfigError naming the file."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [issue] = info.value.issues
    assert (issue.file, issue.key) == (str(path), "")
    assert reason in issue.reason


def test_an_unknown_name_with_no_close_match_lists_the_known_detectors() -> None:
    """An alert_only_detectors name like no detector is refused with the known names."""
    with pytest.raises(ConfigError) as info:
        parse_config({"decisions": {"alert_only_detectors": ["zzz"]}}, "f.toml")
    [issue] = info.value.issues
    assert issue.key == "decisions.alert_only_detectors[0]"
    assert issue.reason.startswith("unknown detector 'zzz'; known: ")
    assert "ssh_bruteforce" in issue.reason


def test_disabled_refuses_an_unknown_rule_id_but_not_one_of_a_pack_left_out() -> None:
    """`disabled`: an id no rule has is refused; one of a pack left out by `packs` is not."""
    with pytest.raises(ConfigError) as info:
        parse_config({"detectors": {"rules": {"disabled": ["no-such-rule-xyz"]}}})
    [issue] = info.value.issues
    assert issue.key == "detectors.rules"
    assert "unknown rule id 'no-such-rule-xyz'; `aisentinel rules list`" in issue.reason
    cfg = parse_config(
        {"detectors": {"rules": {"packs": ["web-cves"], "disabled": ["wp-probe-miss"]}}}
    )
    assert cfg.detectors["rules"].disabled == ("wp-probe-miss",)  # type: ignore[attr-defined]


def _warned(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0
    return capsys.readouterr().err


def test_check_config_warns_about_networks_that_turn_banning_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """allowlist 0.0.0.0/0 or ::/0 (wider than `aisentinel allow` takes) is a WARNING."""
    err = _warned(tmp_path, '[decisions]\nallowlist = ["0.0.0.0/0", "::/0"]\n', capsys)
    assert "WARNING: decisions.allowlist holds 0.0.0.0/0: no address in it is ever banned " in err
    assert "(every IPv6 address: banning is off)" in err
    assert "`aisentinel allow` refuses networks wider than /8" in err
    err = _warned(tmp_path, '[decisions]\nadmin_cidrs = ["10.0.0.0/8"]\n', capsys)
    assert err == ""


def test_check_config_warns_of_ipv6_bans_wider_than_nftables_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ipv6_ban_prefix = 48 with nftables' min_prefix6 = 56 (every automatic IPv6 ban
    refused) is a WARNING naming both keys; none at 56, or with nftables disabled."""
    base = '[decisions]\nadmin_cidrs = ["192.0.2.0/24"]\nipv6_ban_prefix = {p}\n'
    nft = "[responders.dryrun]\n[responders.nftables]\nmin_prefix6 = 56\nenabled = {on}\n"
    err = _warned(tmp_path, base.format(p=48) + nft.format(on="true"), capsys)
    assert (
        "WARNING: decisions.ipv6_ban_prefix = 48 is wider than responders.nftables."
        "min_prefix6 = 56: nftables refuses every automatic IPv6 ban (a /48)"
    ) in err
    assert _warned(tmp_path, base.format(p=56) + nft.format(on="true"), capsys) == ""
    assert _warned(tmp_path, base.format(p=48) + nft.format(on="false"), capsys) == ""


def test_check_config_warns_about_trusted_proxies_that_let_anyone_spoof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """trusted_proxies = ["::/0"] lets any client set X-Forwarded-For: a WARNING."""
    err = _warned(tmp_path, '[parsers]\ntrusted_proxies = ["::/0"]\n', capsys)
    assert "WARNING: parsers.trusted_proxies holds ::/0: any client in it can set " in err
    assert "and is never banned itself" in err
    err = _warned(tmp_path, '[parsers]\ntrusted_proxies = ["192.0.2.10"]\n', capsys)
    assert err == ""


def test_check_config_warns_of_forwarded_header_without_trusted_proxies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """forwarded_header = "real_ip" with no trusted proxy changes nothing: a WARNING;
    none with a trusted proxy."""
    err = _warned(tmp_path, '[parsers]\nforwarded_header = "real_ip"\n', capsys)
    assert 'WARNING: parsers.forwarded_header = "real_ip" without parsers.trusted_proxies' in err
    both = '[parsers]\ntrusted_proxies = ["192.0.2.10"]\nforwarded_header = "real_ip"\n'
    assert _warned(tmp_path, both, capsys) == ""


def test_check_config_warns_when_every_logged_credential_is_believed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """credentials = "checked" believes forged Basic users everywhere: a WARNING; the
    default (learned) and "unchecked" give none."""
    err = _warned(tmp_path, '[parsers]\ncredentials = "checked"\n', capsys)
    assert 'WARNING: parsers.credentials = "checked": a user or API key id' in err
    for mode in ("learned", "unchecked"):
        assert _warned(tmp_path, f'[parsers]\ncredentials = "{mode}"\n', capsys) == ""


def test_check_config_notes_that_trusted_proxies_are_never_banned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config says (a note on stdout, no warning) that trusted proxies are never
    banned; nothing is said without them."""
    path = tmp_path / "c.toml"
    path.write_text('[parsers]\ntrusted_proxies = ["10.0.0.2/32", "2001:db8::7/128"]\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "note: parsers.trusted_proxies (10.0.0.2/32, 2001:db8::7/128) are never banned" in (
        out.out
    )
    assert out.err == ""
    path.write_text("")
    assert main(["check-config", str(path)]) == 0
    assert "note:" not in capsys.readouterr().out


def test_an_old_heartbeat_interval_over_30s_is_used_as_30s_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """heartbeat_interval = "1m" (accepted before the 30s limit) still loads, as 30s, and
    check-config passes with a deprecation warning naming the file and the key."""
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nheartbeat_interval = "1m"\n')
    cfg = load_config(path)
    assert cfg.daemon.heartbeat_interval == 30.0
    (note,) = cfg.deprecations
    assert note.startswith(f"{path}: daemon.heartbeat_interval = 1m is more than 30s")
    assert "30s is used" in note
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"WARNING: {path}: daemon.heartbeat_interval = 1m" in captured.err
    assert ": OK" in captured.out
    path.write_text('[daemon]\nheartbeat_interval = "30s"\n')
    assert load_config(path).deprecations == ()


def test_a_dangling_symlink_at_the_default_path_is_refused_not_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbolic link at the default config path whose target is missing is refused,
    naming the link and its target, rather than silently running the built-in defaults."""
    link = tmp_path / "aisentinel.toml"
    link.symlink_to(tmp_path / "srv" / "aisentinel.toml")
    monkeypatch.delenv("AISENTINEL_CONFIG", raising=False)
    monkeypatch.setattr("aisentinel.config.DEFAULT_CONFIG_PATH", link)
    with pytest.raises(ConfigError) as info:
        load_config()
    (issue,) = info.value.issues
    assert issue.file == str(link)
    assert str(tmp_path / "srv" / "aisentinel.toml") in issue.reason
    assert "does not exist" in issue.reason
    with pytest.raises(ConfigError, match="symbolic link"):
        load_config(link)  # named explicitly: the same reason
    link.unlink()
    assert load_config().path == "<defaults>"  # nothing there: the defaults, as before


@pytest.mark.parametrize("loop", [1, 2])
def test_a_symlink_loop_is_refused_as_a_loop(tmp_path: Path, loop: int) -> None:
    """A config path that is a symbolic link to itself, or one of two links to each
    other, is refused as a loop of links, not as a link to a missing file."""
    link = tmp_path / "aisentinel.toml"
    other = tmp_path / "other.toml"
    if loop == 1:
        link.symlink_to("aisentinel.toml")
    else:
        link.symlink_to("other.toml")
        other.symlink_to("aisentinel.toml")
    with pytest.raises(ConfigError) as info:
        load_config(link)
    (issue,) = info.value.issues
    assert issue.file == str(link)
    wanted = "aisentinel.toml" if loop == 1 else "other.toml"
    assert (
        issue.reason == f"a symbolic link to {wanted!r} that leads back to itself (a loop of links)"
    )


def test_check_config_warns_of_a_journald_source_without_systemd_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journald source while systemd-python cannot be imported: check-config still
    passes (the daemon reports the source down) but warns, naming the source and the fix."""
    monkeypatch.setattr(journald, "_journal", None)
    text = '[[sources]]\nname = "sshd-journal"\ntype = "journald"\n'
    err = _warned(tmp_path, text, capsys)
    assert "WARNING: journald source(s) 'sshd-journal': systemd-python is not installed" in err
    assert "python3-systemd" in err
    monkeypatch.setattr(journald, "_journal", object())
    assert "systemd-python" not in _warned(tmp_path, text, capsys)


def test_check_config_warns_of_a_container_source_cap_that_cuts_docker_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file source read as ``container`` (or ``auto``) with max_line_bytes below a
    Docker record of one 16 KiB piece (102400 bytes) is a WARNING; the default cap, a
    cap at that size and another format's small cap are not."""

    def source(parser: str, cap: int | None) -> str:
        line = "" if cap is None else f"max_line_bytes = {cap}\n"
        return (
            f'[[sources]]\nname = "web"\ntype = "file"\nparser = "{parser}"\n'
            f'paths = ["/var/lib/docker/containers/x/x-json.log"]\n{line}'
        )

    err = _warned(tmp_path, source("container", 65536), capsys)
    assert "WARNING: source 'web': max_line_bytes = 65536 is below 102400: " in err
    assert "a client that pads its requests that way is never seen" in err
    err = _warned(tmp_path, source("auto", 1024), capsys)
    assert 'below 102400 (parser = "auto": if a file is a container log)' in err
    for parser, cap in (("container", None), ("container", 102400), ("nginx-error", 1024)):
        assert "max_line_bytes" not in _warned(tmp_path, source(parser, cap), capsys)
