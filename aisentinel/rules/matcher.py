"""All enabled rules compiled into one matcher: one automaton per text field.

Every literal of every rule for a field goes into one Aho-Corasick automaton
(pyahocorasick), so a field is scanned once whatever the number of rules; regexes
use RE2 (google-re2), whose matching time is linear in the text, so no pattern a
local rule carries can take exponential time. A rule matches when all its
conditions hold (each text field it names, its methods, statuses and
``malformed``).

Per request the cost is one set lookup in the common case: the verdict for what a
request's match depends on apart from its status (raw target, user agent and method;
also user, host, body and referer when a rule has an ``any`` or ``referer`` condition)
is cached in a bounded cache that starts afresh when full, and the keys that match no rule whatever
the status are kept in a set, which the rules detector tests a whole batch against
in one pass. The verdicts for a raw target (which conditions its path, uri and query
satisfy) and for a user agent or a referer are cached too, so a new combination of known parts
costs a few dictionary lookups. A request with a body is never cached (each is
checked in full).

Exclusions (:class:`Exclusions`) are applied to the rules a request matched, so they
cost nothing on the requests that match none: when a request's status and normalised
path suit an exclusion, each rule it covers is checked again directly, with the
excluded parameters' values left out, and dropped when it no longer matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

import ahocorasick
import re2

from aisentinel.events import HttpRequest
from aisentinel.rules.model import TEXT_FIELDS, Exclusion, Rule, TextMatch, status_codes
from aisentinel.rules.normalise import (
    MAX_TARGET,
    Target,
    decode,
    fold_text,
    normalise_target,
    unescape_log,
)

DEFAULT_CACHE_ENTRIES = 4096
"""Raw targets (and user agents) whose verdicts are remembered before starting afresh."""

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.max_mem = 8 << 20


def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (case-insensitive); ``ValueError`` when RE2 refuses it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise ValueError(
            f"regex {pattern!r}: {exc} (RE2 syntax: no backreferences or lookaround)"
        ) from None


class Hit(NamedTuple):
    """Why a rule matched: which field, which operation, which pattern."""

    field: str
    op: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Fields:
    """The normalised texts of one request that rules look at."""

    target: Target
    user_agent: str
    extra: tuple[str, ...]
    """The user, host, referer and body that were logged, each a text of its own (as
    :class:`Matcher` scans them for ``any``)."""
    malformed: bool
    referer: str = ""

    def texts(self, field: str) -> tuple[str, ...]:
        """The texts :class:`Matcher` tests ``field`` on, each a whole: for ``any``, the
        uri, user agent and each of :attr:`extra`; none for a referer not logged."""
        if field == "any":
            return (self.target.uri, self.user_agent, *self.extra)
        if field == "referer" and not self.referer:
            return ()
        return (self.text(field),)

    def text(self, field: str) -> str:
        """The text of ``field`` (``any`` joins the uri, user agent, referer and extras)."""
        if field == "path":
            return self.target.path
        if field == "uri":
            return self.target.uri
        if field == "query":
            return self.target.query
        if field == "user_agent":
            return self.user_agent
        if field == "referer":
            return self.referer
        return "\n".join((self.target.uri, self.user_agent, *self.extra))


def is_malformed(request: HttpRequest) -> bool:
    """The request line was not understood: no method, and a text that is neither empty
    nor ``-`` nor a bare target (a JSON log without ``$request_method`` gives those)."""
    path = request.path
    return request.method == "" and path not in ("", "-") and path[0] != "/"


def request_fields(request: HttpRequest, raw_target: str | None = None) -> Fields:
    """The :class:`Fields` of ``request`` (with ``raw_target`` in place of its own)."""
    extra = tuple(
        fold_text(v)
        for v in (request.user, request.host, request.referer, request.body)
        if v is not None
    )
    return Fields(
        normalise_target(request.path if raw_target is None else raw_target),
        fold_text(request.user_agent),
        extra,
        is_malformed(request),
        "" if request.referer is None else fold_text(request.referer),
    )


def without_params(raw: str, params: frozenset[str]) -> str:
    """The raw target ``raw`` with the values of the query parameters named in
    ``params`` (folded names, compared decoded) emptied: ``/s?text=<x>&page=1`` ->
    ``/s?text=&page=1``."""
    cut = raw.find("?")
    if cut < 0:
        return raw
    parts = raw[cut + 1 :].split("&")
    for i, part in enumerate(parts):
        name = part.split("=", 1)[0]
        if decode(unescape_log(name).replace("+", " ")).strip().lower() in params:
            parts[i] = name + "="
    return raw[: cut + 1] + "&".join(parts)


class _Field:
    """The compiled patterns of one text field: an automaton of literals and RE2 regexes,
    each mapped to the condition numbers it satisfies."""

    __slots__ = ("_automaton", "_exact", "_negated", "_regexes")

    def __init__(self) -> None:
        self._automaton: Any = None
        self._exact: dict[str, list[int]] = {}
        self._regexes: list[tuple[Any, int]] = []
        self._negated: dict[int, list[Any]] = {}  # condition -> its not_regex patterns

    def compile(self, entries: Sequence[tuple[str, str, int]]) -> None:
        """``entries``: ``(op, pattern, condition)``."""
        words: dict[str, list[tuple[str, int]]] = {}
        for op, pattern, cond in entries:
            if op == "exact":
                self._exact.setdefault(pattern, []).append(cond)
            elif op == "regex":
                self._regexes.append((compile_regex(pattern), cond))
            elif op == "not_regex":
                self._negated.setdefault(cond, []).append(compile_regex(pattern))
            else:
                words.setdefault(pattern, []).append((op, cond))
        if words:
            automaton = ahocorasick.Automaton()
            for word, targets in words.items():
                automaton.add_word(word, (len(word), tuple(targets)))
            automaton.make_automaton()
            self._automaton = automaton

    def scan(self, text: str, found: set[int]) -> None:
        """Add to ``found`` every condition ``text`` satisfies: one of its patterns
        matches, and none of its ``not_regex`` (tested only for such a condition)."""
        hits = found if not self._negated else set()
        if text in self._exact:
            hits.update(self._exact[text])
        if self._automaton is not None and text:
            last = len(text) - 1
            for end, (size, targets) in self._automaton.iter(text):
                for op, cond in targets:
                    if (
                        op == "contains"
                        or (op == "prefix" and end == size - 1)
                        or (op == "suffix" and end == last)
                    ):
                        hits.add(cond)
        for regex, cond in self._regexes:
            if cond not in hits and cond not in found and _search(regex, text):
                hits.add(cond)
        if hits is not found:
            for cond in hits:
                negated = self._negated.get(cond)
                if negated is None or not any(_search(r, text) for r in negated):
                    found.add(cond)


def _search(regex: Any, text: str) -> bool:
    """Whether RE2 ``regex`` matches in ``text`` (a lone surrogate replaced: RE2 matches
    UTF-8)."""
    try:
        return regex.search(text) is not None
    except UnicodeEncodeError:
        return regex.search(text.encode("utf-8", "replace").decode("utf-8")) is not None


class _Compiled(NamedTuple):
    rule: Rule
    conds: tuple[int, ...]
    methods: frozenset[str]
    statuses: frozenset[int]
    malformed: bool | None


_EMPTY: frozenset[int] = frozenset()

_FIELD = HttpRequest._fields.index
_KEY: Callable[[HttpRequest], tuple[Any, ...]] = itemgetter(
    _FIELD("path"), _FIELD("user_agent"), _FIELD("method")
)
_EXTRA_KEY: Callable[[HttpRequest], tuple[Any, ...]] = itemgetter(
    _FIELD("path"),
    _FIELD("user_agent"),
    _FIELD("method"),
    _FIELD("user"),
    _FIELD("host"),
    _FIELD("body"),
    _FIELD("referer"),
)


class Matcher:
    """The compiled rules; :meth:`match` gives the rules a request matches."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        exclusions: Iterable[Exclusion] = (),
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ):
        self.rules: tuple[Rule, ...] = tuple(r for r in rules if r.enabled)
        self.exclusions = Exclusions(exclusions, self.rules)
        """The exclusions that cover one of the rules."""
        self._fields = {f: _Field() for f in (*TEXT_FIELDS, "extra")}
        entries: dict[str, list[tuple[str, str, int]]] = {f: [] for f in self._fields}
        self._compiled: list[_Compiled] = []
        self._cond_rule: list[int] = []
        self._by_method: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            match = rule.match
            if match is None:  # validated: enabled rules have one
                continue
            conds: list[int] = []
            for field, text in match.text():
                cond = len(self._cond_rule)
                self._cond_rule.append(index)
                conds.append(cond)
                # ``any``: the referer is scanned with the extras (user, host, body).
                homes = ("uri", "user_agent", "extra") if field == "any" else (field,)
                for op in ("exact", "prefix", "suffix", "contains", "regex", "not_regex"):
                    for pattern in getattr(text, op):
                        for home in homes:
                            entries[home].append((op, pattern, cond))
            if not conds:
                keys = match.method or ("",)  # malformed-only: method "" (unparsed)
                for method in keys:
                    self._by_method.setdefault(method, []).append(index)
            self._compiled.append(
                _Compiled(
                    rule,
                    tuple(conds),
                    frozenset(match.method),
                    match.status_set(),
                    match.malformed,
                )
            )
        for field, compiled in self._fields.items():
            compiled.compile(entries[field])
        self._path_fields = (self._fields["path"], self._fields["uri"], self._fields["query"])
        self._ua_field = self._fields["user_agent"]
        self._referer_field = self._fields["referer"]
        self._extra_field = self._fields["extra"]
        self._limit = cache_entries
        self._targets: dict[str, tuple[Target, frozenset[int], tuple[_Compiled, ...]]] = {}
        self._agents: dict[str, frozenset[int]] = {}
        self._extras: dict[str, frozenset[int]] = {}
        self._referers: dict[str, frozenset[int]] = {}
        self._requests: dict[tuple[Any, ...], tuple[Target, tuple[_Compiled, ...]]] = {}
        self.has_extra = bool(entries["extra"] or entries["referer"])
        """Whether some rule looks at the user, host, body or referer (an ``any`` or a
        ``referer`` condition)."""
        self._has_referer = bool(entries["referer"])
        self.key: Callable[[HttpRequest], tuple[Any, ...]] = _EXTRA_KEY if self.has_extra else _KEY
        """What a request's verdict depends on, status aside: its raw target, user agent
        and method (and user, host, body and referer when some rule looks at them)."""
        self.quiet_requests: set[tuple[Any, ...]] = set()
        """Keys (:attr:`key`) known to match no rule whatever the status (a subset of
        the request cache; never one with a body, whose verdict is not cached)."""
        self.methods: frozenset[str] = frozenset(self._by_method)
        """Methods a rule without text patterns names (``""``: malformed-only rules)."""

    def __len__(self) -> int:
        return len(self.rules)

    # ----------------------------------------------------------------- verdicts

    def _target(self, raw: str) -> tuple[Target, frozenset[int], tuple[_Compiled, ...]]:
        cached = self._targets.get(raw)
        if cached is not None:
            return cached
        target = normalise_target(raw)
        found: set[int] = set()
        path, uri, query = self._path_fields
        path.scan(target.path, found)
        uri.scan(target.uri, found)
        if target.query:
            query.scan(target.query, found)
        # The rules whose every condition the target alone satisfies: the whole answer
        # when the user agent and extras satisfy nothing (method/status still checked).
        complete = tuple(
            self._compiled[index]
            for index in sorted({self._cond_rule[c] for c in found})
            if all(cond in found for cond in self._compiled[index].conds)
        )
        verdict = (target, frozenset(found) if found else _EMPTY, complete)
        if len(self._targets) >= self._limit:
            self._targets.clear()
        self._targets[raw] = verdict
        return verdict

    def _header(self, raw: str, field: _Field, cache: dict[str, frozenset[int]]) -> frozenset[int]:
        """The conditions the header text ``raw`` satisfies in ``field``, remembered in
        ``cache`` (a user agent, a referer, a user or host)."""
        cached = cache.get(raw)
        if cached is not None:
            return cached
        found: set[int] = set()
        field.scan(fold_text(raw), found)
        verdict = frozenset(found) if found else _EMPTY
        if len(cache) >= self._limit:
            cache.clear()
        cache[raw] = verdict
        return verdict

    def _agent(self, raw: str) -> frozenset[int]:
        return self._header(raw, self._ua_field, self._agents)

    def _extra(self, raw: str) -> frozenset[int]:
        return self._header(raw[:MAX_TARGET], self._extra_field, self._extras)

    # ----------------------------------------------------------------- matching

    def quiet(self, request: HttpRequest) -> bool:
        """True when the cached verdict already says ``request`` matches no rule (the
        common case: one set lookup); False means "ask :meth:`match`". The rules
        detector makes the same test for a whole batch at once."""
        return self.key(request) in self.quiet_requests

    def match(self, request: HttpRequest) -> tuple[list[Rule], Target | None]:
        """The rules ``request`` matches (in rule order) and its normalised target."""
        key = self.key(request)
        verdict = self._requests.get(key)
        if verdict is None:
            verdict = self._verdict(request)
            if request.body is None:
                if len(self._requests) >= self._limit:
                    self._requests.clear()
                    self.quiet_requests.clear()
                self._requests[key] = verdict
                if not verdict[1]:
                    self.quiet_requests.add(key)
        target, rules = verdict
        if not rules:
            return [], target
        status = request.status
        out = [c.rule for c in rules if not c.statuses or status in c.statuses]
        if out and self.exclusions:
            out = self.exclusions.narrow(request, out, target)
        return out, target

    def _verdict(self, request: HttpRequest) -> tuple[Target, tuple[_Compiled, ...]]:
        """The normalised target of ``request`` and the rules it matches if its status
        suits them (everything but the status checked), in rule order."""
        target, path_conds, complete = self._target(request.path)
        agent_conds = self._agent(request.user_agent)
        method = request.method
        by_method = self._by_method.get(method) if self._by_method else None
        extra_conds: set[int] = set()
        if self.has_extra:
            for value in (request.user, request.host, request.referer):
                if value is not None:
                    extra_conds.update(self._extra(value))
            if self._has_referer and request.referer is not None:
                extra_conds.update(
                    self._header(request.referer, self._referer_field, self._referers)
                )
            if request.body is not None:
                self._extra_field.scan(fold_text(request.body[:MAX_TARGET]), extra_conds)
        if not agent_conds and by_method is None and not extra_conds:
            if not complete:
                return target, ()
            malformed = is_malformed(request)
            return target, tuple(
                c
                for c in complete
                if (not c.methods or method in c.methods)
                and (c.malformed is None or c.malformed == malformed)
            )
        conds = set(path_conds)
        conds.update(agent_conds)
        conds.update(extra_conds)
        candidates = {self._cond_rule[c] for c in conds}
        if by_method is not None:
            candidates.update(by_method)
        if not candidates:
            return target, ()
        malformed = is_malformed(request)
        out: list[_Compiled] = []
        for index in sorted(candidates):
            c = self._compiled[index]
            if (
                all(cond in conds for cond in c.conds)
                and (not c.methods or method in c.methods)
                and (c.malformed is None or c.malformed == malformed)
            ):
                out.append(c)
        return target, tuple(out)

    # ----------------------------------------------------------------- explaining


