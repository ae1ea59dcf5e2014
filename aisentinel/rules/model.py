"""The rule file format, validated strictly (unknown keys are refused).

A rules file holds ``[[rules]]`` tables::

    [[rules]]
    id = "apache-cve-2021-41773"
    description = "Apache 2.4.49/50 path traversal and RCE"
    references = ["CVE-2021-41773", "https://httpd.apache.org/security/vulnerabilities_24.html"]
    severity = "high"              # info, low, medium, high, critical
    tags = ["cve", "traversal"]
    key = "client"                 # client, api_key or user
    threshold = 1                  # events of this rule per key within window
    window = "10m"
    match.uri.contains = ["/cgi-bin/../", "/icons/../"]
    tests = [{ request = "GET /cgi-bin/.%2e/.%2e/bin/sh HTTP/1.1", status = 400 }]

``match`` fields (all that are given must hold; inside one text field, any pattern):

* ``path``, ``uri``, ``query``, ``user_agent``, ``referer``, ``any`` - text, as
  :mod:`~aisentinel.rules.normalise` gives it (lower case): ``exact``, ``prefix``,
  ``suffix``, ``contains`` (literals) and ``regex`` (RE2 syntax, linear time);
  ``not_regex`` (RE2) narrows them: the field holds when one of the others matches and
  no ``not_regex`` does (tested only then; for ``any``, text by text):
  ``match.path.regex = ["/\\.env(\\.[^/]*)?$"]`` with
  ``match.path.not_regex = ["\\.example$"]`` is a ``.env`` file, not a template.
  ``referer`` is the ``Referer`` header as logged (a request without one matches no
  ``referer`` pattern); ``any`` is the uri, user agent, referer, user, host and body
  together;
* ``method`` - request methods (upper case);
* ``status`` - codes or classes (``404``, ``"4xx"``);
* ``malformed`` - the request line was not ``METHOD TARGET HTTP/x`` with a known
  version (binary junk, TLS sent to a plain port, ``HTTP/9.9``); an empty request
  line (a browser's unused pre-connection) is not malformed.

A rule needs a text pattern, a method list or ``malformed = true`` (a status alone
would match every request of that class). ``tests`` are log lines (``line``) or
requests (``request``, ``status``, ``agent``, ``referer``, ``user``) the rule must match; the
pack tests replay them. ``enabled = false`` with only an ``id`` turns off a rule of
that id shipped or defined elsewhere.

A file may also hold ``[[exclusions]]`` tables: the query parameters of a known
application's routes whose values some rules do not look at, when the request was
answered with one of the exclusion's statuses (2xx by default), in the manner of
OWASP CRS's per-parameter rule exclusions. A user's search text in Open WebUI's chat
search (``GET /api/v1/chats/search?text=<script> tag&page=1``, 200) is data the
application stores or looks up, not a probe of it::

    [[exclusions]]
    id = "open-webui-search-text"
    description = "Open WebUI: the search text of chat, note and knowledge search"
    path.exact = ["/api/v1/chats/search"]   # the normalised path (no query)
    params = ["text", "query"]              # these parameters' values are not matched
    tags = ["sqli", "xss"]                  # by rules with one of these tags
    rules = []                              # or with one of these ids
    status = ["2xx"]
    tests = [{ request = "GET /api/v1/chats/search?text=%3Cscript%3E HTTP/1.1", status = 200 }]

The same request answered 401, 403 or 404 (a scanner, no session, no such
application), or with the probe in another parameter, still matches. An exclusion's
``tests`` are requests that a rule it covers matches without it and none does with
it. ``enabled = false`` with only an ``id`` turns off an exclusion of that id.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from aisentinel.configtypes import PositiveDuration, StrictModel
from aisentinel.decisions.config import SeverityName
from aisentinel.events import Severity

# The same bounds as aisentinel.detectors.common (which imports every detector, the
# rules detector included, so it cannot be imported from here).
Threshold = Annotated[int, Field(ge=1, le=1000)]
"""Events of a rule per key within its window: 1-1000 (an exact window keeps them all)."""
Window = PositiveDuration
HttpStatus = Annotated[int, Field(ge=100, le=599)]

MAX_PATTERNS = 4096
"""Most patterns one text field of one rule may list."""

MAX_PATTERN_LEN = 1024
"""Longest pattern, in characters."""

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")

TEXT_FIELDS = ("path", "uri", "query", "user_agent", "referer", "any")
"""The text fields a rule may match, in the order conditions are listed."""

TEXT_OPS = ("exact", "prefix", "suffix", "contains", "regex")

Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LEN)]
Tag = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
ParamName = Annotated[str, Field(min_length=1, max_length=200)]


def _no_controls(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for p in patterns:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in p):
            raise ValueError(f"pattern {p!r} has a control character")
    return patterns


class TextMatch(StrictModel):
    """Patterns for one text field; the field matches when any of them does."""

    exact: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    prefix: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    suffix: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    contains: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    regex: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    not_regex: tuple[Pattern, ...] = Field(default=(), max_length=MAX_PATTERNS)
    """Regexes the text must not match when one of the others does (RE2 has no
    lookaround: "any .env file but a template" is a regex and a ``not_regex``)."""

    @field_validator("exact", "prefix", "suffix", "contains")
    @classmethod
    def _fold(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        """Literals are compared with folded text, so they are folded too."""
        return tuple(p.lower() for p in _no_controls(patterns))

    @field_validator("regex", "not_regex")
    @classmethod
    def _re2(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        from aisentinel.rules.matcher import compile_regex  # noqa: PLC0415 - optional module

        for p in patterns:
            compile_regex(p)
        return patterns

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not any(getattr(self, op) for op in TEXT_OPS):
            raise ValueError(f"give at least one of {', '.join(TEXT_OPS)}")
        return self


def status_codes(statuses: tuple[int | str, ...]) -> frozenset[int]:
    """Every status code ``statuses`` (codes and classes such as ``"4xx"``) names."""
    out: set[int] = set()
    for s in statuses:
        if isinstance(s, int):
            out.add(s)
        else:
            base = int(s[0]) * 100
            out.update(range(base, base + 100))
    return frozenset(out)


def _status(value: Any) -> Any:
    if isinstance(value, str):
        if not _STATUS_CLASS.match(value):
            raise ValueError(f'status {value!r}: use a code (404) or a class ("4xx")')
        return value
    return value


def _statuses(values: Any) -> Any:
    if isinstance(values, list | tuple):
        for v in values:
            _status(v)
    return values


def _rule_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"id {value!r}: 1-80 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    return value


RuleId = Annotated[str, AfterValidator(_rule_id)]
"""A rule's (or an exclusion's) id: 1-80 of a-z, 0-9, '.', '_', '-'."""


class RuleMatch(StrictModel):
    """What a request must look like; every field given must hold."""

    path: TextMatch | None = None
    uri: TextMatch | None = None
    query: TextMatch | None = None
    user_agent: TextMatch | None = None
    referer: TextMatch | None = None
    any: TextMatch | None = None
    method: tuple[str, ...] = Field(default=(), max_length=64)
    status: tuple[HttpStatus | str, ...] = Field(default=(), max_length=600)
    malformed: bool | None = None

    @field_validator("method")
    @classmethod
    def _methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        for m in methods:
            if not _METHOD.match(m):
                raise ValueError(f"method {m!r}: upper-case letters, digits, '_' or '-'")
        return methods

    @field_validator("status", mode="before")
    @classmethod
    def _statuses(cls, values: Any) -> Any:
        return _statuses(values)

    def text(self) -> list[tuple[str, TextMatch]]:
        """The text conditions, as ``(field, patterns)``."""
        return [(f, m) for f in TEXT_FIELDS if (m := getattr(self, f)) is not None]

    def status_set(self) -> frozenset[int]:
        """Every status code this rule accepts (empty: any)."""
        return status_codes(self.status)

    @model_validator(mode="after")
    def _selective(self) -> Self:
        if not self.text() and not self.method and not self.malformed:
            raise ValueError(
                "needs a text pattern (path, uri, query, user_agent, referer, any), a method list "
                "or malformed = true: a status alone would match every such request"
            )
        return self


class RuleTest(StrictModel):
    """One line a rule must match: a whole log line, or a request to put in one."""

    line: str | None = Field(default=None, max_length=16384)
    request: str | None = Field(default=None, max_length=16384)
    status: HttpStatus = 404
    agent: str = Field(default="Mozilla/5.0 (X11; Linux x86_64)", max_length=4096)
    user: str | None = Field(default=None, max_length=256)
    referer: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.line is None) == (self.request is None):
            raise ValueError("give either line or request")
        return self


class Rule(StrictModel):
    """One rule; see the module docstring."""

    id: RuleId
    enabled: bool = True
    description: str = Field(default="", max_length=500)
    references: tuple[Annotated[str, Field(min_length=1, max_length=500)], ...] = Field(
        default=(), max_length=50
    )
    severity: SeverityName = Severity.HIGH
    tags: tuple[Tag, ...] = Field(default=(), max_length=20)
    key: Literal["client", "api_key", "user"] = "client"
    threshold: Threshold = 1
    window: Window = 600.0
    match: RuleMatch | None = None
    tests: tuple[RuleTest, ...] = Field(default=(), max_length=100)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.enabled:
            if self.match is None:
                raise ValueError("an enabled rule needs a match table")
            if not self.description:
                raise ValueError("an enabled rule needs a description")
        return self


class ExclusionTest(StrictModel):
    """A request some rule the exclusion covers matches without it, and none with it."""

    request: str = Field(max_length=16384)
    status: HttpStatus = 200
    agent: str = Field(default="Mozilla/5.0 (X11; Linux x86_64)", max_length=4096)


class Exclusion(StrictModel):
    """Query parameters of an application's routes that some rules do not look at (see
    the module docstring)."""

    id: RuleId
    enabled: bool = True
    description: str = Field(default="", max_length=500)
    references: tuple[Annotated[str, Field(min_length=1, max_length=500)], ...] = Field(
        default=(), max_length=50
    )
    path: TextMatch | None = None
    """The routes, matched against the normalised path (folded, decoded, no query)."""
    params: tuple[ParamName, ...] = Field(default=(), max_length=256)
    """Query parameter names (case-insensitive) whose values the rules do not see."""
    tags: tuple[Tag, ...] = Field(default=(), max_length=20)
    rules: tuple[RuleId, ...] = Field(default=(), max_length=256)
    status: tuple[HttpStatus | str, ...] = Field(default=("2xx",), min_length=1, max_length=600)
    tests: tuple[ExclusionTest, ...] = Field(default=(), max_length=100)

    @field_validator("params")
    @classmethod
    def _fold(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in _no_controls(values))

    @field_validator("status", mode="before")
    @classmethod
    def _statuses(cls, values: Any) -> Any:
        return _statuses(values)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.enabled:
            missing = [k for k in ("description", "path", "params") if not getattr(self, k)]
            if not self.tags and not self.rules:
                missing.append("tags or rules")
            if missing:
                raise ValueError(f"an enabled exclusion needs {', '.join(missing)}")
        return self

    def covers(self, rule: Rule) -> bool:
        """Whether ``rule`` is one this exclusion narrows."""
        return rule.id in self.rules or any(tag in self.tags for tag in rule.tags)


class RuleFile(StrictModel):
    """A whole rules file: ``[[rules]]`` and ``[[exclusions]]`` tables."""

    rules: tuple[dict[str, Any], ...] = Field(default=(), max_length=10_000)
