"""``aisentinel rules list|show|test`` and ``aisentinel explain``: what the rules and
detectors make of log lines, and why (like ``fail2ban-regex -v`` or ``cscli explain``).

Text output escapes every attacker-controlled value (:func:`~aisentinel.textsafe.escape`)
and shows lines and fields with secrets redacted (:func:`~aisentinel.guard.redact_secrets`:
keys, tokens, passwords in a request body); ``--json`` keeps exact values.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from aisentinel.config import Config
from aisentinel.detectors import build_detectors
from aisentinel.detectors.base import Detector
from aisentinel.detectors.common import set_ipv6_key_prefix
from aisentinel.detectors.rules import RulesConfig
from aisentinel.events import Event, Finding, HttpRequest, finding_fields
from aisentinel.guard.secrets import find_secrets, redact_secrets
from aisentinel.parsers import AUTO, build_parser, sniff
from aisentinel.parsers.base import Parser, ParsersConfig
from aisentinel.replay import iso
from aisentinel.rules import LoadedRule, RuleSet, describe_rule
from aisentinel.rules.matcher import Exclusions, Hit, Matcher, explain_rule, request_fields
from aisentinel.textsafe import escape

_EVIDENCE = 300
_NOTICE = 1200
"""Most characters of a parser's notice shown."""
_NOTICE_BATCH = 500
"""Lines a batch when :func:`_notices` reads a file as the daemon does."""


def ruleset_of(config: Config) -> RuleSet:
    """The rules the config's ``[detectors.rules]`` loads (validated with the config)."""
    rules = config.detectors.get("rules")
    if not isinstance(rules, RulesConfig):
        rules = RulesConfig()
    return rules.ruleset


# --------------------------------------------------------------------------- rules list/show


def rules_list(ruleset: RuleSet, out: TextIO, *, as_json: bool) -> None:
    """A header, then one line per enabled rule (or a JSON array). THRESHOLD is the
    rule's threshold: ``1`` (every match), or ``N/WINDOWs`` (N matches in the window)."""
    if as_json:
        out.write(json.dumps([describe_rule(r) for r in ruleset.loaded], indent=2) + "\n")
        return
    out.write(
        f"{'ID':<34} {'SEVERITY':<8} {'PACK':<11} {'THRESHOLD':<9} {'TAGS':<28} DESCRIPTION\n"
    )
    for loaded in ruleset.loaded:
        rule = loaded.rule
        where = "local" if loaded.local else loaded.pack
        count = f"{rule.threshold}/{rule.window:g}s" if rule.threshold > 1 else "1"
        out.write(
            f"{rule.id:<34} {rule.severity.label:<8} {where:<11} {count:<9} "
            f"{','.join(rule.tags):<28} {escape(rule.description)}\n"
        )
    out.write(f"{len(ruleset.loaded)} rules")
    if ruleset.disabled:
        out.write(f" ({len(ruleset.disabled)} disabled: {', '.join(ruleset.disabled)})")
    out.write("\n")


def rules_show(loaded: LoadedRule, out: TextIO, *, as_json: bool) -> None:
    """Every field of one rule."""
    data = describe_rule(loaded)
    if as_json:
        out.write(json.dumps(data, indent=2) + "\n")
        return
    for key, value in data.items():
        if key in ("match", "tests"):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        out.write(f"{key + ':':<13}{escape(shown)}\n")
    out.write("match:\n")
    for name, cond in data.get("match", {}).items():
        if isinstance(cond, dict):
            for op, patterns in cond.items():
                if patterns:
                    shown = " | ".join(escape(p) for p in patterns)
                    out.write(f"  {name}.{op}: {shown}\n")
        elif cond not in ((), [], None):
            out.write(f"  {name}: {escape(str(cond))}\n")
    out.write(f"tests:        {len(data.get('tests', []))}\n")


# --------------------------------------------------------------------------- parsing lines


def _parser_for(
    lines: Sequence[str], fmt: str, source: str, parsers: ParsersConfig
) -> tuple[str, Parser]:
    """The format of ``lines`` (sniffed for ``auto``) and a parser of it, built under the
    config's ``[parsers]`` as the daemon builds a source's: its trusted proxies, forwarded
    header and the format's own table (a client behind a trusted proxy is the one named
    in the forwarded field, here as in ``replay`` and the daemon). The parsers' clock is
    the wall clock: classic syslog timestamps have no year, and the sshd parser infers it
    from "now" (a clock at the epoch refused them)."""
    name = sniff(lines) if fmt == AUTO else fmt
    return name, build_parser(name, parsers.context(source, name))


