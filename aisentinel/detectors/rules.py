"""``rules``: the detection rules of :mod:`aisentinel.rules` (shipped packs and
``rules_dir``), applied to every HTTP request.

Each rule counts its own events per key (the client address, the API key id or the
user, as the rule says) within its own ``window``; when a key reaches the rule's
``threshold`` (1 for an exploit probe) the detector reports a finding at the
rule's severity, naming the rule, its references and tags, the raw and normalised
target (and the user agent when the rule looked at it). When one request completes
several rules, one finding is made, for the most severe, and the others are listed
in its evidence. Counts live in :class:`~.window.EventWindows` (one table per
distinct ``(threshold, window)``, keyed by rule and key, at most ``max_keys`` keys
each), so memory is bounded whatever the traffic.

Exclusions (``[[exclusions]]`` in the rule files; the shipped ones in
``aisentinel/rules/app-routes.toml``) take the free-text query parameters of known
applications' search routes away from the injection, traversal and expression rules
when the application answered 2xx: an Open WebUI user searching their chats for
``<script>`` or ``union select`` is not banned, while the same request answered
401/403/404, or with the probe in another parameter, still is.

The rules are loaded and compiled when the config is validated: ``check-config``
refuses a bad rule (file, rule, key, reason) and a reload with one is refused
like any bad config. A reload re-reads the rule files; when their contents change,
the detector is rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import compress
from operator import not_
from pathlib import Path
from typing import Any, Self, cast

from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import Field, PrivateAttr, field_validator, model_validator

from aisentinel.configtypes import DEFAULT_MAX_KEYS, format_duration
from aisentinel.detectors.base import (
    REGISTRY,
    BatchDetector,
    Detector,
    DetectorConfigBase,
    Forgiven,
)
from aisentinel.detectors.common import KEY_BUDGET, MaxKeys, all_requests, client_key
from aisentinel.detectors.window import Crossing, EventWindows
from aisentinel.events import Event, Finding, HttpRequest
from aisentinel.rules import DEFAULT_RULES_DIR, RulesError, RuleSet, load_rules
from aisentinel.rules.matcher import DEFAULT_CACHE_ENTRIES, Matcher
from aisentinel.rules.model import Rule
from aisentinel.rules.normalise import Target

_MAX_EVIDENCE = 200


class RulesConfig(DetectorConfigBase):
    """``[detectors.rules]``."""

    max_keys: MaxKeys = DEFAULT_MAX_KEYS
    rules_dir: Path | None = DEFAULT_RULES_DIR
    """Local rules files (``*.toml``); ``""`` reads none. A missing directory is no error."""
    builtin: bool = True
    """Load the shipped packs."""
    packs: tuple[str, ...] = ()
    """Shipped packs to load, by file stem (``web-cves``); empty: all of them."""
    tags: tuple[str, ...] = ()
    """Keep only rules with one of these tags; empty: every rule."""
    disabled: tuple[str, ...] = ()
    """Rule ids to turn off; an id no rule has is refused (with the closest ones), one
    of a shipped pack that ``packs`` leaves out is accepted."""
    cache_entries: int = Field(default=DEFAULT_CACHE_ENTRIES, ge=16, le=1_000_000)
    """Raw targets and user agents whose verdicts are cached (each cache); 16-1,000,000."""

    _ruleset: RuleSet = PrivateAttr(default_factory=lambda: RuleSet((), ""))

    @field_validator("rules_dir", mode="before")
    @classmethod
    def _dir(cls, value: Any) -> Any:
        if value == "":
            return None
        if isinstance(value, str | Path) and not Path(value).is_absolute():
            raise ValueError('must be an absolute path (or "" for none)')
        return value

    @model_validator(mode="after")
    def _load(self) -> Self:
        try:
            ruleset = load_rules(
                self.rules_dir,
                builtin=self.builtin,
                packs=self.packs,
                tags=self.tags,
                disabled=self.disabled,
            )
        except RulesError as exc:
            raise ValueError("; ".join(exc.problems)) from None
        for rule in ruleset.rules:
            need = self.max_keys * (rule.threshold + 5)
            if need > KEY_BUDGET:
                raise ValueError(
                    f"rule {rule.id!r}: threshold {rule.threshold} with max_keys = "
                    f"{self.max_keys} may keep {need} timestamps; keep max_keys x "
                    f"(threshold + 5) at most {KEY_BUDGET}"
                )
        self._ruleset = ruleset
        return self

    @property
    def ruleset(self) -> RuleSet:
        """The loaded rules."""
        return self._ruleset


def rule_key(rule: Rule, request: HttpRequest) -> str | None:
    """What ``rule`` counts ``request`` under (``None``: the request has no such key)."""
    if rule.key == "client":
        return client_key(request.client)
    if rule.key == "api_key":
        return request.key_id
    return request.user


def _refs(rule: Rule) -> str:
    return ", ".join(rule.references[:3]) + (" ..." if len(rule.references) > 3 else "")


class RulesDetector(BatchDetector):
    """Requests that complete a rule's match ``threshold`` times in its window."""

    name = "rules"
    consumes = (HttpRequest,)

    def __init__(self, config: RulesConfig) -> None:
        super().__init__(config)
        self._cfg = config
        self.matcher = Matcher(
            config.ruleset.rules,
            exclusions=config.ruleset.exclusions,
            cache_entries=config.cache_entries,
        )
        self._tables: dict[tuple[int, float], EventWindows] = {}
        for rule in self.matcher.rules:
            spec = (rule.threshold, rule.window)
            if spec not in self._tables:
                self._tables[spec] = EventWindows(rule.threshold, rule.window, config.max_keys)
        self.matches: dict[str, int] = {}
        self._positions: list[int] = []
        """0, 1, 2 ... as long as the longest batch seen."""

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        matcher = self.matcher
        if not matcher.rules:
            return out
        match = matcher.match
        if all_requests(events):
            # The common case, in one pass of C: one set lookup a request.
            requests = cast("Sequence[HttpRequest]", events)
            quiet = matcher.quiet_requests
            positions = self._positions
            if len(positions) < len(requests):
                positions.extend(range(len(positions), len(requests)))
            # Lazy: a key seen for the first time is matched (its verdict cached) before
            # the next request is looked up, so when it matches nothing its repeats
            # later in the batch are skipped. The positions come from a kept list, not
            # count(), which would make an int object for every request.
            picked: Iterable[int] = compress(
                positions, map(not_, map(quiet.__contains__, map(matcher.key, requests)))
            )
        else:
            quiet_one = matcher.quiet
            picked = [
                i for i, e in enumerate(events) if isinstance(e, HttpRequest) and not quiet_one(e)
            ]
        for i in picked:
            request = cast("HttpRequest", events[i])
            rules, target = match(request)
            if rules:
                found = self._hit(request, rules, target)
                if found is not None:
                    out.append((i, found))
        return out

    def _hit(
        self, request: HttpRequest, rules: list[Rule], target: Target | None
    ) -> Finding | None:
        crossed: list[tuple[Rule, str, Crossing]] = []
        matches = self.matches
        sample = request.path[:_MAX_EVIDENCE]
        for rule in rules:
            matches[rule.id] = matches.get(rule.id, 0) + 1
            key = rule_key(rule, request)
            if key is None:
                continue
            table = self._tables[(rule.threshold, rule.window)]
            crossing = table.hit(f"{rule.id}\x1f{key}", request.ts, sample)
            if crossing is not None:
                crossed.append((rule, key, crossing))
        if not crossed:
            return None
        crossed.sort(key=lambda c: -int(c[0].severity))
        rule, key, crossing = crossed[0]
        message = f"rule {rule.id}: {rule.description}"
        if rule.threshold > 1:
            span = format_duration(float(max(round(request.ts - crossing.first_ts), 0)))
            message += (
                f" ({crossing.events} requests in {span}, threshold {rule.threshold} in "
                f"{format_duration(rule.window)})"
            )
        if rule.references:
            message += f" [{_refs(rule)}]"
        evidence = [f"rule={rule.id}"]
        if rule.references:
            evidence.append(f"references={' '.join(rule.references)}"[:_MAX_EVIDENCE])
        if rule.tags:
            evidence.append(f"tags={','.join(rule.tags)}")
        evidence.append(f"raw={sample}")
        if target is not None:
            evidence.append(f"normalised={target.uri[:_MAX_EVIDENCE]}")
        match = rule.match
        if match is not None and (match.user_agent is not None or match.any is not None):
            evidence.append(f"user_agent={request.user_agent[:_MAX_EVIDENCE]}")
        evidence.extend(f"sample={s}" for s in crossing.evidence if s != sample)
        if len(crossed) > 1:
            evidence.append("also=" + ",".join(c[0].id for c in crossed[1:]))
        return Finding(
            ts=request.ts,
            detector=self.name,
            severity=rule.severity,
            client=request.client,
            key=key,
            count=crossing.events,
            window=rule.window,
            message=message,
            evidence=tuple(evidence),
            source=request.source,
            topic=rule.id,
        )

    def expire(self, now: float) -> int:
        return sum(t.expire(now) for t in self._tables.values())

    def tracked_keys(self) -> int:
        return sum(len(t) for t in self._tables.values())

    def unquiet(self) -> None:
        for table in self._tables.values():
            table.unquiet()

    def forget(self, forgiven: Forgiven) -> None:
        """The tables' keys are ``rule id``, a unit separator, then what the rule counts
        under: for the rules that count per client (``key = "client"``) that part is
        what ``forgiven`` is asked about. A rule that counts per user or per API key
        keeps its counts: the username is the sender's choice, and one that reads as a
        forgiven address is no client of it."""
        per_client = {rule.id for rule in self.matcher.rules if rule.key == "client"}
        if not per_client:
            return

        def match(key: str) -> bool:
            rule_id, _, counted = key.partition("\x1f")
            return rule_id in per_client and forgiven(counted)

        for table in self._tables.values():
            table.forget(match)

    def window_counts(self) -> tuple[int, int]:
        return sum(t.evicted for t in self._tables.values()), 0

    def carry_over(self, old: Detector) -> None:
        """The eviction counts and, for each rule still loaded, its matches of ``old``
        (a removed rule's series goes, as a removed source's does)."""
        super().carry_over(old)
        if isinstance(old, RulesDetector):
            loaded = {rule.id for rule in self.matcher.rules}
            for rule_id, matched in old.matches.items():
                if rule_id in loaded:
                    self.matches[rule_id] = self.matches.get(rule_id, 0) + matched

    def collect(self) -> Iterator[Metric]:
        yield from super().collect()
        family = CounterMetricFamily(
            "aisentinel_rule_matches",
            "Requests that matched each detection rule (counted before its threshold).",
            labels=["rule"],
        )
        for rule_id, matched in sorted(self.matches.items()):
            family.add_metric([rule_id], matched)
        yield family


REGISTRY.register("rules", RulesConfig, RulesDetector)