def explain_rule(rule: Rule, request: HttpRequest, fields: Fields | None = None) -> list[Hit]:
    """Why ``rule`` matches ``request`` (every condition, with what satisfied it), or
    ``[]`` when it does not. Slow and direct (no automaton): for ``explain``, and a
    check of :class:`Matcher` in the tests."""
    match = rule.match
    if match is None or not rule.enabled:
        return []
    fields = fields or request_fields(request)
    hits: list[Hit] = []
    if match.method:
        if request.method not in match.method:
            return []
        hits.append(Hit("method", "in", request.method))
    statuses = match.status_set()
    if statuses:
        if request.status not in statuses:
            return []
        hits.append(Hit("status", "in", str(request.status)))
    if match.malformed is not None:
        if fields.malformed != match.malformed:
            return []
        hits.append(Hit("malformed", "is", str(fields.malformed).lower()))
    for field, text in match.text():
        hit = _first_hit(field, text.model_dump(), fields)
        if hit is None:
            return []
        hits.append(hit)
    return hits


_regex = lru_cache(maxsize=4096)(compile_regex)


def _first_op(text: str, ops: dict[str, tuple[str, ...]]) -> tuple[str, str] | None:
    """The first ``(op, pattern)`` of ``ops`` that ``text`` satisfies, unless one of its
    ``not_regex`` matches ``text`` too."""
    for op, patterns in ops.items():
        for pattern in patterns:
            if (
                (op == "exact" and text == pattern)
                or (op == "prefix" and text.startswith(pattern))
                or (op == "suffix" and text.endswith(pattern))
                or (op == "contains" and pattern in text)
                or (op == "regex" and _search(_regex(pattern), text))
            ):
                negated = ops.get("not_regex", ())
                return None if any(_search(_regex(n), text) for n in negated) else (op, pattern)
    return None


