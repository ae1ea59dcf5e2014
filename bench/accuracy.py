"""Parser accuracy against public labelled log samples (fail2ban and sshguard test data).

Run ``python bench/accuracy.py [--corpus DIR] [--json] [--verbose] [--rules]
[--rules-speed]``; the corpus is ``$AISENTINEL_CORPUS`` or ``../shared/corpus`` beside
the repository (read-only, never copied in here). ``--rules`` adds the rules
detector's detection per attack family on generated lines and the alerts and bans on
the benign ``elastic-apache-logs/apache_logs``; ``--rules-speed`` the matcher's cost
on the 1M-line quiet bench log (see ``bench/rules_accuracy.py``).
``tests/test_parser_accuracy.py`` imports :func:`run_all` and asserts the targets.

What is compared
----------------
fail2ban files precede each line with ``# failJSON: {"match": ..., "host": ...}``.
Blocks start with ``# filterOptions: [...]``; a block counts only when one of its
option sets is fail2ban's default mode (no ``mode`` or ``"normal"``) and its
``test.condition`` holds. Per-line ``constraint`` expressions are evaluated for
that option set. sshguard's ``parser-tests.txt`` holds records ``message /
expected / M`` where expected is ``SERVICE ADDR 4|6 DANGER`` or ``*`` (no attack);
only its sshd records (service 100, before the Dropbear section) are used.

"Match" per file: sshd files -> an :class:`SshEvent` whose kind is not ACCEPTED;
nginx-http-auth -> :class:`HttpAuthFailure`; nginx-limit-req -> :class:`HttpRateLimited`;
nginx-botsearch -> :class:`HttpRequest` (whether the path is a probe is the
detector's call); nginx-bad-request -> :class:`HttpRequest` with status 400. An
expected match is *found* when the event's client equals the annotated host.

"False match" (a line annotated as no match that we turn into an attack-relevant
event): for sshd, an event of a *failure* kind (FAILED_PASSWORD, INVALID_USER,
MAX_AUTH). The *weak* kinds (PREAUTH, PAM_FAILURE, FAILED_PUBKEY, see
``aisentinel/parsers/sshd.py``) are what fail2ban's ``ddos``/``aggressive`` modes
match and what normal mode deliberately leaves out (PAM lines duplicate the
``Failed password`` line; agents try several keys); they are counted separately as
"weak" so that nothing is hidden. For nginx-http-auth, an auth failure other than
``no_credentials``; for nginx-limit-req, any rate-limit event; for
nginx-bad-request, a 400 request; for nginx-botsearch, a 404 request.

"Out of scope" lines are expected matches a per-line parser cannot or should not
report, each with its reason: the address is not on the line (fail2ban joins lines
of one sshd pid), the host is a DNS name (aisentinel never resolves names), an
``Accepted`` line that fail2ban counts only because earlier attempts failed (the
detectors see ACCEPTED and decide), nginx error-log 404 lines (the same request
is read from the access log; reading both would count it twice), limit_req's
``delaying request`` lines (the request was served, only delayed) and lines with no
program tag. :data:`KNOWN_DIVERGENCES` lists the lines where we deliberately
report another host than the annotation, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.clock import FakeClock
from aisentinel.events import (
    Event,
    HttpAuthFailure,
    HttpRateLimited,
    HttpRequest,
    SshEvent,
    SshKind,
)
from aisentinel.parsers import ParserContext, build_parser
from aisentinel.parsers.nginx_error import NginxErrorParser
from aisentinel.parsers.proxy import ADDR_RE

DEFAULT_CORPUS = Path(
    os.environ.get("AISENTINEL_CORPUS")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
)

FAILURE_KINDS = frozenset({SshKind.FAILED_PASSWORD, SshKind.INVALID_USER, SshKind.MAX_AUTH})
WEAK_KINDS = frozenset(
    {
        SshKind.PREAUTH,
        SshKind.PAM_FAILURE,
        SshKind.FAILED_PUBKEY,
        SshKind.NEGOTIATION,
        SshKind.TIMEOUT,
        SshKind.REFUSED,
    }
)

KNOWN_DIVERGENCES: dict[str, str] = {
    'user "test": password mismatch, client: 127.0.0.1': (
        "fail2ban expects the last client (192.0.2.2) of a line whose user name contains "
        "'\": password mismatch, client: 127.0.0.1, ...'. A basic-auth user name cannot "
        "contain ':' (nginx splits credentials at the first colon), so nginx cannot write "
        "this line; taking the last client would instead let a Host or Referer header "
        "frame any address. We report the first message's client."
    ),
    "for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2": (
        "fail2ban expects the first address of a password failure followed by "
        "': from 10.10.1.2 port 55555 ssh2' as auth info. OpenSSH writes auth info only "
        "for keys (': TYPE FINGERPRINT', a certificate's id and CA), never after a "
        "password, so that text can only be the end of a user name that the client chose: "
        "taking the first address would let any client frame an address by logging in as "
        "'x from ADDR port 1 ssh2:'. We report the address sshd wrote last."
    ),
}
"""Substring of a line -> why we deliberately differ from its annotation."""

_ADDR = re.compile(r"(?:" + ADDR_RE + r")")
_CONSTRAINT = re.compile(r"^(name|opts\.get\('([\w.]+)'\))\s*(==|!=)\s*'([^']*)'$")
_SOCKLOG = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \w+\.\w+: ")
_SSHD_HEADER = re.compile(r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ |\S+ \S+ )?sshd[\[:]")
_STAMP = "2005-01-01T00:00:00+00:00 "


@dataclass
class Case:
    """One annotated line: what it should give and what it gave."""

    lineno: int
    line: str
    expect_match: bool
    host: str | None
    outcome: str = ""  # found | wrong_host | missed | out_of_scope | divergent | ok | false | weak
    got: str = ""
    reason: str = ""


@dataclass
class FileResult:
    """Counts for one corpus file (default mode only)."""

    name: str
    expected: int = 0
    found: int = 0
    wrong_host: int = 0
    missed: int = 0
    out_of_scope: int = 0
    divergent: int = 0
    no_match_lines: int = 0
    false_matches: int = 0
    weak_on_no_match: int = 0
    cases: list[Case] = field(default_factory=list)

    def problems(self) -> list[Case]:
        """Cases that miss the target: wrong host, missed, false match."""
        return [c for c in self.cases if c.outcome in ("wrong_host", "missed", "false")]


@dataclass(frozen=True)
class Spec:
    """How to judge one file."""

    parser: str
    is_match: Callable[[Event], bool]
    is_false: Callable[[Event], bool]
    is_weak: Callable[[Event], bool] = lambda _event: False
    prefix: str = ""


def _ssh_match(e: Event) -> bool:
    return isinstance(e, SshEvent) and e.kind is not SshKind.ACCEPTED


SSH_SPEC = Spec(
    parser="sshd",
    is_match=_ssh_match,
    is_false=lambda e: isinstance(e, SshEvent) and e.kind in FAILURE_KINDS,
    is_weak=lambda e: isinstance(e, SshEvent) and e.kind in WEAK_KINDS,
)

FAIL2BAN_FILES: dict[str, Spec] = {
    "sshd.log": SSH_SPEC,
    "sshd-journal.log": Spec(
        SSH_SPEC.parser, _ssh_match, SSH_SPEC.is_false, SSH_SPEC.is_weak, _STAMP
    ),
    "nginx-http-auth.log": Spec(
        "nginx-error",
        lambda e: isinstance(e, HttpAuthFailure),
        lambda e: isinstance(e, HttpAuthFailure) and e.reason != "no_credentials",
        lambda e: isinstance(e, HttpAuthFailure) and e.reason == "no_credentials",
    ),
    "nginx-limit-req.log": Spec(
        "nginx-error",
        lambda e: isinstance(e, HttpRateLimited),
        lambda e: isinstance(e, HttpRateLimited),
    ),
    "nginx-botsearch.log": Spec(
        "nginx",
        lambda e: isinstance(e, HttpRequest),
        lambda e: isinstance(e, HttpRequest) and e.status == 404,
    ),
    "nginx-bad-request.log": Spec(
        "nginx",
        lambda e: isinstance(e, HttpRequest) and e.status == 400,
        lambda e: isinstance(e, HttpRequest) and e.status == 400,
    ),
}


# --------------------------------------------------------------------------- annotations


def _holds(expr: str | None, name: str, opts: dict[str, Any]) -> bool | None:
    """Evaluate the few fail2ban condition forms used in the corpus; None if unknown."""
    if expr is None:
        return True
    m = _CONSTRAINT.match(expr.strip())
    if m is None:
        return None
    left = name if m.group(1) == "name" else opts.get(m.group(2))
    equal = left == m.group(4)
    return equal if m.group(3) == "==" else not equal


def _default_opts(options: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The option set of a block that is fail2ban's default mode, if any."""
    for opts in options:
        if opts.get("mode", "normal") == "normal" and _holds(
            opts.get("test.condition"), name, opts
        ):
            return opts
    return None