def event_fields(event: Event) -> dict[str, Any]:
    """An event as plain data (its type and every field)."""
    data: dict[str, Any] = {"type": type(event).__name__}
    # Parsed events are NamedTuples; GPU events are dataclasses (never parsed from a line).
    items = event._asdict() if isinstance(event, tuple) else dataclasses.asdict(event)
    for key, value in items.items():
        data[key] = value.value if hasattr(value, "value") else value
    return data


# --------------------------------------------------------------------------- rules test


@dataclass
class RulesTestResult:
    """What ``rules test`` found in a file."""

    parser: str
    lines: int = 0
    parsed: int = 0
    matched_lines: int = 0
    per_rule: Counter[str] = field(default_factory=Counter)


def rules_test(
    lines: Iterable[str],
    ruleset: RuleSet,
    out: TextIO,
    *,
    fmt: str,
    as_json: bool,
    parsers: ParsersConfig,
) -> RulesTestResult:
    """Each line through the parser and the rules only (no windows): which rules it
    matches. Prints one line (or JSON object) per matching line, then a summary.
    ``parsers``: the config's ``[parsers]`` (trusted proxies, forwarded header)."""
    lines = list(lines)
    name, parser = _parser_for(lines[:64], fmt, "rules-test", parsers)
    matcher = Matcher(ruleset.rules, exclusions=ruleset.exclusions)
    result = RulesTestResult(name)
    for lineno, line in enumerate(lines, 1):
        result.lines += 1
        event = parser.parse(line)
        if not isinstance(event, HttpRequest):
            continue
        result.parsed += 1
        rules, _ = matcher.match(event)
        if not rules:
            continue
        result.matched_lines += 1
        ids = [r.id for r in rules]
        result.per_rule.update(ids)
        if as_json:
            out.write(json.dumps({"line": lineno, "rules": ids, "client": event.client}) + "\n")
        else:
            out.write(f"{lineno}: {', '.join(ids)}  {escape(line, 160)}\n")
    if as_json:
        summary = {
            "summary": {
                "parser": name,
                "lines": result.lines,
                "parsed": result.parsed,
                "matched_lines": result.matched_lines,
                "rules": dict(result.per_rule.most_common()),
            }
        }
        out.write(json.dumps(summary) + "\n")
    else:
        out.write(
            f"parser {name}: {result.lines} lines, {result.parsed} requests, "
            f"{result.matched_lines} matched a rule\n"
        )
        for rule_id, count in result.per_rule.most_common():
            out.write(f"  {count:>7}  {rule_id}\n")
    return result


# --------------------------------------------------------------------------- explain


def _hit_text(hit: Hit) -> str:
    return f"{hit.field} {hit.op} {escape(hit.pattern, 120)}"


def explain_lines(
    lines: Sequence[str], config: Config, out: TextIO, *, fmt: str, as_json: bool
) -> int:
    """For each line: the parser, the event, the rules it matches (and which condition
    did it), and the findings the detectors make (fed in order, so a threshold met over
    several lines of a file shows on the line that meets it). A line of the format left out
    on purpose says why (:meth:`~aisentinel.parsers.base.Parser.skipped`); what the
    parser would tell the daemon's log about the lines as a whole (a notice: every client
    an untrusted local proxy, no forwarded field) follows them. Returns the number of
    lines no parser understood (a line left out on purpose was understood)."""
    name, parser = _parser_for(lines[:64], fmt, "explain", config.parsers)
    ruleset = ruleset_of(config)
    set_ipv6_key_prefix(config.decisions.ipv6_ban_prefix)  # as the pipeline does
    exclusions = Exclusions(ruleset.exclusions, ruleset.rules)
    detectors: list[Detector] = build_detectors(config.detectors)
    unparsed = 0
    for lineno, line in enumerate(lines, 1):
        event = parser.parse(line)
        record: dict[str, Any] = {"line": lineno, "parser": name, "text": line}
        if event is None:
            record["event"] = None
            record["skipped"] = parser.skipped(line)
            if record["skipped"] is None:
                unparsed += 1
            _emit(record, out, as_json)
            continue
        record["event"] = event_fields(event)
        rules: list[dict[str, Any]] = []
        if isinstance(event, HttpRequest):
            fields = request_fields(event)
            record["normalised"] = {
                "path": fields.target.path,
                "uri": fields.target.uri,
                "query": fields.target.query,
                "malformed": fields.malformed,
            }
            for rule in ruleset.rules:
                hits = explain_rule(rule, event, fields)
                if hits:
                    excused = exclusions.excused_by(rule, event, fields.target)
                    rules.append(
                        {
                            "id": rule.id,
                            "severity": rule.severity.label,
                            "description": rule.description,
                            "references": list(rule.references),
                            "threshold": rule.threshold,
                            "because": [h._asdict() for h in hits],
                            "excused_by": None if excused is None else excused.id,
                        }
                    )
        record["rules"] = rules
        findings: list[Finding] = []
        for detector in detectors:
            if isinstance(event, detector.consumes):
                found = detector.observe(event)
                if found is not None:
                    findings.append(found)
        record["detectors"] = [finding_fields(f) for f in findings]
        _emit(record, out, as_json)
    for message, told in _notices(lines, name, config.parsers):
        if as_json:
            out.write(json.dumps({"notice": message, **told}) + "\n")
        else:
            out.write(f"note: {escape(message, _NOTICE)}\n")
    return unparsed