def _first_hit(field: str, ops: dict[str, tuple[str, ...]], fields: Fields) -> Hit | None:
    for text in fields.texts(field):
        found = _first_op(text, ops)
        if found is not None:
            return Hit(field, *found)
    return None


class Exclusions:
    """Exclusions applied to the rules a request matched (see the module docstring)."""

    def __init__(self, exclusions: Iterable[Exclusion], rules: Iterable[Rule] = ()) -> None:
        rules = tuple(rules)
        self.items: tuple[tuple[Exclusion, frozenset[int], dict[str, tuple[str, ...]]], ...] = (
            tuple(
                (x, status_codes(x.status), _ops(x.path))
                for x in exclusions
                if x.enabled and any(x.covers(r) for r in rules)
            )
        )

    def __bool__(self) -> bool:
        return bool(self.items)

    def _applicable(self, request: HttpRequest, path: str) -> list[Exclusion]:
        status = request.status
        return [x for x, statuses, ops in self.items if status in statuses and _first_op(path, ops)]

    def excused_by(
        self, rule: Rule, request: HttpRequest, target: Target | None = None
    ) -> Exclusion | None:
        """The exclusion that takes ``rule`` off ``request``, if one does: it covers the
        rule, suits the request's status and path, and the rule no longer matches
        with the values of the exclusion's parameters left out."""
        target = target or normalise_target(request.path)
        return self._excused(rule, request, self._applicable(request, target.path))

    def _excused(
        self, rule: Rule, request: HttpRequest, applicable: list[Exclusion]
    ) -> Exclusion | None:
        covering = [x for x in applicable if x.covers(rule)]
        if not covering:
            return None
        params = frozenset(p for x in covering for p in x.params)
        reduced = request_fields(request, without_params(request.path, params))
        return None if explain_rule(rule, request, reduced) else covering[0]

    def narrow(self, request: HttpRequest, rules: list[Rule], target: Target) -> list[Rule]:
        """``rules`` (matched by ``request``) less those an exclusion takes off."""
        applicable = self._applicable(request, target.path)
        if not applicable:
            return rules
        return [r for r in rules if self._excused(r, request, applicable) is None]


def _ops(match: TextMatch | None) -> dict[str, tuple[str, ...]]:
    return {} if match is None else match.model_dump()