def fail2ban_cases(path: Path, filter_name: str) -> Iterator[Case]:
    """Annotated lines of a fail2ban sample file that apply in the default mode."""
    options: list[dict[str, Any]] = [{}]
    pending: dict[str, Any] | None = None
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    for lineno, raw in enumerate(lines, 1):
        if raw.startswith("# filterOptions:"):
            value = json.loads(raw.split(":", 1)[1])
            options = value if isinstance(value, list) else [value]
            continue
        if raw.startswith("# failJSON:"):
            pending = json.loads(raw.split(":", 1)[1])
            continue
        if raw.startswith("#") or not raw.strip() or pending is None:
            continue
        note, pending = pending, None
        opts = _default_opts(options, filter_name)
        if opts is None or _holds(note.get("constraint"), filter_name, opts) is not True:
            continue
        host = note.get("host") or note.get("ip4") or note.get("ip6")
        yield Case(lineno, raw, bool(note.get("match")), str(host) if host else None)


def sshguard_cases(path: Path) -> Iterator[Case]:
    """sshd records (service 100) of sshguard's parser tests, as full syslog lines."""
    rows: list[tuple[int, str]] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if "Dropbear {{{" in raw:
            break
        if raw.startswith("#") or not raw.strip():
            continue
        rows.append((lineno, raw))
    for i in range(0, len(rows) - 2, 3):
        (lineno, message), (_n, expected), (_m, marker) = rows[i : i + 3]
        if marker.strip() != "M":
            raise ValueError(f"{path}:{lineno}: record does not end with 'M'")
        fields = expected.split()
        if fields[0] == "*":
            yield Case(lineno, message, False, None)
        elif fields[0] == "100":
            yield Case(lineno, message, True, fields[1])