def _notices(
    lines: Sequence[str], name: str, parsers: ParsersConfig
) -> list[tuple[str, dict[str, str]]]:
    """The notices a parser of ``name`` gives for ``lines`` read as the daemon reads them
    (in batches, :meth:`~aisentinel.parsers.base.Parser.parse_many`): some judge the
    lines as a whole."""
    parser = build_parser(name, parsers.context("explain", name))
    notices: list[tuple[str, dict[str, str]]] = []
    for start in range(0, len(lines), _NOTICE_BATCH):
        parser.parse_many(lines[start : start + _NOTICE_BATCH])
        notices += parser.take_notices()
    return notices


def _unsecret(text: str) -> str:
    """``text`` with the secrets the prompt detectors look for redacted (a body can hold
    a key that ``prompt_secrets`` reports redacted: the text output must not print it)."""
    return redact_secrets(text, find_secrets(text, decoded=True))


def _emit(record: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(record, default=str) + "\n")
        return
    out.write(f"line {record['line']}: {escape(_unsecret(record['text']), _EVIDENCE)}\n")
    event = record["event"]
    if event is None:
        why = record.get("skipped")
        if why is not None:
            out.write(f"  parser {record['parser']}: no event, left out: {escape(why)}\n")
        else:
            out.write(f"  parser {record['parser']}: no event (the line is not in this format)\n")
        return
    out.write(f"  parser {record['parser']} -> {event['type']}\n")
    for key, value in event.items():
        if key == "ts" and isinstance(value, float):
            out.write(f"    {key:<14}{value} ({iso(value)})\n")
        elif key != "type" and value is not None:
            out.write(f"    {key:<14}{escape(_unsecret(str(value)), _EVIDENCE)}\n")
    norm = record.get("normalised")
    if norm is not None:
        out.write("  normalised\n")
        for key, value in norm.items():
            out.write(f"    {key:<14}{escape(_unsecret(str(value)), _EVIDENCE)}\n")
    if record["rules"]:
        for rule in record["rules"]:
            extra = f", {rule['threshold']} needed in its window" if rule["threshold"] > 1 else ""
            out.write(
                f"  rule {rule['id']} ({rule['severity']}{extra}): {escape(rule['description'])}\n"
            )
            for hit in rule["because"]:
                out.write(f"    because {_hit_text(Hit(**hit))}\n")
            if rule["excused_by"] is not None:
                out.write(
                    f"    excused by exclusion {rule['excused_by']}: its parameters' values "
                    "are left out on this route and status; no finding\n"
                )
    else:
        out.write("  rules: none matched\n")
    if record["detectors"]:
        for f in record["detectors"]:
            out.write(
                f"  detector {f['detector']} ({f['severity']}): "
                f"{escape(_unsecret(f['message']), 200)}\n"
            )
            for sample in f["evidence"]:
                out.write(f"    evidence {escape(_unsecret(str(sample)), 200)}\n")
    else:
        out.write("  detectors: no finding (thresholds not reached)\n")