# --------------------------------------------------------------------------- judging


def _describe(event: Event | None) -> str:
    if event is None:
        return "none"
    if isinstance(event, SshEvent):
        return f"{event.kind.value} {event.client}"
    return f"{type(event).__name__} {event.client}"


def _out_of_scope(case: Case, event: Event | None, parser_name: str) -> str:
    """Why an expected match that we did not find is not ours to find ("" if it is)."""
    if case.host is None:
        return "no host in the annotation: fail2ban joins it with an earlier line of the pid"
    if _ADDR.fullmatch(case.host) is None:
        return "host is a DNS name; aisentinel never resolves names"
    if case.host not in case.line and f"::ffff:{case.host}" not in case.line:
        return "address is not on this line: fail2ban joins lines of one sshd pid"
    if isinstance(event, SshEvent) and event.kind is SshKind.ACCEPTED:
        return "Accepted after failures with other users: stateful, the detector's job"
    if "delaying request" in case.line:
        return "limit_req delaying (burst without nodelay): served later, not rejected"
    if parser_name == "nginx-error-404":
        return "nginx error-log 404: the access log has the same request"
    if _SOCKLOG.match(case.line):
        return "no program tag (socklog): cannot tell sshd from other services"
    return ""


def judge(case: Case, event: Event | None, spec: Spec, parser_name: str) -> None:
    """Set ``case.outcome`` (and ``got``/``reason``) from the event the parser gave."""
    case.got = _describe(event)
    for needle, why in KNOWN_DIVERGENCES.items():
        if needle in case.line:
            case.outcome, case.reason = "divergent", why
            return
    if case.expect_match:
        if event is not None and spec.is_match(event):
            if case.host is None or event.client == case.host:
                case.outcome = "found"  # without an annotated host, a match is enough
                return
            case.outcome = "wrong_host"
            return
        reason = _out_of_scope(case, event, parser_name)
        case.outcome, case.reason = ("out_of_scope", reason) if reason else ("missed", "")
        return
    if event is None:
        case.outcome = "ok"
    elif spec.is_false(event):
        case.outcome = "false"
    elif spec.is_weak(event):
        case.outcome = "weak"
    else:
        case.outcome = "ok"


def run_file(name: str, cases: list[Case], spec: Spec) -> FileResult:
    """Parse each case's line with the file's parser and tally the outcomes."""
    ctx = ParserContext(source=name, clock=FakeClock(1_167_609_600.0))  # 2007-01-01
    parser = build_parser(spec.parser, ctx)
    error_parser = build_parser("nginx-error", ctx)
    result = FileResult(name)
    for case in cases:
        line = case.line
        if spec.parser == "sshd" and name.startswith("sshguard") and not _SSHD_HEADER.match(line):
            line = ("Jan  1 00:00:00 host sshd[1]: " if not _SOCKLOG.match(line) else "") + line
        event = parser.parse(spec.prefix + line)
        parser_name = spec.parser
        if event is None and spec.parser == "nginx" and NginxErrorParser.is_error_line(line):
            event, parser_name = error_parser.parse(line), "nginx-error-404"
        judge(case, event, spec, parser_name)
        result.cases.append(case)
        if case.expect_match:
            result.expected += 1
        else:
            result.no_match_lines += 1
        attr = {
            "found": "found",
            "wrong_host": "wrong_host",
            "missed": "missed",
            "out_of_scope": "out_of_scope",
            "divergent": "divergent",
            "false": "false_matches",
            "weak": "weak_on_no_match",
        }.get(case.outcome)
        if attr:
            setattr(result, attr, getattr(result, attr) + 1)
    return result


def run_all(corpus: Path = DEFAULT_CORPUS) -> list[FileResult]:
    """Results for every file (raises ``FileNotFoundError`` if the corpus is absent)."""
    results = []
    for name, spec in FAIL2BAN_FILES.items():
        filter_name = name.removesuffix(".log").removesuffix("-journal")
        cases = list(fail2ban_cases(corpus / "fail2ban" / name, filter_name))
        results.append(run_file(f"fail2ban/{name}", cases, spec))
    guard = list(sshguard_cases(corpus / "sshguard" / "parser-tests.txt"))
    results.append(run_file("sshguard/parser-tests.txt (sshd)", guard, SSH_SPEC))
    return results


# --------------------------------------------------------------------------- output

_COLUMNS = (
    ("expected", "expect"),
    ("found", "found"),
    ("wrong_host", "wrong"),
    ("missed", "missed"),
    ("out_of_scope", "n/a"),
    ("divergent", "diverge"),
    ("no_match_lines", "no-match"),
    ("false_matches", "false"),
    ("weak_on_no_match", "weak"),
)


def format_table(results: list[FileResult]) -> str:
    """A fixed-width table, one row per file."""
    width = max(len(r.name) for r in results)
    head = f"{'file':<{width}} " + " ".join(f"{title:>8}" for _, title in _COLUMNS)
    rows = [head, "-" * len(head)]
    for r in results:
        cells = " ".join(f"{getattr(r, key):>8}" for key, _ in _COLUMNS)
        rows.append(f"{r.name:<{width}} {cells}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the table (or JSON); exit 1 if any target is missed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--verbose", action="store_true", help="list every line not 'found'/'ok'")
    ap.add_argument("--rules", action="store_true", help="rules per family and the benign log")
    ap.add_argument("--rules-speed", action="store_true", help="rule matcher cost, 1M lines")
    ap.add_argument("--speed-lines", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    if args.rules or args.rules_speed:
        return _rules_main(args)
    try:
        results = run_all(args.corpus)
    except FileNotFoundError as exc:
        print(f"corpus not found: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(format_table(results))
        for r in results:
            shown = [
                c
                for c in r.cases
                if c.outcome not in ("found", "ok") and (args.verbose or c in r.problems())
            ]
            for c in shown:
                print(f"  {r.name}:{c.lineno} {c.outcome} (got {c.got}) {c.reason}")
                print(f"      {c.line[:160]}")
        print("columns: expect = lines expected to match in default mode; n/a = out of scope;")
        print("  false = failure-class event on a no-match line; weak = weak-signal event there")
    return 1 if any(r.problems() for r in results) else 0


def _rules_main(args: argparse.Namespace) -> int:
    """The rules report: per-family detection, the benign log, the matcher's cost."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rules_accuracy as ra

    families = benign = speed = None
    if args.rules:
        families = ra.family_detection()
        benign = ra.benign_log(args.corpus / "elastic-apache-logs" / "apache_logs")
    if args.rules_speed:
        speed = ra.matcher_cost(args.speed_lines)
    if args.json:
        print(json.dumps({"families": families, "benign": benign, "speed": speed}, indent=2))
    else:
        ra.print_report(families, benign, speed)
    return 1 if benign is not None and benign["bans"] else 0


if __name__ == "__main__":
    sys.exit(main())
